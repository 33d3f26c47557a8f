"""A RabbitMQ cluster on 127.0.0.1: ``RabbitMQ(nodes=3)``.

Each node is a private ``rabbitmq-server`` (:class:`~msgbus.testing.brokers.RabbitMQ`) with its
own node name (``msgbus<i>@localhost``), AMQP and distribution ports and data folder; all of
them register with one private ``epmd`` (run by node 0) and share one Erlang cookie. They form
the cluster through RabbitMQ's ``classic_config`` peer discovery: node 0 starts first as a
blank node, the others find it and join. ``net_ticktime`` is 10 s (a paused node is noticed
in 10-15 s instead of a minute). msgbus's ``queue_type=quorum`` option makes group queues
quorum queues, replicated on every node (the default group size is the cluster's size).

A cluster restarted as a whole is started in parallel: a RabbitMQ node that was not the last
to stop waits for its peers before it accepts clients.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterable
from typing import Any, Self

from msgbus.testing.brokers.base import (
    HOST,
    BrokerHarnessError,
    ProcessSpec,
    pick_free_port,
    release_port,
)
from msgbus.testing.brokers.cluster import BrokerCluster, run_parallel
from msgbus.testing.brokers.rabbitmq import RabbitMQ

__all__ = ["RabbitMQCluster"]


class _ClusterNode(RabbitMQ):
    """One node of a :class:`RabbitMQCluster` (not for direct use)."""

    def __init__(
        self, index: int, peers: list[str], cookie: str, runs_epmd: bool, **options: Any
    ) -> None:
        super().__init__(nodename=peers[index], **options)
        self.index = index
        self.peers = peers
        self.cookie = cookie
        self.runs_epmd = runs_epmd

    def _helper_specs(self) -> Iterable[tuple[ProcessSpec, Callable[[float], str | None]]]:
        return super()._helper_specs() if self.runs_epmd else ()

    def _write_config(self) -> None:
        super()._write_config()
        cookie = self.data_dir / ".erlang.cookie"
        if not cookie.is_file():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        peers = "".join(
            f"cluster_formation.classic_config.nodes.{n} = {name}\n"
            for n, name in enumerate(self.peers, 1)
        )
        with open(self._conf_dir / "rabbitmq.conf", "a") as conf:
            conf.write(
                "cluster_formation.peer_discovery_backend = classic_config\n"
                + peers
                + "net_ticktime = 10\n"
            )

    @property
    def description(self) -> str:
        return super().description.replace(f"private node {self.nodename}", "private nodes")


class RabbitMQCluster(BrokerCluster):
    """``size`` RabbitMQ nodes joined into one cluster on 127.0.0.1 (see the module docstring).

    ``url`` is ``amqp://guest:guest@127.0.0.1:P0,127.0.0.1:P1,.../``; add
    ``?queue_type=quorum`` for replicated group queues. ``nodes[i]`` is node ``i``'s
    :class:`~msgbus.testing.brokers.RabbitMQ` launcher (``nodes[i].url`` reaches it alone).
    Lifecycle: :class:`~msgbus.testing.brokers.cluster.BrokerCluster`.
    """

    kind = "rabbitmq"
    product = "RabbitMQ"

    def __init__(
        self,
        port: int | None = None,
        *,
        nodes: int = 3,
        data_dir: str | os.PathLike[str] | None = None,
        plugins: Iterable[str] = (),
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
    ) -> None:
        """``nodes``: how many nodes (2 or more); ``port``: node 0's AMQP port (None: free
        ports for all). ``plugins``: enabled on every node. ``data_dir`` and the timeouts:
        see :class:`~msgbus.testing.brokers.cluster.BrokerCluster` and
        :class:`~msgbus.testing.brokers.base.BrokerProcess`."""
        super().__init__(nodes, data_dir)
        self._epmd_port = pick_free_port()
        cookie = secrets.token_hex(16).upper()
        names = [f"msgbus{i}@localhost" for i in range(nodes)]
        self.nodes = [
            _ClusterNode(
                i,
                names,
                cookie,
                runs_epmd=i == 0,
                port=port if i == 0 else None,
                data_dir=self.node_dir(i),
                epmd_port=self._epmd_port,
                plugins=tuple(plugins),
                startup_timeout=startup_timeout,
                stop_timeout=stop_timeout,
            )
            for i in range(nodes)
        ]
        self._formed = False

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:P0,127.0.0.1:P1,.../`` (every node, in order)."""
        hosts = ",".join(f"{HOST}:{node.port}" for node in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    @property
    def description(self) -> str:
        """E.g. ``3-node cluster of RabbitMQ 3.10.8 (private nodes), ...; classic_config``."""
        return f"{super().description}; joined by classic_config peer discovery"

    def set_policy(self, name: str, pattern: str, definition: dict[str, Any]) -> None:
        """Set a policy on vhost ``/`` (``rabbitmqctl set_policy`` through a running node),
        e.g. ``set_policy("ha", "^orders\\.", {"ha-mode": "all", "ha-sync-mode": "automatic"})``
        to mirror classic queues. Raises :class:`BrokerHarnessError` when rabbitmqctl fails."""
        running = [node for node in self.nodes if node.is_running()]
        if not running:
            raise BrokerHarnessError("RabbitMQ cluster: no node runs")
        node = running[0]
        done = subprocess.run(
            [
                str(node.server_binary.parent / "rabbitmqctl"),
                "-n",
                node.nodename,
                "set_policy",
                name,
                pattern,
                json.dumps(definition),
                "--apply-to",
                "queues",
            ],
            env=node._main_spec().env,
            cwd=node.data_dir,
            capture_output=True,
            timeout=120,
            check=False,
            text=True,
        )
        if done.returncode != 0:
            raise BrokerHarnessError(
                f"rabbitmqctl set_policy {name} failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-500:]}"
            )

    def start(self) -> Self:
        """First start: node 0, then the others (they join it). Later starts: every node not
        running, in parallel (a node restarted alone rejoins; a cluster stopped as a whole
        needs its peers up together)."""
        if not self._formed:
            self.nodes[0].start()
            run_parallel([node.start for node in self.nodes[1:]])
            self._formed = True
        else:
            # node 0 holds the epmd: make sure it runs before the others look up peers
            self.nodes[0]._start_helpers()
            run_parallel([node.start for node in self.nodes if not node.is_running()])
        return self

    def close(self) -> None:
        """Stop every node, delete the data folder if the cluster created it."""
        super().close()
        release_port(self._epmd_port)
