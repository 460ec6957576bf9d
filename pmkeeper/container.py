"""The composition root: build stores, repositories and roles from `Settings`."""

from __future__ import annotations

import builtins
import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import uvicorn
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import Engine, text

from api.app import ApiServices, create_app
from core.clock import Clock, SystemClock
from core.deadletters import DeadLetter
from core.ports import DeadLetterRepository, SeriesRange, TelemetryStore
from core.settings import Settings
from core.telemetry import Reading, StampedValue, TelemetryBucket, TelemetryPoint
from ingest.evaluation import RuleMetrics, RuleRunner, RuleTimer
from ingest.metrics import IngestMetrics
from ingest.mqtt import MqttSubscriber
from ingest.payloads import PayloadDecoder
from ingest.worker import IngestWorker
from pmkeeper.embedded_broker import EmbeddedBroker
from pmkeeper.reservation_watch import ReservationWatch
from pmkeeper.scheduling import (
    GENERATE_JOB,
    JOB_TABLE,
    RESERVATION_JOB,
    SLA_JOB,
    Job,
    SchedulerRole,
)
from pmkeeper.sla_watch import SlaWatch
from rules.alerting import AlertPolicy
from scheduler.generation import PlanGenerator
from storage.alerting import SqlAlertStore, SqlWorkOrderRepository
from storage.db import create_engine_for, migrate
from storage.history import SqlAssetHistory
from storage.inventory import SqlInventoryRepository
from storage.leader import LeaderLock
from storage.plans import SqlBookingStore, SqlPlanRepository, SqlScheduleStore
from storage.repositories import (
    SqlAssetRepository,
    SqlDeadLetterRepository,
    SqlRuleRepository,
    SqlTokenRepository,
)
from storage.technicians import SqlTechnicianRepository
from storage.telemetry_influx import InfluxTelemetryStore
from storage.telemetry_sqlite import SqliteTelemetryStore

log = logging.getLogger(__name__)

EMBEDDED_BROKER_FILE = "embedded-broker.url"
RULES_TIMER_JOB = "rules-timer"


def build_telemetry_store(settings: Settings) -> TelemetryStore:
    """Return InfluxDB when configured, else the embedded SQLite store."""
    if settings.influx.url:
        log.info("telemetry store: InfluxDB at %s", settings.influx.url)
        return InfluxTelemetryStore(settings.influx)
    log.info("telemetry store: embedded SQLite at %s", settings.telemetry_sqlite_path)
    return SqliteTelemetryStore(settings.telemetry_sqlite_path)


def subscription_topics(settings: Settings) -> list[str]:
    """Return the topic filters ingest subscribes to."""
    topics = [settings.mqtt.topic]
    if settings.mqtt.metric_topics:
        topics.append(f"{settings.mqtt.topic}/+")
    return topics


@dataclass
class Container:
    """What every role shares: settings, clock, stores, repositories and metrics."""

    settings: Settings
    clock: Clock
    engine: Engine
    telemetry: TelemetryStore
    assets: SqlAssetRepository
    deadletters: SqlDeadLetterRepository
    tokens: SqlTokenRepository
    rules: SqlRuleRepository
    alerts: SqlAlertStore
    work_orders: SqlWorkOrderRepository
    inventory: SqlInventoryRepository
    technicians: SqlTechnicianRepository
    plans: SqlPlanRepository
    bookings: SqlBookingStore
    schedule: SqlScheduleStore
    alert_policy: AlertPolicy
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Container:
        """Open the databases (migrating the relational one) and build the repositories."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine_for(settings.database_url)
        migrate(engine)
        clock = clock or SystemClock()
        policy = AlertPolicy(
            flap_window=settings.rules.flap_window, reopen_window=settings.rules.reopen_window
        )
        inventory = SqlInventoryRepository(engine, clock)
        technicians = SqlTechnicianRepository(engine, clock)
        plans = SqlPlanRepository(engine, clock)
        bookings = SqlBookingStore(engine, plans, technicians, clock)
        return cls(
            settings=settings,
            clock=clock,
            engine=engine,
            telemetry=build_telemetry_store(settings),
            assets=SqlAssetRepository(engine, clock),
            deadletters=SqlDeadLetterRepository(engine),
            tokens=SqlTokenRepository(engine),
            rules=SqlRuleRepository(engine, clock),
            alerts=SqlAlertStore(engine, clock, policy),
            # A cancel or close settles the order's part reservations, and a cancel its
            # booking, in the move's own transaction.
            work_orders=SqlWorkOrderRepository(
                engine, on_transition=[inventory.settle_reservations, bookings.settle_booking]
            ),
            inventory=inventory,
            technicians=technicians,
            plans=plans,
            bookings=bookings,
            schedule=SqlScheduleStore(engine, plans, technicians, inventory),
            alert_policy=policy,
        )

    def close(self) -> None:
        """Release the stores' connections."""
        self.telemetry.close()
        self.engine.dispose()

    def database_ready(self) -> bool:
        """Tell whether the relational store answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - readiness reports, it does not raise
            return False
        return True


class _StoredElsewhere:
    """The telemetry store of the rules-only process: reads go through, writes are dropped.

    The ingest workers store every reading; this process only needs them evaluated, after
    which it acknowledges its own copy of the message.
    """

    def __init__(self, store: TelemetryStore) -> None:
        self._store = store

    def write(self, readings: Sequence[Reading]) -> None:
        """Drop the readings: the workers store them."""

    def read(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, limit: int
    ) -> list[TelemetryPoint]:
        """Read from the real store."""
        return self._store.read(asset_id, metric, start_at, end_at, limit)

    def read_many(self, requests: Sequence[SeriesRange], limit: int) -> list[list[StampedValue]]:
        """Read from the real store."""
        return self._store.read_many(requests, limit)

    def downsample(
        self, asset_id: str, metric: str, start_at: datetime, end_at: datetime, every: timedelta
    ) -> list[TelemetryBucket]:
        """Read from the real store."""
        return self._store.downsample(asset_id, metric, start_at, end_at, every)

    def latest(self, asset_id: str) -> dict[str, TelemetryPoint]:
        """Read from the real store."""
        return self._store.latest(asset_id)

    def ping(self) -> bool:
        """Ping the real store."""
        return self._store.ping()

    def close(self) -> None:
        """Leave the real store to its owner."""


class _DeadLetteredElsewhere:
    """The dead-letter store of the rules-only process: the workers keep dead letters."""

    def __init__(self, letters: DeadLetterRepository) -> None:
        self._letters = letters

    def add_many(self, letters: Sequence[DeadLetter]) -> None:
        """Drop the dead letters: the workers record them."""

    def list(
        self, *, asset_id: str | None = None, before_id: int | None = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """List from the real repository."""
        return self._letters.list(asset_id=asset_id, before_id=before_id, limit=limit)

    def count(self) -> int:
        """Count in the real repository."""
        return self._letters.count()


def rules_timer_scheduler(timer: RuleTimer) -> BackgroundScheduler:
    """Return APScheduler set to step the rules timer (`for` expiries, no-data checks).

    In the ingest process, with a memory job store: the timer works on the rule states this
    process holds, so it cannot run anywhere else. A slow step is not piled up behind
    (one instance, coalesced).
    """
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
        timezone=UTC,
    )
    scheduler.add_job(
        timer.step,
        "interval",
        seconds=timer.tick_s,
        id=RULES_TIMER_JOB,
        name=RULES_TIMER_JOB,
        replace_existing=True,
    )
    return scheduler


class IngestRole:
    """MQTT subscriber plus writer thread: the `pmkeeper ingest` role."""

    def __init__(self, container: Container, broker_url: str) -> None:
        settings = container.settings
        mqtt_settings = settings.mqtt.model_copy(update={"url": broker_url})
        self.metrics = IngestMetrics(container.registry)
        decoder = PayloadDecoder(settings.ingest, settings.mqtt.topic)
        self.rules: RuleRunner | None = None
        self._timer: RuleTimer | None = None
        if settings.rules.enabled:
            self.rules = RuleRunner(
                rules=container.rules,
                assets=container.assets,
                telemetry=container.telemetry,
                alerts=container.alerts,
                clock=container.clock,
                metrics=RuleMetrics(container.registry),
            )
            self._timer = RuleTimer(
                self.rules,
                tick_every=timedelta(seconds=settings.rules.tick_interval_s),
                refresh_every=timedelta(seconds=settings.rules.refresh_s),
            )
        evaluate_only = self.rules is not None and settings.rules.evaluate_only
        self.worker = IngestWorker(
            decoder=decoder,
            store=_StoredElsewhere(container.telemetry) if evaluate_only else container.telemetry,
            deadletters=(
                _DeadLetteredElsewhere(container.deadletters)
                if evaluate_only
                else container.deadletters
            ),
            assets=container.assets,
            settings=settings.ingest,
            metrics=self.metrics,
            clock=container.clock,
            acknowledge=lambda messages: None,
            after_store=None if self.rules is None else self.rules.process,
        )
        self.subscriber = MqttSubscriber(
            mqtt_settings, subscription_topics(settings), self.worker.offer, self.metrics
        )
        self.worker.acknowledge = self.subscriber.acknowledge
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._timer_scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        """Load the rules engine, start the writer and timer threads, then connect."""
        if self.rules is not None and self._timer is not None:
            self.rules.start()
            self._timer_scheduler = rules_timer_scheduler(self._timer)
            self._timer_scheduler.start()
        self._writer = threading.Thread(target=self.worker.run, name="ingest-writer", daemon=True)
        self._writer.start()
        self.subscriber.start(self._stop)

    def mqtt_ready(self) -> bool:
        """Tell whether the subscription is live."""
        return self.subscriber.wait_connected(0)

    def stop(self) -> None:
        """Flush the writer, then stop the MQTT loop and disconnect."""
        self._stop.set()
        # No unsubscribe: the persistent session must keep its subscription so the broker
        # queues what devices publish until the next start. What arrives from now on is
        # refused by offer() and, unacknowledged, redelivered on the next start.
        self.worker.stop()
        if self._writer is not None:
            self._writer.join(timeout=30)
        if self._timer_scheduler is not None:
            self._timer_scheduler.shutdown(wait=True)
        self.subscriber.stop()


class ApiRole:
    """uvicorn serving the FastAPI app on its own thread."""

    def __init__(self, container: Container, readiness: dict[str, Callable[[], bool]]) -> None:
        settings = container.settings
        services = ApiServices(
            assets=container.assets,
            deadletters=container.deadletters,
            telemetry=container.telemetry,
            tokens=container.tokens,
            rules=container.rules,
            alerts=container.alerts,
            work_orders=container.work_orders,
            history=SqlAssetHistory(container.engine),
            inventory=container.inventory,
            technicians=container.technicians,
            plans=container.plans,
            bookings=container.bookings,
            alert_policy=container.alert_policy,
            metrics_registry=container.registry,
            readiness_checks=readiness,
            clock=container.clock,
            token_cache_s=settings.api.token_cache_s,
        )
        config = uvicorn.Config(
            create_app(services),
            host=settings.api.host,
            port=settings.api.port,
            log_config=None,
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve HTTP on a background thread."""
        self._thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask uvicorn to finish in-flight requests and exit."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)


def scheduler_jobs(container: Container) -> list[Job]:
    """Return the periodic jobs the scheduler role runs: generation and the sweeps."""
    settings = container.settings
    clock = container.clock
    generator = PlanGenerator(container.schedule, read_meters=container.telemetry.read_many)
    jobs = [
        Job(GENERATE_JOB, lambda: generator.run(clock.now()), settings.scheduler.generate_every_s)
    ]
    if settings.sla.enabled:
        sla = SlaWatch(
            container.work_orders.sweep_breaches,
            clock,
            timedelta(seconds=settings.sla.sweep_interval_s),
        )
        jobs.append(Job(SLA_JOB, sla.sweep_once, settings.sla.sweep_interval_s))
    if settings.inventory.expiry_enabled:
        reservations = ReservationWatch(
            container.inventory.expire_due,
            container.inventory.release_for_finished_orders,
            clock,
            timedelta(seconds=settings.inventory.expiry_sweep_s),
        )
        jobs.append(
            Job(RESERVATION_JOB, reservations.sweep_once, settings.inventory.expiry_sweep_s)
        )
    return jobs


def build_scheduler_role(container: Container) -> SchedulerRole:
    """Return the scheduler role: its jobs, its leader lock and its job store."""
    settings = container.settings
    return SchedulerRole(
        jobs=scheduler_jobs(container),
        leader=LeaderLock(container.engine, settings.data_dir / "scheduler.lock"),
        job_store=SQLAlchemyJobStore(engine=container.engine, tablename=JOB_TABLE),
        elect_every_s=settings.scheduler.elect_every_s,
        misfire_grace_s=settings.scheduler.misfire_grace_s,
    )


def run_roles(
    settings: Settings,
    *,
    api: bool,
    ingest: bool,
    stop: threading.Event,
    embedded_broker: bool,
    scheduler: bool = False,
) -> None:
    """Start the chosen roles, block until `stop` is set, then tear down in reverse order."""
    with contextlib.ExitStack() as teardown:
        container = Container.build(settings)
        teardown.callback(container.close)
        readiness: dict[str, Callable[[], bool]] = {
            "database": container.database_ready,
            "telemetry_store": container.telemetry.ping,
        }
        if ingest:
            broker_url = settings.mqtt.url
            if broker_url is None:
                if not embedded_broker:
                    raise SystemExit("no broker configured: set PMK_MQTT__URL")
                broker = EmbeddedBroker()
                broker.start()
                teardown.callback(broker.stop)
                broker_url = broker.url
                url_file = settings.data_dir / EMBEDDED_BROKER_FILE
                url_file.write_text(broker_url + "\n")
                teardown.callback(url_file.unlink, missing_ok=True)
            role = IngestRole(container, broker_url)
            role.start()
            teardown.callback(role.stop)
            readiness["mqtt"] = role.mqtt_ready
        if scheduler and settings.scheduler.enabled:
            scheduler_role = build_scheduler_role(container)
            scheduler_role.start()
            teardown.callback(scheduler_role.stop)
        if api:
            api_role = ApiRole(container, readiness)
            api_role.start()
            teardown.callback(api_role.stop)
            log.info("API on http://%s:%s", settings.api.host, settings.api.port)
        elif ingest and settings.ingest.metrics_port:
            server, _thread = start_http_server(
                settings.ingest.metrics_port, addr=settings.api.host, registry=container.registry
            )
            teardown.callback(server.shutdown)
        # Everything built so far lives as long as the process: keep the collector from
        # walking it on every full collection (100-170 ms pauses, measured in bench/).
        gc.freeze()
        log.info("pmkeeper running (api=%s, ingest=%s, scheduler=%s)", api, ingest, scheduler)
        stop.wait()
        log.info("pmkeeper stopping")
