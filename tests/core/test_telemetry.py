"""Bus options for telemetry, and the API-without-SDK case (nothing recorded, no headers)."""

from __future__ import annotations

import uuid

import pytest

import msgbus
from msgbus.telemetry import split_options
from msgbus.testing.recorder import Recorder


def url() -> str:
    return f"memory://telemetry-{uuid.uuid4().hex[:8]}"


def test_url_and_keyword_options_are_taken_by_the_bus() -> None:
    parsed, own = split_options(msgbus.BusURL.parse(url() + "?tracing=false"), {"metrics": "no"})
    assert own == {"tracing": False, "metrics": False}
    assert "tracing" not in parsed.query
    with msgbus.connect(url() + "?tracing=off&metrics=0") as bus:
        assert bus.telemetry is None  # both off: no hooks at all


def test_bad_flag_is_a_configuration_error() -> None:
    with pytest.raises(msgbus.ConfigurationError, match="'tracing' must be true or false"):
        msgbus.connect(url(), tracing="maybe")
    with pytest.raises(msgbus.UnknownOption):
        msgbus.connect(url(), tracer="x")  # still refused by the backend


def test_api_without_sdk_records_nothing_and_adds_no_headers() -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider was set in this process")
    with msgbus.connect(url()) as bus:
        assert bus.telemetry is not None and not bus.telemetry.active()
        rec = Recorder()
        bus.subscribe("t", rec)
        bus.start()
        bus.publish("t", "x").result(5)
        (msg,) = rec.wait_for(1, 10)
        assert "traceparent" not in msg.headers


def test_direct_injection_writes_what_the_default_propagator_writes() -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import baggage, propagate, trace
    from opentelemetry import context as otel_context
    from opentelemetry.trace import TraceState

    from msgbus.tracing import inject

    tracer = sdk_trace.TracerProvider().get_tracer("t")
    parent = trace.NonRecordingSpan(
        trace.SpanContext(1, 2, True, trace.TraceFlags(1), TraceState([("ven", "x1")]))
    )
    span = tracer.start_span("s", context=trace.set_span_in_context(parent))
    ours: dict[str, str] = {}
    inject(span, ours)
    theirs: dict[str, str] = {}
    propagate.inject(theirs, context=trace.set_span_in_context(span))
    assert ours == theirs and set(ours) == {"traceparent", "tracestate"}
    token = otel_context.attach(baggage.set_baggage("tenant", "t-7"))
    try:  # with baggage, the propagator writes it too
        with_baggage: dict[str, str] = {}
        inject(span, with_baggage)
        assert with_baggage["baggage"] == "tenant=t-7"
        assert with_baggage["traceparent"] == ours["traceparent"]
    finally:
        otel_context.detach(token)
    span.end()


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
        {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
        {"traceparent": "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319_-b7ad6b7169203331-01"},
        {"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0x0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331- 1"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01"},
        {"traceparent": "garbage"},
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "ven=x1",
            "baggage": "tenant=t-7",
        },
        {},
    ],
)
def test_direct_extraction_gives_what_the_default_propagator_gives(
    headers: dict[str, str],
) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import baggage, propagate, trace

    from msgbus.tracing import extract

    ours, theirs = extract(headers), propagate.extract(headers)
    assert trace.get_current_span(ours).get_span_context() == (
        trace.get_current_span(theirs).get_span_context()
    )
    assert baggage.get_all(ours) == baggage.get_all(theirs)


def test_buses_sharing_a_meter_provider_are_all_counted(caplog: pytest.LogCaptureFixture) -> None:
    """The SDK ignores the callbacks of a second observable instrument with the same name:
    a second bus on one meter provider must still be counted, and counts of the same topic
    from two buses add up. No "created already" warning either."""
    pytest.importorskip("opentelemetry.sdk.metrics")
    from msgbus.testing.observability import MetricCapture

    meters = MetricCapture()
    name = url()
    with (
        msgbus.connect(name, meter_provider=meters.provider) as first,
        msgbus.connect(name, meter_provider=meters.provider) as second,
    ):
        first.publish("only-first", "x").result(5)
        for payload in ("a", "b"):
            second.publish("only-second", payload).result(5)
        first.publish("both", "x").result(5)
        second.publish("both", "y").result(5)
        assert meters.values("only-first")["msgbus.messages.confirmed"] == 1
        assert meters.values("only-second")["msgbus.messages.confirmed"] == 2
        assert meters.values("both")["msgbus.messages.published"] == 2
        assert meters.values("both")["msgbus.publish.duration"] == 2
    assert "created already" not in caplog.text


_LATE_SDK = """
import time, msgbus
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from msgbus.testing.recorder import Recorder

with msgbus.connect("memory://late-sdk", metrics=False) as bus:
    assert not bus.telemetry.active(), "no SDK yet"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    deadline = time.monotonic() + 10
    while not bus.telemetry.active():
        assert time.monotonic() < deadline, "the SDK installed later was never noticed"
        time.sleep(0.05)
    rec = Recorder()
    bus.subscribe("t", rec)
    bus.start()
    bus.publish("t", "x").result(5)
    (msg,) = rec.wait_for(1, 10)
    assert "traceparent" in msg.headers
    names = {s.name for s in exporter.get_finished_spans()}
    assert "send t" in names, names
print("noticed")
"""


def test_an_sdk_installed_after_the_bus_was_made_is_noticed(tmp_path) -> None:
    """The watcher thread finds a global SDK set later (its own process: global providers are
    set once per process)."""
    pytest.importorskip("opentelemetry.sdk.trace")
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _LATE_SDK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "noticed"
