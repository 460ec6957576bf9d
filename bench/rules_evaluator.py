"""Benchmark the rule engine: `RuleEngine.apply` throughput and `tick` cost, single core.

Run `python -m bench.rules_evaluator` (what `make bench-rules` does). It builds a fleet
(assets across types and sites, with tags, five metrics each) and a rule set spread over
condition kinds and selector styles, generates readings in event-time order (one per
series every 10 s; mostly healthy, a few assets degrading and recovering, a few falling
silent), warms every series from 30 minutes of generated history as a restart would, and
times `apply` over batches like the ingest writer's. Each run uses a fresh engine on the
same readings. Nothing here does I/O but writing the result file.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import json
import math
import os
import platform
import pstats
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from core.assets import Asset
from core.telemetry import Reading
from rules.engine import KeyedOutcome, RuleEngine
from rules.evaluate import Point, Status, tick
from rules.model import NoData, Rule

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"

T0_MS = 1_795_330_800_000  # 2026-11-22T07:00:00Z: the first measured reading
STEP_MS = 10_000  # one reading per series every 10 s of event time
HISTORY_MS = 30 * 60_000  # warm-up history: the longest window (trend, 30 min)
PRE_ROLL_ROUNDS = 6  # rounds applied untimed after the warm-up, per run
DEGRADE_PERIOD_MS = 40 * 60_000  # a degrading asset rises and recovers over this period
TYPES = ("pump", "fan", "compressor", "motor", "chiller")
SITES = tuple(f"site-{i:02d}" for i in range(10))
ZONES = ("a", "b", "c", "d")
LINES = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class MetricSpec:
    """How one metric behaves and where its rules put their thresholds."""

    name: str
    base: float
    noise: float
    # How far a degrading asset drifts at the top of its cycle (negative: it drops).
    drift: float
    alarm: float
    clear: float
    band: tuple[float, float]

    @property
    def comparison(self) -> str:
        """Return which side of the alarm is bad."""
        return "above" if self.drift > 0 else "below"


METRICS = (
    MetricSpec("temperature_c", 60.0, 1.5, 35.0, 80.0, 75.0, (40.0, 85.0)),
    MetricSpec("vibration_mm_s", 3.0, 0.3, 6.0, 7.0, 6.0, (1.0, 8.0)),
    MetricSpec("pressure_bar", 6.0, 0.2, -3.0, 4.0, 4.5, (4.0, 8.5)),
    MetricSpec("current_a", 20.0, 0.6, 12.0, 28.0, 26.0, (10.0, 30.0)),
    MetricSpec("flow_m3_h", 50.0, 1.0, -20.0, 35.0, 38.0, (30.0, 70.0)),
)
SPEC_BY_METRIC = {spec.name: spec for spec in METRICS}

# Shares of the rule set, by condition kind and by selector style.
KIND_WEIGHTS = {
    "threshold": 55,
    "outside": 10,
    "rolling": 15,
    "rate_of_change": 8,
    "trend": 7,
    "no_data": 5,
}
SELECTOR_WEIGHTS = {"asset_id": 60, "type": 5, "site": 5, "tags": 10, "type_site": 20}


@dataclass(frozen=True)
class Fleet:
    """The assets, the rules, and how each asset behaves in the generated telemetry."""

    assets: dict[str, Asset]
    rules: list[Rule]
    # asset id -> phase (ms) of its degrade cycle, for the few assets that degrade.
    degrading: dict[str, int]
    # asset id -> (from_ms, to_ms) of event time during which it sends nothing.
    silent: dict[str, tuple[int, int]]


def build_fleet(assets: int, rules: int, seed: int) -> Fleet:
    """Build assets across types and sites, and rules across kinds and selectors."""
    rng = random.Random(seed)
    fleet: dict[str, Asset] = {}
    for i in range(assets):
        type_ = TYPES[i % len(TYPES)]
        asset_id = f"{type_}-{i:05d}"
        fleet[asset_id] = Asset(
            id=asset_id,
            name=asset_id,
            type=type_,
            site=SITES[rng.randrange(len(SITES))],
            tags={"zone": rng.choice(ZONES), "line": rng.choice(LINES)},
        )
    ids = list(fleet)
    degrading = {a: rng.randrange(DEGRADE_PERIOD_MS) for a in rng.sample(ids, max(1, assets // 50))}
    quiet = [a for a in ids if a not in degrading]
    silent = {
        a: (T0_MS + rng.randrange(5 * 60_000), T0_MS + 60 * 60_000)
        for a in rng.sample(quiet, max(1, assets // 200))
    }
    built = [_rule(n, rng, fleet, ids, degrading) for n in range(rules)]
    return Fleet(fleet, built, degrading, silent)


def _weighted(rng: random.Random, weights: Mapping[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _rule(
    n: int,
    rng: random.Random,
    fleet: Mapping[str, Asset],
    ids: Sequence[str],
    degrading: Mapping[str, int],
) -> Rule:
    spec = rng.choice(METRICS)
    style = _weighted(rng, SELECTOR_WEIGHTS)
    some = fleet[rng.choice(ids)]
    selector: dict[str, Any] = {"metric": spec.name}
    if style == "asset_id":
        # Watch degrading assets a little more often than chance, as people do.
        chosen = rng.choice(list(degrading)) if rng.random() < 0.05 else some.id
        selector["asset_id"] = chosen
    elif style == "type":
        selector["asset_type"] = some.type
    elif style == "site":
        selector["site"] = some.site
    elif style == "tags":
        selector["tags"] = {"zone": some.tags["zone"], "line": some.tags["line"]}
        if rng.random() < 0.3:
            del selector["tags"]["line"]
    else:
        selector["asset_type"] = some.type
        selector["site"] = some.site
    kind = _weighted(rng, KIND_WEIGHTS)
    timing: dict[str, Any] = {}
    condition: dict[str, Any]
    if kind == "threshold":
        condition = {
            "kind": "threshold",
            "comparison": spec.comparison,
            "threshold": spec.alarm,
            "clear": spec.clear,
        }
        timing["hold_for"] = timedelta(seconds=rng.choice((0, 30, 60, 120, 300)))
        timing["quiet_period"] = timedelta(seconds=rng.choice((0, 60)))
    elif kind == "outside":
        condition = {"kind": "outside", "low": spec.band[0], "high": spec.band[1]}
        timing["hold_for"] = timedelta(seconds=rng.choice((0, 60)))
    elif kind == "rolling":
        condition = {
            "kind": "rolling",
            "aggregate": rng.choice(("mean", "max")),
            "comparison": spec.comparison,
            "threshold": spec.alarm,
            "clear": spec.clear,
            "window": timedelta(minutes=rng.choice((5, 10, 15))),
        }
    elif kind == "rate_of_change":
        # 80 % of the degrading slope (drift over half a period, per second); over 10
        # minutes, healthy noise stays several standard deviations below it.
        slope = spec.drift / (DEGRADE_PERIOD_MS / 2 / 1000)
        condition = {
            "kind": "rate_of_change",
            "comparison": spec.comparison,
            "threshold": 0.8 * slope,
            "window": timedelta(minutes=10),
        }
        timing["hold_for"] = timedelta(seconds=60)
    elif kind == "trend":
        condition = {
            "kind": "trend",
            "comparison": spec.comparison,
            "threshold": spec.alarm,
            "window": timedelta(minutes=30),
            "horizon": timedelta(hours=1),
            "min_points": 10,
        }
    else:
        condition = {"kind": "no_data", "silence": timedelta(minutes=5)}
    return Rule.model_validate(
        {
            "id": f"rule-{n:05d}",
            "name": f"{kind} on {spec.name}",
            "selector": selector,
            "condition": condition,
            **timing,
        }
    )


def value_at(
    fleet: Fleet, asset_id: str, spec: MetricSpec, ts_ms: int, rng: random.Random
) -> float:
    """Return a series' value at a time: noise around a base, plus a drift cycle if degrading."""
    value = spec.base + rng.gauss(0.0, spec.noise)
    phase = fleet.degrading.get(asset_id)
    if phase is not None:
        # A triangle: 0 -> 1 -> 0 over the period, then the asset is repaired and restarts.
        x = ((ts_ms + phase) % DEGRADE_PERIOD_MS) / DEGRADE_PERIOD_MS
        value += spec.drift * (1.0 - abs(2.0 * x - 1.0))
    return round(value, 3)


def generate_readings(fleet: Fleet, rounds: int, seed: int) -> list[Reading]:
    """Return `rounds` readings of every series from T0, in event-time order."""
    rng = random.Random(seed + 1)
    readings: list[Reading] = []
    for r in range(rounds):
        ts_ms = T0_MS + r * STEP_MS
        for asset_id in fleet.assets:
            window = fleet.silent.get(asset_id)
            if window is not None and window[0] <= ts_ms < window[1]:
                continue
            for spec in METRICS:
                value = value_at(fleet, asset_id, spec, ts_ms, rng)
                readings.append(Reading(asset_id, spec.name, ts_ms, value))
    return readings


def generate_history(fleet: Fleet, seed: int) -> dict[tuple[str, str], list[Point]]:
    """Return the stored points of the 30 minutes before T0, per series."""
    rng = random.Random(seed + 2)
    history: dict[tuple[str, str], list[Point]] = {}
    for asset_id in fleet.assets:
        for spec in METRICS:
            history[asset_id, spec.name] = [
                (ts_ms, value_at(fleet, asset_id, spec, ts_ms, rng))
                for ts_ms in range(T0_MS - HISTORY_MS, T0_MS, STEP_MS)
            ]
    return history


def batches(readings: Sequence[Reading], size: int) -> Iterator[Sequence[Reading]]:
    """Yield consecutive slices of `size` readings."""
    for start in range(0, len(readings), size):
        yield readings[start : start + size]


@dataclass
class Run:
    """One timed pass of `apply` over the readings, and the ticks after it."""

    run: int
    readings: int
    seconds: float
    readings_per_s: float
    # CPU time of this process over the same calls: a share below 1 means the machine
    # took the core away for part of the run (another process, the hypervisor).
    cpu_seconds: float
    cpu_share: float
    readings_per_cpu_s: float
    evaluations_per_s: float
    outcomes: int
    events: dict[str, int]
    keys: int
    timed_keys: int
    tick_first_ms: float
    tick_steady_ms: float
    tick_outcomes: int
    tick_every_key_ms: float
    warm_s: float
    rss_growth_kib: int


@dataclass
class Setup:
    """What every run shares: the fleet, the readings split into pre-roll and timed part."""

    fleet: Fleet
    history: dict[tuple[str, str], list[Point]]
    pre_roll: list[Reading]
    timed: list[Reading]
    batch: int
    matched_per_reading: float
    lookup: Callable[[str], Asset | None] = field(repr=False)


def prepare(args: argparse.Namespace) -> Setup:
    """Build the fleet, the history and the readings (not timed)."""
    fleet = build_fleet(args.assets, args.rules, args.seed)
    series_count = len(fleet.assets) * len(METRICS)
    rounds = PRE_ROLL_ROUNDS + math.ceil(args.readings / series_count) + 1
    readings = generate_readings(fleet, rounds, args.seed)
    split = sum(1 for r in readings if r.ts_ms < T0_MS + PRE_ROLL_ROUNDS * STEP_MS)
    timed = readings[split : split + args.readings]
    probe = RuleEngine(fleet.rules)
    matched = Counter[tuple[str, str]]()
    for r in timed:
        matched[r.asset_id, r.metric] += 1
    evaluations = sum(
        n * len(probe.matching(a, m, fleet.assets.get(a))) for (a, m), n in matched.items()
    )
    return Setup(
        fleet=fleet,
        history=generate_history(fleet, args.seed),
        pre_roll=readings[:split],
        timed=timed,
        batch=args.batch,
        matched_per_reading=evaluations / len(timed),
        lookup=fleet.assets.get,
    )


def warmed_engine(setup: Setup) -> RuleEngine:
    """Return a fresh engine with every series warmed from history and the pre-roll applied."""
    engine = RuleEngine(setup.fleet.rules)
    lookup = setup.lookup
    for (asset_id, metric), points in setup.history.items():
        engine.warm(asset_id, metric, points, lookup(asset_id))
    for batch in batches(setup.pre_roll, setup.batch):
        engine.apply(batch, lookup)
    return engine


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return 0


def timed_run(setup: Setup, run: int) -> Run:
    """Warm a fresh engine, time `apply` over the timed readings, then time `tick`."""
    gc.collect()
    rss_before = _rss_kib()
    started = time.perf_counter()
    engine = warmed_engine(setup)
    warm_s = time.perf_counter() - started
    lookup = setup.lookup
    outcomes: list[KeyedOutcome] = []
    seconds = cpu_seconds = 0.0
    for batch in batches(setup.timed, setup.batch):
        cpu_start = time.process_time()
        start = time.perf_counter()
        produced = engine.apply(batch, lookup)
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        outcomes += produced
    now_ms = setup.timed[-1].ts_ms + STEP_MS
    start = time.perf_counter()
    ticked = engine.tick(now_ms)
    tick_first = time.perf_counter() - start
    steady = []
    for _ in range(20):
        start = time.perf_counter()
        engine.tick(now_ms)
        steady.append(time.perf_counter() - start)
    every_key = _tick_every_key(engine, now_ms)
    events = Counter(type(e).__name__ for o in outcomes + ticked for e in o.events)
    n = len(setup.timed)
    return Run(
        run=run,
        readings=n,
        seconds=seconds,
        readings_per_s=n / seconds,
        cpu_seconds=cpu_seconds,
        cpu_share=cpu_seconds / seconds,
        readings_per_cpu_s=n / cpu_seconds,
        evaluations_per_s=n * setup.matched_per_reading / seconds,
        outcomes=len(outcomes),
        events=dict(sorted(events.items())),
        keys=len(engine.states()),
        timed_keys=_timed_keys(engine),
        tick_first_ms=tick_first * 1000,
        tick_steady_ms=statistics.median(steady) * 1000,
        tick_outcomes=len(ticked),
        tick_every_key_ms=every_key * 1000,
        warm_s=warm_s,
        rss_growth_kib=_rss_kib() - rss_before,
    )


def _tick_every_key(engine: RuleEngine, now_ms: int) -> float:
    """Time the baseline: the pure `tick` on every key, as an engine without a timer set would."""
    rules = engine.rules
    items = list(engine.states().items())
    start = time.perf_counter()
    for key, state in items:
        tick(rules[key.rule_id], state, now_ms)
    return time.perf_counter() - start


def _timed_keys(engine: RuleEngine) -> int:
    """Count the keys a tick hands to the evaluator (through the public API only)."""
    waiting = 0
    for key, state in engine.states().items():
        rule = engine.rules[key.rule_id]
        # What the engine's timer set holds: pending, quiet periods, watched no-data keys.
        pending = state.status is Status.PENDING
        quieting = state.status is Status.FIRING and state.clear_since_ms is not None
        watched = isinstance(rule.condition, NoData) and state.status is not Status.FIRING
        waiting += pending or quieting or watched
    return waiting


def state_memory(setup: Setup) -> dict[str, float]:
    """Measure the states' memory with tracemalloc once every series is warm and rolling."""
    gc.collect()
    tracemalloc.start()
    try:
        engine = warmed_engine(setup)
        current, peak = tracemalloc.get_traced_memory()
        keys = len(engine.states())
        points = sum(len(s.window) for s in engine.states().values())
    finally:
        tracemalloc.stop()
    return {
        "keys": keys,
        "window_points": points,
        "current_mib": current / 2**20,
        "peak_mib": peak / 2**20,
        "bytes_per_key": current / max(keys, 1),
    }


def profile_run(setup: Setup, top: int) -> dict[str, Any]:
    """Profile one pass of `apply` with cProfile; return the top functions by own time."""
    engine = warmed_engine(setup)
    profiler = cProfile.Profile()
    lookup = setup.lookup
    profiler.enable()
    for batch in batches(setup.timed, setup.batch):
        engine.apply(batch, lookup)
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    rows: list[dict[str, Any]] = []
    for (path, line, name), (_, calls, own, cumulative, _) in raw.items():
        short = "/".join(Path(path).parts[-2:]) if path != "~" else ""
        rows.append(
            {
                "function": f"{name} ({short}:{line})" if short else name,
                "calls": calls,
                "own_s": own,
                "own_share": own / total if total else 0.0,
                "cumulative_s": cumulative,
            }
        )
    rows.sort(key=lambda row: row["own_s"], reverse=True)
    return {"profiled_seconds": total, "top_by_own_time": rows[:top]}


def render_profile(profile: Mapping[str, Any]) -> str:
    """Render the profile for the terminal."""
    lines = [
        f"cProfile of one pass ({profile['profiled_seconds']:.1f} s under the profiler, "
        "which slows pure Python down about 2x; shares are what matter)",
        f"  {'own %':>6} {'own s':>7} {'cum s':>7} {'calls':>10}  function",
    ]
    for row in profile["top_by_own_time"]:
        lines.append(
            f"  {row['own_share']:6.1%} {row['own_s']:7.2f} {row['cumulative_s']:7.2f} "
            f"{row['calls']:>10}  {row['function']}"
        )
    return "\n".join(lines)


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: Sequence[Run], setup: Setup) -> dict[str, Any]:
    """Return medians and ranges over the runs."""
    return {
        "readings_per_s": _spread([r.readings_per_s for r in runs]),
        "readings_per_cpu_s": _spread([r.readings_per_cpu_s for r in runs]),
        "cpu_share": _spread([r.cpu_share for r in runs]),
        "evaluations_per_s": _spread([r.evaluations_per_s for r in runs]),
        "us_per_evaluation": _spread([1e6 / r.evaluations_per_s for r in runs]),
        "matched_rules_per_reading": setup.matched_per_reading,
        "outcomes": _spread([r.outcomes for r in runs]),
        "keys": _spread([r.keys for r in runs]),
        "timed_keys": _spread([r.timed_keys for r in runs]),
        "tick_first_ms": _spread([r.tick_first_ms for r in runs]),
        "tick_steady_ms": _spread([r.tick_steady_ms for r in runs]),
        "tick_every_key_ms": _spread([r.tick_every_key_ms for r in runs]),
        "rss_growth_mib": _spread([r.rss_growth_kib / 1024 for r in runs]),
        "warm_s": _spread([r.warm_s for r in runs]),
    }


def _fmt(spread: Mapping[str, float], unit: str = "", digits: int = 0) -> str:
    def f(v: float) -> str:
        return f"{v:,.{digits}f}"

    return f"{f(spread['median'])}{unit} ({f(spread['min'])}-{f(spread['max'])})"


def render_table(result: Mapping[str, Any]) -> str:
    """Render the summary for the terminal."""
    s = result["summary"]
    m = result["memory"]
    setup = result["setup"]
    rows = [
        f"rules evaluator: {setup['rules']} rules, {setup['assets']} assets x "
        f"{setup['metrics']} metrics, {setup['timed_readings']:,} readings per run in "
        f"batches of {setup['batch']}, {result['args']['runs']} runs; median (min-max)",
        f"  {'readings/s':<34} {_fmt(s['readings_per_s'])}",
        f"  {'readings per CPU second':<34} {_fmt(s['readings_per_cpu_s'])}",
        f"  {'CPU share while timed':<34} {_fmt(s['cpu_share'], digits=2)}"
        f"  (below 1.00: the run lost the core for a while)",
        f"  {'rule evaluations/s':<34} {_fmt(s['evaluations_per_s'])}",
        f"  {'µs per evaluation':<34} {_fmt(s['us_per_evaluation'], digits=2)}",
        f"  {'matched rules per reading (mean)':<34} {s['matched_rules_per_reading']:.2f}",
        f"  {'outcomes per run':<34} {_fmt(s['outcomes'])}",
        f"  {'events per run (run 1)':<34} {result['runs'][0]['events']}",
        f"  {'keys (states)':<34} {_fmt(s['keys'])}",
        f"  {'keys waiting on the timer':<34} {_fmt(s['timed_keys'])}",
        f"  {'tick, first after the run':<34} {_fmt(s['tick_first_ms'], ' ms', 2)}"
        f"  ({result['runs'][0]['tick_outcomes']} outcomes)",
        f"  {'tick, steady':<34} {_fmt(s['tick_steady_ms'], ' ms', 2)}",
        f"  {'baseline: pure tick on every key':<34} {_fmt(s['tick_every_key_ms'], ' ms', 2)}"
        f"  (steady tick is {s['tick_steady_ms']['median'] / s['tick_every_key_ms']['median']:.1%}"
        " of it)",
        f"  {'warm-up + pre-roll per run':<34} {_fmt(s['warm_s'], ' s', 2)}",
        f"  {'state memory (tracemalloc)':<34} {m['current_mib']:.1f} MiB for {m['keys']:,} "
        f"keys, {m['window_points']:,} window points ({m['bytes_per_key']:,.0f} B/key; "
        f"peak {m['peak_mib']:.1f} MiB)",
        f"  {'RSS growth per run':<34} {_fmt(s['rss_growth_mib'], ' MiB', 1)}",
    ]
    return "\n".join(rows)


def machine() -> dict[str, Any]:
    """Describe the machine and the interpreter."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.rules_evaluator", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument(
        "--readings", type=int, default=150_000, help="readings timed per run (after warm-up)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000, help="readings per apply() call")
    parser.add_argument(
        "--profile", action="store_true", help="profile one more pass with cProfile (not counted)"
    )
    parser.add_argument("--top", type=int, default=25, help="functions shown with --profile")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write bench/results/rules-evaluator-<UTC>.json."""
    args = build_parser().parse_args(argv)
    if min(args.rules, args.assets, args.readings, args.runs, args.batch) < 1:
        raise SystemExit("--rules, --assets, --readings, --runs and --batch must be positive")
    started_at = dt.datetime.now(dt.UTC)
    wall = time.perf_counter()
    host = machine()  # before the runs, so the load average says what else was running
    setup = prepare(args)
    print(
        f"prepared {len(setup.timed):,} timed readings, {len(setup.pre_roll):,} pre-roll, "
        f"{sum(map(len, setup.history.values())):,} history points in "
        f"{time.perf_counter() - wall:.1f} s",
        flush=True,
    )
    memory = state_memory(setup)
    runs = []
    for n in range(1, args.runs + 1):
        run = timed_run(setup, n)
        runs.append(run)
        print(
            f"run {n}: {run.readings_per_s:,.0f} readings/s (CPU share {run.cpu_share:.2f}), "
            f"{run.evaluations_per_s:,.0f} evaluations/s, {run.outcomes} outcomes, "
            f"tick {run.tick_steady_ms:.2f} ms",
            flush=True,
        )
    result: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.rules_evaluator", *(argv or sys.argv[1:])]),
        "machine": host,
        "args": vars(args),
        "setup": {
            "rules": len(setup.fleet.rules),
            "assets": len(setup.fleet.assets),
            "metrics": len(METRICS),
            "batch": setup.batch,
            "timed_readings": len(setup.timed),
            "pre_roll_readings": len(setup.pre_roll),
            "history_minutes": HISTORY_MS // 60_000,
            "step_s": STEP_MS // 1000,
            "degrading_assets": len(setup.fleet.degrading),
            "silent_assets": len(setup.fleet.silent),
            "rule_kinds": dict(Counter(r.condition.kind for r in setup.fleet.rules)),
            "selector_styles": dict(Counter(_style(r) for r in setup.fleet.rules)),
        },
        "runs": [asdict(r) for r in runs],
        "summary": summarize(runs, setup),
        "memory": memory,
    }
    if args.profile:
        result["profile"] = profile_run(setup, args.top)
    result["wall_s"] = time.perf_counter() - wall
    print()
    print(render_table(result))
    if args.profile:
        print()
        print(render_profile(result["profile"]))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"rules-evaluator-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(REPO_ROOT)} ({result['wall_s']:.0f} s wall)")
    return 0


def _style(rule: Rule) -> str:
    s = rule.selector
    if s.asset_id is not None:
        return "asset_id"
    if s.asset_type is not None and s.site is not None:
        return "type+site"
    if s.asset_type is not None:
        return "type"
    if s.site is not None:
        return "site"
    return "tags" if s.tags else "all"


if __name__ == "__main__":
    raise SystemExit(main())
