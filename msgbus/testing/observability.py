"""The conformance tests of tracing, metrics and health, run on every backend.

:class:`~msgbus.testing.conformance.BackendConformance` inherits them, so a backend that
adopts the suite gets them too. They give each bus its own OpenTelemetry SDK providers
(``connect(tracer_provider=..., meter_provider=...)``) with in-memory exporters, so they
neither need nor change the global providers; without ``opentelemetry-sdk`` they are skipped.
They run with both APIs of the suite (``sync`` and ``aio``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import msgbus
from msgbus.telemetry import messaging_system
from msgbus.testing.recorder import Recorder, wait_until

__all__ = ["ObservabilityConformance", "SpanCapture"]

Connect = Callable[..., msgbus.Bus]


class SpanCapture:
    """A tracer provider with an in-memory exporter (spans exported as they end)."""

    def __init__(self) -> None:
        sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
        export = pytest.importorskip("opentelemetry.sdk.trace.export")
        in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
        self.exporter = in_memory.InMemorySpanExporter()
        self.provider = sdk_trace.TracerProvider()
        self.provider.add_span_processor(export.SimpleSpanProcessor(self.exporter))

    def spans(self, name: str | None = None) -> list[Any]:
        """Finished spans (named ``name`` if given), in the order they ended."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def wait(self, name: str, count: int, timeout: float) -> list[Any]:
        """The finished spans named ``name`` once there are ``count`` of them."""
        wait_until(lambda: len(self.spans(name)) >= count, timeout, f"{count} {name!r} spans")
        return self.spans(name)


class MetricCapture:
    """A meter provider with an in-memory reader; :meth:`values` sums data points."""

    def __init__(self) -> None:
        sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics")
        export = pytest.importorskip("opentelemetry.sdk.metrics.export")
        self.reader = export.InMemoryMetricReader()
        self.provider = sdk_metrics.MeterProvider(metric_readers=[self.reader])

    def values(self, topic: str) -> dict[str, float]:
        """Per instrument name: the sum of counters or count of histograms for ``topic``."""
        out: dict[str, float] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        if point.attributes.get("messaging.destination.name") != topic:
                            continue
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count
                        out[metric.name] = out.get(metric.name, 0) + value
        return out


class ObservabilityConformance:
    """Tracing, metrics and health tests; mixed into ``BackendConformance``."""

    timeout: ClassVar[float] = 30.0

    @pytest.fixture
    def spans(self) -> SpanCapture:
        """A fresh in-memory span capture (skips without opentelemetry-sdk)."""
        return SpanCapture()

    def test_trace_runs_from_publish_to_handler(
        self, connect: Connect, url: str, topic: str, group: str, spans: SpanCapture
    ) -> None:
        bus = connect(tracer_provider=spans.provider)
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        tracer = spans.provider.get_tracer("test")
        with tracer.start_as_current_span("request") as request:
            bus.publish(topic, {"n": 1}, key="k1", message_id="m-trace").result(self.timeout)
        (msg,) = rec.wait_for(1, self.timeout)
        (send,) = spans.wait(f"send {topic}", 1, self.timeout)
        (process,) = spans.wait(f"process {topic}", 1, self.timeout)
        system = messaging_system(msgbus.BusURL.parse(url).scheme)
        assert send.kind.name == "PRODUCER" and process.kind.name == "CONSUMER"
        assert send.context.trace_id == request.get_span_context().trace_id
        assert send.parent.span_id == request.get_span_context().span_id
        assert process.context.trace_id == send.context.trace_id
        assert process.parent.span_id == send.context.span_id
        assert msg.headers["traceparent"].split("-")[2] == f"{send.context.span_id:016x}"
        assert send.attributes["messaging.system"] == system
        assert send.attributes["messaging.operation.type"] == "send"
        assert send.attributes["messaging.destination.name"] == topic
        assert send.attributes["messaging.message.id"] == "m-trace"
        assert send.attributes["messaging.message.body.size"] == len(b'{"n":1}')
        assert process.attributes["messaging.system"] == system
        assert process.attributes["messaging.operation.type"] == "process"
        assert process.attributes["messaging.destination.name"] == topic
        assert process.attributes["messaging.consumer.group.name"] == group
        assert process.attributes["messaging.message.id"] == "m-trace"
        assert process.attributes["msgbus.attempt"] == 1
        assert process.attributes["msgbus.outcome"] == "ack"
        assert process.status.is_ok
        if system == "kafka":  # where the record was
            assert process.attributes["messaging.destination.partition.id"].isdigit()
            assert process.attributes["messaging.kafka.offset"] >= 0

    def test_trace_shows_retries_errors_and_dead_letter(
        self, connect: Connect, topic: str, group: str, spans: SpanCapture
    ) -> None:
        bus = connect(tracer_provider=spans.provider)
        dead = Recorder()
        bus.subscribe(topic + ".dlq", dead, group="dlq-watch")

        def always_fail(msg: msgbus.Message) -> None:
            raise ValueError(f"boom {msg.attempt}")

        bus.subscribe(topic, always_fail, group=group, max_attempts=2, backoff=0.01)
        bus.start()
        bus.publish(topic, {"n": 1}, key="k").result(self.timeout)
        (letter,) = dead.wait_for(1, self.timeout)
        (send,) = spans.wait(f"send {topic}", 1, self.timeout)
        first, second = spans.wait(f"process {topic}", 2, self.timeout)
        (dlq_send,) = spans.wait(f"send {topic}.dlq", 1, self.timeout)
        (dlq_process,) = spans.wait(f"process {topic}.dlq", 1, self.timeout)
        for span, attempt, outcome in ((first, 1, "retry"), (second, 2, "dead_letter")):
            assert span.parent.span_id == send.context.span_id
            assert span.attributes["msgbus.attempt"] == attempt
            assert span.attributes["msgbus.outcome"] == outcome
            assert span.attributes["error.type"] == "ValueError"
            assert not span.status.is_ok
            (event,) = [e for e in span.events if e.name == "exception"]
            assert event.attributes["exception.message"] == f"boom {attempt}"
        assert dlq_send.parent.span_id == second.context.span_id
        assert dlq_send.attributes["messaging.destination.name"] == topic + ".dlq"
        assert dlq_process.parent.span_id == dlq_send.context.span_id
        assert len({s.context.trace_id for s in (send, first, second, dlq_send)}) == 1
        assert letter.payload == {"n": 1}

    def test_messages_without_or_with_bad_trace_headers_are_handled(
        self, connect: Connect, topic: str, group: str, spans: SpanCapture
    ) -> None:
        bus = connect(tracer_provider=spans.provider)
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        plain = [
            {},
            {"traceparent": "garbage"},
            {"traceparent": "00-zz000000000000000000000000000000-0000000000000000-01"},
            {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "tracestate": "=,="},
        ]
        for number, headers in enumerate(plain):  # as a plain client would send them
            body = str(number).encode()
            bus.backend.publish(topic, body, key=None, headers=headers).result(self.timeout)
        messages = rec.wait_for(len(plain), self.timeout)
        assert sorted(m.payload for m in messages) == [b"0", b"1", b"2", b"3"]
        processed = spans.wait(f"process {topic}", len(plain), self.timeout)
        for span in processed:
            assert span.parent is None  # a new trace starts at the consumer
            assert span.attributes["msgbus.outcome"] == "ack"
            assert span.attributes["messaging.message.id"]  # the broker's id
        assert len({s.context.trace_id for s in processed}) == len(plain)

    def test_tracing_false_records_nothing(
        self, connect: Connect, topic: str, group: str, spans: SpanCapture
    ) -> None:
        bus = connect(tracer_provider=spans.provider, tracing=False)
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        bus.publish(topic, "x").result(self.timeout)
        (msg,) = rec.wait_for(1, self.timeout)
        assert "traceparent" not in msg.headers
        assert spans.spans() == []

    def test_metrics_count_the_message_flow(self, connect: Connect, topic: str, group: str) -> None:
        meters = MetricCapture()
        bus = connect(meter_provider=meters.provider)
        dead = Recorder()
        bus.subscribe(topic + ".dlq", dead, group="dlq-watch")

        def fail_bad(msg: msgbus.Message) -> None:
            if msg.payload == "bad":
                raise ValueError("bad")

        rec = Recorder(fail_bad)
        bus.subscribe(topic, rec, group=group, max_attempts=3, backoff=0.01)
        bus.start()
        for payload in ("a", "b", "bad"):
            bus.publish(topic, payload).result(self.timeout)
        dead.wait_for(1, self.timeout)
        rec.wait_for(2, self.timeout)
        expected = {
            "msgbus.messages.published": 3,
            "msgbus.messages.confirmed": 3,
            "msgbus.publish.duration": 3,
            "msgbus.messages.consumed": 3,
            "msgbus.messages.acked": 2,
            "msgbus.messages.retried": 2,
            "msgbus.messages.dead_lettered": 1,
            "msgbus.handler.duration": 5,
            "msgbus.deliveries.in_flight": 0,
        }
        wait_until(
            lambda: all(meters.values(topic).get(k) == v for k, v in expected.items()),
            self.timeout,
            "the metrics",
        )

    def test_consumer_lag_gauge_follows_the_backlog(
        self, connect: Connect, topic: str, group: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        meters = MetricCapture()
        monkeypatch.setattr("msgbus.lag.LAG_INTERVAL", 0.1)  # the broker is asked every 0.1 s
        bus = connect(meter_provider=meters.provider)
        if not bus.backend.reports_consumer_lag:
            pytest.skip(f"{type(bus.backend).__name__} does not report consumer lag")
        entered, release = threading.Event(), threading.Event()

        def slow(msg: msgbus.Message) -> None:
            entered.set()
            release.wait(self.timeout)

        bus.subscribe(topic, slow, group=group, prefetch=1)
        bus.start()

        def lag() -> float | None:
            return meters.values(topic).get("msgbus.consumer.lag")

        wait_until(lambda: lag() == 0, self.timeout, "lag 0 on an empty queue")
        for n in range(5):
            bus.publish(topic, n).result(self.timeout)
        assert entered.wait(self.timeout)
        # one message is in the handler; queue brokers count the 4 waiting, Kafka the 5
        # not committed
        wait_until(lambda: lag() in (4, 5), self.timeout, f"lag 4 or 5, last {lag()}")
        release.set()
        wait_until(lambda: lag() == 0, self.timeout, f"lag 0 once handled, last {lag()}")
        bus.close(timeout=5)
        assert lag() is None  # a closed bus reports no lag

    def test_health_reports_each_subscription(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        entered, release = threading.Event(), threading.Event()

        def slow(msg: msgbus.Message) -> None:
            entered.set()
            release.wait(self.timeout)

        bus.subscribe(topic, slow, group=group)
        assert not bus.health().ready  # subscribed, not started
        bus.start()
        health = bus.health()
        assert health.ready and health.state == "connected"
        (sub,) = health.subscriptions
        assert (sub.topic, sub.group, sub.state) == (topic, group, "connected")
        assert sub.last_message_at is None and sub.in_flight == 0
        bus.publish(topic, "x").result(self.timeout)
        assert entered.wait(self.timeout)
        (sub,) = bus.health().subscriptions
        assert sub.in_flight == 1 and sub.last_message_at is not None
        release.set()
        wait_until(lambda: bus.health().subscriptions[0].in_flight == 0, self.timeout, "idle")
        body = bus.health().as_dict()
        assert body["ready"] is True and body["subscriptions"][0]["ready"] is True
        bus.close(timeout=5)
        assert not bus.health().ready and bus.health().state == "stopped"
