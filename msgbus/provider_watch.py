"""One daemon thread that re-checks, once a second, the telemetry hooks still waiting for an
OpenTelemetry provider that records.

A process may install its SDK after a bus was connected (global providers are set once, at
any time). Instead of every publish and handler call reading the clock to decide whether to
look again, :class:`msgbus.telemetry.Telemetry` registers here while it waits, and the hot
path reads one attribute. The thread starts with the first registration and ends when
nothing is left to watch; it holds the hooks weakly, so a forgotten bus is not kept alive.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Protocol

__all__ = ["Refreshable", "watch"]

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 1.0
"""How often a waiting hook looks again for a configured provider."""


class Refreshable(Protocol):
    """What :func:`watch` calls: ``refresh()`` looks again and returns True while it still
    waits for something (False: done, stop watching it)."""

    def refresh(self) -> bool: ...


_lock = threading.Lock()
_waiting: weakref.WeakSet[Refreshable] = weakref.WeakSet()
_thread: threading.Thread | None = None
_tick = threading.Event()  # never set: its wait() is the interval, interruptible by nothing


def watch(hook: Refreshable) -> None:
    """Call ``hook.refresh()`` every :data:`INTERVAL_SECONDS` until it returns False (or
    the hook is garbage). Thread-safe."""
    global _thread
    with _lock:
        _waiting.add(hook)
        if _thread is None:
            _thread = threading.Thread(target=_run, name="msgbus-provider-watch", daemon=True)
            _thread.start()


def _run() -> None:
    global _thread
    while True:
        _tick.wait(INTERVAL_SECONDS)
        with _lock:
            hooks = list(_waiting)
            if not hooks:
                _thread = None
                return
        for hook in hooks:
            try:
                still_waiting = hook.refresh()
            except Exception:  # a broken provider must not stop the others: log once, drop
                log.exception("msgbus: looking for an OpenTelemetry provider failed")
                still_waiting = False
            if not still_waiting:
                with _lock:
                    _waiting.discard(hook)
