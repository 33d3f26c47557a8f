"""One section per workload kind: its table, its broker-vs-client table and bottleneck
sentence, and its charts (each chart shows one thing, with a title and axis units).

:data:`SECTIONS` maps a workload kind to the function that writes its section; the scaling
kind lives in :mod:`.scaling`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from msgbus.bench import charts
from msgbus.bench.render import Block, Bullets, Chart, Heading, Para, Table
from msgbus.bench.report.data import (
    MIN_P999_SAMPLES,
    Cell,
    ReportData,
    body_bytes,
    consumed,
    delivered,
    lat,
    mbps,
    res,
)
from msgbus.bench.report.replication import section_availability, section_replication
from msgbus.bench.report.scaling import section_scaling
from msgbus.bench.report.tables import broker_vs_client, latency_table, notes, rate_table

__all__ = ["SECTIONS", "Section", "section_resources"]

Section = Callable[[ReportData, str, list[Block]], None]


def _caveat(cells: Sequence[Cell]) -> str:
    return (
        "tansu is not Apache Kafka (see the table's note)" if any(c.on_tansu for c in cells) else ""
    )


def _percentile_points(cell: Cell) -> list[tuple[float, float]]:
    h = cell.histogram()
    count = h.get_total_count()
    if not count:
        return []
    return [
        (p, h.get_value_at_percentile(p) / 1000.0)
        for p in charts.PERCENTILES
        if p < 99.9 or count >= MIN_P999_SAMPLES
    ]


def _series(
    cells: Sequence[Cell], x: Callable[[Cell], float], y: Callable[[Cell], float]
) -> dict[str, list[tuple[float, float]]]:
    """One line per broker/client over the steps."""
    out: dict[str, list[tuple[float, float]]] = {}
    for c in cells:
        out.setdefault(c.name, []).append((x(c), y(c)))
    return out


def section_latency(data: ReportData, name: str, out: list[Block]) -> None:
    """Fixed-rate latency: table, broker vs client, percentile curves (merged repeats)."""
    cells = data.of(name)
    out.append(latency_table(cells, with_step=len({c.step for c in cells}) > 1))
    out += broker_vs_client(data, cells)
    for step in sorted({c.step for c in cells}):
        mine = [c for c in cells if c.step == step]
        suffix = "" if step == cells[0].step else f"-{step}"
        label = f" ({mine[0].label})" if len({c.step for c in cells}) > 1 else ""
        out.append(
            Chart(
                f"charts/{name}-percentiles{suffix}.png",
                charts.percentile_chart(
                    {c.name: _percentile_points(c) for c in mine},
                    title=f"{name}{label}: end-to-end latency by percentile",
                    note=_caveat(mine),
                ),
                f"{name}{label}: end-to-end latency by percentile, every repeat's samples "
                "merged (to p99.9)",
            )
        )


def _limits(values: Sequence[float], log: bool) -> tuple[float, float] | None:
    vs = [v for v in values if not math.isnan(v) and (v > 0 or not log)]
    if not vs:
        return None
    if log:
        return min(vs) / 1.5, max(vs) * 1.5
    return 0.0, max(vs) * 1.1


def section_sweep(data: ReportData, name: str, out: list[Block]) -> None:
    """Rate sweep: table, broker vs client, one throughput-vs-latency chart per broker, all
    on the same axes."""
    cells = data.of(name)
    kept = ("kept up", lambda c: "yes" if c.kept_up() else "no")
    out.append(rate_table(cells, [kept]))
    out += broker_vs_client(data, cells)
    pcts = ("p50", "p99", "p99.9")
    xlim = _limits([c.median(consumed) for c in cells], log=False)
    ylim = _limits([c.median(lat(p)) for c in cells for p in pcts], log=True)
    for target in data.targets():
        mine = [c for c in cells if c.target == target]
        if not mine:
            continue
        series = {}
        for client in sorted({c.client for c in mine}):
            row = [c for c in mine if c.client == client]
            for p in pcts:
                series[f"{row[0].name} {p}"] = [(c.median(consumed), c.median(lat(p))) for c in row]
        out.append(
            Chart(
                f"charts/{name}-{target}.png",
                charts.line_chart(
                    series,
                    title=f"{mine[0].broker_name}: consumed msg/s vs latency",
                    xlabel="consumed msg/s (median of repeats)",
                    ylabel="end-to-end latency (ms, log)",
                    logy=True,
                    note=_caveat(mine),
                    xlim=xlim,
                    ylim=ylim,
                ),
                f"{name}: {mine[0].broker_name} throughput vs p50/p99/p99.9 latency (same axes "
                "for every broker)",
            )
        )


def section_max(data: ReportData, name: str, out: list[Block]) -> None:
    """Max rate: table, broker vs client, consumed msg/s per broker (msgbus vs raw, with the
    min–max of the repeats as whiskers), and the warm-up curves where the runs recorded
    them."""
    cells = data.of(name)
    out.append(rate_table(cells))
    out += broker_vs_client(data, cells)
    top = [c for c in cells if c.step == cells[0].step]
    brokers = list(dict.fromkeys(c.broker_name for c in top))
    series: dict[str, list[float]] = {}
    ranges: dict[str, list[tuple[float, float]]] = {}
    for client in ("msgbus", "raw"):
        vals, spans = [], []
        for b in brokers:
            cell = next((c for c in top if c.broker_name == b and c.client == client), None)
            vs = cell.values(consumed) if cell else []
            vals.append(cell.median(consumed) if cell else math.nan)
            spans.append((min(vs), max(vs)) if vs else (math.nan, math.nan))
        if any(not math.isnan(v) for v in vals):
            series[f"{client} client"] = vals
            ranges[f"{client} client"] = spans
    out.append(
        Chart(
            f"charts/{name}.png",
            charts.bar_chart(
                brokers,
                series,
                title=f"{name}: consumed msg/s per broker",
                ylabel="consumed msg/s (median; whiskers min–max)",
                ranges=ranges,
            ),
            f"{name}: consumed msg/s per broker through msgbus and through the raw client",
        )
    )
    curves = {
        c.name: [(float(t), float(v)) for t, v in c.rep.get("warmup_curve") or []]
        for c in top
        if c.client == "msgbus"
    }
    if any(curves.values()):
        out.append(
            Chart(
                f"charts/{name}-warmup.png",
                charts.line_chart(
                    curves,
                    title=f"{name}: delivered msg/s during the warm-up",
                    xlabel="seconds since the warm-up began",
                    ylabel="delivered msg/s",
                ),
                f"{name}: throughput during each broker's warm-up (representative repeat, "
                "msgbus); flat before the window opens = warm enough",
            )
        )


def section_fanout(data: ReportData, name: str, out: list[Block]) -> None:
    """Fan-out: table with deliveries over every group, broker vs client, p99 vs groups;
    the deliveries chart only at max rate (at a fixed rate every broker delivers the
    offered rate × groups, so its lines would coincide)."""
    cells = data.of(name)
    out.append(rate_table(cells, [("delivered msg/s (all groups)", lambda c: c.fmt(delivered))]))
    out += broker_vs_client(data, cells)

    def groups(c: Cell) -> float:
        return float(c.settings.get("consumer_groups", 1))

    out.append(
        Chart(
            f"charts/{name}-p99.png",
            charts.line_chart(
                _series(cells, groups, lambda c: c.median(lat("p99"))),
                title=f"{name}: p99 end-to-end latency vs consumer groups",
                xlabel="consumer groups (each gets every message)",
                ylabel="p99 latency (ms, log)",
                logy=True,
                xticks=sorted({groups(c) for c in cells}),
                note=_caveat(cells),
            ),
            f"{name}: p99 end-to-end latency against the number of groups",
        )
    )
    if not any(c.fixed_rate for c in cells):
        out.append(
            Chart(
                f"charts/{name}.png",
                charts.line_chart(
                    _series(cells, groups, lambda c: c.median(consumed)),
                    title=f"{name}: consumed msg/s per group vs consumer groups",
                    xlabel="consumer groups",
                    ylabel="consumed msg/s per group",
                ),
                f"{name}: what each group receives per second as groups are added",
            )
        )


def section_size(data: ReportData, name: str, out: list[Block]) -> None:
    """Message size: table with MB/s, broker vs client, MB/s and msg/s against body size."""
    cells = data.of(name)
    out.append(rate_table(cells, [("MB/s consumed", lambda c: c.fmt(mbps, ".1f"))]))
    out += broker_vs_client(data, cells)

    def size(c: Cell) -> float:
        return float(body_bytes(c.settings))

    for suffix, get, unit, log in (
        ("mbps", mbps, "consumed MB/s", False),
        ("rate", consumed, "consumed msg/s (log)", True),
    ):
        out.append(
            Chart(
                f"charts/{name}-{suffix}.png",
                charts.line_chart(
                    _series(cells, size, lambda c, g=get: c.median(g)),
                    title=f"{name}: {unit.replace(' (log)', '')} vs body size",
                    xlabel="body size (bytes, log; account.created = 260 B)",
                    ylabel=unit,
                    logx=True,
                    logy=log,
                ),
                f"{name}: {unit.replace(' (log)', '')} against body size",
            )
        )


def section_backlog(data: ReportData, name: str, out: list[Block]) -> None:
    """Backlog: peak, drain time and rate; broker vs client; backlog over time."""
    cells = data.of(name)

    def bl(key: str) -> Callable[[dict[str, object]], object]:
        return lambda r: (r.get("backlog") or {}).get(key)  # type: ignore[union-attr]

    header = [
        "broker/client",
        "peak backlog (msgs)",
        "drain time s",
        "consume rate while draining msg/s",
        "p99 ms",
        "lost/dup/ooo",
    ]
    rows = [
        [
            c.name,
            c.fmt(bl("peak")),
            c.fmt(bl("drain_seconds"), ".2f"),
            c.fmt(bl("drain_rate")),
            c.fmt(lat("p99"), ".1f"),
            c.correctness(),
        ]
        for c in cells
    ]
    out.append(Table(header, rows, notes(cells)))
    out += broker_vs_client(data, cells)
    series = {
        c.name: [(t, s - r) for t, s, r in (c.rep.get("backlog") or {}).get("series", [])]
        for c in cells
    }
    out.append(
        Chart(
            f"charts/{name}.png",
            charts.line_chart(
                series,
                title=f"{name}: backlog (sent − received) over time",
                xlabel="seconds since the window opened",
                ylabel="backlog (messages)",
            ),
            f"{name}: backlog build-up while the consumer is paused, then the drain "
            "(representative repeat)",
        )
    )


def section_durability(data: ReportData, name: str, out: list[Block]) -> None:
    """D0 vs D1: table, the profiles in words, broker vs client (disk shows here), p99 at
    the fixed rate and consumed msg/s at max rate per profile."""
    cells = data.of(name)
    out.append(rate_table(cells))
    profiles = [
        f"**{target} {profile}**: {text}"
        for target, info in data.manifest.get("targets", {}).items()
        for profile, text in (info.get("durability") or {}).items()
    ]
    if profiles:
        out.append(Bullets(profiles))
    out += broker_vs_client(data, cells)
    brokers = list(dict.fromkeys(c.broker_name for c in cells if c.client == "msgbus"))
    p99: dict[str, list[float]] = {}
    rate: dict[str, list[float]] = {}
    for profile in ("D0", "D1"):
        p99[profile], rate[profile] = [], []
        for b in brokers:
            mine = [
                c
                for c in cells
                if c.broker_name == b
                and c.client == "msgbus"
                and c.settings.get("durability") == profile
            ]
            fixed = [c for c in mine if c.fixed_rate]
            top = [c for c in mine if not c.fixed_rate]
            p99[profile].append(fixed[0].median(lat("p99")) if fixed else math.nan)
            rate[profile].append(top[0].median(consumed) if top else math.nan)
    out.append(
        Chart(
            f"charts/{name}-p99.png",
            charts.bar_chart(
                brokers,
                p99,
                title="D0 vs D1: p99 end-to-end latency at the fixed rate",
                ylabel="p99 latency (ms)",
                note=_caveat(cells),
            ),
            "D0 vs D1: p99 latency at the fixed rate (msgbus; no bar = profile not offered)",
        )
    )
    out.append(
        Chart(
            f"charts/{name}-max.png",
            charts.bar_chart(
                brokers, rate, title="D0 vs D1: consumed msg/s at max rate", ylabel="consumed msg/s"
            ),
            "D0 vs D1: consumed msg/s at max rate (msgbus; no bar = profile not offered)",
        )
    )


def section_resources(data: ReportData, out: list[Block]) -> None:
    """CPU and memory per broker through msgbus at 1,000 msg/s and at max rate."""
    rows = []
    cats = []
    cpu: dict[str, list[float]] = {"broker CPU cores": [], "clients CPU cores": []}
    rss: dict[str, list[float]] = {"broker RSS MiB": [], "clients RSS MiB": []}
    for workload in [w for w in data.workloads() if data.of(w)[0].kind in ("latency", "max-rate")]:
        for c in data.of(workload, "msgbus"):
            rows.append(
                [
                    workload,
                    c.name,
                    c.fmt(consumed),
                    c.fmt(res("broker_cpu_cores"), ".2f"),
                    c.fmt(res("broker_cpu_us_per_msg"), ".0f"),
                    c.fmt(res("broker_rss_mib"), ".0f"),
                    c.fmt(res("clients_cpu_cores"), ".2f"),
                    c.fmt(res("clients_cpu_us_per_msg"), ".0f"),
                    c.fmt(res("clients_rss_mib"), ".0f"),
                ]
            )
            if not c.fixed_rate and c.broker_name not in cats:
                cats.append(c.broker_name)
                cpu["broker CPU cores"].append(c.median(res("broker_cpu_cores")))
                cpu["clients CPU cores"].append(c.median(res("clients_cpu_cores")))
                rss["broker RSS MiB"].append(c.median(res("broker_rss_mib")))
                rss["clients RSS MiB"].append(c.median(res("clients_rss_mib")))
    if not rows:
        return
    out.append(Heading(2, "CPU and memory per broker"))
    out.append(
        Para(
            "Sampled from `/proc/<pid>/stat` and `status` of every process of the harness "
            "broker (RabbitMQ: beam.smp and epmd; ActiveMQ: the JVM; tansu: one process) and "
            "of the producer and consumer processes, over the measured window. RSS is the "
            "peak of samples every 0.5 s. On `memory://` the broker lives inside the client "
            "process, so its CPU is counted under clients. Brokers given by URL have no "
            "figures."
        )
    )
    out.append(
        Table(
            [
                "workload",
                "broker/client",
                "consumed msg/s",
                "broker CPU cores",
                "broker CPU µs/msg",
                "broker RSS MiB",
                "clients CPU cores",
                "clients CPU µs/msg",
                "clients RSS MiB",
            ],
            rows,
        )
    )
    if cats:
        out.append(
            Chart(
                "charts/resources-cpu.png",
                charts.bar_chart(cats, cpu, title="CPU at max rate", ylabel="CPU (cores busy)"),
                "CPU (cores busy) at max rate: broker vs client processes",
            )
        )
        out.append(
            Chart(
                "charts/resources-rss.png",
                charts.bar_chart(
                    cats, rss, title="Resident memory at max rate", ylabel="peak RSS (MiB)"
                ),
                "Resident memory (peak) at max rate",
            )
        )


SECTIONS: dict[str, Section] = {
    "latency": section_latency,
    "sweep": section_sweep,
    "max-rate": section_max,
    "scaling": section_scaling,
    "fan-out": section_fanout,
    "size": section_size,
    "backlog": section_backlog,
    "durability": section_durability,
    "replication": section_replication,
    "availability": section_availability,
}
"""The section writer of each workload kind (unknown kinds get :func:`section_latency`)."""
