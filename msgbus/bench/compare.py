"""Is one broker really ahead of another? The repeats decide, not a fixed tie band.

Two targets' repeats of a workload are compared on the report's measure (a function of a
target's cells, e.g. the median p99 of the first step). :func:`compare` computes the measure
per repeat (repeat *r* of every step) and a percentile bootstrap interval of the ratio
leader / other (for lower-is-better measures, other / leader): resample each target's
repeats with replacement, apply the measure, take the ratio; 2,000 resamples, a fixed seed so
a report is reproducible. The comparison is **inconclusive** when the two targets' per-repeat
ranges overlap, when the interval reaches down to 1, or when either has fewer than
:data:`MIN_REPEATS` repeats.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

__all__ = ["MIN_REPEATS", "RESAMPLES", "Comparison", "compare"]

MIN_REPEATS = 3
"""Fewer repeats than this on either side make a comparison inconclusive."""
RESAMPLES = 2000
"""Bootstrap resamples per comparison."""


class _Repeated(Protocol):
    runs: list[dict[str, Any]]


C = TypeVar("C", bound=_Repeated)


@dataclass(frozen=True)
class Comparison:
    """The leader's advantage over another target, with its uncertainty.

    ``ratio``: the measure's ratio on all repeats (≥ 1 when the leader is ahead);
    ``low``/``high``: the 95 % bootstrap interval of that ratio; ``overlap``: the two
    per-repeat ranges overlap; ``repeats``: the fewer repeats of the two sides."""

    ratio: float
    low: float
    high: float
    overlap: bool
    repeats: int

    @property
    def conclusive(self) -> bool:
        """Enough repeats, ranges apart, and the whole interval above 1."""
        return self.repeats >= MIN_REPEATS and not self.overlap and self.low > 1.0

    def describe(self) -> str:
        """``1.32× (95 % CI 1.10–1.61)`` and, when inconclusive, why."""
        text = f"{self.ratio:.2f}× (95 % CI {self.low:.2f}–{self.high:.2f})"
        if self.repeats < MIN_REPEATS:
            return text + f", only {self.repeats} repeat(s)"
        if self.overlap:
            return text + ", repeats overlap"
        if self.low <= 1.0:
            return text + ", interval reaches 1"
        return text


def _with_runs(cells: Sequence[C], pick: Callable[[int], list[int]]) -> list[C]:
    return [replace(c, runs=[c.runs[i] for i in pick(len(c.runs))]) for c in cells]  # type: ignore[type-var]


def _per_repeat(cells: Sequence[C], measure: Callable[[list[C]], float]) -> list[float]:
    count = min((len(c.runs) for c in cells), default=0)
    values = [measure(_with_runs(cells, lambda n, r=r: [r])) for r in range(count)]
    return [v for v in values if not math.isnan(v)]


def compare(
    leader: Sequence[C],
    other: Sequence[C],
    measure: Callable[[list[C]], float],
    *,
    higher_better: bool,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Compare ``leader``'s cells with ``other``'s on ``measure`` (see the module text)."""

    def ratio(a: float, b: float) -> float:
        if higher_better:
            return a / b if b else math.inf
        return b / a if a else math.inf

    overall = ratio(measure(list(leader)), measure(list(other)))
    mine, theirs = _per_repeat(leader, measure), _per_repeat(other, measure)
    repeats = min(len(mine), len(theirs))
    if not mine or not theirs:
        return Comparison(overall, math.nan, math.nan, True, repeats)
    overlap = max(mine) >= min(theirs) and max(theirs) >= min(mine)
    rng = random.Random(seed)

    def resample(n: int) -> list[int]:
        return [rng.randrange(n) for _ in range(n)]

    ratios = sorted(
        ratio(measure(_with_runs(leader, resample)), measure(_with_runs(other, resample)))
        for _ in range(resamples)
    )
    ratios = [r for r in ratios if not math.isnan(r)]
    if not ratios:
        return Comparison(overall, math.nan, math.nan, overlap, repeats)
    low = ratios[int(0.025 * (len(ratios) - 1))]
    high = ratios[math.ceil(0.975 * (len(ratios) - 1))]
    return Comparison(overall, low, high, overlap, repeats)
