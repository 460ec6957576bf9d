"""A seeded, reproducible fleet of simulated machines with realistic telemetry and degradation.

Pure: no I/O and no clock. The caller passes event times in. Every reading is a
function of (seed, asset, time), so asking for the same instant twice, or asking
for instants in any order, gives the same values.
- Duty cycles are drawn in order from a per-asset seeded generator and extended
  lazily, so they do not depend on the order of the queries.
- Noise comes from a hash of (seed, asset, time, channel).
"""

from __future__ import annotations

import math
import random
import re
from array import array
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final, Literal, get_args

ScenarioKind = Literal["bearing_wear", "overheating", "silent"]
SCENARIO_KINDS: Final[tuple[ScenarioKind, ...]] = get_args(ScenarioKind)
# Default time from the start of a run until the fault is severe (or, for
# `silent`, until the device stops publishing).
DEFAULT_RAMPS: Final[Mapping[str, timedelta]] = {
    "bearing_wear": timedelta(days=3),
    "overheating": timedelta(hours=12),
    "silent": timedelta(minutes=10),
}
METRICS: Final = ("temperature_c", "vibration_mm_s", "motor_current_a", "run_hours", "running")

_DURATION_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MASK64: Final = (1 << 64) - 1
_TWO_PI: Final = 2 * math.pi
_DAY_S: Final = 86400.0
# Noise channels, so each signal gets independent noise at the same instant.
_CH_TEMPERATURE_VIBRATION: Final = 1
_CH_CURRENT_SPIKE: Final = 2
_CH_AMBIENT_WANDER: Final = 3
_WANDER_KNOT_S: Final = 3 * 3600.0


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as `90s`, `30m`, `6h`, `3d` or `250ms`."""
    match = _DURATION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"duration {text!r} must be a number and a unit: ms, s, m, h or d")
    return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class Scenario:
    """A fault injected into one asset: its kind and how fast it develops.

    For `bearing_wear` and `overheating`, `ramp` is the time from the start of the run
    until the fault is severe, and the fault keeps worsening a little past it. For
    `silent`, `ramp` is the time after which the device stops publishing.
    """

    kind: ScenarioKind
    ramp: timedelta

    @classmethod
    def parse(cls, spec: str) -> Scenario:
        """Parse `kind` or `kind:duration`, for example `bearing_wear:6h` or `silent:90s`."""
        name, _, ramp_text = spec.strip().partition(":")
        kind = next((known for known in SCENARIO_KINDS if known == name), None)
        if kind is None:
            raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIO_KINDS)}")
        ramp = parse_duration(ramp_text) if ramp_text else DEFAULT_RAMPS[kind]
        if kind != "silent" and ramp <= timedelta(0):
            raise ValueError(f"scenario {spec!r}: the ramp must be longer than zero")
        return cls(kind=kind, ramp=ramp)


def parse_scenario_assignments(values: list[str]) -> dict[str, str]:
    """Turn CLI values like `sim-0003=bearing_wear:6h` into {asset_id: scenario spec}."""
    assignments: dict[str, str] = {}
    for value in values:
        asset_id, sep, spec = value.partition("=")
        if not sep or not asset_id or not spec:
            raise ValueError(f"scenario {value!r} must look like <asset_id>=<kind>[:<duration>]")
        Scenario.parse(spec)
        assignments[asset_id.strip()] = spec.strip()
    return assignments


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """How many machines, the seed, their sites and which faults to inject where.

    `scenarios` maps an asset id to a `Scenario` or to a spec string such as
    `"bearing_wear:6h"`.
    """

    assets: int = 10
    seed: int = 0
    sites: tuple[str, ...] = ("plant-north", "plant-south")
    scenarios: Mapping[str, Scenario | str] = field(default_factory=dict)
    id_prefix: str = "sim-"

    def __post_init__(self) -> None:
        if self.assets < 1:
            raise ValueError("a fleet needs at least one asset")
        if not self.sites:
            raise ValueError("a fleet needs at least one site")
        ids = set(self.asset_ids())
        unknown = sorted(set(self.scenarios) - ids)
        if unknown:
            raise ValueError(
                f"scenarios name assets not in the fleet: {', '.join(unknown)};"
                f" ids run from {self.asset_id(0)} to {self.asset_id(self.assets - 1)}"
            )
        for asset_id in self.scenarios:
            self.scenario_for(asset_id)

    def asset_id(self, index: int) -> str:
        """Return the id of the asset at zero-based `index`, e.g. `sim-0001` for 0."""
        return f"{self.id_prefix}{index + 1:04d}"

    def asset_ids(self) -> list[str]:
        """Return every asset id, in fleet order."""
        return [self.asset_id(i) for i in range(self.assets)]

    def scenario_for(self, asset_id: str) -> Scenario | None:
        """Return the parsed scenario of an asset, or None if it is healthy."""
        spec = self.scenarios.get(asset_id)
        if spec is None or isinstance(spec, Scenario):
            return spec
        return Scenario.parse(spec)


@dataclass(frozen=True, slots=True)
class SimAsset:
    """One simulated machine: identity plus the physical constants its signals come from."""

    asset_id: str
    index: int
    site: str
    scenario: Scenario | None
    ambient_c: float
    temperature_rise_c: float
    vibration_base_mm_s: float
    rated_current_a: float
    idle_current_a: float
    initial_run_hours: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One asset's readings at one event time (epoch milliseconds)."""

    asset_id: str
    ts_ms: int
    metrics: dict[str, float]


class _DutyCycle:
    """Alternating run and idle periods of one machine, drawn lazily from its own generator.

    For each period it keeps the running total of run time and the temperature rise
    at its start. That makes `run_seconds` and `rise_c` exact at any instant, without
    stepping through time.
    """

    _HEAT_TAU_S = 1200.0
    _COOL_TAU_S = 1800.0

    def __init__(self, rng: random.Random, start_s: float, full_rise_c: float) -> None:
        self._rng = rng
        self._full_rise_c = full_rise_c
        # Compact arrays: a month of periods for a thousand machines stays near 70 MB.
        self._starts = array("d")
        self._running = array("b")
        self._loads = array("d")
        self._run_before = array("d")
        self._rise_at_start = array("d")
        running = rng.random() < 0.7
        # Start part-way into the first period, so machines are not in lockstep.
        self._append(start_s - rng.uniform(0, self._length(running)), running, 0.0, 0.0)

    def _length(self, running: bool) -> float:
        # At least 2 minutes each way, so a run or an idle is never shorter
        # than a few sampling intervals.
        return self._rng.uniform(600, 2700) if running else self._rng.uniform(120, 1200)

    def _append(self, start_s: float, running: bool, run_before: float, rise: float) -> None:
        self._starts.append(start_s)
        self._running.append(1 if running else 0)
        self._loads.append(self._rng.uniform(0.55, 1.0) if running else 0.0)
        self._run_before.append(run_before)
        self._rise_at_start.append(rise)
        self._next_start = start_s + self._length(running)

    def _extend_to(self, at_s: float) -> None:
        while self._next_start <= at_s:
            last = len(self._starts) - 1
            span = self._next_start - self._starts[last]
            running = self._running[last] == 1
            rise = self._rise_after(last, span)
            run_before = self._run_before[last] + (span if running else 0.0)
            self._append(self._next_start, not running, run_before, rise)

    def _rise_after(self, period: int, elapsed_s: float) -> float:
        # A first-order thermal response: approach the period's target exponentially.
        if self._running[period]:
            target = self._full_rise_c * self._loads[period]
            tau = self._HEAT_TAU_S
        else:
            target, tau = 0.0, self._COOL_TAU_S
        start = self._rise_at_start[period]
        return target + (start - target) * math.exp(-elapsed_s / tau)

    def state(self, at_s: float) -> tuple[bool, float, float, float, float]:
        """Return (running, load, seconds into the period, total run seconds, rise in °C)."""
        self._extend_to(at_s)
        period = bisect_right(self._starts, at_s) - 1
        if period < 0:
            raise ValueError("the fleet cannot be sampled before its start time")
        into = at_s - self._starts[period]
        running = self._running[period] == 1
        run_s = self._run_before[period] + (into if running else 0.0)
        return running, self._loads[period], into, run_s, self._rise_after(period, into)


class Fleet:
    """Produce each asset's readings for an event time; same seed, same readings."""

    def __init__(self, config: FleetConfig, start_ms: int) -> None:
        self.config = config
        self.start_ms = start_ms
        self._start_s = start_ms / 1000
        self._seed = config.seed & _MASK64
        assets: list[SimAsset] = []
        cycles: list[_DutyCycle] = []
        for index in range(config.assets):
            asset_id = config.asset_id(index)
            # String seeds go through SHA-512 in `random`, so they are stable across runs.
            rng = random.Random(f"pmkeeper-sim:{config.seed}:{asset_id}")  # noqa: S311 - not crypto
            asset = SimAsset(
                asset_id=asset_id,
                index=index,
                site=config.sites[index % len(config.sites)],
                scenario=config.scenario_for(asset_id),
                ambient_c=rng.uniform(16.0, 26.0),
                temperature_rise_c=rng.uniform(18.0, 32.0),
                vibration_base_mm_s=rng.uniform(1.0, 2.6),
                rated_current_a=rng.choice((7.5, 11.0, 15.0, 22.0, 30.0)),
                idle_current_a=rng.uniform(0.2, 0.6),
                initial_run_hours=round(rng.uniform(200.0, 15000.0), 1),
            )
            assets.append(asset)
            cycles.append(_DutyCycle(rng, self._start_s, asset.temperature_rise_c))
        self.assets: tuple[SimAsset, ...] = tuple(assets)
        self._by_id = {asset.asset_id: asset for asset in assets}
        self._cycles = cycles

    def asset(self, asset_id: str) -> SimAsset:
        """Return the simulated asset with this id; raise KeyError if the fleet has none."""
        return self._by_id[asset_id]

    def is_silent(self, asset_id: str, at_ms: int) -> bool:
        """Tell whether the asset has stopped publishing by `at_ms` (the `silent` scenario)."""
        scenario = self._by_id[asset_id].scenario
        return (
            scenario is not None
            and scenario.kind == "silent"
            and at_ms - self.start_ms >= scenario.ramp / timedelta(milliseconds=1)
        )

    def sample(self, asset_id: str, at_ms: int) -> Sample | None:
        """Return the asset's readings at event time `at_ms`, or None once it has gone silent."""
        if at_ms < self.start_ms:
            raise ValueError(f"at_ms {at_ms} is before the fleet's start {self.start_ms}")
        asset = self._by_id[asset_id]
        if self.is_silent(asset_id, at_ms):
            return None
        at_s = at_ms / 1000
        running, load, into_s, run_s, rise_c = self._cycles[asset.index].state(at_s)
        key = self._key(asset.index, at_ms)
        n_temperature, n_vibration = _gaussians(key ^ _CH_TEMPERATURE_VIBRATION)
        n_current, n_spike = _gaussians(key ^ _CH_CURRENT_SPIKE)
        wear = self._severity(asset, "bearing_wear", at_ms)
        heat = self._severity(asset, "overheating", at_ms)

        ambient = self._ambient(asset, at_s)
        # A fouled cooler makes the machine run hotter under load, and a worn
        # bearing adds friction heat.
        temperature = ambient + rise_c * (1.0 + 1.2 * heat) + 8.0 * heat + 6.0 * wear * load
        temperature += 0.15 * n_temperature

        if running:
            vibration = asset.vibration_base_mm_s * (0.85 + 0.3 * load)
            # Bearing defects add broadband vibration that grows faster as the
            # damage spreads, with impacts showing up as spikes.
            vibration += 9.0 * wear
            vibration += (0.06 * asset.vibration_base_mm_s + 0.4 * wear) * n_vibration
            if wear > 0.0 and abs(n_spike) > 2.0 - wear:
                vibration += 3.0 * wear
            current = asset.rated_current_a * (0.45 + 0.5 * load) * (1.0 + 0.04 * wear)
            # A motor draws several times its rated current for the first seconds after start-up.
            current *= 1.0 + 4.0 * math.exp(-into_s / 0.8)
            current += 0.015 * asset.rated_current_a * n_current
        else:
            vibration = 0.08 + 0.03 * abs(n_vibration)
            current = asset.idle_current_a + 0.02 * n_current

        return Sample(
            asset_id=asset_id,
            ts_ms=at_ms,
            metrics={
                "temperature_c": round(temperature, 2),
                "vibration_mm_s": round(max(vibration, 0.01), 3),
                "motor_current_a": round(max(current, 0.0), 2),
                "run_hours": round(asset.initial_run_hours + run_s / 3600, 4),
                "running": 1.0 if running else 0.0,
            },
        )

    def sample_all(self, at_ms: int) -> list[Sample]:
        """Return every publishing asset's readings at `at_ms`, in fleet order."""
        samples = []
        for asset in self.assets:
            sample = self.sample(asset.asset_id, at_ms)
            if sample is not None:
                samples.append(sample)
        return samples

    def _key(self, index: int, at_ms: int) -> int:
        return _mix(_mix(self._seed ^ (index << 32)) ^ (at_ms & _MASK64)) & ~0xFF

    def _severity(self, asset: SimAsset, kind: str, at_ms: int) -> float:
        """Return how advanced a fault is: 0 when healthy, 1 at the end of the ramp."""
        scenario = asset.scenario
        if scenario is None or scenario.kind != kind:
            return 0.0
        progress = (at_ms - self.start_ms) / (scenario.ramp / timedelta(milliseconds=1))
        # Faults worsen slowly at first and then faster, as real wear does.
        # Capped a little past the ramp so values stay physical.
        progress = min(max(progress, 0.0), 1.2)
        return math.expm1(3.0 * progress) / math.expm1(3.0)

    def _ambient(self, asset: SimAsset, at_s: float) -> float:
        # Plant halls are warmest mid-afternoon (UTC here) and drift a little
        # from day to day.
        day_phase = (at_s % _DAY_S) / _DAY_S
        daily = 3.5 * math.sin(_TWO_PI * (day_phase - 0.375))
        return asset.ambient_c + daily + 1.2 * self._wander(asset.index, at_s)

    def _wander(self, index: int, at_s: float) -> float:
        # Smooth value noise: hashed knots every few hours, cosine-interpolated.
        position = at_s / _WANDER_KNOT_S
        knot = math.floor(position)
        fraction = position - knot
        base = _mix(self._seed ^ (index << 32) ^ _CH_AMBIENT_WANDER)
        left = _uniform(_mix(base ^ (knot & _MASK64))) * 2 - 1
        right = _uniform(_mix(base ^ ((knot + 1) & _MASK64))) * 2 - 1
        weight = (1 - math.cos(math.pi * fraction)) / 2
        return left + (right - left) * weight


def _mix(value: int) -> int:
    """Scramble 64 bits (splitmix64's finaliser), the basis of time-addressable noise."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _uniform(bits: int) -> float:
    return (bits >> 11) * (1.0 / (1 << 53))


def _gaussians(key: int) -> tuple[float, float]:
    """Return two independent standard normal values derived from `key` (Box-Muller)."""
    bits = _mix(key)
    u1 = ((bits >> 32) + 1) / 4294967297.0
    u2 = (bits & 0xFFFFFFFF) / 4294967296.0
    radius = math.sqrt(-2.0 * math.log(u1))
    return radius * math.cos(_TWO_PI * u2), radius * math.sin(_TWO_PI * u2)
