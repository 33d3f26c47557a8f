"""The outage policy of a backend that reconnects on its own: one rule for every backend.

When a connection is lost the backend reconnects in the background, forever until it is
closed, waiting :class:`Backoff` delays between rounds (0.1 s doubling to 2 s). While it is
down, :meth:`Outage.problem` says why (``Bus.health()`` reports ``reconnecting``). Once it
has been down for longer than ``reconnect_timeout`` seconds the outage is *beyond recovery*:
queued and new publishes fail with :class:`~msgbus.BrokerUnavailable` and ``receive``
raises it (:meth:`Outage.check`), until a connection is up again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from msgbus.errors import BrokerUnavailable

__all__ = ["Backoff", "Outage"]


class Backoff:
    """Delays between reconnection rounds: ``first`` doubling up to ``maximum`` seconds."""

    __slots__ = ("_next", "first", "maximum")

    def __init__(self, first: float = 0.1, maximum: float = 2.0) -> None:
        self.first = first
        self.maximum = maximum
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the following one is twice as long (up to ``maximum``)."""
        delay = self._next
        self._next = min(self.maximum, delay * 2)
        return delay

    def reset(self) -> None:
        """Start again from ``first`` (after a successful connection)."""
        self._next = self.first


class Outage:
    """Whether (and since when, and why) a backend's connection is down. Thread-safe.

    ``where`` names the broker in messages (``"RabbitMQ at 127.0.0.1:5672"``; never a
    password); ``describe`` turns a driver error into text for them.
    """

    def __init__(
        self,
        where: str,
        reconnect_timeout: float,
        *,
        describe: Callable[[BaseException], str] = str,
    ) -> None:
        self.where = where
        self.reconnect_timeout = reconnect_timeout
        self._describe = describe
        self._lock = threading.Lock()
        self.down_since: float | None = None
        """``time.monotonic()`` when the connection was lost; None while it is up."""
        self.gave_up = False
        """True once the outage went beyond ``reconnect_timeout`` (until the next :meth:`up`)."""
        self.last_error: BaseException | None = None
        """The error of the loss or of the latest failed reconnection attempt."""

    def down(self, error: BaseException | None = None) -> bool:
        """The connection was lost (or an attempt failed); True when this starts the outage."""
        with self._lock:
            if error is not None:
                self.last_error = error
            if self.down_since is not None:
                return False
            self.down_since = time.monotonic()
            return True

    def up(self) -> None:
        """A connection is up again: the outage is over."""
        with self._lock:
            self.down_since = None
            self.gave_up = False
            self.last_error = None

    def beyond_recovery(self) -> bool:
        """True while the connection has been down for longer than ``reconnect_timeout``."""
        down_since = self.down_since
        return down_since is not None and time.monotonic() - down_since > self.reconnect_timeout

    def give_up_now(self) -> bool:
        """True exactly once per outage: when it has just gone beyond recovery (then
        :attr:`gave_up` is set and the caller fails what it queued)."""
        with self._lock:
            if self.gave_up or not self.beyond_recovery():
                return False
            self.gave_up = True
            return True

    def _cause(self) -> str:
        error = self.last_error
        return f": {self._describe(error)}" if error is not None else ""

    def unavailable(self) -> BrokerUnavailable:
        """The error reported once the outage is beyond recovery."""
        return BrokerUnavailable(
            f"no connection to {self.where} for more than {self.reconnect_timeout:g}s"
            f"{self._cause()}"
        )

    def problem(self) -> BrokerUnavailable | None:
        """While the connection is down (reconnecting): why; else None. Cheap."""
        if self.down_since is None:
            return None
        return BrokerUnavailable(f"lost the connection to {self.where}{self._cause()}")

    def check(self) -> None:
        """Raise :meth:`unavailable` when beyond recovery (a ``DeliveryBuffer.take`` check)."""
        if self.beyond_recovery():
            raise self.unavailable()
