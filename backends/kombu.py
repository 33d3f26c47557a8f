"""Any kombu transport as a msgbus backend: ``kombu+amqp://``, ``kombu+redis://``, ``kombu+memory://``...

Features
    - Mapping: one durable exchange (option ``exchange``, default ``msgbus``; type ``topic``
      where the transport implements it, else ``direct``; either way the routing key is the
      topic and only exact names match). A consumer group ``g`` of topic ``t`` is the kombu
      Queue ``t.g`` bound with routing key ``t`` (durable), so every group gets every message
      and the members of a group compete for them. ``group=None`` is a queue
      ``t.private-<random>`` with ``auto_delete`` (and ``exclusive`` on AMQP) that goes away
      with its subscription. On ``kombu+amqp://`` exchange and queues are exactly those of
      the ``amqp://`` backend, so the two interoperate on one RabbitMQ.
    - Publish: on AMQP transports (py-amqp) messages are persistent and published with
      publisher confirms, **pipelined** (``confirm_select`` on the publishing channel, up to
      ``max_in_flight`` unconfirmed, each future resolved by its ``basic.ack``, ``basic.nack``
      → :class:`~msgbus.PublishError`). On other transports the future resolves when the
      transport has written the message (Redis: the ``LPUSH`` returned; memory: in the
      process), which is as durable as that transport is. Publishing to a topic no queue is
      bound to succeeds and the message is dropped.
    - ``features`` follow the transport: ``persistent`` only on AMQP (Redis keeps messages
      in memory unless the server runs with an fsync'ed append-only file, and even then a
      confirm is not a disk write); ``cross_process`` is False for ``memory``;
      ``per_key_order`` is False (a queue hands out in order, but members of a group compete;
      Redis and memory restore a requeued message at the head, AMQP near its old place);
      ``requeue`` True (``nack(requeue=True)`` is ``basic_reject(requeue=True)``, which every
      kombu transport implements).
    - Consume: kombu ``Consumer`` with manual acks and ``prefetch_count`` = ``prefetch``.
      Unacknowledged messages go back to the queue when a subscription closes (AMQP: the
      broker requeues on channel close; Redis and memory: kombu restores them on channel
      close). A Redis consumer that *dies* without closing holds its unacknowledged messages
      until kombu's ``visibility_timeout`` (transport option, default 1 h) lets another
      consumer restore them.
    - Metadata: ``content-type`` → the kombu content type (a message without one stays
      without), ``msgbus-id`` → ``message_id``, ``msgbus-correlation-id`` →
      ``correlation_id``, the publish time → ``timestamp`` (seconds) plus the header
      ``msgbus-timestamp`` (milliseconds); user and other ``msgbus-*`` headers are message
      headers; the key travels as the header ``msgbus-key``. Bodies are passed as raw bytes
      (no kombu serializer).
    - Threads: kombu connections are not thread-safe, so each backend owns **one** kombu
      ``Connection`` on one dedicated I/O thread (``msgbus-kombu-io``) that publishes, drains
      events, acknowledges and (un)subscribes; other threads only queue work for it. On
      ``kombu+amqp://`` they wake it while it waits for broker frames; on other transports it
      picks up new work every ``poll_interval`` seconds (default 0.005), which bounds the
      extra latency of a publish or an ack on an idle connection. Future callbacks run on
      the I/O thread and must not block.
    - py-amqp (``kombu+amqp://``): reads go through :class:`BufferedTCPTransport`, and
      publishes carry properties the backend encoded itself (byte for byte what py-amqp
      writes), sent by a frame writer given to py-amqp's connection; see docs/kombu.md.
    - Reconnection: when the connection fails the I/O thread reconnects (hosts in URL order,
      backoff to 2 s), redeclares and resubscribes; unconfirmed publishes are sent again (at
      least once), and fail with ``PublishError`` after three lost connections. After
      ``reconnect_timeout`` seconds without a connection, pending and new publishes fail with
      :class:`~msgbus.BrokerUnavailable` and ``receive`` raises it.
    - Errors: a refused login is :class:`~msgbus.AuthenticationError` at once; nothing
      answering within ``connect_timeout`` is ``BrokerUnavailable``. No password in reprs,
      logs or errors.
    - Not supported: replay (``from_beginning``), per-key order across members.

URL form
    ``kombu+<transport>://`` followed by the transport's own URL, handed to
    ``kombu.Connection`` as ``<transport>://...``: ``kombu+amqp://user:pass@host:5672/vhost``,
    ``kombu+redis://:pass@host:6379/0``, ``kombu+memory://``, and kombu URLs whose own
    scheme has a ``+``: ``kombu+sqla+sqlite:////tmp/bus.db`` (kombu's SQLAlchemy transport,
    with bindings kept in the database: see :mod:`msgbus.backends.kombu_sqla`). Several hosts
    (``kombu+amqp://h1,h2/``) become kombu's failover list. Query parameters named ``ssl``,
    ``ssl_*``, ``heartbeat`` and ``login_method`` go to kombu; the others are msgbus options.

Options (URL query or keyword arguments to ``msgbus.connect``)
    - ``exchange`` (str, ``msgbus``): the exchange every topic lives on.
    - ``persistent`` (bool, true): ``delivery_mode=2``.
    - ``max_in_flight`` (int, 5000): unconfirmed publishes before ``publish`` blocks.
    - ``max_message_bytes`` (int, 64 MiB): larger bodies raise ``MessageTooLarge``.
    - ``connect_timeout`` (float s, 10), ``reconnect_timeout`` (float s, 30).
    - ``poll_interval`` (float s, 0.005): see Threads (the longest wait for broker frames on
      ``kombu+amqp://``, where other threads wake the I/O thread).
    - ``transport_options`` (dict, keyword only): passed to ``kombu.Connection``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import select
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, ClassVar

import amqp.transport
import kombu
import kombu.transport.pyamqp
from amqp.exceptions import UnexpectedFrame
from kombu import Consumer, Exchange, Queue
from kombu.transport import get_transport_cls

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

__all__ = [
    "KEY_HEADER",
    "BufferedTCPTransport",
    "KombuBackend",
    "KombuOptions",
    "transport_features",
]

log = logging.getLogger("msgbus.kombu")

KEY_HEADER = "msgbus-key"
"""The message header that carries the key (``Delivery.key`` on receipt)."""
MAX_LOSSES = 3
"""A publish lost with this many connections in a row fails with PublishError."""
_KOMBU_QUERY = ("heartbeat", "login_method", "insist")
_AMQP = ("amqp", "amqps", "pyamqp")
_MAX_BACKOFF = 2.0


@dataclass(frozen=True)
class KombuOptions:
    """Options of the kombu backend (see the module docstring). Immutable."""

    exchange: str = "msgbus"
    persistent: bool = True
    max_in_flight: int = 5000
    max_message_bytes: int = 64 * 1024 * 1024
    connect_timeout: float = 10.0
    reconnect_timeout: float = 30.0
    poll_interval: float = 0.005
    transport_options: dict[str, Any] | None = None


def transport_features(transport: str, max_message_bytes: int, persistent: bool) -> Features:
    """The :class:`~msgbus.backend.Features` of kombu transport ``transport`` (see the
    module docstring)."""
    amqp = transport in _AMQP
    return Features(
        consumer_groups=True,
        per_key_order=False,
        persistent=amqp and persistent,
        native_dead_letter=False,
        requeue=True,
        replay=False,
        cross_process=transport != "memory",
        max_message_bytes=max_message_bytes,
    )


def _check_filesystem_folders(transport_options: Mapping[str, Any]) -> None:
    """kombu's filesystem transport reads and writes folders named by transport options
    (default ``data_in``/``data_out`` in the working directory); refuse at once, naming the
    options, when they are not existing folders."""
    import os

    for name, default in (
        ("data_folder_in", "data_in"),
        ("data_folder_out", "data_out"),
    ):
        folder = transport_options.get(name, default)
        if not os.path.isdir(folder):
            raise ConfigurationError(
                f"kombu's filesystem transport needs the folder {folder!r} ({name}): create "
                "it, or pass existing folders, e.g. transport_options={'data_folder_in': D, "
                "'data_folder_out': D} (D the same for every process)"
            )


def _is_auth_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc).lower()
    return (
        "AccessRefused" in name
        or "Authentication" in name
        or "wrongpass" in text
        or "invalid password" in text
        or "invalid username-password" in text
        or "noauth" in text
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class _Entry:
    __slots__ = ("body", "content_type", "future", "headers", "losses", "properties", "topic")

    def __init__(
        self,
        future: Future[None],
        topic: str,
        body: bytes,
        content_type: str | None,
        headers: dict[str, Any],
        properties: dict[str, Any],
    ) -> None:
        self.future = future
        self.topic = topic
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.properties = properties
        self.losses = 0


# --------------------------------------------------------------------------- py-amqp reads

_READ_SIZE = 65536
_FRAME_HEADER = struct.Struct(">BHI")
_FRAME_END = 0xCE
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class BufferedTCPTransport(amqp.transport.TCPTransport):
    """py-amqp's TCP transport with buffered reads (``kombu+amqp://``, not ``amqps://``).

    py-amqp's own transport reads every frame with three ``recv`` calls (header, payload,
    frame end), and ``Connection.blocking_read`` changes the socket's timeout before and
    after each frame. This one keeps what one ``recv`` of up to 64 KiB returned and cuts
    frames out of it, and waits for data with ``poll`` instead of socket timeouts, so a
    frame that is already buffered costs no system call. A frame is taken from the buffer
    only once it is complete, so a timeout never loses a partial frame. Writes are
    py-amqp's (``sendall``). Used by the I/O thread only, like the connection.
    """

    def _setup_transport(self) -> None:
        super()._setup_transport()
        self._inbox = b""
        self._inpos = 0
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN)
        self._waker: socket.socket | None = None

    def wake_on(self, waker: socket.socket) -> None:
        """Let a byte arriving on the (non-blocking) socket ``waker`` end a wait for broker
        data early, as a timeout (the byte is read), so that other threads can hand the
        I/O thread work while it waits."""
        self._waker = waker
        self._poller.register(waker, select.POLLIN)

    def read_frame_within(self, timeout: float | None) -> tuple[int, int, bytes]:
        """The next frame as ``(type, channel, payload)``.

        Waits up to ``timeout`` seconds for each ``recv`` (None: no limit; 0: only what has
        arrived) and raises :class:`socket.timeout` when nothing came; OSError when the
        connection failed or the broker closed it; ``UnexpectedFrame`` on a corrupt frame.
        """
        while True:
            inbox, pos = self._inbox, self._inpos
            if len(inbox) - pos >= 8:
                frame_type, channel, size = _FRAME_HEADER.unpack_from(inbox, pos)
                end = pos + 7 + size
                if len(inbox) > end:
                    if inbox[end] != _FRAME_END:
                        raise UnexpectedFrame(
                            f"Received frame_end {inbox[end]:#04x} while expecting 0xce"
                        )
                    self._inpos = end + 1
                    return frame_type, channel, inbox[pos + 7 : end]
            self._receive(timeout)

    def read_frame(self, unpack: Any = None) -> tuple[int, int, bytes]:
        """py-amqp's entry point: the next frame, waiting as long as the socket's timeout."""
        return self.read_frame_within(self.sock.gettimeout())

    def _receive(self, timeout: float | None) -> None:
        sock = self.sock
        try:
            try:
                if timeout is None:
                    data = sock.recv(_READ_SIZE)
                else:
                    data = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if not timeout or not self._wait(timeout):
                    raise TimeoutError() from None
                data = sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
        except TimeoutError:
            raise
        except OSError as exc:
            if exc.errno in _RETRY:
                raise TimeoutError() from None
            self.connected = False
            raise
        if not data:
            self.connected = False
            raise OSError("Server unexpectedly closed connection")
        rest = self._inbox[self._inpos :]
        self._inbox = rest + data if rest else data
        self._inpos = 0

    def _wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True when the broker's socket is readable."""
        readable = False
        waker = self._waker
        for fd, _events in self._poller.poll(timeout * 1000):
            if waker is not None and fd == waker.fileno():
                with contextlib.suppress(OSError):
                    waker.recv(4096)
            else:
                readable = True
        return readable


class _AMQPConnection(kombu.transport.pyamqp.Connection):
    """kombu's py-amqp connection, on a :class:`BufferedTCPTransport` for plain TCP.

    It does not ask for ``connection.blocked`` notifications: with them py-amqp tries to
    read the socket before every ``basic_publish`` (a system call per message), only to
    hand them to an ``on_blocked`` callback that kombu never sets. A blocked connection
    still holds publishes back (the broker stops reading); their confirms come later.
    """

    negotiate_capabilities: ClassVar[dict[str, bool]] = {
        **amqp.Connection.negotiate_capabilities,
        "connection.blocked": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("frame_writer", _frame_writer)
        super().__init__(*args, **kwargs)

    def Transport(
        self,
        host: str,
        connect_timeout: float | None,
        ssl: Any = False,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        socket_settings: Any = None,
        **kwargs: Any,
    ) -> Any:
        if ssl:
            return super().Transport(
                host,
                connect_timeout,
                ssl,
                read_timeout,
                write_timeout,
                socket_settings=socket_settings,
                **kwargs,
            )
        return BufferedTCPTransport(
            host,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            socket_settings=socket_settings,
            **kwargs,
        )

    def blocking_read(self, timeout: float | None = None) -> Any:
        transport = self.transport
        if not isinstance(transport, BufferedTCPTransport):
            return super().blocking_read(timeout)
        return self.on_inbound_frame(transport.read_frame_within(timeout))


class _AMQPTransport(kombu.transport.pyamqp.Transport):
    Connection = _AMQPConnection


class _AMQPSSLTransport(kombu.transport.pyamqp.SSLTransport):
    Connection = _AMQPConnection


_OUR_AMQP = {
    kombu.transport.pyamqp.Transport: _AMQPTransport,
    kombu.transport.pyamqp.SSLTransport: _AMQPSSLTransport,
}


class _KombuConnection(kombu.Connection):
    """A ``kombu.Connection`` whose py-amqp transports use :class:`_AMQPConnection` (also
    after a failover switch); the other transports are kombu's own."""

    def get_transport_cls(self) -> Any:
        cls = super().get_transport_cls()
        return _OUR_AMQP.get(cls, cls)


# --------------------------------------------------------------------------- py-amqp writes

_FLAG = {
    "content_type": 1 << 15,
    "application_headers": 1 << 13,
    "delivery_mode": 1 << 12,
    "correlation_id": 1 << 10,
    "message_id": 1 << 7,
    "timestamp": 1 << 6,
}
_PROPERTY_NAMES = ("delivery_mode", "correlation_id", "message_id", "timestamp")  # flag order
_PROPERTY_SET = frozenset(_PROPERTY_NAMES)
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_LONGSTR = struct.Struct(">cI")
_METHOD_FRAME = struct.Struct(">BHIHH")
_FRAME = struct.Struct(">BHI")
_CONTENT_HEADER = struct.Struct(">HHQ")


def _shortstr(text: str) -> bytes | None:
    data = text.encode("utf-8", "surrogatepass")
    return bytes((len(data),)) + data if len(data) <= 255 else None


_NAMES: dict[str, bytes] = {}  # header names and content types recur: encoded once


def _name(text: str) -> bytes | None:
    field = _NAMES.get(text)
    if field is None:
        field = _shortstr(text)
        if field is not None and len(_NAMES) < 1024:
            _NAMES[text] = field
    return field


def encode_basic_properties(
    content_type: str | None, headers: Mapping[str, Any], properties: Mapping[str, Any]
) -> bytes | None:
    """The AMQP 0-9-1 property flags and list of a published message, as py-amqp would
    write them: ``content_type``, the ``headers`` table (string values, as ``S``),
    ``delivery_mode``, ``correlation_id``, ``message_id`` and ``timestamp`` (seconds) from
    ``properties``. None when something does not fit this form (py-amqp then encodes it).
    """
    flags = 0
    parts: list[bytes] = []
    if content_type is not None:
        field = _name(content_type)
        if field is None:
            return None
        flags |= _FLAG["content_type"]
        parts.append(field)
    if headers:
        table: list[bytes] = []
        for name, value in headers.items():
            field = _name(name)
            if field is None or value.__class__ is not str:
                return None
            data = value.encode("utf-8", "surrogatepass")
            table += (field, _LONGSTR.pack(b"S", len(data)), data)
        encoded = b"".join(table)
        flags |= _FLAG["application_headers"]
        parts += (_U32.pack(len(encoded)), encoded)
    if not properties.keys() <= _PROPERTY_SET:
        return None
    for name in _PROPERTY_NAMES:
        value = properties.get(name)
        if value is None:
            continue
        if name == "delivery_mode" and value.__class__ is int and 0 <= value <= 255:
            parts.append(bytes((value,)))
        elif name == "timestamp" and value.__class__ is int and 0 <= value < 1 << 64:
            parts.append(_U64.pack(value))
        elif name in ("correlation_id", "message_id") and value.__class__ is str:
            field = _shortstr(value)
            if field is None:
                return None
            parts.append(field)
        else:
            return None
        flags |= _FLAG[name]
    return _U16.pack(flags) + b"".join(parts)


class EncodedMessage:
    """A message body with its properties already encoded (see
    :func:`encode_basic_properties`), for ``basic_publish`` on a :class:`_AMQPConnection`
    channel: its frame writer sends the three frames without py-amqp's per-message
    serialization."""

    __slots__ = ("body", "properties")

    def __init__(self, body: bytes, properties: bytes) -> None:
        self.body = body
        self.properties = properties


def _frame_writer(connection: Any, transport: Any) -> Callable[..., None]:
    """py-amqp's frame writer (``amqp.Connection(frame_writer=...)``) with a short path for
    :class:`EncodedMessage` content: method, content-header and body frames (the body cut
    at ``frame_max``) built with precompiled structs and written at once. Everything else
    goes through py-amqp's own writer."""
    standard = amqp.method_framing.frame_writer(connection, transport)
    write = transport.write

    def write_frame(kind: int, channel: int, method_sig: Any, args: Any, content: Any) -> None:
        if content.__class__ is not EncodedMessage:
            standard(kind, channel, method_sig, args, content)
            return
        if args.__class__ is str:
            args = args.encode("utf-8")
        class_id, method_id = method_sig
        body, properties = content.body, content.properties
        header = _CONTENT_HEADER.pack(class_id, 0, len(body)) + properties
        parts = [
            _METHOD_FRAME.pack(1, channel, 4 + len(args), class_id, method_id),
            args,
            b"\xce",
            _FRAME.pack(2, channel, len(header)),
            header,
            b"\xce",
        ]
        chunk = connection.frame_max - 8
        view = memoryview(body)
        for start in range(0, len(body), chunk):
            piece = view[start : start + chunk]
            parts += (_FRAME.pack(3, channel, len(piece)), piece, b"\xce")
        write(b"".join(parts))
        connection.bytes_sent += 1

    return write_frame


# --------------------------------------------------------------------------- subscriptions


class _KombuSubscription(Subscription):
    """A member of a group: a kombu Consumer on its own channel of the backend's connection.

    ``receive`` runs on the consuming thread; ``ack``/``nack`` (any thread) and ``close``
    (any thread) are queued for the I/O thread.
    """

    def __init__(self, backend: KombuBackend, topic: str, group: str | None, prefetch: int):
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
            exclusive=group is None and backend.transport in _AMQP,
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
        except BaseException:
            _close_quietly(channel)
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
                headers, key = _delivery_headers(message)
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
            _close_quietly(channel)
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
        if self.backend.beyond_recovery():
            raise self.backend.unavailable()

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


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception as exc:
        log.debug("kombu: closing a channel failed: %s", exc)


def _delivery_headers(message: Any) -> tuple[dict[str, str], str | None]:
    """A kombu message's headers and properties → msgbus headers and the key."""
    out: dict[str, str] = {}
    key = None
    for name, value in (message.headers or {}).items():
        if name == KEY_HEADER:
            key = _text(value)
        else:
            out[name] = value if value.__class__ is str else _text(value)
    props = message.properties or {}
    if message.content_type:
        out[CONTENT_TYPE] = message.content_type
    if props.get("message_id"):
        out[MESSAGE_ID] = _text(props["message_id"])
    if props.get("correlation_id"):
        out[CORRELATION_ID] = _text(props["correlation_id"])
    stamp = props.get("timestamp")
    if TIMESTAMP not in out and stamp:
        with contextlib.suppress(TypeError, ValueError):
            out[TIMESTAMP] = str(int(stamp) * 1000)
    return out, key


# --------------------------------------------------------------------------- backend


class KombuBackend(Backend):
    """Any kombu transport (see the module docstring for features, URL and options).

    Thread-safe: ``publish``, ``flush``, ``subscribe`` and ``close`` may be called from any
    thread; the kombu connection is only used by the backend's I/O thread. ``from_url``
    raises :class:`~msgbus.BrokerUnavailable` within ``connect_timeout`` and
    :class:`~msgbus.AuthenticationError` at once for refused credentials.
    """

    schemes = ("kombu",)
    features = transport_features("amqp", KombuOptions.max_message_bytes, True)
    extra = "kombu"

    def __init__(self, url: BusURL, options: KombuOptions, kombu_urls: list[str]) -> None:
        """Prepare (but do not connect) a backend; use :meth:`from_url` instead."""
        self.url = url
        self.options = options
        self.transport = url.driver.partition("+")[0]
        self._kombu_urls = kombu_urls
        self.features = transport_features(
            self.transport, options.max_message_bytes, options.persistent
        )
        self._delivery_mode = 2 if options.persistent else 1
        self.exchange = Exchange(options.exchange, type="topic", durable=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiting = 0
        self._outbox: deque[_Entry] = deque()
        self._pending = 0
        self._commands: deque[Callable[[], None]] = deque()
        self._wake = threading.Event()
        # wakes the I/O thread while it waits for py-amqp frames (_sleeping: it may)
        self._waker, self._waker_w = socket.socketpair()
        self._waker.setblocking(False)
        self._waker_w.setblocking(False)
        self._sleeping = False
        self._closed = False
        self._stopping = False
        self._down_since: float | None = None
        self._gave_up = False
        self._last_error: BaseException | None = None
        self._subscriptions: set[_KombuSubscription] = set()
        # I/O-thread state
        self._conn: Any = None
        self._epoch = 0
        self._pub_channel: Any = None
        self._confirms = False
        self._unconfirmed: dict[int, _Entry] = {}
        self._order: deque[int] = deque()
        self._tags = itertools.count(1)
        self._initial: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="msgbus-kombu-io", daemon=True)
        self._stopped = threading.Event()

    @classmethod
    def from_url(cls, url: BusURL, **options: Any) -> KombuBackend:
        """Connect to the transport named after ``kombu+`` and declare the exchange.

        Raises :class:`~msgbus.UnknownOption` (listing the valid options),
        :class:`~msgbus.ConfigurationError` (no or unknown transport),
        :class:`~msgbus.BrokerUnavailable` (within ``connect_timeout``) or
        :class:`~msgbus.AuthenticationError`.
        """
        if not url.driver:
            raise ConfigurationError(
                f"a kombu URL names its transport: kombu+<transport>://..., e.g. "
                f"kombu+amqp://host/ or kombu+redis://host:6379/0, not {url.render()!r}"
            )
        try:
            get_transport_cls(url.driver.partition("+")[0])
        except (KeyError, ImportError, ValueError) as exc:
            raise ConfigurationError(
                f"kombu has no usable transport {url.driver!r}: {exc}"
            ) from None
        passed = {k: v for k, v in url.query.items() if k.startswith("ssl") or k in _KOMBU_QUERY}
        ours = url.with_query(**dict.fromkeys(passed))
        opts = parse_options(KombuOptions, ours, options, backend="kombu")
        for name in (
            "connect_timeout",
            "reconnect_timeout",
            "max_in_flight",
            "max_message_bytes",
            "poll_interval",
        ):
            if getattr(opts, name) <= 0:
                raise ConfigurationError(f"kombu option {name!r} must be positive")
        if opts.transport_options is not None and not isinstance(opts.transport_options, dict):
            raise ConfigurationError("kombu option 'transport_options' must be a dict")
        if url.driver == "filesystem":
            _check_filesystem_folders(opts.transport_options or {})
        for_kombu = url.with_query(**{k: None for k in url.query if k not in passed})
        hosts = for_kombu.hosts or ()
        if len(hosts) > 1:
            urls = [
                dataclasses.replace(for_kombu, hosts=(host,)).render(
                    hide_password=False, scheme=url.driver
                )
                for host in hosts
            ]
        else:
            urls = [for_kombu.render(hide_password=False, scheme=url.driver)]
        backend = cls(url, opts, urls)
        backend._open()
        return backend

    # ---------------------------------------------------------------- I/O thread

    def _open(self) -> None:
        started = time.monotonic()
        self._thread.start()
        try:
            self._initial.result(self.options.connect_timeout + 5.0)
        except BaseException as exc:
            self._stop_thread(2.0)
            if isinstance(exc, TimeoutError):
                exc = BrokerUnavailable(
                    f"could not connect to kombu transport at {self.where} in time"
                )
            if type(exc) is BrokerUnavailable:
                exc = BrokerUnavailable(
                    f"{exc} (tried for {time.monotonic() - started:.1f}s, "
                    f"connect_timeout={self.options.connect_timeout:g}s)"
                )
            raise exc from None

    @property
    def where(self) -> str:
        """The URL without password (for messages)."""
        return self.url.render(hide_password=True)

    def _new_connection(self) -> Any:
        conn = _KombuConnection(
            self._kombu_urls if len(self._kombu_urls) > 1 else self._kombu_urls[0],
            connect_timeout=self.options.connect_timeout,
            transport_options=dict(self.options.transport_options or {}),
        )
        if self.transport == "sqla":  # bindings shared between processes: see kombu_sqla
            from msgbus.backends.kombu_sqla import SharedBindingsTransport

            conn.transport_cls = SharedBindingsTransport
        return conn

    def _connect(self, deadline: float, initial: bool) -> bool:
        """I/O thread: one attempt per host; True when connected and set up."""
        conn = self._new_connection()
        try:
            conn.connect()
            channel = conn.channel()
            exchange_type = "topic"
            if "topic" not in getattr(conn.transport.implements, "exchange_type", ("topic",)):
                exchange_type = "direct"
            self.exchange = Exchange(self.options.exchange, type=exchange_type, durable=True)
            self.exchange(channel).declare()
            confirms = self.transport in _AMQP and hasattr(channel, "confirm_select")
            if confirms:
                channel.confirm_select()
                channel.events["basic_ack"].add(self._on_ack)
                channel.events["basic_nack"].add(self._on_nack)
        except Exception as exc:
            _release_quietly(conn)
            self._last_error = exc
            if _is_auth_error(exc):
                error = AuthenticationError(
                    f"kombu transport at {self.where} refused the credentials: {exc}"
                )
                if initial:
                    settle_future(self._initial, error)
                    return False
                log.error("kombu: %s", error)
            elif initial and time.monotonic() >= deadline:
                settle_future(
                    self._initial,
                    BrokerUnavailable(
                        f"could not connect to kombu transport at {self.where}: {exc}"
                    ),
                )
            return False
        transport = getattr(conn.connection, "transport", None)
        if isinstance(transport, BufferedTCPTransport):
            transport.wake_on(self._waker)
        self._conn = conn
        self._epoch += 1
        self._pub_channel = channel
        self._confirms = confirms
        self._tags = itertools.count(1)
        with self._lock:
            self._down_since = None
            self._gave_up = False
            subs = list(self._subscriptions)
        for sub in subs:
            self._setup(sub)
        settle_future(self._initial, None)
        return True

    def _setup(self, sub: _KombuSubscription) -> None:
        if sub.closed or sub.channel is not None:
            return
        try:
            sub.setup(self._conn, self._epoch)
        except Exception as exc:
            if not sub.first_setup.done():
                settle_future(sub.first_setup, _setup_error(sub, exc))
            else:
                raise

    def _run(self) -> None:
        opts = self.options
        backoff = 0.1
        initial_deadline = time.monotonic() + opts.connect_timeout
        while not self._stopping:
            if self._conn is None:
                initial = not self._initial.done()
                if self._connect(initial_deadline, initial):
                    backoff = 0.1
                    continue
                if initial and self._initial.done():
                    break  # from_url reports the failure
                self._check_give_up()
                self._wake.wait(0.2 if initial else backoff)
                if not initial:
                    backoff = min(_MAX_BACKOFF, backoff * 2)
                continue
            try:
                if self._commands:
                    self._run_commands()
                if self._outbox:
                    with self.coalesced_writes():
                        self._drain_outbox()
                if self._consumers() or self._unconfirmed:
                    self._sleeping = True  # before looking for work: see _nudge
                    idle = not (self._commands or self._outbox)
                    with contextlib.suppress(TimeoutError, socket.timeout):
                        self._conn.drain_events(timeout=opts.poll_interval if idle else 0)
                    self._sleeping = False
                    if self._conn is not None and self._conn.heartbeat:
                        self._conn.heartbeat_check()
                else:
                    self._wake.wait(0.5)
                    self._wake.clear()
            except Exception as exc:
                if self._stopping:
                    break
                self._lost(exc)
        self._shutdown_io()

    @contextlib.contextmanager
    def coalesced_writes(self) -> Iterator[None]:
        """I/O thread: on py-amqp, collect the frames written inside the block and send them
        with one system call (py-amqp otherwise calls ``sendall`` once per frame)."""
        amqp_conn = getattr(self._conn, "_connection", None)
        transport = getattr(amqp_conn, "transport", None)
        original = getattr(transport, "_write", None)
        if original is None:
            yield
            return
        chunks: list[bytes] = []

        def collect(data: Any) -> None:
            chunks.append(bytes(data))  # py-amqp reuses its frame buffer: copy

        transport._write = collect
        try:
            yield
        finally:
            transport._write = original
            if chunks:
                transport.write(b"".join(chunks))

    def _consumers(self) -> bool:
        with self._lock:
            return bool(self._subscriptions)

    def _run_commands(self) -> None:
        commands = self._commands
        for _ in range(len(commands)):
            commands.popleft()()

    def _lost(self, exc: BaseException) -> None:
        """I/O thread: the connection failed; requeue unconfirmed, void deliveries."""
        log.warning("kombu: lost the connection to %s (%s); reconnecting", self.where, exc)
        self._last_error = exc
        conn, self._conn = self._conn, None
        self._pub_channel = None
        if conn is not None:
            _release_quietly(conn)
        lost = [self._unconfirmed[tag] for tag in self._order if tag in self._unconfirmed]
        self._unconfirmed.clear()
        self._order.clear()
        failed, again = [], []
        for entry in lost:
            entry.losses += 1
            (failed if entry.losses >= MAX_LOSSES else again).append(entry)
        with self._lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
            self._outbox.extendleft(reversed(again))
            subs = list(self._subscriptions)
        for sub in subs:
            sub.lost()
        self._finish(failed, PublishError(f"kombu lost the message {MAX_LOSSES} times: {exc}"))

    def _check_give_up(self) -> None:
        with self._lock:
            down = self._down_since
            if (
                self._gave_up
                or down is None
                or time.monotonic() - down <= self.options.reconnect_timeout
            ):
                return
            self._gave_up = True
            entries = list(self._outbox)
            self._outbox.clear()
        self._finish(entries, self.unavailable())

    def _drain_outbox(self) -> None:
        with self._lock:
            if not self._outbox:
                return
            batch, self._outbox = self._outbox, deque()
        channel = self._pub_channel
        exchange = self.exchange.name
        confirms = self._confirms
        encoded = isinstance(getattr(channel, "connection", None), _AMQPConnection)
        content_encoding = None if self.transport in _AMQP else "binary"
        done: list[_Entry] = []
        try:
            while batch:
                entry = batch[0]
                message: Any = None
                if encoded:
                    properties = encode_basic_properties(
                        entry.content_type, entry.headers, entry.properties
                    )
                    if properties is not None:
                        message = EncodedMessage(entry.body, properties)
                if message is None:
                    message = channel.prepare_message(
                        entry.body,
                        None,
                        entry.content_type,
                        content_encoding,
                        dict(entry.headers),
                        dict(entry.properties),
                    )
                if confirms:
                    tag = next(self._tags)
                    self._unconfirmed[tag] = entry
                    self._order.append(tag)
                    batch.popleft()
                    channel.basic_publish(message, exchange=exchange, routing_key=entry.topic)
                else:
                    channel.basic_publish(message, exchange=exchange, routing_key=entry.topic)
                    batch.popleft()
                    done.append(entry)
        finally:
            if batch:
                with self._lock:
                    self._outbox.extendleft(reversed(batch))
            self._finish(done, None)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._confirmed(tag, multiple, None)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._confirmed(tag, multiple, PublishError("the broker refused the message (nack)"))

    def _confirmed(self, tag: int, multiple: bool, error: BaseException | None) -> None:
        unconfirmed, order = self._unconfirmed, self._order
        done: list[_Entry] = []
        if multiple:
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
        self._finish(done, error)

    def _finish(self, entries: list[_Entry], error: BaseException | None) -> None:
        if not entries:
            return
        for entry in entries:
            settle_future(entry.future, error)
        with self._lock:
            self._pending -= len(entries)
            if self._waiting:
                self._changed.notify_all()

    def _shutdown_io(self) -> None:
        """I/O thread, at exit: close subscriptions' channels and the connection."""
        with self._lock:
            subs = list(self._subscriptions)
        self._run_commands()
        for sub in subs:
            sub.close_channel()
        if self._conn is not None:
            _release_quietly(self._conn)
            self._conn = None
        lost = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        with self._lock:
            lost += list(self._outbox)
            self._outbox.clear()
        self._finish(lost, BrokerUnavailable("the kombu backend closed before confirmation"))
        self._stopped.set()
        self._waker.close()
        self._waker_w.close()

    def _stop_thread(self, timeout: float) -> None:
        self._stopping = True
        self._nudge()
        if not self.on_io_thread():
            self._thread.join(timeout)

    # ---------------------------------------------------------------- helpers

    def call_soon(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the I/O thread (any thread). False once the thread has stopped."""
        if self._stopped.is_set():
            return False
        self._commands.append(fn)
        self._nudge()
        return True

    def _nudge(self) -> None:
        """Any thread, after queueing work: wake the I/O thread if it waits."""
        if not self._wake.is_set():  # the I/O thread clears it before it looks for work
            self._wake.set()
        if self._sleeping:  # waiting for py-amqp frames (set before it looked for work)
            self._sleeping = False
            with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
                self._waker_w.send(b"\0")

    def on_io_thread(self) -> bool:
        """True when called on the backend's I/O thread."""
        return threading.current_thread() is self._thread

    def forget(self, sub: _KombuSubscription) -> None:
        """Drop a closed subscription (called by the subscription)."""
        with self._lock:
            self._subscriptions.discard(sub)

    def connection_problem(self) -> BaseException | None:
        """While the connection is down (reconnecting): why; else None."""
        if self._down_since is None:
            return None
        cause = f": {self._last_error}" if self._last_error is not None else ""
        return BrokerUnavailable(f"lost the connection to {self.where}{cause}")

    def beyond_recovery(self) -> bool:
        """True while the connection has been down for longer than ``reconnect_timeout``."""
        down = self._down_since
        return down is not None and time.monotonic() - down > self.options.reconnect_timeout

    def unavailable(self) -> BrokerUnavailable:
        """The error reported while the connection is down beyond ``reconnect_timeout``."""
        cause = f": {self._last_error}" if self._last_error is not None else ""
        return BrokerUnavailable(
            f"no connection to kombu transport at {self.where} for more than "
            f"{self.options.reconnect_timeout:g}s{cause}"
        )

    # ---------------------------------------------------------------- SPI

    def publish(
        self, topic: str, body: bytes, *, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        """Queue ``body`` for the I/O thread; the future resolves on the broker's confirm
        (AMQP) or once the transport wrote it (others).

        Blocks while ``max_in_flight`` publishes are pending (not on the I/O thread). Raises
        :class:`~msgbus.MessageTooLarge` or :class:`~msgbus.BusClosed` at once; the future
        fails with :class:`~msgbus.PublishError` or :class:`~msgbus.BrokerUnavailable`.
        Thread-safe.
        """
        if self._closed:
            raise BusClosed("the kombu backend is closed")
        if len(body) > self.options.max_message_bytes:
            raise MessageTooLarge(
                f"message of {len(body)} bytes exceeds max_message_bytes="
                f"{self.options.max_message_bytes}"
            )
        table: dict[str, Any] = {}
        properties: dict[str, Any] = {"delivery_mode": self._delivery_mode}
        content_type = None
        for name, value in headers.items():
            if name == CONTENT_TYPE:
                content_type = value
            elif name == MESSAGE_ID:
                properties["message_id"] = value
            elif name == CORRELATION_ID:
                properties["correlation_id"] = value
            else:
                table[name] = value
                if name == TIMESTAMP:
                    with contextlib.suppress(ValueError):
                        properties["timestamp"] = int(value) // 1000
        if "message_id" not in properties:
            properties["message_id"] = new_message_id()
        if key is not None:
            table[KEY_HEADER] = key
        future: Future[None] = PendingFuture()  # no Condition unless someone waits
        entry = _Entry(future, topic, bytes(body), content_type, table, properties)
        with self._lock:
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
                raise BusClosed("the kombu backend is closed")
            if self._gave_up:
                settle_future(future, self.unavailable())
                return future
            self._outbox.append(entry)
            self._pending += 1
        self._nudge()
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
                        raise TimeoutError(f"{self._pending} publish(es) not confirmed in time")
                    self._changed.wait(min(remaining, 1.0))
            finally:
                self._waiting -= 1

    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, from_beginning: bool = False
    ) -> Subscription:
        """Declare and bind the group's queue and start a kombu Consumer; return when it
        consumes. Raises ConfigurationError (``from_beginning``), BrokerUnavailable (not
        within ``connect_timeout``) or BusClosed."""
        if self._closed:
            raise BusClosed("the kombu backend is closed")
        if from_beginning:
            raise ConfigurationError("kombu queues keep no log: from_beginning is not supported")
        sub = _KombuSubscription(self, topic, group, prefetch)
        with self._lock:
            self._subscriptions.add(sub)

        def start() -> None:
            if self._conn is not None:
                self._setup(sub)

        self.call_soon(start)
        try:
            sub.first_setup.result(self.options.connect_timeout)
        except BaseException as exc:
            sub.close()
            if isinstance(exc, TimeoutError):
                raise BrokerUnavailable(
                    f"kombu transport at {self.where} did not set up queue {sub.queue.name!r} "
                    f"within {self.options.connect_timeout:g}s"
                ) from None
            raise exc from None
        return sub

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout``), close subscriptions and the connection. Idempotent.

        Publishes still unconfirmed at the deadline fail with BrokerUnavailable.
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
            log.error("kombu: closing with unconfirmed publishes")
        for sub in subs:
            sub.close()
        self._stop_thread(min(5.0, timeout) if timeout is not None else 5.0)

    def describe(self) -> str:
        """E.g. ``kombu redis transport at redis://127.0.0.1:6379/0``; no password."""
        return f"kombu {self.transport} transport at {self.where}"

    def __repr__(self) -> str:
        return f"<KombuBackend {self.where}>"


def _setup_error(sub: _KombuSubscription, exc: BaseException) -> BaseException:
    text = str(exc)
    if "PRECONDITION" in text.upper() or "inequivalent" in text:
        return ConfigurationError(f"the broker refused queue {sub.queue.name!r}: {text}")
    if _is_auth_error(exc):
        return AuthenticationError(f"the broker refused queue {sub.queue.name!r}: {text}")
    return BrokerUnavailable(f"could not subscribe to queue {sub.queue.name!r}: {text}")


def _release_quietly(conn: Any) -> None:
    try:
        conn.release()
    except Exception as exc:
        log.debug("kombu: releasing the connection failed: %s", exc)
