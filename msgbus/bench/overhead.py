"""``msgbus bench overhead``: what tracing and metrics cost, measured in one run.

::

    msgbus bench overhead [--brokers memory,rabbitmq] [--url URL]... [--messages N]
                          [--rounds R] [--size BYTES]

Each trial opens a bus, subscribes one handler, publishes ``N`` messages as fast as the
futures allow and stops the clock when the handler has seen them all (end-to-end
throughput, one process). Three modes, interleaved round by round in a rotating order:

- ``off``: ``connect(tracing=False, metrics=False)``: no hooks at all (as without the API);
- ``api``: the OpenTelemetry API installed, no SDK configured (the global providers are the
  API's proxies): msgbus notices and skips the work;
- ``hooks``: providers that record nothing at no cost (:mod:`msgbus.bench.null_otel`):
  every msgbus hook runs (attributes, span calls, trace context injected and extracted,
  metric calls) but the "SDK" is free, so this mode's cost over ``off`` is msgbus's own;
- ``sdk``: an SDK tracer provider (every span sampled, batch processor, an exporter that
  drops them) and an SDK meter provider (periodic reader, an exporter that drops them);
- ``sdk-1%``: the same with a ``ParentBased(TraceIdRatioBased(0.01))`` sampler, a common
  production setting (metrics unchanged).

It prints per broker and mode the median messages/s and CPU µs per message over the rounds,
and the overhead against ``off``; then, single-threaded, the µs per ``publish`` call on
memory:// in each mode and the cost of the SDK operations msgbus makes per message.
Needs ``opentelemetry-sdk``. It must run in a process where no global SDK provider is set
(the ``api`` mode would not be what it says).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgbus
from msgbus.bench.targets import Target, harness_target, url_target

__all__ = ["main", "measure"]

MODES = ("off", "api", "hooks", "sdk", "sdk-1%")
PUBLISH_ROUNDS = 9
"""Alternated rounds of the single-threaded publish cost per mode (the median is printed)."""


def _sdk_providers(ratio: float = 1.0) -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class DropSpans(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class DropMetrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 0, **kw: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 0) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 0, **kw: Any) -> None:
            return None

    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    tracer_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    reader = PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=10_000)
    return tracer_provider, MeterProvider(metric_readers=[reader])


def _modes(tracers: Any, meters: Any, sampled: Any, sampled_meters: Any) -> dict[str, Any]:
    """The ``connect`` options of each mode."""
    from msgbus.bench.null_otel import NullMeterProvider, NullTracerProvider

    return {
        "off": {"tracing": False, "metrics": False},
        "api": {},
        "hooks": {"tracer_provider": NullTracerProvider(), "meter_provider": NullMeterProvider()},
        "sdk": {"tracer_provider": tracers, "meter_provider": meters},
        "sdk-1%": {"tracer_provider": sampled, "meter_provider": sampled_meters},
    }


def _trial(url: str, options: dict[str, Any], messages: int, body: bytes) -> tuple[float, float]:
    """One trial: messages/s from the first publish to the last message handled, and the
    process's CPU time per message in microseconds (every thread of this process)."""
    seen = 0
    lock = threading.Lock()
    done = threading.Event()

    def handle(msg: msgbus.Message) -> None:
        nonlocal seen
        with lock:
            seen += 1
            if seen == messages:
                done.set()

    topic = f"overhead.{uuid.uuid4().hex[:10]}"
    bus = msgbus.connect(url, **options)
    try:
        bus.subscribe(topic, handle, group="overhead", concurrency=1)
        bus.start()
        started = time.perf_counter()
        cpu = time.process_time()
        for n in range(messages):
            bus.publish(topic, body, key=str(n % 16))
        bus.flush(120)
        if not done.wait(120):
            raise RuntimeError(f"only {seen}/{messages} messages arrived on {url}")
        elapsed = time.perf_counter() - started
        return messages / elapsed, (time.process_time() - cpu) / messages * 1e6
    finally:
        bus.close(timeout=10)


def measure(
    target: Target, *, messages: int, rounds: int, size: int, out: Any = None
) -> dict[str, list[tuple[float, float]]]:
    """Run ``rounds`` rounds of the modes on ``target``; per mode the (msg/s, CPU µs/msg)
    of each round (progress lines to ``out``, default stdout)."""
    out = out or sys.stdout
    from opentelemetry import trace

    from msgbus.telemetry import _tracer_is_noop

    if not _tracer_is_noop(trace.get_tracer_provider()):
        raise RuntimeError("a global tracer provider is set: the 'api' mode cannot be measured")
    tracer_provider, meter_provider = _sdk_providers()
    sampled_provider, sampled_meters = _sdk_providers(0.01)
    options = _modes(tracer_provider, meter_provider, sampled_provider, sampled_meters)
    extra = target.options("D0", 1) or {}
    assert target.url is not None
    body = b"x" * size
    _trial(target.url, {**extra, **options["off"]}, min(messages, 1000), body)  # warm-up
    rates: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for round_number in range(rounds):
        shift = round_number % len(MODES)
        for mode in MODES[shift:] + MODES[:shift]:
            rate, cpu = _trial(target.url, {**extra, **options[mode]}, messages, body)
            rates[mode].append((rate, cpu))
            print(
                f"  {target.name} round {round_number + 1} {mode}: {rate:,.0f} msg/s, "
                f"{cpu:.1f} µs CPU/msg",
                file=out,
            )
    for provider in (tracer_provider, meter_provider, sampled_provider, sampled_meters):
        provider.shutdown()
    return rates


def _per_call(fn: Any, calls: int = 20_000) -> float:
    for _ in range(1000):
        fn()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def primitives(out: Any = None) -> None:
    """Print, single-threaded, the µs per ``publish`` call on memory:// (no subscriber) in
    each mode, and the cost of the SDK operations msgbus makes per message (to ``out``,
    default stdout)."""
    out = out or sys.stdout
    tracer_provider, meter_provider = _sdk_providers()
    sampled_provider, sampled_meters = _sdk_providers(0.01)
    modes = _modes(tracer_provider, meter_provider, sampled_provider, sampled_meters)
    print("| single-threaded, µs per call | µs |", file=out)
    print("|---|---:|", file=out)
    buses = {mode: msgbus.connect(f"memory://primitives-{mode}", **o) for mode, o in modes.items()}
    costs: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(PUBLISH_ROUNDS):  # modes alternated, so a noisy moment hits them all
        for mode, bus in buses.items():
            costs[mode].append(_per_call(lambda b=bus: b.publish("p", b"x" * 256, key="k"), 5000))
    for mode, bus in buses.items():
        bus.close()
        cost = statistics.median(costs[mode])
        print(
            f"| msgbus publish on memory://, {mode} (median of {PUBLISH_ROUNDS}) | {cost:.2f} |",
            file=out,
        )
    from msgbus.bench.null_otel import NullTracerProvider
    from msgbus.tracing import Tracing

    body = b"x" * 256
    for label, provider in (("free provider", NullTracerProvider()), ("SDK", tracer_provider)):
        tracing = Tracing(provider, "memory", ("127.0.0.1", 5672))
        headers: dict[str, str] = {}
        tracing.end_send(tracing.start_send("p", body, "k", headers), None)

        def send(tracing: Tracing = tracing) -> None:
            tracing.end_send(tracing.start_send("p", body, "k", {"msgbus-id": "m"}), None)

        def process(tracing: Tracing = tracing, headers: dict[str, str] = headers) -> None:
            tracing.start_process("p", "g", headers, "k", body, None, 1).end(1, "ack", None)

        print(
            f"| msgbus send span (start, inject, end), {label} | {_per_call(send):.2f} |", file=out
        )
        print(
            f"| msgbus process span (extract, start, attach, end), {label} "
            f"| {_per_call(process):.2f} |",
            file=out,
        )
    attrs = {"messaging.system": "memory", "messaging.destination.name": "p"}
    tracer = tracer_provider.get_tracer("primitives")
    unsampled = sampled_provider.get_tracer("primitives")
    meter = meter_provider.get_meter("primitives")
    histogram = meter.create_histogram("primitives.h", "s")
    counter = meter.create_counter("primitives.c")
    for label, fn in (
        ("SDK span start + end, sampled", lambda: tracer.start_span("s", attributes=attrs).end()),
        ("SDK span start + end, not sampled", lambda: unsampled.start_span("s").end()),
        ("SDK histogram record", lambda: histogram.record(0.001, attrs)),
        ("SDK counter add", lambda: counter.add(1, attrs)),
    ):
        print(f"| {label} | {_per_call(fn):.2f} |", file=out)
    for provider in (tracer_provider, meter_provider, sampled_provider, sampled_meters):
        provider.shutdown()


def _table(results: dict[str, dict[str, list[tuple[float, float]]]]) -> str:
    lines = [
        "| broker | mode | median msg/s | throughput lost | CPU µs/msg | CPU added |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, rates in results.items():
        base = statistics.median(r for r, _ in rates["off"])
        base_cpu = statistics.median(c for _, c in rates["off"])
        for mode in MODES:
            rate = statistics.median(r for r, _ in rates[mode])
            cpu = statistics.median(c for _, c in rates[mode])
            lost = "—" if mode == "off" else f"{(1 - rate / base) * 100:+.1f} %"
            added = "—" if mode == "off" else f"{(cpu / base_cpu - 1) * 100:+.1f} %"
            lines.append(f"| {name} | {mode} | {rate:,.0f} | {lost} | {cpu:.1f} | {added} |")
    lines += [
        "",
        "who adds the CPU per message (medians; msgbus = hooks - off, SDK = sdk - hooks):",
        "",
        "| broker | off µs/msg | msgbus adds µs | msgbus adds % | SDK adds µs | SDK adds % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rates in results.items():
        off, hooks, sdk = (
            statistics.median(c for _, c in rates[m]) for m in ("off", "hooks", "sdk")
        )
        lines.append(
            f"| {name} | {off:.1f} | {hooks - off:+.1f} | {(hooks / off - 1) * 100:+.1f} % "
            f"| {sdk - hooks:+.1f} | {(sdk - hooks) / off * 100:+.1f} % |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``msgbus bench overhead``; prints a Markdown table; returns 0."""
    parser = argparse.ArgumentParser(prog="msgbus bench overhead", description=__doc__)
    parser.add_argument("--brokers", default="memory,rabbitmq", help="harness brokers")
    parser.add_argument("--url", action="append", default=[], help="a broker URL (repeatable)")
    parser.add_argument("--messages", type=int, default=20_000, help="per trial (20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the modes (5)")
    parser.add_argument("--size", type=int, default=256, help="body bytes (256)")
    args = parser.parse_args(argv)
    targets = [harness_target(k.strip()) for k in args.brokers.split(",") if k.strip()]
    names = {t.name for t in targets}
    targets += [url_target(url, names) for url in args.url]
    results: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for target in targets:
        target.open()
        try:
            results[target.name] = measure(
                target, messages=args.messages, rounds=args.rounds, size=args.size
            )
        finally:
            target.close()
    print()
    print(f"{args.messages} messages of {args.size} bytes per trial, {args.rounds} rounds")
    print(_table(results))
    print()
    primitives()
    return 0
