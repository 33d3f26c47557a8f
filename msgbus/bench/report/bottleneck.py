"""Which side limited a run: the broker's CPU, the clients' CPU, the disk, or the box.

Derived from the run's own figures with fixed, stated thresholds (:data:`RULES`), never
written by hand:

1. a fixed-rate step that kept up was limited by nothing: it did what was asked;
2. the box: its busy cores over the window (``resources.box_cpu_cores``, from /proc/stat)
   reach :data:`BOX_BUSY` of its CPUs;
3. the disk: durability D1 (an fsync before each confirm) and the box not saturated;
4. one side: the broker's or the clients' CPU over the window is at least
   :data:`SIDE_RATIO` × the other's (the same ratio as their CPU per message);
5. otherwise shared: neither side dominates and the box has room (flow control, waiting).

Older results without ``box_cpu_cores`` use broker + clients CPU as a lower bound of the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from msgbus.bench.report.data import Cell

__all__ = ["BOX_BUSY", "OTHER_BUSY", "RULES", "SIDE_RATIO", "Bottleneck", "bottleneck", "sentence"]

BOX_BUSY = 0.9
"""The box counts as saturated at this share of its CPUs busy."""
OTHER_BUSY = 0.2
"""Cores used by other jobs on the box (``resources.other_cpu_cores``) worth naming."""
SIDE_RATIO = 2.0
"""One side counts as the limit when its CPU is at least this many times the other's."""

RULES = (
    "Bottleneck rules (applied to each row's representative repeat): a fixed-rate step that "
    "kept up → none; else the box's busy cores ≥ "
    f"{BOX_BUSY:.0%} of its CPUs → the box; else durability D1 → the disk (an fsync per "
    f"confirm); else the broker's or the clients' CPU ≥ {SIDE_RATIO:g}× the other's → that "
    "side; else shared (neither dominates, the box has room: waiting or flow control)."
)
"""The rules as the report states them."""


@dataclass(frozen=True)
class Bottleneck:
    """What limited one cell: ``side`` is one of ``none``, ``box``, ``disk``, ``broker``,
    ``client``, ``shared``, ``unknown``; ``why`` the figures behind it."""

    side: str
    why: str

    def text(self, cpus: int) -> str:
        """The side in words, with its figures."""
        words = {
            "none": "none (kept up with the offered rate)",
            "box": f"the {cpus}-core box",
            "disk": "the disk (fsync before each confirm)",
            "broker": "broker CPU",
            "client": "client CPU",
            "shared": "shared (neither side dominates)",
            "unknown": "unknown (no CPU figures)",
        }[self.side]
        return f"{words} ({self.why})" if self.why else words


def _f(r: dict[str, Any], name: str) -> float | None:
    v = (r.get("resources") or {}).get(name)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def box_cores(run: dict[str, Any]) -> tuple[float | None, bool]:
    """The box's busy cores and whether that is exact (False: broker + clients, a lower
    bound, for results that predate ``box_cpu_cores``)."""
    box = _f(run, "box_cpu_cores")
    if box is not None:
        return box, True
    broker, clients = _f(run, "broker_cpu_cores"), _f(run, "clients_cpu_cores")
    if broker is None and clients is None:
        return None, False
    return (broker or 0.0) + (clients or 0.0), False


def bottleneck(cell: Cell, cpus: int) -> Bottleneck:
    """Classify ``cell``'s representative repeat by the rules of this module."""
    run = cell.rep
    cpus = int((run.get("resources") or {}).get("box_cpus") or cpus)
    box, exact = box_cores(run)
    broker, clients = _f(run, "broker_cpu_cores"), _f(run, "clients_cpu_cores")
    box_text = "" if box is None else f"box {'' if exact else '≥ '}{box:.2f} of {cpus} cores"
    other = _f(run, "other_cpu_cores")
    if other is not None and other >= OTHER_BUSY:
        box_text += f", {other:.2f} of them other jobs"
    if cell.fixed_rate and run.get("kept_up", True):
        return Bottleneck("none", box_text)
    if box is not None and box >= BOX_BUSY * cpus:
        return Bottleneck("box", box_text)
    if cell.settings.get("durability") == "D1":
        return Bottleneck("disk", box_text)
    if broker is None or clients is None:
        return Bottleneck("unknown", box_text)
    cpu = f"clients {clients:.2f} vs broker {broker:.2f} cores; {box_text}"
    if clients >= SIDE_RATIO * broker:
        return Bottleneck("client", cpu)
    if broker >= SIDE_RATIO * clients:
        return Bottleneck("broker", cpu)
    return Bottleneck("shared", cpu)


def heaviest(cells: Sequence[Cell]) -> list[Cell]:
    """Per target, driver and client, the last (heaviest) step it ran."""
    last: dict[tuple[str, str, str], Cell] = {}
    for c in cells:
        key = (c.target, c.driver or "", c.client)
        if key not in last or c.step > last[key].step:
            last[key] = c
    return list(last.values())


def sentence(cells: Sequence[Cell], cpus: int) -> str:
    """One sentence for a workload: what limited each broker through msgbus at its heaviest
    step (raw-client rows are in the table; the sentence speaks for the msgbus rows)."""
    rows = [c for c in heaviest(cells) if c.client == "msgbus"] or heaviest(cells)
    if not rows:
        return ""
    steps = len({c.step for c in cells}) > 1
    parts = [
        f"{c.name}{f' at {c.label}' if steps else ''}: {bottleneck(c, cpus).text(cpus)}"
        for c in rows
    ]
    return "**Bottleneck** (rules in [How to read it](#how-to-read-it)): " + "; ".join(parts) + "."
