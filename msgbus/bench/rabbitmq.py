"""RabbitMQ benchmark: raw pika next to msgbus's ``amqp://`` and ``kombu+amqp://`` backends.

``python -m msgbus.bench.rabbitmq [--url amqp://USER:PASS@HOST:PORT/] [--messages N]
[--repeats R] [--window W] [--prefetch P] [--no-kombu] [--api sync|aio]``

``--api aio`` runs :mod:`msgbus.bench.rabbitmq_aio` instead: ``msgbus.aio`` next to raw
aio-pika (and the blocking msgbus) in one run.

Without ``--url`` a private RabbitMQ is started by the test harness (and stopped after).
Every figure is messages per second with ~200-byte JSON bodies, persistent messages
(``delivery_mode=2``) into a durable classic queue, medians of ``--repeats`` runs (min-max):

- raw publish, ``BlockingConnection`` + ``confirm_delivery()``: one confirm waited per
  message (``raw one-at-a-time``);
- raw publish on a ``SelectConnection``, publishing from its own I/O thread with a window
  of ``--window`` unconfirmed messages (``raw pipelined``), and again with the metadata a
  msgbus message carries (message id, timestamp, ``msgbus-timestamp`` header), for reference;
- raw consume: ``BlockingConnection``, ``basic_qos(prefetch)``, manual ``basic_ack`` per
  message in the callback, draining a pre-filled queue (``raw consume``);
- msgbus durable publish: ``bus.publish`` N times, then ``bus.flush()`` (persistent +
  confirmed), for each msgbus URL (``amqp://`` and ``kombu+amqp://``);
- msgbus consume: a ``bus.subscribe`` handler (JSON decode, ack after the handler)
  draining a pre-filled group queue, for each msgbus URL.

The publishers, and then the consumers, are measured in an order that rotates run by run.

Targets (issue 6): msgbus publish >= 0.9x raw pipelined, msgbus consume >= 0.9x raw consume.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgbus
from msgbus.bench.payload import ACCOUNT_CREATED
from msgbus.bench.raw.rabbitmq import (
    BODY,
    GROUP,
    delete_queue,
    prepare_queue,
    raw_consume,
    raw_publish_one_at_a_time,
    raw_publish_pipelined,
)

__all__ = [
    "BODY",
    "GROUP",
    "PAYLOAD",
    "delete_queue",
    "main",
    "msgbus_consume",
    "msgbus_publish",
    "prepare_queue",
    "raw_consume",
    "raw_publish_one_at_a_time",
    "raw_publish_pipelined",
    "run",
]

PAYLOAD = ACCOUNT_CREATED
"""The payload every publish sends (~200 bytes as JSON)."""


def msgbus_publish(url: str, topic: str, messages: int, **options: Any) -> float:
    """msgbus: ``bus.publish`` (persistent, confirmed) N times, then ``flush``; msg/s."""
    bus = msgbus.connect(url, **options)
    try:
        started = time.perf_counter()
        for _ in range(messages):
            bus.publish(topic, PAYLOAD)
        bus.flush(300)
        return messages / (time.perf_counter() - started)
    finally:
        bus.close(timeout=10)


def msgbus_consume(
    url: str, topic: str, group: str, messages: int, prefetch: int, **options: Any
) -> float:
    """msgbus: a subscribed handler drains ``messages`` from a pre-filled group; msg/s."""
    bus = msgbus.connect(url, **options)
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


def kombu_url(url: str) -> str:
    """The ``kombu+amqp://`` form of an ``amqp://`` URL."""
    return "kombu+" + url


def _rotated(items: list[Any], by: int) -> list[Any]:
    shift = by % len(items)
    return items[shift:] + items[:shift]


def run(
    url: str,
    messages: int,
    repeats: int,
    window: int,
    prefetch: int,
    *,
    kombu: bool = True,
) -> dict[str, float]:
    """Run every measurement ``repeats`` times, interleaved; print and return the medians.

    Each topic has a durable group queue, so RabbitMQ really stores every message; the
    consume figures drain what the pipelined raw publisher and each msgbus publisher stored.
    """
    results: dict[str, list[float]] = {}
    slow_messages = max(200, messages // 10)
    targets = {"amqp": url}
    if kombu:
        targets["kombu+amqp"] = kombu_url(url)

    def measure(name: str, fn: Callable[[], float]) -> None:
        value = fn()
        results.setdefault(name, []).append(value)
        print(f"  {name:<28} {value:9,.0f} msg/s", flush=True)

    for rep in range(repeats):
        print(f"run {rep + 1}/{repeats}", flush=True)
        base = f"bench.{uuid.uuid4().hex[:8]}"
        slow, piped = f"{base}.slow", f"{base}.piped"
        queues = [prepare_queue(url, slow), prepare_queue(url, piped)]
        measure(
            "raw one-at-a-time confirms",
            lambda t=slow: raw_publish_one_at_a_time(url, t, slow_messages),
        )
        queues.append(prepare_queue(url, f"{base}.meta"))
        publishes: list[tuple[str, Callable[[], float]]] = [
            (
                "raw pipelined confirms",
                lambda t=piped: raw_publish_pipelined(url, t, messages, window),
            ),
            (
                "raw pipelined + metadata",
                lambda t=f"{base}.meta": raw_publish_pipelined(
                    url, t, messages, window, metadata=True
                ),
            ),
        ]
        consumes: list[tuple[str, Callable[[], float]]] = [
            ("raw consume", lambda q=queues[1]: raw_consume(url, q, messages, prefetch))
        ]
        for name, target in targets.items():
            topic = f"{base}.{name.replace('+', '-')}"
            queues.append(prepare_queue(url, topic))
            publishes.append(
                (f"msgbus {name} publish", lambda t=topic, u=target: msgbus_publish(u, t, messages))
            )
            consumes.append(
                (
                    f"msgbus {name} consume",
                    lambda t=topic, u=target: msgbus_consume(u, t, GROUP, messages, prefetch),
                )
            )
        # the order rotates run by run: a publisher measured after others finds the broker
        # still writing their messages to disk
        for name, fn in _rotated(publishes, rep) + _rotated(consumes, rep):
            measure(name, fn)
        for queue in queues:
            delete_queue(url, queue)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print()
    shown = msgbus.BusURL.parse(url).render()
    print(f"RabbitMQ at {shown}: {messages:,} messages of {len(BODY)} bytes, {repeats} run(s)")
    print("median msg/s (min-max)")
    for name, values in results.items():
        print(f"  {name:<28} {_median(values)}")
    print()
    verdict = {True: "OK", False: "BELOW TARGET"}
    for name in targets:
        pub = medians[f"msgbus {name} publish"] / medians["raw pipelined confirms"]
        con = medians[f"msgbus {name} consume"] / medians["raw consume"]
        speedup = medians[f"msgbus {name} publish"] / medians["raw one-at-a-time confirms"]
        print(
            f"{name:<11} publish / raw pipelined = {pub:.2f} (target >= 0.90) "
            f"{verdict[pub >= 0.9]};  {speedup:.1f}x one-at-a-time"
        )
        print(
            f"{name:<11} consume / raw consume   = {con:.2f} (target >= 0.90) {verdict[con >= 0.9]}"
        )
        meta = medians[f"msgbus {name} publish"] / medians["raw pipelined + metadata"]
        print(f"{name:<11} publish / raw pipelined with msgbus's metadata = {meta:.2f} (reference)")
    return medians


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m msgbus.bench.rabbitmq", description=__doc__)
    parser.add_argument("--url", help="an existing broker (default: start a private RabbitMQ)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=int, default=1_000, help="raw unconfirmed window")
    parser.add_argument("--prefetch", type=int, default=1_000)
    parser.add_argument("--no-kombu", action="store_true", help="skip kombu+amqp://")
    parser.add_argument(
        "--api",
        choices=("sync", "aio"),
        default="sync",
        help="sync: msgbus next to pika; aio: msgbus.aio next to aio-pika",
    )
    args = parser.parse_args(argv)
    options = (args.messages, args.repeats, args.window, args.prefetch)

    def measure(url: str) -> None:
        if args.api == "aio":
            from msgbus.bench.rabbitmq_aio import run as run_aio

            run_aio(url, *options)
        else:
            run(url, *options, kombu=not args.no_kombu)

    if args.url:
        measure(args.url)
        return 0
    from msgbus.testing.brokers import RabbitMQ

    with RabbitMQ() as broker:
        print(f"started {broker.description} at {broker.url}", flush=True)
        measure(broker.url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
