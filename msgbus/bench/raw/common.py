"""What the raw clients of every broker share: the JSON body and the URL's endpoints."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from msgbus.url import BusURL

__all__ = ["CommitPacer", "PollingReceiver", "dumps", "endpoints"]


def dumps(payload: dict[str, Any]) -> bytes:
    """``payload`` as the JSON body the raw clients send."""
    return json.dumps(payload).encode()


def endpoints(url: str, default_port: int) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of a msgbus-style URL, ``default_port`` where none."""
    parsed = BusURL.parse(url)
    return [(h.host, h.port or default_port) for h in parsed.hosts]


class PollingReceiver:
    """A raw consumer polled on a thread of its own: ``start`` runs ``run`` (which loops until
    ``stopping`` is set and sets ``ready`` once it has partitions), ``close`` stops it and
    calls ``final_commit`` then ``close_consumer`` (errors of the commit ignored)."""

    def __init__(self, name: str, run: Callable[[], None]) -> None:
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=run, name=name, daemon=True)

    def start(self) -> None:
        """Start polling; return once assigned, or after 20 s (a member of a group with
        more members than partitions gets none)."""
        self._thread.start()
        self.ready.wait(20)

    def close(self) -> None:
        """Stop polling, commit what was handled, close the consumer."""
        self.stopping.set()
        self._thread.join(10)
        with contextlib.suppress(Exception):
            self.final_commit()
        self.close_consumer()

    def final_commit(self) -> None:
        """Commit the offsets handled so far (synchronously)."""
        raise NotImplementedError

    def close_consumer(self) -> None:
        """Close the driver's consumer."""
        raise NotImplementedError


class CommitPacer:
    """Paces a raw consumer's asynchronous offset commits: :meth:`due` is true at most once
    per ``interval`` seconds, and only once records were :meth:`handled` since the last
    commit (the Kafka receivers pass the msgbus driver's ``COMMIT_INTERVAL_S``)."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._uncommitted = False
        self._last = time.monotonic()

    def handled(self) -> None:
        """Note that records were handled since the last commit."""
        self._uncommitted = True

    def due(self) -> bool:
        """Whether to commit now; true resets the pacer (the caller then commits)."""
        if not self._uncommitted:
            return False
        now = time.monotonic()
        if now - self._last < self._interval:
            return False
        self._uncommitted = False
        self._last = now
        return True
