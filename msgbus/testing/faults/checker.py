"""A Jepsen-style checker for queue histories: every confirmed publish against every delivery.

A :class:`History` records, thread-safely and with monotonic timestamps, what a workload did:
each publish (``key``, ``seq`` = its number within that key) and whether the broker confirmed
it, each delivery (``key``, ``seq``, which consumer), and each injected fault with its time.
:func:`check` then reports (:class:`Report`):

* **lost**: confirmed, never delivered (the one number that must be zero on a durable profile);
* **duplicated**: deliveries beyond the first of a message (allowed by at-least-once);
* **reordered**: per key, first deliveries whose ``seq`` is lower than one delivered before it
  for that key (counted only when order per key is promised: see ``order_expected``);
* **unconfirmed_delivered**: publishes that failed or never got an answer, yet arrived (fine);
* **unexpected**: deliveries of something never published (a bug in the bus or the workload);
* **recovery**: per fault, seconds from the fault's start until the first delivery of a message
  published at or after that start — the time the pipeline needed to work end to end again.
  A fault recorded with ``from_end=True`` (one whose first moments may still let messages
  through, such as a rolling stop of every node) counts only messages published at or after
  its end, so its recovery includes the whole fault.

A report is never a success when a check could not run: no confirmed publish, a fault with no
delivery after it (recovery unknown) or a history not closed (``History.finish``) each make
``ok`` False with the reason in ``problems``.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fault", "History", "Report", "check"]


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``name`` (e.g. ``kill node 1``), ``start`` and ``end`` (monotonic
    seconds; ``end`` is when the injector finished it, e.g. after the node restarted);
    ``from_end``: recovery counts messages published from ``end`` on (see :func:`check`)."""

    name: str
    start: float
    end: float
    from_end: bool = False


@dataclass
class _Publish:
    key: str
    seq: int
    at: float
    confirmed: bool | None = None  # None: no answer yet


class History:
    """What a workload did, recorded from any thread (see the module docstring).

    Messages are identified by ``(key, seq)``; ``seq`` counts from 0 per key and must be
    unique per key (the publisher's job). Timestamps are ``time.monotonic()`` values.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._publishes: dict[tuple[str, int], _Publish] = {}
        self._deliveries: list[tuple[str, int, str, float]] = []
        self._faults: list[Fault] = []
        self._finished = False

    def published(self, key: str, seq: int, at: float | None = None) -> None:
        """A publish of ``(key, seq)`` was handed to the bus (not yet confirmed)."""
        with self._lock:
            self._publishes[(key, seq)] = _Publish(key, seq, time.monotonic() if at is None else at)

    def confirmed(self, key: str, seq: int, ok: bool = True) -> None:
        """The broker confirmed ``(key, seq)`` (``ok=False``: the publish failed)."""
        with self._lock:
            entry = self._publishes.get((key, seq))
            if entry is not None:
                entry.confirmed = ok

    def delivered(self, key: str, seq: int, consumer: str = "", at: float | None = None) -> None:
        """A consumer's handler received ``(key, seq)``."""
        with self._lock:
            self._deliveries.append((key, seq, consumer, time.monotonic() if at is None else at))

    def fault(
        self, name: str, start: float, end: float | None = None, *, from_end: bool = False
    ) -> None:
        """Record a fault injected from ``start`` to ``end`` (None: now); ``from_end``: see
        :class:`Fault`."""
        with self._lock:
            stop = time.monotonic() if end is None else end
            self._faults.append(Fault(name, start, stop, from_end))

    def finish(self) -> None:
        """Mark the history complete (the workload drained); :func:`check` requires it."""
        with self._lock:
            self._finished = True

    def snapshot(
        self,
    ) -> tuple[list[_Publish], list[tuple[str, int, str, float]], list[Fault], bool]:
        """Copies of publishes, deliveries, faults and the finished flag (for :func:`check`)."""
        with self._lock:
            pubs = [_Publish(p.key, p.seq, p.at, p.confirmed) for p in self._publishes.values()]
            return pubs, list(self._deliveries), list(self._faults), self._finished

    def delivered_count(self) -> int:
        """How many deliveries were recorded so far (duplicates included)."""
        with self._lock:
            return len(self._deliveries)

    def missing_confirmed(self) -> int:
        """How many confirmed publishes have not been delivered yet (for drain waits)."""
        with self._lock:
            seen = {(k, s) for k, s, _c, _t in self._deliveries}
            return sum(1 for kseq, p in self._publishes.items() if p.confirmed and kseq not in seen)


@dataclass
class Report:
    """The outcome of :func:`check`. ``ok`` is True only when every check ran and nothing
    confirmed was lost (and, with ``order_expected``, nothing was reordered)."""

    published: int = 0
    confirmed: int = 0
    failed: int = 0
    unanswered: int = 0
    delivered: int = 0
    lost: list[tuple[str, int]] = field(default_factory=list)
    duplicated: int = 0
    reordered: int = 0
    unconfirmed_delivered: int = 0
    unexpected: int = 0
    faults: list[Fault] = field(default_factory=list)
    recovery: list[float | None] = field(default_factory=list)
    order_expected: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check ran, nothing confirmed was lost, nothing unexpected arrived
        and (if order was expected) nothing was reordered."""
        return not self.problems

    @property
    def recovery_p50(self) -> float | None:
        """Median recovery time in seconds over the faults that recovered (None: none)."""
        known = [r for r in self.recovery if r is not None]
        return statistics.median(known) if known else None

    @property
    def recovery_max(self) -> float | None:
        """Longest recovery time in seconds (None: no fault recovered)."""
        known = [r for r in self.recovery if r is not None]
        return max(known) if known else None

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain data (for JSON), lost messages as ``[key, seq]`` pairs."""
        return {
            "ok": self.ok,
            "published": self.published,
            "confirmed": self.confirmed,
            "failed": self.failed,
            "unanswered": self.unanswered,
            "delivered": self.delivered,
            "lost": len(self.lost),
            "lost_sample": [list(x) for x in self.lost[:20]],
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "order_expected": self.order_expected,
            "unconfirmed_delivered": self.unconfirmed_delivered,
            "unexpected": self.unexpected,
            "faults": [
                {"name": f.name, "seconds": round(f.end - f.start, 3), "recovery": r}
                for f, r in zip(self.faults, self.recovery, strict=True)
            ],
            "recovery_p50": self.recovery_p50,
            "recovery_max": self.recovery_max,
            "problems": list(self.problems),
        }

    def summary(self) -> str:
        """A few human lines: the counts, recovery p50/max, and every problem."""

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}s"

        lines = [
            f"published {self.published}, confirmed {self.confirmed}, failed {self.failed}, "
            f"unanswered {self.unanswered}, delivered {self.delivered}",
            f"lost {len(self.lost)}, duplicated {self.duplicated}, reordered {self.reordered}"
            f"{'' if self.order_expected else ' (order per key not promised)'}, "
            f"unconfirmed-but-delivered {self.unconfirmed_delivered}",
            f"faults {len(self.faults)}, recovery p50 {fmt(self.recovery_p50)}, "
            f"max {fmt(self.recovery_max)}",
        ]
        lines += [f"PROBLEM: {p}" for p in self.problems]
        lines.append("result: OK" if self.ok else "result: FAILED")
        return "\n".join(lines)


def check(history: History, *, order_expected: bool = False) -> Report:
    """Check ``history`` (see the module docstring); ``order_expected``: count reordering
    per key as a problem (the backend promises per-key order)."""
    pubs, deliveries, faults, finished = history.snapshot()
    report = Report(order_expected=order_expected, faults=faults)
    by_id = {(p.key, p.seq): p for p in pubs}
    report.published = len(pubs)
    report.confirmed = sum(1 for p in pubs if p.confirmed)
    report.failed = sum(1 for p in pubs if p.confirmed is False)
    report.unanswered = sum(1 for p in pubs if p.confirmed is None)
    report.delivered = len(deliveries)

    counts = Counter((k, s) for k, s, _c, _t in deliveries)
    report.duplicated = sum(n - 1 for n in counts.values() if n > 1)
    report.unexpected = sum(n for kseq, n in counts.items() if kseq not in by_id)
    report.unconfirmed_delivered = sum(
        1 for kseq in counts if kseq in by_id and not by_id[kseq].confirmed
    )
    report.lost = sorted(kseq for kseq, p in by_id.items() if p.confirmed and kseq not in counts)

    highest: dict[str, int] = defaultdict(lambda: -1)
    seen: set[tuple[str, int]] = set()
    for key, seq, _consumer, _at in sorted(deliveries, key=lambda d: d[3]):
        if (key, seq) in seen:
            continue
        seen.add((key, seq))
        if seq < highest[key]:
            report.reordered += 1
        highest[key] = max(highest[key], seq)

    for fault in faults:
        since = fault.end if fault.from_end else fault.start
        after = [
            at
            for key, seq, _c, at in deliveries
            if (key, seq) in by_id and by_id[(key, seq)].at >= since
        ]
        report.recovery.append(round(min(after) - fault.start, 3) if after else None)

    if not finished:
        report.problems.append("history not finished: the workload did not drain")
    if report.confirmed == 0:
        report.problems.append("no publish was confirmed: nothing could be checked")
    if report.lost:
        report.problems.append(f"{len(report.lost)} confirmed message(s) lost")
    if report.unexpected:
        report.problems.append(f"{report.unexpected} delivery(ies) of unknown messages")
    if order_expected and report.reordered:
        report.problems.append(f"{report.reordered} message(s) out of order per key")
    for fault, recovery in zip(faults, report.recovery, strict=True):
        if recovery is None:
            report.problems.append(
                f"fault {fault.name!r}: no message published after it was delivered "
                "(recovery could not be measured)"
            )
    return report
