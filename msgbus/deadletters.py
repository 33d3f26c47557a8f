"""Where dead letters go, and how they get there without ever being dropped.

A message that failed for good is published to the topic ``<topic>.dlq`` (its *dead-letter
topic*). Whoever subscribes to that topic gets a copy, like on any topic; the copy that
operations work on (``msgbus dlq``, :mod:`msgbus.dlq`) is kept by the consumer group
:data:`STORE_GROUP` (``msgbus-dlq``) of the dead-letter topic, which exists whether or not
anybody ever subscribed:

- the first time a :class:`DeadLetterSink` dead-letters a message of a topic it makes the
  store group exist (:meth:`msgbus.backend.Backend.ensure_group`: on a broker with
  queues, a durable queue that collects from now on; on a log with replay, nothing to do:
  the log keeps every record and the store group reads it from the beginning);
- then it publishes with :meth:`~msgbus.backend.Backend.publish_routed`, which fails (AMQP
  ``mandatory``) when no queue took the message, instead of letting the exchange drop it.

How the store group is named on each broker: on AMQP (``amqp://``, ``kombu+…``) it is the
durable queue ``<topic>.dlq`` itself, bound to routing key ``<topic>.dlq``
(:func:`store_queue_name`); on ActiveMQ the durable virtual-topic queue
``Consumer.msgbus-dlq.VirtualTopic.<topic>.dlq``; on Kafka the consumer group ``msgbus-dlq``
of the topic ``<topic>.dlq``; on memory a group of that name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from msgbus.backend import Backend

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "STORE_GROUP",
    "DeadLetterSink",
    "dead_letter_topic",
    "is_store_group",
    "original_topic",
    "store_queue_name",
]

DEAD_LETTER_SUFFIX = ".dlq"
"""Appended to a topic to name its dead-letter topic."""
STORE_GROUP = "msgbus-dlq"
"""The consumer group of a dead-letter topic that keeps the dead letters for operations."""

Send = Callable[..., "Future[None]"]


def dead_letter_topic(topic: str) -> str:
    """``<topic>.dlq``: the dead-letter topic of ``topic``."""
    return topic + DEAD_LETTER_SUFFIX


def original_topic(dead_letter_topic: str) -> str:
    """The topic whose dead-letter topic is ``dead_letter_topic`` (suffix removed)."""
    if not dead_letter_topic.endswith(DEAD_LETTER_SUFFIX):
        raise ValueError(f"{dead_letter_topic!r} is not a dead-letter topic")
    return dead_letter_topic[: -len(DEAD_LETTER_SUFFIX)]


def is_store_group(topic: str, group: str | None) -> bool:
    """True when ``group`` of ``topic`` is the dead-letter store (``msgbus-dlq`` of a
    ``….dlq`` topic)."""
    return group == STORE_GROUP and topic.endswith(DEAD_LETTER_SUFFIX)


def store_queue_name(topic: str, group: str) -> str | None:
    """For queue brokers that name a group's queue ``<topic>.<group>``: the name of the
    dead-letter store's queue, ``<topic>`` itself (``account.created.dlq``), or None when
    ``group`` of ``topic`` is not the store."""
    return topic if is_store_group(topic, group) else None


class DeadLetterSink:
    """Publishes dead letters of one backend, each confirmed in its durable store.

    Thread-safe. :meth:`send` blocks while it makes the store group exist (once per
    dead-letter topic and sink; again after a failure), then returns the publish future.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, topic: str) -> None:
        """Make the store of ``topic``'s dead letters exist (idempotent; raises the
        backend's errors, e.g. :class:`~msgbus.BrokerUnavailable`)."""
        target = dead_letter_topic(topic)
        with self._lock:
            if target in self._ready:
                return
            self._backend.ensure_group(target, STORE_GROUP)
            self._ready.add(target)

    def send(
        self,
        topic: str,
        body: bytes,
        *,
        key: str | None,
        headers: Mapping[str, str],
        publish: Send | None = None,
    ) -> Future[None]:
        """Dead-letter ``body`` of ``topic``: ensure the store, then publish routed to
        ``<topic>.dlq``. ``publish`` (same signature as ``Backend.publish_routed``) wraps
        the send, e.g. in a trace span. The future resolves once the broker holds it."""
        self.ensure(topic)
        send = publish if publish is not None else self._backend.publish_routed
        target = dead_letter_topic(topic)
        future = send(target, body, key=key, headers=dict(headers))
        future.add_done_callback(lambda done: self._forget_on_failure(target, done))
        return future

    def _forget_on_failure(self, target: str, done: Future[None]) -> None:
        # the store may be gone (deleted by an operator, a classic queue lost with its node):
        # the next dead letter declares it again instead of failing unroutable forever
        if not done.cancelled() and done.exception() is not None:
            with self._lock:
                self._ready.discard(target)
