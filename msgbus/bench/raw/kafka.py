"""Kafka's plain Python client, kafka-python, doing the benchmarks' work.

- :class:`KafkaSender`/:class:`KafkaReceiver` for ``msgbus bench`` workloads: a producer
  with ``acks="all"`` and future callbacks; a consumer group member on a poll thread,
  ``commit_async`` at most every ``COMMIT_INTERVAL_S`` (the driver's interval); topics
  created up front with the workload's partitions (:func:`create_topics`).
- The raw kafka-python measurements of ``python -m msgbus.bench.kafka``
  (:mod:`msgbus.bench.kafka`): produce (plain, with msgbus's headers, with a Future per
  record), consume with a commit per poll batch, end-to-end latency at a fixed rate; on
  fresh topics of :data:`PARTITIONS` partitions (:func:`new_topic`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from msgbus.backends.kafka import KafkaOptions
from msgbus.backends.kafka.subscription import COMMIT_INTERVAL_S
from msgbus.bench.clock import Clock, Result, paced
from msgbus.bench.interface import Done, Handler
from msgbus.bench.payload import ACCOUNT_CREATED
from msgbus.bench.raw.common import CommitPacer, PollingReceiver, dumps, endpoints
from msgbus.envelope import new_message_id

__all__ = [
    "BATCH_SIZE",
    "PARTITIONS",
    "KafkaReceiver",
    "KafkaSender",
    "bootstrap",
    "create_topics",
    "hex_id",
    "new_topic",
    "raw_consume",
    "raw_latency",
    "raw_produce",
    "raw_produce_with_futures",
    "raw_produce_with_headers",
]

PARTITIONS = 3
"""Partitions of the topics :func:`new_topic` creates."""

BATCH_SIZE = KafkaOptions.batch_size
"""The raw producers use the msgbus backend's default batch size (same settings, same work)."""


def create_topics(url: str, topics: Sequence[str], partitions: int, replication: int = 1) -> None:
    """Create ``topics`` with ``partitions`` partitions and ``replication`` replicas each."""
    servers = [f"{h}:{p}" for h, p in endpoints(url, 9092)]
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(t, partitions, replication) for t in topics])
    finally:
        admin.close()


class KafkaSender:
    """A ``KafkaProducer`` with the msgbus backend's settings (acks=all, its batch size)."""

    def __init__(self, url: str) -> None:
        servers = [f"{h}:{p}" for h, p in endpoints(url, 9092)]
        self._producer = KafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            linger_ms=0,
            batch_size=KafkaOptions.batch_size,  # the msgbus backend's settings
            max_request_size=4 * 1024 * 1024,
        )

    def send(self, topic: str, key: str | None, payload: dict[str, Any], done: Done) -> None:
        future = self._producer.send(
            topic, dumps(payload), key=key.encode() if key is not None else None
        )
        future.add_callback(lambda _meta: done(None))
        future.add_errback(lambda exc: done(exc))

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close(timeout=10)


class KafkaReceiver(PollingReceiver):
    """A ``KafkaConsumer`` group member polling on its own thread, committing asynchronously
    at most every ``COMMIT_INTERVAL_S`` (100 ms), as the msgbus driver does."""

    def __init__(self, url: str, topics: Sequence[str], group: str, handler: Handler) -> None:
        servers = [f"{h}:{p}" for h, p in endpoints(url, 9092)]
        self._consumer = KafkaConsumer(
            bootstrap_servers=servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # fresh topics: their start is their end
            fetch_max_wait_ms=10,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer.subscribe(list(topics))
        self._handler = handler
        super().__init__("raw-kafka-poll", self._run)

    def _run(self) -> None:
        consumer = self._consumer
        pacer = CommitPacer(COMMIT_INTERVAL_S)
        while not self.stopping.is_set():
            batches = consumer.poll(timeout_ms=100)
            if consumer.assignment():
                self.ready.set()
            for records in batches.values():
                for record in records:
                    self._handler(json.loads(record.value))
                pacer.handled()
            # Like the driver: one asynchronous commit per COMMIT_INTERVAL_S at most (at 1,000
            # msg/s a commit per poll batch is ~100 OffsetCommit requests a second).
            if pacer.due():
                consumer.commit_async()

    def final_commit(self) -> None:
        self._consumer.commit()

    def close_consumer(self) -> None:
        self._consumer.close(autocommit=False)


# --------------------------------------------------------------------------- measurements


def _payload(sent_ns: int = 0) -> dict[str, Any]:
    return {**ACCOUNT_CREATED, "sent_ns": sent_ns}


def bootstrap(url: str) -> str:
    """The ``host:port[,...]`` part of a ``kafka://`` URL."""
    return url.split("://", 1)[1].split("?", 1)[0]


def new_topic(url: str, partitions: int = PARTITIONS) -> str:
    """Create a fresh topic of ``partitions`` partitions and return its name."""
    name = f"bench.{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap(url))
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def raw_produce(url: str, messages: int) -> Result:
    """Plain kafka-python sending ``messages`` JSON records with acks=all."""
    return _raw_send(url, messages, headers=False, futures=False)


def raw_produce_with_headers(url: str, messages: int) -> Result:
    """Like :func:`raw_produce`, but each record carries the headers msgbus sends
    (``content-type``, a 32-hex-digit ``msgbus-id``) and an explicit timestamp: the same
    bytes on the wire as msgbus, to show what the record headers cost in kafka-python."""
    return _raw_send(url, messages, headers=True, futures=False)


def raw_produce_with_futures(url: str, messages: int) -> Result:
    """Like :func:`raw_produce_with_headers`, plus a ``concurrent.futures.Future`` per
    record resolved from the producer's callback (what ``publish`` hands its caller)."""
    return _raw_send(url, messages, headers=True, futures=True)


def _raw_send(url: str, messages: int, *, headers: bool, futures: bool) -> Result:
    topic = new_topic(url)
    producer = KafkaProducer(bootstrap_servers=bootstrap(url), acks="all", batch_size=BATCH_SIZE)
    try:
        producer.send(topic, b"{}").get(30)  # metadata and connection are warm
        payload = _payload()
        clock = Clock()
        for _ in range(messages):
            if not headers:
                producer.send(topic, json.dumps(payload).encode())
                continue
            sent = producer.send(
                topic,
                json.dumps(payload).encode(),
                headers=[("content-type", b"application/json"), ("msgbus-id", hex_id())],
                timestamp_ms=time.time_ns() // 1_000_000,
            )
            if futures:
                future: Future[None] = Future()
                sent.add_both(_resolve, future)
        producer.flush(120)
        return clock.result(messages)
    finally:
        producer.close()


def hex_id() -> bytes:
    """A message id as msgbus makes them (32 hex digits), as bytes for a record header."""
    # msgbus's own id source (a counter): os.urandom per id releases the GIL, and next to the
    # producer's sender thread a call took up to 28 us here, which would be measured instead
    return new_message_id().encode()


def _resolve(future: Future[None], outcome: Any) -> None:
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(None)


def raw_consume(url: str, topic: str, messages: int) -> Result:
    """A plain ``KafkaConsumer`` group member (JSON decode, commit per poll batch) reading
    ``messages`` messages of ``topic`` from its start."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap(url),
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    try:
        count = 0
        clock: Clock | None = None
        result: Result = (0.0, 0.0)
        deadline = time.monotonic() + 120
        while count < messages and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)
                    count += 1
                    if clock is None:
                        clock = Clock()
            if batches:
                consumer.commit_async()
                if count >= messages and clock is not None:
                    result = clock.result(messages - 1)
        if count < messages:
            raise RuntimeError(f"raw consumer got {count} of {messages} messages")
        return result
    finally:
        consumer.close(autocommit=False)


def raw_latency(url: str, rate: float, seconds: float) -> list[float]:
    """End-to-end latencies (ms) of plain kafka-python at ``rate`` msg/s."""
    topic = new_topic(url)
    count = int(rate * seconds)
    latencies: list[float] = []
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap(url),
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    for p in range(PARTITIONS):
        consumer.seek(TopicPartition(topic, p), 0)  # a fresh topic: its start is its end
    producer = KafkaProducer(bootstrap_servers=bootstrap(url), acks="all", batch_size=BATCH_SIZE)
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set() and len(latencies) < count:
            batches = consumer.poll(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    sent = json.loads(record.value)["sent_ns"]
                    latencies.append((time.monotonic_ns() - sent) / 1e6)
            if batches:
                consumer.commit_async()

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        producer.send(topic, json.dumps(_payload(time.monotonic_ns())).encode()).get(30)
        latencies.clear()  # the warm-up message
        paced(
            rate,
            count,
            lambda intended: producer.send(topic, json.dumps(_payload(intended)).encode()),
        )
        producer.flush(60)
        thread.join(60)
    finally:
        stop.set()
        thread.join(10)
        producer.close()
        consumer.close(autocommit=False)
    return latencies
