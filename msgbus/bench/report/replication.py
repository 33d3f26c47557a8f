"""Replication: each replicated profile beside one node of the same broker, with what
replication costs as ratios; ActiveMQ failover as availability only.

Pairs are made from results' ``profile``/``nodes``: a replicated cell (e.g. ``kafka-3``,
``rabbitmq-3``) and the single-node cell of the same workload, step, broker kind, client and
driver. Cost = replicated ÷ single for msg/s (below 1: throughput lost) and for p99 (above
1: latency added). ActiveMQ Classic replicates no queue — a standby takes over the store — so
its failover never appears as a throughput row.
"""

from __future__ import annotations

from msgbus.bench.render import Block, Para, Table
from msgbus.bench.report.data import NA, Cell, ReportData, consumed, lat, published
from msgbus.bench.report.tables import broker_vs_client, notes, pct, rate_table

__all__ = [
    "ACTIVEMQ_NOTE",
    "availability_cells",
    "replication_blocks",
    "replication_cost",
    "replication_pairs",
    "section_availability",
    "section_replication",
]

ACTIVEMQ_NOTE = (
    "ActiveMQ has no replicated row: ActiveMQ Classic replicates no queue (a standby broker "
    "takes over the same store), so its failover is about availability, not throughput, and "
    "appears here as availability only."
)


def availability_cells(data: ReportData) -> list[Cell]:
    """ActiveMQ cells of a non-single profile (failover): availability only."""
    return [c for c in data.cells.values() if c.broker_kind == "activemq" and c.replicated]


def replication_pairs(data: ReportData, workload: str | None = None) -> list[tuple[Cell, Cell]]:
    """(single node, replicated) cells of the same workload, step, broker kind, client and
    driver, for every replicated cell (of ``workload``, if given) that has a single-node
    partner; ActiveMQ and tansu excluded."""
    singles: dict[tuple[str, int, str, str, str], Cell] = {}
    for c in data.cells.values():
        if not c.replicated and not c.on_tansu:
            singles.setdefault((c.workload, c.step, c.broker_kind, c.client, c.driver or ""), c)
    pairs = []
    for c in data.cells.values():
        if not c.replicated or c.broker_kind == "activemq" or c.on_tansu:
            continue
        if workload is not None and c.workload != workload:
            continue
        single = singles.get((c.workload, c.step, c.broker_kind, c.client, c.driver or ""))
        if single is not None:
            pairs.append((single, c))
    order = {w: i for i, w in enumerate(data.workloads())}
    return sorted(pairs, key=lambda p: (order.get(p[0].workload, 99), p[0].step, p[0].name))


def replication_cost(single: Cell, replicated: Cell) -> tuple[float, float]:
    """(msg/s, p99) of the replicated cell ÷ the single node's (medians of the repeats)."""
    rate = replicated.median(consumed) / single.median(consumed)
    p99 = replicated.median(lat("p99")) / single.median(lat("p99"))
    return rate, p99


def _ratio(x: float) -> str:
    return f"{x:.2f}×" if x == x else NA


def replication_blocks(data: ReportData, workload: str | None = None) -> list[Block]:
    """The pairs table with the cost ratios, then ActiveMQ's availability line (its
    failover runs' correctness, or why it has no replicated row). Empty when nothing
    replicated ran."""
    pairs = replication_pairs(data, workload)
    failover = availability_cells(data)
    if not pairs and not failover:
        return []
    out: list[Block] = []
    if pairs:
        rows = []
        for single, repl in pairs:
            rate, p99 = replication_cost(single, repl)
            rows.append(
                [
                    single.label,
                    single.name,
                    repl.name,
                    single.fmt(consumed),
                    repl.fmt(consumed),
                    _ratio(rate),
                    pct(single, "p99", False),
                    pct(repl, "p99", False),
                    _ratio(p99),
                ]
            )
        out.append(
            Para(
                "Each replicated profile beside one node of the same broker (same step, "
                "client and durability). Ratios = replicated ÷ single node, medians of the "
                "repeats: msg/s below 1 is throughput replication costs, p99 above 1 is "
                "latency it adds. Every node runs on the same 2-core machine, so the cost "
                "here is an upper bound of the cost on separate machines."
            )
        )
        out.append(
            Table(
                [
                    "step",
                    "single node",
                    "replicated",
                    "single msg/s",
                    "replicated msg/s",
                    "msg/s ratio",
                    "single p99 ms",
                    "replicated p99 ms",
                    "p99 ratio",
                ],
                rows,
                notes([c for p in pairs for c in p]),
            )
        )
    if failover:
        runs = [r for c in failover for r in c.runs]
        out.append(
            Para(
                f"ActiveMQ failover ({max(c.nodes for c in failover)} nodes): availability "
                f"only — {len(runs)} run(s), {sum(r.get('sent', 0) for r in runs):,} messages "
                f"sent, {sum(r.get('lost', 0) for r in runs)} lost, "
                f"{sum(r.get('duplicated', 0) for r in runs)} duplicated. " + ACTIVEMQ_NOTE
            )
        )
    elif any(c.broker_kind == "activemq" for c in data.cells.values()):
        out.append(Para(ACTIVEMQ_NOTE))
    return out


def section_replication(data: ReportData, name: str, out: list[Block]) -> None:
    """A replication workload: its rate table (failover rows left out), broker vs client,
    then the replicated-vs-single table."""
    failover = availability_cells(data)
    cells = [c for c in data.of(name) if c not in failover]
    out.append(rate_table(cells))
    out += broker_vs_client(data, cells)
    out += replication_blocks(data, name)


def _outage(r: dict[str, object]) -> object:
    a = r.get("availability")
    return a.get("outage_s") if isinstance(a, dict) else None


def _outage_text(c: Cell) -> str:
    """The outage of the representative repeat with the range; NaN = nothing arrived after
    the kill at all."""
    v = _outage(c.rep)
    if isinstance(v, float) and v != v:
        return "none arrived after the kill"
    return c.fmt(_outage, ".2f")


def section_availability(data: ReportData, name: str, out: list[Block]) -> None:
    """A failover workload (a node killed inside the window): per broker/client the killed
    node, the outage (longest time no group received anything new after the kill) and the
    correctness of every repeat — availability only, no throughput verdict."""
    cells = data.of(name)
    rows = []
    for c in cells:
        a = c.rep.get("availability") if isinstance(c.rep.get("availability"), dict) else {}
        rows.append(
            [
                c.name,
                f"{c.profile}, {c.nodes} node(s)",
                NA if a.get("killed_at_s") is None else f"{a['killed_at_s']:g}",
                str(a.get("node", NA)),
                _outage_text(c),
                c.fmt(published),
                c.correctness(),
            ]
        )
    out.append(
        Table(
            [
                "broker/client",
                "profile",
                "node killed at s",
                "node",
                "outage s",
                "published msg/s",
                "lost/dup/ooo",
            ],
            rows,
            notes(cells),
        )
    )
    out.append(
        Para(
            "Availability only: outage = the longest time after the kill in which no group "
            "received a new message (sampled every 100 ms); what matters is that it ends and "
            "that nothing is lost. These runs take no part in the verdict."
        )
    )
