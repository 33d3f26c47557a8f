"""``python -m msgbus.bench.kafka --api aio``: msgbus.aio next to raw aiokafka, in one run.

Same broker, topics (3 partitions, fresh per run), ~200-byte JSON payloads and ``acks=all``
as :mod:`msgbus.bench.kafka`; throughputs are medians of ``--repeats`` alternating runs, each
with the process CPU time per message (all threads), all measured inside ``asyncio.run``:

- produce: raw = ``AIOKafkaProducer.send`` N times, then await every delivery future;
  msgbus.aio = ``bus.publish`` N times on the loop, then await every future;
- consume: N messages published beforehand by msgbus; raw = an ``AIOKafkaConsumer`` group
  member (``getmany``, JSON decode, ``commit`` per batch), msgbus.aio = an ``async def``
  handler acknowledging each message; the clock runs from the first message to the last;
- and the blocking msgbus (``msgbus.Bus``) produce and consume, for reference.

Needs the ``bench`` extra (aiokafka).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import msgbus
import msgbus.aio
from msgbus.bench.clock import Clock as _Clock
from msgbus.bench.clock import Result
from msgbus.bench.kafka import (
    OPTIONS,
    _filled_topic,
    _payload,
    _rate,
    _row,
    msgbus_consume,
    msgbus_produce,
)
from msgbus.bench.raw.kafka import BATCH_SIZE
from msgbus.bench.raw.kafka import bootstrap as _bootstrap
from msgbus.bench.raw.kafka import new_topic as _new_topic

__all__ = ["aiobus_consume", "aiobus_produce", "aiokafka_consume", "aiokafka_produce", "run"]


def aiokafka_produce(url: str, messages: int) -> Result:
    """Raw aiokafka: ``send`` N JSON records (acks=all), then await every delivery."""
    topic = _new_topic(url)

    async def go() -> Result:
        producer = AIOKafkaProducer(
            bootstrap_servers=_bootstrap(url), acks="all", max_batch_size=BATCH_SIZE
        )
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"{}")  # metadata, as the msgbus run does
            body = json.dumps(_payload()).encode()
            clock = _Clock()
            pending = [await producer.send(topic, body) for _ in range(messages)]
            await asyncio.gather(*pending)
            return clock.result(messages)
        finally:
            await producer.stop()

    return asyncio.run(go())


def aiobus_produce(url: str, messages: int) -> Result:
    """msgbus.aio: ``bus.publish`` N times on the loop, then await every future."""
    topic = _new_topic(url)

    async def go() -> Result:
        bus = msgbus.aio.connect(url, **OPTIONS)
        try:
            await bus.publish(topic, {})
            payload = _payload()
            clock = _Clock()
            pending = [bus.publish(topic, payload) for _ in range(messages)]
            await asyncio.gather(*pending)
            return clock.result(messages)
        finally:
            await bus.close()

    return asyncio.run(go())


def aiokafka_consume(url: str, messages: int) -> Result:
    """Raw aiokafka: a group member (``getmany``, JSON decode, commit per batch)."""
    topic = _filled_topic(url, messages)

    async def go() -> Result:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=_bootstrap(url),
            group_id=f"raw-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        try:
            count = 0
            clock: _Clock | None = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while count < messages and loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        json.loads(record.value)
                        count += 1
                        if clock is None:
                            clock = _Clock()
                if batches:
                    await consumer.commit()
            if count < messages or clock is None:
                raise RuntimeError(f"aiokafka consumer got {count} of {messages} messages")
            return clock.result(messages - 1)
        finally:
            await consumer.stop()

    return asyncio.run(go())


def aiobus_consume(url: str, messages: int) -> Result:
    """msgbus.aio: an ``async def`` handler (acknowledging each) handling N messages."""
    topic = _filled_topic(url, messages)

    async def go() -> Result:
        bus = msgbus.aio.connect(url, **OPTIONS)
        done = asyncio.Event()
        count = 0
        clock: _Clock | None = None
        result: Result = (0.0, 0.0)

        async def handle(msg: msgbus.Message) -> None:
            nonlocal count, clock, result
            count += 1
            if clock is None:
                clock = _Clock()
            if count == messages:
                result = clock.result(messages - 1)
                done.set()

        try:
            group = f"bus-{uuid.uuid4().hex[:8]}"
            bus.subscribe(topic, handle, group=group, from_beginning=True)
            await bus.start()
            try:
                await asyncio.wait_for(done.wait(), 120)
            except TimeoutError:
                raise RuntimeError(f"msgbus.aio handled {count} of {messages}") from None
            return result
        finally:
            await bus.close()

    return asyncio.run(go())


def run(url: str, messages: int, repeats: int) -> None:
    """Measure everything ``repeats`` times, alternating; print the table and the ratios."""
    measurements: tuple[tuple[str, str, Callable[[str, int], Result]], ...] = (
        ("produce  raw aiokafka", "rp", aiokafka_produce),
        ("produce  msgbus.aio", "ap", aiobus_produce),
        ("produce  msgbus (sync)", "sp", msgbus_produce),
        ("consume  raw aiokafka", "rc", aiokafka_consume),
        ("consume  msgbus.aio", "ac", aiobus_consume),
        ("consume  msgbus (sync)", "sc", msgbus_consume),
    )
    results: dict[str, list[Result]] = {key: [] for _, key, _ in measurements}
    for _ in range(repeats):
        for _, key, measure in measurements:
            results[key].append(measure(url, messages))
    for label, key, _ in measurements:
        print(f"{label:32s} {_row(results[key])}")
    for kind, raw, ours, sync in (("produce", "rp", "ap", "sp"), ("consume", "rc", "ac", "sc")):
        print(
            f"{kind} msgbus.aio / aiokafka {_rate(results[ours]) / _rate(results[raw]):.2f};  "
            f"msgbus.aio / msgbus (sync) {_rate(results[ours]) / _rate(results[sync]):.2f}"
        )
