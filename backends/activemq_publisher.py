"""The publishing side of the ActiveMQ backend: SENDs with pipelined receipts.

:class:`Publisher` owns the publishing :class:`~msgbus.backends.activemq_link.Link` and the
publish window (:mod:`msgbus.backendkit.window`): each SEND carries a receipt, each RECEIPT
resolves its future, an ERROR fails the one it names (or every unconfirmed one), and what
was unconfirmed when a connection was lost is sent again on the next.
"""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

import stomp
import stomp.exception

from msgbus.backendkit import Outgoing, PendingFuture, PublishWindow
from msgbus.backends.activemq_link import Link, LinkOwner
from msgbus.errors import BrokerUnavailable, PublishError

if TYPE_CHECKING:
    from msgbus.backends.activemq import ActiveMQBackend

__all__ = ["PendingSend", "Publisher"]

log = logging.getLogger("msgbus.activemq")


class PendingSend(Outgoing):
    """One publish on its way: queued, then sent until its RECEIPT."""

    __slots__ = ("body", "destination", "headers")

    def __init__(
        self, future: Future[None], destination: str, body: bytes, headers: dict[str, str]
    ) -> None:
        super().__init__(future)
        self.destination = destination
        self.body = body
        self.headers = headers


class Publisher(LinkOwner):
    """The publishing connection: pipelined receipts through the backend's publish window
    (:mod:`msgbus.backendkit.window`). Thread-safe.

    Callers send what the window queued themselves, under ``_send_lock`` (stomp.py writes
    from any thread); the receiver thread confirms receipts under ``_table_lock``, which
    guards the window's unconfirmed table and is never held while waiting.
    """

    def __init__(self, backend: ActiveMQBackend) -> None:
        self.backend = backend
        self.link = Link(backend, self, "publish")
        self.window: PublishWindow[PendingSend] = PublishWindow(
            "ActiveMQ", backend.options.max_in_flight, self.link.outage
        )
        self._send_lock = threading.Lock()
        self._table_lock = threading.Lock()
        self._conn: stomp.Connection12 | None = None
        self._ids = itertools.count(1)
        self._prefix = f"p{id(self):x}-"

    def on_up(self, conn: stomp.Connection12, generation: int) -> None:
        with self._send_lock:
            self._requeue_in_flight("reconnected")
            resent = self._send_queued(conn)
            if resent:
                log.warning("ActiveMQ: sent %d queued or unconfirmed message(s)", resent)
            self._conn = conn

    def on_down(self, generation: int) -> None:
        with self._send_lock:
            self._conn = None
            self._requeue_in_flight("the connection was lost")

    def _requeue_in_flight(self, reason: str) -> None:
        with self._table_lock:
            self.window.connection_lost(reason)

    def _send_queued(self, conn: stomp.Connection12) -> int:
        """Under ``_send_lock``: send what the window queued, oldest first."""
        sent = 0
        for entry in self.window.queued():
            receipt = self._prefix + str(next(self._ids))
            with self._table_lock:
                self.window.record(receipt, entry)
            try:
                conn.send(
                    entry.destination, entry.body, headers={**entry.headers, "receipt": receipt}
                )
            except (stomp.exception.StompException, OSError) as exc:
                # the reader notices the broken connection; on_down queues it again
                log.debug("ActiveMQ: send failed (%s); will resend after reconnecting", exc)
            sent += 1
        return sent

    def on_give_up(self, error: BrokerUnavailable) -> None:
        self.window.fail_queued(error)

    def on_receipt(self, generation: int, receipt_id: str) -> None:
        with self._table_lock:
            done = self.window.confirmed(receipt_id)
        self.window.finish(done, None)

    def on_error(self, generation: int, receipt_id: str | None, text: str) -> bool:
        if receipt_id:
            with self._table_lock:
                done = self.window.confirmed(receipt_id)
            if done:
                self.window.finish(done, PublishError(f"ActiveMQ refused the message: {text}"))
                return False
        with self._table_lock:
            lost = self.window.drop_in_flight()
        error = PublishError(f"ActiveMQ reported an error, message state unknown: {text}")
        self.window.finish(lost, error)
        return True

    def fail_all(self, error: Exception) -> None:
        """Fail every queued and unconfirmed publish (at close)."""
        with self._table_lock:
            lost = self.window.drop_in_flight()
        self.window.fail_all(error, unconfirmed=False)
        self.window.finish(lost, error)

    def publish(self, destination: str, body: bytes, headers: dict[str, str]) -> Future[None]:
        """Admit the message into the window and send what is queued (while connected)."""
        future: Future[None] = PendingFuture()
        if not self.window.admit(PendingSend(future, destination, body, headers)):
            return future
        with self._send_lock:
            conn = self._conn
            if conn is not None:
                self._send_queued(conn)
        return future

    def flush(self, timeout: float | None) -> None:
        """Wait until every publish so far is confirmed or failed; TimeoutError if not."""
        self.window.flush(timeout)
