"""ActiveMQ benchmark: raw stomp.py next to msgbus's ActiveMQ backend, against one broker.

``python -m msgbus.bench.activemq [--url stomp://HOST:PORT] [--messages N] [--repeats R]``

Without ``--url`` a private ActiveMQ is started by the test harness (and stopped after).
Every figure is messages per second with ~200-byte JSON bodies, persistent messages,
medians of ``--repeats`` runs (min-max shown):

- raw publish, a receipt per message waited one at a time (``raw sync``);
- raw publish with a window of ``--window`` outstanding receipts (``raw windowed``);
- raw publish without receipts (the last SEND carries one, so the clock stops when the
  broker has taken them all) (``raw no receipt``);
- raw consume with ``ack:client-individual``, one ACK per message sent from the listener,
  ``activemq.prefetchSize`` = ``--prefetch``, from a queue pre-filled with N messages;
- msgbus durable publish: ``bus.publish`` N times, then ``bus.flush()`` (persistent +
  receipt per message, receipts pipelined by the backend);
- msgbus consume: a ``bus.subscribe`` handler (JSON decode, ack after the handler) draining
  a pre-filled group queue.

Targets (issue 7): msgbus publish >= 0.9x raw windowed, msgbus consume >= 0.9x raw consume.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import msgbus
from msgbus.bench.payload import ACCOUNT_CREATED
from msgbus.bench.raw.activemq import (
    BODY,
    create_group,
    raw_consume,
    raw_publish_no_receipt,
    raw_publish_sync,
    raw_publish_windowed,
)

__all__ = [
    "BODY",
    "main",
    "msgbus_consume",
    "msgbus_publish",
    "raw_consume",
    "raw_publish_no_receipt",
    "raw_publish_sync",
    "raw_publish_windowed",
]

PAYLOAD = ACCOUNT_CREATED
"""The payload every publish sends (~200 bytes as JSON)."""
GROUP = "bench"


def msgbus_publish(url: str, topic: str, messages: int) -> float:
    """msgbus: ``bus.publish`` (persistent, receipt each) N times, then ``flush``; msg/s."""
    bus = msgbus.connect(url)
    try:
        started = time.perf_counter()
        for _ in range(messages):
            bus.publish(topic, PAYLOAD)
        bus.flush(300)
        return messages / (time.perf_counter() - started)
    finally:
        bus.close(timeout=10)


def msgbus_consume(url: str, topic: str, group: str, messages: int, prefetch: int) -> float:
    """msgbus: a subscribed handler drains ``messages`` from a pre-filled group; msg/s."""
    bus = msgbus.connect(url)
    done = threading.Event()
    count = 0

    def handle(msg: msgbus.Message) -> None:
        nonlocal count
        count += 1
        if count == messages:
            done.set()

    try:
        started = time.perf_counter()
        bus.subscribe(topic, handle, group=group, prefetch=prefetch)
        bus.start()
        if not done.wait(300):
            raise TimeoutError(f"only {count} of {messages} messages handled")
        return messages / (time.perf_counter() - started)
    finally:
        bus.close(timeout=10)


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):9,.0f}  ({min(values):,.0f}-{max(values):,.0f})"


def run(url: str, messages: int, repeats: int, window: int, prefetch: int) -> dict[str, float]:
    """Run every measurement ``repeats`` times, interleaved; print and return the medians.

    Each publish goes to a topic that has a consumer group (``bench``), so the broker
    really stores every message (a virtual topic without groups drops them). The consume
    figures drain what the windowed raw publisher and the msgbus publisher stored.
    """
    results: dict[str, list[float]] = {}
    sync_messages = max(200, messages // 10)

    def measure(name: str, fn: Callable[[], float]) -> None:
        value = fn()
        results.setdefault(name, []).append(value)
        print(f"  {name:<22} {value:9,.0f} msg/s", flush=True)

    for rep in range(repeats):
        print(f"run {rep + 1}/{repeats}", flush=True)
        base = f"bench.{uuid.uuid4().hex[:8]}"
        topics = {kind: f"{base}.{kind}" for kind in ("sync", "window", "msgbus", "none")}
        for topic in topics.values():
            create_group(url, topic, GROUP)
        sync, win, bus, none = (topics[k] for k in ("sync", "window", "msgbus", "none"))
        measure("raw sync receipts", lambda t=sync: raw_publish_sync(url, t, sync_messages))
        measure(
            "raw windowed receipts",
            lambda t=win: raw_publish_windowed(url, t, messages, window),
        )
        measure("msgbus publish", lambda t=bus: msgbus_publish(url, t, messages))
        measure("raw no receipts", lambda t=none: raw_publish_no_receipt(url, t, messages))
        measure("raw consume", lambda t=win: raw_consume(url, t, GROUP, messages, prefetch))
        measure(
            "msgbus consume",
            lambda t=bus: msgbus_consume(url, t, GROUP, messages, prefetch),
        )
        raw_consume(url, sync, GROUP, sync_messages, prefetch)  # leave the broker empty
        raw_consume(url, none, GROUP, messages, prefetch)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print()
    print(f"ActiveMQ at {url}: {messages:,} messages of {len(BODY)} bytes, {repeats} run(s)")
    print("median msg/s (min-max)")
    for name, values in results.items():
        print(f"  {name:<22} {_median(values)}")
    pub = medians["msgbus publish"] / medians["raw windowed receipts"]
    con = medians["msgbus consume"] / medians["raw consume"]
    print()
    verdict = {True: "OK", False: "BELOW TARGET"}
    print(
        f"msgbus publish / raw windowed receipts = {pub:.2f}  (target >= 0.90) "
        f"{verdict[pub >= 0.9]}"
    )
    print(
        f"msgbus consume / raw consume           = {con:.2f}  (target >= 0.90) "
        f"{verdict[con >= 0.9]}"
    )
    return medians


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m msgbus.bench.activemq", description=__doc__)
    parser.add_argument("--url", help="an existing broker (default: start a private ActiveMQ)")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=1_000, help="raw outstanding receipts")
    parser.add_argument("--prefetch", type=int, default=1_000)
    args = parser.parse_args(argv)
    if args.url:
        run(args.url, args.messages, args.repeats, args.window, args.prefetch)
        return 0
    from msgbus.testing.brokers import ActiveMQ

    with ActiveMQ() as broker:
        print(f"started {broker.description} at {broker.url}", flush=True)
        run(broker.url, args.messages, args.repeats, args.window, args.prefetch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
