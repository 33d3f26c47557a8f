"""The backend SPI: what a broker module implements so the :class:`~msgbus.Bus` can drive it.

A backend is a class with ``schemes``, ``features`` and ``extra`` class attributes, a
``from_url`` constructor, ``publish``/``flush``/``subscribe``/``close``. Everything users see
(serialization, retries, dead letters, threads, signals) lives above this interface, in
``msgbus.bus``, so every backend gets it for free. What broker backends share beyond this
interface (the publish window, the outage policy, ``DeliveryBuffer``, option parsing, the
AMQP mapping) is the toolkit :mod:`msgbus.backendkit`; its names that used to live here are
still importable from this module.

Threading contract: ``publish`` and ``flush`` may be called from any thread at once.
A :class:`Subscription` is driven by one thread (``receive``), while ``ack``/``nack`` of its
deliveries may come from other threads and ``close`` from any thread (it wakes a blocked
``receive``).
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar

from msgbus.errors import BusClosed, MsgBusError, NotSupported

if TYPE_CHECKING:
    from msgbus.url import BusURL

__all__ = ["Backend", "Delivery", "Features", "Subscription"]


@dataclasses.dataclass(frozen=True)
class Features:
    """What a backend guarantees; the conformance suite reads these to decide what to assert.

    - ``consumer_groups``: every group gets every message; members of a group share them.
    - ``per_key_order``: messages with one key reach the handler in publish order, even with
      several members in a group (the bus keeps per-key order inside one member anyway).
    - ``persistent``: a confirmed publish survives a broker restart.
    - ``native_dead_letter``: the broker itself can dead-letter (informational; the bus always
      publishes to ``<topic>.dlq`` itself).
    - ``requeue``: ``nack(requeue=True)`` makes the broker deliver the message again.
    - ``replay``: a new group can start from the beginning of the topic (``from_beginning``).
    - ``cross_process``: members of one group may live in different processes.
    - ``max_message_bytes``: the largest body the backend accepts by default (None: no limit
      known).
    """

    consumer_groups: bool = True
    per_key_order: bool = False
    persistent: bool = False
    native_dead_letter: bool = False
    requeue: bool = True
    replay: bool = False
    cross_process: bool = True
    max_message_bytes: int | None = None


class Delivery:
    """One message handed out by a :class:`Subscription`, not yet settled.

    ``ack()`` tells the broker the message is done; ``nack(requeue=True)`` hands it back for
    redelivery, ``nack(requeue=False)`` drops it. Settling twice, or after the subscription
    was closed, is a no-op (the broker redelivers what was unsettled at close).
    ``native_id`` is a broker-assigned id used when the publisher set none.
    """

    __slots__ = ("_settle", "body", "headers", "key", "native_id", "redelivered", "token", "topic")

    def __init__(
        self,
        topic: str,
        body: bytes,
        headers: dict[str, str],
        key: str | None,
        settle: Callable[[Delivery, bool, bool], None],
        *,
        redelivered: bool = False,
        native_id: str | None = None,
        token: Any = None,
    ) -> None:
        self.topic = topic
        self.body = body
        self.headers = headers
        self.key = key
        self.redelivered = redelivered
        self.native_id = native_id
        self.token = token
        self._settle: Callable[[Delivery, bool, bool], None] | None = settle

    def ack(self) -> None:
        """Acknowledge: the broker will not deliver this message to this group again."""
        settle, self._settle = self._settle, None
        if settle is not None:
            settle(self, True, False)

    def nack(self, requeue: bool = True) -> None:
        """Reject: with ``requeue`` the broker redelivers it (to any member), else drops it."""
        settle, self._settle = self._settle, None
        if settle is not None:
            settle(self, False, requeue)

    @property
    def settled(self) -> bool:
        """True once ``ack`` or ``nack`` was called."""
        return self._settle is None

    def __repr__(self) -> str:
        return f"<Delivery topic={self.topic!r} key={self.key!r} bytes={len(self.body)}>"


class Subscription(ABC):
    """A consumer's attachment to ``topic`` as a member of ``group``; ready when returned.

    Deliveries not acknowledged when the subscription closes (or its process dies) are
    redelivered to another member of the group.
    """

    topic: str
    group: str | None

    @abstractmethod
    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Return up to ``max_messages`` deliveries, waiting at most ``timeout`` seconds.

        Returns an empty list on timeout or once the subscription is closed. Raises
        :class:`~msgbus.BrokerUnavailable` when the connection is lost beyond recovery.
        """

    @abstractmethod
    def close(self) -> None:
        """Detach; wake a blocked ``receive``; unsettled deliveries go back to the broker.

        Idempotent and callable from any thread.
        """

    def connection_problem(self) -> BaseException | None:
        """Why this subscription's own broker connection is down (reconnecting), or None.

        For backends with a connection per subscription; None also means "cannot tell" (the
        default) and the backend's :meth:`Backend.connection_problem` is consulted. Cheap.
        """
        return None

    def confirm_settled(self, timeout: float) -> bool:
        """Block until the broker has applied every ``ack``/``nack`` of this subscription so
        far (a process killed after this returns True does not get them again); True then.
        False (the default) where the backend cannot tell. Raises
        :class:`~msgbus.BrokerUnavailable` when not confirmed within ``timeout`` seconds.
        Used by :func:`msgbus.dlq.redrive` to remove one dead letter at a time."""
        return False

    def __iter__(self) -> Iterator[Delivery]:
        """Yield deliveries one at a time until the subscription is closed."""
        while not self.closed:
            yield from self.receive(100, 0.5)

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once ``close`` was called (or the backend was closed)."""


class Backend(ABC):
    """A broker driver. Subclasses set ``schemes``, ``features`` and ``extra``.

    Use as a context manager or call ``close()``; after ``close`` every method raises
    :class:`~msgbus.BusClosed`.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    features: Features = Features()
    extra: ClassVar[str] = ""
    reports_consumer_lag: bool = False
    """True when :meth:`consumer_lag` can answer (for a named group of this backend)."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: BusURL, **options: Any) -> Backend:
        """Build a connected backend from ``url`` and keyword ``options``.

        Unknown options raise :class:`~msgbus.UnknownOption` listing the valid ones; an
        unreachable broker raises :class:`~msgbus.BrokerUnavailable` within a bounded time.
        """

    @abstractmethod
    def publish(
        self, topic: str, body: bytes, *, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        """Send ``body``; the returned future resolves once the broker holds it durably.

        The future fails with a :class:`~msgbus.PublishError` subclass (or
        ``BrokerUnavailable``) if the broker refuses or loses the message. Raises
        :class:`~msgbus.MessageTooLarge` at once for oversized bodies. Thread-safe.
        """

    def publish_many(
        self, topic: str, messages: Sequence[tuple[bytes, str | None, Mapping[str, str]]]
    ) -> list[Future[None]]:
        """Send each ``(body, key, headers)`` of ``messages`` to ``topic``, in order.

        Returns one future per message, in the same order, each with :meth:`publish`'s
        contract. A message refused at once (oversized, ...) gets a failed future and the
        others are still sent, so a partial failure says which; :class:`~msgbus.BusClosed`
        raises. The default is a loop over :meth:`publish`; backends override it where the
        driver can do better (librdkafka's queue). Thread-safe.
        """
        from msgbus.futures import ResolvedFuture

        futures: list[Future[None]] = []
        for body, key, headers in messages:
            try:
                futures.append(self.publish(topic, body, key=key, headers=headers))
            except BusClosed:
                raise
            except MsgBusError as exc:
                futures.append(ResolvedFuture(exception=exc))
        return futures

    @abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Wait until every publish so far has resolved; raise ``TimeoutError`` if not in time."""

    @abstractmethod
    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, from_beginning: bool = False
    ) -> Subscription:
        """Join ``group`` on ``topic`` and return once ready to receive.

        ``group=None`` asks for a private group that exists only as long as this subscription
        (an exclusive auto-delete queue, a unique consumer group id, ...). A message published
        after this returns reaches this group. A new group starts at the end of the topic
        unless ``from_beginning`` (only where ``features.replay``). ``prefetch`` bounds the
        unacknowledged deliveries the broker hands this member.
        """

    @abstractmethod
    def close(self, timeout: float | None = None) -> None:
        """Flush pending publishes (up to ``timeout``), close subscriptions and connections.

        Idempotent.
        """

    def publish_routed(
        self, topic: str, body: bytes, *, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        """Like :meth:`publish`, but the future fails with :class:`~msgbus.PublishError`
        when no group's storage took the message (AMQP ``mandatory``) instead of the broker
        dropping it. Used for dead letters (:mod:`msgbus.deadletters`).

        The default is :meth:`publish`: right for backends whose topics keep every message
        (a log) or that cannot tell; backends that can tell override it.
        """
        return self.publish(topic, body, key=key, headers=headers)

    def browse(self, topic: str, group: str, *, prefetch: int) -> Subscription | None:
        """A subscription that reads ``group``'s waiting messages on ``topic`` without
        consuming them and ends (``receive`` returns ``[]`` at once) after the snapshot; None
        (the default) where the broker has no browser. Settling its deliveries does nothing."""
        return None

    def publish_delayed(
        self,
        topic: str,
        body: bytes,
        *,
        key: str | None,
        headers: Mapping[str, str],
        delay: float,
    ) -> Future[None]:
        """Like :meth:`publish`, but the broker delivers the message ``delay`` seconds from
        now (the future resolves once the broker holds it). The default raises
        :class:`~msgbus.NotSupported`: only backends whose broker schedules natively
        override it."""
        raise NotSupported(f"{self.describe()} cannot delay a message natively (publish delay=...)")

    durable_retries: ClassVar[bool] = False
    """True when :meth:`publish_retry` is implemented (``retry_mode="durable"``)."""

    def publish_retry(
        self,
        topic: str,
        group: str,
        body: bytes,
        *,
        key: str | None,
        headers: Mapping[str, str],
        delay: float,
    ) -> Future[None]:
        """Hand a message of ``topic`` back to the broker for redelivery to ``group`` only,
        ``delay`` seconds from now; the future resolves once the broker holds it durably.
        The default raises :class:`~msgbus.NotSupported` (see ``durable_retries``)."""
        raise NotSupported(f"{self.describe()} has no native delayed redelivery")

    def subscribe_retrying(
        self,
        topic: str,
        group: str,
        *,
        prefetch: int,
        from_beginning: bool = False,
        levels: int,
    ) -> Subscription:
        """:meth:`subscribe` for a ``retry_mode="durable"`` group whose retries may come back
        through ``levels`` retry levels of :meth:`publish_retry`. The default is
        :meth:`subscribe`: right where the broker redelivers a retry into the group's own
        queue; a backend whose retries wait elsewhere (Kafka's retry topics) also consumes
        those here and hands them out as deliveries of ``topic``."""
        return self.subscribe(topic, group, prefetch=prefetch, from_beginning=from_beginning)

    def topics(self) -> list[str] | None:
        """The topics the broker knows (for tools such as ``msgbus dlq list``), or None (the
        default) where the broker cannot enumerate them cheaply (AMQP, STOMP)."""
        return None

    def ensure_group(self, topic: str, group: str) -> None:
        """Make the durable consumer ``group`` of ``topic`` exist without consuming: messages
        published after this returns are kept for it until a member reads them.

        The default does nothing where ``features.replay`` (a log keeps every record; the
        group reads it ``from_beginning``) and otherwise subscribes and closes at once (the
        durable group queue stays). Raises what :meth:`subscribe` raises.
        """
        if self.features.replay:
            return
        self.subscribe(topic, group, prefetch=1).close()

    def describe(self) -> str:
        """A one-line description for logs and reports; never contains a password."""
        return type(self).__name__

    def connection_problem(self) -> BaseException | None:
        """Why the broker connection is down right now (the backend is reconnecting), or None.

        None also means "cannot tell": the default. Backends that reconnect on their own
        override it so that ``Bus.health()`` reports ``reconnecting``. Cheap; any thread.
        """
        return None

    def consumer_lag(self, topic: str, group: str) -> int | None:
        """How many messages of ``topic`` the consumer group ``group`` has still to consume.

        Queue brokers (memory, RabbitMQ, kombu) report the messages waiting in the group's
        queue, not counting those delivered and not yet acknowledged; Kafka reports the end
        offset minus the group's committed offset, summed over partitions (so deliveries in
        flight count). None when the broker cannot tell cheaply, the group does not exist, or
        the broker is unreachable; the default always returns None (set
        :attr:`reports_consumer_lag` when overriding). Private groups are not asked.

        May make one broker round trip, bounded by the backend's connect timeout; never
        called on the message path (the ``msgbus.consumer.lag`` gauge reads it at collection
        time, cached: :class:`msgbus.lag.LagReader`). Thread-safe; may raise a msgbus error,
        which the reader turns into None.
        """
        return None

    def delivery_attributes(self, delivery: Delivery) -> Mapping[str, Any] | None:
        """Broker-specific OpenTelemetry attributes of ``delivery`` (Kafka partition, offset).

        Called only while spans are recorded; the default has none.
        """
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------- re-exports

_MOVED = {
    "DeliveryBuffer": "msgbus.backendkit.buffer",
    "parse_options": "msgbus.backendkit.options",
    "PendingFuture": "msgbus.futures",
    "ResolvedFuture": "msgbus.futures",
    "settle_future": "msgbus.futures",
}
"""Helpers that moved to :mod:`msgbus.backendkit`, still importable from here (not in
``__all__``: new code imports them from the toolkit)."""


def __getattr__(name: str) -> Any:
    """Import a name of :data:`_MOVED` on first use (lazily: the toolkit imports this module)."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
