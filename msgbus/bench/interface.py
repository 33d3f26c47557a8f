"""The interface between a benchmark process and the clients it drives (msgbus or raw).

:mod:`msgbus.bench.clients` implements it with msgbus, :mod:`msgbus.bench.raw` with each
broker's plain client; both import it from here, so neither imports the other at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Done", "Handler", "Receiver", "Sender"]

Done = Callable[[BaseException | None], None]
"""Completion callback of a send: None when confirmed, else the error. May run on any thread."""

Handler = Callable[[Any], None]
"""Called with each decoded payload; returning acknowledges it. May run on several threads."""


class Sender(Protocol):
    """Publishes payloads; ``send`` is called from one thread."""

    def send(self, topic: str, key: str | None, payload: dict[str, Any], done: Done) -> None:
        """Publish ``payload`` (JSON) to ``topic``; call ``done`` once confirmed or failed."""

    def flush(self, timeout: float) -> None:
        """Wait until every send so far has completed (``TimeoutError`` if not in time)."""

    def close(self) -> None:
        """Release connections (after ``flush``)."""


class Receiver(Protocol):
    """A consumer-group member; ``start`` returns once it is ready to receive."""

    def start(self) -> None:
        """Join the group; messages published afterwards reach it."""

    def close(self) -> None:
        """Stop receiving; unacknowledged messages go back to the broker."""
