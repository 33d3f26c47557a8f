"""Consumer lag for the ``msgbus.consumer.lag`` gauge: read from the backend, cached.

A backend that can tell (``Backend.reports_consumer_lag``) answers
``Backend.consumer_lag(topic, group)`` with a broker round trip (a passive queue declare, an
offsets request). :class:`LagReader` makes sure a metrics scrape cannot turn that into load
on the broker: each (topic, group) is asked at most once per ``interval`` seconds, whoever
collects and however often; in between, and while another thread is asking, the last value
is returned. A read that fails gives None (the gauge then has no point for that group) and
never raises into the metrics pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from msgbus.backend import Backend

__all__ = ["LAG_INTERVAL", "LagReader"]

log = logging.getLogger("msgbus.lag")

LAG_INTERVAL = 5.0
"""Default seconds between two reads of one group's lag from the broker."""


class LagReader:
    """Cached, rate-limited ``backend.consumer_lag`` (thread-safe).

    ``interval`` (default :data:`LAG_INTERVAL`) is the least time between two broker reads of
    one (topic, group); ``clock`` is for tests.
    """

    def __init__(
        self,
        backend: Backend,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.interval = LAG_INTERVAL if interval is None else interval
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, int | None]] = {}
        self._reading: set[tuple[str, str]] = set()

    def read(self, topic: str, group: str) -> int | None:
        """The group's lag: fresh if the last read is ``interval`` old, else the cached one."""
        target = (topic, group)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(target)
            if target in self._reading or (cached is not None and now - cached[0] < self.interval):
                return cached[1] if cached is not None else None
            self._reading.add(target)
        value: int | None = None
        try:
            value = self.backend.consumer_lag(topic, group)
        except Exception as exc:  # a metrics scrape must never fail on a broker error
            log.debug("consumer lag of %s[%s]: %s: %s", topic, group, type(exc).__name__, exc)
        finally:
            with self._lock:
                self._reading.discard(target)
                self._cache[target] = (self._clock(), value)
        return value

    def readings(self, targets: Iterable[tuple[str, str]]) -> list[tuple[str, str, int]]:
        """``(topic, group, lag)`` for each target whose lag is known."""
        out = []
        for topic, group in targets:
            value = self.read(topic, group)
            if value is not None:
                out.append((topic, group, value))
        return out
