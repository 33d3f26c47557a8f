"""Warm-up curves: how a run's delivered rate develops second by second, and when it settles.

The runner samples (seconds from the window's start, sent, received) every 100 ms. A JVM
broker (Apache Kafka, ActiveMQ) compiles its hot paths while it works, so its first seconds
under load are slower: :func:`rate_curve` turns the samples into delivered msg/s per
second, and :func:`settled_at` finds the second from which the curve stays within a
tolerance of its plateau, which is how long a warm-up must be for figures to stop improving.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["SETTLE_TOLERANCE", "SMOOTH", "main", "rate_curve", "settled_at", "table"]

SETTLE_TOLERANCE = 0.10
"""A curve has settled once every later second is at least 90 % of its plateau."""

SMOOTH = 5
"""Points of the rolling median :func:`settled_at` smooths a curve with."""


def rate_curve(
    samples: Sequence[tuple[float, int, int]],
    start: float,
    end: float,
    bucket: float = 1.0,
) -> list[list[float]]:
    """Delivered msg/s per ``bucket`` seconds between ``start`` and ``end`` (seconds on the
    samples' clock), as ``[seconds since start, msg/s]`` pairs (the time is a bucket's end).
    ``samples`` are ``(time, sent, received)`` tuples in time order; a bucket without a
    sample at each end is left out."""
    points: list[list[float]] = []
    if bucket <= 0 or end <= start:
        return points
    edge = start
    previous: tuple[float, int, int] | None = None
    it = iter(samples)
    for sample in it:
        if sample[0] >= start:
            previous = sample
            break
    if previous is None:
        return points
    edge = previous[0]
    for sample in it:
        if sample[0] > end + 1e-9:
            break
        if sample[0] - edge >= bucket - 1e-9:
            seconds = sample[0] - previous[0]
            rate = (sample[2] - previous[2]) / seconds if seconds > 0 else 0.0
            points.append([round(sample[0] - start, 3), round(rate, 1)])
            previous = sample
            edge = sample[0]
    return points


def settled_at(
    curve: Sequence[Sequence[float]], tolerance: float = SETTLE_TOLERANCE, smooth: int = SMOOTH
) -> float | None:
    """The time of the first point from which the curve, smoothed by a rolling median of
    ``smooth`` points (one slow second of a shared machine is not a trend), stays at least
    ``1 - tolerance`` of its plateau (the median of the smoothed curve's last third); None
    for fewer than 3 points or a plateau of zero."""
    if len(curve) < 3:
        return None
    rates = [p[1] for p in curve]
    half = max(0, smooth // 2)
    smoothed = [
        statistics.median(rates[max(0, i - half) : i + half + 1]) for i in range(len(rates))
    ]
    plateau = statistics.median(smoothed[-max(1, len(smoothed) // 3) :])
    if plateau <= 0:
        return None
    floor = (1 - tolerance) * plateau
    settled = None
    for point, rate in zip(reversed(curve), reversed(smoothed), strict=True):
        if rate < floor:
            break
        settled = point[0]
    return settled


def table(manifest: dict[str, object]) -> str:
    """The priming curves of a results folder's manifest as a Markdown table: per target,
    the delivered rate at a few points in time and when it settled."""
    marks = (1, 5, 10, 20, 30, 45, 60, 90, 120)
    targets = manifest.get("targets")
    rows = []
    if isinstance(targets, dict):
        for name, info in targets.items():
            priming = info.get("priming") if isinstance(info, dict) else None
            if not isinstance(priming, dict) or not priming.get("curve"):
                continue
            curve = priming["curve"]
            at = {round(t): rate for t, rate in curve}
            cells = [f"{at[m]:,.0f}" if m in at else "" for m in marks]
            settled = priming.get("settled_at_s")
            rows.append(
                f"| {name} | {' | '.join(cells)} | {'—' if settled is None else f'{settled:g} s'} |"
            )
    head = "| target | " + " | ".join(f"{m} s" for m in marks) + " | settled after |"
    rule = "|---|" + "---:|" * (len(marks) + 1)
    return "\n".join([head, rule, *rows]) if rows else "no priming curves in this manifest"


def main(argv: list[str] | None = None) -> int:
    """``python -m msgbus.bench.warmup RESULTS``: print the priming curves of a results
    folder (delivered msg/s after 1, 5, 10, ... s of load on a freshly started broker)."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m msgbus.bench.warmup", description=main.__doc__)
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    try:
        manifest = json.loads((args.results / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.results / 'manifest.json'}: {exc}")
        return 2
    print(table(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
