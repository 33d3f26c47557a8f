"""RabbitMQ's plain Python client, pika, doing the benchmarks' work.

- :class:`PikaSender`/:class:`PikaReceiver` for ``msgbus bench`` workloads: publishing on a
  ``SelectConnection`` I/O thread with pipelined publisher confirms to the durable topic
  exchange ``bench.raw``; consuming a queue ``<topic>.<group>`` (quorum for
  ``queue_type=quorum``) on a ``SelectConnection`` (the handler on its I/O thread) with
  ``basic_qos(prefetch)`` and batched acknowledgements (``basic_ack(multiple=True)``).
- The raw measurements of ``python -m msgbus.bench.rabbitmq`` (:mod:`msgbus.bench.rabbitmq`):
  one confirm waited per message, pipelined confirms, consuming a pre-filled group queue,
  on msgbus's own exchange ``msgbus``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import pika
import pika.spec
from pika.adapters.select_connection import SelectConnection

from msgbus.bench.interface import Done, Handler
from msgbus.bench.payload import ACCOUNT_CREATED
from msgbus.bench.raw.common import dumps
from msgbus.envelope import new_message_id

__all__ = [
    "BODY",
    "EXCHANGE",
    "GROUP",
    "RAW_EXCHANGE",
    "PikaReceiver",
    "PikaSender",
    "ack_every",
    "delete_queue",
    "prepare_queue",
    "raw_consume",
    "raw_publish_one_at_a_time",
    "raw_publish_pipelined",
]

RAW_EXCHANGE = "bench.raw"
"""The exchange of the workload clients (``msgbus bench``)."""
BODY = json.dumps(ACCOUNT_CREATED, separators=(",", ":")).encode()
"""The raw clients' body: the same JSON the bus sends for the benchmark payload (~200 bytes)."""
EXCHANGE = "msgbus"
"""The exchange msgbus's RabbitMQ backend uses by default; the raw clients use it too."""
GROUP = "bench"
"""The consumer group of the raw consume measurement's queue (``<topic>.bench``)."""
PERSISTENT = pika.BasicProperties(delivery_mode=2, content_type="application/json")


def msgbus_properties() -> pika.BasicProperties:
    """Persistent JSON with the metadata msgbus's RabbitMQ backend sends (an id from msgbus's
    own id source)."""
    stamp = time.time_ns() // 1_000_000
    return pika.BasicProperties(
        delivery_mode=2,
        content_type="application/json",
        message_id=new_message_id(),
        timestamp=stamp // 1000,
        headers={"msgbus-timestamp": str(stamp)},
    )


def _params(url: str) -> pika.URLParameters:
    return pika.URLParameters(url)


def prepare_queue(url: str, topic: str, group: str = GROUP) -> str:
    """Declare the exchange and the durable group queue ``<topic>.<group>``, bound to
    ``topic`` (what msgbus declares for that group); return the queue name."""
    conn = pika.BlockingConnection(_params(url))
    try:
        channel = conn.channel()
        channel.exchange_declare(EXCHANGE, "topic", durable=True)
        queue = f"{topic}.{group}"
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, EXCHANGE, routing_key=topic)
        return queue
    finally:
        conn.close()


def delete_queue(url: str, queue: str) -> None:
    """Delete ``queue`` (clean-up after a run)."""
    conn = pika.BlockingConnection(_params(url))
    try:
        conn.channel().queue_delete(queue)
    finally:
        conn.close()


def raw_publish_one_at_a_time(url: str, topic: str, messages: int) -> float:
    """Raw pika: ``BlockingConnection`` with confirms, each publish waits for its confirm."""
    conn = pika.BlockingConnection(_params(url))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        started = time.perf_counter()
        for _ in range(messages):
            channel.basic_publish(EXCHANGE, topic, BODY, PERSISTENT)
        return messages / (time.perf_counter() - started)
    finally:
        conn.close()


def raw_publish_pipelined(
    url: str, topic: str, messages: int, window: int, *, metadata: bool = False
) -> float:
    """Raw pika: a ``SelectConnection`` publishing from its I/O thread, at most ``window``
    unconfirmed; the clock stops at the last confirm. Returns msg/s.

    With ``metadata``, each message carries what a msgbus publish carries (a message id, a
    timestamp property and the millisecond ``msgbus-timestamp`` header), for reference.
    """
    state: dict[str, Any] = {"sent": 0, "confirmed": 0, "error": None, "elapsed": 0.0}
    done = threading.Event()

    def fill(channel: Any) -> None:
        while state["sent"] < messages and state["sent"] - state["confirmed"] < window:
            channel.basic_publish(
                EXCHANGE, topic, BODY, msgbus_properties() if metadata else PERSISTENT
            )
            state["sent"] += 1

    def on_confirm(frame: Any) -> None:
        method = frame.method
        if not isinstance(method, pika.spec.Basic.Ack):
            state["error"] = RuntimeError("nack")
        state["confirmed"] = method.delivery_tag if method.multiple else state["confirmed"] + 1
        if state["confirmed"] >= messages:
            state["elapsed"] = time.perf_counter() - state["started"]
            conn.close()
            return
        fill(channel_ref[0])

    channel_ref: list[Any] = []

    def on_channel(channel: Any) -> None:
        channel_ref.append(channel)
        channel.confirm_delivery(on_confirm, callback=lambda _f: start(channel))

    def start(channel: Any) -> None:
        state["started"] = time.perf_counter()
        fill(channel)

    def on_closed(_conn: Any, reason: Any) -> None:
        if state["confirmed"] < messages:
            state["error"] = reason
        conn.ioloop.stop()
        done.set()

    def on_open_error(_conn: Any, reason: Any) -> None:
        state["error"] = reason
        conn.ioloop.stop()
        done.set()

    conn = SelectConnection(
        _params(url),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=on_open_error,
        on_close_callback=on_closed,
    )
    conn.ioloop.start()
    if state["error"] is not None:
        raise RuntimeError(f"raw pipelined publisher failed: {state['error']!r}")
    return messages / state["elapsed"]


def raw_consume(url: str, queue: str, messages: int, prefetch: int) -> float:
    """Raw pika: drain ``messages`` from ``queue`` with manual acks, ``basic_qos(prefetch)``."""
    conn = pika.BlockingConnection(_params(url))
    try:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=prefetch)
        count = 0

        def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
            nonlocal count
            json.loads(body)
            ch.basic_ack(method.delivery_tag)
            count += 1
            if count >= messages:
                ch.stop_consuming()

        channel.basic_consume(queue, on_message, auto_ack=False)
        started = time.perf_counter()
        channel.start_consuming()
        return messages / (time.perf_counter() - started)
    finally:
        conn.close()


class PikaSender:
    """A workload sender: publisher confirms pipelined on a SelectConnection I/O thread."""

    def __init__(self, url: str, persistent: bool) -> None:
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
        body = dumps(payload)
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


class PikaReceiver:
    """A workload receiver on pika's fastest path: a ``SelectConnection`` whose I/O thread
    runs the handler right in ``on_message`` (no hand-over to another thread), with
    batched acknowledgements: one ``basic_ack(multiple=True)`` for the last handled delivery
    after each read's batch of deliveries (a callback scheduled for the next ioloop turn),
    and at the latest every :func:`ack_every` messages, so the prefetch window never runs
    dry. The group's queues are declared and bound when the constructor returns."""

    def __init__(
        self,
        url: str,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        prefetch: int,
        quorum: bool,
    ) -> None:
        self._handler = handler
        self._queues = [f"{topic}.{group}" for topic in topics]
        self._topics = list(topics)
        self._prefetch = prefetch
        self._arguments = {"x-queue-type": "quorum"} if quorum else None
        self._every = ack_every(prefetch)
        self._last_tag = 0
        self._unacked = 0
        self._flush_scheduled = False
        self._channel: Any = None
        self._error: Any = None
        self._declared = threading.Event()
        self._consuming = threading.Event()
        self._conn = pika.SelectConnection(
            pika.URLParameters(url),
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=self._on_error,
            on_close_callback=self._on_error,
        )
        self._thread = threading.Thread(
            target=self._conn.ioloop.start, name="raw-pika-consume", daemon=True
        )
        self._thread.start()
        if not self._declared.wait(30) or self._error is not None:
            self.close()
            raise ConnectionError(f"raw pika consumer could not set up: {self._error!r}")

    # ------------------------------------------------------------------ I/O thread

    def _on_error(self, _conn: Any, error: Any = None) -> None:
        self._error = error if error is not None else "connection closed"
        self._declared.set()
        self._consuming.set()
        with contextlib.suppress(Exception):
            self._conn.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        channel.basic_qos(prefetch_count=self._prefetch, callback=lambda _f: self._declare())

    def _declare(self) -> None:
        self._channel.exchange_declare(
            RAW_EXCHANGE, "topic", durable=True, callback=lambda _f: self._queue(0)
        )

    def _queue(self, index: int) -> None:
        if index == len(self._queues):
            self._declared.set()
            return
        queue, topic = self._queues[index], self._topics[index]

        def bind(_frame: Any) -> None:
            self._channel.queue_bind(
                queue, RAW_EXCHANGE, routing_key=topic, callback=lambda _f: self._queue(index + 1)
            )

        self._channel.queue_declare(queue, durable=True, arguments=self._arguments, callback=bind)

    def _consume(self) -> None:
        for n, queue in enumerate(self._queues):
            last = n == len(self._queues) - 1
            self._channel.basic_consume(
                queue,
                self._on_message,
                auto_ack=False,
                callback=(lambda _f: self._consuming.set()) if last else None,
            )

    def _on_message(self, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        self._handler(json.loads(body))
        self._last_tag = method.delivery_tag
        self._unacked += 1
        if self._unacked >= self._every:
            self._ack()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._conn.ioloop.call_later(0, self._flush)  # after this read's deliveries

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._ack()

    def _ack(self) -> None:
        if self._unacked:
            self._channel.basic_ack(self._last_tag, multiple=True)
            self._unacked = 0

    def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._ack()
        with contextlib.suppress(Exception):
            self._conn.close()

    # ------------------------------------------------------------------ any thread

    def start(self) -> None:
        self._conn.ioloop.add_callback_threadsafe(self._consume)
        if not self._consuming.wait(30) or self._error is not None:
            raise ConnectionError(f"raw pika consumer could not consume: {self._error!r}")

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._conn.ioloop.add_callback_threadsafe(self._shutdown)
            self._thread.join(10)


def ack_every(prefetch: int) -> int:
    """How many deliveries a batched consumer may leave unacknowledged before it acks
    (a quarter of ``prefetch``, at least 1): the broker always has room to send more."""
    return max(1, prefetch // 4)
