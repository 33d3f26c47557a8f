"""The report's tables: latency, rates, and broker vs client.

Every row shows one repeat (the cell's representative, see :mod:`.data`) with the min–max
of all repeats in brackets; percentiles go to p99.9 with the sample count beside them. Where
a row ran as fast as possible (or fell behind its offered rate), end-to-end times are time
spent in the backlog, not broker latency, and the table says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from msgbus.bench.render import Block, Para, Table
from msgbus.bench.report.bottleneck import bottleneck, box_cores, heaviest, sentence
from msgbus.bench.report.data import (
    NA,
    Cell,
    ReportData,
    consumed,
    lat,
    published,
    res,
)

__all__ = [
    "BACKLOG_NOTE",
    "TANSU_NOTE",
    "broker_vs_client",
    "client_table",
    "lat_headers",
    "latency_table",
    "notes",
    "pct",
    "rate_table",
]

TANSU_NOTE = (
    "tansu is a Kafka-wire-compatible broker, not Apache Kafka: its rows are tansu's figures, "
    "not Kafka's (with these Python clients its end-to-end latency was several times Apache "
    "Kafka's)."
)
BACKLOG_NOTE = (
    "‡ Time in the backlog, not broker latency: this row ran as fast as possible (or fell "
    "behind its offered rate), so a message's end-to-end time is mostly the time it waited "
    "in the queue behind earlier ones. Broker latency is read at a fixed rate that was kept up."
)

Extra = tuple[str, Callable[[Cell], str]]


def notes(cells: Iterable[Cell], backlog: bool = False) -> str:
    """The notes a table of ``cells`` needs (tansu, backlog time)."""
    cells = list(cells)
    out = []
    if backlog and any(c.backlog_latency() for c in cells):
        out.append(BACKLOG_NOTE)
    if any(c.on_tansu for c in cells):
        out.append(TANSU_NOTE)
    return " ".join(out)


def lat_headers(cells: Sequence[Cell], names: Sequence[str]) -> tuple[list[str], bool]:
    """Latency column headers for ``names`` (``"p99 ms"`` …), and whether each backlog row's
    figures need a ‡ mark (mixed tables); when every row is a backlog row the headers say so
    instead."""
    flags = [c.backlog_latency() for c in cells]
    if flags and all(flags):
        return [n.replace(" ms", " ms in backlog‡") for n in names], False
    return list(names), any(flags)


def pct(c: Cell, p: str, mark: bool) -> str:
    """``c``'s percentile ``p`` (see :meth:`Cell.fmt_pct`), with ‡ when ``mark`` and the row's
    times are backlog time."""
    text = c.fmt_pct(p)
    return (
        text + " ‡"
        if mark and c.backlog_latency() and text not in (NA, "too few samples")
        else text
    )


def _samples(c: Cell) -> str:
    n = c.samples()
    return NA if n is None else f"{n:,}"


def latency_table(cells: Sequence[Cell], with_step: bool = False) -> Table:
    """Latency at a fixed rate: p50 … p99.9 and max (ms), samples, publish delay and
    publish→confirm, consumed msg/s, correctness."""
    heads, mark = lat_headers(cells, ["p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"])
    header = [
        *(["step"] if with_step else []),
        "broker/client",
        *heads,
        "samples",
        "publish delay p99 ms",
        "publish→confirm p50 ms",
        "consumed msg/s",
        "lost/dup/out-of-order",
    ]
    rows = [
        [
            *([c.label] if with_step else []),
            c.name,
            *(pct(c, p, mark) for p in ("p50", "p90", "p99", "p99.9")),
            c.fmt(lat("max"), ".1f"),
            _samples(c),
            c.fmt(lat("p99", "publish_delay"), ".2f"),
            c.fmt(lat("p50", "publish_latency"), ".2f"),
            c.fmt(consumed),
            c.correctness(),
        ]
        for c in cells
    ]
    return Table(header, rows, notes(cells, backlog=True))


def rate_table(cells: Sequence[Cell], extra: Sequence[Extra] = ()) -> Table:
    """Rates and latency per step: offered, published and consumed msg/s, p50/p99/p99.9
    (ms) with samples, ``extra`` columns, correctness."""
    heads, mark = lat_headers(cells, ["p50 ms", "p99 ms", "p99.9 ms"])
    header = [
        "step",
        "broker/client",
        "offered msg/s",
        "published msg/s",
        "consumed msg/s (per group)",
        *heads,
        "samples",
        *(h for h, _ in extra),
        "lost/dup/ooo",
    ]
    rows = []
    for c in cells:
        rate = c.settings.get("producer_rate")
        rows.append(
            [
                c.label,
                c.name,
                f"{rate:,.0f}" if rate else "max",
                c.fmt(published),
                c.fmt(consumed),
                *(pct(c, p, mark) for p in ("p50", "p99", "p99.9")),
                _samples(c),
                *(f(c) for _, f in extra),
                c.correctness(),
            ]
        )
    return Table(header, rows, notes(cells, backlog=True))


def vs_raw(data: ReportData, c: Cell) -> str:
    """msgbus's consumed msg/s over the raw client's, same step and target (``–`` when there
    is no raw row)."""
    if c.client != "msgbus":
        return ""
    raw = data.partner(c, "raw")
    if raw is None:
        return "–"
    a, b = c.median(consumed), raw.median(consumed)
    return f"{a / b:.2f}×" if b and a == a and b == b else NA


def client_table(data: ReportData, cells: Sequence[Cell]) -> Table:
    """Broker vs client at each row's heaviest step: consumed msg/s, msgbus ÷ raw, CPU per
    message of clients and broker, CPU cores of each and of the whole box, the bottleneck."""
    cpus = data.cpus
    header = [
        "broker/client",
        "step",
        "consumed msg/s",
        "msgbus ÷ raw",
        "client CPU µs/msg",
        "broker CPU µs/msg",
        "clients CPU cores",
        "broker CPU cores",
        f"box busy cores (of {cpus})",
        "bottleneck",
    ]
    rows = []
    for c in sorted(heaviest(cells), key=lambda c: cells.index(c)):
        box, exact = box_cores(c.rep)
        rows.append(
            [
                c.name,
                c.label,
                c.fmt(consumed),
                vs_raw(data, c),
                c.fmt(res("clients_cpu_us_per_msg"), ".0f"),
                c.fmt(res("broker_cpu_us_per_msg"), ".0f"),
                c.fmt(res("clients_cpu_cores"), ".2f"),
                c.fmt(res("broker_cpu_cores"), ".2f"),
                c.fmt(res("box_cpu_cores"), ".2f")
                if exact
                else (NA if box is None else f"n/a (≥ {box:.2f}: broker + clients)"),
                bottleneck(c, cpus).side,
            ]
        )
    return Table(header, rows)


def broker_vs_client(data: ReportData, cells: Sequence[Cell]) -> list[Block]:
    """The broker-vs-client table at each row's heaviest step and the workload's one
    generated bottleneck sentence (nothing for no cells)."""
    if not cells:
        return []
    out: list[Block] = [
        Para(
            "Broker vs client at each row's heaviest step (CPU over the measured window; "
            "µs per delivered message):"
        ),
        client_table(data, cells),
    ]
    text = sentence(cells, data.cpus)
    if text:
        out.append(Para(text))
    return out
