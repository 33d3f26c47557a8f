"""The Bus: the one object application code talks to.

``connect(url)`` picks a backend by the URL's scheme and wraps it in a :class:`Bus`, which
serializes payloads, runs subscriptions on worker threads, retries failing handlers with
backoff, dead-letters what keeps failing, and shuts down cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from types import FrameType
from typing import Any, TypeVar

from msgbus import cloudevents, secrets
from msgbus.backend import Backend, ResolvedFuture
from msgbus.consumer import Consumer, Handler, HandlerRunner, SubscriptionSpec
from msgbus.envelope import check_topic, encode
from msgbus.errors import BusClosed, ConfigurationError, MsgBusError, NotSupported
from msgbus.health import BusHealth, HealthRecord, bus_health
from msgbus.lag import LagReader
from msgbus.registry import load_backend
from msgbus.retry import RetryPolicy
from msgbus.serialization import Codec, get_codec
from msgbus.telemetry import split_options, telemetry_for
from msgbus.url import BusURL

__all__ = ["DEFAULT_URL", "Bus", "connect"]

log = logging.getLogger("msgbus")

DEFAULT_URL = "memory://"
"""The URL used when neither an argument nor ``$MSGBUS_URL`` names one."""

DEFAULT_PREFETCH = 256
F = TypeVar("F", bound=Callable[..., Any])


def connect(url: str | BusURL | None = None, **options: Any) -> Bus:
    """Open a :class:`Bus` on the broker named by ``url``.

    ``url`` defaults to ``$MSGBUS_URL``, else ``memory://``. Keyword ``options`` go to the
    backend (as do the URL's query options; keywords win), except the bus's own
    (:data:`msgbus.telemetry.BUS_OPTIONS`): ``tracing`` and ``metrics`` (bool, default true:
    OpenTelemetry spans and metrics when ``opentelemetry-api`` is installed and a provider
    records), ``tracer_provider`` and ``meter_provider`` (keywords only; default: global).
    Raises :class:`~msgbus.InvalidURL`, :class:`~msgbus.UnknownBackend`,
    :class:`~msgbus.UnknownOption`,
    :class:`~msgbus.BackendNotInstalled` or :class:`~msgbus.BrokerUnavailable`; none of their
    messages contains the password. The password and secret options are remembered
    (``msgbus.secrets``) so that msgbus's and the drivers' log records and every msgbus error
    mask them.
    """
    if url is None:
        url = os.environ.get("MSGBUS_URL") or DEFAULT_URL
    parsed = url if isinstance(url, BusURL) else BusURL.parse(url)
    secrets.install_log_filter()
    secrets.remember(parsed.password)
    secrets.remember(*(v for k, v in parsed.query.items() if secrets.is_secret_option(k)))
    secrets.remember(
        *(v for k, v in options.items() if secrets.is_secret_option(k) and isinstance(v, str))
    )
    parsed, own = split_options(parsed, options)
    backend_class = load_backend(parsed.scheme)
    backend = backend_class.from_url(parsed, **options)
    return Bus(backend, parsed, **own)


class Bus:
    """Publish and subscribe on one backend.

    Thread safety: ``publish`` may be called from any thread, including handlers.
    ``subscribe`` may be called before or after ``start``. Handlers run on worker threads
    (``concurrency`` per subscription); messages with the same key are handled one at a time
    in order. Delivery is at least once: a message is acknowledged only after its handler
    returns (or its dead letter is confirmed), so handlers must be idempotent.
    """

    def __init__(
        self,
        backend: Backend,
        url: BusURL | None = None,
        *,
        tracing: bool = True,
        metrics: bool = True,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self.backend = backend
        self.url = url
        server = (url.hosts[0].host, url.hosts[0].port) if url is not None and url.hosts else None
        self._lag = LagReader(backend) if backend.reports_consumer_lag else None
        self.telemetry = telemetry_for(
            url.scheme if url is not None else None,
            server,
            tracing=tracing,
            metrics=metrics,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            lag=self._lag_readings if self._lag is not None else None,
        )
        self._health = HealthRecord()
        self._lock = threading.Lock()
        self._specs: list[SubscriptionSpec] = []
        self._consumers: list[Consumer] = []
        self._started = False
        self._closed = False
        self._stop = threading.Event()
        #: the signal (``signal.SIGINT``...) that ended :meth:`run`, or None
        self.stop_signal: int | None = None

    def __repr__(self) -> str:
        where = self.url.render(hide_password=True) if self.url else self.backend.describe()
        state = "closed" if self._closed else "started" if self._started else "new"
        return f"<msgbus.Bus {where} {state}>"

    @property
    def features(self) -> Any:
        """The backend's :class:`~msgbus.backend.Features` flags."""
        return self.backend.features

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        message_id: str | None = None,
        codec: str | None = None,
        delay: float | None = None,
    ) -> Future[None]:
        """Serialize ``payload`` and send it to ``topic``; return a future.

        The future resolves once the broker holds the message durably (as durable as the
        backend is), or fails with :class:`~msgbus.PublishError` /
        :class:`~msgbus.BrokerUnavailable`. Messages with the same ``key`` keep their order.
        ``codec`` names a registered codec (default: ``bytes`` for bytes, else ``json``), or
        is ``"cloudevents"``: a CloudEvent in binary mode (see :mod:`msgbus.cloudevents`).
        ``delay`` (seconds) schedules the delivery where the broker does so natively
        (ActiveMQ's scheduler); elsewhere it raises :class:`~msgbus.NotSupported`.
        Raises at once :class:`~msgbus.SerializationError`, :class:`~msgbus.ReservedHeader`,
        :class:`~msgbus.MessageTooLarge`, :class:`~msgbus.ConfigurationError` (bad topic or
        key) or :class:`~msgbus.BusClosed`. Thread-safe.
        """
        if self._closed:
            raise BusClosed("publish on a closed bus")
        check_topic(topic)
        if key is not None and not isinstance(key, str):
            raise ConfigurationError(f"key must be a str or None, not {type(key).__name__}")
        as_event = codec == cloudevents.CODEC
        body, wire = encode(
            payload,
            codec=None if as_event else codec,
            headers=headers,
            correlation_id=correlation_id,
            message_id=message_id,
        )
        if as_event:
            cloudevents.bind(wire, topic=topic, prefix=cloudevents.prefix_for(self.backend))
        if delay is not None:
            if not isinstance(delay, int | float) or delay < 0:
                raise ConfigurationError(f"delay must be a number of seconds >= 0, not {delay!r}")
            return self.backend.publish_delayed(topic, body, key=key, headers=wire, delay=delay)
        telemetry = self.telemetry
        if telemetry is None or not telemetry.on:  # the hot path: no call in between
            return self.backend.publish(topic, body, key=key, headers=wire)
        return telemetry.publish(self.backend.publish, topic, body, key=key, headers=wire)

    def publish_many(
        self,
        topic: str,
        payloads: Iterable[Any],
        *,
        key: str | None = None,
        keys: Sequence[str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        codec: str | None = None,
    ) -> list[Future[None]]:
        """Publish every payload of ``payloads`` to ``topic``; one future per message, in order.

        Each message is what :meth:`publish` would send (its own message id); ``key`` or a
        sequence ``keys`` (one per payload), ``headers`` and ``codec`` apply as there. Every
        payload is encoded before any is sent, so bad input raises at once (the errors of
        :meth:`publish`) and sends nothing. A message the backend refuses at once gets a
        failed future; the others are sent. Backends send the batch natively where their
        driver does better than a loop. Thread-safe.
        """
        if self._closed:
            raise BusClosed("publish on a closed bus")
        check_topic(topic)
        items = list(payloads)
        if keys is not None:
            if key is not None:
                raise ConfigurationError("publish_many takes key or keys, not both")
            if len(keys) != len(items):
                raise ConfigurationError(
                    f"publish_many got {len(keys)} keys for {len(items)} payloads"
                )
        for k in (key,) if keys is None else keys:
            if k is not None and not isinstance(k, str):
                raise ConfigurationError(f"key must be a str or None, not {type(k).__name__}")
        batch = []
        for i, payload in enumerate(items):
            body, wire = encode(
                payload, codec=codec, headers=headers, correlation_id=None, message_id=None
            )
            batch.append((body, key if keys is None else keys[i], wire))
        telemetry = self.telemetry
        if telemetry is None or not telemetry.on:
            return self.backend.publish_many(topic, batch)
        futures: list[Future[None]] = []  # one traced publish each
        send = self.backend.publish
        for body, k, wire in batch:
            try:
                futures.append(telemetry.publish(send, topic, body, key=k, headers=wire))
            except BusClosed:
                raise
            except MsgBusError as exc:
                futures.append(ResolvedFuture(exception=exc))
        return futures

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message published so far is confirmed (``TimeoutError`` if not)."""
        self.backend.flush(timeout)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        topic: str,
        handler: Handler | None = None,
        *,
        group: str | None = None,
        concurrency: int = 1,
        max_attempts: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        retry: RetryPolicy | None = None,
        codec: str | None = None,
        prefetch: int | None = None,
        from_beginning: bool = False,
        dead_letter: bool = True,
        runner: HandlerRunner | None = None,
        retry_mode: str = "local",
    ) -> Any:
        """Register ``handler`` for ``topic``; usable as ``@bus.subscribe(topic, ...)``.

        - ``group``: the consumer group; every group gets every message, members of a group
          share them. None gives a private group that lives as long as this bus.
        - ``concurrency``: worker threads; one key is still handled one message at a time.
        - ``max_attempts``, ``backoff``, ``max_backoff`` (or a full ``retry`` policy): a
          raising handler is retried with exponential backoff, then the message goes to
          ``<topic>.dlq`` with ``msgbus-dlq-*`` headers and is acknowledged. Raise
          :class:`~msgbus.Reject` to dead-letter at once. ``dead_letter=False`` drops it
          instead.
        - ``codec``: how to decode bodies that carry no content type (default: leave bytes;
          ``"cloudevents"``: JSON, the CloudEvents default for events without one).
        - ``prefetch``: unacknowledged messages held at once (default 256).
        - ``from_beginning``: a new group starts at the oldest retained message (backends
          with ``features.replay`` only).
        - ``runner``: for facades such as ``msgbus.aio``: the handler runs there instead of
          on worker threads (see :class:`~msgbus.consumer.HandlerRunner`).
        - ``retry_mode``: ``"local"`` (default) waits out a retry's backoff in this process;
          ``"durable"`` hands the message back to the broker, which redelivers it to the
          group after the backoff (:meth:`~msgbus.backend.Backend.publish_retry`), so a long
          backoff holds no memory and survives a restart of the consumer. Needs a ``group``
          and a backend that does it natively (ActiveMQ, RabbitMQ, Kafka retry topics); elsewhere
          :class:`~msgbus.NotSupported`.

        If the bus is already started, the subscription starts before this returns.
        Returns the handler (or a decorator when ``handler`` is None).
        """
        check_topic(topic)
        if group is not None and (not isinstance(group, str) or not group):
            raise ConfigurationError(f"group must be a non-empty str or None, not {group!r}")
        if group is not None:
            check_topic(group)
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        policy = retry or RetryPolicy(
            max_attempts=max_attempts, backoff=backoff, max_backoff=max_backoff
        )
        if retry_mode not in ("local", "durable"):
            raise ConfigurationError(f"retry_mode must be 'local' or 'durable', not {retry_mode!r}")
        if retry_mode == "durable":
            if group is None:
                raise ConfigurationError("retry_mode='durable' needs a group")
            if not self.backend.durable_retries:
                raise NotSupported(
                    f"{self.backend.describe()} has no native delayed redelivery: "
                    "retry_mode='durable' is not supported"
                )
        fetch_limit = DEFAULT_PREFETCH if prefetch is None else prefetch
        if fetch_limit < 1:
            raise ConfigurationError("prefetch must be at least 1")

        def register(fn: F) -> F:
            if not callable(fn):
                raise ConfigurationError(f"handler must be callable, not {fn!r}")
            spec = SubscriptionSpec(
                topic=topic,
                handler=fn,
                group=group,
                concurrency=concurrency,
                retry=policy,
                codec=_declared_codec(codec),
                prefetch=max(fetch_limit, concurrency),
                from_beginning=from_beginning,
                dead_letter=dead_letter,
                runner=runner,
                retry_mode=retry_mode,
            )
            with self._lock:
                if self._closed:
                    raise BusClosed("subscribe on a closed bus")
                self._specs.append(spec)
                started = self._started
            if started:
                self._start_consumer(spec)
            return fn

        if handler is not None:
            return register(handler)
        return register

    # ------------------------------------------------------------------ running

    def start(self) -> Bus:
        """Start every subscription; return once all are ready to receive.

        A message published after ``start`` returns reaches every group subscribed before.
        Idempotent. Raises :class:`~msgbus.BrokerUnavailable` if a subscription cannot be
        made (the subscriptions already started keep running; call ``close``).
        """
        with self._lock:
            if self._closed:
                raise BusClosed("start on a closed bus")
            if self._started:
                return self
            self._started = True
            specs = list(self._specs)
        for spec in specs:
            self._start_consumer(spec)
        return self

    def _lag_readings(self) -> list[tuple[str, str, int]]:
        """``(topic, group, lag)`` of the running named groups (metrics collection time)."""
        if self._lag is None or self._closed:
            return []
        with self._lock:
            targets = {(c.spec.topic, c.spec.group) for c in self._consumers}
        return self._lag.readings((t, g) for t, g in sorted(targets) if g is not None)

    def _start_consumer(self, spec: SubscriptionSpec) -> None:
        consumer = Consumer(self.backend, spec, self.telemetry)
        consumer.start()
        with self._lock:
            self._consumers.append(consumer)
        log.debug("subscribed %s on %s", spec.name, self.backend.describe())

    def run(
        self, *, drain_timeout: float = 10.0, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Start, then block until SIGINT/SIGTERM or :meth:`stop`; then close cleanly.

        On the signal it stops fetching, lets in-flight handlers finish (up to
        ``drain_timeout`` seconds), acknowledges them, flushes publishes and closes. Signal
        handlers are installed only when called from the main thread, and restored after.
        ``on_ready`` is called once the bus has started and the signal handlers are in place
        (so a "ready" line it prints means Ctrl-C is handled from then on).
        """
        self.start()
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: FrameType | None) -> None:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                self.stop_signal = signum
                self._stop.set()

            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, on_signal)
        try:
            if on_ready is not None:
                on_ready()
            while not self._stop.wait(0.5):
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.close(timeout=drain_timeout)

    def stop(self) -> None:
        """Ask a running :meth:`run` to shut down (thread-safe, returns at once)."""
        self._stop.set()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop consuming and close the backend. Idempotent; thread-safe.

        In-flight handlers get up to ``timeout`` seconds to finish and be acknowledged;
        messages not acknowledged by then go back to the broker and are redelivered (to
        another member, or on the next start). Pending publishes are flushed within the
        same deadline. ``timeout=0`` abandons in-flight handlers at once (as a crash would).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            consumers = list(self._consumers)
        self._stop.set()
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        for consumer in consumers:
            consumer.stop_fetching()
        for consumer in consumers:
            if not consumer.drain(deadline):
                log.warning("%s: handlers still running at close", consumer.spec.name)
        for consumer in consumers:
            consumer.close(deadline)
        try:
            self.backend.flush(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.error("close: some publishes were not confirmed before the deadline")
        finally:
            self.backend.close(max(0.0, deadline - time.monotonic()))

    def health(self) -> BusHealth:
        """The bus's health for probes: per subscription its state (connected, reconnecting,
        failed), last error and when, in-flight handlers and last message time; ``ready`` when
        every subscription is connected (see :mod:`msgbus.health`). Thread-safe, cheap."""
        with self._lock:
            consumers = list(self._consumers)
            pending = len(self._specs) - len(consumers)
            started, closed = self._started, self._closed
        problem = None if closed else self.backend.connection_problem()
        return bus_health(
            closed=closed,
            started=started,
            problem=problem,
            subscriptions=[consumer.health() for consumer in consumers],
            pending=pending,
            record=self._health,
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _declared_codec(name: str | None) -> Codec | None:
    """The codec a subscription declares for bodies without a content type."""
    if name is None:
        return None
    return get_codec("json" if name == cloudevents.CODEC else name)
