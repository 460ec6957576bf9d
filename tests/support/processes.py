"""Run the real `pmkeeper` command as a child process and read its metrics and logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.binaries import free_port, wait_for_port
from tests.support.polling import wait_until


def parse_metrics(text: str) -> dict[str, float]:
    """Parse Prometheus text into {sample name with sorted labels: value}."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class PmkeeperProcess:
    """One `pmkeeper <command>` child with its own environment, log file and metrics port."""

    def __init__(self, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.command = command
        self.workdir = workdir
        # `serve` and `api` expose /metrics on the API port; `ingest` on a port of its own.
        api_port = env.get("PMK_API__PORT")
        self.metrics_port = int(api_port) if api_port and command[0] != "ingest" else free_port()
        self.env = {
            **os.environ,
            "PMK_DATA_DIR": str(workdir / "data"),
            "PMK_LOG_FORMAT": "json",
            "PMK_INGEST__METRICS_PORT": str(self.metrics_port),
            **env,
        }
        self.log_path = workdir / f"pmkeeper-{command[0]}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start (or restart) the process, appending to the same log."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pmkeeper", *self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    @property
    def pid(self) -> int:
        """Return the running child's pid."""
        assert self.process is not None
        return self.process.pid

    def wait_metrics_up(self, timeout_s: float = 30.0) -> None:
        """Wait until the child serves /metrics (it is up and wired)."""
        wait_for_port(self.metrics_port, timeout_s)

    def metrics(self) -> dict[str, float]:
        """Scrape /metrics into {sample name (with labels): value}."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return parse_metrics(response.read().decode())

    def metric(self, name: str) -> float:
        """Return one sample's value, 0 when the child does not answer or has none yet."""
        try:
            return self.metrics().get(name, 0.0)
        except OSError:
            return 0.0

    def wait_subscribed(self, timeout_s: float = 30.0) -> None:
        """Wait until the child is connected to the broker and subscribed."""
        self.wait_metrics_up(timeout_s)
        wait_until(
            lambda: self.metric("pmkeeper_mqtt_connected") == 1,
            timeout_s,
            what="ingest subscribed",
        )

    def kill(self) -> None:
        """SIGKILL the child: no flush, no goodbye."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM the child and return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def log_events(self) -> list[dict[str, Any]]:
        """Return the child's JSON log lines (other lines are skipped)."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events
