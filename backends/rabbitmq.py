"""RabbitMQ (AMQP 0-9-1) with pika as the driver: one I/O thread, pipelined publisher confirms.

Features
    - Mapping: one durable topic exchange (option ``exchange``, default ``msgbus``); a topic
      is a routing key on it. A consumer group ``g`` of topic ``t`` is the durable queue
      ``t.g`` bound with routing key ``t`` (``queue_type=quorum`` makes it a quorum queue); its
      members are competing consumers of that queue, so every group gets every message and
      the members of a group share them. ``group=None`` is an exclusive, auto-delete,
      server-named queue that lives as long as the subscription's channel (it is declared
      anew after a reconnection; messages published while the connection was down are not
      in it). A group queue is declared and bound before ``subscribe`` returns, so a new
      group starts at the end of the topic and then keeps collecting while no member is
      connected.
    - Durable publish: messages are persistent (``delivery_mode=2``) and published with
      publisher confirms, **pipelined**: up to ``max_in_flight`` unconfirmed publishes are on
      the wire at once, each future is resolved by the broker's ``basic.ack`` for its delivery
      tag (``multiple=True`` acks resolve every tag up to it). A ``basic.nack`` fails the
      future with :class:`~msgbus.PublishError`. Publishing to a topic that no queue is bound
      to succeeds and the message is dropped by the exchange (like the memory backend; a
      group starts at the end of the topic): with ``mandatory=true`` such a message is
      returned by the broker and its future fails with ``PublishError`` instead.
    - Per-key order (``features.per_key_order = False``): a queue hands messages out in
      publish order, so a group with **one** member sees each key in order (the bus keeps
      per-key order among its worker threads), except for redeliveries after a reconnection
      or a ``nack(requeue=True)``. With several members the queue round-robins between them
      and two messages of one key may be handled at the same time by different members:
      RabbitMQ offers no per-key order across the members of a group.
    - Consume: manual acknowledgement; ``ack()`` sends ``basic.ack`` (the bus calls it after
      the handler returned), ``nack(requeue=True)`` sends ``basic.nack`` with requeue (the
      broker delivers it again, marked redelivered, to any member), ``nack(requeue=False)``
      drops it (or dead-letters it, if the queue has a broker-side dead-letter exchange
      configured by policy). ``prefetch`` is the channel's ``basic.qos`` prefetch count.
      Unacknowledged messages go back to the queue when a subscription closes, its channel or
      connection is lost, or its process dies.
    - Metadata in AMQP properties: ``content-type`` → ``content_type``, ``msgbus-id`` →
      ``message_id``, ``msgbus-correlation-id`` → ``correlation_id``, the publish time →
      ``timestamp`` (seconds; the millisecond ``msgbus-timestamp`` header travels too). User
      headers and the other ``msgbus-*`` headers go into the ``headers`` table as strings; the
      key travels as the header ``msgbus-key`` and comes back as ``Delivery.key``. Messages
      from plain AMQP clients: properties map back the same way, table values that are not
      strings arrive as their text, a message without ``message_id`` gets a fresh id each
      time it is delivered, and a message without ``msgbus-timestamp`` gets its AMQP
      ``timestamp``.
    - Threads: pika is not thread-safe, so each backend owns **one** ``SelectConnection`` on
      one dedicated I/O thread (``msgbus-rabbitmq-io``), with one channel for publishing and
      one channel per subscription. Every other thread only hands work to it
      (``add_callback_threadsafe``): ``publish`` queues the message (batched wake-ups),
      ``ack``/``nack`` queue the settlement, ``close`` queues the channel close. Future
      callbacks (``add_done_callback``) run on the I/O thread and must not block.
    - Reconnection: when the connection is lost (broker restart, heartbeat timeout, network),
      the I/O thread reconnects with backoff (0.1 s doubling to 2 s, hosts in URL order,
      forever until closed), redeclares the exchange and queues and resubscribes. Publishes
      that were not confirmed are published again on the new connection (at least once: a
      message may be stored twice, with the same ``msgbus-id``); one lost with three
      connections in a row fails with ``PublishError``. Deliveries of the lost channel
      become no-ops to settle (the broker redelivers them). After ``reconnect_timeout``
      seconds without a connection, pending and new publishes fail with
      :class:`~msgbus.BrokerUnavailable` and ``receive`` raises it, until the broker is back.
    - Errors: a refused login is :class:`~msgbus.AuthenticationError` at once (never
      retried by ``from_url``); no host answering within ``connect_timeout`` is
      ``BrokerUnavailable``; a TLS server certificate the client does not trust (on every
      host: unknown CA, wrong host name) is ``BrokerUnavailable`` saying "TLS certificate
      verification failed" at once, not retried; a queue that exists with other arguments
      (e.g. classic vs. quorum) is :class:`~msgbus.ConfigurationError` from ``subscribe``.
      The password is never shown in a repr, a log line or an error.
    - Not supported: replay (``from_beginning``), per-key order across members.

URL form
    ``amqp://[user[:password]@]host[:port][,host[:port]...][/vhost][?option=value&...]`` as
    RabbitMQ documents it: the path is the virtual host, percent-encoded (``/`` is ``%2F``;
    an empty path means the default vhost ``/``), user and password default to
    ``guest``/``guest``, the port to 5672 (``amqps://``: TLS, port 5671). Several hosts
    (``amqp://h1,h2:5673/vhost``) are tried in turn on connect and on every reconnection.
    RabbitMQ's own URI query parameters are understood: ``heartbeat``, ``connection_timeout``
    (milliseconds), ``channel_max``, ``frame_max``, ``cacertfile``, ``certfile``,
    ``keyfile``, ``verify``, ``server_name_indication``.

Options (URL query or keyword arguments to ``msgbus.connect``)
    - ``exchange`` (str, ``msgbus``): the durable topic exchange every topic lives on.
    - ``queue_type`` (``classic`` | ``quorum``, ``classic``): type of group queues (quorum:
      replicated and fsynced before the confirm; recommended for durability). Private queues
      are always classic. ``delivery_limit`` (int, none): quorum queues' ``x-delivery-limit``.
    - ``persistent`` (bool, true): ``delivery_mode=2``; false is faster and lost on restart.
    - ``mandatory`` (bool, false): fail publishes no queue is bound for (see Features).
    - ``max_in_flight`` (int, 5000): unconfirmed publishes before ``publish`` blocks
      (at most ``reconnect_timeout``; the one rule of :mod:`msgbus.backendkit.window`).
    - ``max_message_bytes`` (int, 128 MiB, RabbitMQ's default ``max_message_size``).
    - ``connect_timeout`` (float s, 10): bound for connecting (all hosts) and for
      ``subscribe``; ``connection_timeout`` (int ms) is RabbitMQ's URI name for it.
    - ``reconnect_timeout`` (float s, 30): see Features.
    - ``heartbeat`` (int s, 30; 0 turns heartbeats off), ``channel_max``, ``frame_max``.
    - ``username``, ``password``, ``vhost``: override the URL's.
    - TLS: ``ssl`` (bool; default true for ``amqps://``), ``cacertfile``, ``certfile``,
      ``keyfile``, ``key_password`` (secret), ``verify`` (``verify_peer`` | ``verify_none``),
      ``server_name_indication`` (host name to check, default the URL's host).
    - ``fast_path`` (bool, true): coalesce pika's frame writes
      (:mod:`msgbus.backends.rabbitmq_fastpath`) where the pika version was verified; off
      (or ``MSGBUS_FAST_PATH=0``, or another pika version): pika writes each frame itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic, BasicProperties

from msgbus.backend import Backend, Delivery, Features, Subscription
from msgbus.backendkit import (
    KEY_HEADER,
    Backoff,
    DeliveryBuffer,
    Outage,
    Outgoing,
    PendingFuture,
    PublishWindow,
    check_publish,
    host_ports,
    parse_options,
    require_positive,
    settle_future,
    url_credentials,
    with_message_id,
)
from msgbus.backendkit.amqp import SHORTSTR, from_amqp, to_amqp
from msgbus.backendkit.fastpath import load_fast_path
from msgbus.deadletters import store_queue_name
from msgbus.envelope import new_message_id
from msgbus.errors import (
    AuthenticationError,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    PublishError,
)
from msgbus.url import BusURL

__all__ = ["KEY_HEADER", "RabbitMQBackend", "RabbitMQOptions", "group_queue"]

log = logging.getLogger("msgbus.rabbitmq")

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
_SHORTSTR = SHORTSTR


@dataclass(frozen=True)
class RabbitMQOptions:
    """Options of the RabbitMQ backend (see the module docstring). Immutable; no secret in
    its repr."""

    username: str = "guest"
    password: str = field(default="guest", repr=False)
    vhost: str | None = None
    exchange: str = "msgbus"
    queue_type: Literal["classic", "quorum"] = "classic"
    delivery_limit: int | None = None
    persistent: bool = True
    mandatory: bool = False
    max_in_flight: int = 5000
    max_message_bytes: int = 128 * 1024 * 1024
    connect_timeout: float = 10.0
    connection_timeout: int | None = None
    reconnect_timeout: float = 30.0
    heartbeat: int = 30
    channel_max: int | None = None
    frame_max: int | None = None
    ssl: bool | None = None
    cacertfile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)
    verify: Literal["verify_peer", "verify_none"] = "verify_peer"
    server_name_indication: str | None = None
    fast_path: bool = True


def group_queue(topic: str, group: str) -> str:
    """The durable queue of consumer group ``group`` on ``topic``: ``<topic>.<group>``; the
    dead-letter store (group ``msgbus-dlq`` of ``<t>.dlq``) is the queue ``<t>.dlq``."""
    return store_queue_name(topic, group) or f"{topic}.{group}"


# --------------------------------------------------------------------------- headers


def _properties(headers: Mapping[str, str], key: str | None, delivery_mode: int) -> BasicProperties:
    """msgbus headers and key → pika properties (:func:`msgbus.backendkit.amqp.to_amqp`)."""
    content_type, message_id, correlation_id, timestamp, table = to_amqp(headers, key)
    return BasicProperties(
        content_type=content_type,
        message_id=message_id,
        correlation_id=correlation_id,
        timestamp=timestamp,
        delivery_mode=delivery_mode,
        headers=table or None,
    )


def delivery_headers(props: BasicProperties) -> tuple[dict[str, str], str | None]:
    """pika properties → msgbus headers and the key (:func:`msgbus.backendkit.amqp.from_amqp`)."""
    return from_amqp(
        props.headers, props.content_type, props.message_id, props.correlation_id, props.timestamp
    )


def _is_auth_error(exc: BaseException) -> bool:
    if isinstance(
        exc,
        pika.exceptions.AuthenticationError | pika.exceptions.ProbableAuthenticationError,
    ):
        return True
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
        return exc.reply_code == 403
    return False


def _root(exc: BaseException) -> BaseException:
    """The innermost error of pika's connection-workflow wrappers."""
    for _ in range(5):
        inner = getattr(exc, "exceptions", None)
        if inner:
            exc = inner[-1]
            continue
        inner = getattr(exc, "exception", None)
        if isinstance(inner, BaseException):
            exc = inner
            continue
        if exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
            continue
        break
    return exc


def _is_tls_verify_error(exc: BaseException) -> bool:
    """True when ``exc`` is (or wraps) a failed check of the server's TLS certificate."""
    return isinstance(_root(exc), ssl.SSLCertVerificationError)


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown reason"
    exc = _root(exc)
    if isinstance(exc, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosed):
        return f"{exc.reply_code} {exc.reply_text}".strip()
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


class _Entry(Outgoing):
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


# --------------------------------------------------------------------------- subscriptions


class _RabbitSubscription(Subscription):
    """A member of a group: its own channel on the backend's connection.

    ``receive`` runs on the consuming thread; ``ack``/``nack`` (any thread) are queued for
    the I/O thread; ``close`` (any thread) cancels the consumer and closes the channel, so
    the broker requeues what was not acknowledged.
    """

    def __init__(
        self, backend: RabbitMQBackend, topic: str, group: str | None, prefetch: int
    ) -> None:
        self.topic = topic
        self.group = group
        self.backend = backend
        self.prefetch = max(1, prefetch)
        self.queue = group_queue(topic, group) if group is not None else ""
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
                    _reason(reason),
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
        return BrokerUnavailable(f"could not subscribe to {where}: {_reason(exc)}")

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


# --------------------------------------------------------------------------- backend


class RabbitMQBackend(Backend):
    """RabbitMQ over AMQP 0-9-1 with pika (see the module docstring for features, URL and
    options).

    Thread-safe: ``publish``, ``flush``, ``subscribe`` and ``close`` may be called from any
    thread; the pika connection itself is only touched by the backend's I/O thread.
    ``from_url`` raises :class:`~msgbus.BrokerUnavailable` within ``connect_timeout`` when
    no host answers and :class:`~msgbus.AuthenticationError` at once when the broker
    refuses the credentials.
    """

    schemes = ("amqp", "amqps")
    features = Features(
        consumer_groups=True,
        per_key_order=False,
        persistent=True,
        native_dead_letter=False,
        requeue=True,
        replay=False,
        cross_process=True,
        max_message_bytes=RabbitMQOptions.max_message_bytes,
    )
    extra = "rabbitmq"
    reports_consumer_lag = True

    def __init__(self, url: BusURL, options: RabbitMQOptions) -> None:
        """Prepare (but do not connect) a backend; use :meth:`from_url` instead."""
        self.url = url
        self.options = options
        self.use_ssl = options.ssl if options.ssl is not None else url.scheme == "amqps"
        port = DEFAULT_TLS_PORT if self.use_ssl else DEFAULT_PORT
        self.host_ports = host_ports(url, port)
        self.vhost = options.vhost if options.vhost is not None else (url.path or "/")
        self.where = ",".join(f"{h}:{p}" for h, p in self.host_ports)
        self.features = dataclasses.replace(
            type(self).features,
            persistent=options.persistent,
            max_message_bytes=options.max_message_bytes,
        )
        self._delivery_mode = 2 if options.persistent else 1
        self._fast: Any = load_fast_path(
            "msgbus.backends.rabbitmq_fastpath", option=options.fast_path, log=log
        )
        """The pika fast path module (rabbitmq_fastpath) when used, else None."""
        self._connect_timeout = (
            options.connection_timeout / 1000
            if options.connection_timeout is not None
            else options.connect_timeout
        )
        self._ssl_context = self._make_ssl_context() if self.use_ssl else None
        # shared state, under _lock
        self._lock = threading.Lock()
        self.outage = Outage(
            f"RabbitMQ at {self.where}", options.reconnect_timeout, describe=_reason
        )
        self._window: PublishWindow[_Entry] = PublishWindow(
            "RabbitMQ", options.max_in_flight, self.outage
        )
        self._scheduled = False
        self._publishing = False  # the publish channel is up
        self._closed = False
        self._subscriptions: set[_RabbitSubscription] = set()
        # I/O-thread state (the window's unconfirmed table too)
        self._ioloop = IOLoop()
        self._conn: Any = None
        self._pub_channel: Any = None
        self._tags = itertools.count(1)
        self._host_index = 0
        self._round_errors: list[str] = []
        self._round_tls_failures = 0
        self._backoff = Backoff()
        self._connecting = False
        self._shutting_down = False
        self._initial: Future[None] = Future()
        self._connect_deadline = 0.0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="msgbus-rabbitmq-io", daemon=True)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_url(cls, url: BusURL, **options: Any) -> RabbitMQBackend:
        """Connect to the first host of ``url`` that answers and declare the exchange.

        Raises :class:`~msgbus.UnknownOption` (listing the valid options),
        :class:`~msgbus.ConfigurationError`, :class:`~msgbus.BrokerUnavailable` (within
        ``connect_timeout``) or :class:`~msgbus.AuthenticationError` (at once).
        """
        opts = parse_options(
            RabbitMQOptions, url, options, backend="RabbitMQ", url_fields=url_credentials(url)
        )
        require_positive(
            opts,
            "connect_timeout",
            "reconnect_timeout",
            "max_in_flight",
            "max_message_bytes",
            "connection_timeout",
            backend="RabbitMQ",
        )
        if opts.heartbeat < 0:
            raise ConfigurationError("RabbitMQ option 'heartbeat' must be 0 or positive")
        if not opts.exchange or len(opts.exchange) > _SHORTSTR:
            raise ConfigurationError("RabbitMQ option 'exchange' must be 1-255 characters")
        if opts.exchange.startswith("amq."):
            raise ConfigurationError(
                "RabbitMQ option 'exchange': names starting with 'amq.' are reserved"
            )
        backend = cls(url, opts)
        backend._open()
        return backend

    def _make_ssl_context(self) -> ssl.SSLContext:
        opts = self.options
        try:
            context = ssl.create_default_context(cafile=opts.cacertfile)
            if opts.verify == "verify_none":
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if opts.certfile:
                context.load_cert_chain(opts.certfile, opts.keyfile, opts.key_password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"RabbitMQ TLS options: {exc}") from None
        return context

    def _parameters(self, host: str, port: int, timeout: float) -> pika.ConnectionParameters:
        opts = self.options
        ssl_options = None
        if self._ssl_context is not None:
            ssl_options = pika.SSLOptions(self._ssl_context, opts.server_name_indication or host)
        extra: dict[str, Any] = {}
        if opts.channel_max is not None:
            extra["channel_max"] = opts.channel_max
        if opts.frame_max is not None:
            extra["frame_max"] = opts.frame_max
        return pika.ConnectionParameters(
            host=host,
            port=port,
            virtual_host=self.vhost,
            credentials=pika.PlainCredentials(opts.username, opts.password),
            heartbeat=opts.heartbeat,
            ssl_options=ssl_options,
            connection_attempts=1,
            socket_timeout=max(0.1, timeout),
            stack_timeout=max(0.1, timeout),
            client_properties={"connection_name": "msgbus"},
            **extra,
        )

    def _open(self) -> None:
        started = time.monotonic()
        self._connect_deadline = started + self._connect_timeout
        self._thread.start()
        self.call_soon(self._connect_round)
        try:
            self._initial.result(self._connect_timeout + 5.0)
        except BaseException as exc:
            self._shutdown(timeout=2.0)
            if isinstance(exc, TimeoutError):
                exc = BrokerUnavailable(f"could not connect to RabbitMQ at {self.where} in time")
            if type(exc) is BrokerUnavailable:
                exc = BrokerUnavailable(
                    f"{exc} (tried for {time.monotonic() - started:.1f}s, "
                    f"connect_timeout={self._connect_timeout:g}s)"
                )
            raise exc from None

    # ---------------------------------------------------------------- I/O thread plumbing

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._ioloop.start()
            except Exception:
                log.exception("RabbitMQ: error in the I/O thread; continuing")
                continue
            break
        self._stopped.set()
        try:
            self._ioloop.close()
        except Exception:  # pragma: no cover - best effort
            log.debug("RabbitMQ: closing the I/O loop failed", exc_info=True)

    def call_soon(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the I/O thread (any thread may call this). False once stopped."""
        if self._stopped.is_set():
            return False
        self._ioloop.add_callback_threadsafe(fn)
        return True

    def on_io_thread(self) -> bool:
        """True when called on the backend's I/O thread."""
        return threading.current_thread() is self._thread

    def connection(self) -> Any:
        """I/O thread: the current pika connection, or None."""
        return self._conn

    def coalesced_writes(self) -> contextlib.AbstractContextManager[None]:
        """I/O thread: on the fast path, hand the frames written inside the block to pika's
        transport in few writes (:mod:`msgbus.backends.rabbitmq_fastpath`)."""
        if self._fast is None:
            return contextlib.nullcontext()
        return self._fast.coalesced_writes(self._conn)

    def connection_open(self) -> bool:
        """I/O thread: True while the connection is open."""
        conn = self._conn
        return conn is not None and conn.is_open

    # ---------------------------------------------------------------- connecting (I/O)

    def _connect_round(self) -> None:
        """I/O thread: start a round of attempts over every host, from the first."""
        if self._shutting_down or self._connecting:
            return
        self._connecting = True
        self._host_index = 0
        self._round_errors = []
        self._round_tls_failures = 0
        self._try_host()

    def _try_host(self) -> None:
        if self._shutting_down:
            self._connecting = False
            return
        host, port = self.host_ports[self._host_index]
        if not self._initial.done():
            remaining = self._connect_deadline - time.monotonic()
            timeout = max(0.2, min(remaining, self._connect_timeout / len(self.host_ports)))
        else:
            timeout = self._connect_timeout
        try:
            pika.SelectConnection(
                self._parameters(host, port, timeout),
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_connection_error,
                on_close_callback=self._on_connection_closed,
                custom_ioloop=self._ioloop,
            )
        except Exception as exc:
            self._on_connection_error(None, exc)

    def _on_connection_error(self, _conn: Any, exc: BaseException) -> None:
        host, port = self.host_ports[self._host_index]
        opts = self.options
        if _is_auth_error(exc):
            error: BrokerUnavailable = AuthenticationError(
                f"RabbitMQ at {host}:{port} refused user {opts.username!r} "
                f"(vhost {self.vhost!r}): {_reason(exc)}"
            )
            if not self._initial.done():
                self._connecting = False
                settle_future(self._initial, error)
                return
            log.error("RabbitMQ: %s", error)
        elif isinstance(exc, pika.exceptions.ProbableAccessDeniedError) or (
            isinstance(exc, pika.exceptions.ConnectionClosedByBroker) and exc.reply_code == 530
        ):
            error = BrokerUnavailable(
                f"RabbitMQ at {host}:{port} refused vhost {self.vhost!r} for user "
                f"{opts.username!r}: {_reason(exc)}"
            )
            if not self._initial.done():
                self._connecting = False
                settle_future(self._initial, error)
                return
            log.error("RabbitMQ: %s", error)
        if _is_tls_verify_error(exc):
            self._round_tls_failures += 1
            self._round_errors.append(
                f"{host}:{port}: TLS certificate verification failed ({_reason(exc)}); check the "
                "options cacertfile, verify and server_name_indication"
            )
        else:
            self._round_errors.append(f"{host}:{port}: {_reason(exc)}")
        if self._initial.done():
            self.outage.down(exc)  # a reconnection attempt failed: the reason to report
        self._host_index += 1
        if self._host_index < len(self.host_ports):
            self._try_host()
            return
        self._connecting = False
        if not self._initial.done():
            # a certificate the client does not trust stays untrusted: fail at once
            every_host_untrusted = self._round_tls_failures == len(self.host_ports)
            if every_host_untrusted or time.monotonic() + 0.2 >= self._connect_deadline:
                settle_future(
                    self._initial,
                    BrokerUnavailable(
                        f"could not connect to RabbitMQ at {self.where}: "
                        + "; ".join(self._round_errors)
                    ),
                )
                return
            self._ioloop.call_later(0.2, self._connect_round)
            return
        self._window.give_up()
        self._ioloop.call_later(self._backoff.next(), self._connect_round)

    def _on_connection_open(self, conn: Any) -> None:
        self._connecting = False
        self._conn = conn
        self._open_publish_channel(conn)

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
                        f"{_reason(reason)} (does it exist with another type?)"
                    )
                elif code == 403:
                    error = AuthenticationError(
                        f"RabbitMQ refused the exchange {self.options.exchange!r}: "
                        f"{_reason(reason)}"
                    )
                else:
                    error = BrokerUnavailable(f"RabbitMQ publishing channel: {_reason(reason)}")
                settle_future(self._initial, error)
                return
            if self.connection_open() and not self._shutting_down:
                self._ioloop.call_later(1.0, lambda: self._reopen_publish_channel())
            return
        self._publish_lost(reason)
        if self.connection_open() and not self._shutting_down:
            log.warning("RabbitMQ: publishing channel closed (%s); reopening", _reason(reason))
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
        self._window.connection_lost(_reason(reason))

    def _on_connection_closed(self, conn: Any, reason: BaseException) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._publish_lost(reason)
        self.outage.down(reason)
        with self._lock:
            subs = list(self._subscriptions)
        for sub in subs:
            sub.connection_lost()
        if self._shutting_down:
            self._ioloop.stop()
            return
        log.warning("RabbitMQ: lost the connection to %s (%s)", self.where, _reason(reason))
        self._ioloop.call_later(0.1, self._connect_round)

    # ---------------------------------------------------------------- publishing (I/O)

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        channel = self._pub_channel
        if channel is None or not channel.is_open or not self._window.has_queued:
            return
        batch = self._window.queued()
        with self.coalesced_writes():
            self._publish_batch(channel, batch)

    def _publish_batch(self, channel: Any, batch: deque[_Entry]) -> None:
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

    def _on_nack(self, done: list[_Entry]) -> None:
        """I/O thread: the broker nacked ``done``. A quorum queue nacks while it has no
        leader (a node died, an election runs), and RabbitMQ 3.10 keeps nacking on that
        channel afterwards: resend on a fresh publishing channel (1 s later) until
        ``reconnect_timeout`` has passed since a message's first nack, then fail it."""
        now = time.monotonic()
        again: list[_Entry] = []
        failed: list[_Entry] = []
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

    # ---------------------------------------------------------------- SPI

    def publish_routed(
        self, topic: str, body: bytes, *, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        """:meth:`publish` with ``mandatory`` set: an unroutable message fails its future."""
        return self.publish(topic, body, key=key, headers=headers, mandatory=True)

    def publish(
        self,
        topic: str,
        body: bytes,
        *,
        key: str | None,
        headers: Mapping[str, str],
        mandatory: bool | None = None,
    ) -> Future[None]:
        """Queue ``body`` for the I/O thread; the future resolves on the broker's confirm.
        ``mandatory`` (None: the option of that name) fails it if no queue took it.

        A full window (``max_in_flight``) and an outage behave as
        :mod:`msgbus.backendkit.window` says. Raises :class:`~msgbus.MessageTooLarge`,
        :class:`~msgbus.ConfigurationError` (topic, key or header name too long for AMQP) or
        :class:`~msgbus.BusClosed` at once; the future fails with
        :class:`~msgbus.PublishError` (nack, unroutable with ``mandatory``, lost three
        times) or :class:`~msgbus.BrokerUnavailable`. Thread-safe.
        """
        check_publish(
            "RabbitMQ",
            closed=self._closed,
            body=body,
            max_message_bytes=self.options.max_message_bytes,
            key=key,
        )
        if not topic or len(topic) > _SHORTSTR:
            raise ConfigurationError(f"invalid RabbitMQ routing key (topic) {topic[:40]!r}")
        props = _properties(with_message_id(headers), key, self._delivery_mode)
        future: Future[None] = PendingFuture()  # no Condition unless someone waits
        entry = _Entry(
            future,
            topic,
            body if type(body) is bytes else bytes(body),
            props,
            bool(mandatory),  # None: the option, applied per batch
        )
        if not self._window.admit(entry, block=not self.on_io_thread()):
            return future
        with self._lock:
            if self._scheduled or not self._publishing:
                return future
            self._scheduled = True
        self._ioloop.add_callback_threadsafe(self._drain)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every publish so far is confirmed or failed; TimeoutError if not."""
        self._window.flush(timeout)

    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, from_beginning: bool = False
    ) -> Subscription:
        """Declare and bind the group's queue, start consuming on a new channel; return when
        the broker confirmed ``basic.consume``.

        Raises :class:`~msgbus.ConfigurationError` (``from_beginning``, names too long, a
        queue that exists with other arguments), :class:`~msgbus.BrokerUnavailable` (no
        connection within ``connect_timeout``) or :class:`~msgbus.BusClosed`.
        """
        if self._closed:
            raise BusClosed("the RabbitMQ backend is closed")
        if from_beginning:
            raise ConfigurationError(
                "RabbitMQ queues keep no log to replay: from_beginning is not supported"
            )
        if not topic or len(topic) > _SHORTSTR:
            raise ConfigurationError(f"invalid RabbitMQ routing key (topic) {topic[:40]!r}")
        if group is not None and len(group_queue(topic, group).encode()) > _SHORTSTR:
            raise ConfigurationError(
                f"queue name {group_queue(topic, group)[:40]!r}... is longer than 255 bytes"
            )
        sub = _RabbitSubscription(self, topic, group, prefetch)
        with self._lock:
            if self._closed:
                raise BusClosed("the RabbitMQ backend is closed")
            self._subscriptions.add(sub)

        def start() -> None:
            if self.connection_open() and self._pub_channel is not None:
                sub.setup(self._conn)
            # else: set up when the connection (re)opens

        self.call_soon(start)
        try:
            sub.first_setup.result(self._connect_timeout)
        except BaseException as exc:
            sub.close()
            if isinstance(exc, TimeoutError):
                raise BrokerUnavailable(
                    f"RabbitMQ at {self.where} did not set up {sub.describe()} within "
                    f"{self._connect_timeout:g}s"
                ) from None
            raise exc from None
        return sub

    durable_retries = True

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
        """``retry_mode="durable"``: through a delay queue back to the group's queue (see
        :mod:`.rabbitmq_retry`)."""
        from msgbus.backends.rabbitmq_retry import RetryQueues

        with self._lock:
            queues = self.__dict__.setdefault("_retry_queues", RetryQueues(self))
        return queues.publish(
            group_queue(topic, group), body, key=key, headers=headers, delay=delay
        )

    def retry_subscription(self, sub: _RabbitSubscription, delay: float) -> None:
        """I/O thread: set ``sub`` up again after ``delay`` seconds (if still wanted)."""

        def again() -> None:
            if not sub.closed and self.connection_open() and sub in self._subscriptions:
                sub.setup(self._conn)

        self._ioloop.call_later(delay, again)

    def forget(self, sub: _RabbitSubscription) -> None:
        """Drop a closed subscription from the backend's set (called by the subscription)."""
        with self._lock:
            self._subscriptions.discard(sub)

    def consumer_lag(self, topic: str, group: str) -> int | None:
        """Ready messages in the group's queue (see :meth:`Backend.consumer_lag`)."""
        from msgbus.backends.rabbitmq_lag import queue_depth

        if self._closed:
            return None
        return queue_depth(self, group_queue(topic, group), self._connect_timeout)

    def connection_problem(self) -> BaseException | None:
        """While the connection is down (reconnecting): why; else None."""
        return self.outage.problem()

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout``), close subscriptions, the connection and the I/O thread.

        Publishes still unconfirmed at the deadline fail with BrokerUnavailable. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subscriptions)
        self._window.close_and_flush(timeout, log)
        for sub in subs:
            sub.close()
        self._shutdown(timeout=min(5.0, timeout) if timeout is not None else 5.0)

    def _shutdown(self, timeout: float) -> None:
        """Close the connection, fail what is still pending, stop the I/O thread."""

        def stop() -> None:
            self._shutting_down = True
            conn = self._conn
            if conn is not None and (conn.is_open or conn.is_opening):
                try:
                    conn.close()
                    return  # _on_connection_closed stops the loop
                except Exception:
                    log.debug("RabbitMQ: closing the connection failed", exc_info=True)
            self._ioloop.stop()

        if self.call_soon(stop) and not self.on_io_thread():
            self._thread.join(max(0.1, timeout))
            if self._thread.is_alive():
                self.call_soon(self._ioloop.stop)
                self._thread.join(1.0)
        error = BrokerUnavailable("the RabbitMQ backend closed before the broker confirmed")
        with self._lock:
            self._closed = True
        self._window.close()
        stopped = not self._thread.is_alive()
        if stopped:
            self._stopped.set()
        self._window.fail_all(error, unconfirmed=stopped)

    def describe(self) -> str:
        """E.g. ``RabbitMQ (AMQP 0-9-1) at 127.0.0.1:5672 vhost '/' as 'guest'``; no
        password."""
        tls = " over TLS" if self.use_ssl else ""
        return (
            f"RabbitMQ (AMQP 0-9-1{tls}) at {self.where} vhost {self.vhost!r} as "
            f"{self.options.username!r}, exchange {self.options.exchange!r}"
        )

    def __repr__(self) -> str:
        return f"<RabbitMQBackend {self.url.render(hide_password=True)}>"
