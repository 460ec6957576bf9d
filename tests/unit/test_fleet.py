"""The simulated fleet: reproducible, physically plausible, and degrading where told to."""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterator
from datetime import timedelta

import pytest

from simulator.fleet import (
    Fleet,
    FleetConfig,
    Sample,
    Scenario,
    ScenarioKind,
    parse_scenario_assignments,
)
from simulator.publisher import BrokerAddress, PublishPlan, encode_payload

# 2026-11-22T07:00:00Z, the frozen start of every fleet here.
START_MS = 1_795_330_800_000
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


def _fleet(seed: int = 7, assets: int = 6, **scenarios: str) -> Fleet:
    config = FleetConfig(
        assets=assets, seed=seed, scenarios={k.replace("_", "-"): v for k, v in scenarios.items()}
    )
    return Fleet(config, START_MS)


def _series(fleet: Fleet, asset_id: str, hours: float, step_ms: int) -> Iterator[Sample]:
    for at_ms in range(START_MS, START_MS + int(hours * HOUR_MS), step_ms):
        sample = fleet.sample(asset_id, at_ms)
        if sample is not None:
            yield sample


def _running_mean(samples: list[Sample], metric: str, first_ms: int, last_ms: int) -> float:
    values = [
        s.metrics[metric]
        for s in samples
        if first_ms <= s.ts_ms < last_ms and s.metrics["running"] == 1.0
    ]
    assert len(values) >= 5, "too few running samples in the window to compare"
    return statistics.fmean(values)


def test_same_seed_gives_the_same_readings() -> None:
    times = [START_MS + n * 37_000 for n in range(300)]

    first = [_fleet(seed=7).sample_all(at) for at in times]
    second = [_fleet(seed=7).sample_all(at) for at in times]

    assert first == second


def test_readings_do_not_depend_on_the_order_of_queries() -> None:
    times = [START_MS + n * 91_000 for n in range(200)]
    forward = _fleet()
    backward = _fleet()

    ahead = {at: forward.sample_all(at) for at in times}
    behind = {at: backward.sample_all(at) for at in reversed(times)}

    assert ahead == behind


def test_different_seed_gives_different_readings() -> None:
    at_ms = START_MS + 5 * MINUTE_MS

    one = [s.metrics for s in _fleet(seed=1).sample_all(at_ms)]
    two = [s.metrics for s in _fleet(seed=2).sample_all(at_ms)]

    assert one != two
    assert all(a["temperature_c"] != b["temperature_c"] for a, b in zip(one, two, strict=True))


def test_assets_have_ids_sites_and_every_metric() -> None:
    fleet = Fleet(FleetConfig(assets=12, sites=("north", "south", "east")), START_MS)

    assert [a.asset_id for a in fleet.assets] == [f"sim-{n:04d}" for n in range(1, 13)]
    assert {a.site for a in fleet.assets} == {"north", "south", "east"}
    assert fleet.asset("sim-0004").site == "north"
    sample = fleet.sample("sim-0001", START_MS)
    assert sample is not None
    assert set(sample.metrics) == {
        "temperature_c",
        "vibration_mm_s",
        "motor_current_a",
        "run_hours",
        "running",
    }
    assert sample.ts_ms == START_MS


def test_ids_widen_past_9999_and_take_a_prefix() -> None:
    config = FleetConfig(assets=10_001, id_prefix="pump-")

    assert config.asset_id(0) == "pump-0001"
    assert config.asset_id(10_000) == "pump-10001"


def test_run_hours_only_advance_while_running() -> None:
    fleet = _fleet(assets=5)
    step_ms = 10_000
    advanced_while_idle = 0
    for asset in fleet.assets:
        samples = list(_series(fleet, asset.asset_id, hours=12, step_ms=step_ms))
        running = [s.metrics["running"] for s in samples]
        assert 0.3 < statistics.fmean(running) < 0.95, "duty cycle out of a plausible range"
        for before, after in itertools.pairwise(samples):
            delta_h = after.metrics["run_hours"] - before.metrics["run_hours"]
            assert delta_h >= 0, "run_hours went backwards"
            if before.metrics["running"] == after.metrics["running"] == 0.0:
                advanced_while_idle += delta_h != 0
            if before.metrics["running"] == after.metrics["running"] == 1.0:
                assert delta_h == pytest.approx(step_ms / HOUR_MS, abs=2e-4)

    assert advanced_while_idle == 0


def test_run_hours_total_matches_time_spent_running() -> None:
    fleet = _fleet(assets=3)
    step_ms = 5_000
    for asset in fleet.assets:
        samples = list(_series(fleet, asset.asset_id, hours=6, step_ms=step_ms))
        run_time_h = sum(s.metrics["running"] for s in samples) * step_ms / HOUR_MS
        counted_h = samples[-1].metrics["run_hours"] - samples[0].metrics["run_hours"]

        assert counted_h == pytest.approx(run_time_h, abs=0.01)


def test_healthy_assets_stay_within_normal_bands_for_two_days() -> None:
    fleet = _fleet(assets=10)
    for asset in fleet.assets:
        for sample in _series(fleet, asset.asset_id, hours=48, step_ms=2 * MINUTE_MS):
            m = sample.metrics
            assert 5.0 < m["temperature_c"] < 75.0
            if m["running"] == 1.0:
                # ISO 10816 class I-II machines in good or satisfactory condition.
                assert 0.5 < m["vibration_mm_s"] < 4.5
                assert m["motor_current_a"] > 0.4 * asset.rated_current_a
            else:
                assert m["vibration_mm_s"] < 0.3
                assert m["motor_current_a"] < 1.0


def test_motor_current_follows_the_duty_cycle() -> None:
    fleet = _fleet(assets=4)
    for asset in fleet.assets:
        samples = list(_series(fleet, asset.asset_id, hours=8, step_ms=MINUTE_MS))
        running = [s.metrics["motor_current_a"] for s in samples if s.metrics["running"]]
        idle = [s.metrics["motor_current_a"] for s in samples if not s.metrics["running"]]

        assert min(running) > 5 * max(idle)


def test_halls_are_warmer_in_the_afternoon_than_before_dawn() -> None:
    fleet = _fleet(assets=20)
    afternoons, nights = [], []
    for day in range(1, 6):
        midnight = START_MS - 7 * HOUR_MS + day * 24 * HOUR_MS
        afternoons += [
            s.metrics["temperature_c"] for s in fleet.sample_all(midnight + 15 * HOUR_MS)
        ]
        nights += [s.metrics["temperature_c"] for s in fleet.sample_all(midnight + 3 * HOUR_MS)]

    assert statistics.fmean(afternoons) > statistics.fmean(nights) + 3.0


def test_bearing_wear_raises_vibration_faster_and_faster() -> None:
    fleet = _fleet(sim_0002="bearing_wear:6h")
    worn = list(_series(fleet, "sim-0002", hours=6, step_ms=20_000))
    healthy = list(_series(fleet, "sim-0001", hours=6, step_ms=20_000))

    first_hour = _running_mean(worn, "vibration_mm_s", START_MS, START_MS + HOUR_MS)
    middle_hour = _running_mean(
        worn, "vibration_mm_s", START_MS + 2 * HOUR_MS, START_MS + 3 * HOUR_MS
    )
    last_hour = _running_mean(
        worn, "vibration_mm_s", START_MS + 5 * HOUR_MS, START_MS + 6 * HOUR_MS
    )

    assert first_hour < 4.5
    assert last_hour > first_hour + 4.0
    assert last_hour - middle_hour > middle_hour - first_hour, "wear should accelerate"
    healthy_first = _running_mean(healthy, "vibration_mm_s", START_MS, START_MS + HOUR_MS)
    healthy_last = _running_mean(
        healthy, "vibration_mm_s", START_MS + 5 * HOUR_MS, START_MS + 6 * HOUR_MS
    )
    assert abs(healthy_last - healthy_first) < 0.5


def test_overheating_drifts_temperature_up_against_its_healthy_twin() -> None:
    sick = _fleet(sim_0003="overheating:6h")
    twin = _fleet()
    at_start = START_MS + 5 * MINUTE_MS
    at_end = START_MS + 6 * HOUR_MS - 5 * MINUTE_MS

    def temperature(fleet: Fleet, at_ms: int) -> float:
        sample = fleet.sample("sim-0003", at_ms)
        assert sample is not None
        return sample.metrics["temperature_c"]

    assert temperature(sick, at_start) == pytest.approx(temperature(twin, at_start), abs=0.2)
    assert temperature(sick, at_end) > temperature(twin, at_end) + 8.0
    samples = list(_series(sick, "sim-0003", hours=6, step_ms=20_000))
    first_hour = statistics.fmean(
        s.metrics["temperature_c"] for s in samples if s.ts_ms < START_MS + HOUR_MS
    )
    last_hour = statistics.fmean(
        s.metrics["temperature_c"] for s in samples if s.ts_ms >= START_MS + 5 * HOUR_MS
    )
    assert last_hour > first_hour + 15.0


def test_a_scenario_leaves_other_assets_untouched() -> None:
    sick = _fleet(sim_0002="bearing_wear:1h", sim_0003="overheating:1h")
    twin = _fleet()
    at_ms = START_MS + 3 * HOUR_MS

    for asset_id in ("sim-0001", "sim-0004", "sim-0005", "sim-0006"):
        assert sick.sample(asset_id, at_ms) == twin.sample(asset_id, at_ms)


def test_silent_asset_stops_publishing_after_its_time() -> None:
    fleet = _fleet(sim_0004="silent:30m")
    before = START_MS + 30 * MINUTE_MS - 1
    after = START_MS + 30 * MINUTE_MS

    assert fleet.sample("sim-0004", before) is not None
    assert fleet.sample("sim-0004", after) is None
    assert fleet.is_silent("sim-0004", after)
    assert not fleet.is_silent("sim-0001", after)
    assert "sim-0004" not in {s.asset_id for s in fleet.sample_all(after)}
    assert len(fleet.sample_all(after)) == 5


def test_sampling_before_the_start_is_refused() -> None:
    with pytest.raises(ValueError, match="before the fleet's start"):
        _fleet().sample("sim-0001", START_MS - 1)


@pytest.mark.parametrize(
    ("spec", "kind", "ramp"),
    [
        ("bearing_wear", "bearing_wear", timedelta(days=3)),
        ("overheating", "overheating", timedelta(hours=12)),
        ("silent", "silent", timedelta(minutes=10)),
        ("bearing_wear:6h", "bearing_wear", timedelta(hours=6)),
        ("overheating:1.5h", "overheating", timedelta(minutes=90)),
        ("silent:90s", "silent", timedelta(seconds=90)),
        ("silent:0s", "silent", timedelta(0)),
        (" bearing_wear:2d ", "bearing_wear", timedelta(days=2)),
        ("overheating:500ms", "overheating", timedelta(milliseconds=500)),
    ],
)
def test_scenario_specs_parse(spec: str, kind: ScenarioKind, ramp: timedelta) -> None:
    assert Scenario.parse(spec) == Scenario(kind=kind, ramp=ramp)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rusting", "unknown scenario 'rusting'"),
        ("bearing_wear:soon", "duration 'soon'"),
        ("bearing_wear:6", "duration '6'"),
        ("bearing_wear:0h", "longer than zero"),
        ("", "unknown scenario ''"),
    ],
)
def test_bad_scenario_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario.parse(spec)


def test_scenarios_must_name_assets_of_the_fleet() -> None:
    with pytest.raises(ValueError, match="sim-0099"):
        FleetConfig(assets=3, scenarios={"sim-0099": "silent"})
    with pytest.raises(ValueError, match="unknown scenario"):
        FleetConfig(assets=3, scenarios={"sim-0001": "melting"})
    with pytest.raises(ValueError, match="at least one asset"):
        FleetConfig(assets=0)


def test_scenario_assignments_from_the_command_line() -> None:
    assert parse_scenario_assignments(["sim-0001=silent:5m", "sim-0002=bearing_wear"]) == {
        "sim-0001": "silent:5m",
        "sim-0002": "bearing_wear",
    }
    with pytest.raises(ValueError, match="<asset_id>=<kind>"):
        parse_scenario_assignments(["sim-0001"])
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenario_assignments(["sim-0001=boom"])


# The wire format and the publisher's settings: pure, no broker needed.


def _sample(ts_ms: int = START_MS + 123) -> Sample:
    return Sample("sim-0001", ts_ms, {"temperature_c": 40.5, "running": 1.0})


def test_payload_is_one_object_with_epoch_ms() -> None:
    payload = json.loads(encode_payload([_sample()]))

    assert payload == {"ts": START_MS + 123, "metrics": {"temperature_c": 40.5, "running": 1.0}}


def test_payload_with_iso_timestamps() -> None:
    payload = json.loads(encode_payload([_sample()], "iso"))

    assert payload["ts"] == "2026-11-22T07:00:00.123Z"


def test_batch_payload_is_an_array() -> None:
    payload = json.loads(encode_payload([_sample(START_MS), _sample(START_MS + 500)], batch=True))

    assert [item["ts"] for item in payload] == [START_MS, START_MS + 500]


def test_non_batch_payload_needs_exactly_one_sample() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        encode_payload([_sample(), _sample()])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", BrokerAddress("127.0.0.1", 1884)),
        ("mqtt://broker", BrokerAddress("broker", 1883)),
        ("mqtts://broker", BrokerAddress("broker", 8883, tls=True)),
        ("mqtt://dev%40x:p%3Ass@h:1", BrokerAddress("h", 1, username="dev@x", password="p:ss")),
    ],
    ids=["host-port", "default-port", "tls-default-port", "credentials-in-url"],
)
def test_broker_url_parses(url: str, expected: BrokerAddress) -> None:
    assert BrokerAddress.from_url(url) == expected


def test_explicit_credentials_win_over_the_url() -> None:
    address = BrokerAddress.from_url("mqtt://a:b@h", username="dev", password="secret")

    assert (address.username, address.password) == ("dev", "secret")


@pytest.mark.parametrize("url", ["http://h:1883", "h:1883", "mqtt://:1883"])
def test_bad_broker_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="broker URL"):
        BrokerAddress.from_url(url)


def test_plan_puts_the_asset_id_in_the_topic() -> None:
    assert PublishPlan().topic_for("sim-0001") == "pmk/sim-0001/telemetry"
    assert PublishPlan(topic="a/b/+/data").topic_for("x") == "a/b/x/data"


BAD_PLANS: list[tuple[dict[str, object], str]] = [
    ({"rate_per_asset": 0}, "positive number"),
    ({"rate_per_asset": float("inf")}, "positive number"),
    ({"rate_per_asset": float("nan")}, "positive number"),
    ({"qos": 2}, "qos must be 0 or 1"),
    ({"batch": 0}, "batch must be at least 1"),
    ({"duration_s": 0}, "duration_s must be positive"),
    ({"count": -1}, "count must not be negative"),
    ({"ts_format": "seconds"}, "ts_format"),
    ({"topic": "pmk/telemetry"}, "needs a '\\+' level"),
    ({"topic": "pmk/+/#"}, "no '#'"),
    ({"window": 0}, "window must be at least 1"),
]


@pytest.mark.parametrize(
    ("changes", "message"),
    BAD_PLANS,
    ids=["-".join(f"{k}={v}" for k, v in changes.items()) for changes, _ in BAD_PLANS],
)
def test_plan_refuses_bad_settings(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PublishPlan(**changes)  # type: ignore[arg-type]
