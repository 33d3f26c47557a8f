"""OpenTelemetry in the bank example; every function is a no-op without the packages.

- :func:`instrument_app`: the FastAPI app gets the standard instrumentation
  (``opentelemetry-instrumentation-fastapi``, extra ``msgbus[bank-otel]``), so
  ``POST /accounts`` opens a ``SERVER`` span (probes excluded).
- :func:`capture` / :func:`restored`: the request's trace context is stored in the outbox row
  with the event (W3C headers as JSON), and the relay publishes inside it, so msgbus's
  ``send`` span, and with it the email service's ``process`` span, joins the request's trace
  although the publish happens later, on another task, maybe after a restart.
- :func:`client_span`: a ``CLIENT`` span (around the SMTP send).
- :func:`print_spans`: an SDK tracer provider printing one line per span (``demo
  --print-spans``).

msgbus itself traces the publish and the handler (see docs/observability.md); this module
only adds the bank's own links.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["capture", "client_span", "instrument_app", "print_spans", "restored"]

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - exercised without the otel extras
    trace = None  # type: ignore[assignment]

SCOPE = "msgbus.contrib.bank"
"""The instrumentation scope of the bank's own spans."""
PROBE_PATHS = "healthz,readyz,metrics"
"""Paths the FastAPI instrumentation leaves untraced (probes would flood the traces)."""


def instrument_app(app: Any) -> Any:
    """Instrument ``app`` with the standard FastAPI instrumentation when it is installed
    (spans through the global tracer provider, so a no-op until an SDK is configured)."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:
        return app
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=PROBE_PATHS, exclude_spans=["receive", "send"]
    )
    return app


def capture() -> str | None:
    """The current trace context as JSON text (W3C headers), or None when there is none."""
    if trace is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, sort_keys=True) if carrier else None


@contextmanager
def restored(captured: str | None) -> Iterator[None]:
    """Run the block inside a context :func:`capture` saved (unchanged when None or not
    readable: a bad row never stops the relay)."""
    carrier: Any = None
    if trace is not None and captured:
        try:
            carrier = json.loads(captured)
        except ValueError:
            carrier = None
    if not isinstance(carrier, dict):
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextmanager
def client_span(name: str, **attributes: Any) -> Iterator[None]:
    """A ``CLIENT`` span named ``name`` around the block, a child of the current span; an
    exception leaving the block is recorded on it (and re-raised)."""
    if trace is None:
        yield
        return
    tracer = trace.get_tracer(SCOPE)
    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes):
        yield


def print_spans(stream: TextIO) -> Any:
    """Install, as the global tracer provider, an SDK provider whose console exporter writes
    one line per finished span to ``stream``: trace id, span id, parent span id, kind, name,
    duration and a few attributes. Returns the provider (``shutdown()`` flushes).

    Raises ``ImportError`` without ``opentelemetry-sdk`` (extra ``msgbus[bank-otel]``).
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "msgbus-bank"}))
    exporter = ConsoleSpanExporter(out=stream, formatter=span_line)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert trace is not None
    trace.set_tracer_provider(provider)
    return provider


_SHOWN = (
    "http.route",
    "http.response.status_code",
    "http.status_code",
    "messaging.system",
    "messaging.destination.name",
    "messaging.consumer.group.name",
    "msgbus.attempt",
    "msgbus.outcome",
    "server.port",
)


def span_line(span: Any) -> str:
    """One finished SDK span as a line: ``trace=… span=… parent=… kind name duration attrs``
    (``parent=-`` for a root span)."""
    context = span.context
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else "-"
    millis = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    attributes = span.attributes or {}
    shown = " ".join(f"{k}={attributes[k]}" for k in _SHOWN if k in attributes)
    kind = span.kind.name.lower()
    return (
        f"trace={context.trace_id:032x} span={context.span_id:016x} parent={parent} "
        f"{kind:<8} {span.name!r:<34} {millis:8.2f} ms  {shown}\n"
    )
