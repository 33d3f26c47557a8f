"""The consuming side of the kombu backend: one subscription, a kombu Consumer on its own
channel of the backend's connection.

The backend's I/O thread sets a subscription up (declare and bind its queue, consume) on
every connection; deliveries go into a :class:`~msgbus.backendkit.DeliveryBuffer` that the
consuming thread drains; ``ack``/``nack`` and ``close`` from any thread are queued for the
I/O thread.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from kombu import Consumer, Queue

from msgbus.backend import Delivery, Subscription
from msgbus.backendkit import DeliveryBuffer, settle_future
from msgbus.backendkit.amqp import from_amqp
from msgbus.deadletters import store_queue_name
from msgbus.envelope import new_message_id
from msgbus.errors import BrokerUnavailable
from msgbus.message import MESSAGE_ID

if TYPE_CHECKING:
    from msgbus.backends.kombu import KombuBackend

__all__ = ["KombuSubscription", "close_quietly"]

log = logging.getLogger("msgbus.kombu")


class KombuSubscription(Subscription):
    """A member of a group: a kombu Consumer on its own channel of the backend's connection.

    ``receive`` runs on the consuming thread; ``ack``/``nack`` (any thread) and ``close``
    (any thread) are queued for the I/O thread.
    """

    def __init__(
        self,
        backend: KombuBackend,
        topic: str,
        group: str | None,
        prefetch: int,
        *,
        exclusive: bool,
    ) -> None:
        """Prepare a member of ``group`` (None: a private queue, ``exclusive`` to its
        connection where the transport has that); the backend's I/O thread sets it up."""
        self.topic = topic
        self.group = group
        self.backend = backend
        self.prefetch = max(1, prefetch)
        if group is not None:  # the dead-letter store's queue is <t>.dlq itself
            name = store_queue_name(topic, group) or f"{topic}.{group}"
        else:
            name = f"{topic}.private-{uuid.uuid4().hex[:12]}"
        self.queue = Queue(
            name,
            backend.exchange,
            routing_key=topic,
            durable=group is not None,
            auto_delete=group is None,
            exclusive=group is None and exclusive,
        )
        self._lock = threading.Lock()
        self._buffer = DeliveryBuffer(self._lock)
        self._closed = False
        self._epoch = -1
        self._settles: list[tuple[int, Any, bool, bool]] = []
        self._settle_scheduled = False
        # I/O-thread state
        self._requeued: set[str] = set()
        self.channel: Any = None
        self.consumer: Any = None
        self.first_setup: Future[None] = Future()
        self.closed_event = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- I/O thread

    def setup(self, conn: Any, epoch: int) -> None:
        """I/O thread: declare the queue and start consuming on a new channel."""
        if self._closed:
            return
        channel = conn.channel()
        try:
            consumer = Consumer(
                channel,
                queues=[self.queue],
                on_message=self._make_on_message(epoch),
                no_ack=False,
                prefetch_count=self.prefetch,
                auto_declare=True,
            )
            consumer.consume()
            # Redis: unacknowledged messages of a dead member past the visibility timeout
            # come back now, not at kombu's next throttled sweep (a no-op elsewhere)
            restore = getattr(getattr(channel, "qos", None), "restore_visible", None)
            if restore is not None:
                restore(num=getattr(channel, "unacked_restore_limit", None), interval=1)
        except BaseException:
            close_quietly(channel)
            raise
        self.channel, self.consumer = channel, consumer
        with self._lock:
            self._epoch = epoch
        settle_future(self.first_setup, None)

    def _make_on_message(self, epoch: int) -> Callable[[Any], None]:
        topic = self.topic
        settle = self._settle
        lock = self._lock
        buffer = self._buffer

        def on_message(message: Any) -> None:
            try:
                headers, key = delivery_headers(message)
            except Exception:
                log.exception("kombu: could not read the headers of a message")
                headers, key = {}, None
            body = message.body
            if isinstance(body, str):  # py-amqp decoded it, or '' for an empty body
                body = body.encode(message.content_encoding or "utf-8") if body else b""
            info = message.delivery_info or {}
            redelivered = bool(info.get("redelivered"))
            requeued = self._requeued
            if requeued:
                message_id = headers.get(MESSAGE_ID)
                if message_id in requeued:
                    requeued.discard(message_id)
                    redelivered = True
            delivery = Delivery(
                topic,
                body,
                headers,
                key,
                settle,
                redelivered=redelivered,
                native_id=headers.get(MESSAGE_ID) or new_message_id(),
                token=(epoch, message),
            )
            with lock:
                if epoch == self._epoch:
                    buffer.put(delivery)  # dropped once closed

        return on_message

    def lost(self) -> None:
        """I/O thread: the connection went away; unsettled deliveries are void."""
        with self._lock:
            self._epoch = -1
            self._buffer.clear()
            self._settles.clear()
        self.channel = self.consumer = None

    def flush_settles(self) -> None:
        """I/O thread: ack/reject what other threads settled."""
        with self._lock:
            self._settle_scheduled = False
            settles, self._settles = self._settles, []
            epoch = self._epoch
        if settles:
            with self.backend.coalesced_writes():
                self._settle_now(settles, epoch)

    def _settle_now(self, settles: list[tuple[int, Any, bool, bool]], epoch: int) -> None:
        for gen, message, ack, requeue in settles:
            if gen != epoch or self.channel is None:
                continue
            if ack:
                message.ack()
            elif requeue:
                message_id = (message.properties or {}).get("message_id")
                if message_id and len(self._requeued) < 10_000:
                    self._requeued.add(message_id)  # memory:// does not flag redeliveries
                message.requeue()
            else:
                message.reject(requeue=False)

    def close_channel(self) -> None:
        """I/O thread: settle what is queued, cancel, close the channel (messages go back)."""
        try:
            self.flush_settles()
            if self.consumer is not None:
                self.consumer.cancel()
        except Exception as exc:
            log.debug("kombu: cancelling %s failed: %s", self.queue.name, exc)
        channel = self.channel
        if channel is not None:
            if getattr(channel, "do_restore", True) is False:
                # kombu's memory transport drops unacknowledged messages on close
                try:
                    channel.qos.restore_unacked()
                except Exception as exc:
                    log.warning("kombu: could not hand back unacknowledged messages: %s", exc)
            close_quietly(channel)
        self.channel = self.consumer = None
        self.closed_event.set()

    # ---------------------------------------------------------------- any thread

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        epoch, message = delivery.token
        with self._lock:
            if self._closed or epoch != self._epoch:
                return  # the broker/transport redelivers it
            self._settles.append((epoch, message, ack, requeue))
            if self._settle_scheduled:
                return
            self._settle_scheduled = True
        self.backend.call_soon(self.flush_settles)

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries within ``timeout`` s ([] on timeout or close).

        Raises BrokerUnavailable while the connection has been down for longer than
        ``reconnect_timeout``.
        """
        with self._lock:
            return self._buffer.take(max_messages, timeout, self._check_connection)

    def _check_connection(self) -> None:
        self.backend.outage.check()

    def confirm_settled(self, timeout: float) -> bool:
        """Settle what is queued on the I/O thread; over AMQP then a synchronous passive
        ``queue.declare`` on the same channel (answered after the acks before it). A
        virtual transport (Redis, SQL) applies an ack as it sends it."""
        done = threading.Event()

        def run() -> None:
            try:
                self.flush_settles()
                channel = self.channel
                if channel is not None and not hasattr(channel, "qos"):  # py-amqp, not virtual
                    channel.queue_declare(queue=self.queue.name, passive=True)
            except Exception as exc:  # the connection is going: the broker redelivers
                log.debug("kombu: confirming acks on %s failed: %s", self.queue.name, exc)
                return
            if channel is not None:
                done.set()

        if not self.backend.call_soon(run) or not done.wait(timeout):
            raise BrokerUnavailable(f"kombu: acks on queue {self.queue.name!r} not confirmed")
        return True

    def close(self) -> None:
        """Cancel the consumer and close its channel (unacknowledged messages go back);
        wake a blocked ``receive``. Idempotent, any thread; waits up to 5 s."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer.close()
        self.backend.forget(self)
        if self.backend.call_soon(self.close_channel) and not self.backend.on_io_thread():
            self.closed_event.wait(5.0)

    def __repr__(self) -> str:
        return f"<kombu subscription {self.queue.name!r} prefetch={self.prefetch}>"


def close_quietly(channel: Any) -> None:
    """Close a kombu channel; a failure is logged at DEBUG, never raised."""
    try:
        channel.close()
    except Exception as exc:
        log.debug("kombu: closing a channel failed: %s", exc)


def delivery_headers(message: Any) -> tuple[dict[str, str], str | None]:
    """A kombu message's headers and properties → msgbus headers and the key."""
    props = message.properties or {}
    return from_amqp(
        message.headers,
        message.content_type,
        props.get("message_id"),
        props.get("correlation_id"),
        props.get("timestamp"),
    )
