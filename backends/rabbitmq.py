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

import dataclasses
import itertools
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from pika.adapters.select_connection import IOLoop

from msgbus.backend import Backend, Features, Subscription
from msgbus.backendkit import (
    KEY_HEADER,
    Backoff,
    Outage,
    PendingFuture,
    PublishWindow,
    check_publish,
    host_ports,
    parse_options,
    require_positive,
    url_credentials,
    with_message_id,
)
from msgbus.backendkit.amqp import SHORTSTR
from msgbus.backendkit.fastpath import load_fast_path
from msgbus.backends.rabbitmq_connection import PikaConnection
from msgbus.backends.rabbitmq_publisher import ConfirmedPublishing, PublishEntry
from msgbus.backends.rabbitmq_subscription import RabbitSubscription
from msgbus.backends.rabbitmq_wire import describe_error, to_properties
from msgbus.deadletters import store_queue_name
from msgbus.errors import BrokerUnavailable, BusClosed, ConfigurationError
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


class RabbitMQBackend(PikaConnection, ConfirmedPublishing, Backend):
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
            f"RabbitMQ at {self.where}", options.reconnect_timeout, describe=describe_error
        )
        self._window: PublishWindow[PublishEntry] = PublishWindow(
            "RabbitMQ", options.max_in_flight, self.outage
        )
        self._scheduled = False
        self._publishing = False  # the publish channel is up
        self._closed = False
        self._subscriptions: set[RabbitSubscription] = set()
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
        props = to_properties(with_message_id(headers), key, self._delivery_mode)
        future: Future[None] = PendingFuture()  # no Condition unless someone waits
        entry = PublishEntry(
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
        queue = group_queue(topic, group) if group is not None else ""
        sub = RabbitSubscription(self, topic, group, queue, prefetch)
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

    def retry_subscription(self, sub: RabbitSubscription, delay: float) -> None:
        """I/O thread: set ``sub`` up again after ``delay`` seconds (if still wanted)."""

        def again() -> None:
            if not sub.closed and self.connection_open() and sub in self._subscriptions:
                sub.setup(self._conn)

        self._ioloop.call_later(delay, again)

    def forget(self, sub: RabbitSubscription) -> None:
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
