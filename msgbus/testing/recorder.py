"""A handler that records what it receives, with bounded waits (no sleeps) for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from msgbus.backend import Delivery, Subscription
from msgbus.message import Message

__all__ = ["Recorder", "drain", "wait_until"]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` every 10 ms until it is truthy; raise ``AssertionError`` on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(0.01)


def drain(
    sub: Subscription, count: int, timeout: float = 30.0, *, ack: bool = True
) -> list[Delivery]:
    """Receive ``count`` deliveries from ``sub`` (acking each unless ``ack=False``).

    Raises ``AssertionError`` naming how many arrived if they do not all arrive in time.
    """
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(out)} of {count} deliveries arrived in {timeout:.1f}s"
        for delivery in sub.receive(count - len(out), min(remaining, 1.0)):
            if ack:
                delivery.ack()
            out.append(delivery)
    return out


class Recorder:
    """Callable handler that stores every message; optionally runs ``action`` first.

    Thread-safe. ``wait_for(n)`` blocks until at least ``n`` messages were recorded (it is
    woken by each arrival, not by polling) and raises ``AssertionError`` after ``timeout``.
    ``action(msg)`` may raise to make the handler fail; failed calls are counted in
    ``attempts`` but not recorded in ``messages``.
    """

    def __init__(self, action: Callable[[Message], Any] | None = None) -> None:
        self.messages: list[Message] = []
        self.attempts: list[Message] = []
        self.action = action
        self._cond = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._cond:
            self.attempts.append(message)
            self._cond.notify_all()
        if self.action is not None:
            self.action(message)
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Message]:
        """Return the messages once at least ``count`` arrived; ``AssertionError`` on timeout."""
        return self._wait(lambda: len(self.messages) >= count, timeout, count, "messages")

    def wait_for_attempts(self, count: int, timeout: float = 30.0) -> list[Message]:
        """Like :meth:`wait_for`, counting handler calls (failed ones included)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.attempts) >= count, timeout)
            if not ok:
                raise AssertionError(
                    f"expected {count} handler calls within {timeout:.1f}s, got "
                    f"{len(self.attempts)}"
                )
            return list(self.attempts)

    def _wait(self, predicate: Callable[[], bool], timeout: float, count: int, what: str) -> Any:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(
                    f"expected {count} {what} within {timeout:.1f}s, got {len(self.messages)}"
                )
            return list(self.messages)

    @property
    def payloads(self) -> list[Any]:
        """The payloads recorded so far, in arrival order."""
        with self._cond:
            return [m.payload for m in self.messages]
