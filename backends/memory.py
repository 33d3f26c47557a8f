"""In-process broker: fast, exact, and gone when the process exits.

Features
    Consumer groups (each group is a queue; its members compete), strict per-key order
    across the members of a group (one unacknowledged message per key at a time), requeue,
    redelivery of unacknowledged messages when a member closes. Not persistent, no replay,
    members must live in the same process. Publishing never polls or blocks: the future is
    resolved when ``publish`` returns. Receivers are woken by a condition variable, not a
    poll loop. Acknowledgements are queued and applied by the group's next receive or close
    (at once when a member is waiting for one), so acking never waits for a publisher.

URL form
    ``memory://`` (the process-wide default broker) or ``memory://NAME``: every bus that
    names the same broker in one process shares its topics and groups.

Options
    ``max_message_bytes`` (int, default 16 MiB): larger bodies raise ``MessageTooLarge``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, ClassVar

from msgbus.backend import Backend, Delivery, Features, Subscription
from msgbus.backendkit import (
    ResolvedFuture,
    check_publish,
    parse_options,
    require_positive,
    with_message_id,
)
from msgbus.errors import BusClosed, ConfigurationError
from msgbus.url import BusURL

__all__ = ["MemoryBackend", "MemoryBroker", "MemoryOptions"]

_RESOLVED = ResolvedFuture()


@dataclass(frozen=True)
class MemoryOptions:
    """Options of the memory backend (see the module docstring)."""

    max_message_bytes: int = 16 * 1024 * 1024
    #: accepted like on every backend; the in-process broker is always reachable at once
    connect_timeout: float = 10.0


class _Stored:
    """A published message as the broker keeps it (shared by every group)."""

    __slots__ = ("body", "headers", "key", "seq", "topic")

    def __init__(
        self, topic: str, body: bytes, headers: dict[str, str], key: str | None, seq: int
    ) -> None:
        self.topic = topic
        self.body = body
        self.headers = headers
        self.key = key
        self.seq = seq


class _Group:
    """One consumer group's queue. Every method runs under the broker's lock.

    Keyed messages wait in per-key queues; a key is in ``ready`` exactly when it has pending
    messages and none in flight, so one member at a time holds a key and order is strict.
    Unkeyed messages sit in ``ready`` themselves.
    """

    def __init__(self, lock: threading.Lock) -> None:
        self.ready: deque[Any] = deque()
        self.pending: dict[str, deque[tuple[_Stored, bool]]] = {}
        self.in_flight: set[str] = set()
        self.members: set[_MemorySubscription] = set()
        self.changed = threading.Condition(lock)
        self.waiting = 0
        # Acknowledgements not applied yet: (member, message). Members append here without
        # the lock; the group's next receive, requeue or close applies them, or the acking
        # member at once when another waits in receive (see _MemorySubscription._settle).
        self.acks: deque[tuple[_MemorySubscription, _Stored]] = deque()

    def put(self, stored: _Stored) -> None:
        """Append a newly published message."""
        key = stored.key
        if key is None:
            self.ready.append((stored, False))
        else:
            queue = self.pending.get(key)
            if queue is None:
                queue = self.pending[key] = deque()
            queue.append((stored, False))
            if len(queue) == 1 and key not in self.in_flight:
                self.ready.append(key)
        if self.waiting:
            self.changed.notify_all()

    def requeue(self, stored: _Stored) -> None:
        """Put an in-flight message back at the front of the queue, marked redelivered.

        A key has at most one message in flight per group, so it is not in ``ready`` now.
        """
        key = stored.key
        if key is None:
            self.ready.appendleft((stored, True))
        else:
            self.in_flight.discard(key)
            queue = self.pending.get(key)
            if queue is None:
                queue = self.pending[key] = deque()
            queue.appendleft((stored, True))
            self.ready.appendleft(key)
        if self.waiting:
            self.changed.notify_all()

    def take(self) -> tuple[_Stored, bool]:
        slot = self.ready.popleft()
        if isinstance(slot, tuple):
            return slot
        queue = self.pending[slot]
        item = queue.popleft()
        if not queue:
            del self.pending[slot]
        self.in_flight.add(slot)
        return item

    def apply_acks(self) -> None:
        """Apply the queued acknowledgements: free prefetch room, release their keys."""
        acks = self.acks
        applied = False
        while acks:
            member, stored = acks.popleft()
            if member.unacked.pop(stored.seq, None) is None:
                continue  # its member closed meanwhile: it was already handed back
            applied = True
            key = stored.key
            if key is not None:
                self.in_flight.discard(key)
                if key in self.pending:
                    self.ready.append(key)
        if applied and self.waiting:
            self.changed.notify_all()


class MemoryBroker:
    """A named in-process broker: topics, each with its consumer groups. Thread-safe."""

    _instances: ClassVar[dict[str, MemoryBroker]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.topics: dict[str, dict[str, _Group]] = {}
        self._seq = itertools.count(1)
        self._private = itertools.count(1)

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """Return the process-wide broker called ``name``, creating it on first use."""
        with cls._instances_lock:
            broker = cls._instances.get(name)
            if broker is None:
                broker = cls._instances[name] = cls(name)
            return broker

    def publish(self, topic: str, body: bytes, key: str | None, headers: dict[str, str]) -> None:
        """Append the message to every group of ``topic`` (none yet: it is dropped, like a
        topic exchange with no bound queue)."""
        with self.lock:
            groups = self.topics.get(topic)
            if groups:
                stored = _Stored(topic, body, headers, key, next(self._seq))
                for group in groups.values():
                    group.put(stored)

    def join(self, topic: str, group_name: str | None) -> tuple[str, _Group]:
        """Return the group (created empty, i.e. starting at the end of the topic, if new)."""
        with self.lock:
            groups = self.topics.setdefault(topic, {})
            if group_name is None:
                group_name = f"\0private-{next(self._private)}"
            group = groups.get(group_name)
            if group is None:
                group = groups[group_name] = _Group(self.lock)
            return group_name, group

    def backlog(self, topic: str, group_name: str) -> int | None:
        """Messages waiting in the group's queue (in-flight ones not counted); None if no
        such group."""
        with self.lock:
            group = self.topics.get(topic, {}).get(group_name)
            if group is None:
                return None
            unkeyed = sum(1 for slot in group.ready if isinstance(slot, tuple))
            return unkeyed + sum(len(queue) for queue in group.pending.values())

    def drop_group(self, topic: str, group_name: str) -> None:
        """Forget a private group (its pending messages go with it)."""
        with self.lock:
            self.topics.get(topic, {}).pop(group_name, None)


class _MemorySubscription(Subscription):
    def __init__(self, broker: MemoryBroker, topic: str, group: str | None, prefetch: int) -> None:
        self.topic = topic
        self.group = group
        self._broker = broker
        self._group_name, self._group = broker.join(topic, group)
        self._prefetch = max(1, prefetch)
        self.unacked: dict[int, _Stored] = {}
        self._closed = False
        with broker.lock:
            self._group.members.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        group = self._group
        deadline: float | None = None
        taken: list[tuple[_Stored, bool]] = []
        with self._broker.lock:
            while True:
                if self._closed:
                    return []
                if group.acks:
                    group.apply_acks()
                room = self._prefetch - len(self.unacked)
                if group.ready and room > 0:
                    unacked = self.unacked
                    for _ in range(min(max_messages, room, len(group.ready))):
                        item = group.take()
                        unacked[item[0].seq] = item[0]
                        taken.append(item)
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                remaining = deadline - now
                if remaining <= 0:
                    return []
                group.waiting += 1
                try:
                    if group.acks:
                        continue  # an ack arrived since the top of the loop: apply it first
                    group.changed.wait(remaining)
                finally:
                    group.waiting -= 1
        settle = self._settle
        return [
            Delivery(
                stored.topic,
                stored.body,
                stored.headers,
                stored.key,
                settle,
                redelivered=redelivered,
                token=stored,
            )
            for stored, redelivered in taken
        ]

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        stored: _Stored = delivery.token
        group = self._group
        lock = self._broker.lock
        if ack or not requeue:
            # Acks are applied lazily, by the next receive, requeue or close in the group:
            # nobody needs one before then, and taking the lock here while a publisher holds
            # it makes the two threads hand the GIL back and forth (a convoy that cost two
            # thirds of the throughput on two cores). A member waiting in receive needs it
            # now: it raises ``waiting`` before it looks at ``acks``, so one of the two sees
            # the other.
            group.acks.append((self, stored))
            if group.waiting:
                with lock:
                    group.apply_acks()
            return
        with lock:
            group.apply_acks()
            if self.unacked.pop(stored.seq, None) is None:
                return  # closed meanwhile: it was already handed back
            group.requeue(stored)

    def confirm_settled(self, timeout: float) -> bool:
        """Apply the queued acknowledgements now (in-process: nothing to wait for)."""
        with self._broker.lock:
            self._group.apply_acks()
        return True

    def close(self) -> None:
        with self._broker.lock:
            if self._closed:
                return
            self._closed = True
            group = self._group
            group.apply_acks()  # what was acknowledged before close stays acknowledged
            group.members.discard(self)
            for stored in sorted(self.unacked.values(), key=lambda s: s.seq, reverse=True):
                group.requeue(stored)
            self.unacked.clear()
            group.changed.notify_all()
        if self.group is None:
            self._broker.drop_group(self.topic, self._group_name)


class MemoryBackend(Backend):
    """The in-process backend (see the module docstring for features, URL and options)."""

    schemes = ("memory",)
    features = Features(
        consumer_groups=True,
        per_key_order=True,
        persistent=False,
        requeue=True,
        replay=False,
        cross_process=False,
        max_message_bytes=MemoryOptions.max_message_bytes,
    )
    extra = ""
    reports_consumer_lag = True

    def __init__(self, broker: MemoryBroker, options: MemoryOptions) -> None:
        self.broker = broker
        self.options = options
        self._max_bytes = options.max_message_bytes
        self._subscriptions: set[_MemorySubscription] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: BusURL, **options: Any) -> MemoryBackend:
        """Attach to the named in-process broker of ``url`` (created on first use)."""
        if len(url.hosts) > 1 or url.path or url.username or url.password:
            raise ConfigurationError(
                f"a memory URL is memory:// or memory://NAME, not {url.render()!r}"
            )
        opts = parse_options(MemoryOptions, url, options, backend="memory")
        require_positive(opts, "max_message_bytes", backend="memory")
        name = url.hosts[0].host if url.hosts else ""
        return cls(MemoryBroker.named(name), opts)

    def publish(
        self, topic: str, body: bytes, *, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        check_publish("memory", closed=self._closed, body=body, max_message_bytes=self._max_bytes)
        self.broker.publish(topic, body, key, dict(with_message_id(headers)))
        return _RESOLVED

    def flush(self, timeout: float | None = None) -> None:
        return None

    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, from_beginning: bool = False
    ) -> Subscription:
        if self._closed:
            raise BusClosed("the memory backend is closed")
        if from_beginning:
            raise ConfigurationError(
                "the memory backend keeps no log: from_beginning is not supported"
            )
        sub = _MemorySubscription(self.broker, topic, group, prefetch)
        self._subscriptions.add(sub)
        return sub

    def close(self, timeout: float | None = None) -> None:
        self._closed = True
        for sub in list(self._subscriptions):
            sub.close()
        self._subscriptions.clear()

    def consumer_lag(self, topic: str, group: str) -> int | None:
        """Messages waiting in ``group``'s queue (see :meth:`Backend.consumer_lag`)."""
        return self.broker.backlog(topic, group)

    def topics(self) -> list[str]:
        """Every topic that has (or had) a group on this broker."""
        with self.broker.lock:
            return sorted(self.broker.topics)

    def describe(self) -> str:
        return f"memory broker {self.broker.name or '(default)'!r} (in-process)"
