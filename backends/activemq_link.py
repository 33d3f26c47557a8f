"""One STOMP connection of the ActiveMQ backend, kept up: connect, fail over, reconnect.

:class:`Link` connects to the first host of the URL that answers (within
``connect_timeout``), tells a refused login and an untrusted TLS certificate from a broker
that is down, forwards the frames of its connection to its :class:`LinkOwner` (the
publisher or a subscription) tagged with a connection generation, and re-establishes a lost
connection in the background with backoff, feeding the outage policy
(:mod:`msgbus.backendkit.outage`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

import stomp
import stomp.exception

from msgbus.backendkit import Backoff, Outage
from msgbus.errors import (
    AuthenticationError,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    MsgBusError,
)

if TYPE_CHECKING:
    from msgbus.backends.activemq import ActiveMQBackend, ActiveMQOptions

__all__ = ["Link", "LinkOwner", "force_close", "tls_context"]

log = logging.getLogger("msgbus.activemq")


class _DemoteRetryNoise(logging.Filter):
    """stomp.py logs each failed connection attempt as a WARNING; msgbus retries on its own
    and reports the outcome, so these become DEBUG records (handlers at WARNING skip them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith("could not connect"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


if not any(isinstance(f, _DemoteRetryNoise) for f in logging.getLogger("stomp.py").filters):
    logging.getLogger("stomp.py").addFilter(_DemoteRetryNoise())


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


def tls_context(opts: ActiveMQOptions) -> ssl.SSLContext:
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

    def __init__(self, link: Link, generation: int, attempt: _Attempt) -> None:
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


class LinkOwner:
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


class Link:
    """One STOMP 1.2 connection to the first host that answers, re-established when lost.

    ``conn`` is the live stomp.py connection or None; ``generation`` counts connections, so
    frames and deliveries of an old connection can be told apart. Thread-safe.
    """

    def __init__(self, backend: ActiveMQBackend, owner: LinkOwner, name: str) -> None:
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
            force_close(conn)
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
            force_close(conn)
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
            force_close(conn)
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
            force_close(conn)
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
                threading.Thread(target=force_close, args=(conn,), daemon=True).start()

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
        force_close(conn)


class _DisconnectWaiter(stomp.ConnectionListener):
    def __init__(self, done: threading.Event) -> None:
        self.done = done

    def on_receipt(self, frame: Any) -> None:
        self.done.set()

    def on_disconnected(self) -> None:
        self.done.set()


def force_close(conn: stomp.Connection12) -> None:
    """Drop a stomp.py connection's socket without waiting for anything."""
    transport = conn.transport
    transport.running = False
    with contextlib.suppress(Exception):  # already gone
        transport.disconnect_socket()
