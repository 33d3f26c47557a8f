"""The publishing side of the RabbitMQ backend: the confirm channel and its publish window.

:class:`ConfirmedPublishing` is a part of :class:`~msgbus.backends.rabbitmq.RabbitMQBackend`
(a mixin; everything runs on the backend's I/O thread): it opens the publishing channel
(publisher confirms, ``exchange.declare``), writes what the window
(:mod:`msgbus.backendkit.window`) queued in batches, resolves futures on ``basic.ack``,
resends on ``basic.nack`` (a quorum queue without a leader) and fails mandatory messages the
broker returned. The state it uses is set up by the backend's ``__init__``: ``_window``,
``_pub_channel``, ``_tags``, ``_publishing``, ``_scheduled``, ``_lock``, ``_subscriptions``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions
from pika.spec import Basic

from msgbus.backendkit import Outgoing, settle_future
from msgbus.backends.rabbitmq_wire import describe_error
from msgbus.errors import AuthenticationError, BrokerUnavailable, ConfigurationError, PublishError

if TYPE_CHECKING:
    from msgbus.backendkit import PublishWindow
    from msgbus.backends.rabbitmq import RabbitMQOptions
    from msgbus.backends.rabbitmq_subscription import RabbitSubscription

__all__ = ["ConfirmedPublishing", "PublishEntry"]

log = logging.getLogger("msgbus.rabbitmq")


class PublishEntry(Outgoing):
    """One publish on its way: queued, then on the wire until confirmed."""

    __slots__ = ("body", "first_nack", "mandatory", "props", "returned", "routing_key")

    def __init__(
        self,
        future: Future[None],
        routing_key: str,
        body: bytes,
        props: Any,
        mandatory: bool = False,
    ) -> None:
        super().__init__(future)
        self.mandatory = mandatory
        self.routing_key = routing_key
        self.body = body
        self.props = props
        self.returned: str | None = None
        self.first_nack: float | None = None


class ConfirmedPublishing:
    """The publishing channel of a RabbitMQ backend (I/O thread only; see the module)."""

    options: RabbitMQOptions
    _window: PublishWindow[PublishEntry]
    _lock: threading.Lock
    _subscriptions: set[RabbitSubscription]

    def _open_publish_channel(self, conn: Any) -> None:
        exchange = self.options.exchange

        def on_open(channel: Any) -> None:
            channel.add_on_close_callback(self._on_publish_channel_closed)
            channel.add_on_return_callback(self._on_return)
            channel.confirm_delivery(self._on_confirm, callback=lambda _f: declare(channel))

        def declare(channel: Any) -> None:
            channel.exchange_declare(
                exchange, "topic", durable=True, callback=lambda _f: ready(channel)
            )

        def ready(channel: Any) -> None:
            self._pub_channel = channel
            self._tags = itertools.count(1)
            self._backoff.reset()
            self.outage.up()
            with self._lock:
                self._publishing = True
                subs = list(self._subscriptions)
            if not self._initial.done():
                settle_future(self._initial, None)
            for sub in subs:
                sub.setup(conn)
            self._drain()

        try:
            conn.channel(on_open_callback=on_open)
        except Exception as exc:
            log.warning("RabbitMQ: could not open the publishing channel: %s", exc)

    def _on_publish_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._pub_channel:
            # closed while being set up: exchange refused (e.g. another type)
            if not self._initial.done():
                code = getattr(reason, "reply_code", 0)
                error: BaseException
                if code == 406:
                    error = ConfigurationError(
                        f"RabbitMQ refused the exchange {self.options.exchange!r}: "
                        f"{describe_error(reason)} (does it exist with another type?)"
                    )
                elif code == 403:
                    error = AuthenticationError(
                        f"RabbitMQ refused the exchange {self.options.exchange!r}: "
                        f"{describe_error(reason)}"
                    )
                else:
                    error = BrokerUnavailable(
                        f"RabbitMQ publishing channel: {describe_error(reason)}"
                    )
                settle_future(self._initial, error)
                return
            if self.connection_open() and not self._shutting_down:
                self._ioloop.call_later(1.0, lambda: self._reopen_publish_channel())
            return
        self._publish_lost(reason)
        if self.connection_open() and not self._shutting_down:
            log.warning(
                "RabbitMQ: publishing channel closed (%s); reopening", describe_error(reason)
            )
            self._ioloop.call_later(0.1, self._reopen_publish_channel)

    def _reopen_publish_channel(self) -> None:
        if self.connection_open() and self._pub_channel is None and not self._shutting_down:
            self._open_publish_channel(self._conn)

    def _publish_lost(self, reason: BaseException | None) -> None:
        """I/O thread: the publishing channel is gone; its unconfirmed publishes are sent
        again later (see :mod:`msgbus.backendkit.window`)."""
        self._pub_channel = None
        for entry in self._window.in_flight():
            entry.returned = None
        with self._lock:
            self._publishing = False
        self._window.connection_lost(describe_error(reason))

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        channel = self._pub_channel
        if channel is None or not channel.is_open or not self._window.has_queued:
            return
        batch = self._window.queued()
        with self.coalesced_writes():
            self._publish_batch(channel, batch)

    def _publish_batch(self, channel: Any, batch: deque[PublishEntry]) -> None:
        exchange = self.options.exchange
        mandatory = self.options.mandatory  # or per message (dead letters, retries)
        window = self._window
        record = window.record
        tags = self._tags
        publish = channel.basic_publish
        for index, entry in enumerate(batch):
            try:
                publish(
                    exchange,
                    entry.routing_key,
                    entry.body,
                    entry.props,
                    mandatory or entry.mandatory,
                )
            except Exception as exc:
                rest = list(itertools.islice(batch, index, None))
                if isinstance(exc, pika.exceptions.AMQPError):
                    window.requeue(rest)
                    return
                log.exception("RabbitMQ: could not publish")
                window.finish(rest[:1], PublishError(f"could not publish: {exc}"))
                window.requeue(rest[1:])
                self.call_soon(self._drain)
                return
            record(next(tags), entry)  # the broker numbers what it got, from 1 per channel

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        window = self._window
        done = window.confirmed(method.delivery_tag, multiple=method.multiple)
        if not done:
            return
        if not isinstance(method, Basic.Ack):
            self._on_nack(done)
            return
        window.finish([entry for entry in done if entry.returned is None], None)
        for entry in done:
            if entry.returned is not None:
                error = PublishError(
                    f"RabbitMQ returned the message as unroutable ({entry.returned}): "
                    f"no queue is bound to topic {entry.routing_key!r} (mandatory=true)"
                )
                window.finish([entry], error)

    def _on_nack(self, done: list[PublishEntry]) -> None:
        """I/O thread: the broker nacked ``done``. A quorum queue nacks while it has no
        leader (a node died, an election runs), and RabbitMQ 3.10 keeps nacking on that
        channel afterwards: resend on a fresh publishing channel (1 s later) until
        ``reconnect_timeout`` has passed since a message's first nack, then fail it."""
        now = time.monotonic()
        again: list[PublishEntry] = []
        failed: list[PublishEntry] = []
        for entry in done:
            if entry.first_nack is None:
                entry.first_nack = now
            late = now - entry.first_nack > self.options.reconnect_timeout
            (failed if late or self._shutting_down else again).append(entry)
        if failed:
            self._window.finish(failed, PublishError("RabbitMQ refused the message (basic.nack)"))
        if not again:
            return
        channel = self._pub_channel
        if channel is None or not channel.is_open:
            self._window.requeue(again)
            return
        log.warning("RabbitMQ: %d publish(es) nacked; resending on a new channel", len(again))
        # the channel's other unconfirmed publishes go again too, without counting a loss:
        # this channel is recycled on purpose (MAX_LOSSES counts connections that died, and a
        # leader election recycles it every second until reconnect_timeout)
        for entry in self._window.in_flight():
            entry.returned = None
        rest = self._window.drop_in_flight()
        self._pub_channel = None
        with self._lock:
            self._publishing = False
        self._window.requeue(again + rest)  # the nacked ones are older: in front
        channel.close()  # not ours any more: its close callback reopens one in 1 s

    def _on_return(self, _channel: Any, method: Any, props: Any, body: bytes) -> None:
        """A mandatory message no queue took: mark the first matching unconfirmed publish
        (returns arrive in publish order, before that message's ack)."""
        message_id = props.message_id
        for entry in self._window.in_flight():
            if (
                entry.returned is None
                and entry.routing_key == method.routing_key
                and entry.props.message_id == message_id
                and entry.body == body
            ):
                entry.returned = f"{method.reply_code} {method.reply_text}"
                return
