"""Charts for the report, drawn with matplotlib's Agg backend and returned as PNG bytes.

Each function takes plain data (labels → points) and never touches files or global state
beyond matplotlib's (a figure is created and closed per call).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

__all__ = ["bar_chart", "line_chart", "percentile_chart"]

Point = tuple[float, float]


def _png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return buf.getvalue()


def line_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    dashed: Mapping[str, Sequence[Point]] | None = None,
    note: str = "",
) -> bytes:
    """Lines with markers, one per label; ``dashed`` series (e.g. an ideal line) in grey
    dashes; ``note`` as small text under the axes."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in series.items():
        pts = [(x, y) for x, y in points if not (math.isnan(x) or math.isnan(y))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for label, points in (dashed or {}).items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "--", label=label, alpha=0.6)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if series or dashed:
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, wrap=True, va="top")
    return _png(fig)


def bar_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    ylabel: str,
    logy: bool = False,
    note: str = "",
) -> bytes:
    """Grouped bars: one group per category, one bar per series label (NaN = no bar)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    n = max(1, len(series))
    width = 0.8 / n
    for i, (label, values) in enumerate(series.items()):
        xs = [c + (i - (n - 1) / 2) * width for c in range(len(categories))]
        ys = [0.0 if math.isnan(v) else v for v in values]
        ax.bar(xs, ys, width=width, label=label)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, fontsize=8)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, wrap=True, va="top")
    return _png(fig)


PERCENTILES = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)


def percentile_chart(curves: Mapping[str, Sequence[Point]], *, title: str, note: str = "") -> bytes:
    """Latency-by-percentile curves (HdrHistogram style: x is 1/(1-p) on a log axis).

    ``curves`` maps a label to ``(percentile, latency_ms)`` points."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in curves.items():
        xs = [1 / (1 - p / 100.0) if p < 100 else 1e5 for p, _ in points]
        ax.plot(xs, [v for _, v in points], marker=".", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _pos: f"{100 * (1 - 1 / x):g}%" if x >= 1 else "")
    )
    ax.set_title(title)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms, log)")
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, wrap=True, va="top")
    return _png(fig)
