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
    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> Any:
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else random.getrandbits(128)
        span_id = random.getrandbits(64)
        return NonRecordingSpan(SpanContext(trace_id, span_id, False, _SAMPLED))

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        return trace.use_span(self.start_span(*args, **kwargs), end_on_exit=True)


class NullTracerProvider(trace.TracerProvider):
    """Tracers whose spans carry valid, sampled contexts and record nothing."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _NullTracer()


class NullMeterProvider(MeterProvider):
    """Meters whose instruments do nothing (the API's no-op meter)."""

    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return NoOpMeter(name)
