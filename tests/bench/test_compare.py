"""The verdict's statistics: inconclusive unless the repeats separate two brokers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from msgbus.bench.compare import MIN_REPEATS, compare


@dataclass
class FakeCell:
    """Stands for a report cell: the repeats of one step (only ``runs`` is read)."""

    runs: list[dict[str, Any]] = field(default_factory=list)


def cells(*rates: float) -> list[FakeCell]:
    return [FakeCell([{"rate": r} for r in rates])]


def median_rate(of: list[FakeCell]) -> float:
    values = sorted(run["rate"] for run in of[0].runs)
    return values[len(values) // 2] if values else float("nan")


def test_separated_repeats_are_conclusive() -> None:
    result = compare(
        cells(200, 210, 205, 198, 202),
        cells(100, 104, 99, 101, 97),
        median_rate,
        higher_better=True,
    )
    assert result.conclusive
    assert 1.9 < result.low <= result.ratio <= result.high < 2.2
    assert "repeats overlap" not in result.describe()


def test_overlapping_repeats_are_inconclusive_even_with_a_median_gap() -> None:
    # medians 120 vs 100, but one repeat of each falls in the other's range (the 2x spreads
    # the first edition of the report ignored)
    result = compare(
        cells(120, 60, 130, 125, 118), cells(100, 95, 140, 98, 102), median_rate, higher_better=True
    )
    assert result.ratio > 1.15
    assert result.overlap and not result.conclusive
    assert result.describe().endswith("repeats overlap")


def test_too_few_repeats_are_inconclusive() -> None:
    result = compare(cells(300, 310), cells(100, 101), median_rate, higher_better=True)
    assert result.repeats == 2 < MIN_REPEATS
    assert not result.conclusive and "only 2 repeat(s)" in result.describe()


def test_lower_is_better_measures_compare_the_other_way() -> None:
    # latency: the leader has the smaller p99
    result = compare(
        cells(1.0, 1.1, 0.9, 1.05, 0.95),
        cells(3.0, 3.2, 2.9, 3.1, 3.05),
        median_rate,
        higher_better=False,
    )
    assert result.conclusive and 2.5 < result.ratio < 3.5


def test_the_interval_is_reproducible() -> None:
    a, b = cells(120, 110, 130, 125, 118), cells(100, 95, 105, 98, 102)
    assert compare(a, b, median_rate, higher_better=True) == compare(
        a, b, median_rate, higher_better=True
    )
