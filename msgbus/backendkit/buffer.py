"""DeliveryBuffer: what a driver thread received and ``receive`` has not handed out yet."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from msgbus.backend import Delivery

__all__ = ["DeliveryBuffer"]


class DeliveryBuffer:
    r"""Deliveries a driver thread received that ``receive`` has not handed out yet.

    The receive side of a subscription whose broker client delivers on its own thread
    (an I/O loop, a STOMP listener): that thread ``put``\ s, the consuming thread ``take``\ s.

    Contract:

    - Like :class:`threading.Condition`, every method must be called with :attr:`lock`
      held (``with buffer: ...``); ``take`` releases it while it waits. Pass the
      subscription's own lock when other state it guards (a connection generation, queued
      settlements, a closed flag) must change in the same critical section as the buffer.
      ``len()`` and :attr:`closed` may be read without the lock (a snapshot).
    - ``put`` appends, ``put_front`` prepends (a delivery handed back to be received
      again first; ``put_back`` does it with a redelivered copy); each wakes one waiting
      ``take``, and only when one waits. A closed buffer drops what is put.
    - ``take`` hands out what is buffered, oldest first, or waits for it; see its docstring.
    - ``wake`` wakes every waiting ``take`` so it runs its ``check`` again (its caller
      waits for something besides deliveries, e.g. its turn to poll the driver itself).
    - ``clear`` drops what is buffered (the connection that delivered it is gone) and wakes
      every waiting ``take`` so it runs its ``check`` again; ``close`` does the same and
      makes every later ``take`` return ``[]`` at once.
    """

    __slots__ = ("_closed", "_items", "_ready", "_waiting", "lock")

    #: the longest a ``take`` waits before it runs its ``check`` again (seconds)
    recheck_interval: ClassVar[float] = 1.0

    def __init__(self, lock: threading.Lock | None = None) -> None:
        self.lock = lock if lock is not None else threading.Lock()
        self._ready = threading.Condition(self.lock)
        self._items: deque[Delivery] = deque()
        self._waiting = 0
        self._closed = False

    def __enter__(self) -> DeliveryBuffer:
        self.lock.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def put(self, delivery: Delivery) -> None:
        """Append ``delivery`` (dropped if closed) and wake a waiting ``take``."""
        if self._closed:
            return
        self._items.append(delivery)
        if self._waiting:
            self._ready.notify()

    def put_front(self, delivery: Delivery) -> None:
        """Prepend ``delivery``, to be taken before the others (dropped if closed)."""
        if self._closed:
            return
        self._items.appendleft(delivery)
        if self._waiting:
            self._ready.notify()

    def put_back(self, delivery: Delivery, settle: Callable[[Delivery, bool, bool], None]) -> None:
        """Prepend a copy of ``delivery`` marked redelivered and settled through ``settle``
        (same token): how a backend hands a ``nack(requeue=True)`` back locally."""
        from msgbus.backend import Delivery

        self.put_front(
            Delivery(
                delivery.topic,
                delivery.body,
                delivery.headers,
                delivery.key,
                settle,
                redelivered=True,
                native_id=delivery.native_id,
                token=delivery.token,
            )
        )

    def take(
        self, max_messages: int, timeout: float, check: Callable[[], object] | None = None
    ) -> list[Delivery]:
        """Remove and return up to ``max_messages`` deliveries, waiting up to ``timeout`` s.

        Returns at once what is buffered; ``[]`` when closed (also when closed while
        waiting) or when ``timeout`` passed with nothing buffered. While the buffer is empty
        it calls ``check()`` before each wait and waits at most :attr:`recheck_interval` at a
        time, so ``check`` can end the wait by raising (e.g. ``BrokerUnavailable`` once the
        connection is lost beyond recovery); the exception propagates.
        """
        items = self._items
        deadline: float | None = None
        while True:
            if self._closed:
                return []
            if items:
                if max_messages >= len(items):
                    out = list(items)
                    items.clear()
                    return out
                return [items.popleft() for _ in range(max_messages)]
            if check is not None:
                check()
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            remaining = deadline - now
            if remaining <= 0:
                return []
            self._waiting += 1
            try:
                self._ready.wait(min(remaining, self.recheck_interval))
            finally:
                self._waiting -= 1

    def wake(self) -> None:
        """Wake every waiting ``take`` so that it runs its ``check`` again (something it
        waits for besides deliveries changed); what is buffered stays."""
        if self._waiting:
            self._ready.notify_all()

    def clear(self) -> list[Delivery]:
        """Drop and return what is buffered; wake every waiting ``take``."""
        out = list(self._items)
        self._items.clear()
        self._ready.notify_all()
        return out

    def close(self) -> list[Delivery]:
        """Like :meth:`clear`, and from now on ``take`` returns ``[]``. Idempotent."""
        self._closed = True
        return self.clear()
