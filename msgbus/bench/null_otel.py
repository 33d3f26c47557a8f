"""OpenTelemetry providers that record nothing at no cost, for ``msgbus bench overhead``.

Given to ``connect(tracer_provider=..., meter_provider=...)`` they make msgbus run every
hook (attribute dicts, span start/end calls, context injection into the headers and
extraction, metric calls) while the "SDK" behind them does nothing: spans are
``NonRecordingSpan`` objects with fresh valid ids (so the trace context still travels in the
headers), instruments are the API's no-ops. The CPU the ``hooks`` mode adds over ``off`` is
therefore what msgbus itself adds; what ``sdk`` adds over ``hooks`` is the SDK's own price.
"""

from __future__ import annotations

import random
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider, NoOpMeter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

__all__ = ["NullMeterProvider", "NullTracerProvider"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class _NullTracer(trace.Tracer):
    """Every span is the same valid, sampled, non-recording span: as cheap as a span gets."""

    def __init__(self) -> None:
        ids = SpanContext(random.getrandbits(128), random.getrandbits(64), False, _SAMPLED)
        self._span = NonRecordingSpan(ids)

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._span

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        return trace.use_span(self._span, end_on_exit=False)


class NullTracerProvider(trace.TracerProvider):
    """Tracers whose spans carry valid, sampled contexts and record nothing."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _NullTracer()


class NullMeterProvider(MeterProvider):
    """Meters whose instruments do nothing (the API's no-op meter)."""

    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return NoOpMeter(name)
