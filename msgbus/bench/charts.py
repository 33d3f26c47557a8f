"""Charts for the report, drawn with matplotlib's Agg backend and returned as PNG bytes.

Each function takes plain data (labels → points) and never touches files or global state
beyond matplotlib's (a figure is created and closed per call). Every chart has a title and
axis labels with units; charts meant to be compared side by side take the same ``xlim`` /
``ylim``.
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
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
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
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    hline: tuple[float, str] | None = None,
    xticks: Sequence[float] | None = None,
) -> bytes:
    """Lines with markers, one per label; ``dashed`` series (e.g. an ideal line) in dashes,
    in the colour of the series whose label ends theirs; ``hline`` a labelled horizontal
    limit (value, label); ``xlim``/``ylim`` fixed axes (to compare charts); ``xticks`` the x
    values to label (e.g. the steps' consumer counts); ``note`` as small text under the
    axes."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours: dict[str, str] = {}
    for label, points in series.items():
        pts = [(x, y) for x, y in points if not (math.isnan(x) or math.isnan(y))]
        if pts:
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            colours[label] = line.get_color()
    for label, points in (dashed or {}).items():
        pts = [(x, y) for x, y in points if not (math.isnan(x) or math.isnan(y))]
        colour = next((c for name, c in colours.items() if label.endswith(name)), None)
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                "--",
                label=label,
                alpha=0.7,
                color=colour,
            )
    if hline is not None:
        ax.axhline(hline[0], color="black", linestyle=":", label=hline[1])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if xticks:
        ax.set_xticks(list(xticks))
        ax.set_xticklabels([f"{x:g}" for x in xticks])
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if series or dashed or hline:
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
    xlabel: str = "broker",
    logy: bool = False,
    note: str = "",
    ranges: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> bytes:
    """Grouped bars: one group per category, one bar per series label (NaN = no bar);
    ``ranges`` gives per series and category a (min, max) drawn as a whisker."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    n = max(1, len(series))
    width = 0.8 / n
    for i, (label, values) in enumerate(series.items()):
        xs = [c + (i - (n - 1) / 2) * width for c in range(len(categories))]
        ys = [0.0 if math.isnan(v) else v for v in values]
        ax.bar(xs, ys, width=width, label=label)
        spans = [
            (x, y, lo, hi)
            for x, y, (lo, hi) in zip(xs, ys, (ranges or {}).get(label) or [], strict=False)
            if not (math.isnan(lo) or math.isnan(hi))
        ]
        if spans:
            ax.errorbar(
                [s[0] for s in spans],
                [s[1] for s in spans],
                yerr=[
                    [max(0.0, y - lo) for _, y, lo, _ in spans],
                    [max(0.0, hi - y) for _, y, _, hi in spans],
                ],
                fmt="none",
                ecolor="black",
                capsize=3,
                lw=1,
            )
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, fontsize=8, rotation=15 if len(categories) > 3 else 0)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, wrap=True, va="top")
    return _png(fig)


PERCENTILES = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9)
"""The percentiles a latency curve is drawn at (to p99.9, as the tables)."""


def percentile_chart(curves: Mapping[str, Sequence[Point]], *, title: str, note: str = "") -> bytes:
    """Latency-by-percentile curves (HdrHistogram style: x is 1/(1-p) on a log axis).

    ``curves`` maps a label to ``(percentile, latency_ms)`` points."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in curves.items():
        xs = [1 / (1 - p / 100.0) if p < 100 else 1e5 for p, _ in points]
        ax.plot(xs, [v for _, v in points], marker=".", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [1, 2, 10, 100, 1000]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _pos: f"{100 * (1 - 1 / x):g}%" if x >= 1 else "")
    )
    ax.set_title(title)
    ax.set_xlabel("percentile (%, log of 1/(1-p))")
    ax.set_ylabel("end-to-end latency (ms, log)")
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, -0.02, note, fontsize=7, wrap=True, va="top")
    return _png(fig)
