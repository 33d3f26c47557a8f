"""How often and how patiently a failing handler is retried before its message is dead-lettered."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from msgbus.errors import ConfigurationError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The handler is called at most ``max_attempts`` times. Before attempt ``n + 1`` the bus
    waits ``min(max_backoff, backoff * multiplier ** (n - 1))`` seconds, spread by
    ``±jitter`` (a fraction). Waiting never holds a worker thread, and only messages with the
    same key wait behind a retrying one. Raises :class:`ConfigurationError` for values that
    make no sense.
    """

    max_attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ConfigurationError("backoff and max_backoff must not be negative")
        if self.multiplier < 1:
            raise ConfigurationError("multiplier must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ConfigurationError("jitter must be in [0, 1)")

    def without_jitter(self) -> RetryPolicy:
        """This policy with ``jitter=0`` (a fixed delay per attempt)."""
        return dataclasses.replace(self, jitter=0.0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.backoff * self.multiplier ** (attempt - 1))
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, base)
