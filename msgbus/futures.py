"""Cheap ``concurrent.futures.Future`` subclasses for backends' publish futures.

``Bus.publish`` returns a :class:`concurrent.futures.Future`. A stock ``Future`` allocates a
``threading.Condition`` (a lock, a deque and six bound methods) when it is created, although
most publish futures are resolved without anyone ever waiting on them. On a fast broker the
backend has thousands of them in flight, and that allocation, together with the garbage
collections the long-lived objects set off, cost more than the driver's own work per message
(measured on Kafka: see docs/kafka.md).

Both classes keep the stock ``Future`` API and work with ``concurrent.futures.wait`` and
``as_completed``, which use the same private attributes (``_condition``, ``_state``,
``_waiters``, ``_done_callbacks``) that they set up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

__all__ = ["PendingFuture", "ResolvedFuture", "settle_future"]

# the state names of concurrent.futures._base (stable since Python 3.2)
_PENDING = "PENDING"
_FINISHED = "FINISHED"

_CREATING = threading.Lock()
"""Guards every PendingFuture's move from "no Condition" to "has a Condition"."""


class PendingFuture(Future):  # type: ignore[type-arg]
    """A pending future whose ``Condition`` is created only when something needs it.

    Waiting (``result``, ``exception``, ``wait``), ``add_done_callback``, ``cancel``,
    ``done``, ``running`` and ``repr`` create it, and from then on the future behaves exactly
    as a stock ``Future``. ``set_result``/``set_exception`` on a future that never had one
    only store the outcome (nobody can be waiting, and no callback can have been added,
    without the Condition). The switch from "none" to "created" happens under one
    module-wide lock, which the resolving thread also takes, so a waiter arriving at the same
    moment either finds the future already finished or is notified through the new Condition.
    """

    def __init__(self) -> None:
        # not Future.__init__: that would allocate the Condition
        self._state = _PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future[Any]], object]] = []
        self._lazy_condition: threading.Condition | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        condition = self._lazy_condition
        if condition is None:
            with _CREATING:
                condition = self._lazy_condition
                if condition is None:
                    condition = self._lazy_condition = threading.Condition()
        return condition

    def set_result(self, result: Any) -> None:
        """Resolve with ``result``; ``InvalidStateError`` if already done or cancelled."""
        with _CREATING:
            if self._lazy_condition is None:
                self._finish_unobserved(result, None)
                return
        super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        """Fail with ``exception``; ``InvalidStateError`` if already done or cancelled."""
        with _CREATING:
            if self._lazy_condition is None:
                self._finish_unobserved(None, exception)
                return
        super().set_exception(exception)

    def settle(self, error: BaseException | None = None) -> None:
        """:func:`settle_future` of this future (resolve with ``None``, or fail with
        ``error``; leave it alone if already done or cancelled), in one call when nothing
        observed it yet: for the thread that resolves thousands of publish futures."""
        with _CREATING:
            if self._lazy_condition is None:
                if self._state == _PENDING:
                    self._exception = error
                    self._state = _FINISHED
                return
        settle_future(self, error)

    def _finish_unobserved(self, result: Any, exception: BaseException | None) -> None:
        # under _CREATING, no Condition yet: every other state change (cancel, running)
        # goes through the Condition, so no waiter and no callback can be installed; the
        # state is PENDING unless this future was resolved before
        if self._state != _PENDING:
            raise InvalidStateError(f"{self._state}: future already resolved")
        self._result = result
        self._exception = exception
        self._state = _FINISHED


def settle_future(future: Future[Any], error: BaseException | None) -> None:
    """Resolve ``future`` with ``None`` (``error`` is None) or fail it with ``error``.

    A future that is already done, or that its owner cancelled, is left as it is: nobody
    waits for a second outcome. For backends resolving futures from their I/O threads.
    """
    try:
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass


class ResolvedFuture(Future):  # type: ignore[type-arg]
    """A future that is already resolved when created (cheap; for in-process backends)."""

    __slots__ = ()

    def __init__(self, result: Any = None, exception: BaseException | None = None) -> None:
        self._result = result
        self._exception = exception
        self._state = _FINISHED
        self._done_callbacks = []
        self._waiters = []
        self._condition = _NO_CONDITION

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        """Call ``fn(self)`` at once (the future is already done)."""
        fn(self)


class _NoCondition:
    """Stand-in for the Condition a resolved future never needs to wait on."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None

    def notify_all(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> bool:
        return True


_NO_CONDITION: Any = _NoCondition()
