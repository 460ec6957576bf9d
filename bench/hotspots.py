"""Summarize a py-spy raw profile (`record --format raw --threads`) into hot spots."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# "name (path/to/file.py:123)" -> "name (file.py)": aggregate by function, not by line.
_FRAME = re.compile(r"^(?P<name>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
_TOP = 25


@dataclass
class HotspotReport:
    """Where one profiled drain spent its samples, per thread and per function."""

    label: str
    samples: int
    threads: dict[str, int] = field(default_factory=dict)
    # (function, share of all samples) for time spent in the function itself...
    self_time: list[tuple[str, float]] = field(default_factory=list)
    # ...and for time spent in it or anything it called.
    inclusive: list[tuple[str, float]] = field(default_factory=list)

    def render(self) -> str:
        """Return the report as text for the terminal."""
        lines = [f"hot spots, {self.label}: {self.samples} samples holding the GIL"]
        lines += [f"  thread {name}: {n / self.samples:.0%}" for name, n in self.threads.items()]
        lines.append("  self time:")
        lines += [f"    {share:6.1%}  {name}" for name, share in self.self_time]
        lines.append("  inclusive time:")
        lines += [f"    {share:6.1%}  {name}" for name, share in self.inclusive]
        return "\n".join(lines)


def _function(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match.group("path")
    short = "/".join(path.split("/")[-2:])
    return f"{match.group('name')} ({short})"


def summarize_raw_profile(path: Path, label: str, top: int = _TOP) -> HotspotReport:
    """Aggregate py-spy's collapsed stacks by function: self and inclusive shares."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # With --threads the first frame is "thread (tid): name".
        thread = frames[0].split(": ", 1)[-1]
        functions = [_function(frame) for frame in frames[1:]]
        if not functions:
            continue
        total += count
        threads[thread] += count
        self_time[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count
    if not total:
        return HotspotReport(label, 0)
    return HotspotReport(
        label=label,
        samples=total,
        threads=dict(threads.most_common()),
        self_time=[(name, n / total) for name, n in self_time.most_common(top)],
        inclusive=[(name, n / total) for name, n in inclusive.most_common(top)],
    )
