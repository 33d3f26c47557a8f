"""``msgbus bench report``: turn a results folder into ``report.md`` and ``report.html``.

Runs of the same workload step, target and client are grouped; figures are the median of
the repeats with the min–max range. Each workload kind gets its table and chart; then CPU and
memory per broker, the correctness tally, and the closing verdict table on the claim "Kafka
performs and scales better than RabbitMQ and ActiveMQ". Every Kafka latency figure measured
on tansu is marked † with the caveat beside it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgbus.bench import charts, metrics
from msgbus.bench.compare import MIN_REPEATS, Comparison, compare
from msgbus.bench.render import Block, Bullets, Chart, Heading, Para, Table, to_html, to_markdown
from msgbus.bench.targets import TANSU_CAVEAT
from msgbus.bench.workloads import STANDARD

__all__ = ["Cell", "ReportData", "build_report", "load_results", "write_report"]

CLAIM = "Kafka performs and scales better than RabbitMQ and ActiveMQ"
DAGGER_NOTE = (
    "† Kafka "
    + TANSU_CAVEAT
    + ". Read its latencies as an upper bound for Kafka's, not as Kafka's."
)


@dataclass
class Cell:
    """The repeats of one (workload, step, target, client)."""

    workload: str
    kind: str
    step: int
    label: str
    target: str
    broker_kind: str
    client: str
    on_tansu: bool
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``target/client`` with † for tansu."""
        return f"{self.target}{'†' if self.on_tansu else ''}/{self.client}"

    @property
    def settings(self) -> dict[str, Any]:
        """The step's workload settings."""
        return self.runs[0]["settings"]

    def values(self, get: Callable[[dict[str, Any]], Any]) -> list[float]:
        """``get(run)`` for every repeat, NaN/None dropped."""
        out = []
        for run in self.runs:
            v = get(run)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                out.append(float(v))
        return out

    def median(self, get: Callable[[dict[str, Any]], Any]) -> float:
        """Median of ``get`` over the repeats (NaN when none)."""
        vs = self.values(get)
        return statistics.median(vs) if vs else float("nan")

    def fmt(self, get: Callable[[dict[str, Any]], Any], spec: str = ",.0f") -> str:
        """``median (min–max)``, or the single value, or ``–``."""
        vs = self.values(get)
        if not vs:
            return "–"
        med = format(statistics.median(vs), spec)
        if len(vs) == 1 or min(vs) == max(vs):
            return med
        return f"{med} ({format(min(vs), spec)}–{format(max(vs), spec)})"

    def histogram(self, name: str = "latency") -> Any:
        """All repeats' histograms of ``name`` merged."""
        return metrics.merge(r["histograms"][name] for r in self.runs)

    def kept_up(self) -> bool:
        """True when most repeats kept up with the offered rate."""
        flags = [bool(r["kept_up"]) for r in self.runs]
        return sum(flags) * 2 > len(flags)


@dataclass
class ReportData:
    """Everything loaded from a results folder."""

    manifest: dict[str, Any]
    cells: dict[tuple[str, int, str, str], Cell]

    def workloads(self) -> list[str]:
        """Workload names present, standard ones first in report order."""
        names = {c.workload for c in self.cells.values()}
        return [n for n in STANDARD if n in names] + sorted(names - set(STANDARD))

    def targets(self) -> list[str]:
        """Target names in run order."""
        order = list(self.manifest.get("targets", {}))
        seen = {c.target for c in self.cells.values()}
        return [t for t in order if t in seen] + sorted(seen - set(order))

    def of(self, workload: str, client: str | None = None) -> list[Cell]:
        """Cells of ``workload`` (optionally one client), by step then target order."""
        order = {t: i for i, t in enumerate(self.targets())}
        cells = [
            c
            for c in self.cells.values()
            if c.workload == workload and (client is None or c.client == client)
        ]
        return sorted(cells, key=lambda c: (c.step, order.get(c.target, 99), c.client))


def load_results(folder: Path) -> ReportData:
    """Read ``manifest.json`` and every ``runs/**/*.json`` under ``folder``.

    Raises FileNotFoundError when the folder holds no results.
    """
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    cells: dict[tuple[str, int, str, str], Cell] = {}
    for path in sorted((folder / "runs").glob("*/*.json")):
        run = json.loads(path.read_text())
        key = (run["workload"], run["step"], run["target"], run["client"])
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(
                run["workload"],
                run["kind"],
                run["step"],
                run["step_label"],
                run["target"],
                run["broker_kind"],
                run["client"],
                bool(run.get("on_tansu")),
            )
        cell.runs.append(run)
    if not cells:
        raise FileNotFoundError(f"no benchmark results under {folder / 'runs'}")
    return ReportData(manifest, cells)


# --------------------------------------------------------------------------- getters


def _lat(p: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r["latency"][p] if r["latency"]["count"] else None


def _consume(r: dict[str, Any]) -> float:
    return r["consume_rate"]


def _publish(r: dict[str, Any]) -> float:
    return r["publish_rate"]


def _delivered(r: dict[str, Any]) -> float:
    return r["consume_rate"] * len(r["groups"])


def _mbps(r: dict[str, Any]) -> float:
    size = r["settings"]["message_size"]
    size = 260 if isinstance(size, str) else size
    return r["consume_rate"] * size / 1e6


def _res(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r["resources"].get(name)


def _needs_dagger(cells: Iterable[Cell]) -> bool:
    return any(c.on_tansu for c in cells)


def _correct(c: Cell) -> str:
    lost = sum(r["lost"] for r in c.runs)
    dup = sum(r["duplicated"] for r in c.runs)
    ooo = sum(r["out_of_order"] for r in c.runs)
    return f"{lost}/{dup}/{ooo}"


# --------------------------------------------------------------------------- sections


def _latency_table(cells: Sequence[Cell], with_step: bool = False) -> Table:
    header = [
        *(["step"] if with_step else []),
        "broker/client",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "publish delay p99 ms",
        "publish→confirm p50 ms",
        "consumed msg/s",
        "lost/dup/out-of-order",
    ]
    rows = []
    for c in cells:
        rows.append(
            [
                *([c.label] if with_step else []),
                c.name,
                c.fmt(_lat("p50"), ".2f"),
                c.fmt(_lat("p90"), ".2f"),
                c.fmt(_lat("p99"), ".2f"),
                c.fmt(_lat("p99.9"), ".2f"),
                c.fmt(_lat("max"), ".1f"),
                c.fmt(lambda r: r["publish_delay"]["p99"], ".2f"),
                c.fmt(lambda r: r["publish_latency"]["p50"], ".2f"),
                c.fmt(_consume),
                _correct(c),
            ]
        )
    return Table(header, rows, DAGGER_NOTE if _needs_dagger(cells) else "")


def _rate_table(
    cells: Sequence[Cell], extra: Sequence[tuple[str, Callable[[Cell], str]]] = ()
) -> Table:
    header = [
        "step",
        "broker/client",
        "offered msg/s",
        "published msg/s",
        "consumed msg/s (per group)",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        *(h for h, _ in extra),
        "broker CPU (cores)",
        "lost/dup/ooo",
    ]
    rows = []
    for c in cells:
        rate = c.settings["producer_rate"]
        rows.append(
            [
                c.label,
                c.name,
                "max" if not rate else f"{rate:,.0f}",
                c.fmt(_publish),
                c.fmt(_consume),
                c.fmt(_lat("p50"), ".2f"),
                c.fmt(_lat("p99"), ".2f"),
                c.fmt(_lat("p99.9"), ".2f"),
                *(f(c) for _, f in extra),
                c.fmt(_res("broker_cpu_cores"), ".2f"),
                _correct(c),
            ]
        )
    return Table(header, rows, DAGGER_NOTE if _needs_dagger(cells) else "")


def _percentile_points(cell: Cell) -> list[tuple[float, float]]:
    h = cell.histogram()
    if not h.get_total_count():
        return []
    return [(p, h.get_value_at_percentile(p) / 1000.0) for p in charts.PERCENTILES]


def _caveat(cells: Iterable[Cell]) -> str:
    return "† tansu, not Apache Kafka: latency 3–15× Kafka's" if _needs_dagger(cells) else ""


def _section_latency(data: ReportData, name: str, out: list[Block]) -> None:
    cells = data.of(name)
    out.append(_latency_table(cells, with_step=len({c.step for c in cells}) > 1))
    curves = {c.name: _percentile_points(c) for c in cells}
    out.append(
        Chart(
            f"charts/{name}-percentiles.png",
            charts.percentile_chart(
                curves, title=f"{name}: latency by percentile", note=_caveat(cells)
            ),
            f"{name}: end-to-end latency by percentile (all repeats merged)",
        )
    )


def _section_sweep(data: ReportData, name: str, out: list[Block]) -> None:
    cells = data.of(name)
    out.append(_rate_table(cells, [("kept up", lambda c: "yes" if c.kept_up() else "no")]))
    for target in data.targets():
        mine = [c for c in cells if c.target == target]
        if not mine:
            continue
        series = {}
        for client in sorted({c.client for c in mine}):
            row = [c for c in mine if c.client == client]
            for p in ("p50", "p99", "p99.9"):
                series[f"{row[0].name} {p}"] = [
                    (c.median(_consume), c.median(_lat(p))) for c in row
                ]
        out.append(
            Chart(
                f"charts/{name}-{target}.png",
                charts.line_chart(
                    series,
                    title=f"{target}: throughput vs latency",
                    xlabel="consumed msg/s",
                    ylabel="latency ms (log)",
                    logy=True,
                    note=_caveat(mine),
                ),
                f"{name}: {target} throughput vs p50/p99/p99.9 latency",
            )
        )


def _section_max(data: ReportData, name: str, out: list[Block]) -> None:
    cells = data.of(name)
    out.append(_rate_table(cells, [("msgbus/raw", lambda c: _vs_raw(data, c))]))
    targets = data.targets()
    series = {}
    for client in ("msgbus", "raw"):
        for what, get in (("published", _publish), ("consumed", _consume)):
            vals = []
            for t in targets:
                cell = next((c for c in cells if c.target == t and c.client == client), None)
                vals.append(cell.median(get) if cell else float("nan"))
            if any(not math.isnan(v) for v in vals):
                series[f"{client} {what}"] = vals
    out.append(
        Chart(
            f"charts/{name}.png",
            charts.bar_chart(targets, series, title=f"{name}: msg/s", ylabel="msg/s"),
            f"{name}: published and consumed msg/s per broker, msgbus and raw client",
        )
    )


def _vs_raw(data: ReportData, c: Cell) -> str:
    if c.client != "msgbus":
        return ""
    raw = data.cells.get((c.workload, c.step, c.target, "raw"))
    if raw is None:
        return "–"
    a, b = c.median(_consume), raw.median(_consume)
    return f"{a / b:.2f}×" if b else "–"


def _section_scaling(data: ReportData, name: str, out: list[Block]) -> None:
    cells = data.of(name)
    out.append(_rate_table(cells))
    series: dict[str, list[tuple[float, float]]] = {}
    ideal: dict[str, list[tuple[float, float]]] = {}
    for target in data.targets():
        for client in ("msgbus", "raw"):
            row = [c for c in cells if c.target == target and c.client == client]
            if not row:
                continue
            pts = [(c.settings["consumers_per_group"], c.median(_consume)) for c in row]
            series[row[0].name] = pts
            base_n, base = pts[0]
            cost = row[0].settings["handler_cost_ms"]
            offered = row[0].settings["producer_rate"]
            line = []
            for (n, _), c in zip(pts, row, strict=True):
                value = base * n / base_n
                if cost:
                    value = 1000.0 / cost * n
                value = min(value, offered or value, c.median(_publish))
                line.append((n, value))
            if cost:
                ideal.setdefault("ideal (1000/cost × consumers, capped by the publish rate)", line)
            else:
                ideal[f"ideal {row[0].name} (capped by its publish rate)"] = line
    out.append(
        Chart(
            f"charts/{name}.png",
            charts.line_chart(
                series,
                title=f"{name}: consumed msg/s vs consumers",
                xlabel="consumers in the group (Kafka: = partitions)",
                ylabel="consumed msg/s",
                dashed=ideal,
            ),
            f"{name}: throughput against consumers, with the ideal linear line dashed",
        )
    )
    out.append(
        Para(
            "Ideal = linear from one consumer (or 1000 / handler cost per consumer), capped by "
            "what the producer published; the verdict's efficiency is the most-consumers "
            "throughput over that ideal. One producer process, the broker and up to eight "
            "consumer processes share two cores, so at max rate the machine is often the "
            "ceiling; the I/O-bound workload shows consumer scaling where the work is waiting."
        )
    )


def _section_fanout(data: ReportData, name: str, out: list[Block]) -> None:
    cells = data.of(name)
    out.append(_rate_table(cells, [("delivered msg/s (all groups)", lambda c: c.fmt(_delivered))]))
    series: dict[str, list[tuple[float, float]]] = {}
    lat: dict[str, list[tuple[float, float]]] = {}
    for target in data.targets():
        for client in ("msgbus", "raw"):
            row = [c for c in cells if c.target == target and c.client == client]
            if row:
                series[row[0].name] = [
                    (c.settings["consumer_groups"], c.median(_delivered)) for c in row
                ]
                lat[row[0].name] = [
                    (c.settings["consumer_groups"], c.median(_lat("p99"))) for c in row
                ]
    out.append(
        Chart(
            f"charts/{name}.png",
            charts.line_chart(
                series, title=f"{name}: deliveries/s", xlabel="groups", ylabel="msg/s delivered"
            ),
            f"{name}: messages delivered per second across all groups",
        )
    )
    out.append(
        Chart(
            f"charts/{name}-p99.png",
            charts.line_chart(
                lat,
                title=f"{name}: p99 latency",
                xlabel="groups",
                ylabel="p99 ms (log)",
                logy=True,
                note=_caveat(cells),
            ),
            f"{name}: p99 end-to-end latency against the number of groups",
        )
    )


def _section_size(data: ReportData, name: str, out: list[Block]) -> None:
    cells = data.of(name)
    out.append(_rate_table(cells, [("MB/s consumed", lambda c: c.fmt(_mbps, ".1f"))]))
    mb: dict[str, list[tuple[float, float]]] = {}
    rate: dict[str, list[tuple[float, float]]] = {}
    for target in data.targets():
        for client in ("msgbus", "raw"):
            row = [c for c in cells if c.target == target and c.client == client]
            if row:
                size = [c.settings["message_size"] for c in row]
                xs = [260 if isinstance(s, str) else s for s in size]
                mb[row[0].name] = [(x, c.median(_mbps)) for x, c in zip(xs, row, strict=True)]
                rate[row[0].name] = [(x, c.median(_consume)) for x, c in zip(xs, row, strict=True)]
    out.append(
        Chart(
            f"charts/{name}-mbps.png",
            charts.line_chart(
                mb, title=f"{name}: MB/s", xlabel="body bytes (log)", ylabel="MB/s", logx=True
            ),
            f"{name}: consumed MB/s against body size (account.created plotted at 260 B)",
        )
    )
    out.append(
        Chart(
            f"charts/{name}-rate.png",
            charts.line_chart(
                rate,
                title=f"{name}: msg/s",
                xlabel="body bytes (log)",
                ylabel="msg/s (log)",
                logx=True,
                logy=True,
            ),
            f"{name}: consumed msg/s against body size",
        )
    )


def _section_backlog(data: ReportData, name: str, out: list[Block]) -> None:
    cells = data.of(name)
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
            c.fmt(lambda r: r["backlog"]["peak"]),
            c.fmt(lambda r: r["backlog"]["drain_seconds"], ".2f"),
            c.fmt(lambda r: r["backlog"]["drain_rate"]),
            c.fmt(_lat("p99"), ".1f"),
            _correct(c),
        ]
        for c in cells
    ]
    out.append(Table(header, rows, DAGGER_NOTE if _needs_dagger(cells) else ""))
    series = {c.name: [(t, s - r) for t, s, r in c.runs[0]["backlog"]["series"]] for c in cells}
    out.append(
        Chart(
            f"charts/{name}.png",
            charts.line_chart(
                series,
                title=f"{name}: backlog (sent − received) over time",
                xlabel="seconds since the window opened",
                ylabel="messages",
            ),
            f"{name}: backlog build-up while the consumer is paused, then the drain (first repeat)",
        )
    )


def _section_durability(data: ReportData, name: str, out: list[Block]) -> None:
    cells = data.of(name)
    out.append(_rate_table(cells))
    notes = []
    for target, info in data.manifest.get("targets", {}).items():
        for profile, text in info.get("durability", {}).items():
            notes.append(f"**{target} {profile}**: {text}")
    if notes:
        out.append(Bullets(notes))
    targets = data.targets()
    p99: dict[str, list[float]] = {}
    rate: dict[str, list[float]] = {}
    for profile in ("D0", "D1"):
        p99[profile] = []
        rate[profile] = []
        for t in targets:
            fixed = [
                c
                for c in cells
                if c.target == t
                and c.client == "msgbus"
                and c.settings["durability"] == profile
                and c.settings["producer_rate"]
            ]
            top = [
                c
                for c in cells
                if c.target == t
                and c.client == "msgbus"
                and c.settings["durability"] == profile
                and not c.settings["producer_rate"]
            ]
            p99[profile].append(fixed[0].median(_lat("p99")) if fixed else float("nan"))
            rate[profile].append(top[0].median(_consume) if top else float("nan"))
    out.append(
        Chart(
            f"charts/{name}-p99.png",
            charts.bar_chart(
                targets,
                p99,
                title="D0 vs D1: p99 at the fixed rate",
                ylabel="p99 ms",
                note=_caveat(cells),
            ),
            "D0 vs D1: p99 latency at the fixed rate (msgbus; no bar = profile not offered)",
        )
    )
    out.append(
        Chart(
            f"charts/{name}-max.png",
            charts.bar_chart(targets, rate, title="D0 vs D1: max msg/s", ylabel="msg/s"),
            "D0 vs D1: consumed msg/s at max rate (msgbus)",
        )
    )


SECTIONS: dict[str, Callable[[ReportData, str, list[Block]], None]] = {
    "latency": _section_latency,
    "sweep": _section_sweep,
    "max-rate": _section_max,
    "scaling": _section_scaling,
    "fan-out": _section_fanout,
    "size": _section_size,
    "backlog": _section_backlog,
    "durability": _section_durability,
}


def _section_resources(data: ReportData, out: list[Block]) -> None:
    rows = []
    cats = []
    cpu: dict[str, list[float]] = {"broker CPU cores": [], "clients CPU cores": []}
    rss: dict[str, list[float]] = {"broker RSS MiB": [], "clients RSS MiB": []}
    for workload in ("latency", "max-rate"):
        for c in data.of(workload, "msgbus"):
            rows.append(
                [
                    workload,
                    c.name,
                    c.fmt(_consume),
                    c.fmt(_res("broker_cpu_cores"), ".2f"),
                    c.fmt(_res("broker_cpu_us_per_msg"), ".0f"),
                    c.fmt(_res("broker_rss_mib"), ".0f"),
                    c.fmt(_res("clients_cpu_cores"), ".2f"),
                    c.fmt(_res("clients_rss_mib"), ".0f"),
                ]
            )
            if workload == "max-rate":
                cats.append(c.target)
                cpu["broker CPU cores"].append(c.median(_res("broker_cpu_cores")))
                cpu["clients CPU cores"].append(c.median(_res("clients_cpu_cores")))
                rss["broker RSS MiB"].append(c.median(_res("broker_rss_mib")))
                rss["clients RSS MiB"].append(c.median(_res("clients_rss_mib")))
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
                "clients RSS MiB",
            ],
            rows,
        )
    )
    if cats:
        out.append(
            Chart(
                "charts/resources-cpu.png",
                charts.bar_chart(cats, cpu, title="CPU at max rate", ylabel="cores"),
                "CPU (cores busy) at max rate: broker vs client processes",
            )
        )
        out.append(
            Chart(
                "charts/resources-rss.png",
                charts.bar_chart(cats, rss, title="Memory at max rate", ylabel="MiB"),
                "Resident memory (peak) at max rate",
            )
        )


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class _Metric:
    label: str
    higher_better: bool
    value: Callable[[list[Cell]], float]
    latency: bool = False


def _last(get: Callable[[dict[str, Any]], Any]) -> Callable[[list[Cell]], float]:
    return lambda cells: cells[-1].median(get) if cells else float("nan")


def _first(get: Callable[[dict[str, Any]], Any]) -> Callable[[list[Cell]], float]:
    return lambda cells: cells[0].median(get) if cells else float("nan")


def _sweep_best(cells: list[Cell]) -> float:
    kept = [c.settings["producer_rate"] for c in cells if c.kept_up()]
    return max(kept) if kept else 0.0


def _d1_max(cells: list[Cell]) -> float:
    top = [c for c in cells if c.settings["durability"] == "D1" and not c.settings["producer_rate"]]
    return top[0].median(_consume) if top else float("nan")


def _efficiency(cells: list[Cell]) -> float:
    if len(cells) < 2:
        return float("nan")
    n0, n1 = cells[0].settings["consumers_per_group"], cells[-1].settings["consumers_per_group"]
    r0, r1 = cells[0].median(_consume), cells[-1].median(_consume)
    cost = cells[-1].settings["handler_cost_ms"]
    ideal = 1000.0 / cost * n1 if cost else r0 * n1 / n0
    # Consumers cannot take more than was published: cap the ideal at the publish rate.
    ideal = min(ideal, cells[-1].median(_publish))
    return r1 / ideal if ideal else float("nan")


METRICS: dict[str, _Metric] = {
    "latency": _Metric("p99 latency at the fixed rate (ms)", False, _first(_lat("p99")), True),
    "sweep": _Metric("highest offered rate kept up (msg/s)", True, _sweep_best),
    "max-rate": _Metric("consumed msg/s at max rate", True, _first(_consume)),
    "scaling": _Metric("consumed msg/s with the most consumers", True, _last(_consume)),
    "fan-out": _Metric("deliveries/s with the most groups", True, _last(_delivered)),
    "size": _Metric("MB/s at the largest size", True, _last(_mbps)),
    "backlog": _Metric(
        "consume rate while draining (msg/s)", True, _first(lambda r: r["backlog"]["drain_rate"])
    ),
    "durability": _Metric("consumed msg/s at max rate with D1 (fsync)", True, _d1_max),
}


def _verdict_row(data: ReportData, workload: str) -> list[str] | None:
    cells = data.of(workload, "msgbus")
    if not cells:
        return None
    metric = METRICS.get(cells[0].kind)
    if metric is None:
        return None
    scores: dict[str, float] = {}
    for target in data.targets():
        mine = [c for c in cells if c.target == target]
        if mine and mine[0].broker_kind != "memory":
            v = metric.value(mine)
            if not math.isnan(v):
                scores[target] = v
    if workload == "scaling" or cells[0].settings.get("handler_cost_ms"):
        eff = {}
        for target in scores:
            eff[target] = _efficiency([c for c in cells if c.target == target])
    else:
        eff = {}
    if not scores:
        return [workload, metric.label, "–", "–", "–", "no broker results"]
    ranked = sorted(scores, key=scores.get, reverse=metric.higher_better)  # type: ignore[arg-type]
    leader = ranked[0]
    fmt = ".2f" if metric.latency else ",.0f"

    def ratio(a: float, b: float) -> float:
        if metric.higher_better:
            return a / b if b else float("inf")
        return b / a if a else float("inf")

    compared: dict[str, Comparison] = {}

    def versus(target: str) -> Comparison:
        # the margin and the verdict may ask for the same pair: bootstrap it once
        if target not in compared:
            compared[target] = compare(
                [c for c in cells if c.target == leader],
                [c for c in cells if c.target == target],
                metric.value,
                higher_better=metric.higher_better,
            )
        return compared[target]

    margin = "only broker"
    if len(ranked) > 1:
        runner = ranked[1]
        margin = f"{versus(runner).describe()} over {runner}"
    kinds = {c.target: c.broker_kind for c in cells}
    kafka = [t for t in scores if kinds.get(t) == "kafka"]
    tansu = any(c.on_tansu for c in cells)
    values = "; ".join(
        f"{t}{'†' if tansu and kinds.get(t) == 'kafka' else ''} {format(scores[t], fmt)}"
        + (f" (efficiency {eff[t]:.0%})" if t in eff and not math.isnan(eff[t]) else "")
        for t in ranked
    )
    kafka_ran = any(c.broker_kind == "kafka" for c in cells)
    if not kafka and kafka_ran and cells[0].kind == "durability":
        verdict = "Kafka has no fsync-before-confirm profile here (D1 not run): no comparison"
    elif not kafka:
        verdict = "no Kafka result: neither supports nor contradicts"
    elif len(scores) < 2:
        verdict = "only Kafka measured: no comparison"
    elif leader in kafka and not (ahead := versus(ranked[1])).conclusive:
        verdict = (
            f"inconclusive: Kafka ahead of {ranked[1]} by {ahead.describe()}; neither supports "
            "nor contradicts"
        )
    elif leader not in kafka and not (behind_by := versus(kafka[0])).conclusive:
        verdict = (
            f"inconclusive: Kafka behind {leader} by {behind_by.describe()}; neither supports "
            "nor contradicts"
        )
    elif leader in kafka:
        verdict = "supports the claim"
        if metric.latency and tansu:
            verdict += " (on tansu; Apache Kafka would lead by more)"
    else:
        k = kafka[0]
        behind = ratio(scores[leader], scores[k])
        verdict = f"contradicts the claim: Kafka {behind:.2f}× behind {leader}"
        if metric.latency and tansu:
            if behind > 15:
                verdict += "; even 15× lower (Apache Kafka vs tansu) would still trail"
            elif behind > 3:
                verdict += "; with Apache Kafka's 3–15× lower latency it might lead: inconclusive"
            else:
                verdict += (
                    "; Apache Kafka's 3–15× lower latency would likely reverse this: inconclusive"
                )
    return [workload, metric.label, values, leader, margin, verdict]


# --------------------------------------------------------------------------- assembly


def _manifest_blocks(data: ReportData) -> list[Block]:
    m = data.manifest
    out: list[Block] = [Heading(2, "Environment")]
    machine = m.get("machine", {})
    py = m.get("python", {})
    mem = machine.get("memory_bytes")
    rows = [
        [
            "machine",
            f"{machine.get('cpus')} CPUs ({machine.get('cpu_model', '?')}), "
            f"{(mem or 0) / 2**30:.1f} GiB RAM, {machine.get('platform', '?')}",
        ],
        [
            "Python",
            f"{py.get('implementation', '')} {py.get('version', '?')}",
        ],
        ["packages", ", ".join(f"{k} {v or 'absent'}" for k, v in m.get("packages", {}).items())],
        *_invocation_rows(m),
        ["repeats", str(m.get("repeats", "?"))],
        ["started / finished", f"{m.get('started_at', '?')} / {m.get('finished_at', '?')}"],
        ["Kafka stand-in", m.get("kafka_note") or "no Kafka target"],
    ]
    out.append(Table(["", ""], rows))
    trows = []
    for name, info in m.get("targets", {}).items():
        trows.append(
            [
                name + ("†" if info.get("on_tansu") else ""),
                info.get("description", "")
                + (
                    f" — **no msgbus runs** ({info['msgbus_missing']}): raw client only"
                    if info.get("msgbus_missing")
                    else ""
                ),
                f"`{info.get('url', '')}`",
                info.get("durability", {}).get("D0", ""),
                info.get("durability", {}).get("D1", ""),
            ]
        )
    out.append(Heading(3, "Brokers and durability profiles"))
    out.append(
        Table(
            [
                "target",
                "what ran",
                "URL (password hidden)",
                "D0 (no fsync per message)",
                "D1 (fsync before confirm)",
            ],
            trows,
            DAGGER_NOTE if any(i.get("on_tansu") for i in m.get("targets", {}).values()) else "",
        )
    )
    return out


def _invocation_rows(m: dict[str, Any]) -> list[list[str]]:
    """One row per command that wrote into the results: the command, the source commit (and
    whether its tree was dirty) and the load average before and after."""
    invocations = m.get("invocations") or [{"command": c} for c in m.get("commands", [])]
    if not invocations:
        invocations = [{"command": m.get("command", "?")}]
    rows = []
    for number, inv in enumerate(invocations, 1):
        source = inv.get("source") or {}
        commit = source.get("commit")
        where = "source unknown"
        if commit:
            where = f"at {commit[:10]}" + (" **(dirty tree)**" if source.get("dirty") else "")
        before, after = inv.get("load_before"), inv.get("load_after")
        load = ""
        if before or after:
            load = f"; load average {_load(before)} before, {_load(after)} after"
        label = "command" if len(invocations) == 1 else f"command {number}"
        rows.append([label, f"`{inv.get('command') or '?'}` {where}{load}"])
    return rows


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "?"


def _staleness(data: ReportData, checkout: Path | None = None) -> list[Block]:
    """Warnings when the code measured is not the code of this checkout: results without a
    recorded commit, measured on a dirty tree, mixing commits, or older than the code."""
    from msgbus.bench.provenance import stale_paths

    m = data.manifest
    sources = [inv.get("source") or {} for inv in m.get("invocations", [])] or [
        m.get("source") or {}
    ]
    commits = list(dict.fromkeys(s.get("commit") for s in sources))
    if None in commits or not commits:
        return [
            Para(
                "**Provenance unknown.** These results do not record the commit they were "
                "measured at (or not for every command that wrote them); they may not describe "
                "the code of this checkout."
            )
        ]
    notes = []
    if len(commits) > 1:
        notes.append(
            "they mix runs made at different commits ("
            + ", ".join(str(c)[:10] for c in commits)
            + ")"
        )
    dirty = sum(len(s.get("dirty_paths", [])) for s in sources if s.get("dirty"))
    if dirty:
        notes.append(
            f"they were measured on a tree with uncommitted changes to {dirty} file(s) under "
            "`msgbus/` or `backends/`"
        )
    changed = sorted({p for c in commits for p in (stale_paths(str(c), checkout) or [])})
    if changed:
        shown = ", ".join(f"`{p}`" for p in changed[:6]) + (" …" if len(changed) > 6 else "")
        notes.append(
            f"{len(changed)} file(s) under `msgbus/` or `backends/` changed since the "
            f"results' commit: {shown}"
        )
    if not notes:
        return []
    return [Para("**Stale results.** " + "; ".join(notes) + ". Re-run before quoting them.")]


def _correctness(data: ReportData) -> list[Block]:
    rows = []
    for target in data.targets():
        for client in ("msgbus", "raw"):
            cells = [c for c in data.cells.values() if c.target == target and c.client == client]
            if not cells:
                continue
            runs = [r for c in cells for r in c.runs]
            rows.append(
                [
                    target,
                    client,
                    str(len(runs)),
                    f"{sum(r['sent'] for r in runs):,}",
                    str(sum(r["lost"] for r in runs)),
                    str(sum(r["duplicated"] for r in runs)),
                    str(sum(r["out_of_order"] for r in runs)),
                    str(sum(r["failed"] for r in runs)),
                ]
            )
    summary = data.manifest.get("summary", {})
    out: list[Block] = [
        Heading(2, "Correctness in every run"),
        Para(
            "From the benchmark's own sequence numbers (never from broker offsets): lost = "
            "confirmed but never received by a group; duplicated = extra deliveries "
            "(at-least-once redelivery); out of order = a key's message arriving after a later "
            "one of the same producer, within one consumer."
        ),
        Table(
            [
                "target",
                "client",
                "runs",
                "messages sent",
                "lost",
                "duplicated",
                "out of order",
                "publish failures",
            ],
            rows,
        ),
    ]
    failed = summary.get("failed_runs") or []
    skipped = summary.get("skipped") or []
    if failed:
        out.append(Para("Runs that failed (no result):"))
        out.append(Bullets([f"`{f}`" for f in failed]))
    if skipped:
        out.append(
            Para(f"{len(skipped)} runs skipped because an earlier step of the sweep fell behind.")
        )
    return out


def build_report(data: ReportData) -> list[Block]:
    """The report as blocks (see :mod:`msgbus.bench.render`)."""
    title = "msgbus broker comparison"
    blocks: list[Block] = [Heading(1, title)]
    quick = data.manifest.get("quick")
    blocks.append(
        Para(
            f"Does the claim hold that *{CLAIM}*? The same bank workload, through the same "
            "msgbus code, on every broker, next to each broker's raw Python client. One "
            "machine, one broker node each, no replication, Python clients: read the figures "
            "as what these brokers do for a Python service on a small box, not as their "
            "ceilings. Method and how to read it: `docs/benchmark.md`."
            + (" **This is a --quick smoke run: too short to compare brokers.**" if quick else "")
        )
    )
    blocks += _staleness(data)
    if any(c.on_tansu for c in data.cells.values()):
        blocks.append(Para("**Kafka caveat.** " + DAGGER_NOTE))
    blocks += _manifest_blocks(data)
    for workload in data.workloads():
        cells = data.of(workload)
        kind = cells[0].kind
        s = cells[0].settings
        blocks.append(Heading(2, f"Workload: {workload}"))
        desc = s.get("description") or ""
        blocks.append(
            Para(
                f"{desc}. Warm-up {s['warmup']:g} s, window {s['duration']:g} s, "
                f"{s['producers']} producer(s), message {s['message_size']}, "
                f"keys {s['key_distribution']} over {s['keys']}, durability {s['durability']} "
                "unless the step says otherwise. Figures: median of the repeats (min–max)."
            )
        )
        SECTIONS.get(kind, _section_latency)(data, workload, blocks)
    _section_resources(data, blocks)
    blocks += _correctness(data)
    blocks += verdict_blocks(data)
    return blocks


def verdict_blocks(data: ReportData, level: int = 2) -> list[Block]:
    """The verdict: a heading (at ``level``), how to read it, one row per workload, caveats."""
    rows = [r for w in data.workloads() if (r := _verdict_row(data, w)) is not None]
    blocks: list[Block] = [Heading(level, f"Verdict: does \u201c{CLAIM}\u201d hold here?")]
    blocks.append(
        Para(
            "Per workload, through msgbus (the same application code on every broker); "
            "`memory://` is an in-process baseline, not a broker, and is left out of the "
            "ranking. Margin = leader's figure over the runner-up's (for latency: the "
            "runner-up's over the leader's), with the 95 % bootstrap interval of that ratio "
            "over the repeats. A comparison is *inconclusive* when the two brokers' "
            "per-repeat figures overlap, when the interval reaches 1, or with fewer than "
            f"{MIN_REPEATS} repeats (`msgbus/bench/compare.py`)."
        )
    )
    blocks.append(
        Table(
            ["workload", "measure", "figures (best first)", "leader", "margin", "the claim"],
            rows,
            DAGGER_NOTE if any(c.on_tansu for c in data.cells.values()) else "",
        )
    )
    blocks.append(
        Para(
            "Caveats: one 2-core machine shared by the broker, the producers and the "
            "consumers (CPU contention shapes every max-rate figure); one broker node, no "
            "replication (Kafka's acks=all means one replica here); Python clients, whose "
            "ceilings (kafka-python ~18k/s produce, pika ~21k/s, stomp.py with receipts "
            "~3.4k/s persistent) are often the limit rather than the broker — the raw-client "
            "rows show which; tansu stood in for Kafka (see †)."
        )
    )
    return blocks


def write_report(results: Path, output: Path) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``charts/*.png`` into ``output``; return
    their paths. Raises FileNotFoundError when ``results`` holds no runs."""
    data = load_results(Path(results))
    blocks = build_report(data)
    output = Path(output)
    (output / "charts").mkdir(parents=True, exist_ok=True)
    paths = []
    for block in blocks:
        if isinstance(block, Chart):
            path = output / block.filename
            path.write_bytes(block.png)
            paths.append(path)
    md = output / "report.md"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    html_path = output / "report.html"
    html_path.write_text(to_html(blocks, "msgbus broker comparison"), encoding="utf-8")
    return [md, html_path, *paths]
