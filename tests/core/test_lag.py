"""msgbus.lag.LagReader: consumer lag cached and rate-limited, errors turned into None."""

from __future__ import annotations

import threading
from typing import Any

from msgbus.backends.memory import MemoryBackend
from msgbus.lag import LagReader


class CountingBackend:
    """Stands in for a backend's ``consumer_lag`` (the broker side is tested per backend)."""

    def __init__(self, values: list[Any]) -> None:
        self.values = values
        self.calls: list[tuple[str, str]] = []

    def consumer_lag(self, topic: str, group: str) -> int | None:
        self.calls.append((topic, group))
        value = self.values.pop(0)
        if isinstance(value, BaseException):
            raise value
        return value


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_memory_reports_consumer_lag() -> None:
    assert MemoryBackend.reports_consumer_lag is True  # the conformance lag test runs there


def test_a_group_is_asked_at_most_once_per_interval() -> None:
    backend, clock = CountingBackend([7, 3]), Clock()
    reader = LagReader(backend, interval=5.0, clock=clock)  # type: ignore[arg-type]
    assert [reader.read("t", "g") for _ in range(50)] == [7] * 50
    clock.now += 4.9
    assert reader.read("t", "g") == 7
    clock.now += 0.2
    assert reader.read("t", "g") == 3
    assert backend.calls == [("t", "g"), ("t", "g")]


def test_groups_are_cached_separately_and_failures_read_as_none() -> None:
    backend, clock = CountingBackend([1, RuntimeError("broker down"), 2]), Clock()
    reader = LagReader(backend, interval=1.0, clock=clock)  # type: ignore[arg-type]
    assert reader.read("t", "a") == 1
    clock.now += 0.5
    assert reader.read("t", "b") is None  # the error is not raised into the metrics pipeline
    clock.now += 0.7  # a's interval is over, b's is not
    assert reader.readings([("t", "a"), ("t", "b")]) == [("t", "a", 2)]
    assert backend.calls == [("t", "a"), ("t", "b"), ("t", "a")]


def test_a_scrape_during_a_slow_read_gets_the_cached_value() -> None:
    entered, release = threading.Event(), threading.Event()

    class Slow:
        def consumer_lag(self, topic: str, group: str) -> int:
            entered.set()
            assert release.wait(10)
            return 9

    reader = LagReader(Slow(), interval=0.0)  # type: ignore[arg-type]
    result: list[int | None] = []
    thread = threading.Thread(target=lambda: result.append(reader.read("t", "g")))
    thread.start()
    assert entered.wait(10)
    assert reader.read("t", "g") is None  # nothing cached yet, and no second broker call
    release.set()
    thread.join(10)
    assert result == [9]
