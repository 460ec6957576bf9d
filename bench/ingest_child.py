"""Run `pmkeeper ingest` as a child process and read its counters, RSS and CPU time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.binaries import free_port, wait_for_port
from tests.support.polling import wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def clean_environment() -> dict[str, str]:
    """Return this process's environment without PMK_ variables, so none leak into a child."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("PMK_")}


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may hold spaces; fields after its closing parenthesis are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass(frozen=True)
class MachineCpu:
    """CPU seconds the whole machine spent busy, and lost to the hypervisor (steal)."""

    busy_s: float
    steal_s: float

    def __sub__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy_s - other.busy_s, self.steal_s - other.steal_s)


def machine_cpu() -> MachineCpu:
    """Read the machine-wide CPU counters from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq
    return MachineCpu(busy / _CLOCK_TICKS, steal / _CLOCK_TICKS)


def peak_rss_kib(pid: int) -> int:
    """Return VmHWM (peak resident set size, KiB) of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def parse_metrics(text: str) -> dict[str, float]:
    """Parse Prometheus text into {sample name with sorted labels: value}."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class IngestChild:
    """One `python -m pmkeeper ingest` child with its own environment, log and metrics port.

    `config` goes into a settings file passed with `--config`, for settings the environment
    cannot carry (PMK_ variables override it).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        workdir: Path,
        name: str,
        config: Mapping[str, object] | None = None,
    ) -> None:
        self.workdir = workdir
        self.metrics_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.arguments: list[str] = []
        if config:
            # JSON is YAML, and the settings loader picks its parser by the suffix.
            config_path = workdir / f"{name}.yaml"
            config_path.write_text(json.dumps(config))
            self.arguments = ["--config", str(config_path)]
        self.env = {
            **clean_environment(),
            "PMK_DATA_DIR": str(workdir / "data"),
            "PMK_LOG_FORMAT": "json",
            "PMK_INGEST__METRICS_PORT": str(self.metrics_port),
            **env,
        }
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Return the running child's pid."""
        if self.process is None:
            raise RuntimeError("ingest child not started")
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Tell whether the child is running."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the child, appending to its log."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pmkeeper", *self.arguments, "ingest"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )

    def metrics(self) -> dict[str, float]:
        """Scrape /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return parse_metrics(response.read().decode())

    def wait_subscribed(self, timeout_s: float = 60.0) -> None:
        """Wait until the child serves /metrics and reports a live MQTT subscription."""
        wait_for_port(self.metrics_port, timeout_s)

        def subscribed() -> bool:
            self.check_alive()
            try:
                return self.metrics().get("pmkeeper_mqtt_connected", 0.0) == 1.0
            except OSError:
                return False

        wait_until(subscribed, timeout_s, what="pmkeeper ingest subscribed")

    def check_alive(self) -> None:
        """Raise with the log's tail if the child has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"pmkeeper ingest exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM the child (it drains and acknowledges what it holds); return its exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process is not None else 0
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise

    def kill(self) -> None:
        """SIGKILL the child if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 20) -> str:
        """Return the end of the child's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def sleep_until(deadline: float) -> None:
    """Sleep until perf_counter() reaches `deadline` (return at once if it has)."""
    delay = deadline - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
