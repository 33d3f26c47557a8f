"""RabbitMQ consumer lag: a queue's ready-message count, by passive declare on a side channel.

``queue.declare(passive=True)`` answers with the queue's ``message_count`` (messages ready
for delivery; delivered-but-unacknowledged ones are not counted) without creating or
changing anything. A passive declare of a queue that does not exist makes the broker close
the channel (404), so each query opens a short-lived channel of its own on the backend's
connection, never the publishing or a consuming channel. The query runs on the backend's
I/O thread (pika is not thread-safe); the caller waits for the answer at most ``timeout``
seconds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

__all__ = ["queue_depth"]

log = logging.getLogger("msgbus.rabbitmq")


class _IOBackend(Protocol):
    def call_soon(self, fn: Any) -> bool: ...
    def connection(self) -> Any: ...


def queue_depth(backend: _IOBackend, queue: str, timeout: float) -> int | None:
    """Ready messages in ``queue``, or None (no such queue, no connection, no answer in
    ``timeout`` seconds). Any thread but the backend's I/O thread."""
    done = threading.Event()
    answer: list[int | None] = [None]

    def settle(value: int | None) -> None:
        if not done.is_set():
            answer[0] = value
            done.set()

    def start() -> None:  # I/O thread
        conn = backend.connection()
        if conn is None or not conn.is_open:
            settle(None)
            return

        def on_open(channel: Any) -> None:
            def on_declared(frame: Any) -> None:
                settle(frame.method.message_count)
                if channel.is_open:
                    channel.close()

            channel.add_on_close_callback(lambda _channel, _reason: settle(None))
            channel.queue_declare(queue, passive=True, callback=on_declared)

        try:
            conn.channel(on_open_callback=on_open)
        except Exception as exc:  # the connection is closing
            log.debug("RabbitMQ: no side channel for the queue depth: %s", exc)
            settle(None)

    if not backend.call_soon(start):
        return None
    done.wait(timeout)
    return answer[0]
