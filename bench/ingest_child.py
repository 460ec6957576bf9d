"""Run `pmkeeper ingest` as a child process and read its counters, RSS and CPU time.

With `workers` > 1 the child is `pmkeeper ingest --workers N`: a supervisor that starts N
worker processes on one shared subscription, worker i serving /metrics on the child's
base port + i (the supervisor serves none). Counters are then summed over the workers,
and RSS and CPU time over the supervisor and its workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.binaries import free_port, wait_for_port
from tests.support.polling import wait_until
from tests.support.processes import parse_metrics

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


def free_port_range(count: int, attempts: int = 50) -> int:
    """Return a loopback port p such that p .. p + count - 1 are all free right now."""
    for _ in range(attempts):
        base = free_port()
        if base + count > 65536:
            continue
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def child_pids(pid: int) -> list[int]:
    """Return the pids of a process's children (from every thread), [] if it is gone."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        with contextlib.suppress(OSError):
            children += [int(x) for x in (task / "children").read_text().split()]
    return sorted(set(children))


def environ_of(pid: int) -> dict[str, str]:
    """Return a (own) process's environment, {} if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def sum_samples(scrapes: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Add up several workers' samples name by name (counters, histogram buckets, gauges)."""
    total: dict[str, float] = {}
    for samples in scrapes:
        for name, value in samples.items():
            total[name] = total.get(name, 0.0) + value
    return total


class IngestChild:
    """One `python -m pmkeeper ingest` child with its own environment, log and metrics ports.

    `config` goes into a settings file passed with `--config`. With `workers` > 1 the child
    is a supervisor (`ingest --workers N`) and the workers are its children. The child
    leads its own process group, so `kill()` also ends workers a dead supervisor left.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        workdir: Path,
        name: str,
        config: Mapping[str, object] | None = None,
        workers: int = 1,
    ) -> None:
        self.workdir = workdir
        self.workers = workers
        self.metrics_port = free_port_range(workers)
        self.metrics_ports = [self.metrics_port + i for i in range(workers)]
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
        # Worker pids by index, once all workers are up (see worker_pids()).
        self._worker_pids: list[int] = []

    @property
    def pid(self) -> int:
        """Return the running child's pid (the supervisor's, with workers)."""
        if self.process is None:
            raise RuntimeError("ingest child not started")
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Tell whether the child is running."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the child, appending to its log."""
        command = [sys.executable, "-m", "pmkeeper", *self.arguments, "ingest"]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        self._worker_pids = []
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                # Its own process group: kill() reaches orphaned workers too.
                start_new_session=True,
            )

    def worker_metrics(self) -> list[dict[str, float]]:
        """Scrape every worker's /metrics, in worker order."""
        scrapes = []
        for port in self.metrics_ports:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                scrapes.append(parse_metrics(response.read().decode()))
        return scrapes

    def worker_metrics_or_empty(self) -> list[dict[str, float]]:
        """Scrape every worker's /metrics; {} for a worker that does not answer (yet)."""
        scrapes: list[dict[str, float]] = []
        for port in self.metrics_ports:
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    scrapes.append(parse_metrics(response.read().decode()))
            except OSError:
                scrapes.append({})
        return scrapes

    def metrics(self) -> dict[str, float]:
        """Scrape /metrics of every worker and add the samples up."""
        return sum_samples(self.worker_metrics())

    def worker_pids(self) -> list[int]:
        """Return the workers' pids by index ([] with one worker: the child is the worker).

        Found as the supervisor's children, indexed by the metrics port each was given.
        Raises if not all workers are running.
        """
        if self.workers == 1:
            return []
        by_index: dict[int, int] = {}
        for pid in child_pids(self.pid):
            port = environ_of(pid).get("PMK_INGEST__METRICS_PORT")
            if port is not None and port.isdigit():
                by_index[int(port) - self.metrics_port] = pid
        if sorted(by_index) != list(range(self.workers)):
            raise RuntimeError(f"expected {self.workers} workers, found {by_index}")
        return [by_index[i] for i in range(self.workers)]

    def process_pids(self) -> dict[str, int]:
        """Return {name: pid} of every process of this ingest: supervisor and workers."""
        if self.workers == 1:
            return {"pmkeeper": self.pid}
        pids = {"supervisor": self.pid}
        for index, pid in enumerate(self.worker_pids()):
            pids[f"worker{index}"] = pid
        return pids

    def peak_rss_by_process(self) -> dict[str, int]:
        """Return VmHWM (KiB) of the supervisor and of each worker, or of the one process."""
        return {name: peak_rss_kib(pid) for name, pid in self.process_pids().items()}

    def peak_rss_kib(self) -> int:
        """Return the sum of VmHWM over the supervisor and its workers."""
        return sum(self.peak_rss_by_process().values())

    def migrate_first(self, timeout_s: float = 120.0) -> None:
        """Create the relational schema with one short-lived process before the workers start.

        Workers that start together on a fresh SQLite file migrate it at the same time, and
        one of them dies with "database is locked" (the supervisor restarts it). Running a
        `pmkeeper deadletters` first, with the same settings, migrates it once.
        """
        completed = subprocess.run(
            [sys.executable, "-m", "pmkeeper", *self.arguments, "deadletters", "--limit", "1"],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"migrating the ingest database failed:\n{completed.stdout}\n{completed.stderr}"
            )

    def wait_subscribed(self, timeout_s: float = 60.0) -> None:
        """Wait until every worker serves /metrics and reports a live MQTT subscription."""
        for port in self.metrics_ports:
            wait_for_port(port, timeout_s)

        def subscribed() -> bool:
            self.check_alive()
            try:
                return all(
                    samples.get("pmkeeper_mqtt_connected", 0.0) == 1.0
                    for samples in self.worker_metrics()
                )
            except OSError:
                return False

        wait_until(subscribed, timeout_s, what="every pmkeeper ingest worker subscribed")
        self.pin_workers()

    def pin_workers(self) -> None:
        """Remember the current worker pids, so check_alive() notices a restarted worker."""
        self._worker_pids = self.worker_pids()

    def check_alive(self) -> None:
        """Raise with the log's tail if the child has exited, or a known worker was replaced."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"pmkeeper ingest exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        if self._worker_pids and child_pids(self.pid) != sorted(self._worker_pids):
            raise RuntimeError(
                f"an ingest worker died or was restarted (workers were {self._worker_pids}, "
                f"now {child_pids(self.pid)}):\n{self.log_tail()}"
            )

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM the child (it drains and acknowledges what it holds); return its exit code.

        With workers, the supervisor SIGTERMs them and waits for them.
        """
        process = self.process
        if process is None or process.poll() is not None:
            self._kill_group()
            return process.returncode if process is not None else 0
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            # Nothing of the group should be left; make sure of it.
            self._kill_group()

    def kill(self) -> None:
        """SIGKILL the child and every process left in its group (its workers)."""
        if self.process is None:
            return
        self._kill_group()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def _kill_group(self) -> None:
        # The group id is the child's pid (start_new_session); only the child and its
        # workers are in it.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

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
