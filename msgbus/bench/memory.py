"""Memory backend benchmark: msgbus ``memory://`` next to kombu's ``memory://`` in one run.

``python -m msgbus.bench.memory [--messages N] [--repeats R] [--rate 1000] [--cpu N]
[--api sync|aio]``

Measures, with ~200-byte JSON payloads:

- end-to-end throughput: one publisher publishing N messages as fast as it can while one
  subscriber handles and acknowledges them; the clock runs from the first publish to the
  last handler call. Runs alternate between msgbus and kombu; medians (min-max) are reported.
- latency at a fixed rate (open loop): each message carries its intended send time
  (``time.monotonic_ns``); latency is handler time minus intended time, so a stalled
  publisher shows up as latency (no coordinated omission).

``--cpu N`` pins the process to CPU ``N`` first (Linux), for the one-core figure: publisher
and consumer threads then share one core, as they would in a service given one CPU.

kombu's memory transport is measured twice for latency: with its default 1 s polling
interval, and with 1 ms polling. Its throughput is measured with 0 ms polling (its best
case). Needs kombu (``pip install "msgbus[kombu]"``).

``--api aio`` measures the asyncio facade instead, next to the blocking bus in the same run:
``msgbus.aio`` with an ``async def`` handler (publishing with ``await bus.publish`` from the
loop) against ``msgbus.Bus`` with a plain handler, same throughput and latency method
(targets: aio ≥ 0.8x the sync throughput, aio p99 < 2 ms at 1,000 msg/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgbus
import msgbus.aio
from msgbus.bench.payload import ACCOUNT_CREATED

__all__ = ["aio_latency", "aio_throughput", "main", "msgbus_latency", "msgbus_throughput"]

PAYLOAD = ACCOUNT_CREATED


def _payload(sent_ns: int = 0) -> dict[str, Any]:
    return {**PAYLOAD, "sent_ns": sent_ns}


def msgbus_throughput(messages: int) -> float:
    """Messages/s from first publish to last handler call on a fresh memory broker."""
    bus = msgbus.connect(f"memory://bench-{uuid.uuid4().hex[:8]}")
    done = threading.Event()
    count = 0

    def handle(msg: msgbus.Message) -> None:
        nonlocal count
        count += 1
        if count == messages:
            done.set()

    bus.subscribe("bench", handle, group="g", prefetch=1000)
    bus.start()
    payload = _payload()
    started = time.perf_counter()
    for _ in range(messages):
        bus.publish("bench", payload)
    if not done.wait(120):
        raise RuntimeError(f"msgbus handled only {count} of {messages} messages")
    elapsed = time.perf_counter() - started
    bus.close()
    return messages / elapsed


def aio_throughput(messages: int) -> float:
    """The same through ``msgbus.aio``: ``await bus.publish`` on the loop, ``async def``
    handler on the same loop (messages/s, first publish to last handler call)."""

    async def run() -> float:
        bus = msgbus.aio.connect(f"memory://bench-{uuid.uuid4().hex[:8]}")
        done = asyncio.Event()
        count = 0

        async def handle(msg: msgbus.Message) -> None:
            nonlocal count
            count += 1
            if count == messages:
                done.set()

        bus.subscribe("bench", handle, group="g", prefetch=1000)
        await bus.start()
        payload = _payload()
        started = time.perf_counter()
        for _ in range(messages):
            await bus.publish("bench", payload)
        try:
            await asyncio.wait_for(done.wait(), 120)
        except TimeoutError:
            raise RuntimeError(f"msgbus.aio handled only {count} of {messages}") from None
        elapsed = time.perf_counter() - started
        await bus.close()
        return messages / elapsed

    return asyncio.run(run())


def aio_latency(rate: float, messages: int) -> list[float]:
    """Publish→handler latencies (ms) through ``msgbus.aio`` at ``rate`` msg/s.

    Open loop, measured from the intended send time. A pacing thread (the same pacing as the
    blocking run) wakes the loop at each intended time with ``call_soon_threadsafe``, as a
    request arriving on a socket would, and the loop publishes; ``asyncio.sleep`` would not
    do (the loop's timers round up to the next millisecond, which would be measured too).
    """

    async def run() -> list[float]:
        bus = msgbus.aio.connect(f"memory://lat-{uuid.uuid4().hex[:8]}")
        latencies: list[float] = []
        done = asyncio.Event()

        async def handle(msg: msgbus.Message) -> None:
            latencies.append((time.monotonic_ns() - msg.payload["sent_ns"]) / 1e6)
            if len(latencies) == messages:
                done.set()

        bus.subscribe("lat", handle, group="g")
        await bus.start()
        loop = asyncio.get_running_loop()

        def publish(intended: int) -> None:
            bus.publish("lat", _payload(intended))  # resolved at once on memory://

        def pace() -> None:
            _paced(rate, messages, lambda ns: loop.call_soon_threadsafe(publish, ns))

        await asyncio.to_thread(pace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 60)
        await bus.close()
        return latencies

    return asyncio.run(run())


def _kombu_connection(polling_interval: float) -> Any:
    from kombu import Connection

    return Connection("memory://", transport_options={"polling_interval": polling_interval})


def _kombu_queue(prefix: str) -> tuple[Any, Any, str]:
    """A fresh direct exchange and queue bound by the queue's name."""
    from kombu import Exchange, Queue

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(name, type="direct")
    return exchange, Queue(name, exchange, routing_key=name), name


def _start_kombu_consumer(
    queue: Any,
    on_message: Callable[[Any, Any], None],
    polling_interval: float,
    done: threading.Event,
) -> threading.Thread:
    """Consume ``queue`` on a thread until ``done``; return once the consumer is attached."""
    ready = threading.Event()

    def consume() -> None:
        with (
            _kombu_connection(polling_interval) as conn,
            conn.Consumer(queue, callbacks=[on_message], accept=["json"]),
        ):
            ready.set()
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    ready.wait(10)
    return thread


def kombu_throughput(messages: int) -> float:
    """The same work through kombu's memory transport (publish, consume, ack; 0 ms polling)."""
    exchange, queue, name = _kombu_queue("bench")
    done = threading.Event()
    count = 0

    def on_message(body: Any, message: Any) -> None:
        nonlocal count
        message.ack()
        count += 1
        if count == messages:
            done.set()

    thread = _start_kombu_consumer(queue, on_message, 0.0, done)
    payload = _payload()
    with _kombu_connection(0.0) as conn:
        producer = conn.Producer(serializer="json")
        started = time.perf_counter()
        for _ in range(messages):
            producer.publish(payload, exchange=exchange, routing_key=name, declare=[queue])
        if not done.wait(120):
            raise RuntimeError(f"kombu handled only {count} of {messages} messages")
        elapsed = time.perf_counter() - started
    thread.join(5)
    return messages / elapsed


def _paced(rate: float, messages: int, send: Callable[[int], None]) -> None:
    """Open-loop pacing: message i is due at start + i/rate; send(intended_ns)."""
    interval_ns = int(1e9 / rate)
    start = time.monotonic_ns()
    for i in range(messages):
        intended = start + i * interval_ns
        delay = (intended - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        send(intended)


def msgbus_latency(rate: float, messages: int) -> list[float]:
    """Publish→handler latencies (ms) at ``rate`` msg/s, measured from the intended send time."""
    bus = msgbus.connect(f"memory://lat-{uuid.uuid4().hex[:8]}")
    latencies: list[float] = []
    done = threading.Event()

    def handle(msg: msgbus.Message) -> None:
        latencies.append((time.monotonic_ns() - msg.payload["sent_ns"]) / 1e6)
        if len(latencies) == messages:
            done.set()

    bus.subscribe("lat", handle, group="g")
    bus.start()
    _paced(rate, messages, lambda ns: bus.publish("lat", _payload(ns)))
    done.wait(60)
    bus.close()
    return latencies


def kombu_latency(rate: float, messages: int, polling_interval: float) -> list[float]:
    """The same through kombu's memory transport with the given polling interval."""
    exchange, queue, name = _kombu_queue("lat")
    latencies: list[float] = []
    done = threading.Event()

    def on_message(body: Any, message: Any) -> None:
        latencies.append((time.monotonic_ns() - body["sent_ns"]) / 1e6)
        message.ack()
        if len(latencies) == messages:
            done.set()

    thread = _start_kombu_consumer(queue, on_message, polling_interval, done)
    with _kombu_connection(polling_interval) as conn:
        producer = conn.Producer(serializer="json")
        _paced(
            rate,
            messages,
            lambda ns: producer.publish(
                _payload(ns), exchange=exchange, routing_key=name, declare=[queue]
            ),
        )
        done.wait(60)
    thread.join(5)
    return latencies


def _percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):>9,.0f}  ({min(values):,.0f}–{max(values):,.0f})"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures and the ratios against the targets."""
    parser = argparse.ArgumentParser(prog="python -m msgbus.bench.memory", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000, help="per throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per library")
    parser.add_argument("--rate", type=float, default=1000.0, help="msg/s for the latency run")
    parser.add_argument("--latency-messages", type=int, default=3000)
    parser.add_argument("--cpu", type=int, help="pin the process to this CPU first (Linux)")
    parser.add_argument(
        "--api",
        choices=("sync", "aio"),
        default="sync",
        help="sync: msgbus next to kombu; aio: msgbus.aio next to the blocking msgbus",
    )
    args = parser.parse_args(argv)

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    print(f"CPUs this process may use: {cpus if cpus is not None else 'all (unknown)'}")

    print(f"payload: {len(msgbus.serialization.JSON.encode(_payload(time.monotonic_ns())))} B JSON")
    if args.api == "aio":
        return _compare_aio(args)
    ours: list[float] = []
    theirs: list[float] = []
    for run in range(args.repeats):
        gc.collect()
        ours.append(msgbus_throughput(args.messages))
        gc.collect()
        theirs.append(kombu_throughput(args.messages))
        print(f"  run {run + 1}: msgbus {ours[-1]:,.0f} msg/s   kombu {theirs[-1]:,.0f} msg/s")
    print("end-to-end throughput (publish → handler → ack), median (min–max) msg/s:")
    print(f"  msgbus memory://       {_spread(ours)}")
    print(f"  kombu memory://        {_spread(theirs)}")
    ratio = statistics.median(ours) / statistics.median(theirs)
    best = statistics.median(ours)
    print(f"  msgbus / kombu = {ratio:.2f}x   (target ≥ 2x: {'met' if ratio >= 2 else 'NOT met'})")
    print(f"  msgbus ≥ 100,000 msg/s: {'met' if best >= 100_000 else 'NOT met'}")

    print(f"latency at {args.rate:,.0f} msg/s, {args.latency_messages} messages (ms):")
    rows = [
        ("msgbus memory://", msgbus_latency(args.rate, args.latency_messages)),
        (
            "kombu memory:// 1 ms poll",
            kombu_latency(args.rate, args.latency_messages, 0.001),
        ),
        (
            "kombu memory:// default 1 s poll",
            kombu_latency(args.rate, min(args.latency_messages, 2000), 1.0),
        ),
    ]
    for name, values in rows:
        p50, p99 = _percentiles(values)
        print(f"  {name:<34} p50 {p50:8.3f}   p99 {p99:8.3f}   (n={len(values)})")
    return 0


def _compare_aio(args: argparse.Namespace) -> int:
    """``--api aio``: msgbus.aio next to the blocking msgbus, alternating, in one run."""
    blocking: list[float] = []
    facade: list[float] = []
    for run in range(args.repeats):
        gc.collect()
        blocking.append(msgbus_throughput(args.messages))
        gc.collect()
        facade.append(aio_throughput(args.messages))
        print(f"  run {run + 1}: msgbus {blocking[-1]:,.0f} msg/s   aio {facade[-1]:,.0f} msg/s")
    print("end-to-end throughput (publish → handler → ack), median (min–max) msg/s:")
    print(f"  msgbus.Bus, plain handler        {_spread(blocking)}")
    print(f"  msgbus.aio, async def handler    {_spread(facade)}")
    ratio = statistics.median(facade) / statistics.median(blocking)
    print(f"  aio / sync = {ratio:.2f}x   (target ≥ 0.8x: {'met' if ratio >= 0.8 else 'NOT met'})")
    print(f"latency at {args.rate:,.0f} msg/s, {args.latency_messages} messages (ms):")
    rows = [
        ("msgbus.Bus, plain handler", msgbus_latency(args.rate, args.latency_messages)),
        ("msgbus.aio, async def handler", aio_latency(args.rate, args.latency_messages)),
    ]
    for name, values in rows:
        p50, p99 = _percentiles(values)
        print(f"  {name:<34} p50 {p50:8.3f}   p99 {p99:8.3f}   (n={len(values)})")
    p99 = _percentiles(rows[1][1])[1]
    print(f"  aio p99 < 2 ms: {'met' if p99 < 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
