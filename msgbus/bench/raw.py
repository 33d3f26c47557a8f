"""Each broker's plain Python client doing the benchmark's work, for comparison with msgbus.

The same JSON bodies, the same topology idea (a topic, a consumer group per subscriber
group), the same durability as msgbus at each profile, one acknowledgement per message:

- Kafka, kafka-python: ``KafkaProducer(acks="all")`` with future callbacks; a
  ``KafkaConsumer`` group member on a poll thread, ``commit_async`` after each poll batch.
  Topics are created by :func:`prepare` with the workload's partitions.
- RabbitMQ, pika: publishing on a ``SelectConnection`` I/O thread with pipelined publisher
  confirms (a blocking channel waits a round trip per message); one durable topic exchange
  ``bench.raw``, a queue ``<topic>.<group>`` bound by routing key = topic (quorum for
  ``queue_type=quorum``), persistent messages unless ``persistent=False``. Consuming on a
  ``BlockingConnection`` with ``basic_qos(prefetch)`` and a ``basic_ack`` per message.
- ActiveMQ, stomp.py (STOMP 1.2): SEND to ``/topic/VirtualTopic.<topic>`` with a receipt
  each, receipts windowed by the caller; consuming ``/queue/Consumer.<group>.VirtualTopic.
  <topic>`` with ``ack:client-individual`` and ``activemq.prefetchSize``.

Only the module of the broker in use is imported, when first needed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

from msgbus.bench.interface import Done, Handler, Receiver, Sender
from msgbus.url import BusURL

__all__ = ["open_receiver", "open_sender", "prepare"]

RAW_EXCHANGE = "bench.raw"


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _endpoints(url: str, default_port: int) -> list[tuple[str, int]]:
    parsed = BusURL.parse(url)
    return [(h.host, h.port or default_port) for h in parsed.hosts]


def prepare(kind: str, url: str, options: dict[str, Any], topics: Sequence[str]) -> None:
    """Create what the raw clients need before consumers join (Kafka: the topics with
    ``options["partitions"]``; others: nothing, their consumers declare)."""
    if kind != "kafka":
        return
    from kafka.admin import KafkaAdminClient, NewTopic

    servers = [f"{h}:{p}" for h, p in _endpoints(url, 9092)]
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(t, int(options.get("partitions", 3)), 1) for t in topics])
    finally:
        admin.close()


def open_sender(kind: str, url: str, options: dict[str, Any]) -> Sender:
    """A raw :class:`~msgbus.bench.interface.Sender` for ``kind`` (ValueError if none)."""
    if kind == "kafka":
        return _KafkaSender(url)
    if kind == "rabbitmq":
        return _PikaSender(url, bool(options.get("persistent", True)))
    if kind == "activemq":
        return _StompSender(url, bool(options.get("persistent", True)))
    raise ValueError(f"no raw client for {kind!r}")


def open_receiver(
    kind: str,
    url: str,
    options: dict[str, Any],
    topics: Sequence[str],
    group: str,
    handler: Handler,
    *,
    prefetch: int,
) -> Receiver:
    """A raw :class:`~msgbus.bench.interface.Receiver` for ``kind`` (ValueError if none)."""
    if kind == "kafka":
        return _KafkaReceiver(url, topics, group, handler)
    if kind == "rabbitmq":
        quorum = options.get("queue_type") == "quorum"
        return _PikaReceiver(url, topics, group, handler, prefetch, quorum)
    if kind == "activemq":
        return _StompReceiver(url, topics, group, handler, prefetch)
    raise ValueError(f"no raw client for {kind!r}")


# --------------------------------------------------------------------------- Kafka


class _KafkaSender:
    def __init__(self, url: str) -> None:
        from kafka import KafkaProducer

        from msgbus.backends.kafka import KafkaOptions

        servers = [f"{h}:{p}" for h, p in _endpoints(url, 9092)]
        self._producer = KafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            linger_ms=0,
            batch_size=KafkaOptions.batch_size,  # the msgbus backend's settings
            max_request_size=4 * 1024 * 1024,
        )

    def send(self, topic: str, key: str | None, payload: dict[str, Any], done: Done) -> None:
        future = self._producer.send(
            topic, _dumps(payload), key=key.encode() if key is not None else None
        )
        future.add_callback(lambda _meta: done(None))
        future.add_errback(lambda exc: done(exc))

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        self._producer.close(timeout=10)


class _KafkaReceiver:
    def __init__(self, url: str, topics: Sequence[str], group: str, handler: Handler) -> None:
        from kafka import KafkaConsumer

        servers = [f"{h}:{p}" for h, p in _endpoints(url, 9092)]
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
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-kafka-poll", daemon=True)

    def _run(self) -> None:
        consumer = self._consumer
        while not self._stop.is_set():
            batches = consumer.poll(timeout_ms=100)
            if consumer.assignment():
                self._ready.set()
            for records in batches.values():
                for record in records:
                    self._handler(json.loads(record.value))
            if batches:
                consumer.commit_async()

    def start(self) -> None:
        self._thread.start()
        # A member may get no partition (more members than partitions): ready after 20 s.
        self._ready.wait(20)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with contextlib.suppress(Exception):
            self._consumer.commit()
        self._consumer.close(autocommit=False)


# --------------------------------------------------------------------------- RabbitMQ


class _PikaSender:
    """Publisher confirms pipelined on a SelectConnection I/O thread."""

    def __init__(self, url: str, persistent: bool) -> None:
        import pika

        self._pika = pika
        self._props = pika.BasicProperties(
            delivery_mode=2 if persistent else 1, content_type="application/json"
        )
        self._queue: deque[tuple[str, bytes, Done]] = deque()
        self._unconfirmed: dict[int, Done] = {}
        self._tags = itertools.count(1)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._scheduled = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._channel: Any = None
        self._conn = pika.SelectConnection(
            pika.URLParameters(url),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_error,
            on_close_callback=self._on_error,
        )
        self._thread = threading.Thread(target=self._conn.ioloop.start, daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise ConnectionError(f"raw pika publisher could not connect: {self._error!r}")

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_error(self, _conn: Any, error: Any = None) -> None:
        self._error = error if isinstance(error, BaseException) else ConnectionError(str(error))
        with self._lock:
            pending = list(self._unconfirmed.values()) + [d for _, _, d in self._queue]
            self._unconfirmed.clear()
            self._queue.clear()
            self._idle.notify_all()
        for done in pending:
            done(self._error)
        self._ready.set()
        with contextlib.suppress(Exception):
            self._conn.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        channel.confirm_delivery(self._on_confirm)
        channel.exchange_declare(
            RAW_EXCHANGE, "topic", durable=True, callback=lambda _f: self._ready.set()
        )

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, self._pika.spec.Basic.Ack)
        tag = method.delivery_tag
        with self._lock:
            if method.multiple:
                tags = [t for t in self._unconfirmed if t <= tag]
            else:
                tags = [tag] if tag in self._unconfirmed else []
            dones = [self._unconfirmed.pop(t) for t in tags]
            if not self._unconfirmed and not self._queue:
                self._idle.notify_all()
        error = None if ok else RuntimeError("broker nacked the message")
        for done in dones:
            done(error)

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
            batch = list(self._queue)
            self._queue.clear()
            for _, _, done in batch:
                self._unconfirmed[next(self._tags)] = done
        for topic, body, _ in batch:
            self._channel.basic_publish(RAW_EXCHANGE, topic, body, self._props)

    def send(self, topic: str, key: str | None, payload: dict[str, Any], done: Done) -> None:
        if self._error is not None:
            raise ConnectionError(f"raw pika publisher lost its connection: {self._error!r}")
        body = _dumps(payload)
        with self._lock:
            self._queue.append((topic, body, done))
            if self._scheduled:
                return
            self._scheduled = True
        self._conn.ioloop.add_callback_threadsafe(self._drain)

    def flush(self, timeout: float) -> None:
        with self._lock:
            if not self._idle.wait_for(lambda: not self._unconfirmed and not self._queue, timeout):
                raise TimeoutError("raw pika publisher: confirms missing")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.ioloop.add_callback_threadsafe(self._conn.close)
        self._thread.join(10)


class _PikaReceiver:
    def __init__(
        self,
        url: str,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        prefetch: int,
        quorum: bool,
    ) -> None:
        import pika

        self._conn = pika.BlockingConnection(pika.URLParameters(url))
        channel = self._conn.channel()
        channel.exchange_declare(RAW_EXCHANGE, "topic", durable=True)
        channel.basic_qos(prefetch_count=prefetch)
        arguments = {"x-queue-type": "quorum"} if quorum else None
        self._handler = handler

        def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
            handler(json.loads(body))
            ch.basic_ack(method.delivery_tag)

        for topic in topics:
            queue = f"{topic}.{group}"
            channel.queue_declare(queue, durable=True, arguments=arguments)
            channel.queue_bind(queue, RAW_EXCHANGE, routing_key=topic)
            channel.basic_consume(queue, on_message, auto_ack=False)
        self._channel = channel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raw-pika-consume", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._conn.process_data_events(time_limit=0.1)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with contextlib.suppress(Exception):
            self._conn.close()


# --------------------------------------------------------------------------- ActiveMQ


def _stomp_connect(url: str, listener: Any) -> Any:
    import stomp

    parsed = BusURL.parse(url)
    conn = stomp.Connection12(
        _endpoints(url, 61613), heartbeats=(10_000, 10_000), auto_decode=False
    )
    conn.set_listener("bench", listener)
    conn.connect(username=parsed.username, passcode=parsed.password, wait=True)
    return conn


class _StompSender:
    def __init__(self, url: str, persistent: bool) -> None:
        import stomp

        sender = self

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_receipt(self, frame: Any) -> None:
                sender._settle(frame.headers.get("receipt-id", ""), None)

            def on_error(self, frame: Any) -> None:
                rid = frame.headers.get("receipt-id")
                sender._settle(rid or "", RuntimeError(f"STOMP ERROR {frame.headers}"))

        self._pending: dict[str, Done] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._ids = itertools.count()
        self._persistent = "true" if persistent else "false"
        self._conn = _stomp_connect(url, Listener())

    def _settle(self, receipt: str, error: BaseException | None) -> None:
        with self._lock:
            done = self._pending.pop(receipt, None)
            if not self._pending:
                self._idle.notify_all()
        if done is not None:
            done(error)

    def send(self, topic: str, key: str | None, payload: dict[str, Any], done: Done) -> None:
        receipt = f"r{next(self._ids)}"
        headers = {"persistent": self._persistent, "receipt": receipt}
        if key is not None:
            headers["JMSXGroupID"] = key
        with self._lock:
            self._pending[receipt] = done
        self._conn.send(
            f"/topic/VirtualTopic.{topic}",
            _dumps(payload),
            content_type="application/json",
            headers=headers,
        )

    def flush(self, timeout: float) -> None:
        with self._lock:
            if not self._idle.wait_for(lambda: not self._pending, timeout):
                raise TimeoutError("raw stomp.py publisher: receipts missing")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.disconnect()


class _StompReceiver:
    def __init__(
        self, url: str, topics: Sequence[str], group: str, handler: Handler, prefetch: int
    ) -> None:
        import stomp

        receiver = self

        class Listener(stomp.ConnectionListener):  # type: ignore[misc]
            def on_message(self, frame: Any) -> None:
                handler(json.loads(frame.body))
                receiver._conn.ack(frame.headers["ack"])  # STOMP 1.2: the ack id alone

            def on_receipt(self, frame: Any) -> None:
                with receiver._lock:
                    receiver._receipts.add(frame.headers.get("receipt-id", ""))
                    receiver._cond.notify_all()

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._receipts: set[str] = set()
        self._topics = list(topics)
        self._group = group
        self._prefetch = prefetch
        self._conn = _stomp_connect(url, Listener())

    def start(self) -> None:
        for n, topic in enumerate(self._topics):
            receipt = f"sub-{n}-{uuid.uuid4().hex[:6]}"
            self._conn.subscribe(
                f"/queue/Consumer.{self._group}.VirtualTopic.{topic}",
                id=f"s{n}",
                ack="client-individual",
                headers={"activemq.prefetchSize": str(self._prefetch), "receipt": receipt},
            )
            with self._lock:
                if not self._cond.wait_for(lambda r=receipt: r in self._receipts, 15):
                    raise TimeoutError("raw stomp.py: no receipt for SUBSCRIBE")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.disconnect()
        time.sleep(0)
