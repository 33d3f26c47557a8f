"""OpenTelemetry spans for publishing and handling messages, with W3C trace context in headers.

Needs ``opentelemetry-api`` (extra ``msgbus[otel]``); :mod:`msgbus.telemetry` imports this
module only when the API is installed and a tracer provider records spans. Names and
attributes follow the OpenTelemetry messaging semantic conventions:

- publish: a ``PRODUCER`` span ``send <topic>``, ended when the broker confirms (or the
  publish fails); its context goes into the message headers through the global text-map
  propagator (by default W3C ``traceparent``/``tracestate``, plus ``baggage``).
- handle: a ``CONSUMER`` span ``process <topic>`` per handler attempt, a child of the
  context extracted from the headers (a root span when they carry none, or a malformed one),
  with ``msgbus.attempt``, ``msgbus.outcome`` (``ack``, ``retry``, ``dead_letter``,
  ``dropped``, ``dead_letter_failed``) and the exception recorded. It is the current span
  while the handler runs, so the handler's own spans and the dead-letter publish are its
  children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from msgbus.message import CORRELATION_ID, MESSAGE_ID

__all__ = ["ProcessSpan", "Tracing", "extract", "inject"]

SCOPE = "msgbus"
"""The instrumentation scope name of every msgbus span."""
_CACHED = 10_000
"""At most this many topics (and topic/group pairs) keep cached span attributes."""
_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})
_HEX = frozenset("0123456789abcdef")


def _is_default_propagator(propagator: Any) -> bool:
    """True for the API's default global propagator (W3C trace context, then baggage)."""
    from opentelemetry.propagators.composite import CompositePropagator

    return type(propagator) is CompositePropagator and propagator.fields == _W3C_FIELDS


_default_propagator: list[Any] = [None, False]  # [propagator seen last, is it the default]


def _default_in_use() -> bool:
    propagator = propagate.get_global_textmap()
    seen = _default_propagator
    if seen[0] is not propagator:
        seen[0], seen[1] = propagator, _is_default_propagator(propagator)
    return bool(seen[1])


def extract(headers: Mapping[str, str]) -> Any:
    """The parent context in ``headers``, through the global propagator. With the API's
    default propagator and headers that hold only a canonical version-00 ``traceparent``
    (no ``tracestate``, no ``baggage``: what msgbus itself sends), it is parsed directly:
    the same context the propagator returns, without its regular expression and getters;
    anything else goes to the propagator."""
    traceparent = headers.get("traceparent")
    if (
        traceparent is None
        or len(traceparent) != 55
        or not traceparent.startswith("00-")
        or "tracestate" in headers
        or "baggage" in headers
        or not _default_in_use()
    ):
        return propagate.extract(headers)
    if not (
        traceparent[35] == "-"
        and traceparent[52] == "-"
        and _HEX.issuperset(traceparent[3:35])
        and _HEX.issuperset(traceparent[36:52])
        and _HEX.issuperset(traceparent[53:])
    ):
        return propagate.extract(headers)
    trace_id = int(traceparent[3:35], 16)
    span_id = int(traceparent[36:52], 16)
    if not trace_id or not span_id:
        return propagate.extract(headers)
    flags = int(traceparent[53:], 16)
    remote = trace.SpanContext(trace_id, span_id, True, trace.TraceFlags(flags))
    return trace.set_span_in_context(trace.NonRecordingSpan(remote), otel_context.Context())


def inject(span: Any, headers: dict[str, str]) -> None:
    """Put ``span``'s context (and the current baggage) into ``headers`` through the global
    propagator. With the API's default propagator and no baggage, the W3C ``traceparent``
    (and ``tracestate``) are written directly: the same text the propagator writes, without
    building a context and going through both propagators for every message."""
    if not _default_in_use() or baggage.get_all():
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return
    context = span.get_span_context()
    if not context.is_valid:
        return
    headers["traceparent"] = (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )
    if context.trace_state:
        headers["tracestate"] = context.trace_state.to_header()


class ProcessSpan:
    """A started ``process`` span made current; :meth:`end` records the outcome and ends it."""

    __slots__ = ("attempt", "span", "token")

    def __init__(self, span: Any, token: object, attempt: int | None = None) -> None:
        self.span = span
        self.token = token
        self.attempt = attempt  # set on the span at its start already

    def end(self, attempt: int, outcome: str | None, error: BaseException | None) -> None:
        """Record ``attempt`` (unless given at the start), ``outcome`` and ``error`` (if
        any), detach and end the span."""
        span = self.span
        try:
            if self.attempt != attempt:
                span.set_attribute("msgbus.attempt", attempt)
            if outcome is not None:
                span.set_attribute("msgbus.outcome", outcome)
            if error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", _error_type(error))
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        finally:
            otel_context.detach(self.token)
            span.end()


class Tracing:
    """Creates msgbus spans with one tracer; thread-safe (spans are per call)."""

    def __init__(self, provider: Any, system: str, server: tuple[str, int | None] | None) -> None:
        from msgbus import __version__

        self.tracer = provider.get_tracer(SCOPE, __version__)
        self.system = system
        base: dict[str, Any] = {"messaging.system": system}
        if server is not None:
            base["server.address"] = server[0]
            if server[1] is not None:
                base["server.port"] = server[1]
        self._base = base
        # per topic (and group): the attributes every span of it has; copied per span
        self._send_attributes: dict[str, dict[str, Any]] = {}
        self._process_attributes: dict[tuple[str, str | None], dict[str, Any]] = {}

    def start_send(self, topic: str, body: bytes, key: str | None, headers: dict[str, str]) -> Any:
        """Start a ``send <topic>`` PRODUCER span and inject its context into ``headers``."""
        attributes = self._send_attributes.get(topic)
        if attributes is None:
            attributes = {
                **self._base,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": topic,
            }
            if len(self._send_attributes) < _CACHED:
                self._send_attributes[topic] = attributes
        attributes = {**attributes, "messaging.message.body.size": len(body)}
        _common(attributes, headers, key, self.system)
        span = self.tracer.start_span(
            f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        inject(span, headers)
        return span

    @staticmethod
    def end_send(span: Any, error: BaseException | None) -> None:
        """End a send span: OK when the broker confirmed, else with ``error`` recorded."""
        if error is not None:
            span.record_exception(error)
            span.set_attribute("error.type", _error_type(error))
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def start_process(
        self,
        topic: str,
        group: str | None,
        headers: Mapping[str, str],
        key: str | None,
        body: bytes,
        extra: Mapping[str, Any] | None,
        attempt: int | None = None,
    ) -> ProcessSpan:
        """Start a ``process <topic>`` CONSUMER span, child of the context in ``headers``.

        ``extra`` adds broker-specific attributes (Kafka partition and offset); ``attempt``
        (the handler attempt's number, if known now) is set at the start. The span is made
        current until :meth:`ProcessSpan.end`.
        """
        parent = extract(headers)
        attributes = self._process_attributes.get((topic, group))
        if attributes is None:
            attributes = {
                **self._base,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": topic,
            }
            if group is not None:
                attributes["messaging.consumer.group.name"] = group
            if len(self._process_attributes) < _CACHED:
                self._process_attributes[(topic, group)] = attributes
        attributes = {**attributes, "messaging.message.body.size": len(body)}
        _common(attributes, headers, key, self.system)
        if extra:
            attributes.update(extra)
        if attempt is not None:
            attributes["msgbus.attempt"] = attempt
        span = self.tracer.start_span(
            f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return ProcessSpan(span, token, attempt)


def _common(
    attributes: dict[str, Any], headers: Mapping[str, str], key: str | None, system: str
) -> None:
    message_id = headers.get(MESSAGE_ID)
    if message_id:
        attributes["messaging.message.id"] = message_id
    correlation_id = headers.get(CORRELATION_ID)
    if correlation_id:
        attributes["messaging.message.conversation_id"] = correlation_id
    if key is not None and system == "kafka":
        attributes["messaging.kafka.message.key"] = key


def _error_type(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
