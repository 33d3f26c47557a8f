"""The raw confluent-kafka (librdkafka) rows of ``python -m msgbus.bench.kafka --driver
confluent|both``: the same work as the raw kafka-python rows, with the settings of msgbus's
confluent driver (``acks=all``, idempotence, ``linger.ms`` 0, ``batch.size`` 256 KiB,
``fetch.wait.max.ms`` 10), so the msgbus-on-confluent rows compare with them in one run. The
producer configuration is the workload clients' (:mod:`msgbus.bench.raw.kafka_confluent`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from msgbus.bench.clock import Clock as _Clock
from msgbus.bench.clock import Result
from msgbus.bench.clock import paced as _paced
from msgbus.bench.kafka import _filled_topic, _payload
from msgbus.bench.raw.kafka import PARTITIONS
from msgbus.bench.raw.kafka import bootstrap as _bootstrap
from msgbus.bench.raw.kafka import hex_id as _hex_id
from msgbus.bench.raw.kafka import new_topic as _new_topic
from msgbus.bench.raw.kafka_confluent import producer_config

__all__ = ["raw_consume", "raw_latency", "raw_produce", "raw_produce_with_headers"]


def _producer(url: str) -> Producer:
    return Producer(producer_config(url))


def raw_produce(url: str, messages: int) -> Result:
    """Plain confluent-kafka ``produce`` of ``messages`` JSON records, then ``flush``."""
    return _raw_send(url, messages, headers=False)


def raw_produce_with_headers(url: str, messages: int) -> Result:
    """Like :func:`raw_produce`, with the headers and timestamp msgbus sends."""
    return _raw_send(url, messages, headers=True)


def _raw_send(url: str, messages: int, *, headers: bool) -> Result:
    topic = _new_topic(url)
    producer = _producer(url)
    produce, poll = producer.produce, producer.poll
    produce(topic, b"{}")
    producer.flush(30)  # metadata and connection are warm
    payload = _payload()
    clock = _Clock()
    for _ in range(messages):
        value = json.dumps(payload).encode()
        while True:
            try:
                if headers:
                    produce(
                        topic,
                        value,
                        headers=[("content-type", b"application/json"), ("msgbus-id", _hex_id())],
                        timestamp=time.time_ns() // 1_000_000,
                    )
                else:
                    produce(topic, value)
                break
            except BufferError:
                poll(0.01)  # librdkafka's queue is full: serve reports, then again
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} records not acknowledged")
    return clock.result(messages)


def raw_consume(url: str, messages: int) -> Result:
    """A plain ``Consumer`` group member (JSON decode, async commit per batch)."""
    topic = _filled_topic(url, messages)
    consumer = Consumer(
        {
            "bootstrap.servers": _bootstrap(url),
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    try:
        consumer.subscribe([topic])
        count = 0
        clock: _Clock | None = None
        result: Result = (0.0, 0.0)
        deadline = time.monotonic() + 120
        while count < messages and time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.5)
            for message in batch:
                if message.error() is not None:
                    continue
                json.loads(message.value())
                count += 1
                if clock is None:
                    clock = _Clock()
            if batch:
                consumer.commit(asynchronous=True)
                if count >= messages and clock is not None:
                    result = clock.result(messages - 1)
        if count < messages:
            raise RuntimeError(f"raw consumer got {count} of {messages} messages")
        return result
    finally:
        consumer.close()


def raw_latency(url: str, rate: float, seconds: float) -> list[float]:
    """End-to-end latencies (ms) of plain confluent-kafka at ``rate`` msg/s (``poll`` per
    message on the consumer, which returns as soon as one arrives)."""
    topic = _new_topic(url)
    count = int(rate * seconds)
    latencies: list[float] = []
    consumer = Consumer(
        {
            "bootstrap.servers": _bootstrap(url),
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    producer = _producer(url)
    stop = threading.Event()
    warm = threading.Event()

    def consume() -> None:
        while not stop.is_set() and len(latencies) < count:
            message = consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            sent = json.loads(message.value())["sent_ns"]
            if not warm.is_set():
                warm.set()
                continue
            latencies.append((time.monotonic_ns() - sent) / 1e6)
            consumer.commit(message, asynchronous=True)

    thread = threading.Thread(target=consume)
    thread.start()

    def send(intended: int) -> None:
        producer.produce(topic, json.dumps(_payload(intended)).encode())
        producer.poll(0)

    try:
        send(time.monotonic_ns())
        producer.flush(30)
        if not warm.wait(30):
            raise RuntimeError("raw consumer never got the warm-up message")
        _paced(rate, count, send)
        producer.flush(60)
        thread.join(60)
    finally:
        stop.set()
        thread.join(10)
        consumer.close()
    return latencies
