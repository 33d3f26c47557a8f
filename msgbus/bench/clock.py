"""Timing of benchmark runs: wall and process CPU time of a stretch, and open-loop pacing.

Shared by the benchmark drivers and the raw clients of :mod:`msgbus.bench.raw` (standard
library only).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

__all__ = ["Clock", "Result", "cpu_seconds", "paced"]

Result = tuple[float, float]
"""One throughput run: messages per second, process CPU microseconds per message."""


def cpu_seconds() -> float:
    """CPU time of the whole process (every thread) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and process CPU time of one measured stretch."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = cpu_seconds()

    def result(self, messages: int) -> Result:
        """Messages per second and CPU microseconds per message since construction."""
        wall = time.perf_counter() - self.wall
        return messages / wall, (cpu_seconds() - self.cpu) / messages * 1e6


def paced(rate: float, count: int, send: Callable[[int], None]) -> None:
    """Call ``send(intended_ns)`` ``count`` times at ``rate`` per second (open loop)."""
    interval = 1e9 / rate
    start = time.monotonic_ns()
    for i in range(count):
        intended = start + int(i * interval)
        delay = intended - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        send(intended)
