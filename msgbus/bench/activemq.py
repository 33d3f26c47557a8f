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
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import stomp

import msgbus
from msgbus.bench.payload import ACCOUNT_CREATED

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
BODY = json.dumps(PAYLOAD, separators=(",", ":")).encode()
"""The raw clients' body: the same JSON the bus sends for :data:`PAYLOAD` (~200 bytes)."""
GROUP = "bench"


class _Waiter(stomp.ConnectionListener):
    """Counts receipts and messages; optionally ACKs each message from the listener."""

    def __init__(self, conn: stomp.Connection12 | None = None, target: int = 0) -> None:
        self.conn = conn
        self.target = target
        self.cond = threading.Condition()
        self.receipts: set[str] = set()
        self.receipt_count = 0
        self.messages = 0
        self.done = threading.Event()

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.receipt_count += 1
            self.cond.notify_all()

    def on_message(self, frame: Any) -> None:
        if self.conn is not None:
            self.conn.ack(frame.headers["ack"])  # STOMP 1.2: the ack id alone
        self.messages += 1
        if self.messages == self.target:
            self.done.set()

    def wait_receipt(self, receipt: str, timeout: float = 60.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: receipt in self.receipts, timeout):
                raise TimeoutError(f"no receipt {receipt}")
            self.receipts.discard(receipt)


def _connect(url: str, listener: _Waiter) -> stomp.Connection12:
    parsed = msgbus.BusURL.parse(url)
    host = parsed.hosts[0]
    conn = stomp.Connection12(
        [(host.host, host.port or 61613)],
        heartbeats=(10_000, 10_000),
        auto_decode=False,
    )
    conn.set_listener("bench", listener)
    conn.connect(username=parsed.username, passcode=parsed.password, wait=True)
    if listener.conn is None and listener.target:
        listener.conn = conn
    return conn


def _disconnect(conn: stomp.Connection12) -> None:
    conn.disconnect(receipt=f"bye-{uuid.uuid4().hex[:8]}")


def raw_publish_sync(url: str, topic: str, messages: int) -> float:
    """Raw stomp.py: persistent SEND with a receipt, each waited before the next; msg/s."""
    waiter = _Waiter()
    conn = _connect(url, waiter)
    dest = f"/topic/VirtualTopic.{topic}"
    started = time.perf_counter()
    for i in range(messages):
        receipt = f"r{i}"
        conn.send(dest, BODY, headers={"persistent": "true", "receipt": receipt})
        waiter.wait_receipt(receipt)
    elapsed = time.perf_counter() - started
    _disconnect(conn)
    return messages / elapsed


def raw_publish_windowed(url: str, topic: str, messages: int, window: int) -> float:
    """Raw stomp.py: persistent SENDs with receipts, at most ``window`` outstanding; msg/s."""
    waiter = _Waiter()
    conn = _connect(url, waiter)
    dest = f"/topic/VirtualTopic.{topic}"
    cond = waiter.cond
    started = time.perf_counter()
    for i in range(messages):
        if i - waiter.receipt_count >= window:
            with cond:
                cond.wait_for(lambda i=i: i - waiter.receipt_count < window, 60)
        conn.send(dest, BODY, headers={"persistent": "true", "receipt": f"r{i}"})
    with cond:
        if not cond.wait_for(lambda: waiter.receipt_count >= messages, 120):
            raise TimeoutError("receipts missing")
    elapsed = time.perf_counter() - started
    _disconnect(conn)
    return messages / elapsed


def raw_publish_no_receipt(url: str, topic: str, messages: int) -> float:
    """Raw stomp.py: persistent SENDs without receipts (the last one has one); msg/s."""
    waiter = _Waiter()
    conn = _connect(url, waiter)
    dest = f"/topic/VirtualTopic.{topic}"
    started = time.perf_counter()
    for _ in range(messages - 1):
        conn.send(dest, BODY, headers={"persistent": "true"})
    conn.send(dest, BODY, headers={"persistent": "true", "receipt": "last"})
    waiter.wait_receipt("last", 120)
    elapsed = time.perf_counter() - started
    _disconnect(conn)
    return messages / elapsed


def _create_group(url: str, topic: str, group: str) -> None:
    """Make the group's virtual-topic queue exist (subscribe once, with a receipt)."""
    waiter = _Waiter()
    conn = _connect(url, waiter)
    conn.subscribe(
        f"/queue/Consumer.{group}.VirtualTopic.{topic}",
        id="create",
        ack="client-individual",
        headers={"receipt": "sub"},
    )
    waiter.wait_receipt("sub")
    _disconnect(conn)


def raw_consume(url: str, topic: str, group: str, messages: int, prefetch: int) -> float:
    """Raw stomp.py: drain ``messages`` from the group queue, ACK each in the listener; msg/s."""
    waiter = _Waiter(target=messages)
    conn = _connect(url, waiter)
    started = time.perf_counter()
    conn.subscribe(
        f"/queue/Consumer.{group}.VirtualTopic.{topic}",
        id="bench",
        ack="client-individual",
        headers={"activemq.prefetchSize": str(prefetch)},
    )
    if not waiter.done.wait(300):
        raise TimeoutError(f"only {waiter.messages} of {messages} messages arrived")
    elapsed = time.perf_counter() - started
    _disconnect(conn)
    return messages / elapsed


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
            _create_group(url, topic, GROUP)
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
