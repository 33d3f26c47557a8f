"""The consuming side of the RabbitMQ backend: one subscription, its own pika channel.

A subscription is set up on the backend's I/O thread (channel, ``basic.qos``, queue declare
and bind, ``basic.consume``) and set up again after every reconnection; deliveries go into
a :class:`~msgbus.backendkit.DeliveryBuffer` that the consuming thread drains; settlements
from any thread are batched back to the I/O thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from msgbus.backend import Delivery, Subscription
from msgbus.backendkit import DeliveryBuffer, settle_future
from msgbus.backends.rabbitmq_wire import delivery_headers, describe_error
from msgbus.envelope import new_message_id
from msgbus.errors import AuthenticationError, BrokerUnavailable, ConfigurationError

if TYPE_CHECKING:
    from msgbus.backends.rabbitmq import RabbitMQBackend

__all__ = ["RabbitSubscription"]

log = logging.getLogger("msgbus.rabbitmq")


class RabbitSubscription(Subscription):
    """A member of a group: its own channel on the backend's connection.

    ``receive`` runs on the consuming thread; ``ack``/``nack`` (any thread) are queued for
    the I/O thread; ``close`` (any thread) cancels the consumer and closes the channel, so
    the broker requeues what was not acknowledged.
    """

    def __init__(
        self,
        backend: RabbitMQBackend,
        topic: str,
        group: str | None,
        queue: str,
        prefetch: int,
    ) -> None:
        """Prepare a member of ``group`` (None: a private queue) consuming ``queue`` (its
        name; "" for a private, server-named one); the backend sets it up."""
        self.topic = topic
        self.group = group
        self.backend = backend
        self.prefetch = max(1, prefetch)
        self.queue = queue
        self._lock = threading.Lock()
        self._buffer = DeliveryBuffer(self._lock)
        self._settles: list[tuple[int, int, bool, bool]] = []
        self._settle_scheduled = False
        self._closed = False
        # I/O-thread state
        self._channel: Any = None
        self._generation = 0
        self._setting_up = False
        self.first_setup: Future[None] = Future()
        self.closed_event = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- I/O thread

    def setup(self, conn: Any) -> None:
        """I/O thread: open a channel, qos, declare + bind the queue, start consuming."""
        if self._closed or self._setting_up:
            return
        if self._channel is not None and self._channel.is_open:
            return  # already consuming (set up by a racing request)
        self._setting_up = True
        backend = self.backend
        opts = backend.options

        def fail(exc: BaseException) -> None:
            self._setting_up = False
            error = self._setup_error(exc)
            if not self.first_setup.done():
                settle_future(self.first_setup, error)
            else:
                log.warning("RabbitMQ: could not resubscribe %s: %s", self.describe(), error)
                backend.retry_subscription(self, 1.0)

        def on_channel_closed(channel: Any, reason: BaseException) -> None:
            if channel is self._channel:
                self._lost()
            if self._closed:
                self._setting_up = False
                self.closed_event.set()
                return
            if self._setting_up:
                fail(reason)
            elif backend.connection_open():
                log.warning(
                    "RabbitMQ: channel of %s closed (%s); resubscribing",
                    self.describe(),
                    describe_error(reason),
                )
                backend.retry_subscription(self, 0.5)

        def on_open(channel: Any) -> None:
            channel.add_on_close_callback(on_channel_closed)
            channel.add_on_cancel_callback(lambda _frame: self._on_cancelled(channel))
            self._channel = channel
            channel.basic_qos(prefetch_count=self.prefetch, callback=on_qos)

        def on_qos(_frame: Any) -> None:
            arguments: dict[str, Any] = {}
            if self.group is not None and opts.queue_type == "quorum":
                arguments["x-queue-type"] = "quorum"
                if opts.delivery_limit is not None:
                    arguments["x-delivery-limit"] = opts.delivery_limit
            self._channel.queue_declare(
                self.queue,
                durable=self.group is not None,
                exclusive=self.group is None,
                auto_delete=self.group is None,
                arguments=arguments or None,
                callback=on_declared,
            )

        def on_declared(frame: Any) -> None:
            self.queue = frame.method.queue
            self._channel.queue_bind(
                self.queue, opts.exchange, routing_key=self.topic, callback=on_bound
            )

        def on_bound(_frame: Any) -> None:
            with self._lock:
                self._generation += 1
                generation = self._generation
            self._channel.basic_consume(
                self.queue,
                self._make_on_message(generation),
                auto_ack=False,
                callback=on_consuming,
            )

        def on_consuming(_frame: Any) -> None:
            self._setting_up = False
            if self._closed:
                self._close_channel()
            settle_future(self.first_setup, None)

        try:
            conn.channel(on_open_callback=on_open)
        except Exception as exc:  # connection closing meanwhile
            fail(exc)

    def _setup_error(self, exc: BaseException) -> BaseException:
        where = f"queue {self.queue!r}" if self.queue else "a private queue"
        if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
            if exc.reply_code == 406:
                return ConfigurationError(
                    f"RabbitMQ refused {where} for topic {self.topic!r}: {exc.reply_text} "
                    "(does it exist with other arguments, e.g. another queue_type?)"
                )
            if exc.reply_code == 403:
                return AuthenticationError(f"RabbitMQ refused {where}: {exc.reply_text}")
            return BrokerUnavailable(f"RabbitMQ refused {where}: {exc.reply_text}")
        return BrokerUnavailable(f"could not subscribe to {where}: {describe_error(exc)}")

    def _make_on_message(self, generation: int) -> Callable[..., None]:
        topic = self.topic
        settle = self._settle
        lock = self._lock
        buffer = self._buffer

        def on_message(_channel: Any, method: Any, props: Any, body: bytes) -> None:
            try:
                headers, key = delivery_headers(props)
            except Exception:  # never let a strange message break the connection
                log.exception("RabbitMQ: could not read the properties of a message")
                headers, key = {}, None
            delivery = Delivery(
                topic,
                body,
                headers,
                key,
                settle,
                redelivered=method.redelivered,
                native_id=props.message_id or new_message_id(),
                token=(generation, method.delivery_tag),
            )
            with lock:
                if generation == self._generation:
                    buffer.put(delivery)  # dropped once closed

        return on_message

    def _on_cancelled(self, channel: Any) -> None:
        """The broker cancelled the consumer (queue deleted): declare it again."""
        if channel is self._channel and not self._closed:
            log.warning("RabbitMQ: consumer of %s cancelled by the broker", self.describe())
            self._close_channel()

    def _lost(self) -> None:
        """I/O thread: the channel is gone; unsettled deliveries are void."""
        with self._lock:
            self._generation += 1
            self._buffer.clear()
            self._settles.clear()
        self._channel = None

    def connection_lost(self) -> None:
        """I/O thread: the connection went away (the channel with it)."""
        self._setting_up = False
        self._lost()

    def _flush_settles(self) -> None:
        with self._lock:
            self._settle_scheduled = False
            settles, self._settles = self._settles, []
            generation = self._generation
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        try:
            with self.backend.coalesced_writes():
                for gen, tag, ack, requeue in settles:
                    if gen != generation:
                        continue
                    if ack:
                        channel.basic_ack(tag)
                    else:
                        channel.basic_nack(tag, requeue=requeue)
        except pika.exceptions.AMQPError as exc:
            log.debug("RabbitMQ: could not settle (%s); the broker will redeliver", exc)

    def _close_channel(self) -> None:
        """I/O thread: settle what is queued, then close the channel (broker requeues)."""
        self._flush_settles()
        channel = self._channel
        if channel is not None and channel.is_open:
            channel.close()
        elif self._closed and not self._setting_up:
            self.closed_event.set()

    def describe(self) -> str:
        """``queue 't.g'`` or ``private queue of 't'`` (for logs)."""
        return f"queue {self.queue!r}" if self.group else f"private queue of {self.topic!r}"

    # ---------------------------------------------------------------- any thread

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        generation, tag = delivery.token
        with self._lock:
            if self._closed or generation != self._generation:
                return  # the broker redelivers it
            self._settles.append((generation, tag, ack, requeue))
            if self._settle_scheduled:
                return
            self._settle_scheduled = True
        self.backend.call_soon(self._flush_settles)

    def confirm_settled(self, timeout: float) -> bool:
        """Send the queued acks, then a ``basic.qos`` round trip on the same channel: the
        broker answers it after it processed the acks before it (AMQP orders a channel)."""
        done = threading.Event()

        def run() -> None:
            self._flush_settles()
            channel = self._channel
            if channel is not None and channel.is_open:
                channel.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: done.set())

        if not self.backend.call_soon(run) or not done.wait(timeout):
            raise BrokerUnavailable(f"RabbitMQ: acks on {self.describe()} not confirmed")
        return True

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries within ``timeout`` s ([] on timeout or close).

        Raises BrokerUnavailable while the connection has been down for longer than
        ``reconnect_timeout`` (the backend keeps reconnecting).
        """
        with self._lock:
            return self._buffer.take(max_messages, timeout, self._check_connection)

    def _check_connection(self) -> None:
        self.backend.outage.check()

    def close(self) -> None:
        """Cancel the consumer and close its channel (unacknowledged messages go back to the
        queue); wake a blocked ``receive``. Idempotent, any thread; waits up to 5 s for the
        broker to confirm the close unless called on the I/O thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer.close()
        backend = self.backend
        backend.forget(self)
        if not backend.call_soon(self._close_channel):
            return
        if not backend.on_io_thread():
            self.closed_event.wait(5.0)

    def __repr__(self) -> str:
        return f"<RabbitMQ subscription {self.describe()} prefetch={self.prefetch}>"
