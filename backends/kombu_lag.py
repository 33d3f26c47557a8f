"""kombu consumer lag: a queue's message count, by passive declare on a connection of its own.

``channel.queue_declare(queue, passive=True)`` answers with the queue's message count on
py-amqp (RabbitMQ: ready messages, delivered-but-unacknowledged ones not counted) and on
kombu's virtual transports (Redis, SQLAlchemy, ...: the messages stored for the queue), and
fails when the queue does not exist. The backend's own connection belongs to its I/O thread,
so the queries use a second connection, opened on the first query and kept (re-opened after
an error); each query runs on a fresh channel, closed afterwards, because a failed passive
declare closes its channel.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["QueueDepth"]

log = logging.getLogger("msgbus.kombu")


class QueueDepth:
    """Queue depths through a lazily opened kombu connection from ``new_connection``.

    Thread-safe (one query at a time); :meth:`close` releases the connection.
    """

    def __init__(self, new_connection: Callable[[], Any]) -> None:
        self._new_connection = new_connection
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False

    def read(self, queue: str) -> int | None:
        """Messages in ``queue``, or None (no such queue, broker unreachable)."""
        with self._lock:
            if self._closed:
                return None
            try:
                if self._conn is None:
                    conn = self._new_connection()
                    conn.connect()
                    self._conn = conn
                channel = self._conn.channel()
                try:
                    return int(channel.queue_declare(queue=queue, passive=True).message_count)
                finally:
                    with contextlib.suppress(Exception):  # closed by the broker (no queue)
                        channel.close()
            except Exception as exc:
                log.debug("kombu: queue depth of %r: %s: %s", queue, type(exc).__name__, exc)
                self._reset()
                return None

    def close(self) -> None:
        """Release the connection; later reads return None. Idempotent."""
        with self._lock:
            self._closed = True
            self._reset()

    def _reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.release()
            except Exception as exc:
                log.debug("kombu: releasing the lag connection failed: %s", exc)
