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
