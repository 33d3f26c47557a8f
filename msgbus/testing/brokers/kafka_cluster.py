"""An Apache Kafka cluster on 127.0.0.1: ``ApacheKafka(nodes=3)``.

Every node is both KRaft controller and broker (``process.roles=broker,controller``), node
ids 1..n, with a static voter set of all nodes (``controller.quorum.voters``), so the metadata
quorum survives the loss of a minority. All nodes' storage is formatted with one cluster id.
Broker defaults make the topics msgbus auto-creates replicated: ``default.replication.factor``
= n (at most 3) and ``min.insync.replicas`` = replication factor - 1 (2 for three nodes), the
same for the internal offsets and transaction topics; unclean leader election stays off
(Kafka's default). Each JVM's heap is capped (``heap``, 512 MiB by default). msgbus's Kafka
backend creates its topics itself with its own ``replication_factor`` option, by default
``min(3, brokers in the metadata)``: 3 here.

Nodes are started together: a combined node answers clients only once the quorum has a
leader, which needs a majority of the voters up.
"""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any, Self

from msgbus.testing.brokers.base import HOST, pick_free_port, release_port
from msgbus.testing.brokers.cluster import BrokerCluster, run_parallel
from msgbus.testing.brokers.kafka import Kafka

__all__ = ["KafkaCluster"]


class _ClusterNode(Kafka):
    """One node of a :class:`KafkaCluster` (not for direct use)."""

    def __init__(
        self, index: int, voters: str, cluster_id: str, replication: int, **options: Any
    ) -> None:
        super().__init__(**options)
        self.index = index
        self.voters = voters
        self.cluster_id = cluster_id
        self.replication = replication

    def _properties(self) -> dict[str, str]:
        props = super()._properties()
        rf = str(self.replication)
        isr = str(max(1, self.replication - 1))
        props.update(
            {
                "node.id": str(self.index + 1),
                "controller.quorum.voters": self.voters,
                "default.replication.factor": rf,
                "min.insync.replicas": isr,
                "offsets.topic.replication.factor": rf,
                "transaction.state.log.replication.factor": rf,
                "transaction.state.log.min.isr": isr,
                "share.coordinator.state.topic.replication.factor": rf,
                "share.coordinator.state.topic.min.isr": isr,
                "unclean.leader.election.enable": "false",
            }
        )
        return props

    def _cluster_id(self) -> str:
        return self.cluster_id

    @property
    def description(self) -> str:
        return super().description.replace("one node", "combined controller+broker")


class KafkaCluster(BrokerCluster):
    """``size`` Apache Kafka nodes (KRaft, combined roles) on 127.0.0.1.

    ``url`` is ``kafka://127.0.0.1:P0,127.0.0.1:P1,...``; ``bootstrap_servers`` the same
    list for Kafka clients; ``nodes[i]`` is node ``i``'s launcher. Lifecycle:
    :class:`~msgbus.testing.brokers.cluster.BrokerCluster`.
    """

    kind = "kafka"
    product = "Apache Kafka"

    def __init__(
        self,
        port: int | None = None,
        *,
        nodes: int = 3,
        data_dir: str | os.PathLike[str] | None = None,
        heap: str = "512m",
        partitions: int = 3,
        version: str | None = None,
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
        proxy_ports: list[int] | None = None,
    ) -> None:
        """``nodes``: how many nodes (2 or more; three tolerate one loss with
        ``min.insync.replicas=2``); ``port``: node 0's client port (None: free ports).
        ``heap``: each JVM's ``-Xmx``; ``partitions``: ``num.partitions``; ``version``: the
        Apache Kafka release. ``proxy_ports``: one per node, each node's advertised client
        address for a fault proxy (see ``Kafka(proxy_port=)``). Others: see
        :class:`BrokerCluster` / :class:`BrokerProcess`."""
        if proxy_ports is not None and len(proxy_ports) != nodes:
            raise ValueError(f"proxy_ports needs one port per node ({nodes})")
        super().__init__(nodes, data_dir)
        self._controller_ports = [pick_free_port() for _ in range(nodes)]
        voters = ",".join(f"{i + 1}@{HOST}:{p}" for i, p in enumerate(self._controller_ports))
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.nodes = [
            _ClusterNode(
                i,
                voters,
                cluster_id,
                replication=min(3, nodes),
                port=port if i == 0 else None,
                controller_port=self._controller_ports[i],
                heap=heap,
                partitions=partitions,
                version=version,
                data_dir=self.node_dir(i),
                startup_timeout=startup_timeout,
                stop_timeout=stop_timeout,
                proxy_port=proxy_ports[i] if proxy_ports is not None else None,
            )
            for i in range(nodes)
        ]

    @property
    def url(self) -> str:
        """``kafka://127.0.0.1:P0,127.0.0.1:P1,...`` (every node)."""
        return f"kafka://{self.bootstrap_servers}"

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:P0,127.0.0.1:P1,...`` for Kafka clients."""
        return ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    @property
    def description(self) -> str:
        """E.g. ``3-node cluster of Apache Kafka 4.1.1 (KRaft, combined ...); RF 3, min ISR 2``."""
        rf = min(3, self.size)
        return (
            f"{super().description}; replication factor {rf}, min.insync.replicas {max(1, rf - 1)}"
        )

    def start(self) -> Self:
        """Start every node not running, together, and wait until each answers Metadata."""
        nodes = [node for node in self.nodes if not node.is_running()]
        if nodes:
            # fetch/check the jars once before the threads do it concurrently
            nodes[0].check_installed()
            run_parallel([node.start for node in nodes])
        return self

    def stop(self) -> None:
        """Stop every node gracefully, one after the other; the last one alone has no quorum
        left for a controlled shutdown, so it gets 5 s before SIGKILL (its log is on disk)."""
        self.resume()
        running = [node for node in self.nodes if node.is_running()]
        for node in running[:-1]:
            node.stop()
        if running:
            running[-1]._stop_all(5.0)

    def close(self) -> None:
        """Stop every node, delete the data folder if the cluster created it."""
        super().close()
        for port in self._controller_ports:
            release_port(port)
