"""Run N `pmkeeper ingest` worker processes on one shared subscription, and keep them up.

CPython runs one thread at a time, and paho's network thread alone fills a core, so one
ingest process uses one core however many a machine has. Several processes on an MQTT
shared subscription (`$share/<group>/...`) use them all; the broker spreads messages
across the group's sessions.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings
from storage.db import create_engine_for, migrate

log = logging.getLogger(__name__)

DEFAULT_SHARE_GROUP = "pmkeeper"


@dataclass
class _Worker:
    index: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0


def worker_environment(settings: Settings, index: int) -> dict[str, str]:
    """Return the PMK_ overrides that make worker `index` a distinct member of the group."""
    metrics_port = settings.ingest.metrics_port
    return {
        "PMK_INGEST__WORKERS": "1",
        # A stable id per worker, so a restarted worker resumes its own session.
        "PMK_MQTT__CLIENT_ID": f"{settings.mqtt.client_id}-{index}",
        "PMK_MQTT__SHARED_GROUP": settings.mqtt.shared_group or DEFAULT_SHARE_GROUP,
        "PMK_INGEST__METRICS_PORT": str(metrics_port + index if metrics_port else 0),
        # Rules run in one process of their own (see rules_environment).
        "PMK_RULES__ENABLED": "false",
    }


def rules_environment(settings: Settings) -> dict[str, str]:
    """Return the PMK_ overrides of the process that evaluates rules for all the workers."""
    metrics_port = settings.ingest.metrics_port
    index = settings.ingest.workers
    return {
        "PMK_INGEST__WORKERS": "1",
        "PMK_MQTT__CLIENT_ID": f"{settings.mqtt.client_id}-rules",
        # Every message, not a share of them: a series' readings must all reach its state.
        "PMK_MQTT__SHARED_GROUP": "",
        "PMK_INGEST__METRICS_PORT": str(metrics_port + index if metrics_port else 0),
        "PMK_RULES__EVALUATE_ONLY": "true",
    }


class IngestSupervisor:
    """Start the workers, restart one that dies, and stop them all on request."""

    def __init__(self, settings: Settings, config_file: Path | None) -> None:
        self._settings = settings
        self._command = [sys.executable, "-m", "pmkeeper"]
        if config_file is not None:
            self._command += ["--config", str(config_file)]
        self._command.append("ingest")
        self._workers = [
            _Worker(i, {**os.environ, **worker_environment(settings, i)})
            for i in range(settings.ingest.workers)
        ]
        if settings.rules.enabled:
            self._workers.append(
                _Worker(settings.ingest.workers, {**os.environ, **rules_environment(settings)})
            )

    def run(self, stop: threading.Event) -> None:
        """Migrate once, supervise until `stop` is set, then stop every worker gracefully."""
        # Workers migrate on start too; doing it here first keeps N of them from racing to
        # create a fresh SQLite schema, which SQLite answers with "database is locked".
        engine = create_engine_for(self._settings.database_url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
        for worker in self._workers:
            self._spawn(worker)
        try:
            while not stop.wait(0.5):
                for worker in self._workers:
                    self._revive_if_dead(worker)
        finally:
            self._stop_all()

    def _spawn(self, worker: _Worker) -> None:
        # Workers inherit stdout/stderr, so their JSON logs reach the same place.
        worker.process = subprocess.Popen(self._command, env=worker.env)  # noqa: S603
        log.info(
            "started ingest worker %d (pid %d) as %s",
            worker.index,
            worker.process.pid,
            worker.env["PMK_MQTT__CLIENT_ID"],
            extra={"worker": worker.index, "worker_pid": worker.process.pid},
        )

    def _revive_if_dead(self, worker: _Worker) -> None:
        process = worker.process
        if process is None or process.poll() is None:
            return
        worker.restarts += 1
        delay = min(2 ** min(worker.restarts, 5) * 0.25, 10.0)
        log.error(
            "ingest worker %d exited with %s; restarting in %.1fs (restart %d)",
            worker.index,
            process.returncode,
            delay,
            worker.restarts,
        )
        time.sleep(delay)
        self._spawn(worker)

    def _stop_all(self, timeout_s: float = 30.0) -> None:
        running = [w.process for w in self._workers if w.process and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("ingest worker pid %d did not stop; killing it", process.pid)
                process.kill()
                process.wait(10)
