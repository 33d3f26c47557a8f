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
    - py-amqp fast path (``kombu+amqp://``): :mod:`msgbus.backends.kombu_fastpath` buffers
      reads, encodes properties itself (byte for byte what py-amqp writes) and writes frames
      in batches; see docs/kombu.md. It is used only on the py-amqp versions it was verified
      on; otherwise (or with ``fast_path=false`` or ``MSGBUS_FAST_PATH=0``) kombu and
      py-amqp run unchanged, and on an idle connection new work waits up to
      ``poll_interval``.
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
    - ``max_in_flight`` (int, 5000): unconfirmed publishes before ``publish`` blocks
      (at most ``reconnect_timeout``; the one rule of :mod:`msgbus.backendkit.window`).
    - ``max_message_bytes`` (int, 64 MiB): larger bodies raise ``MessageTooLarge``.
    - ``connect_timeout`` (float s, 10), ``reconnect_timeout`` (float s, 30).
    - ``poll_interval`` (float s, 0.005): see Threads (the longest wait for broker frames on
      ``kombu+amqp://``, where other threads wake the I/O thread).
    - ``transport_options`` (dict, keyword only): passed to ``kombu.Connection``.
    - ``fast_path`` (bool, true): use the py-amqp fast path where it was verified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import kombu
from kombu import Consumer, Exchange, Queue
from kombu.transport import get_transport_cls

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
    parse_options,
    require_positive,
    settle_future,
    with_message_id,
)
from msgbus.backendkit.amqp import from_amqp, to_amqp
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
from msgbus.message import MESSAGE_ID
from msgbus.url import BusURL

__all__ = [
    "KEY_HEADER",
    "KombuBackend",
    "KombuOptions",
    "transport_features",
]

log = logging.getLogger("msgbus.kombu")

_KOMBU_QUERY = ("heartbeat", "login_method", "insist")
_AMQP = ("amqp", "amqps", "pyamqp")
LAG_TRANSPORTS = (*_AMQP, "memory", "sqla")
"""Transports whose passive queue declare counts an empty queue as 0 (Redis's does not: an
empty queue is a missing key there, like a queue that does not exist), so consumer lag is
reported on them."""


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
    fast_path: bool = True


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


class _Entry(Outgoing):
    """One publish on its way: queued, then (AMQP) on the wire until confirmed."""

    __slots__ = ("body", "content_type", "headers", "properties", "topic")

    def __init__(
        self,
        future: Future[None],
        topic: str,
        body: bytes,
        content_type: str | None,
        headers: dict[str, Any],
        properties: dict[str, Any],
    ) -> None:
        super().__init__(future)
        self.topic = topic
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.properties = properties


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
            # Redis: unacknowledged messages of a dead member past the visibility timeout
            # come back now, not at kombu's next throttled sweep (a no-op elsewhere)
            restore = getattr(getattr(channel, "qos", None), "restore_visible", None)
            if restore is not None:
                restore(num=getattr(channel, "unacked_restore_limit", None), interval=1)
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


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception as exc:
        log.debug("kombu: closing a channel failed: %s", exc)


def _delivery_headers(message: Any) -> tuple[dict[str, str], str | None]:
    """A kombu message's headers and properties → msgbus headers and the key."""
    props = message.properties or {}
    return from_amqp(
        message.headers,
        message.content_type,
        props.get("message_id"),
        props.get("correlation_id"),
        props.get("timestamp"),
    )


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
        self._fast: Any = None
        """The py-amqp fast path module (kombu_fastpath) when used, else None."""
        if self.transport in _AMQP:
            self._fast = load_fast_path(
                "msgbus.backends.kombu_fastpath", option=options.fast_path, log=log
            )
        self.exchange = Exchange(options.exchange, type="topic", durable=True)
        self._lock = threading.Lock()
        self.outage = Outage(f"kombu transport at {self.where}", options.reconnect_timeout)
        self._window: PublishWindow[_Entry] = PublishWindow(
            "kombu", options.max_in_flight, self.outage
        )
        self._commands: deque[Callable[[], None]] = deque()
        self._wake = threading.Event()
        # wakes the I/O thread while it waits for py-amqp frames (_sleeping: it may)
        self._waker, self._waker_w = socket.socketpair()
        self._waker.setblocking(False)
        self._waker_w.setblocking(False)
        self._sleeping = False
        self._closed = False
        self._lag: Any = None  # a kombu_lag.QueueDepth, made on the first consumer_lag
        self.reports_consumer_lag = self.transport in LAG_TRANSPORTS
        self._stopping = False
        self._subscriptions: set[_KombuSubscription] = set()
        # I/O-thread state
        self._conn: Any = None
        self._epoch = 0
        self._pub_channel: Any = None
        self._confirms = False
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
        require_positive(
            opts,
            "connect_timeout",
            "reconnect_timeout",
            "max_in_flight",
            "max_message_bytes",
            "poll_interval",
            backend="kombu",
        )
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
        connection_cls = self._fast.Connection if self._fast is not None else kombu.Connection
        conn = connection_cls(
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
            if not initial:
                self.outage.down(exc)  # a reconnection attempt failed: the reason to report
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
        if self._fast is not None:
            self._fast.wake_on(conn, self._waker)
        self._conn = conn
        self._epoch += 1
        self._pub_channel = channel
        self._confirms = confirms
        self._tags = itertools.count(1)
        self.outage.up()
        with self._lock:
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
        backoff = Backoff()
        initial_deadline = time.monotonic() + opts.connect_timeout
        while not self._stopping:
            if self._conn is None:
                initial = not self._initial.done()
                if self._connect(initial_deadline, initial):
                    backoff.reset()
                    continue
                if initial and self._initial.done():
                    break  # from_url reports the failure
                self._window.give_up()
                self._wake.wait(0.2 if initial else backoff.next())
                continue
            try:
                if self._commands:
                    self._run_commands()
                if self._window.has_queued:
                    with self.coalesced_writes():
                        self._drain_outbox()
                if self._consumers() or self._window.has_in_flight:
                    self._sleeping = True  # before looking for work: see _nudge
                    idle = not (self._commands or self._window.has_queued)
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

    def coalesced_writes(self) -> contextlib.AbstractContextManager[None]:
        """I/O thread: on the fast path, send the frames written inside the block at once."""
        if self._fast is None or self._conn is None:
            return contextlib.nullcontext()
        return self._fast.coalesced_writes(self._conn)

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
        self.outage.down(exc)
        conn, self._conn = self._conn, None
        self._pub_channel = None
        if conn is not None:
            _release_quietly(conn)
        with self._lock:
            subs = list(self._subscriptions)
        for sub in subs:
            sub.lost()
        self._window.connection_lost(str(exc))

    def _drain_outbox(self) -> None:
        window = self._window
        batch = window.queued()
        channel = self._pub_channel
        exchange = self.exchange.name
        confirms = self._confirms
        fast = self._fast
        encoded = fast is not None and fast.encoded(channel)
        content_encoding = None if self.transport in _AMQP else "binary"
        done: list[_Entry] = []
        try:
            while batch:
                entry = batch[0]
                message: Any = None
                if encoded:
                    properties = fast.encode_basic_properties(
                        entry.content_type, entry.headers, entry.properties
                    )
                    if properties is not None:
                        message = fast.EncodedMessage(entry.body, properties)
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
                    window.record(next(self._tags), entry)
                    batch.popleft()
                    channel.basic_publish(message, exchange=exchange, routing_key=entry.topic)
                else:
                    channel.basic_publish(message, exchange=exchange, routing_key=entry.topic)
                    batch.popleft()
                    done.append(entry)
        finally:
            if batch:
                window.requeue(batch)
            window.finish(done, None)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._confirmed(tag, multiple, None)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._confirmed(tag, multiple, PublishError("the broker refused the message (nack)"))

    def _confirmed(self, tag: int, multiple: bool, error: BaseException | None) -> None:
        window = self._window
        window.finish(window.confirmed(tag, multiple=multiple), error)

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
        self._window.fail_all(BrokerUnavailable("the kombu backend closed before confirmation"))
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
        return self.outage.problem()

    # ---------------------------------------------------------------- SPI

    def publish(
        self, topic: str, body: bytes, *, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        """Queue ``body`` for the I/O thread; the future resolves on the broker's confirm
        (AMQP) or once the transport wrote it (others).

        A full window (``max_in_flight``) and an outage behave as
        :mod:`msgbus.backendkit.window` says. Raises :class:`~msgbus.MessageTooLarge`,
        :class:`~msgbus.ConfigurationError` (a header name over 255 bytes) or
        :class:`~msgbus.BusClosed` at once; the future fails with
        :class:`~msgbus.PublishError` or :class:`~msgbus.BrokerUnavailable`. Thread-safe.
        """
        check_publish(
            "kombu",
            closed=self._closed,
            body=body,
            max_message_bytes=self.options.max_message_bytes,
            key=key,
        )
        content_type, message_id, correlation_id, timestamp, table = to_amqp(
            with_message_id(headers), key
        )
        properties: dict[str, Any] = {"delivery_mode": self._delivery_mode}
        if message_id is not None:
            properties["message_id"] = message_id
        if correlation_id is not None:
            properties["correlation_id"] = correlation_id
        if timestamp is not None:
            properties["timestamp"] = timestamp
        future: Future[None] = PendingFuture()  # no Condition unless someone waits
        entry = _Entry(future, topic, bytes(body), content_type, table, properties)
        if self._window.admit(entry, block=not self.on_io_thread()):
            self._nudge()
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every publish so far is confirmed or failed; TimeoutError if not."""
        self._window.flush(timeout)

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
        self._window.close_and_flush(timeout, log)
        for sub in subs:
            sub.close()
        self._stop_thread(min(5.0, timeout) if timeout is not None else 5.0)
        if self._lag is not None:
            self._lag.close()

    def consumer_lag(self, topic: str, group: str) -> int | None:
        """Messages in the group's queue (see :meth:`Backend.consumer_lag`) on the
        :data:`LAG_TRANSPORTS`; a second connection, opened on the first call
        (:mod:`msgbus.backends.kombu_lag`)."""
        from msgbus.backends.kombu_lag import QueueDepth

        with self._lock:
            if self._closed or not self.reports_consumer_lag:
                return None
            if self._lag is None:
                self._lag = QueueDepth(self._new_connection)
            lag = self._lag
        return lag.read(f"{topic}.{group}")

    def topics(self) -> list[str] | None:
        """The topics bound on the exchange where the transport can tell (Redis, SQL,
        memory), else None (AMQP): :mod:`msgbus.backends.kombu_topics`."""
        from msgbus.backends.kombu_topics import bound_topics

        return bound_topics(self._new_connection, self.exchange.name)

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
