"""Benchmark targets: the brokers a run measures, given by URL or started from the harness.

A :class:`Target` knows its broker kind (``kafka``, ``rabbitmq``, ``activemq``, ``memory``,
``kombu``), its URL, a one-line description of what really runs there, the client library
msgbus drives it with (``driver``), its ``profile`` (``single`` node or ``replicated``
cluster) and ``nodes``, how each durability profile maps to connect options
(:data:`DURABILITY`), and the PIDs of the broker's processes when the harness started it (for
CPU and memory figures). Harness brokers are started by :meth:`Target.open` and stopped by
:meth:`Target.close`; a target may instead :meth:`Target.attach` to another target's broker
(``kafka-python`` drives the same Apache Kafka as ``kafka``).

Harness targets (:data:`HARNESS_KINDS`, what ``--brokers`` accepts):

- ``kafka``: Apache Kafka (the harness's ``ApacheKafka``), driven through msgbus's
  confluent-kafka driver (``?driver=confluent``; raw rows: plain confluent-kafka);
- ``kafka-python``: the same broker through the kafka-python driver, a second, labelled
  client row for the headline workloads only;
- ``tansu``: the Kafka-wire-protocol stand-in, only when asked for, labelled ``tansu``;
- ``rabbitmq``, ``activemq``, ``memory``;
- ``kafka-3``, ``rabbitmq-3``: three-node clusters (replication factor 3 with
  ``min.insync.replicas`` 2; quorum queues), for the ``replication`` workload only;
- ``activemq-2``: ActiveMQ's master/standby pair (profile ``failover``), for the
  ``availability`` workload only (:meth:`Target.kill_serving_node`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from msgbus.url import BusURL

__all__ = [
    "DEFAULT_HARNESS",
    "DRIVERS",
    "DURABILITY",
    "HARNESS_KINDS",
    "TANSU_CAVEAT",
    "Target",
    "harness_target",
    "kind_of_url",
    "url_target",
]

HARNESS_KINDS = (
    "kafka",
    "kafka-python",
    "tansu",
    "rabbitmq",
    "activemq",
    "memory",
    "kafka-3",
    "rabbitmq-3",
    "activemq-2",
)
"""What ``--brokers`` accepts (harness target names; see the module docstring)."""

DEFAULT_HARNESS = tuple(kind for kind in HARNESS_KINDS if kind != "tansu")
"""The harness targets a run uses when neither ``--url`` nor ``--brokers`` is given (each
only where its broker is installed); tansu is never a default."""

HEADLINE = ("latency", "max-rate")
"""The workloads the second client rows (``kafka-python``, ``memory``) run in the standard
set: enough to show the client's share without doubling the run."""

DRIVERS = {
    "kafka": "confluent",
    "rabbitmq": "pika",
    "activemq": "stomp.py",
    "memory": "memory",
    "kombu": "kombu",
}
"""Broker kind → the client library a target of that kind is driven with by default."""

REPLICATED: dict[str, dict[str, tuple[dict[str, Any], str] | None]] = {
    "kafka": {
        "D0": (
            {"replication_factor": 3},
            "acks=all, replication factor 3, min.insync.replicas 2 (a publish is confirmed "
            "once two of three replicas have it); no fsync per message",
        ),
        "D1": None,
    },
    "rabbitmq": {
        "D0": None,
        "D1": (
            {"queue_type": "quorum"},
            "quorum queue on three nodes, persistent messages, publisher confirms sent once a "
            "majority of the nodes has fsynced the Raft log",
        ),
    },
}
"""Durability profiles of the replicated (three-node) targets: what :data:`DURABILITY` is
for a single node."""

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
    mapping and raw client; ``url`` is None until :meth:`open` for harness brokers.
    ``driver``: the client library (msgbus's driver and the raw client; default per kind,
    :data:`DRIVERS`); ``profile`` (``single``, ``replicated``, ``failover``) and ``nodes``;
    ``workloads``: the only workloads it runs (None: all); ``shares``: the name of the
    target whose broker it uses when both are in a run; ``impl``: which harness Kafka
    (``apache`` or ``tansu``); ``owner``: the target it is attached to (:meth:`attach`)."""

    name: str
    kind: str
    url: str | None = None
    description: str = ""
    harness: bool = False
    harness_options: dict[str, Any] = field(default_factory=dict)
    broker: Any = None
    extra_options: dict[str, Any] = field(default_factory=dict)
    driver: str = ""
    profile: str = "single"
    nodes: int = 1
    workloads: tuple[str, ...] | None = None
    shares: str | None = None
    impl: str = ""
    owner: Target | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.driver:
            self.driver = DRIVERS.get(self.kind, self.kind)

    def runs_workload(self, name: str) -> bool:
        """True unless this target is restricted to other workloads (:attr:`workloads`)."""
        return self.workloads is None or name in self.workloads

    @property
    def cluster(self) -> Any:
        """The harness cluster this target runs on (None for a single node or a URL)."""
        broker = self.owner.broker if self.owner is not None else self.broker
        return broker if getattr(broker, "nodes", None) else None

    def kill_serving_node(self) -> int:
        """SIGKILL the cluster node the clients are served by (ActiveMQ: the master; others:
        node 0) and return its index. ValueError when the target is not a harness cluster."""
        cluster = self.cluster
        if cluster is None:
            raise ValueError(f"{self.name} is not a cluster: no node to kill")
        index = cluster.wait_master(30) if hasattr(cluster, "wait_master") else 0
        cluster.kill(index)
        return int(index)

    def heal(self) -> None:
        """Start the cluster's killed nodes again and wait until they are back."""
        cluster = self.cluster
        if cluster is not None:
            cluster.start()

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
        from msgbus.testing.brokers import Tansu

        broker = self.owner.broker if self.owner is not None else self.broker
        if broker is not None:
            return isinstance(broker, Tansu)
        return self.impl == "tansu"

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
        profile = self._profiles().get(durability)
        if profile is None:
            return None
        options = {**profile[0], **self.extra_options}
        if self.kind == "kafka":
            options["partitions"] = partitions
        return options

    def durability_note(self, durability: str) -> str:
        """Plain words for what ``durability`` means on this broker ("not offered" if none)."""
        profile = self._profiles().get(durability)
        return profile[1] if profile else "not offered by this broker as run here"

    def _profiles(self) -> dict[str, tuple[dict[str, Any], str] | None]:
        if self.profile == "replicated":
            return REPLICATED.get(self.kind, {})
        return DURABILITY.get(self.kind, {})

    def open(self) -> None:
        """Start the harness broker (no-op for URL targets, memory and attached targets)."""
        if not self.harness or self.kind == "memory" or self.broker is not None:
            return
        if self.owner is not None:
            return
        broker = self._launcher()
        broker.start()
        self.broker = broker
        self._adopt(broker)

    def attach(self, owner: Target) -> None:
        """Use ``owner``'s (opened) broker instead of starting one; :meth:`close` then leaves
        it running, :meth:`pids` reports its processes."""
        if owner.broker is None:
            raise ValueError(f"{owner.name} is not started")
        self.owner = owner
        self._adopt(owner.broker)

    def _adopt(self, broker: Any) -> None:
        url = broker.url
        if self.kind == "kafka" and self.driver == "confluent":
            url += ("&" if "?" in url else "?") + "driver=confluent"
        self.url = url
        self.description = broker.description
        if self.on_tansu:
            self.description += " — latency 3–15× Apache Kafka's (see †)"

    def _launcher(self) -> Any:
        from msgbus.testing import brokers

        options = dict(self.harness_options)
        if self.nodes > 1:
            options["nodes"] = self.nodes
        if self.kind == "kafka":
            cls = brokers.Tansu if self.impl == "tansu" else brokers.ApacheKafka
        else:
            cls = brokers.broker_class(self.kind)
        return cls(**options)

    def check_installed(self) -> None:
        """Raise the harness's ``BrokerNotInstalled`` when this target's broker is missing
        (nothing for URL targets and memory)."""
        if not self.harness or self.kind == "memory":
            return
        from msgbus.testing import brokers

        if self.kind == "kafka":
            cls = brokers.Tansu if self.impl == "tansu" else brokers.ApacheKafka
        else:
            cls = brokers.broker_class(self.kind)
        cls().check_installed()

    def close(self) -> None:
        """Stop the harness broker if this target started it (an attached target only lets
        go of its owner's). Idempotent."""
        self.owner = None
        broker, self.broker = self.broker, None
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.close()

    def pids(self) -> list[int]:
        """PIDs of every process of the harness broker, every node of a cluster (empty for
        URL targets)."""
        broker = self.owner.broker if self.owner is not None else self.broker
        if broker is None:
            return []
        from msgbus.testing.brokers.base import group_members

        pids: list[int] = []
        for node in getattr(broker, "nodes", None) or [broker]:
            for pgid in getattr(node, "pgids", []):
                pids.extend(group_members(pgid))
        return pids

    def info(self) -> dict[str, Any]:
        """Driver, profile, nodes and broker sharing, as results and the manifest record them."""
        return {
            "driver": self.driver,
            "profile": self.profile,
            "nodes": self.nodes,
            "shares_broker_with": self.owner.name if self.owner is not None else None,
        }


def harness_target(kind: str, *, standard: bool = False) -> Target:
    """A target whose broker the harness starts on :meth:`Target.open` (``memory`` needs
    none); ``kind`` is one of :data:`HARNESS_KINDS`. With ``standard`` (the standard set
    without named workloads) the second client rows run only :data:`HEADLINE`. ValueError
    for unknown names."""
    if kind not in HARNESS_KINDS:
        raise ValueError(f"unknown broker {kind!r}; choose from {', '.join(HARNESS_KINDS)}")
    headline = HEADLINE if standard else None
    if kind == "memory":
        return Target(
            "memory",
            "memory",
            "memory://",
            "msgbus in-process memory broker",
            workloads=headline,
        )
    if kind == "kafka":
        return Target("kafka", "kafka", harness=True, driver="confluent", impl="apache")
    if kind == "kafka-python":
        return Target(
            "kafka-python",
            "kafka",
            harness=True,
            driver="kafka-python",
            impl="apache",
            shares="kafka",
            workloads=headline,
        )
    if kind == "tansu":
        return Target("tansu", "kafka", harness=True, driver="confluent", impl="tansu")
    if kind == "activemq-2":
        return Target(
            kind,
            "activemq",
            harness=True,
            profile="failover",
            nodes=2,
            workloads=("availability",),
            extra_options={"connect_timeout": 5},
        )
    if kind in ("kafka-3", "rabbitmq-3"):
        base = kind.split("-")[0]
        return Target(
            kind,
            base,
            harness=True,
            driver=DRIVERS[base],
            impl="apache" if base == "kafka" else "",
            profile="replicated",
            nodes=3,
            workloads=("replication",),
        )
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
    parsed = BusURL.parse(url)
    shown = parsed.render(hide_password=True)
    driver = DRIVERS.get(kind, kind)
    if kind == "kafka":
        driver = parsed.query.get("driver", "kafka-python")
    if kind == "memory":
        description = "msgbus in-process memory broker"
    else:
        description = f"broker given by URL {shown} (product not checked)"
    return Target(name, kind, url, description, driver=driver)
