"""The publish window: messages accepted by ``publish`` and not yet confirmed by the broker.

One behaviour for every backend that confirms publishes asynchronously:

- **Accepting.** ``publish`` admits a message into the window and returns its future. While
  ``max_in_flight`` messages are pending (queued or unconfirmed), ``publish`` blocks until
  one settles. It waits at most ``reconnect_timeout`` seconds: then, or at once when the
  outage is already beyond recovery, the future fails with
  :class:`~msgbus.BrokerUnavailable` (nothing is sent). A backend closed meanwhile raises
  :class:`~msgbus.BusClosed`. The backend's own I/O thread never blocks.
- **Confirming.** Sent messages are recorded under a tag (a delivery tag, a receipt id); the
  broker's confirm for a tag (or for every tag up to it: ``multiple``) settles the futures.
- **Outage.** When the connection is lost, unconfirmed messages go back to the front of the
  queue, in order, to be sent again on the next connection (at least once: one may be
  stored twice, with the same ``msgbus-id``). A message lost with :data:`MAX_LOSSES`
  connections in a row fails with :class:`~msgbus.PublishError` instead (a message the
  broker drops the connection for). Once the outage is beyond ``reconnect_timeout``, queued
  and new messages fail with ``BrokerUnavailable`` until a connection is up again.
- **Flush and close.** ``flush`` waits until nothing is pending; ``close`` makes later
  ``publish`` calls raise ``BusClosed`` and ``fail_all`` settles what is left.

Threads: ``admit``, ``flush``, ``close``, ``finish``, ``queued``/``requeue``, ``give_up``,
``fail_queued`` and ``fail_all`` are thread-safe. ``record``, ``confirmed``, ``in_flight`` and
``connection_lost`` touch the unconfirmed table, which the backend serialises (its I/O
thread, or a lock of its own).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

from msgbus.backendkit.outage import Outage
from msgbus.errors import BrokerUnavailable, BusClosed, PublishError
from msgbus.futures import settle_future

__all__ = ["MAX_LOSSES", "Outgoing", "PublishWindow"]

MAX_LOSSES = 3
"""A message lost with this many connections in a row fails with ``PublishError``."""


class Outgoing:
    """One message on its way; backends subclass it with what they need to send it."""

    __slots__ = ("future", "losses")

    def __init__(self, future: Future[None]) -> None:
        self.future = future
        self.losses = 0


E = TypeVar("E", bound=Outgoing)


class PublishWindow(Generic[E]):
    """The outbox and the unconfirmed table of one publishing connection (see the module
    docstring). ``name`` names the broker in messages (``"RabbitMQ"``)."""

    def __init__(self, name: str, max_in_flight: int, outage: Outage) -> None:
        self.name = name
        self.max_in_flight = max_in_flight
        self.outage = outage
        self.lock = threading.Lock()
        self._changed = threading.Condition(self.lock)
        self._waiting = 0
        self._pending = 0
        self._closed = False
        self._queue: deque[E] = deque()
        self._unconfirmed: dict[Hashable, E] = {}
        self._order: deque[Hashable] = deque()

    # ---------------------------------------------------------------- any thread

    @property
    def pending(self) -> int:
        """Messages admitted and not settled (snapshot)."""
        return self._pending

    @property
    def has_queued(self) -> bool:
        """True when messages wait to be sent (snapshot)."""
        return bool(self._queue)

    def admit(self, entry: E, *, queue: bool = True, block: bool = True) -> bool:
        """Take ``entry`` into the window (see the module docstring); False when its future
        was failed instead. ``queue``: append it to the queue to be sent (else the caller
        sends it and :meth:`record`\\ s it). ``block=False`` (the I/O thread) never waits."""
        with self.lock:
            error = None
            if self._pending >= self.max_in_flight and block and not self._closed:
                error = self._wait_for_room()
            if self._closed:
                raise BusClosed(f"the {self.name} backend is closed")
            if error is None and self.outage.gave_up:
                error = self.outage.unavailable()
            if error is None:
                self._pending += 1
                if queue:
                    self._queue.append(entry)
                return True
        settle_future(entry.future, error)
        return False

    def _wait_for_room(self) -> BrokerUnavailable | None:
        timeout = self.outage.reconnect_timeout
        deadline = time.monotonic() + timeout
        self._waiting += 1
        try:
            while self._pending >= self.max_in_flight and not self._closed:
                if self.outage.gave_up:
                    return self.outage.unavailable()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return BrokerUnavailable(
                        f"{self.name} confirmed none of {self._pending} pending publishes "
                        f"for {timeout:g}s (max_in_flight={self.max_in_flight}, "
                        "reconnect_timeout)"
                    )
                self._changed.wait(min(remaining, 1.0))
        finally:
            self._waiting -= 1
        return None

    def flush(self, timeout: float | None) -> None:
        """Wait until nothing is pending; ``TimeoutError`` when ``timeout`` s pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            self._waiting += 1
            try:
                while self._pending > 0:
                    if deadline is None:
                        self._changed.wait(1.0)
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"{self._pending} publish(es) not confirmed by {self.name} in time"
                        )
                    self._changed.wait(min(remaining, 1.0))
            finally:
                self._waiting -= 1

    def close(self) -> None:
        """From now on :meth:`admit` raises ``BusClosed``; wakes blocked publishers."""
        with self.lock:
            self._closed = True
            self._changed.notify_all()

    def close_and_flush(self, timeout: float | None, log: logging.Logger) -> None:
        """:meth:`close`, then wait up to ``timeout`` s (None: 30 s) for what is pending;
        logs an error when something is still unconfirmed then (the caller fails it)."""
        self.close()
        try:
            self.flush(timeout if timeout is not None else 30.0)
        except TimeoutError:
            log.error("%s: closing with %d unconfirmed publish(es)", self.name, self._pending)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def finish(self, entries: Iterable[E], error: BaseException | None) -> None:
        """Settle the futures of ``entries`` (None: success) and count them as done."""
        count = 0
        for entry in entries:
            settle_future(entry.future, error)
            count += 1
        if count:
            with self.lock:
                self._pending -= count
                if self._waiting:
                    self._changed.notify_all()

    def queued(self) -> deque[E]:
        """Remove and return every queued message, oldest first (to send them)."""
        with self.lock:
            batch, self._queue = self._queue, deque()
        return batch

    def requeue(self, entries: Iterable[E]) -> None:
        """Put ``entries`` (not sent after all) back at the front of the queue, in order."""
        with self.lock:
            self._queue.extendleft(reversed(list(entries)))

    def give_up(self) -> bool:
        """When the outage has just gone beyond recovery, fail what is queued with
        ``BrokerUnavailable`` and return True. Call it between reconnection attempts."""
        if not self.outage.give_up_now():
            return False
        self.fail_queued(self.outage.unavailable())
        return True

    def fail_queued(self, error: BaseException) -> None:
        """Fail what is queued (not sent) with ``error``; wakes blocked publishers."""
        with self.lock:
            entries = list(self._queue)
            self._queue.clear()
            self._changed.notify_all()
        self.finish(entries, error)

    def fail_all(self, error: BaseException, *, unconfirmed: bool = True) -> None:
        """Fail what is queued (and, with ``unconfirmed``, what was sent): at close."""
        with self.lock:
            entries = list(self._queue)
            self._queue.clear()
        if unconfirmed:
            entries += self.drop_in_flight()
        self.finish(entries, error)

    # ---------------------------------------------------------------- serialised by the backend

    def record(self, tag: Hashable, entry: E) -> None:
        """``entry`` was sent (or is about to be) and will be confirmed under ``tag``."""
        self._unconfirmed[tag] = entry
        self._order.append(tag)

    def confirmed(self, tag: Hashable, *, multiple: bool = False) -> list[E]:
        """Remove and return the messages the broker confirmed with ``tag`` (``multiple``:
        every tag up to it, for ordered integer tags). The caller :meth:`finish`\\ es them."""
        unconfirmed, order = self._unconfirmed, self._order
        done: list[E] = []
        if multiple:
            while order and order[0] <= tag:  # type: ignore[operator]
                entry = unconfirmed.pop(order.popleft(), None)
                if entry is not None:
                    done.append(entry)
            return done
        entry = unconfirmed.pop(tag, None)
        if entry is not None:
            done.append(entry)
        while order and order[0] not in unconfirmed:
            order.popleft()
        return done

    @property
    def has_in_flight(self) -> bool:
        """True while sent messages wait for their confirm (snapshot)."""
        return bool(self._unconfirmed)

    def in_flight(self) -> Iterator[E]:
        """The unconfirmed messages, oldest first."""
        return iter(list(self._unconfirmed.values()))

    def drop_in_flight(self) -> list[E]:
        """Remove and return every unconfirmed message, oldest first."""
        entries = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._order.clear()
        return entries

    def connection_lost(self, reason: str) -> None:
        """The connection (or channel) that sent the unconfirmed messages is gone: queue them
        again at the front, failing those lost :data:`MAX_LOSSES` times with PublishError."""
        again: list[E] = []
        failed: list[E] = []
        for entry in self.drop_in_flight():
            entry.losses += 1
            (failed if entry.losses >= MAX_LOSSES else again).append(entry)
        if again:
            self.requeue(again)
        if failed:
            self.finish(
                failed,
                PublishError(
                    f"{self.name} lost the message with {MAX_LOSSES} connections in a row "
                    f"(last: {reason})"
                ),
            )
