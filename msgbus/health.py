"""Health of a bus and of each subscription, for liveness/readiness probes.

``Bus.health()`` returns a :class:`BusHealth`; ``health.ready`` is what a Kubernetes-style
readiness probe should check, ``health.as_dict()`` what it may return as JSON. States:

- ``connected``: receiving (or able to publish) normally.
- ``reconnecting``: the backend lost its broker connection and is reconnecting (backends that
  can tell: ``Backend.connection_problem()``).
- ``failed``: the last receive raised :class:`~msgbus.BrokerUnavailable` (the backend gave up
  waiting for the broker; the consumer keeps trying and turns ``connected`` on success).
- ``starting`` (subscribed, not started yet) and ``stopped`` (the bus is closing/closed).

The bus is ready when it is started or has no subscriptions, its own connection is not
down, and every subscription is ``connected``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BusHealth", "HealthRecord", "SubscriptionHealth"]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]


class HealthRecord:
    """What one consumer saw lately; written by its threads, read by ``Bus.health()``.

    Plain attribute writes (atomic in CPython), so recording takes no lock.
    """

    __slots__ = (
        "failing",
        "last_error",
        "last_error_at",
        "last_handler_error",
        "last_handler_error_at",
        "last_message_at",
    )

    def __init__(self) -> None:
        self.failing = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_handler_error: str | None = None
        self.last_handler_error_at: float | None = None
        self.last_message_at: float | None = None

    def receive_ok(self, batch: list[Any]) -> None:
        """A receive returned (``batch`` may be empty)."""
        if batch:
            self.last_message_at = time.time()
        if self.failing:
            self.failing = False

    def receive_failed(self, error: BaseException) -> None:
        """A receive raised ``BrokerUnavailable``."""
        self.failing = True
        self.connection_error(error)

    def connection_error(self, error: BaseException) -> None:
        """Remember a broker/connection error and when it was seen."""
        self.last_error = _describe(error)
        self.last_error_at = time.time()

    def handler_failed(self, error: BaseException) -> None:
        """Remember a handler exception and when it was raised."""
        self.last_handler_error = _describe(error)
        self.last_handler_error_at = time.time()


@dataclass(frozen=True)
class SubscriptionHealth:
    """One subscription's health (times are seconds since the epoch, None when never)."""

    topic: str
    group: str | None
    state: str
    last_error: str | None
    last_error_at: float | None
    last_handler_error: str | None
    last_handler_error_at: float | None
    in_flight: int
    buffered: int
    last_message_at: float | None

    @property
    def ready(self) -> bool:
        """True when the subscription is ``connected``."""
        return self.state == "connected"


@dataclass(frozen=True)
class BusHealth:
    """The bus's health: its own connection state and every subscription's."""

    state: str
    last_error: str | None
    last_error_at: float | None
    subscriptions: tuple[SubscriptionHealth, ...]
    ready: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for a probe's response body); holds no credentials."""
        out = asdict(self)
        for sub, health in zip(out["subscriptions"], self.subscriptions, strict=True):
            sub["ready"] = health.ready
        return out


def bus_health(
    *,
    closed: bool,
    started: bool,
    problem: BaseException | None,
    subscriptions: list[SubscriptionHealth],
    pending: int,
    record: HealthRecord,
) -> BusHealth:
    """Combine the backend's connection state and the subscriptions into a :class:`BusHealth`.

    ``pending`` counts subscriptions registered but not started; ``record`` keeps the bus's
    last connection error across calls.
    """
    if problem is not None:
        if record.last_error is None or not record.failing:
            record.connection_error(problem)
            record.failing = True
    elif record.failing:
        record.failing = False
    state = "stopped" if closed else "reconnecting" if problem is not None else "connected"
    ready = (
        state == "connected"
        and (started or pending == 0)
        and all(sub.ready for sub in subscriptions)
    )
    return BusHealth(state, record.last_error, record.last_error_at, tuple(subscriptions), ready)


def subscription_health(
    topic: str,
    group: str | None,
    *,
    record: HealthRecord,
    stopped: bool,
    problem: BaseException | None,
    in_flight: int,
    buffered: int,
) -> SubscriptionHealth:
    """One subscription's snapshot from its :class:`HealthRecord` and the backend's state."""
    if stopped:
        state = "stopped"
    elif record.failing:
        state = "failed"
    elif problem is not None:
        state = "reconnecting"
        if record.last_error_at is None or record.last_error != _describe(problem):
            record.connection_error(problem)
    else:
        state = "connected"
    return SubscriptionHealth(
        topic,
        group,
        state,
        record.last_error,
        record.last_error_at,
        record.last_handler_error,
        record.last_handler_error_at,
        in_flight,
        buffered,
        record.last_message_at,
    )
