"""Durable delayed retries on Kafka (``retry_mode="durable"``): retry topics.

Kafka cannot delay a record, so a retry waits in a topic of its own, the pattern of Spring
Kafka's non-blocking retries and of Uber's write-up on reprocessing with retry topics:

- a message of topic ``t`` whose handler failed attempt ``n`` in group ``g`` is published to
  ``t.retry.<n>`` (:func:`retry_topic`; one topic per retry level, created on first use like
  any topic) with the same key and body, its headers plus ``msgbus-attempt`` (the next
  attempt), :data:`RETRY_DUE` (when it is due: Unix time in ms) and :data:`RETRY_GROUP`
  (``g``: only that group retries it). The consumer acknowledges the original on ``t`` only
  after that publish is confirmed (``acks=all``).
- every member of a ``retry_mode="durable"`` group also consumes ``t.retry.1`` …
  ``t.retry.<max_attempts - 1>`` as the same msgbus group (Kafka group ``g:t.retry.<n>``
  with the default ``group_id_template``). :class:`RetryingSubscription` hands the group's
  handler a retry record once it is due, as a delivery of ``t`` carrying its attempt number;
  its offset is committed after the handler settles it (ack, or the next retry level's
  publish, or the dead letter once ``max_attempts`` is reached). Records of other groups
  are acknowledged at once (every group reads the level's topic and keeps its own).
- a record that is not due yet is held, not acknowledged, so its offset is not committed:
  the records behind it in its partition wait too (one level has one delay, so they are
  due later anyway), other partitions and the group's own topic go on. The wait holds at
  most :data:`RETRY_WINDOW` records per level in memory and none in a thread; a member that
  stops (or dies) leaves them uncommitted, so the next member of the group reads them again
  and waits out what is left of their delay: a long backoff survives a restart.

Ordering: a retried message leaves its key's order — records published after it with the
same key are handled while it waits, as with Spring Kafka's non-blocking retries.
Delivery is at least once, as on the group's topic: a member that dies between the retry
publish and the commit of the original on ``t`` may retry it twice.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from msgbus.backend import Delivery, Subscription
from msgbus.message import ATTEMPT

if TYPE_CHECKING:
    from msgbus.backend import Backend

__all__ = [
    "RETRY_DUE",
    "RETRY_GROUP",
    "RETRY_WINDOW",
    "RetryingSubscription",
    "publish_retry",
    "retry_topic",
    "subscribe_retrying",
]

RETRY_DUE = "msgbus-retry-due"
"""Header of a retry record: when it is due, as Unix time in milliseconds."""
RETRY_GROUP = "msgbus-retry-group"
"""Header of a retry record: the msgbus group that retries it."""
RETRY_WINDOW = 64
"""Retry records of one level a member holds (fetched, not yet due) at most."""
SLICE = 0.05
"""Longest a receive waits on the group's topic before looking at due retries (seconds)."""


def retry_topic(topic: str, level: int) -> str:
    """``<topic>.retry.<level>``: where retries after failed attempt ``level`` wait."""
    return f"{topic}.retry.{level}"


def publish_retry(
    backend: Backend,
    topic: str,
    group: str,
    body: bytes,
    *,
    key: str | None,
    headers: Mapping[str, str],
    delay: float,
) -> Future[None]:
    """Publish a retry of ``topic``'s message for ``group``, due ``delay`` s from now, to the
    retry topic of its level (``headers[msgbus-attempt]`` is the next attempt, so level =
    attempt - 1). The future resolves once every in-sync replica holds it."""
    attempt = headers.get(ATTEMPT, "2")
    level = max(1, int(attempt) - 1) if attempt.isdigit() else 1
    wire = dict(headers)
    wire[RETRY_DUE] = str(round((time.time() + max(0.0, delay)) * 1000))
    wire[RETRY_GROUP] = group
    return backend.publish(retry_topic(topic, level), body, key=key, headers=wire)


def subscribe_retrying(
    backend: Backend,
    topic: str,
    group: str,
    *,
    prefetch: int,
    from_beginning: bool = False,
    levels: int,
) -> Subscription:
    """Join ``group`` on ``topic`` and on its ``levels`` retry topics (joined in parallel);
    return one subscription over all of them (:class:`RetryingSubscription`), or the plain
    one when ``levels`` is 0. Raises what ``backend.subscribe`` raises (nothing stays open)."""
    main = backend.subscribe(topic, group, prefetch=prefetch, from_beginning=from_beginning)
    if levels < 1:
        return main
    window = max(1, min(prefetch, RETRY_WINDOW))
    names = [retry_topic(topic, level) for level in range(1, levels + 1)]
    with ThreadPoolExecutor(max_workers=min(len(names), 8)) as pool:
        futures = [pool.submit(backend.subscribe, name, group, prefetch=window) for name in names]
    retries: list[Subscription] = []
    error: BaseException | None = None
    for future in futures:
        try:
            retries.append(future.result())
        except BaseException as exc:
            error = error or exc
    if error is not None:
        for sub in [main, *retries]:
            sub.close()
        raise error
    return RetryingSubscription(main, retries, topic, group)


class RetryingSubscription(Subscription):
    """The group's subscription to ``topic`` merged with its retry-topic subscriptions.

    ``receive`` hands out due retries first (as deliveries of ``topic``), then what the
    group's topic has, waiting at most :data:`SLICE` at a time on it so that a retry falling
    due is handed out within that. One thread at a time receives (the consumer's fetch);
    ``close`` and settling deliveries may come from any thread.
    """

    def __init__(
        self, main: Subscription, retries: list[Subscription], topic: str, group: str
    ) -> None:
        self.topic = topic
        self.group = group
        self._main = main
        self._retries = retries
        self._held: dict[Any, deque[Delivery]] = {}  # partition -> not yet due, in order
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def __repr__(self) -> str:
        return f"<RetryingSubscription topic={self.topic!r} group={self.group!r}>"

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Due retries, else deliveries of the group's topic, waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._closed:
            due, next_due = self._take_due(max_messages)
            if due:
                return due
            remaining = deadline - time.monotonic()
            wait = min(remaining, SLICE)
            if next_due is not None:
                wait = min(wait, max(0.0, next_due - time.time()))
            batch = self._main.receive(max_messages, max(0.0, wait))
            if batch or remaining <= 0:
                return batch
        return []

    def _take_due(self, limit: int) -> tuple[list[Delivery], float | None]:
        """Fetch what the retry subscriptions have; return the due retries (at most
        ``limit``) and when the next held one is due (Unix time, s) or None."""
        out: list[Delivery] = []
        next_due: float | None = None
        with self._lock:
            for sub in self._retries:
                for delivery in sub.receive(RETRY_WINDOW, 0):
                    if delivery.headers.get(RETRY_GROUP) != self.group:
                        delivery.ack()  # another group's retry: it keeps its own
                        continue
                    self._held.setdefault(_partition(delivery), deque()).append(delivery)
            now = time.time()
            for part, queue in list(self._held.items()):
                if getattr(part, "dead", False):  # revoked: its next owner retries it
                    del self._held[part]
                    continue
                while queue and len(out) < limit:
                    due = _due(queue[0])
                    if due > now:
                        next_due = due if next_due is None else min(next_due, due)
                        break
                    out.append(self._as_delivery(queue.popleft()))
                if not queue:
                    del self._held[part]
        return out, next_due

    def _as_delivery(self, record: Delivery) -> Delivery:
        """``record`` of a retry topic as a delivery of the group's topic; settling it
        settles the record."""
        headers = {k: v for k, v in record.headers.items() if k not in (RETRY_DUE, RETRY_GROUP)}

        def settle(_delivery: Delivery, ack: bool, requeue: bool) -> None:
            if ack:
                record.ack()
            else:
                record.nack(requeue)

        return Delivery(
            self.topic,
            record.body,
            headers,
            record.key,
            settle,
            redelivered=record.redelivered,
            native_id=record.native_id,
            token=record.token,
        )

    def connection_problem(self) -> BaseException | None:
        """The first connection problem of the group's or a retry subscription, or None."""
        for sub in (self._main, *self._retries):
            problem = sub.connection_problem()
            if problem is not None:
                return problem
        return None

    def close(self) -> None:
        """Close every subscription; held retries stay uncommitted (the group's next member
        reads them again). Idempotent, any thread."""
        self._closed = True
        with self._lock:
            self._held.clear()
        for sub in (self._main, *self._retries):
            sub.close()


def _partition(delivery: Delivery) -> Any:
    token = delivery.token
    return token[0] if isinstance(token, tuple) and token else None


def _due(delivery: Delivery) -> float:
    """When ``delivery`` is due (Unix time, s); now for a record without a valid header."""
    raw = delivery.headers.get(RETRY_DUE, "")
    return int(raw) / 1000 if raw.isdigit() else 0.0
