"""The connection workflow of the RabbitMQ backend: its I/O thread and pika connection.

:class:`PikaConnection` is a part of :class:`~msgbus.backends.rabbitmq.RabbitMQBackend`
(a mixin): one pika ``SelectConnection`` on one I/O thread (``msgbus-rabbitmq-io``); rounds
of connection attempts over the URL's hosts, in order (within ``connect_timeout`` at first,
then with backoff forever until closed); refused logins, refused vhosts and untrusted TLS
certificates told apart; the outage policy (:mod:`msgbus.backendkit.outage`) fed; and the
orderly shutdown. Other threads only hand it work (:meth:`PikaConnection.call_soon`). The
state it uses is set up by the backend's ``__init__``.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from msgbus.backendkit import settle_future
from msgbus.backends.rabbitmq_wire import describe_error, is_auth_error, is_tls_verify_error
from msgbus.errors import AuthenticationError, BrokerUnavailable, ConfigurationError

if TYPE_CHECKING:
    from msgbus.backends.rabbitmq import RabbitMQOptions
    from msgbus.backends.rabbitmq_subscription import RabbitSubscription

__all__ = ["PikaConnection"]

log = logging.getLogger("msgbus.rabbitmq")


class PikaConnection:
    """The I/O thread and connection of a RabbitMQ backend (see the module docstring)."""

    options: RabbitMQOptions
    _lock: threading.Lock
    _subscriptions: set[RabbitSubscription]

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
        if is_auth_error(exc):
            error: BrokerUnavailable = AuthenticationError(
                f"RabbitMQ at {host}:{port} refused user {opts.username!r} "
                f"(vhost {self.vhost!r}): {describe_error(exc)}"
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
                f"{opts.username!r}: {describe_error(exc)}"
            )
            if not self._initial.done():
                self._connecting = False
                settle_future(self._initial, error)
                return
            log.error("RabbitMQ: %s", error)
        if is_tls_verify_error(exc):
            self._round_tls_failures += 1
            self._round_errors.append(
                f"{host}:{port}: TLS certificate verification failed ({describe_error(exc)}); "
                "check the options cacertfile, verify and server_name_indication"
            )
        else:
            self._round_errors.append(f"{host}:{port}: {describe_error(exc)}")
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
        log.warning("RabbitMQ: lost the connection to %s (%s)", self.where, describe_error(reason))
        self._ioloop.call_later(0.1, self._connect_round)

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
