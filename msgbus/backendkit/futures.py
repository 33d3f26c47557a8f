"""Future helpers for backends: cheap publish futures, settling from I/O threads."""

from __future__ import annotations

from concurrent.futures import Future

from msgbus.futures import PendingFuture, ResolvedFuture, settle_future

__all__ = ["PendingFuture", "ResolvedFuture", "failed_future", "settle_future"]


def failed_future(error: BaseException) -> Future[None]:
    """A future that has already failed with ``error`` (cheap: no Condition)."""
    return ResolvedFuture(exception=error)
