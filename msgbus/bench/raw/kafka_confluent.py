"""Kafka's fastest Python client, confluent-kafka (librdkafka), doing the benchmarks' work.

:class:`ConfluentSender`/:class:`ConfluentReceiver` for ``msgbus bench`` workloads on a
Kafka target whose driver is ``confluent``, used the way librdkafka's documentation
recommends for throughput:

- the producer has msgbus's confluent driver settings (:func:`producer_config`: ``acks=all``,
  idempotence, ``linger.ms`` 0, 256 KiB batches); ``produce`` hands the record to librdkafka's
  queue and returns, a thread of its own serves delivery reports (``poll``), and a full queue
  (``BufferError``) is waited out by serving reports, never dropped;
- the consumer is a group member reading on a thread of its own: it drains what librdkafka
  has fetched with ``consume(500, 0)`` and, when that is empty, waits with ``poll(0.1)``,
  which returns on the first message (``consume(500, 0.1)`` would hold a trickle back for up
  to 100 ms while it fills the batch, as the driver also avoids); it decodes each JSON body
  and commits asynchronously at most every 100 ms, like the driver (a commit per small batch
  queues OffsetCommits ahead of the heartbeats); :func:`consumer_config`:
  ``fetch.wait.max.ms`` 10, like the driver.

:mod:`msgbus.bench.kafka_confluent` (``python -m msgbus.bench.kafka --driver confluent``)
uses the same configurations.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer

from msgbus.backends.kafka.subscription import COMMIT_INTERVAL_S
from msgbus.bench.interface import Done, Handler
from msgbus.bench.raw.common import CommitPacer, PollingReceiver, dumps, endpoints

__all__ = [
    "BATCH_SIZE",
    "ConfluentReceiver",
    "ConfluentSender",
    "consumer_config",
    "producer_config",
]

BATCH_SIZE = 256 * 1024
"""``batch.size`` of the raw producer: the msgbus Kafka backend's default ``batch_size``."""

BATCH = 500
"""Messages a consumer asks ``consume`` for at once."""


def _servers(url: str) -> str:
    return ",".join(f"{h}:{p}" for h, p in endpoints(url, 9092))


def producer_config(url: str) -> dict[str, Any]:
    """The raw producer's configuration: msgbus's confluent driver settings."""
    return {
        "bootstrap.servers": _servers(url),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 0,
        "batch.size": BATCH_SIZE,
    }


def consumer_config(url: str, group: str) -> dict[str, Any]:
    """The raw consumer's configuration for ``group`` (manual commits, fresh topics read
    from their start, the driver's fetch wait and session settings)."""
    return {
        "bootstrap.servers": _servers(url),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }


class ConfluentSender:
    """A workload sender: ``produce`` with a delivery callback, reports served on a thread."""

    def __init__(self, url: str) -> None:
        self._producer = Producer(producer_config(url))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="raw-confluent-poll", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poll = self._producer.poll
        while not self._stop.is_set():
            poll(0.05)

    def send(self, topic: str, key: str | None, payload: dict[str, Any], done: Done) -> None:
        def report(err: Any, _msg: Any) -> None:
            done(None if err is None else RuntimeError(f"delivery failed: {err}"))

        value = dumps(payload)
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=report)
                return
            except BufferError:
                self._producer.poll(0.01)  # librdkafka's queue is full: let reports drain

    def flush(self, timeout: float) -> None:
        left = self._producer.flush(timeout)
        if left:
            raise TimeoutError(f"raw confluent-kafka producer: {left} records unacknowledged")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._producer.flush(10)


class ConfluentReceiver(PollingReceiver):
    """A workload receiver: a group member consuming on its own thread (first message at once,
    the fetched rest drained), an asynchronous commit at most every ``COMMIT_INTERVAL_S``."""

    def __init__(self, url: str, topics: Sequence[str], group: str, handler: Handler) -> None:
        self._consumer = Consumer(consumer_config(url, group))
        self._topics = list(topics)
        self._handler = handler
        super().__init__("raw-confluent-consume", self._run)

    def _on_assign(self, _consumer: Any, _partitions: Any) -> None:
        self.ready.set()

    def _run(self) -> None:
        consumer = self._consumer
        handler = self._handler
        loads = json.loads
        consumer.subscribe(self._topics, on_assign=self._on_assign)
        pacer = CommitPacer(COMMIT_INTERVAL_S)
        while not self.stopping.is_set():
            # consume(n, t) waits for n messages or t; poll returns on the first one, so a
            # slow trickle is delivered at once and what is already fetched is drained after.
            batch = consumer.consume(BATCH, 0)
            if not batch:
                first = consumer.poll(0.1)
                batch = [first, *consumer.consume(BATCH - 1, 0)] if first is not None else []
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"raw confluent-kafka consumer: {error}")
                    continue
                handler(loads(message.value()))
                pacer.handled()
            # One asynchronous commit per COMMIT_INTERVAL_S at most: a commit per small batch
            # queues OffsetCommits ahead of the group's heartbeats and loses the session.
            if pacer.due():
                consumer.commit(asynchronous=True)

    def final_commit(self) -> None:
        self._consumer.commit(asynchronous=False)

    def close_consumer(self) -> None:
        self._consumer.close()
