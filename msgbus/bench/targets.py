"""Benchmark targets: the brokers a run measures, given by URL or started from the harness.

A :class:`Target` knows its broker kind (``kafka``, ``rabbitmq``, ``activemq``, ``memory``,
``kombu``), its URL, a one-line description of what really runs there, how each durability
profile maps to connect options (:data:`DURABILITY`), and the PIDs of the broker's processes
when the harness started it (for CPU and memory figures). Harness brokers are started by
:meth:`Target.open` and stopped by :meth:`Target.close`, so only one runs at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from msgbus.url import BusURL

__all__ = [
    "DURABILITY",
    "HARNESS_KINDS",
    "TANSU_CAVEAT",
    "Target",
    "harness_target",
    "kind_of_url",
    "url_target",
]

HARNESS_KINDS = ("kafka", "rabbitmq", "activemq", "memory")
"""What ``--brokers`` accepts."""

TANSU_CAVEAT = (
    "was measured on tansu (Kafka wire protocol), not Apache Kafka: with these Python clients "
    "tansu's throughput is within 5 % of Kafka 2.3.0 but its end-to-end latency is 3–15× "
    "Kafka's (fetch long-poll is a sleep loop)"
)
"""The caveat printed beside every Kafka latency figure measured on the harness's tansu."""

DURABILITY: dict[str, dict[str, tuple[dict[str, Any], str] | None]] = {
    "kafka": {
        "D0": (
            {},
            "acks=all on one broker; no fsync per message (Apache Kafka's default "
            "flush policy leaves it to the OS; tansu's memory:// storage never writes)",
        ),
        "D1": None,
    },
    "rabbitmq": {
        "D0": (
            {"persistent": False},
            "durable classic queue, transient messages (delivery_mode 1), publisher confirms; "
            "nothing written to disk",
        ),
        "D1": (
            {"queue_type": "quorum"},
            "quorum queue, persistent messages, publisher confirms sent after the Raft log "
            "is fsynced",
        ),
    },
    "activemq": {
        "D0": (
            {"persistent": False},
            "non-persistent messages (persistent:false), receipts; kept in memory",
        ),
        "D1": (
            {"persistent": True},
            "persistent messages, receipt after the KahaDB journal write with fsync "
            "(journal sync on)",
        ),
    },
    "memory": {"D0": ({}, "in-process memory broker; nothing persisted"), "D1": None},
    "kombu": {"D0": ({}, "the kombu transport's defaults"), "D1": None},
}
"""Broker kind → profile → (connect options, plain-words description), or None when the
broker (as run here) has no such profile. D0: no fsync before a publish is confirmed.
D1: fsync before the confirm."""

_SCHEMES = {
    "kafka": "kafka",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "stomp": "activemq",
    "stomp+ssl": "activemq",
    "activemq": "activemq",
    "memory": "memory",
}


def kind_of_url(url: str) -> str:
    """The broker kind of a msgbus URL (``kombu`` for ``kombu+...``); ValueError otherwise."""
    scheme = BusURL.parse(url).scheme
    if scheme in _SCHEMES:
        return _SCHEMES[scheme]
    if scheme.startswith("kombu"):
        return "kombu"
    raise ValueError(f"no benchmark target kind for URL scheme {scheme!r}")


@dataclass
class Target:
    """One broker to measure. ``name`` labels it in results; ``kind`` picks durability
    mapping and raw client; ``url`` is None until :meth:`open` for harness brokers."""

    name: str
    kind: str
    url: str | None = None
    description: str = ""
    harness: bool = False
    harness_options: dict[str, Any] = field(default_factory=dict)
    broker: Any = None
    extra_options: dict[str, Any] = field(default_factory=dict)

    @property
    def in_process(self) -> bool:
        """True for ``memory://``: producers and consumers must share one process."""
        return self.kind == "memory"

    @property
    def on_tansu(self) -> bool:
        """True when the Kafka-protocol broker is the harness's tansu (latency caveat), as it
        is with ``MSGBUS_KAFKA_IMPL=tansu``; the harness's default is Apache Kafka."""
        if self.kind != "kafka" or not self.harness:
            return False
        from msgbus.testing.brokers import Tansu, kafka_impl

        if self.broker is not None:
            return isinstance(self.broker, Tansu)
        return kafka_impl() == "tansu"

    @property
    def has_raw_client(self) -> bool:
        """True when :mod:`msgbus.bench.raw` has a plain client for this kind."""
        return self.kind in ("kafka", "rabbitmq", "activemq")

    def display_url(self) -> str:
        """The URL with any password hidden."""
        if self.url is None:
            return "(not started)"
        return BusURL.parse(self.url).render(hide_password=True)

    def options(self, durability: str, partitions: int) -> dict[str, Any] | None:
        """Connect options for a workload at ``durability`` with ``partitions`` (None when
        this broker has no such profile)."""
        profile = DURABILITY.get(self.kind, {}).get(durability)
        if profile is None:
            return None
        options = {**profile[0], **self.extra_options}
        if self.kind == "kafka":
            options["partitions"] = partitions
        return options

    def durability_note(self, durability: str) -> str:
        """Plain words for what ``durability`` means on this broker ("not offered" if none)."""
        profile = DURABILITY.get(self.kind, {}).get(durability)
        return profile[1] if profile else "not offered by this broker as run here"

    def open(self) -> None:
        """Start the harness broker (no-op for URL targets and memory)."""
        if not self.harness or self.kind == "memory" or self.broker is not None:
            return
        from msgbus.testing import brokers

        broker = brokers.broker_class(self.kind)(**self.harness_options)
        broker.start()
        self.broker = broker
        self.url = broker.url
        self.description = broker.description
        if self.on_tansu:
            self.description += " — latency 3–15× Apache Kafka's (see †)"

    def close(self) -> None:
        """Stop the harness broker if this target started it. Idempotent."""
        broker, self.broker = self.broker, None
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.close()

    def pids(self) -> list[int]:
        """PIDs of every process of the harness broker (empty for URL targets)."""
        if self.broker is None:
            return []
        from msgbus.testing.brokers.base import group_members

        pids: list[int] = []
        for pgid in getattr(self.broker, "pgids", []):
            pids.extend(group_members(pgid))
        return pids


def harness_target(kind: str) -> Target:
    """A target whose broker the harness starts on :meth:`Target.open` (``memory`` needs
    none). ValueError for kinds outside :data:`HARNESS_KINDS`."""
    if kind not in HARNESS_KINDS:
        raise ValueError(f"unknown broker {kind!r}; choose from {', '.join(HARNESS_KINDS)}")
    if kind == "memory":
        return Target("memory", "memory", "memory://", "msgbus in-process memory broker")
    return Target(kind, kind, harness=True)


def url_target(url: str, taken: set[str] | None = None) -> Target:
    """A target for a broker given by ``url`` (named after its kind, made unique against
    ``taken``). The description says it was given by URL: what runs there is not checked."""
    kind = kind_of_url(url)
    name = kind
    n = 2
    while taken is not None and name in taken:
        name = f"{kind}-{n}"
        n += 1
    shown = BusURL.parse(url).render(hide_password=True)
    if kind == "memory":
        description = "msgbus in-process memory broker"
    else:
        description = f"broker given by URL {shown} (product not checked)"
    return Target(name, kind, url, description)
