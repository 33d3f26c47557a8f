"""Confirming a Kafka subscription's commits (``Subscription.confirm_settled``).

A settled delivery's offset is committed by the subscription's consumer thread on its next
round (asynchronously): a process killed right after ``ack()`` may not have committed it.
:func:`confirm_committed` waits until the group's committed offsets, as the broker answers
them, reached every partition's commit point as it was when called. ``msgbus.dlq``'s
redrive calls it after each removal, so a redrive killed at any moment sends at most one
dead letter twice.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from msgbus.errors import BrokerUnavailable, MsgBusError

if TYPE_CHECKING:
    from .common import KafkaSubscriptionBase

__all__ = ["confirm_committed"]


def confirm_committed(sub: KafkaSubscriptionBase, timeout: float) -> bool:
    """Block until the broker holds commits up to each live partition's commit point (never
    past an unsettled record: see ``PartitionState.commit_point``); True then, and at once
    for a private (group-less) subscription, which commits nothing. Raises
    :class:`~msgbus.BrokerUnavailable` when not confirmed within ``timeout`` s. Any thread;
    one admin round trip per look (every 10-50 ms)."""
    if sub.group is None:
        return True
    backend = sub._backend
    with sub._lock:
        wanted = {s.partition: s.commit_point() for s in sub._states.values() if not s.dead}
        for state in sub._states.values():
            if not state.dead and state.needs_commit():
                sub._dirty.add(state)
    if not wanted:
        return True
    keys = {p: backend._partition_key(sub.topic, p) for p in wanted}
    group_id = backend.options.group_id(sub.group, sub.topic)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            with backend._topics_lock:
                committed = backend._group_offsets(group_id, list(keys.values()))
        except MsgBusError:
            raise
        except Exception as exc:
            raise backend._translate(exc, f"asking the commits of group {group_id!r}") from exc
        if all((committed.get(keys[p]) or 0) >= point for p, point in wanted.items()):
            return True
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(
                f"Kafka group {group_id!r}: commits not confirmed within {timeout:g}s"
            )
        time.sleep(delay)  # the consumer thread commits on its next round: no event to wait on
        delay = min(0.05, delay * 2)
