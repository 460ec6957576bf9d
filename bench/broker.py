"""A private mosquitto for benchmarks: the test broker's config plus what a backlog needs."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from tests.support.mosquitto import MOSQUITTO_CONF_TEMPLATE, MosquittoBroker

_NODELAY_ON = "set_tcp_nodelay true"

# Appended to the test broker's template. mosquitto only accepts comments on their own line.
_BACKLOG_CONF = """\
# Benchmark only: queue QoS 0 messages for an offline persistent session too (mosquitto
# drops them by default), so a QoS 0 backlog can be loaded and then drained.
queue_qos0_messages true
"""


def broker_config(
    template_values: dict[str, object], *, tcp_nodelay: bool, autosave_interval_s: int | None
) -> str:
    """Return mosquitto.conf: the test template, Nagle per `tcp_nodelay`, QoS 0 queueing on."""
    text = MOSQUITTO_CONF_TEMPLATE.format(**template_values)
    if _NODELAY_ON not in text:
        raise RuntimeError(f"the broker template no longer says {_NODELAY_ON!r}; update bench/")
    if not tcp_nodelay:
        text = text.replace(_NODELAY_ON, "set_tcp_nodelay false")
    if autosave_interval_s is not None:
        lines = [
            f"autosave_interval {autosave_interval_s}"
            if line.startswith("autosave_interval ")
            else line
            for line in text.splitlines()
        ]
        text = "\n".join(lines) + "\n"
    return text + _BACKLOG_CONF


class BenchBroker(MosquittoBroker):
    """MosquittoBroker with QoS 0 queueing for offline sessions and a Nagle switch."""

    def __init__(
        self,
        root: Path,
        *,
        binary: str,
        tcp_nodelay: bool = True,
        autosave_interval_s: int | None = None,
    ) -> None:
        super().__init__(root, binary=binary)
        self.tcp_nodelay = tcp_nodelay
        self.autosave_interval_s = autosave_interval_s

    @property
    def pid(self) -> int:
        """Return the mosquitto process id."""
        if self._process is None:
            raise RuntimeError("broker not started")
        return self._process.pid

    def config_text(self) -> str:
        """Return the test broker's config with QoS 0 queueing and the Nagle switch."""
        return broker_config(
            {
                "port": self.port,
                "user": pwd.getpwuid(os.getuid()).pw_name,
                "data_dir": self.data_dir,
                "log_path": self.log_path,
            },
            tcp_nodelay=self.tcp_nodelay,
            autosave_interval_s=self.autosave_interval_s,
        )
