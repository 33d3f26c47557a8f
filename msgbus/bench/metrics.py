"""Measurement helpers: latency histograms (HdrHistogram) and per-process CPU and memory.

Latencies are recorded in microseconds, from 1 µs to one hour, with 3 significant digits.
Histograms travel between processes and into result files in HdrHistogram's compressed
base64 form (:func:`encode` / :func:`decode`), readable by any HdrHistogram tool.
CPU and memory come from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``, the whole
machine's busy time from ``/proc/stat`` (Linux).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hdrh.histogram import HdrHistogram

__all__ = [
    "MAX_US",
    "PERCENTILES",
    "ProcessSample",
    "box_busy_seconds",
    "decode",
    "encode",
    "merge",
    "new_histogram",
    "record_us",
    "sample_processes",
    "summarize",
]

MAX_US = 3_600_000_000
"""Largest recordable latency (one hour, in µs); larger values are clamped to it."""

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
"""Percentiles every summary reports."""

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def new_histogram() -> HdrHistogram:
    """An empty latency histogram (µs, 1 µs .. 1 h, 3 significant digits). Not thread-safe."""
    return HdrHistogram(1, MAX_US, 3)


def record_us(histogram: HdrHistogram, nanoseconds: int) -> None:
    """Record a latency given in nanoseconds (negative → 1 µs; above :data:`MAX_US` clamped)."""
    histogram.record_value(min(MAX_US, max(1, nanoseconds // 1000)))


def encode(histogram: HdrHistogram) -> str:
    """HdrHistogram's compressed base64 form, as text."""
    return histogram.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    """Inverse of :func:`encode` (raises ValueError on garbage)."""
    try:
        return HdrHistogram.decode(text.encode("ascii"))
    except Exception as exc:  # the decoder raises assorted types
        raise ValueError(f"not an encoded histogram: {exc}") from exc


def merge(encoded: Iterable[str]) -> HdrHistogram:
    """One histogram holding every value of the encoded ``histograms``."""
    total = new_histogram()
    for text in encoded:
        if text:
            total.add(decode(text))
    return total


def summarize(histogram: HdrHistogram) -> dict[str, float]:
    """``{"count", "mean", "p50", "p90", "p99", "p99.9", "max"}``, latencies in ms."""
    count = histogram.get_total_count()
    out: dict[str, float] = {"count": float(count)}
    if not count:
        return {**out, "mean": 0.0, **{_pname(p): 0.0 for p in PERCENTILES}, "max": 0.0}
    out["mean"] = histogram.get_mean_value() / 1000.0
    for p in PERCENTILES:
        out[_pname(p)] = histogram.get_value_at_percentile(p) / 1000.0
    out["max"] = histogram.get_max_value() / 1000.0
    return out


def _pname(p: float) -> str:
    return f"p{p:g}"


@dataclass(frozen=True)
class ProcessSample:
    """CPU seconds (user + system, all threads) and resident memory of a set of processes;
    ``per_pid`` the CPU seconds of each (see :meth:`cpu_since`)."""

    cpu_seconds: float
    rss_bytes: int
    processes: int
    per_pid: dict[int, float] = field(default_factory=dict)

    def cpu_since(self, earlier: ProcessSample) -> float:
        """CPU seconds used between ``earlier`` and this sample by the processes alive now
        (a process that started in between counts from zero; one that died in between, e.g.
        a killed broker node, is left out instead of making the figure negative)."""
        return sum(cpu - earlier.per_pid.get(pid, 0.0) for pid, cpu in self.per_pid.items())


def _one(pid: int) -> tuple[float, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
            break
    return cpu, rss


def sample_processes(pids: Iterable[int]) -> ProcessSample:
    """Sum CPU seconds and RSS over ``pids`` (processes that are gone count as zero)."""
    cpu = 0.0
    rss = 0
    per_pid: dict[int, float] = {}
    for pid in pids:
        one = _one(pid)
        if one is not None:
            cpu += one[0]
            rss += one[1]
            per_pid[pid] = one[0]
    return ProcessSample(cpu, rss, len(per_pid), per_pid)


def box_busy_seconds(stat_text: str | None = None) -> float | None:
    """CPU seconds the whole machine has been busy since boot, summed over its CPUs: the
    ``cpu`` line of ``/proc/stat`` without ``idle`` and ``iowait`` (``guest`` time is already
    inside ``user``). The difference of two readings over a window, divided by the window,
    is the number of busy cores. ``stat_text`` stands in for the file (tests); None when it
    cannot be read."""
    if stat_text is None:
        try:
            stat_text = Path("/proc/stat").read_text()
        except OSError:
            return None
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(v) for v in fields[1:9]] + [0] * (8 - len(fields[1:9]))
            user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
            return (user + nice + system + irq + softirq + steal) / _CLK_TCK
    return None
