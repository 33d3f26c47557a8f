"""ActiveMQ Classic over STOMP 1.2, with stomp.py as the driver.

Features
    - Topics are ActiveMQ virtual topics: ``publish("t")`` sends to ``/topic/VirtualTopic.t``.
      A consumer group ``g`` is the queue ``/queue/Consumer.g.VirtualTopic.t`` (dots in the
      group name become ``~``, because ActiveMQ's virtual-topic selector ``Consumer.*.`` takes
      one name segment), so every group gets every message and the members of a group compete
      for them. ``group=None`` is a plain, non-durable subscription to the topic itself.
      A group's queue is created by its first subscription (readiness: the SUBSCRIBE carries a
      receipt, and ActiveMQ answers it once the queue exists and is attached to the virtual
      topic), so a new group starts at the end of the topic; afterwards the queue keeps
      collecting messages while no member is connected. ActiveMQ journals a queue only with
      its first message and forgets an empty one when it crashes, so each group subscription
      also sends one empty marker message (header ``msgbus-marker``) to its queue, which
      members acknowledge at once and never hand out; plain STOMP consumers of a group
      queue see these markers.
    - Durable publish: every SEND carries ``persistent:true`` and a ``receipt``; receipts are
      pipelined (up to ``max_in_flight`` outstanding) and each future is resolved by its own
      RECEIPT, which ActiveMQ sends once the message is in KahaDB (and in every group queue).
      An ERROR frame naming a receipt fails that future with :class:`~msgbus.PublishError`; an
      ERROR without one fails every outstanding publish and reconnects.
    - Per-key order: the key travels as ``JMSXGroupID`` (ActiveMQ message groups): all messages
      of one key go to one member of a group, in order, so ``per_key_order`` holds across the
      members of a group. ActiveMQ breaks this when (a) the member that owns a key closes or
      dies: its unacknowledged messages and the key move to another member, which may then
      process the later messages before the member that died had finished (at-least-once
      overlap); (b) more than 1,024 keys are active in one queue: the broker's default group
      map is an LRU cache of 1,024 entries, and an evicted key may be handed to another member
      while its earlier messages are still unacknowledged elsewhere. ActiveMQ does not return
      ``JMSXGroupID`` on a STOMP MESSAGE, so the key is also sent as the header ``msgbus-key``;
      messages from plain clients that set only ``JMSXGroupID`` arrive with ``key=None``.
    - Consume: ``ack:client-individual``; ``ack()`` sends ACK (after the handler, by the bus).
      ``nack(requeue=True)`` hands the message back *locally*: this subscription delivers it
      again, marked redelivered, before anything newer (what a JMS client does on
      ``recover()``; the broker still counts it as unacknowledged, so if the subscription
      closes or its process dies first the broker redelivers it to another member).
      ``nack(requeue=False)`` sends NACK: ActiveMQ treats it as a poison ack and moves a
      persistent message to its own dead-letter queue ``ActiveMQ.DLQ``. Prefetch is the
      ``activemq.prefetchSize`` of the SUBSCRIBE. Unacknowledged messages go back to the
      broker when a subscription closes or its connection is lost.
    - Headers: user headers round-trip exactly, with STOMP 1.2 escaping of colons, newlines,
      carriage returns and backslashes in names and values, and UTF-8 (non-ASCII) names and
      values. Names that STOMP or ActiveMQ would interpret or overwrite (``destination``,
      ``expires``, ``priority``, ``type``, ``timestamp``, ``JMS*``, ``AMQ_*``, ...) are sent
      as ``msgbus-h-<name>`` and renamed back on receipt. ``content-type`` is the native
      STOMP header; ``msgbus-correlation-id`` is the native ``correlation-id``
      (JMSCorrelationID); ``msgbus-id`` stays a header (STOMP's ``message-id`` is assigned by
      the broker and is the delivery's ``native_id``); a message without ``msgbus-timestamp``
      gets ActiveMQ's ``timestamp``. A NUL character cannot travel in a STOMP header and is
      refused with :class:`~msgbus.ConfigurationError`. Bodies are binary-safe (every SEND
      carries ``content-length``).
    - Connections: one for publishing (opened by ``from_url``) and one per subscription, each
      with heart-beating. Hosts of the URL are tried in turn. A lost connection is
      re-established in the background (backoff up to 2 s, forever until closed);
      subscriptions re-subscribe and unconfirmed publishes are sent again (so a message may
      be stored twice: delivery is at least once); a publish lost with three connections in
      a row fails with ``PublishError`` instead of looping (a message the broker drops the
      connection for). After ``reconnect_timeout`` seconds without a connection, pending and
      new publishes fail with :class:`~msgbus.BrokerUnavailable` and ``receive`` raises it,
      until the broker is back: the outage policy of :mod:`msgbus.backendkit.outage`.
    - Thread safety: ``publish``/``flush`` from any thread; ``ack``/``nack`` of deliveries
      from any thread (stomp.py writes each frame under its socket lock); ``close`` of a
      subscription from any thread wakes a blocked ``receive``.
    - Not supported: replay (``from_beginning``), per-message TTL or priority.

URL form
    ``stomp://[user[:password]@]host[:port][,host[:port]...][/vhost][?option=value&...]``;
    ``activemq://`` is the same; ``stomp+ssl://`` uses TLS (default port 61612, else 61613).
    Without a host: ``localhost``. The path, if any, is sent as the STOMP ``host`` header.

Options
    - ``username``, ``password`` (str): credentials; default from the URL. The password is
      never shown in a repr, a log line or an error.
    - ``connect_timeout`` (float, 10): seconds to connect (all hosts) before
      ``BrokerUnavailable``; also bounds the wait for a SUBSCRIBE receipt.
    - ``reconnect_timeout`` (float, 30): seconds without a connection before pending
      publishes fail and ``receive`` raises ``BrokerUnavailable``.
    - ``heartbeat_ms`` (int, 10000): STOMP heart-beat interval both ways (0 turns it off).
    - ``max_in_flight`` (int, 1000): unconfirmed publishes before ``publish`` blocks
      (at most ``reconnect_timeout``; the one rule of :mod:`msgbus.backendkit.window`).
    - ``max_message_bytes`` (int, 64 MiB): larger bodies raise ``MessageTooLarge``.
    - ``persistent`` (bool, true): send ``persistent:true`` (false: faster, lost on restart).
    - ``vhost`` (str): the STOMP ``host`` header (default: the URL path, else the host name).
    - ``ssl`` (bool): use TLS (default true for ``stomp+ssl://``); ``ssl_ca_certs``,
      ``ssl_certfile``, ``ssl_keyfile``, ``ssl_key_password`` (paths / secret),
      ``ssl_verify`` (bool, true). Unreadable files or a key that does not match its
      certificate are :class:`~msgbus.ConfigurationError` at once; a server certificate the
      client does not trust (on every host) is ``BrokerUnavailable`` saying "TLS certificate
      verification failed" at once, not retried until ``connect_timeout``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from msgbus.backend import Backend, Features, Subscription
from msgbus.backendkit import (
    check_publish,
    host_ports,
    parse_options,
    require_positive,
    url_credentials,
)
from msgbus.backends.activemq_frames import (
    SCHEDULED_DELAY,
    check_name,
    delivery_headers,
    group_destination,
    topic_destination,
    wire_headers,
)
from msgbus.backends.activemq_link import tls_context
from msgbus.backends.activemq_publisher import Publisher
from msgbus.backends.activemq_subscription import ActiveMQSubscription
from msgbus.errors import BrokerUnavailable, BusClosed, ConfigurationError
from msgbus.url import BusURL

__all__ = [
    "ActiveMQBackend",
    "ActiveMQOptions",
    "delivery_headers",
    "group_destination",
    "topic_destination",
    "wire_headers",
]

log = logging.getLogger("msgbus.activemq")

DEFAULT_PORT = 61613
DEFAULT_SSL_PORT = 61612


@dataclass(frozen=True)
class ActiveMQOptions:
    """Options of the ActiveMQ backend (see the module docstring). Immutable."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    reconnect_timeout: float = 30.0
    heartbeat_ms: int = 10_000
    max_in_flight: int = 1_000
    max_message_bytes: int = 64 * 1024 * 1024
    persistent: bool = True
    vhost: str | None = None
    ssl: bool | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_verify: bool = True


# --------------------------------------------------------------------------- backend


class ActiveMQBackend(Backend):
    """ActiveMQ Classic over STOMP (see the module docstring for features, URL and options).

    Thread-safe: ``publish``, ``flush``, ``subscribe`` and ``close`` may be called from any
    thread. ``from_url`` raises :class:`~msgbus.BrokerUnavailable` within
    ``connect_timeout`` when no host answers, and :class:`~msgbus.AuthenticationError` when
    the broker refuses the credentials.
    """

    schemes = ("stomp", "stomp+ssl", "activemq")
    features = Features(
        consumer_groups=True,
        per_key_order=True,
        persistent=True,
        native_dead_letter=True,
        requeue=True,
        replay=False,
        cross_process=True,
        max_message_bytes=ActiveMQOptions.max_message_bytes,
    )
    extra = "activemq"

    def __init__(self, url: BusURL, options: ActiveMQOptions) -> None:
        """Prepare (but do not connect) a backend; use :meth:`from_url` instead."""
        self.url = url
        self.options = options
        self.use_ssl = options.ssl if options.ssl is not None else url.scheme == "stomp+ssl"
        default_port = DEFAULT_SSL_PORT if self.use_ssl else DEFAULT_PORT
        self.host_ports = host_ports(url, default_port)
        self.where = ",".join(f"{h}:{p}" for h, p in self.host_ports)
        self.ssl_context = tls_context(options) if self.use_ssl else None
        """The TLS settings as an SSL context (None without TLS), to diagnose failures."""
        self.vhost = options.vhost or url.path or None
        self.features = dataclasses.replace(
            type(self).features, max_message_bytes=options.max_message_bytes
        )
        self._lock = threading.Lock()
        self._subscriptions: set[ActiveMQSubscription] = set()
        self._closed = False
        self._publisher = Publisher(self)

    @classmethod
    def from_url(cls, url: BusURL, **options: Any) -> ActiveMQBackend:
        """Connect the publishing connection to the first host of ``url`` that answers.

        Raises :class:`~msgbus.UnknownOption` (listing the valid options),
        :class:`~msgbus.ConfigurationError`, :class:`~msgbus.BrokerUnavailable` (within
        ``connect_timeout``) or :class:`~msgbus.AuthenticationError`.
        """
        opts = parse_options(
            ActiveMQOptions, url, options, backend="ActiveMQ", url_fields=url_credentials(url)
        )
        require_positive(
            opts,
            "connect_timeout",
            "reconnect_timeout",
            "max_in_flight",
            "max_message_bytes",
            backend="ActiveMQ",
        )
        if opts.heartbeat_ms < 0:
            raise ConfigurationError("ActiveMQ option 'heartbeat_ms' must be 0 or positive")
        backend = cls(url, opts)
        backend._publisher.link.open()
        return backend

    def publish(
        self, topic: str, body: bytes, *, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        """Send ``body`` persistently; the future resolves on the broker's RECEIPT.

        Blocks while ``max_in_flight`` publishes are unconfirmed. Raises
        :class:`~msgbus.MessageTooLarge`, :class:`~msgbus.ConfigurationError` (bad topic, NUL
        in a header) or :class:`~msgbus.BusClosed` at once; the future fails with
        :class:`~msgbus.PublishError` (ERROR frame) or :class:`~msgbus.BrokerUnavailable`.
        Thread-safe.
        """
        return self._send(topic, body, key, headers, None)

    def publish_delayed(
        self,
        topic: str,
        body: bytes,
        *,
        key: str | None,
        headers: Mapping[str, str],
        delay: float,
    ) -> Future[None]:
        """:meth:`publish` with ``AMQ_SCHEDULED_DELAY`` (milliseconds): ActiveMQ's scheduler
        (``schedulerSupport="true"`` on the broker, as in the test harness) keeps the message
        until then, persistently. A broker without the scheduler delivers it at once."""
        return self._send(topic, body, key, headers, {SCHEDULED_DELAY: str(round(delay * 1000))})

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
        """Send to ``group``'s own queue with ``AMQ_SCHEDULED_DELAY`` (the scheduler keeps it
        persistently until due): ``retry_mode="durable"``."""
        check_name("group", group)
        return self._send(
            topic,
            body,
            key,
            headers,
            {SCHEDULED_DELAY: str(round(delay * 1000))},
            destination=group_destination(topic, group),
        )

    def _send(
        self,
        topic: str,
        body: bytes,
        key: str | None,
        headers: Mapping[str, str],
        extra: dict[str, str] | None,
        *,
        destination: str | None = None,
    ) -> Future[None]:
        check_publish(
            "ActiveMQ",
            closed=self._closed,
            body=body,
            max_message_bytes=self.options.max_message_bytes,
            key=key,
        )
        check_name("topic", topic)
        wire = wire_headers(headers, key)
        if self.options.persistent:
            wire["persistent"] = "true"
        if extra:
            wire.update(extra)
        target = destination or topic_destination(topic)
        return self._publisher.publish(target, bytes(body), wire)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every publish so far is confirmed or failed; TimeoutError if not."""
        self._publisher.flush(timeout)

    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, from_beginning: bool = False
    ) -> Subscription:
        """Join ``group`` (its virtual-topic queue) on a new connection; return when the broker
        confirmed the SUBSCRIBE. Raises BrokerUnavailable, ConfigurationError, BusClosed."""
        if self._closed:
            raise BusClosed("the ActiveMQ backend is closed")
        if from_beginning:
            raise ConfigurationError(
                "ActiveMQ keeps no log to replay: from_beginning is not supported"
            )
        check_name("topic", topic)
        if group is not None:
            check_name("group", group)
        sub = ActiveMQSubscription(self, topic, group, prefetch)
        sub.link.open()
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._subscriptions.add(sub)
        if closed:
            sub.close()
            raise BusClosed("the ActiveMQ backend is closed")
        return sub

    def browse(self, topic: str, group: str, *, prefetch: int) -> Subscription:
        """Browse ``group``'s queue without consuming (see :mod:`.activemq_browse`)."""
        from msgbus.backends.activemq_browse import QueueBrowser

        if self._closed:
            raise BusClosed("the ActiveMQ backend is closed")
        browser = QueueBrowser(self, topic, group, prefetch)
        browser.link.open()
        return browser

    def forget(self, sub: ActiveMQSubscription) -> None:
        """Drop a closed subscription from the backend's set (called by the subscription)."""
        with self._lock:
            self._subscriptions.discard(sub)

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout``), close subscriptions and connections. Idempotent.

        Publishes still unconfirmed at the deadline fail with BrokerUnavailable.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subscriptions)
        self._publisher.window.close_and_flush(timeout, log)
        self._publisher.fail_all(
            BrokerUnavailable("the ActiveMQ backend closed before the broker confirmed")
        )
        for sub in subs:
            sub.close()
        self._publisher.link.close(timeout=min(2.0, timeout) if timeout is not None else 2.0)

    def connection_problem(self) -> BaseException | None:
        """While the publishing connection is down (reconnecting): why; else None."""
        return self._publisher.link.outage.problem()

    def describe(self) -> str:
        """E.g. ``ActiveMQ (STOMP 1.2) at 127.0.0.1:61613 as 'user'``; no password."""
        who = f" as {self.options.username!r}" if self.options.username else ""
        tls = " over TLS" if self.use_ssl else ""
        return f"ActiveMQ (STOMP 1.2{tls}) at {self.where}{who}"

    def __repr__(self) -> str:
        return f"<ActiveMQBackend {self.url.render(hide_password=True)}>"
