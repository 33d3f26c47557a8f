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
    - ``max_in_flight`` (int, 5000): unconfirmed publishes before ``publish`` blocks.
    - ``max_message_bytes`` (int, 128 MiB, RabbitMQ's default ``max_message_size``).
    - ``connect_timeout`` (float s, 10): bound for connecting (all hosts) and for
      ``subscribe``; ``connection_timeout`` (int ms) is RabbitMQ's URI name for it.
    - ``reconnect_timeout`` (float s, 30): see Features.
    - ``heartbeat`` (int s, 30; 0 turns heartbeats off), ``channel_max``, ``frame_max``.
    - ``username``, ``password``, ``vhost``: override the URL's.
    - TLS: ``ssl`` (bool; default true for ``amqps://``), ``cacertfile``, ``certfile``,
      ``keyfile``, ``key_password`` (secret), ``verify`` (``verify_peer`` | ``verify_none``),
      ``server_name_indication`` (host name to check, default the URL's host).
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
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic, BasicProperties

from msgbus.backend import (
    Backend,
    Delivery,
    DeliveryBuffer,
    Features,
    PendingFuture,
    Subscription,
    parse_options,
    settle_future,
)
from msgbus.deadletters import store_queue_name
from msgbus.envelope import new_message_id
from msgbus.errors import (
    AuthenticationError,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    MessageTooLarge,
    PublishError,
)
from msgbus.message import CONTENT_TYPE, CORRELATION_ID, MESSAGE_ID, TIMESTAMP
from msgbus.url import BusURL

__all__ = ["KEY_HEADER", "RabbitMQBackend", "RabbitMQOptions", "group_queue"]

log = logging.getLogger("msgbus.rabbitmq")

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
KEY_HEADER = "msgbus-key"
"""The AMQP header that carries the message key (``Delivery.key`` on receipt)."""
MAX_LOSSES = 3
"""A publish lost with this many connections (or publishing channels) in a row fails."""
_SHORTSTR = 255
_MAX_BACKOFF = 2.0


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


def group_queue(topic: str, group: str) -> str:
    """The durable queue of consumer group ``group`` on ``topic``: ``<topic>.<group>``; the
    dead-letter store (group ``msgbus-dlq`` of ``<t>.dlq``) is the queue ``<t>.dlq``."""
    return store_queue_name(topic, group) or f"{topic}.{group}"


# --------------------------------------------------------------------------- headers


def _properties(headers: Mapping[str, str], key: str | None, delivery_mode: int) -> BasicProperties:
    """msgbus headers and key → AMQP properties. Raises ConfigurationError for header names
    AMQP cannot carry (longer than 255 bytes)."""
    table: dict[str, Any] = {}
    content_type = message_id = correlation_id = None
    timestamp = None
    for name, value in headers.items():
        if name == CONTENT_TYPE and len(value) <= _SHORTSTR and value.isascii():
            content_type = value
        elif name == MESSAGE_ID and len(value) <= _SHORTSTR and value.isascii():
            message_id = value
        elif name == CORRELATION_ID and len(value) <= _SHORTSTR and value.isascii():
            correlation_id = value
        else:
            if len(name) > _SHORTSTR // 4 and len(name.encode()) > _SHORTSTR:
                raise ConfigurationError(
                    f"header name {name[:40]!r}... is longer than AMQP's 255 bytes"
                )
            table[name] = value
            if name == TIMESTAMP:
                try:
                    timestamp = int(value) // 1000
                except ValueError:
                    timestamp = None
    if key is not None:
        table[KEY_HEADER] = key
    return BasicProperties(
        content_type=content_type,
        message_id=message_id,
        correlation_id=correlation_id,
        timestamp=timestamp,
        delivery_mode=delivery_mode,
        headers=table or None,
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None:
        return ""
    return str(value)


def delivery_headers(props: BasicProperties) -> tuple[dict[str, str], str | None]:
    """AMQP properties → msgbus headers and the key (see the module docstring). Pure."""
    out: dict[str, str] = {}
    key = None
    table = props.headers
    if table:
        for name, value in table.items():
            if name == KEY_HEADER:
                key = _text(value)
            else:
                out[name] = value if value.__class__ is str else _text(value)
    if props.content_type is not None:
        out[CONTENT_TYPE] = props.content_type
    if props.message_id is not None:
        out[MESSAGE_ID] = props.message_id
    if props.correlation_id is not None:
        out[CORRELATION_ID] = props.correlation_id
    if TIMESTAMP not in out and props.timestamp:
        out[TIMESTAMP] = str(int(props.timestamp) * 1000)
    return out, key


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


class _Coalescer:
    """Collects emitted frames and passes them on in writes of up to ~256 KiB."""

    __slots__ = ("chunks", "emit", "size")

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit
        self.chunks: list[bytes] = []
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= 262_144:
            self.flush()

    def flush(self) -> None:
        if self.chunks:
            data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            self.chunks = []
            self.size = 0
            self.emit(data)


@contextlib.contextmanager
def _coalesced_writes(conn: Any) -> Iterator[None]:
    """I/O thread: hand the frames pika emits inside the block to its transport in few
    writes (pika otherwise writes, and usually sends, each frame on its own: three system
    calls per published message)."""
    if conn is None or "_adapter_emit_data" in vars(conn) or not conn.is_open:
        yield
        return
    coalescer = _Coalescer(conn._adapter_emit_data)
    conn._adapter_emit_data = coalescer
    try:
        yield
    finally:
        del conn._adapter_emit_data
        if conn.is_open:
            coalescer.flush()


class _Entry:
    """One publish on its way: queued, then on the wire until confirmed."""

    __slots__ = ("body", "future", "losses", "mandatory", "props", "returned", "routing_key")

    def __init__(
        self, future: Future[None], routing_key: str, body: bytes, props: Any, mandatory: bool
    ) -> None:
        self.mandatory = mandatory
        self.future = future
        self.routing_key = routing_key
        self.body = body
        self.props = props
        self.losses = 0
        self.returned: str | None = None


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
            with _coalesced_writes(self.backend.connection()):
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

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries within ``timeout`` s ([] on timeout or close).

        Raises BrokerUnavailable while the connection has been down for longer than
        ``reconnect_timeout`` (the backend keeps reconnecting).
        """
        with self._lock:
            return self._buffer.take(max_messages, timeout, self._check_connection)

    def _check_connection(self) -> None:
        if self.backend.beyond_recovery():
            raise self.backend.unavailable()

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

    def __init__(self, url: BusURL, options: RabbitMQOptions) -> None:
        """Prepare (but do not connect) a backend; use :meth:`from_url` instead."""
        self.url = url
        self.options = options
        self.use_ssl = options.ssl if options.ssl is not None else url.scheme == "amqps"
        port = DEFAULT_TLS_PORT if self.use_ssl else DEFAULT_PORT
        self.host_ports = [(h.host.strip("[]"), h.port or port) for h in url.hosts] or [
            ("localhost", port)
        ]
        self.vhost = options.vhost if options.vhost is not None else (url.path or "/")
        self.where = ",".join(f"{h}:{p}" for h, p in self.host_ports)
        self.features = dataclasses.replace(
            type(self).features,
            persistent=options.persistent,
            max_message_bytes=options.max_message_bytes,
        )
        self._delivery_mode = 2 if options.persistent else 1
        self._connect_timeout = (
            options.connection_timeout / 1000
            if options.connection_timeout is not None
            else options.connect_timeout
        )
        self._ssl_context = self._make_ssl_context() if self.use_ssl else None
        # shared state, under _lock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiting = 0
        self._outbox: deque[_Entry] = deque()
        self._pending = 0
        self._scheduled = False
        self._publishing = False  # the publish channel is up
        self._closed = False
        self._gave_up = False
        self._down_since: float | None = None
        self._last_error: BaseException | None = None
        self._subscriptions: set[_RabbitSubscription] = set()
        # I/O-thread state
        self._ioloop = IOLoop()
        self._conn: Any = None
        self._pub_channel: Any = None
        self._unconfirmed: dict[int, _Entry] = {}
        self._order: deque[int] = deque()
        self._tags = itertools.count(1)
        self._host_index = 0
        self._round_errors: list[str] = []
        self._round_tls_failures = 0
        self._backoff = 0.1
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
        url_fields: dict[str, Any] = {}
        if url.username is not None:
            url_fields["username"] = url.username
        if url.password is not None:
            url_fields["password"] = url.password
        opts = parse_options(
            RabbitMQOptions, url, options, backend="RabbitMQ", url_fields=url_fields
        )
        for name in ("connect_timeout", "reconnect_timeout", "max_in_flight", "max_message_bytes"):
            if getattr(opts, name) <= 0:
                raise ConfigurationError(f"RabbitMQ option {name!r} must be positive")
        if opts.connection_timeout is not None and opts.connection_timeout <= 0:
            raise ConfigurationError("RabbitMQ option 'connection_timeout' must be positive")
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
        self._last_error = exc
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
        self._check_give_up()
        delay, self._backoff = self._backoff, min(_MAX_BACKOFF, self._backoff * 2)
        self._ioloop.call_later(delay, self._connect_round)

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
            self._backoff = 0.1
            with self._lock:
                self._publishing = True
                self._down_since = None
                self._gave_up = False
                self._last_error = None
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
        """I/O thread: the publishing channel is gone; its unconfirmed publishes are resent
        later, or fail once lost with MAX_LOSSES channels."""
        self._pub_channel = None
        lost = [self._unconfirmed[tag] for tag in self._order if tag in self._unconfirmed]
        self._unconfirmed.clear()
        self._order.clear()
        failed: list[_Entry] = []
        again: list[_Entry] = []
        for entry in lost:
            entry.losses += 1
            entry.returned = None
            (failed if entry.losses >= MAX_LOSSES else again).append(entry)
        with self._lock:
            self._publishing = False
            self._outbox.extendleft(reversed(again))
        if failed:
            error = PublishError(
                f"RabbitMQ lost the message with {MAX_LOSSES} connections or channels in a row "
                f"(last: {_reason(reason)})"
            )
            self._finish(failed, error)

    def _on_connection_closed(self, conn: Any, reason: BaseException) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._publish_lost(reason)
        with self._lock:
            subs = list(self._subscriptions)
            if self._down_since is None:
                self._down_since = time.monotonic()
        for sub in subs:
            sub.connection_lost()
        if self._shutting_down:
            self._ioloop.stop()
            return
        self._last_error = reason
        log.warning("RabbitMQ: lost the connection to %s (%s)", self.where, _reason(reason))
        self._ioloop.call_later(0.1, self._connect_round)

    def _check_give_up(self) -> None:
        with self._lock:
            down_since = self._down_since
            if (
                self._gave_up
                or down_since is None
                or time.monotonic() - down_since <= self.options.reconnect_timeout
            ):
                return
            self._gave_up = True
            entries = list(self._outbox)
            self._outbox.clear()
        self._finish(entries, self.unavailable())

    # ---------------------------------------------------------------- publishing (I/O)

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
            channel = self._pub_channel
            if channel is None or not channel.is_open or not self._outbox:
                return
            batch, self._outbox = self._outbox, deque()
        with _coalesced_writes(self._conn):
            self._publish_batch(channel, batch)

    def _publish_batch(self, channel: Any, batch: deque[_Entry]) -> None:
        exchange = self.options.exchange
        unconfirmed = self._unconfirmed
        order = self._order
        tags = self._tags
        publish = channel.basic_publish
        for index, entry in enumerate(batch):
            try:
                publish(exchange, entry.routing_key, entry.body, entry.props, entry.mandatory)
            except Exception as exc:
                rest = list(itertools.islice(batch, index, None))
                if isinstance(exc, pika.exceptions.AMQPError):
                    with self._lock:
                        self._outbox.extendleft(reversed(rest))
                    return
                log.exception("RabbitMQ: could not publish")
                self._finish(rest[:1], PublishError(f"could not publish: {exc}"))
                with self._lock:
                    self._outbox.extendleft(reversed(rest[1:]))
                self.call_soon(self._drain)
                return
            tag = next(tags)  # the broker numbers what it received, from 1 per channel
            unconfirmed[tag] = entry
            order.append(tag)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        unconfirmed = self._unconfirmed
        order = self._order
        done: list[_Entry] = []
        if method.multiple:
            while order and order[0] <= tag:
                entry = unconfirmed.pop(order.popleft(), None)
                if entry is not None:
                    done.append(entry)
        else:
            entry = unconfirmed.pop(tag, None)
            if entry is not None:
                done.append(entry)
            while order and order[0] not in unconfirmed:
                order.popleft()
        if not done:
            return
        if isinstance(method, Basic.Ack):
            for entry in done:
                if entry.returned is None:
                    settle_future(entry.future, None)
                else:
                    settle_future(
                        entry.future,
                        PublishError(
                            f"RabbitMQ returned the message as unroutable ({entry.returned}): "
                            f"no queue is bound to topic {entry.routing_key!r} (mandatory)"
                        ),
                    )
        else:
            error = PublishError("RabbitMQ refused the message (basic.nack)")
            for entry in done:
                settle_future(entry.future, error)
        self._settled(len(done))

    def _on_return(self, _channel: Any, method: Any, props: Any, body: bytes) -> None:
        """A mandatory message no queue took: mark the first matching unconfirmed publish
        (returns arrive in publish order, before that message's ack)."""
        message_id = props.message_id
        for tag in self._order:
            entry = self._unconfirmed.get(tag)
            if (
                entry is not None
                and entry.returned is None
                and entry.routing_key == method.routing_key
                and entry.props.message_id == message_id
                and entry.body == body
            ):
                entry.returned = f"{method.reply_code} {method.reply_text}"
                return

    def _settled(self, count: int) -> None:
        with self._lock:
            self._pending -= count
            if self._waiting:
                self._changed.notify_all()

    def _finish(self, entries: list[_Entry], error: BaseException | None) -> None:
        """Resolve ``entries`` (any thread) and count them as settled."""
        if not entries:
            return
        for entry in entries:
            settle_future(entry.future, error)
        self._settled(len(entries))

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

        Blocks while ``max_in_flight`` publishes are unconfirmed (not on the I/O thread).
        Raises :class:`~msgbus.MessageTooLarge`, :class:`~msgbus.ConfigurationError` (topic,
        key or header name too long for AMQP) or :class:`~msgbus.BusClosed` at once; the
        future fails with :class:`~msgbus.PublishError` (nack, unroutable with
        ``mandatory``, lost three times) or :class:`~msgbus.BrokerUnavailable` (no
        connection for ``reconnect_timeout``, or the backend closed first). Thread-safe.
        """
        if self._closed:
            raise BusClosed("the RabbitMQ backend is closed")
        if len(body) > self.options.max_message_bytes:
            raise MessageTooLarge(
                f"message of {len(body)} bytes exceeds max_message_bytes="
                f"{self.options.max_message_bytes}"
            )
        if not topic or len(topic) > _SHORTSTR:
            raise ConfigurationError(f"invalid RabbitMQ routing key (topic) {topic[:40]!r}")
        if key is not None and not isinstance(key, str):
            raise ConfigurationError(f"key must be a str or None, not {type(key).__name__}")
        if MESSAGE_ID not in headers:  # like a broker-assigned id, for raw publishers
            headers = {**headers, MESSAGE_ID: new_message_id()}
        props = _properties(headers, key, self._delivery_mode)
        future: Future[None] = PendingFuture()  # no Condition unless someone waits
        entry = _Entry(
            future,
            topic,
            body if type(body) is bytes else bytes(body),
            props,
            self.options.mandatory if mandatory is None else mandatory,
        )
        with self._lock:
            if self._closed:
                raise BusClosed("the RabbitMQ backend is closed")
            if self._pending >= self.options.max_in_flight and not self.on_io_thread():
                self._waiting += 1
                try:
                    while (
                        self._pending >= self.options.max_in_flight
                        and not self._closed
                        and not self._gave_up
                    ):
                        self._changed.wait(1.0)
                finally:
                    self._waiting -= 1
                if self._closed:
                    raise BusClosed("the RabbitMQ backend is closed")
            if self._gave_up:
                error = self.unavailable()
                settle_future(future, error)
                return future
            self._outbox.append(entry)
            self._pending += 1
            if self._scheduled or not self._publishing:
                return future
            self._scheduled = True
        self._ioloop.add_callback_threadsafe(self._drain)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every publish so far is confirmed or failed; TimeoutError if not."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._waiting += 1
            try:
                while self._pending > 0:
                    if deadline is None:
                        self._changed.wait(1.0)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"{self._pending} publish(es) not confirmed by RabbitMQ in time"
                        )
                    self._changed.wait(min(remaining, 1.0))
            finally:
                self._waiting -= 1

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

    def connection_problem(self) -> BaseException | None:
        """While the connection is down (reconnecting): why; else None."""
        if self._down_since is None:
            return None
        cause = f": {_reason(self._last_error)}" if self._last_error is not None else ""
        return BrokerUnavailable(f"lost the connection to RabbitMQ at {self.where}{cause}")

    def beyond_recovery(self) -> bool:
        """True while the connection has been down for longer than ``reconnect_timeout``."""
        down_since = self._down_since
        return (
            down_since is not None
            and time.monotonic() - down_since > self.options.reconnect_timeout
        )

    def unavailable(self) -> BrokerUnavailable:
        """The error reported while the connection is down beyond ``reconnect_timeout``."""
        cause = f": {_reason(self._last_error)}" if self._last_error is not None else ""
        return BrokerUnavailable(
            f"no connection to RabbitMQ at {self.where} for more than "
            f"{self.options.reconnect_timeout:g}s{cause}"
        )

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout``), close subscriptions, the connection and the I/O thread.

        Publishes still unconfirmed at the deadline fail with BrokerUnavailable. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subscriptions)
            self._changed.notify_all()
        try:
            self.flush(timeout if timeout is not None else 30.0)
        except TimeoutError:
            log.error("RabbitMQ: closing with unconfirmed publishes")
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
            queued = list(self._outbox)
            self._outbox.clear()
        if not self._thread.is_alive():
            self._stopped.set()
            lost = list(self._unconfirmed.values())
            self._unconfirmed.clear()
            self._order.clear()
            queued += lost
        self._finish(queued, error)

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
