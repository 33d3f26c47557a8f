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

import contextlib
import dataclasses
import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import stomp
import stomp.exception

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
    url_credentials,
)
from msgbus.errors import (
    AuthenticationError,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    MsgBusError,
    PublishError,
)
from msgbus.message import CONTENT_TYPE, CORRELATION_ID, RESERVED_PREFIX, TIMESTAMP
from msgbus.url import BusURL

__all__ = ["ActiveMQBackend", "ActiveMQOptions"]

log = logging.getLogger("msgbus.activemq")
_SYNC_IDS = itertools.count()  # ids of the empty transactions of confirm_settled


class _DemoteRetryNoise(logging.Filter):
    """stomp.py logs each failed connection attempt as a WARNING; msgbus retries on its own
    and reports the outcome, so these become DEBUG records (handlers at WARNING skip them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith("could not connect"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


if not any(isinstance(f, _DemoteRetryNoise) for f in logging.getLogger("stomp.py").filters):
    logging.getLogger("stomp.py").addFilter(_DemoteRetryNoise())

DEFAULT_PORT = 61613
DEFAULT_SSL_PORT = 61612
TOPIC_PREFIX = "VirtualTopic."
RENAMED_PREFIX = "msgbus-h-"
SCHEDULED_DELAY = "AMQ_SCHEDULED_DELAY"
"""ActiveMQ's header for a delivery delay in milliseconds (needs the broker's scheduler)."""
MARKER_HEADER = "msgbus-marker"
"""Header of the empty message each group subscription sends to its own queue (see on_up)."""
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

# Header names STOMP or ActiveMQ interpret on SEND or set on MESSAGE; user headers with these
# names (compared lower-cased) travel renamed as msgbus-h-<name>.
_PROTOCOL_HEADERS = frozenset(
    {
        "accept-version",
        "ack",
        "content-length",
        "content-type",
        "correlation-id",
        "destination",
        "expires",
        "heart-beat",
        "host",
        "id",
        "login",
        "message",
        "message-id",
        "original-destination",
        "passcode",
        "persistent",
        "priority",
        "receipt",
        "receipt-id",
        "redelivered",
        "reply-to",
        "selector",
        "server",
        "session",
        "subscription",
        "timestamp",
        "transaction",
        "transformation",
        "transformation-error",
        "type",
        "version",
    }
)
_PROTOCOL_PREFIXES = ("jms", "amq_", "activemq.")
# Headers of a MESSAGE frame that describe the delivery, not the message: not user headers.
_FRAME_ONLY = frozenset(
    {
        "ack",
        "content-length",
        "destination",
        "expires",
        "message-id",
        "original-destination",
        "persistent",
        "priority",
        "redelivered",
        "reply-to",
        "subscription",
        "timestamp",
        "type",
        "JMSXUserID",
        "JMSXGroupID",
        "JMSXGroupSeq",
        "transformation",
    }
)


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


# --------------------------------------------------------------------------- headers


def _escape_name(name: str) -> str:
    # stomp.py 9.0 escapes header values but not names; STOMP 1.2 wants both escaped.
    return name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace(":", "\\c")


def _needs_rename(name: str) -> bool:
    lowered = name.lower()
    return not name or lowered in _PROTOCOL_HEADERS or lowered.startswith(_PROTOCOL_PREFIXES)


def _check_text(what: str, text: str) -> None:
    if "\x00" in text:
        raise ConfigurationError(f"{what} contains a NUL character, which STOMP cannot carry")


def wire_headers(headers: Mapping[str, str], key: str | None) -> dict[str, str]:
    """Map msgbus headers (and ``key``) to the headers of a STOMP SEND (names escaped).

    Raises :class:`~msgbus.ConfigurationError` for a NUL character in a name or value, a
    header line longer than ActiveMQ's 10 KiB or more headers than it takes. Pure function;
    thread-safe.
    """
    wire: dict[str, str] = {}
    for name, value in headers.items():
        _check_text("a header name", name)
        _check_text(f"the value of header {name!r}", value)
        if name == CONTENT_TYPE:
            wire["content-type"] = value
        elif name == CORRELATION_ID:
            wire["correlation-id"] = value
        elif name.startswith(RESERVED_PREFIX):
            wire[_escape_name(name)] = value
        elif _needs_rename(name):
            wire[_escape_name(RENAMED_PREFIX + name)] = value
        else:
            wire[_escape_name(name)] = value
    if key is not None:
        _check_text("the key", key)
        wire[KEY_HEADER] = key
        if key:
            wire["JMSXGroupID"] = key
    if len(wire) > _MAX_HEADERS:
        raise ConfigurationError(f"ActiveMQ takes at most {_MAX_HEADERS} headers, not {len(wire)}")
    for name, value in wire.items():
        if _escaped_length(name) + 1 + _escaped_length(value) > _MAX_HEADER_LINE:
            raise ConfigurationError(
                f"header {name[:40]!r} is longer than the {_MAX_HEADER_LINE} bytes ActiveMQ "
                "accepts for one header (name, ':' and value, escaped, in UTF-8)"
            )
    return wire


_MAX_HEADER_LINE = 10 * 1024
"""ActiveMQ's limit for one STOMP header line (StompWireFormat's MAX_HEADER_LENGTH)."""
_MAX_HEADERS = 1000 - 16
"""ActiveMQ's limit of headers per frame (MAX_HEADERS), less those msgbus and stomp.py add."""


def _escaped_length(text: str) -> int:
    """Bytes of ``text`` on the wire, counting the two-byte STOMP 1.2 escapes of backslash,
    newline, carriage return and colon."""
    return len(text.encode("utf-8")) + sum(text.count(c) for c in "\\\n\r:")


def delivery_headers(frame: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """Map the headers of a STOMP MESSAGE back to msgbus headers and the key. Thread-safe."""
    out: dict[str, str] = {}
    key = None
    for name, value in frame.items():
        if name in _FRAME_ONLY:
            continue
        if name == "correlation-id":
            out[CORRELATION_ID] = value
        elif name == KEY_HEADER:
            key = value
        elif name.startswith(RENAMED_PREFIX):
            out[name[len(RENAMED_PREFIX) :]] = value
        else:
            out[name] = value
    if TIMESTAMP not in out and frame.get("timestamp", "0") not in ("", "0"):
        out[TIMESTAMP] = frame["timestamp"]
    return out, key


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise ConfigurationError(
            f"invalid {what} {name!r} for ActiveMQ: use letters, digits, '.', '_' and '-' only"
        )


def topic_destination(topic: str) -> str:
    """The STOMP destination messages for ``topic`` are sent to."""
    return f"/topic/{TOPIC_PREFIX}{topic}"


def group_destination(topic: str, group: str | None) -> str:
    """The STOMP destination a member of ``group`` subscribes to (the topic when None)."""
    if group is None:
        return topic_destination(topic)
    return f"/queue/Consumer.{group.replace('.', '~')}.{TOPIC_PREFIX}{topic}"


# --------------------------------------------------------------------------- connections


def _error_text(frame: Any) -> str:
    message = frame.headers.get("message", "")
    if not message and frame.body:
        body = (
            frame.body.decode("utf-8", "replace") if isinstance(frame.body, bytes) else frame.body
        )
        message = body.strip().splitlines()[0] if body.strip() else ""
    return message or "ERROR frame without a message"


class _TlsUntrusted(BrokerUnavailable):
    """The server's TLS certificate failed verification: not retried by ``open()``."""


def _tls_context(opts: ActiveMQOptions) -> ssl.SSLContext:
    """The SSL context stomp.py builds from the options (CA file or the system's CAs, host
    name check unless ``ssl_verify`` is false, client certificate). Raises
    ConfigurationError naming TLS for unreadable files or a wrong key password."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if opts.ssl_ca_certs:
            context.load_verify_locations(opts.ssl_ca_certs)
        else:
            context.load_default_certs()
        if not opts.ssl_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if opts.ssl_certfile:
            context.load_cert_chain(
                opts.ssl_certfile, opts.ssl_keyfile or opts.ssl_certfile, opts.ssl_key_password
            )
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(
            f"{name}={value!r}"
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
            if (value := getattr(opts, name))
        )
        raise ConfigurationError(f"ActiveMQ TLS options ({files}): {exc}") from None
    return context


def _tls_verify_failure(
    hosts: list[tuple[str, int]], context: ssl.SSLContext, timeout: float
) -> str | None:
    """Why the TLS server certificate of every host in ``hosts`` is not trusted, or None
    when some host could not be reached or its certificate is fine (a diagnosis run after
    stomp.py failed to connect: stomp.py only logs the reason)."""
    reasons = []
    for host, port in hosts:
        try:
            with (
                socket.create_connection((host, port), timeout=timeout) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return None
        except ssl.SSLCertVerificationError as exc:
            reasons.append(f"{host}:{port}: {exc.verify_message or exc.reason or exc}")
        except OSError:
            return None
    return "; ".join(reasons)


def _is_auth_error(text: str) -> bool:
    lowered = text.lower()
    return any(
        word in lowered
        for word in ("password", "user name", "authenticat", "not authorized", "security")
    )


class _Attempt:
    """The outcome of one STOMP CONNECT, filled in by the receiver thread."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None
        self.connected = False


class _Listener(stomp.ConnectionListener):
    """Forwards one connection's frames to its link, tagged with the connection generation."""

    def __init__(self, link: _Link, generation: int, attempt: _Attempt) -> None:
        self.link = link
        self.generation = generation
        self.attempt = attempt

    def on_connected(self, frame: Any) -> None:
        self.attempt.connected = True
        self.attempt.done.set()

    def on_message(self, frame: Any) -> None:
        try:
            self.link.owner.on_message(self.generation, frame)
        except Exception:  # never let an exception kill stomp.py's receiver loop
            log.exception("ActiveMQ: failed to take a message")

    def on_receipt(self, frame: Any) -> None:
        try:
            self.link.owner.on_receipt(self.generation, frame.headers.get("receipt-id", ""))
        except Exception:
            log.exception("ActiveMQ: failed to handle a receipt")

    def on_error(self, frame: Any) -> None:
        text = _error_text(frame)
        if not self.attempt.done.is_set():
            self.attempt.error = text
            self.attempt.done.set()
            return
        try:
            self.link.on_error(self.generation, frame.headers.get("receipt-id"), text)
        except Exception:
            log.exception("ActiveMQ: failed to handle an ERROR frame")

    def on_disconnected(self) -> None:
        self.attempt.done.set()
        self.link.on_disconnected(self.generation)

    def on_heartbeat_timeout(self) -> None:
        log.warning("ActiveMQ: heart-beat timeout on %s; reconnecting", self.link.name)


class _Owner:
    """What a link reports to (the publisher or a subscription)."""

    def on_up(self, conn: stomp.Connection12, generation: int) -> None:
        """Called in the connecting thread on a fresh connection, before it is marked up."""

    def on_down(self, generation: int) -> None:
        """Called (receiver thread) when connection ``generation`` is lost."""

    def on_give_up(self, error: BrokerUnavailable) -> None:
        """Called once the link has been down for longer than ``reconnect_timeout``."""

    def on_message(self, generation: int, frame: Any) -> None:
        """A MESSAGE frame (receiver thread)."""

    def on_receipt(self, generation: int, receipt_id: str) -> None:
        """A RECEIPT frame (receiver thread)."""

    def on_error(self, generation: int, receipt_id: str | None, text: str) -> bool:
        """An ERROR frame; return True to drop the connection and reconnect."""
        return True


class _Link:
    """One STOMP 1.2 connection to the first host that answers, re-established when lost.

    ``conn`` is the live stomp.py connection or None; ``generation`` counts connections, so
    frames and deliveries of an old connection can be told apart. Thread-safe.
    """

    def __init__(self, backend: ActiveMQBackend, owner: _Owner, name: str) -> None:
        self.backend = backend
        self.owner = owner
        self.name = name
        self.conn: stomp.Connection12 | None = None
        self.generation = 0
        self.outage = Outage(
            f"ActiveMQ at {backend.where} ({name})", backend.options.reconnect_timeout
        )
        """Whether this link is down, since when and why (the outage policy)."""
        self._lock = threading.Lock()
        self._up = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._reconnecting = False
        self._lost = 0  # the newest generation whose connection was lost

    # ---------------------------------------------------------------- connecting

    def open(self) -> None:
        """Connect now, within ``connect_timeout``; raise BrokerUnavailable/AuthenticationError.

        The first failed attempt logs one INFO line saying msgbus retries; the final error
        says how long it tried."""
        opts = self.backend.options
        started = time.monotonic()
        deadline = started + opts.connect_timeout
        retrying = False
        while True:
            try:
                self._connect_once(deadline)
                return
            except (AuthenticationError, _TlsUntrusted):
                raise
            except BrokerUnavailable as exc:
                if time.monotonic() + 0.2 >= deadline:
                    raise BrokerUnavailable(
                        f"{exc} (tried for {time.monotonic() - started:.1f}s, "
                        f"connect_timeout={opts.connect_timeout:g}s)"
                    ) from None
                if not retrying:
                    retrying = True
                    log.info(
                        "ActiveMQ at %s: %s; retrying for up to %gs (connect_timeout)",
                        self.backend.where,
                        exc,
                        opts.connect_timeout,
                    )
                self._closing.wait(0.2)

    def _connect_once(self, deadline: float) -> None:
        backend = self.backend
        opts = backend.options
        where = backend.where
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnavailable(f"could not connect to ActiveMQ at {where} in time")
        hosts = backend.host_ports
        conn = stomp.Connection12(
            hosts,
            prefer_localhost=False,
            try_loopback_connect=False,
            reconnect_attempts_max=len(hosts),
            reconnect_sleep_initial=0.0,
            reconnect_sleep_jitter=0.0,
            timeout=max(0.1, min(remaining / len(hosts), opts.connect_timeout)),
            heartbeats=(opts.heartbeat_ms, opts.heartbeat_ms),
            heart_beat_receive_scale=2.0,
            vhost=backend.vhost,
            auto_decode=False,
            auto_content_length=True,
        )
        if backend.use_ssl:
            conn.set_ssl(
                for_hosts=hosts,
                key_file=opts.ssl_keyfile,
                cert_file=opts.ssl_certfile,
                ca_certs=opts.ssl_ca_certs,
                password=opts.ssl_key_password,
                verify=opts.ssl_verify,
            )
        with self._lock:
            self.generation += 1
            generation = self.generation
        attempt = _Attempt()
        conn.set_listener("msgbus", _Listener(self, generation, attempt))
        try:
            conn.connect(username=opts.username, passcode=opts.password, wait=False)
        except (stomp.exception.StompException, OSError) as exc:
            _force_close(conn)
            context = backend.ssl_context
            if context is not None and opts.ssl_verify:
                timeout = max(0.1, min(2.0, deadline - time.monotonic()))
                untrusted = _tls_verify_failure(hosts, context, timeout)
                if untrusted:
                    raise _TlsUntrusted(
                        f"could not connect to ActiveMQ at {where}: TLS certificate verification "
                        f"failed ({untrusted}); check the options ssl_ca_certs and ssl_verify"
                    ) from None
            reason = str(exc) or "no host answered"
            raise BrokerUnavailable(f"could not connect to ActiveMQ at {where}: {reason}") from None
        if not attempt.done.wait(max(0.0, deadline - time.monotonic())) or not attempt.connected:
            _force_close(conn)
            if attempt.error is not None:
                if _is_auth_error(attempt.error):
                    who = f"user {opts.username!r}" if opts.username else "an anonymous login"
                    raise AuthenticationError(
                        f"ActiveMQ at {where} refused {who}: {attempt.error}"
                    ) from None
                raise BrokerUnavailable(
                    f"ActiveMQ at {where} refused the connection: {attempt.error}"
                ) from None
            raise BrokerUnavailable(
                f"ActiveMQ at {where} did not answer the STOMP CONNECT in time"
            ) from None
        try:
            self.owner.on_up(conn, generation)
        except BaseException:
            _force_close(conn)
            raise
        failure: MsgBusError | None = None
        with self._lock:
            if self._closing.is_set():
                failure = BusClosed("closed while connecting")
            elif self._lost >= generation:
                failure = BrokerUnavailable(f"lost the connection to ActiveMQ at {where} at once")
            else:
                self.conn = conn
                self.outage.up()
                self._up.notify_all()
        if failure is not None:
            # Outside the lock: stomp.py calls on_disconnected (which takes it) from here.
            _force_close(conn)
            raise failure

    # ---------------------------------------------------------------- losing

    def on_disconnected(self, generation: int) -> None:
        """Receiver thread: connection ``generation`` is gone; reconnect in the background."""
        with self._lock:
            self._lost = max(self._lost, generation)
            if generation != self.generation or self.conn is None:
                return
            self.conn = None
            self.outage.down()
            start = not self._closing.is_set() and not self._reconnecting
            if start:
                self._reconnecting = True
        self.owner.on_down(generation)
        if start:
            log.warning("ActiveMQ: lost the %s connection to %s", self.name, self.backend.where)
            threading.Thread(
                target=self._reconnect_loop,
                name=f"msgbus-activemq-reconnect {self.name}",
                daemon=True,
            ).start()

    def on_error(self, generation: int, receipt_id: str | None, text: str) -> None:
        """Receiver thread: an ERROR frame after CONNECTED."""
        if self.owner.on_error(generation, receipt_id, text):
            log.warning("ActiveMQ: ERROR on the %s connection (%s); reconnecting", self.name, text)
            conn = self.conn
            if conn is not None and generation == self.generation:
                # stomp.py calls on_disconnected from here, which starts the reconnection
                threading.Thread(target=_force_close, args=(conn,), daemon=True).start()

    def _reconnect_loop(self) -> None:
        opts = self.backend.options
        backoff = Backoff()
        done = False  # _reconnecting was cleared together with the check that the link is up
        try:
            while not self._closing.is_set():
                try:
                    self._connect_once(time.monotonic() + opts.connect_timeout)
                    with self._lock:
                        # A loss that came before this point found _reconnecting set and
                        # left the reconnecting to this thread: go on if the link is down.
                        if self.conn is not None:
                            self._reconnecting = False
                            done = True
                    if done:
                        log.warning("ActiveMQ: %s connection re-established", self.name)
                        return
                    continue
                except BusClosed:
                    return
                except BrokerUnavailable as exc:
                    self.outage.down(exc)
                except Exception as exc:  # a bug or an unexpected driver error: keep trying
                    log.exception("ActiveMQ: reconnecting the %s connection failed", self.name)
                    self.outage.down(BrokerUnavailable(f"reconnecting failed: {exc}"))
                if self.outage.give_up_now():
                    self.owner.on_give_up(self.outage.unavailable())
                self._closing.wait(backoff.next())
        finally:
            if not done:
                with self._lock:
                    self._reconnecting = False

    # ---------------------------------------------------------------- closing

    def close(self, timeout: float) -> None:
        """DISCONNECT with a receipt (waited up to ``timeout``), then drop the socket."""
        with self._lock:
            self._closing.set()
            conn, self.conn = self.conn, None
            self._up.notify_all()
        if conn is None:
            return
        if timeout > 0:
            done = threading.Event()
            listener = _DisconnectWaiter(done)
            try:
                conn.set_listener("msgbus-close", listener)
                conn.disconnect(receipt=f"bye-{id(conn)}")
                done.wait(timeout)
            except (stomp.exception.StompException, OSError):
                pass
        _force_close(conn)


class _DisconnectWaiter(stomp.ConnectionListener):
    def __init__(self, done: threading.Event) -> None:
        self.done = done

    def on_receipt(self, frame: Any) -> None:
        self.done.set()

    def on_disconnected(self) -> None:
        self.done.set()


def _force_close(conn: stomp.Connection12) -> None:
    """Drop a stomp.py connection's socket without waiting for anything."""
    transport = conn.transport
    transport.running = False
    with contextlib.suppress(Exception):  # already gone
        transport.disconnect_socket()


# --------------------------------------------------------------------------- publishing


class _Pending(Outgoing):
    """One publish on its way: queued, then sent until its RECEIPT."""

    __slots__ = ("body", "destination", "headers")

    def __init__(
        self, future: Future[None], destination: str, body: bytes, headers: dict[str, str]
    ) -> None:
        super().__init__(future)
        self.destination = destination
        self.body = body
        self.headers = headers


class _Publisher(_Owner):
    """The publishing connection: pipelined receipts through the backend's publish window
    (:mod:`msgbus.backendkit.window`). Thread-safe.

    Callers send what the window queued themselves, under ``_send_lock`` (stomp.py writes
    from any thread); the receiver thread confirms receipts under ``_table_lock``, which
    guards the window's unconfirmed table and is never held while waiting.
    """

    def __init__(self, backend: ActiveMQBackend) -> None:
        self.backend = backend
        self.link = _Link(backend, self, "publish")
        self.window: PublishWindow[_Pending] = PublishWindow(
            "ActiveMQ", backend.options.max_in_flight, self.link.outage
        )
        self._send_lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._conn: stomp.Connection12 | None = None
        self._ids = itertools.count(1)
        self._prefix = f"p{id(self):x}-"

    def on_up(self, conn: stomp.Connection12, generation: int) -> None:
        with self._send_lock:
            self._requeue_in_flight("reconnected")
            resent = self._send_queued(conn)
            if resent:
                log.warning("ActiveMQ: sent %d queued or unconfirmed message(s)", resent)
            self._conn = conn

    def on_down(self, generation: int) -> None:
        with self._send_lock:
            self._conn = None
            self._requeue_in_flight("the connection was lost")

    def _requeue_in_flight(self, reason: str) -> None:
        with self._table_lock:
            self.window.connection_lost(reason)

    def _send_queued(self, conn: stomp.Connection12) -> int:
        """Under ``_send_lock``: send what the window queued, oldest first."""
        sent = 0
        for entry in self.window.queued():
            receipt = self._prefix + str(next(self._ids))
            with self._table_lock:
                self.window.record(receipt, entry)
            try:
                conn.send(
                    entry.destination, entry.body, headers={**entry.headers, "receipt": receipt}
                )
            except (stomp.exception.StompException, OSError) as exc:
                # the reader notices the broken connection; on_down queues it again
                log.debug("ActiveMQ: send failed (%s); will resend after reconnecting", exc)
            sent += 1
        return sent

    def on_give_up(self, error: BrokerUnavailable) -> None:
        self.window.fail_queued(error)

    def on_receipt(self, generation: int, receipt_id: str) -> None:
        with self._table_lock:
            done = self.window.confirmed(receipt_id)
        self.window.finish(done, None)

    def on_error(self, generation: int, receipt_id: str | None, text: str) -> bool:
        if receipt_id:
            with self._table_lock:
                done = self.window.confirmed(receipt_id)
            if done:
                self.window.finish(done, PublishError(f"ActiveMQ refused the message: {text}"))
                return False
        with self._table_lock:
            lost = self.window.drop_in_flight()
        error = PublishError(f"ActiveMQ reported an error, message state unknown: {text}")
        self.window.finish(lost, error)
        return True

    def fail_all(self, error: Exception) -> None:
        """Fail every queued and unconfirmed publish (at close)."""
        with self._table_lock:
            lost = self.window.drop_in_flight()
        self.window.fail_all(error, unconfirmed=False)
        self.window.finish(lost, error)

    def publish(self, destination: str, body: bytes, headers: dict[str, str]) -> Future[None]:
        """Admit the message into the window and send what is queued (while connected)."""
        future: Future[None] = PendingFuture()
        if not self.window.admit(_Pending(future, destination, body, headers)):
            return future
        with self._send_lock:
            conn = self._conn
            if conn is not None:
                self._send_queued(conn)
        return future

    def flush(self, timeout: float | None) -> None:
        """Wait until every publish so far is confirmed or failed; TimeoutError if not."""
        self.window.flush(timeout)


# --------------------------------------------------------------------------- consuming


class _ActiveMQSubscription(Subscription, _Owner):
    """A member of a group (or a private topic subscription) on its own connection."""

    def __init__(
        self, backend: ActiveMQBackend, topic: str, group: str | None, prefetch: int
    ) -> None:
        self.topic = topic
        self.group = group
        self.backend = backend
        self.destination = group_destination(topic, group)
        self.prefetch = max(1, prefetch)
        self.link = _Link(backend, self, f"subscribe {self.destination}")
        self._id = f"s{id(self):x}"
        self._lock = threading.Lock()
        self._buffer = DeliveryBuffer(self._lock)
        self._conn: stomp.Connection12 | None = None
        self._generation = -1
        self._closed = False
        self._waiting_receipt: tuple[str, threading.Event, list[str]] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- link callbacks

    def on_up(self, conn: stomp.Connection12, generation: int) -> None:
        with self._lock:
            self._generation = generation
            self._conn = conn
        self._confirmed(
            conn,
            f"sub-{self._id}-{generation}",
            lambda receipt: conn.subscribe(
                self.destination,
                id=self._id,
                ack="client-individual",
                headers={"receipt": receipt, "activemq.prefetchSize": str(self.prefetch)},
            ),
            "the subscription",
        )
        if self.group is not None:
            # ActiveMQ forgets a group queue that never held a message when it crashes (it is
            # only journaled with its first message); a marker makes the queue durable, so
            # messages published after a crash still reach the group.
            self._confirmed(
                conn,
                f"mark-{self._id}-{generation}",
                lambda receipt: conn.send(
                    self.destination,
                    b"",
                    headers={MARKER_HEADER: "1", "persistent": "true", "receipt": receipt},
                ),
                "the group queue marker",
            )

    def _confirmed(
        self, conn: stomp.Connection12, receipt: str, send: Callable[[str], None], what: str
    ) -> None:
        """Send a frame with ``receipt`` and wait for the RECEIPT (BrokerUnavailable if not)."""
        event = threading.Event()
        errors: list[str] = []
        self._waiting_receipt = (receipt, event, errors)
        send(receipt)
        timeout = self.backend.options.connect_timeout
        if not event.wait(timeout):
            raise BrokerUnavailable(
                f"ActiveMQ at {self.backend.where} did not confirm {what} on "
                f"{self.destination} within {timeout:g}s"
            )
        if errors:
            raise BrokerUnavailable(f"ActiveMQ refused {what} on {self.destination}: {errors[0]}")

    def on_down(self, generation: int) -> None:
        with self._lock:
            self._conn = None
            # not yet handed out: the broker redelivers them after we resubscribe
            self._buffer.clear()

    def on_receipt(self, generation: int, receipt_id: str) -> None:
        waiting = self._waiting_receipt
        if waiting is not None and waiting[0] == receipt_id:
            waiting[1].set()

    def on_error(self, generation: int, receipt_id: str | None, text: str) -> bool:
        waiting = self._waiting_receipt
        if waiting is not None and not waiting[1].is_set():
            waiting[2].append(text)
            waiting[1].set()
        return True

    def on_message(self, generation: int, frame: Any) -> None:
        headers = frame.headers
        if MARKER_HEADER in headers:  # see on_up: acknowledged at once, never handed out
            conn = self._conn
            if conn is not None and generation == self._generation:
                with contextlib.suppress(stomp.exception.StompException, OSError):
                    conn.ack(headers.get("ack"))
            return
        user, key = delivery_headers(headers)
        delivery = Delivery(
            self.topic,
            frame.body or b"",
            user,
            key,
            self._settle,
            redelivered=headers.get("redelivered") == "true",
            native_id=headers.get("message-id"),
            token=(generation, headers.get("ack") or headers.get("message-id")),
        )
        with self._lock:
            if generation == self._generation:
                self._buffer.put(delivery)  # dropped once closed

    # ---------------------------------------------------------------- SPI

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries within ``timeout`` s ([] on timeout or close).

        Raises BrokerUnavailable while the connection has been down for longer than
        ``reconnect_timeout`` (it keeps reconnecting in the background).
        """
        with self._lock:
            return self._buffer.take(max_messages, timeout, self._check_connection)

    def _check_connection(self) -> None:
        self.link.outage.check()

    def connection_problem(self) -> BaseException | None:
        """While this subscription's connection is down (reconnecting): why; else None."""
        return self.link.outage.problem()

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        generation, ack_id = delivery.token
        with self._lock:
            if self._closed or generation != self._generation:
                return  # the broker redelivers it anyway
            conn = self._conn
            if not ack and requeue:
                self._buffer.put_back(delivery, self._settle)
                return
        if conn is None:
            return
        try:
            if ack:
                conn.ack(ack_id)  # STOMP 1.2: the ack id alone, no subscription argument
            else:
                conn.nack(ack_id)
        except (stomp.exception.StompException, OSError) as exc:
            log.debug("ActiveMQ: could not settle a delivery (%s); it will be redelivered", exc)

    def confirm_settled(self, timeout: float) -> bool:
        """An empty transaction (BEGIN, ABORT with a receipt) after the ACKs: ActiveMQ
        handles a connection's frames in order, so the RECEIPT comes after the ACKs."""
        with self._lock:
            conn = self._conn
        if conn is None:
            raise BrokerUnavailable(f"ActiveMQ: acks on {self.destination} not confirmed")
        tx = f"sync-{self._id}-{next(_SYNC_IDS)}"
        conn.begin(transaction=tx)
        self._confirmed(
            conn, tx, lambda receipt: conn.abort(tx, headers={"receipt": receipt}), "the acks"
        )
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer.close()
        self.link.close(timeout=2.0)
        self.backend.forget(self)

    def __repr__(self) -> str:
        return f"<ActiveMQ subscription {self.destination} prefetch={self.prefetch}>"


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
        self.ssl_context = _tls_context(options) if self.use_ssl else None
        """The TLS settings as an SSL context (None without TLS), to diagnose failures."""
        self.vhost = options.vhost or url.path or None
        self.features = dataclasses.replace(
            type(self).features, max_message_bytes=options.max_message_bytes
        )
        self._lock = threading.Lock()
        self._subscriptions: set[_ActiveMQSubscription] = set()
        self._closed = False
        self._publisher = _Publisher(self)

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
        _check_name("group", group)
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
        _check_name("topic", topic)
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
        _check_name("topic", topic)
        if group is not None:
            _check_name("group", group)
        sub = _ActiveMQSubscription(self, topic, group, prefetch)
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

    def forget(self, sub: _ActiveMQSubscription) -> None:
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
