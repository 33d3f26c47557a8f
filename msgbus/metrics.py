"""OpenTelemetry metrics of a bus: messages published, confirmed, consumed, retried, ...

Needs ``opentelemetry-api`` (extra ``msgbus[otel]``); :mod:`msgbus.telemetry` imports this
module only when the API is installed and a meter provider records. Every instrument carries
``messaging.system`` (the backend) and ``messaging.destination.name`` (the topic); consumer
instruments add ``messaging.consumer.group.name`` (empty for a private group). Durations are
in seconds. Instruments (Prometheus names add ``_total``/``_seconds``/``_bucket``):

========================================  =========  ==========================================
``msgbus.messages.published``             counter    publish calls accepted by the backend
``msgbus.messages.confirmed``             counter    publishes the broker confirmed
``msgbus.messages.publish_failed``        counter    publishes that failed (with ``error.type``)
``msgbus.publish.duration``               histogram  publish call to broker confirm
``msgbus.messages.consumed``              counter    deliveries handed to a handler (first try)
``msgbus.messages.acked``                 counter    deliveries acknowledged after success
``msgbus.messages.retried``               counter    handler failures followed by a retry
``msgbus.messages.dead_lettered``         counter    deliveries sent to ``<topic>.dlq``
``msgbus.handler.duration``               histogram  one handler call (``msgbus.outcome``)
``msgbus.deliveries.in_flight``           up-down    handler calls running now
``msgbus.consumer.lag``                   gauge      messages the group has still to consume
========================================  =========  ==========================================

The lag gauge exists only on backends that can tell (``Backend.reports_consumer_lag``), for
the bus's named groups; it is read from the broker at collection time, at most once per
:data:`msgbus.lag.LAG_INTERVAL` per group (:class:`msgbus.lag.LagReader`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["DURATION_BUCKETS", "Metrics"]

DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Histogram bucket bounds in seconds (the SDK's default bounds are meant for milliseconds)."""

_Attrs = tuple[tuple[str, str], ...]

_COUNTERS = {
    "msgbus.messages.published": "Messages handed to the broker",
    "msgbus.messages.confirmed": "Publishes the broker confirmed",
    "msgbus.messages.publish_failed": "Publishes that failed",
    "msgbus.messages.consumed": "Deliveries handed to a handler",
    "msgbus.messages.acked": "Deliveries acknowledged after success",
    "msgbus.messages.retried": "Handler failures followed by a retry",
    "msgbus.messages.dead_lettered": "Deliveries sent to the dead letters",
}
_OUTCOMES = {
    "ack": "msgbus.messages.acked",
    "retry": "msgbus.messages.retried",
    "dead_letter": "msgbus.messages.dead_lettered",
}


class _Tally:
    """Counts per (instrument, attributes), kept per thread and summed when collected.

    Counting is a dict update in the calling thread's own dict (no lock, no SDK call per
    message); the SDK reads the sums through observable instruments at collection time.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[dict[tuple[str, _Attrs], int]] = []

    def add(self, name: str, attrs: _Attrs, value: int = 1) -> None:
        counts = getattr(self._local, "counts", None)
        if counts is None:
            counts = self._local.counts = {}
            with self._lock:
                self._all.append(counts)
        key = (name, attrs)
        counts[key] = counts.get(key, 0) + value

    def totals(self, name: str) -> Iterator[tuple[_Attrs, int]]:
        """The sum over threads of every attribute set counted for ``name``."""
        out: dict[_Attrs, int] = {}
        with self._lock:
            tables = list(self._all)
        for counts in tables:
            for (counted, attrs), value in list(counts.items()):
                if counted == name:
                    out[attrs] = out.get(attrs, 0) + value
        return iter(out.items())


class _SharedInstruments:
    """The observable instruments of one meter provider, shared by every bus using it.

    The SDK keeps the first observable instrument of a name and ignores the callbacks of a
    second one made with the same name (with a warning), so a second bus on the same provider
    would report nothing. Instead each provider gets these instruments once, and each callback
    reports the sums over the tallies of every bus that joined (held weakly: a bus that is
    garbage leaves).
    """

    def __init__(self, meter: Any) -> None:
        self._meter = meter
        self._lock = threading.Lock()
        self._members: weakref.WeakSet[Metrics] = weakref.WeakSet()
        self._lag_gauge = False
        for name, description in _COUNTERS.items():
            meter.create_observable_counter(name, [self._observer(name)], "{message}", description)
        meter.create_observable_up_down_counter(
            "msgbus.deliveries.in_flight",
            [self._observer("msgbus.deliveries.in_flight")],
            "{message}",
            "Handler calls running now",
        )
        buckets = list(DURATION_BUCKETS)
        self.publish_duration = meter.create_histogram(
            "msgbus.publish.duration",
            "s",
            "From the publish call to the broker's confirm",
            explicit_bucket_boundaries_advisory=buckets,
        )
        self.handler_duration = meter.create_histogram(
            "msgbus.handler.duration",
            "s",
            "One handler call",
            explicit_bucket_boundaries_advisory=buckets,
        )

    def join(self, member: Metrics) -> None:
        """Report ``member``'s tally (and its lag readings, if it has a lag source) too."""
        with self._lock:
            self._members.add(member)
            if member.lag is None or self._lag_gauge:
                return
            self._lag_gauge = True
        self._meter.create_observable_gauge(
            "msgbus.consumer.lag",
            [self._observe_lag],
            "{message}",
            "Messages the consumer group has still to consume",
        )

    def _observer(self, name: str) -> Callable[[Any], Iterator[Any]]:
        from opentelemetry.metrics import Observation

        def callback(options: Any) -> Iterator[Any]:
            sums: dict[_Attrs, int] = {}
            with self._lock:
                members = list(self._members)
            for member in members:
                for attrs, value in member.tally.totals(name):
                    sums[attrs] = sums.get(attrs, 0) + value
            for attrs, value in sums.items():
                yield Observation(value, dict(attrs))

        return callback

    def _observe_lag(self, options: Any) -> Iterator[Any]:
        from opentelemetry.metrics import Observation

        with self._lock:
            members = list(self._members)
        for member in members:
            if member.lag is None:
                continue
            for topic, group, value in member.lag():
                yield Observation(
                    value,
                    {
                        "messaging.system": member.system,
                        "messaging.destination.name": topic,
                        "messaging.consumer.group.name": group,
                    },
                )


_shared_lock = threading.Lock()
_shared: weakref.WeakKeyDictionary[Any, _SharedInstruments] = weakref.WeakKeyDictionary()


def _instruments_of(provider: Any, meter: Any) -> _SharedInstruments:
    with _shared_lock:
        shared = _shared.get(provider)
        if shared is None:
            shared = _shared[provider] = _SharedInstruments(meter)
        return shared


class Metrics:
    """The instruments of one bus, made with one meter; thread-safe.

    Counters and the in-flight gauge are observable instruments fed by a per-thread
    :class:`_Tally`; the two histograms are recorded per message. Several buses may share a
    meter provider: the observable instruments are made once per provider and report the
    sums of every bus's tally (label sets that only differ by bus are added up).
    """

    def __init__(
        self, provider: Any, system: str, *, lag: Callable[[], list[tuple[str, str, int]]] | None
    ) -> None:
        from msgbus import __version__

        meter = provider.get_meter("msgbus", __version__)
        self.system = system
        self.lag = lag
        self.tally = _Tally()
        shared = _instruments_of(provider, meter)
        shared.join(self)
        self.publish_duration = shared.publish_duration
        self.handler_duration = shared.handler_duration
        self._topics: dict[str, tuple[_Attrs, dict[str, str]]] = {}
        self._groups: dict[tuple[str, str | None], _Attrs] = {}
        self._outcomes: dict[tuple[_Attrs, str | None], dict[str, str]] = {}

    def topic_attributes(self, topic: str) -> tuple[_Attrs, dict[str, str]]:
        """The (cached, shared: do not modify) attributes of publish instruments for ``topic``."""
        cached = self._topics.get(topic)
        if cached is None:
            attrs = (("messaging.system", self.system), ("messaging.destination.name", topic))
            cached = (attrs, dict(attrs))
            if len(self._topics) < 10_000:
                self._topics[topic] = cached
        return cached

    def group_attributes(self, topic: str, group: str | None) -> _Attrs:
        """The (cached) attributes of consumer instruments for ``topic`` and ``group``."""
        attrs = self._groups.get((topic, group))
        if attrs is None:
            attrs = (
                ("messaging.system", self.system),
                ("messaging.destination.name", topic),
                ("messaging.consumer.group.name", group or ""),
            )
            self._groups[(topic, group)] = attrs
        return attrs

    def published(self, attrs: tuple[_Attrs, dict[str, str]]) -> None:
        """Count a publish the backend accepted."""
        self.tally.add("msgbus.messages.published", attrs[0])

    def publish_done(
        self, attrs: tuple[_Attrs, dict[str, str]], seconds: float, error: BaseException | None
    ) -> None:
        """Count a publish's outcome and its publish-to-confirm latency."""
        if error is None:
            self.tally.add("msgbus.messages.confirmed", attrs[0])
            self.publish_duration.record(seconds, attrs[1])
        else:
            kind = type(error)
            failed = (*attrs[0], ("error.type", f"{kind.__module__}.{kind.__qualname__}"))
            self.tally.add("msgbus.messages.publish_failed", failed)

    def handling(self, attrs: _Attrs, delta: int) -> None:
        """A handler call starts (``delta=1``) or ends (``-1``)."""
        self.tally.add("msgbus.deliveries.in_flight", attrs, delta)

    def handled(self, attrs: _Attrs, first: bool, seconds: float, outcome: str | None) -> None:
        """Count one handler attempt of a delivery and its ``outcome``."""
        tally = self.tally
        if first:
            tally.add("msgbus.messages.consumed", attrs)
        counter = _OUTCOMES.get(outcome)  # type: ignore[arg-type]
        if counter is not None:
            tally.add(counter, attrs)
        labels = self._outcomes.get((attrs, outcome))
        if labels is None:
            labels = {**dict(attrs), "msgbus.outcome": outcome or "unknown"}
            if len(self._outcomes) < 10_000:
                self._outcomes[(attrs, outcome)] = labels
        self.handler_duration.record(seconds, labels)
