"""``python -m msgbus.bench.rabbitmq --api aio``: msgbus.aio next to raw aio-pika, in one run.

Same broker, body (~200-byte JSON), persistent messages into durable group queues as
:mod:`msgbus.bench.rabbitmq`; every figure is messages per second, medians of ``--repeats``
interleaved runs (min-max), all measured inside ``asyncio.run``:

- aio-pika publish: ``exchange.publish`` on a channel with publisher confirms, at most
  ``--window`` unconfirmed (each awaited in its own task); the clock stops at the last confirm;
- msgbus.aio publish: ``bus.publish`` N times on the loop, then ``await`` every future;
- aio-pika consume: ``queue.consume`` with ``set_qos(prefetch)``, ``json.loads`` and
  ``await message.ack()`` per message, draining a pre-filled queue;
- msgbus.aio consume: an ``async def`` handler draining a pre-filled group queue;
- and the blocking msgbus (``msgbus.Bus``) publish and consume, for reference.

Needs the ``bench`` extra (aio-pika).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable

import msgbus
import msgbus.aio
from msgbus.bench.rabbitmq import PAYLOAD, msgbus_consume, msgbus_publish
from msgbus.bench.raw.rabbitmq import BODY, GROUP, delete_queue, prepare_queue
from msgbus.bench.raw.rabbitmq_aio import aio_pika_consume, aio_pika_publish

__all__ = ["aio_pika_consume", "aio_pika_publish", "aiobus_consume", "aiobus_publish", "run"]


def aiobus_publish(url: str, topic: str, messages: int) -> float:
    """msgbus.aio: ``bus.publish`` N times on the loop, then await them all; msg/s."""

    async def go() -> float:
        bus = msgbus.aio.connect(url)
        try:
            started = time.perf_counter()
            pending = [bus.publish(topic, PAYLOAD) for _ in range(messages)]
            await asyncio.gather(*pending)
            return messages / (time.perf_counter() - started)
        finally:
            await bus.close(timeout=10)

    return asyncio.run(go())


def aiobus_consume(url: str, topic: str, group: str, messages: int, prefetch: int) -> float:
    """msgbus.aio: an ``async def`` handler drains a pre-filled group queue; msg/s."""

    async def go() -> float:
        bus = msgbus.aio.connect(url)
        done = asyncio.Event()
        count = 0

        async def handle(msg: msgbus.Message) -> None:
            nonlocal count
            count += 1
            if count == messages:
                done.set()

        try:
            started = time.perf_counter()
            bus.subscribe(topic, handle, group=group, prefetch=prefetch)
            await bus.start()
            await asyncio.wait_for(done.wait(), 300)
            return messages / (time.perf_counter() - started)
        finally:
            await bus.close(timeout=10)

    return asyncio.run(go())


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):9,.0f}  ({min(values):,.0f}-{max(values):,.0f})"


def _one_run(
    url: str,
    messages: int,
    window: int,
    prefetch: int,
    rep: int,
    measure: Callable[[str, Callable[[], float]], None],
) -> None:
    """Every measurement once, on fresh queues, in an order rotated by ``rep``."""
    base = f"bench.{uuid.uuid4().hex[:8]}"
    topics = {name: f"{base}.{name}" for name in ("pika", "aio", "sync")}
    queues = [prepare_queue(url, topic) for topic in topics.values()]
    publishes: list[tuple[str, Callable[[], float]]] = [
        ("aio-pika publish", lambda: aio_pika_publish(url, topics["pika"], messages, window)),
        ("msgbus.aio publish", lambda: aiobus_publish(url, topics["aio"], messages)),
        ("msgbus (sync) publish", lambda: msgbus_publish(url, topics["sync"], messages)),
    ]
    consumes: list[tuple[str, Callable[[], float]]] = [
        ("aio-pika consume", lambda: aio_pika_consume(url, queues[0], messages, prefetch)),
        (
            "msgbus.aio consume",
            lambda: aiobus_consume(url, topics["aio"], GROUP, messages, prefetch),
        ),
        (
            "msgbus (sync) consume",
            lambda: msgbus_consume(url, topics["sync"], GROUP, messages, prefetch),
        ),
    ]
    shift = rep % 3
    for name, fn in publishes[shift:] + publishes[:shift] + consumes[shift:] + consumes[:shift]:
        measure(name, fn)
    for queue in queues:
        delete_queue(url, queue)


def run(url: str, messages: int, repeats: int, window: int, prefetch: int) -> dict[str, float]:
    """Measure everything ``repeats`` times, in an order rotating run by run; print medians."""
    results: dict[str, list[float]] = {}

    def measure(name: str, fn: Callable[[], float]) -> None:
        value = fn()
        results.setdefault(name, []).append(value)
        print(f"  {name:<24} {value:9,.0f} msg/s", flush=True)

    for rep in range(repeats):
        print(f"run {rep + 1}/{repeats}", flush=True)
        _one_run(url, messages, window, prefetch, rep, measure)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print()
    shown = msgbus.BusURL.parse(url).render()
    print(f"RabbitMQ at {shown}: {messages:,} messages of {len(BODY)} bytes, {repeats} run(s)")
    print("median msg/s (min-max)")
    for name, values in results.items():
        print(f"  {name:<24} {_median(values)}")
    print()
    for kind in ("publish", "consume"):
        ours = medians[f"msgbus.aio {kind}"]
        print(
            f"msgbus.aio {kind} / aio-pika = {ours / medians[f'aio-pika {kind}']:.2f};  "
            f"/ msgbus (sync) = {ours / medians[f'msgbus (sync) {kind}']:.2f}"
        )
    return medians
