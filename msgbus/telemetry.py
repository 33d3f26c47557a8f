"""Hooks the bus calls around publishes and handler attempts, for tracing and metrics.

:func:`telemetry_for` returns None when ``opentelemetry-api`` is not installed, or when both
tracing and metrics are turned off: then the bus calls the backend directly and pays nothing.
Otherwise the :class:`Telemetry` hooks find out whether a tracer or meter provider that
records is configured (an SDK, or providers given to ``connect``) when the bus is made, and
while one is missing, once a second on a shared watcher thread
(:mod:`msgbus.provider_watch`); while the API's no-op/proxy providers are the global ones, a
hook costs one attribute read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from msgbus import provider_watch
from msgbus.errors import ConfigurationError
from msgbus.message import MESSAGE_ID
from msgbus.url import BusURL

if TYPE_CHECKING:
    from msgbus.consumer import Consumer, _Work
    from msgbus.metrics import Metrics
    from msgbus.tracing import Tracing

__all__ = [
    "BUS_OPTIONS",
    "Attempt",
    "LagSource",
    "Telemetry",
    "messaging_system",
    "split_options",
    "telemetry_for",
]


_SYSTEMS = {
    "kafka": "kafka",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "stomp": "activemq",
    "stomp+ssl": "activemq",
    "activemq": "activemq",
    "memory": "memory",
}

Send = Callable[..., "Future[None]"]
LagSource = Callable[[], "list[tuple[str, str, int]]"]
"""Returns ``(topic, group, lag)`` readings (see :mod:`msgbus.lag`)."""

BUS_OPTIONS = ("tracing", "metrics", "tracer_provider", "meter_provider")
"""Options ``connect`` keeps for the bus instead of passing them to the backend."""
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def split_options(url: BusURL, options: dict[str, Any]) -> tuple[BusURL, dict[str, Any]]:
    """Take the :data:`BUS_OPTIONS` out of ``url``'s query and ``options`` (modified in place).

    Returns the URL without them and the bus options (keywords win over the URL); ``tracing``
    and ``metrics`` become bools (``ConfigurationError`` for anything else).
    """
    own: dict[str, Any] = {}
    for name in ("tracing", "metrics"):
        if name in url.query:
            own[name] = _flag(name, url.query[name])
            url = url.with_query(**{name: None})
        if name in options:
            own[name] = _flag(name, options.pop(name))
    for name in ("tracer_provider", "meter_provider"):
        if name in options:
            own[name] = options.pop(name)
    return url, own


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ConfigurationError(f"bus option {name!r} must be true or false, not {value!r}")


def messaging_system(scheme: str | None) -> str:
    """The ``messaging.system`` value for a URL scheme (``kombu+redis`` -> ``kombu``)."""
    if not scheme:
        return "msgbus"
    return _SYSTEMS.get(scheme, scheme.split("+", 1)[0])


def telemetry_for(
    scheme: str | None,
    server: tuple[str, int | None] | None,
    *,
    tracing: bool = True,
    metrics: bool = True,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    lag: LagSource | None = None,
) -> Telemetry | None:
    """The hooks for one bus, or None when nothing could ever be recorded.

    ``lag``, when given, is called at metrics collection time for the ``(topic, group, lag)``
    readings of the ``msgbus.consumer.lag`` gauge.
    """
    if not (tracing or metrics):
        return None
    try:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return None
    return Telemetry(
        messaging_system(scheme),
        server,
        tracing=tracing,
        metrics=metrics,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        lag=lag,
    )


class _Resolver:
    """Builds a component from a provider that records: the given one, else the global one
    once an SDK has been installed (global providers are set only once per process)."""

    __slots__ = ("_build", "_global", "_is_noop", "value")

    def __init__(
        self,
        explicit: Any,
        get_global: Callable[[], Any],
        is_noop: Callable[[Any], bool],
        build: Callable[[Any], Any],
    ) -> None:
        self._build = build
        self._global = get_global
        self._is_noop = is_noop
        self.value: Any = build(explicit) if explicit is not None else None

    def resolve(self) -> Any:
        """The component, or None while no recording provider is configured."""
        if self.value is None:
            provider = self._global()
            if not self._is_noop(provider):
                self.value = self._build(provider)
        return self.value


def _tracer_is_noop(provider: Any) -> bool:
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

    return isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)


def _meter_is_noop(provider: Any) -> bool:
    from opentelemetry.metrics import NoOpMeterProvider

    try:
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # pragma: no cover - layout of other API versions
        return isinstance(provider, NoOpMeterProvider)
    return isinstance(provider, _ProxyMeterProvider | NoOpMeterProvider)


class Telemetry:
    """Tracing and metrics hooks of one bus (thread-safe)."""

    def __init__(
        self,
        system: str,
        server: tuple[str, int | None] | None,
        *,
        tracing: bool,
        metrics: bool,
        tracer_provider: Any,
        meter_provider: Any,
        lag: LagSource | None = None,
    ) -> None:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace as otel_trace

        self.system = system

        def build_tracing(provider: Any) -> Tracing:
            from msgbus.tracing import Tracing

            return Tracing(provider, system, server)

        def build_metrics(provider: Any) -> Metrics:
            from msgbus.metrics import Metrics

            return Metrics(provider, system, lag=lag)

        never = _NEVER
        self.on = False
        """True when spans or metrics are being recorded: what the hot paths read."""
        self._tracing: _Resolver | _Never = (
            _Resolver(
                tracer_provider, otel_trace.get_tracer_provider, _tracer_is_noop, build_tracing
            )
            if tracing
            else never
        )
        self._metrics: _Resolver | _Never = (
            _Resolver(
                meter_provider, otel_metrics.get_meter_provider, _meter_is_noop, build_metrics
            )
            if metrics
            else never
        )
        if self.refresh():
            provider_watch.watch(self)

    def refresh(self) -> bool:
        """Look for recording providers now and update :attr:`on`; True while tracing or
        metrics (when enabled) still waits for one. Called by the watcher thread."""
        tracing, metrics = self._tracing.resolve(), self._metrics.resolve()
        self.on = tracing is not None or metrics is not None
        return (tracing is None and self._tracing is not _NEVER) or (
            metrics is None and self._metrics is not _NEVER
        )

    def active(self) -> bool:
        """True when spans or metrics are being recorded (an SDK installed after the bus was
        made is noticed within about a second)."""
        return self.on

    def publish(
        self,
        send: Send,
        topic: str,
        body: bytes,
        *,
        key: str | None,
        headers: dict[str, str],
    ) -> Future[None]:
        """Call ``send(topic, body, key=, headers=)`` inside a send span, counting it.

        Call only when :attr:`on` (the bus checks).
        ``headers`` (the wire headers, owned by the caller) get the trace context.
        """
        tracing = self._tracing.value
        metrics = self._metrics.value
        span = tracing.start_send(topic, body, key, headers) if tracing is not None else None
        attrs = metrics.topic_attributes(topic) if metrics is not None else None
        started = time.perf_counter()
        try:
            future = send(topic, body, key=key, headers=headers)
        except BaseException as exc:
            if span is not None:
                tracing.end_send(span, exc)  # type: ignore[union-attr]
            if metrics is not None:
                metrics.publish_done(attrs, 0.0, exc)  # type: ignore[arg-type]
            raise
        if metrics is not None:
            metrics.published(attrs)  # type: ignore[arg-type]

        def done(fut: Future[None]) -> None:
            error = fut.exception()
            if span is not None:
                tracing.end_send(span, error)  # type: ignore[union-attr]
            if metrics is not None:
                metrics.publish_done(attrs, time.perf_counter() - started, error)  # type: ignore[arg-type]

        future.add_done_callback(done)
        return future

    def process(self, consumer: Consumer, work: _Work, attempt: Callable[[_Work], Any]) -> Any:
        """Run ``attempt(work)`` (one handler attempt) inside a process span, counting it.

        Call only when :meth:`active`."""
        observed = self.begin(consumer, work)
        try:
            return attempt(work)
        finally:
            observed.end(work)

    def begin(self, consumer: Consumer, work: _Work) -> Attempt:
        """Start observing one handler attempt of ``work`` (its process span becomes the
        current context); call :meth:`Attempt.end` after the attempt was settled, in the same
        thread or task. For facades that run handlers themselves. Call only when
        :meth:`active`."""
        tracing = self._tracing.value
        metrics = self._metrics.value
        delivery = work.delivery
        spec = consumer.spec
        span = None
        if tracing is not None:
            headers: Mapping[str, str] = delivery.headers
            if MESSAGE_ID not in headers and delivery.native_id:
                headers = {**headers, MESSAGE_ID: delivery.native_id}
            span = tracing.start_process(
                spec.topic,
                spec.group,
                headers,
                delivery.key,
                delivery.body,
                consumer.backend.delivery_attributes(delivery),
                work.attempt,
            )
        attrs = metrics.group_attributes(spec.topic, spec.group) if metrics is not None else None
        if metrics is not None:
            metrics.handling(attrs, 1)  # type: ignore[arg-type]
        work.outcome = None
        work.error = None
        return Attempt(metrics, attrs, span, work.attempt, work.dead_error is None)


class Attempt:
    """One observed handler attempt (see :meth:`Telemetry.begin`)."""

    __slots__ = ("_attrs", "_first", "_metrics", "_number", "_span", "_started")

    def __init__(self, metrics: Any, attrs: Any, span: Any, number: int, clean: bool) -> None:
        self._metrics = metrics
        self._attrs = attrs
        self._span = span
        self._number = number
        self._first = number == 1 and clean
        self._started = time.perf_counter()

    def end(self, work: _Work) -> None:
        """Record the attempt's outcome and error (from ``work``); end its span."""
        metrics = self._metrics
        if metrics is not None:
            metrics.handling(self._attrs, -1)
            metrics.handled(
                self._attrs, self._first, time.perf_counter() - self._started, work.outcome
            )
        if self._span is not None:
            self._span.end(self._number, work.outcome, work.error)


class _Never:
    """A resolver for a signal turned off."""

    __slots__ = ()
    value = None

    @staticmethod
    def resolve() -> None:
        return None


_NEVER = _Never()
