"""ActiveMQ queue browsing over STOMP: read a group's queue without consuming it.

ActiveMQ Classic turns a STOMP ``SUBSCRIBE`` with the header ``browser:true`` into a JMS
``QueueBrowser``: it sends a snapshot of the queue's messages, each left in the queue, then
one ``MESSAGE`` frame with the header ``browser:end`` and no body. ``msgbus.dlq`` reads the
dead-letter store this way (``list``, ``show``), so looking does not mark the messages
redelivered. Deliveries of a browser must not be settled: ``ack``/``nack`` do nothing.
"""

from __future__ import annotations

from typing import Any

import stomp

from msgbus.backend import Delivery
from msgbus.backends.activemq_frames import MARKER_HEADER
from msgbus.backends.activemq_subscription import ActiveMQSubscription

__all__ = ["QueueBrowser"]


class _End(Exception):
    """The browser's snapshot ended (internal)."""


def _ignore(_delivery: Delivery, _ack: bool, _requeue: bool) -> None:
    """Browsed messages stay in the queue: nothing to settle."""


class QueueBrowser(ActiveMQSubscription):
    """A browser of ``group``'s queue on ``topic``: ``receive`` hands out the snapshot, then
    returns ``[]`` at once after the broker's end-of-browse frame. Close it when done."""

    def on_up(self, conn: stomp.Connection12, generation: int) -> None:
        self._subscribe_on(
            conn, generation, ack="auto", what="the queue browser", headers={"browser": "true"}
        )

    _ended = False

    def on_message(self, generation: int, frame: Any) -> None:
        headers = frame.headers
        if headers.get("browser") == "end":
            with self._lock:
                if generation == self._generation:
                    self._ended = True  # the snapshot is complete
            return
        if MARKER_HEADER in headers:
            return
        super().on_message(generation, frame)

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """The snapshot's next deliveries; ``[]`` at once when it was all handed out (a
        receive already waiting notices the end within a second)."""
        with self._lock:
            try:
                return self._buffer.take(max_messages, timeout, self._check_end)
            except _End:
                return []

    def _check_end(self) -> None:
        if self._ended:
            raise _End
        self._check_connection()

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        _ignore(delivery, ack, requeue)
