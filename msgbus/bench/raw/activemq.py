"""ActiveMQ's plain Python STOMP client, stomp.py (STOMP 1.2), doing the benchmarks' work.

- :class:`StompSender`/:class:`StompReceiver` for ``msgbus bench`` workloads: SEND to
  ``/topic/VirtualTopic.<topic>`` with a receipt each (STOMP has no cumulative receipt);
  consuming ``/queue/Consumer.<group>.VirtualTopic.<topic>`` with ``ack:client-individual``
  (an ACK per message, sent at once) and ``activemq.prefetchSize``.
- The raw measurements of ``python -m msgbus.bench.activemq`` (:mod:`msgbus.bench.activemq`):
  receipts one at a time, windowed, none; consuming a pre-filled group queue.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import stomp

from msgbus.bench.interface import Done, Handler
from msgbus.bench.payload import ACCOUNT_CREATED
from msgbus.bench.raw.common import dumps, endpoints
from msgbus.url import BusURL

__all__ = [
    "BODY",
    "StompReceiver",
    "StompSender",
    "create_group",
    "raw_consume",
    "raw_publish_no_receipt",
    "raw_publish_sync",
    "raw_publish_windowed",
    "stomp_connect",
]

BODY = json.dumps(ACCOUNT_CREATED, separators=(",", ":")).encode()
"""The raw clients' body: the same JSON the bus sends for the benchmark payload (~200 bytes)."""


def stomp_connect(url: str, listener: Any) -> Any:
    """A STOMP 1.2 connection to the URL's hosts with ``listener`` set, CONNECTed."""
    parsed = BusURL.parse(url)
    conn = stomp.Connection12(endpoints(url, 61613), heartbeats=(10_000, 10_000), auto_decode=False)
    conn.set_listener("bench", listener)
    conn.connect(username=parsed.username, passcode=parsed.password, wait=True)
    return conn


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
    conn = stomp_connect(url, listener)
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


def create_group(url: str, topic: str, group: str) -> None:
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


class StompSender:
    """A workload sender: persistent SENDs, each with a receipt that settles it."""

    def __init__(self, url: str, persistent: bool) -> None:
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
        self._conn = stomp_connect(url, Listener())

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
            dumps(payload),
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


class StompReceiver:
    """A workload receiver: one SUBSCRIBE per topic with ``ack:client-individual``; the
    listener ACKs each message right after the handler, on stomp.py's receiver thread.

    Measured on ActiveMQ 5.17.2 at 1,000 msg/s (``docs/benchmark.md``): holding ACKs back to
    send one cumulative ``ack:client`` ACK per burst raised p50 from ~0.8 ms to 1.2-3.4 ms
    (ActiveMQ dispatches later while a consumer holds unacknowledged messages), so the
    prompt ACK is the best-practice baseline; at full speed it is what ``python -m
    msgbus.bench.activemq`` measures as raw consume."""

    def __init__(
        self, url: str, topics: Sequence[str], group: str, handler: Handler, prefetch: int
    ) -> None:
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
        self._conn = stomp_connect(url, Listener())

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
