"""The results a report is drawn from: runs grouped into cells, and how a cell is read.

A :class:`Cell` holds the repeats of one (workload, step, target, client, driver). A row of a
table shows **one** repeat — the cell's representative, the median repeat by one key
(consumed msg/s at max rate, p99 latency at a fixed rate) — so the figures of a row belong
together; the min–max over every repeat is printed beside each figure. Fields a results
folder may lack (older schemas) read as ``None`` and render as ``n/a``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgbus.bench import metrics
from msgbus.bench.workloads import STANDARD

__all__ = [
    "MIN_P999_SAMPLES",
    "NA",
    "Cell",
    "Getter",
    "ReportData",
    "consumed",
    "delivered",
    "lat",
    "load_results",
    "mbps",
    "published",
    "res",
]

NA = "n/a"
"""What a figure the results do not hold renders as."""

MIN_P999_SAMPLES = 10_000
"""Fewer latency samples than this in a run: its p99.9 is reported as "too few samples"
(at 10,000 samples the p99.9 rests on the 10 slowest)."""

Getter = Callable[[dict[str, Any]], Any]

_PRODUCTS = {
    "kafka": "Apache Kafka",
    "rabbitmq": "RabbitMQ",
    "activemq": "ActiveMQ",
    "memory": "memory",
    "kombu": "kombu",
}


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def lat(p: str, summary: str = "latency") -> Getter:
    """The ``p`` percentile (ms) of a run's ``summary`` (None without samples)."""

    def get(r: dict[str, Any]) -> Any:
        s = r.get(summary) or {}
        return s.get(p) if s.get("count") else None

    return get


def consumed(r: dict[str, Any]) -> Any:
    """Consumed msg/s per group inside the window."""
    return r.get("consume_rate")


def published(r: dict[str, Any]) -> Any:
    """Published msg/s inside the window."""
    return r.get("publish_rate")


def delivered(r: dict[str, Any]) -> Any:
    """Deliveries per second summed over every group."""
    rate = r.get("consume_rate")
    return None if rate is None else rate * max(1, len(r.get("groups") or [None]))


def body_bytes(settings: dict[str, Any]) -> int:
    """The message body's size in bytes (the bank event counts as 260 B)."""
    size = settings.get("message_size")
    return size if isinstance(size, int) else 260


def mbps(r: dict[str, Any]) -> Any:
    """Consumed MB/s (10^6 bytes)."""
    rate = r.get("consume_rate")
    return None if rate is None else rate * body_bytes(r.get("settings") or {}) / 1e6


def res(name: str) -> Getter:
    """A ``resources`` figure of a run (None when the results lack it)."""
    return lambda r: (r.get("resources") or {}).get(name)


@dataclass
class Cell:
    """The repeats of one (workload, step, target, client, driver)."""

    workload: str
    kind: str
    step: int
    label: str
    target: str
    broker_kind: str
    client: str
    on_tansu: bool
    driver: str | None = None
    profile: str = "single"
    nodes: int = 1
    runs: list[dict[str, Any]] = field(default_factory=list)
    display: str = ""

    @property
    def product(self) -> str:
        """What ran: ``Apache Kafka``, ``tansu``, ``RabbitMQ`` … (never "Kafka" for tansu)."""
        if self.on_tansu:
            return "tansu"
        return _PRODUCTS.get(self.broker_kind, self.broker_kind)

    @property
    def broker(self) -> str:
        """The product with its Kafka driver and node count, e.g.
        ``Apache Kafka (confluent), 3 nodes``."""
        text = self.product
        if self.broker_kind == "kafka" and self.driver:
            text += f" ({self.driver})"
        if self.nodes > 1:
            text += f", {self.nodes} nodes"
        return text

    @property
    def name(self) -> str:
        """``broker/client`` as the tables print it."""
        return self.display or f"{self.broker}/{self.client}"

    @property
    def broker_name(self) -> str:
        """:attr:`name` without the client: the broker as this report tells it apart."""
        return self.name.rsplit("/", 1)[0]

    @property
    def settings(self) -> dict[str, Any]:
        """The step's workload settings."""
        return self.runs[0].get("settings") or {}

    @property
    def fixed_rate(self) -> bool:
        """True when the step offers a fixed rate (False: as fast as possible)."""
        return bool(self.settings.get("producer_rate"))

    @property
    def replicated(self) -> bool:
        """True for a replicated (or failover) profile rather than one node."""
        return self.profile != "single" or self.nodes > 1

    def values(self, get: Getter) -> list[float]:
        """``get(run)`` of every repeat that has it."""
        return [v for r in self.runs if (v := _number(get(r))) is not None]

    def median(self, get: Getter) -> float:
        """Median of ``get`` over the repeats (NaN when none has it)."""
        vs = self.values(get)
        return statistics.median(vs) if vs else math.nan

    def rep_key(self) -> Getter:
        """The key the representative repeat is chosen by: p99 at a fixed rate, consumed
        msg/s at max rate."""
        return lat("p99") if self.fixed_rate else consumed

    @property
    def rep(self) -> dict[str, Any]:
        """The median repeat by :meth:`rep_key` (the lower middle one of an even count)."""
        key = self.rep_key()
        keyed = [(v, i) for i, r in enumerate(self.runs) if (v := _number(key(r))) is not None]
        if not keyed:
            return self.runs[0]
        keyed.sort()
        return self.runs[keyed[(len(keyed) - 1) // 2][1]]

    def fmt(self, get: Getter, spec: str = ",.0f") -> str:
        """The representative repeat's figure with the min–max of all repeats in brackets;
        ``n/a`` when the results lack it."""
        v = _number(get(self.rep))
        vs = self.values(get)
        if v is None:
            return NA if not vs else f"{NA} ({format(min(vs), spec)}–{format(max(vs), spec)})"
        text = format(v, spec)
        if len(vs) > 1 and min(vs) != max(vs):
            text += f" ({format(min(vs), spec)}–{format(max(vs), spec)})"
        return text

    def samples(self, summary: str = "latency") -> int | None:
        """Latency samples in the representative repeat (None when unknown)."""
        n = _number((self.rep.get(summary) or {}).get("count"))
        return None if n is None else int(n)

    def fmt_pct(self, p: str, summary: str = "latency") -> str:
        """A percentile like :meth:`fmt`, but ``too few samples`` for p99.9 below
        :data:`MIN_P999_SAMPLES` (its range then covers only repeats with enough)."""
        if p != "p99.9":
            return self.fmt(lat(p, summary), ".2f")
        n = self.samples(summary)
        if n is None or n < MIN_P999_SAMPLES:
            return "too few samples"
        enough = [
            r for r in self.runs if (r.get(summary) or {}).get("count", 0) >= MIN_P999_SAMPLES
        ]
        vs = [v for r in enough if (v := _number(lat(p, summary)(r))) is not None]
        v = _number(lat(p, summary)(self.rep))
        if v is None:
            return NA
        text = format(v, ".2f")
        if len(vs) > 1 and min(vs) != max(vs):
            text += f" ({min(vs):.2f}–{max(vs):.2f})"
        return text

    def histogram(self, name: str = "latency") -> Any:
        """All repeats' histograms of ``name`` merged (empty when the results have none)."""
        return metrics.merge((r.get("histograms") or {}).get(name, "") for r in self.runs)

    def kept_up(self) -> bool:
        """True when most repeats kept up with the offered rate."""
        flags = [bool(r.get("kept_up")) for r in self.runs]
        return sum(flags) * 2 > len(flags)

    def backlog_latency(self) -> bool:
        """True when this row's end-to-end times are mostly time queued in a backlog: the
        step runs as fast as possible, or its representative repeat fell behind (the run's
        own ``latency_includes_backlog`` when it records one)."""
        flag = self.rep.get("latency_includes_backlog")
        if flag is not None:
            return bool(flag)
        return not self.fixed_rate or not self.rep.get("kept_up", True)

    def correctness(self) -> str:
        """``lost/duplicated/out-of-order`` summed over the repeats."""
        lost = sum(r.get("lost", 0) for r in self.runs)
        dup = sum(r.get("duplicated", 0) for r in self.runs)
        ooo = sum(r.get("out_of_order", 0) for r in self.runs)
        return f"{lost}/{dup}/{ooo}"


CellKey = tuple[str, int, str, str, str]


@dataclass
class ReportData:
    """Everything loaded from a results folder: the manifest and the cells."""

    manifest: dict[str, Any]
    cells: dict[CellKey, Cell]

    def __post_init__(self) -> None:
        # two targets of the same product (e.g. two RabbitMQ URLs) keep apart by target name
        by_name: dict[str, set[str]] = {}
        for c in self.cells.values():
            by_name.setdefault(f"{c.broker}/{c.client}", set()).add(c.target)
        for c in self.cells.values():
            base = f"{c.broker}/{c.client}"
            c.display = base if len(by_name[base]) == 1 else f"{c.broker} [{c.target}]/{c.client}"

    @property
    def cpus(self) -> int:
        """The machine's CPU count (2 when the manifest does not say)."""
        return int((self.manifest.get("machine") or {}).get("cpus") or 2)

    def workloads(self) -> list[str]:
        """Workload names present: in the order the manifest lists them (the run's order,
        so a report does not change when the shipped set does), then the standard set's
        order, then by name."""
        names = {c.workload for c in self.cells.values()}
        order = [*(self.manifest.get("workloads") or []), *STANDARD]
        known = [n for n in dict.fromkeys(order) if n in names]
        return known + sorted(names - set(known))

    def targets(self) -> list[str]:
        """Target names in run order."""
        order = list(self.manifest.get("targets", {}))
        seen = {c.target for c in self.cells.values()}
        return [t for t in order if t in seen] + sorted(seen - set(order))

    def of(self, workload: str, client: str | None = None) -> list[Cell]:
        """Cells of ``workload`` (optionally one client), by step, target order, then client
        (so a broker's raw row sits under its msgbus row)."""
        order = {t: i for i, t in enumerate(self.targets())}
        cells = [
            c
            for c in self.cells.values()
            if c.workload == workload and (client is None or c.client == client)
        ]
        return sorted(
            cells,
            key=lambda c: (c.step, order.get(c.target, 99), c.driver or "", c.client != "msgbus"),
        )

    def partner(self, cell: Cell, client: str) -> Cell | None:
        """The cell of the same step and target run by ``client`` (e.g. the raw row)."""
        return self.cells.get((cell.workload, cell.step, cell.target, client, cell.driver or ""))

    def any_tansu(self) -> bool:
        """True when any result was measured on tansu."""
        return any(c.on_tansu for c in self.cells.values())


def load_results(folder: Path) -> ReportData:
    """Read ``manifest.json`` and every ``runs/**/*.json`` under ``folder``.

    Raises FileNotFoundError when the folder holds no results."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    cells: dict[CellKey, Cell] = {}
    for path in sorted((folder / "runs").glob("*/*.json")):
        run = json.loads(path.read_text())
        driver = run.get("driver")
        key = (run["workload"], run["step"], run["target"], run["client"], driver or "")
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(
                run["workload"],
                run.get("kind", "latency"),
                run["step"],
                run.get("step_label", str(run["step"])),
                run["target"],
                run.get("broker_kind", run["target"]),
                run["client"],
                bool(run.get("on_tansu")),
                driver,
                run.get("profile") or "single",
                int(run.get("nodes") or 1),
            )
        cell.runs.append(run)
    if not cells:
        raise FileNotFoundError(f"no benchmark results under {folder / 'runs'}")
    return ReportData(manifest, cells)
