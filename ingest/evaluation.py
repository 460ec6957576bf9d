"""Rule evaluation inside ingest: after each durable write, and on a timer.

The writer thread calls `RuleRunner.process` with the readings it has just stored, before
it acknowledges them. The timer thread calls `tick` (for `for` expiries, quiet periods and
silences) and `refresh` (rule and asset changes made through the API). Both record what
happened in one transaction per batch through the `AlertStore`, so a crash either keeps a
batch's states, alerts and work orders or, the messages being unacknowledged, replays it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram

from core.assets import Asset
from core.clock import Clock
from core.errors import NotFoundError
from core.ports import AssetRepository, TelemetryStore
from core.telemetry import Reading, datetime_to_ms, ms_to_datetime
from rules.alerting import Alert, AlertStatus
from rules.engine import KeyedOutcome, RuleEngine, StateKey
from rules.model import NoData, Rule
from rules.ports import AlertStore, RuleRepository

log = logging.getLogger(__name__)

# Rules and assets are read in pages of this size.
_PAGE = 500
# Warm-up reads stop at this many points per series (a 1 h window at 1 Hz is 3,600).
_WARMUP_LIMIT = 20_000
# Readings this far behind the wall clock mean a backlog is being drained...
_BACKLOG_LAG_MS = 60_000
# ...as long as they keep coming; after this long without any, the wall clock is the time.
_IDLE_AFTER = timedelta(seconds=5)


class RuleMetrics:
    """What the rules engine exposes at /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "pmkeeper_rule_evaluations",
            "Readings evaluated against the rules that match them",
            registry=registry,
        )
        self.evaluation_seconds = Histogram(
            "pmkeeper_rule_evaluation_seconds",
            "Time to evaluate and record one written batch",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=registry,
        )
        self.alerts = Counter(
            "pmkeeper_alerts",
            "Alerts opened, by severity and whether they were suppressed (not paged)",
            ["severity", "suppressed"],
            registry=registry,
        )
        self.warmups = Counter(
            "pmkeeper_rule_warmups",
            "Series whose rule windows were rebuilt from the telemetry store",
            registry=registry,
        )


def read_all_rules(rules: RuleRepository) -> list[Rule]:
    """Return every rule, page by page."""
    found: list[Rule] = []
    after: str | None = None
    while True:
        page = rules.list(after_id=after, limit=_PAGE)
        found += page
        if len(page) < _PAGE:
            return found
        after = page[-1].id


def read_all_assets(assets: AssetRepository) -> dict[str, Asset]:
    """Return every asset by id, page by page."""
    found: dict[str, Asset] = {}
    after: str | None = None
    while True:
        page = assets.list(after_id=after, limit=_PAGE)
        found.update((asset.id, asset) for asset in page)
        if len(page) < _PAGE:
            return found
        after = page[-1].id


class RuleRunner:
    """Keep the rule engine fed, its windows warm and its outcomes recorded."""

    def __init__(
        self,
        *,
        rules: RuleRepository,
        assets: AssetRepository,
        telemetry: TelemetryStore,
        alerts: AlertStore,
        clock: Clock,
        metrics: RuleMetrics,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self._rules = rules
        self._assets = assets
        self._telemetry = telemetry
        self._alerts = alerts
        self._clock = clock
        self._metrics = metrics
        self._on_alert = on_alert
        self._engine = RuleEngine()
        self._known: dict[str, Asset | None] = {}
        # Outcomes evaluated but not yet recorded (the store was down): recorded first next time.
        self._unrecorded: list[KeyedOutcome] = []
        # The newest event time evaluated, and when: see _timer_now_ms.
        self._watermark_ms: int | None = None
        self._fed_at: datetime | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> RuleEngine:
        """Return the engine (for tests and benchmarks)."""
        return self._engine

    def start(self) -> None:
        """Load rules, assets and persisted states, and start watching silent series."""
        with self._lock:
            self._known = dict(read_all_assets(self._assets))
            self._engine = RuleEngine(read_all_rules(self._rules), self._alerts.load_states())
            self._seed_silences()
            self._warm_series(self._engine.cold_states())
        log.info(
            "rules engine: %d rules, %d persisted states",
            len(self._engine.rules),
            len(self._engine.states()),
        )

    def _seed_silences(self) -> None:
        """Give no-data rules the last reading of every series they watch.

        A device that went silent while pmkeeper was down sends nothing to notice it by.
        """
        watchers = [r for r in self._engine.rules.values() if isinstance(r.condition, NoData)]
        if not watchers:
            return
        for asset_id, asset in self._known.items():
            latest = None
            for rule in watchers:
                metric = rule.selector.metric
                if rule not in self._engine.matching(asset_id, metric, asset):
                    continue
                latest = latest if latest is not None else self._telemetry.latest(asset_id)
                point = latest.get(metric)
                if point is not None:
                    self._engine.track(
                        StateKey(rule.id, asset_id, metric), datetime_to_ms(point.at)
                    )

    def _asset(self, asset_id: str) -> Asset | None:
        try:
            return self._known[asset_id]
        except KeyError:
            pass
        try:
            asset: Asset | None = self._assets.get(asset_id)
        except NotFoundError:
            asset = None
        self._known[asset_id] = asset
        return asset

    def process(self, readings: Sequence[Reading]) -> None:
        """Evaluate readings just stored and record the outcomes; safe to call again on error.

        A retry after a failure re-applies the same readings, which the evaluator then sees
        as duplicates, and records what is still unrecorded.
        """
        started = time.perf_counter()
        with self._lock:
            if self._engine.rules:
                self._warm(readings)
                self._unrecorded += self._engine.apply(readings, self._asset)
                newest = max(reading.ts_ms for reading in readings)
                if self._watermark_ms is None or newest > self._watermark_ms:
                    self._watermark_ms = newest
                self._fed_at = self._clock.now()
            self._record()
        # Counted once recorded, so the counter never runs ahead of the database.
        self._metrics.evaluations.inc(len(readings))
        self._metrics.evaluation_seconds.observe(time.perf_counter() - started)

    def _warm(self, readings: Sequence[Reading]) -> None:
        """Rebuild the windows of series seen for the first time since start."""
        self._warm_series(self._engine.cold_series(readings, self._asset))

    def _warm_series(self, cold: dict[tuple[str, str], tuple[int, int]]) -> None:
        if not cold:
            return
        # One call for the whole batch: after a start, every series is cold at once.
        requests = [
            (asset_id, metric, ms_to_datetime(from_ms), ms_to_datetime(to_ms))
            for (asset_id, metric), (from_ms, to_ms) in cold.items()
        ]
        stored = self._telemetry.read_many(requests, _WARMUP_LIMIT)
        for (asset_id, metric, _, _), points in zip(requests, stored, strict=True):
            self._engine.warm(asset_id, metric, points, self._asset(asset_id))
        self._metrics.warmups.inc(len(requests))

    def tick(self) -> None:
        """Advance timers to now and record what they caused."""
        with self._lock:
            self._unrecorded += self._engine.tick(self._timer_now_ms())
            self._record()

    def _timer_now_ms(self) -> int:
        """Return the time timers run to: the wall clock, unless a backlog is being drained.

        While readings keep arriving with event times well behind the wall clock, ingest is
        catching up (after an outage, or a broker's queued backlog): then the newest event
        time seen is the time, or every series not yet caught up would look silent and its
        no-data rule would fire. Once readings stop coming, the wall clock rules again, so a
        fleet that really went quiet is still noticed.
        """
        now = self._clock.now()
        watermark, fed_at = self._watermark_ms, self._fed_at
        if watermark is None or fed_at is None or now - fed_at > _IDLE_AFTER:
            return datetime_to_ms(now)
        if datetime_to_ms(now) - watermark > _BACKLOG_LAG_MS:
            return watermark
        return datetime_to_ms(now)

    def refresh(self) -> None:
        """Pick up rules and asset attributes changed since the last refresh."""
        rules = read_all_rules(self._rules)
        assets = read_all_assets(self._assets)
        with self._lock:
            if rules != list(self._engine.rules.values()):
                self._engine.set_rules(rules)
                log.info("rules engine: %d rules in force", len(rules))
            for asset_id, asset in assets.items():
                if self._known.get(asset_id, asset) != asset:
                    self._engine.forget_asset(asset_id)
            # Unknown ids are looked up again, in case they have been registered since.
            self._known = dict(assets)

    def _record(self) -> None:
        if not self._unrecorded:
            return
        opened = self._alerts.record(self._unrecorded, self._clock.now())
        self._unrecorded = []
        for alert in opened:
            self._announce(alert)

    def _announce(self, alert: Alert) -> None:
        if alert.status is not AlertStatus.FIRING or alert.fire_count != 1:
            return
        self._metrics.alerts.labels(
            severity=alert.severity.value, suppressed=str(alert.suppressed).lower()
        ).inc()
        log.warning(
            "alert %d: rule %s fired on %s %s (value %g%s)%s",
            alert.id,
            alert.rule_id,
            alert.asset_id,
            alert.metric,
            alert.value,
            "" if alert.threshold is None else f", threshold {alert.threshold:g}",
            " [suppressed: work in progress]" if alert.suppressed else "",
            extra={
                "event": "alert_opened",
                "alert_id": alert.id,
                "rule_id": alert.rule_id,
                "asset_id": alert.asset_id,
                "work_order_id": alert.work_order_id,
            },
        )
        if self._on_alert is not None:
            self._on_alert(alert)


class RuleTimer:
    """The rules timer: tick often, refresh rules and assets now and then.

    `step` is one beat; the composition root has APScheduler call it every `tick_every`.
    `run` is the same beat on a plain loop, for callers without a scheduler.
    """

    def __init__(
        self, runner: RuleRunner, *, tick_every: timedelta, refresh_every: timedelta
    ) -> None:
        self._runner = runner
        self._tick_s = tick_every.total_seconds()
        self._refresh_s = refresh_every.total_seconds()
        self._stop = threading.Event()
        self._down = False
        self._next_refresh = time.monotonic() + self._refresh_s

    @property
    def tick_s(self) -> float:
        """Return the seconds between ticks."""
        return self._tick_s

    def stop(self) -> None:
        """Ask the loop to return."""
        self._stop.set()

    def run(self) -> None:
        """Step until stopped."""
        while not self._stop.wait(self._tick_s):
            self.step()

    def step(self) -> None:
        """Tick, refreshing first when due; a failing store is logged once and retried."""
        try:
            if time.monotonic() >= self._next_refresh:
                self._next_refresh = time.monotonic() + self._refresh_s
                self._runner.refresh()
            self._runner.tick()
        except Exception as error:  # noqa: BLE001 - the timer must outlive any store outage
            if not self._down:
                log.error("rules timer failed, retrying every tick: %s", error)
                self._down = True
            return
        if self._down:
            log.warning("rules timer recovered")
            self._down = False
