"""The consuming side of the ActiveMQ backend: one subscription on its own connection.

A subscription SUBSCRIBEs (with a receipt) on every connection its
:class:`~msgbus.backends.activemq_link.Link` makes, sends its group queue's marker,
buffers MESSAGE frames in a :class:`~msgbus.backendkit.DeliveryBuffer` for the consuming
thread, and ACKs/NACKs from any thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import stomp
import stomp.exception

from msgbus.backend import Delivery, Subscription
from msgbus.backendkit import DeliveryBuffer
from msgbus.backends.activemq_frames import MARKER_HEADER, delivery_headers, group_destination
from msgbus.backends.activemq_link import Link, LinkOwner
from msgbus.errors import BrokerUnavailable

if TYPE_CHECKING:
    from msgbus.backends.activemq import ActiveMQBackend

__all__ = ["ActiveMQSubscription"]

log = logging.getLogger("msgbus.activemq")
_SYNC_IDS = itertools.count()  # ids of the empty transactions of confirm_settled


class ActiveMQSubscription(Subscription, LinkOwner):
    """A member of a group (or a private topic subscription) on its own connection."""

    def __init__(
        self, backend: ActiveMQBackend, topic: str, group: str | None, prefetch: int
    ) -> None:
        self.topic = topic
        self.group = group
        self.backend = backend
        self.destination = group_destination(topic, group)
        self.prefetch = max(1, prefetch)
        self.link = Link(backend, self, f"subscribe {self.destination}")
        self._id = f"s{id(self):x}"
        self._lock = threading.Lock()
        self._buffer = DeliveryBuffer(self._lock)
        self._conn: stomp.Connection12 | None = None
        self._generation = -1
        self._closed = False
        self._waiting_receipt: tuple[str, threading.Event, list[str]] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- link callbacks

    def _subscribe_on(
        self,
        conn: stomp.Connection12,
        generation: int,
        *,
        ack: str,
        what: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Adopt ``conn`` as this generation's connection and SUBSCRIBE on it with a receipt
        (``ack`` mode, the prefetch, extra ``headers``); ``what`` names it in errors."""
        with self._lock:
            self._generation = generation
            self._conn = conn
        self._confirmed(
            conn,
            f"{ack}-{self._id}-{generation}",
            lambda receipt: conn.subscribe(
                self.destination,
                id=self._id,
                ack=ack,
                headers={
                    **(headers or {}),
                    "receipt": receipt,
                    "activemq.prefetchSize": str(self.prefetch),
                },
            ),
            what,
        )

    def on_up(self, conn: stomp.Connection12, generation: int) -> None:
        self._subscribe_on(conn, generation, ack="client-individual", what="the subscription")
        if self.group is not None:
            # ActiveMQ forgets a group queue that never held a message when it crashes (it is
            # only journaled with its first message); a marker makes the queue durable, so
            # messages published after a crash still reach the group.
            self._confirmed(
                conn,
                f"mark-{self._id}-{generation}",
                lambda receipt: conn.send(
                    self.destination,
                    b"",
                    headers={MARKER_HEADER: "1", "persistent": "true", "receipt": receipt},
                ),
                "the group queue marker",
            )

    def _confirmed(
        self, conn: stomp.Connection12, receipt: str, send: Callable[[str], None], what: str
    ) -> None:
        """Send a frame with ``receipt`` and wait for the RECEIPT (BrokerUnavailable if not)."""
        event = threading.Event()
        errors: list[str] = []
        self._waiting_receipt = (receipt, event, errors)
        send(receipt)
        timeout = self.backend.options.connect_timeout
        if not event.wait(timeout):
            raise BrokerUnavailable(
                f"ActiveMQ at {self.backend.where} did not confirm {what} on "
                f"{self.destination} within {timeout:g}s"
            )
        if errors:
            raise BrokerUnavailable(f"ActiveMQ refused {what} on {self.destination}: {errors[0]}")

    def on_down(self, generation: int) -> None:
        with self._lock:
            self._conn = None
            # not yet handed out: the broker redelivers them after we resubscribe
            self._buffer.clear()

    def on_receipt(self, generation: int, receipt_id: str) -> None:
        waiting = self._waiting_receipt
        if waiting is not None and waiting[0] == receipt_id:
            waiting[1].set()

    def on_error(self, generation: int, receipt_id: str | None, text: str) -> bool:
        waiting = self._waiting_receipt
        if waiting is not None and not waiting[1].is_set():
            waiting[2].append(text)
            waiting[1].set()
        return True

    def on_message(self, generation: int, frame: Any) -> None:
        headers = frame.headers
        if MARKER_HEADER in headers:  # see on_up: acknowledged at once, never handed out
            conn = self._conn
            if conn is not None and generation == self._generation:
                with contextlib.suppress(stomp.exception.StompException, OSError):
                    conn.ack(headers.get("ack"))
            return
        user, key = delivery_headers(headers)
        delivery = Delivery(
            self.topic,
            frame.body or b"",
            user,
            key,
            self._settle,
            redelivered=headers.get("redelivered") == "true",
            native_id=headers.get("message-id"),
            token=(generation, headers.get("ack") or headers.get("message-id")),
        )
        with self._lock:
            if generation == self._generation:
                self._buffer.put(delivery)  # dropped once closed

    # ---------------------------------------------------------------- SPI

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries within ``timeout`` s ([] on timeout or close).

        Raises BrokerUnavailable while the connection has been down for longer than
        ``reconnect_timeout`` (it keeps reconnecting in the background).
        """
        with self._lock:
            return self._buffer.take(max_messages, timeout, self._check_connection)

    def _check_connection(self) -> None:
        self.link.outage.check()

    def connection_problem(self) -> BaseException | None:
        """While this subscription's connection is down (reconnecting): why; else None."""
        return self.link.outage.problem()

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        generation, ack_id = delivery.token
        with self._lock:
            if self._closed or generation != self._generation:
                return  # the broker redelivers it anyway
            conn = self._conn
            if not ack and requeue:
                self._buffer.put_back(delivery, self._settle)
                return
        if conn is None:
            return
        try:
            if ack:
                conn.ack(ack_id)  # STOMP 1.2: the ack id alone, no subscription argument
            else:
                conn.nack(ack_id)
        except (stomp.exception.StompException, OSError) as exc:
            log.debug("ActiveMQ: could not settle a delivery (%s); it will be redelivered", exc)

    def confirm_settled(self, timeout: float) -> bool:
        """An empty transaction (BEGIN, ABORT with a receipt) after the ACKs: ActiveMQ
        handles a connection's frames in order, so the RECEIPT comes after the ACKs."""
        with self._lock:
            conn = self._conn
        if conn is None:
            raise BrokerUnavailable(f"ActiveMQ: acks on {self.destination} not confirmed")
        tx = f"sync-{self._id}-{next(_SYNC_IDS)}"
        conn.begin(transaction=tx)
        self._confirmed(
            conn, tx, lambda receipt: conn.abort(tx, headers={"receipt": receipt}), "the acks"
        )
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._buffer.close()
        self.link.close(timeout=2.0)
        self.backend.forget(self)

    def __repr__(self) -> str:
        return f"<ActiveMQ subscription {self.destination} prefetch={self.prefetch}>"
