"""Loss, duplicate and per-key order accounting from the benchmark's own counters.

Every message carries its producer number and a sequence number (0, 1, 2, ... per producer).
Each consumer process keeps a :class:`SeqTracker`; the runner merges the trackers of one
group with :func:`merge_counts` and compares them with what the producers had confirmed
(:func:`tally`). Nothing here asks the broker (end offsets are wrong on tansu).

Definitions:

- lost: a confirmed message no member of the group received;
- duplicated: deliveries beyond the first of one message within a group (at-least-once
  redelivery shows up here; it is not an error);
- out of order: within one consumer, a first delivery of key K from producer P whose
  sequence number is lower than one already seen for (P, K).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["SeqTracker", "Tally", "merge_counts", "tally"]


class SeqTracker:
    """Per-consumer record of which (producer, sequence) numbers arrived, and how often.

    Not thread-safe: callers serialize :meth:`record` (the worker holds a lock).
    """

    __slots__ = ("_last", "counts", "deliveries", "duplicates", "out_of_order")

    def __init__(self) -> None:
        self.counts: dict[int, bytearray] = {}
        """producer → one byte per sequence number: deliveries seen (capped at 255)."""
        self._last: dict[tuple[int, str], int] = {}
        self.deliveries = 0
        self.duplicates = 0
        self.out_of_order = 0

    def record(self, producer: int, seq: int, key: str | None) -> bool:
        """Count one delivery; return True when it is the first of this message here."""
        self.deliveries += 1
        counts = self.counts.get(producer)
        if counts is None:
            counts = self.counts[producer] = bytearray()
        if seq >= len(counts):
            counts.extend(bytes(max(seq + 1 - len(counts), len(counts) // 2 + 1024)))
        seen = counts[seq]
        if seen < 255:
            counts[seq] = seen + 1
        if seen:
            self.duplicates += 1
            return False
        if key is not None:
            lane = (producer, key)
            last = self._last.get(lane, -1)
            if seq < last:
                self.out_of_order += 1
            else:
                self._last[lane] = seq
        return True


def merge_counts(trackers: Iterable[Mapping[int, bytes | bytearray]]) -> dict[int, bytearray]:
    """Add up the per-producer delivery counts of several consumers (one group); capped at
    255 per message."""
    merged: dict[int, bytearray] = {}
    for counts in trackers:
        for producer, column in counts.items():
            into = merged.setdefault(producer, bytearray())
            if len(column) > len(into):
                into.extend(bytes(len(column) - len(into)))
            for seq, n in enumerate(column):
                if n:
                    into[seq] = min(255, into[seq] + n)
    return merged


@dataclass(frozen=True)
class Tally:
    """A group's verdict: ``expected`` confirmed messages, how many arrived at least once
    (``received``), ``lost``, ``duplicated`` extra deliveries, and ``unexpected`` messages
    (sequence numbers beyond what the producers reported as sent: a bookkeeping error)."""

    expected: int
    received: int
    lost: int
    duplicated: int
    unexpected: int


def tally(
    merged: Mapping[int, bytes | bytearray],
    sent: Mapping[int, int],
    failed: Mapping[int, Iterable[int]] | None = None,
) -> Tally:
    """Compare a group's merged counts with what each producer sent.

    Producer P published sequence numbers ``0 .. sent[P]-1``; all of them were confirmed
    except those in ``failed[P]`` (publishes whose future failed: never promised, so not
    counted as lost when absent).
    """
    failed_sets = {p: set(seqs) for p, seqs in (failed or {}).items()}
    expected = received = lost = duplicated = unexpected = 0
    for producer in set(sent) | set(merged):
        count = sent.get(producer, 0)
        column = merged.get(producer, b"")
        bad = failed_sets.get(producer, set())
        for seq in range(max(count, len(column))):
            n = column[seq] if seq < len(column) else 0
            if seq >= count:
                if n:
                    unexpected += 1
                continue
            if seq in bad:
                continue
            expected += 1
            if n:
                received += 1
                duplicated += n - 1
            else:
                lost += 1
    return Tally(expected, received, lost, duplicated, unexpected)
