"""Scaling: how throughput and p99 move from 1 → 2 → 4 partitions/queues and consumers,
with the box's CPU saturation per step.

The ideal line is derived from step 1 only — step 1's consumed msg/s × consumers / step 1's
consumers, capped only at the offered rate when the step offers one — never fitted to, or
capped by, the measured steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from msgbus.bench import charts
from msgbus.bench.render import Block, Chart, Para, Table
from msgbus.bench.report.bottleneck import box_cores
from msgbus.bench.report.data import NA, Cell, ReportData, consumed, res
from msgbus.bench.report.tables import broker_vs_client, lat_headers, notes, pct

__all__ = ["efficiency", "ideal", "section_scaling"]


def _consumers(c: Cell) -> int:
    return int(c.settings.get("consumers_per_group") or 1)


def ideal(row: Sequence[Cell], c: Cell) -> float:
    """The ideal consumed msg/s of step ``c`` of a broker's ``row``: linear from the row's
    first step (capped at the offered rate, an input, never at a measured figure)."""
    first = row[0]
    base = first.median(consumed)
    value = base * _consumers(c) / _consumers(first)
    rate = c.settings.get("producer_rate")
    return min(value, rate) if rate else value


def efficiency(row: Sequence[Cell]) -> float:
    """The last step's consumed msg/s over its ideal (NaN with fewer than two steps)."""
    if len(row) < 2:
        return math.nan
    target = ideal(row, row[-1])
    return row[-1].median(consumed) / target if target else math.nan


def _rows(cells: Sequence[Cell]) -> dict[str, list[Cell]]:
    rows: dict[str, list[Cell]] = {}
    for c in cells:
        rows.setdefault(c.name, []).append(c)
    return rows


def section_scaling(data: ReportData, name: str, out: list[Block]) -> None:
    """Per step: consumers (= partitions/queues), producers, consumed msg/s, the ideal from
    step 1, efficiency, p99, and the box's busy cores; then throughput vs consumers with the
    ideal dashed, and the box's CPU vs consumers against its core count."""
    cells = data.of(name)
    rows = _rows(cells)
    cpus = data.cpus
    (p99_head,), mark = lat_headers(cells, ["p99 ms"])
    table = []
    for c in cells:
        row = rows[c.name]
        target = ideal(row, c)
        box, exact = box_cores(c.rep)
        table.append(
            [
                c.label,
                c.name,
                f"{_consumers(c)} ({c.settings.get('partitions', '?')})",
                str(c.settings.get("producers", 1)),
                c.fmt(consumed),
                f"{target:,.0f}" if not math.isnan(target) else NA,
                f"{c.median(consumed) / target:.0%}" if target else NA,
                pct(c, "p99", mark),
                (c.fmt(res("box_cpu_cores"), ".2f") if exact else f"≥ {box:.2f}")
                if box is not None
                else NA,
                c.correctness(),
            ]
        )
    out.append(
        Table(
            [
                "step",
                "broker/client",
                "consumers (partitions)",
                "producers",
                "consumed msg/s",
                "ideal msg/s (from step 1)",
                "efficiency",
                p99_head,
                f"box busy cores (of {cpus})",
                "lost/dup/ooo",
            ],
            table,
            notes(cells, backlog=True),
        )
    )
    out.append(
        Para(
            "Ideal = step 1's consumed msg/s × consumers ÷ step 1's consumers (capped only at "
            "an offered rate), never fitted to the later steps; efficiency = measured ÷ ideal. "
            f"Box busy cores near {cpus} mean the machine, not the broker, stops the curve "
            "(≥ = broker + clients only, for results that predate the box's own figure)."
        )
    )
    out += broker_vs_client(data, cells)
    series = {n: [(_consumers(c), c.median(consumed)) for c in row] for n, row in rows.items()}
    dashed = {
        f"ideal {n}": [(_consumers(c), ideal(row, c)) for c in row] for n, row in rows.items()
    }
    out.append(
        Chart(
            f"charts/{name}.png",
            charts.line_chart(
                series,
                title=f"{name}: consumed msg/s vs consumers",
                xlabel="consumers in the group (= partitions/queues)",
                ylabel="consumed msg/s",
                dashed=dashed,
                xticks=sorted({_consumers(c) for c in cells}),
            ),
            f"{name}: throughput against consumers; dashed: the ideal from step 1",
        )
    )
    box_series = {
        n: [(_consumers(c), b) for c in row if (b := box_cores(c.rep)[0]) is not None]
        for n, row in rows.items()
    }
    exact = all(box_cores(c.rep)[1] for c in cells)
    if any(box_series.values()):
        out.append(
            Chart(
                f"charts/{name}-cpu.png",
                charts.line_chart(
                    box_series,
                    title=f"{name}: the box's busy cores vs consumers",
                    xlabel="consumers in the group (= partitions/queues)",
                    ylabel="busy cores (whole machine)"
                    if exact
                    else "busy cores (broker + clients: box ≥ this)",
                    hline=(float(cpus), f"{cpus} cores: saturated"),
                    ylim=(0.0, cpus * 1.1),
                    xticks=sorted({_consumers(c) for c in cells}),
                ),
                f"{name}: CPU saturation of the whole machine per step",
            )
        )
