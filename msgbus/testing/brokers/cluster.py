"""Several broker nodes on 127.0.0.1 run as one cluster: the part every cluster shares.

A :class:`BrokerCluster` owns ``n`` single-node launchers (each a
:class:`~msgbus.testing.brokers.base.BrokerProcess` with its own ports, data folder and logs,
all inside the cluster's data folder) and adds what a fault test needs: ``url`` lists every
node, and ``kill(node)``, ``pause(node)`` / ``resume(node)`` (SIGSTOP / SIGCONT of the node's
process group, the way a long GC pause or a cut-off node looks to a client) and
``restart(node)`` act on one node by index, or on all nodes with ``node=None``.

The broker-specific clusters are :class:`~msgbus.testing.brokers.rabbitmq_cluster.RabbitMQCluster`,
:class:`~msgbus.testing.brokers.kafka_cluster.KafkaCluster` and
:class:`~msgbus.testing.brokers.activemq_cluster.ActiveMQCluster`; ``RabbitMQ(nodes=3)``,
``ApacheKafka(nodes=3)`` and ``ActiveMQ(nodes=2)`` construct them. Every node process is a
registered child group (see :mod:`msgbus.testing.brokers.base`), so a cluster is torn down at
interpreter exit like a single broker. Only the standard library is used here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from msgbus.testing.brokers.base import HOST, BrokerHarnessError, BrokerProcess

__all__ = ["BrokerCluster", "run_parallel"]


def run_parallel(actions: Sequence[Callable[[], object]]) -> None:
    """Run ``actions`` in threads at once and wait for all; re-raise the first error.

    Used where nodes must come up together (a Kafka quorum, a RabbitMQ cluster restarted
    as a whole, where each node waits for its peers before it accepts clients)."""
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class BrokerCluster:
    """Base of the cluster launchers: ``n`` nodes of one broker kind on 127.0.0.1.

    Lifecycle (blocking; not thread-safe): ``start()`` starts every node and returns once each
    answers its protocol handshake (or, for a standby node, is known to wait as standby);
    ``stop()`` stops every node gracefully (data kept); ``close()`` stops them and deletes the
    data folder if the cluster created it; context-manager use starts and closes.
    ``kill(node=None)`` SIGKILLs one node's broker process (None: every node), ``start()``
    brings killed nodes back; ``restart(node=None)`` stops and starts one node (None: the
    whole cluster, stopped and then started together); ``pause(node)`` / ``resume(node)`` send
    SIGSTOP / SIGCONT to a node's process group. Node indexes run from 0 to ``size - 1``;
    a bad index raises IndexError.
    """

    kind: ClassVar[str] = ""
    product: ClassVar[str] = ""
    managed: ClassVar[bool] = True
    host: str = HOST

    def __init__(self, size: int, data_dir: str | os.PathLike[str] | None = None) -> None:
        """``size``: number of nodes (at least 2); ``data_dir``: the cluster's folder, one
        sub-folder ``node<i>`` per node (None: a temporary folder, deleted by ``close()``)."""
        if size < 2:
            raise ValueError(f"a cluster needs at least 2 nodes, got {size}")
        self.size = size
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._data_dir = self._given_data_dir or Path(
            tempfile.mkdtemp(prefix=f"msgbus-{self.kind}-cluster-")
        )
        self._paused: set[int] = set()
        self.nodes: list[BrokerProcess] = []
        """The node launchers, index = node number."""
        self.last_start_seconds: float | None = None
        self.last_stop_seconds: float | None = None

    # ------------------------------------------------------------------ properties

    @property
    def data_dir(self) -> Path:
        """The cluster's folder (``node<i>`` inside for each node)."""
        return self._data_dir

    def node_dir(self, index: int) -> Path:
        """Data folder of node ``index``."""
        return self._data_dir / f"node{index}"

    @property
    def url(self) -> str:
        """The msgbus URL listing every node (``scheme://h1:p1,h2:p2,...``)."""
        raise NotImplementedError

    @property
    def ports(self) -> list[int]:
        """Client port of each node, by index."""
        return [node.port for node in self.nodes]

    @property
    def description(self) -> str:
        """What really runs, in one line."""
        first = self.nodes[0].description if self.nodes else self.product
        return f"{self.size}-node cluster of {first}"

    def is_running(self) -> bool:
        """True while at least one node's broker process runs."""
        return any(node.is_running() for node in self.nodes)

    def running_nodes(self) -> list[int]:
        """Indexes of the nodes whose broker process runs (paused ones included)."""
        return [i for i, node in enumerate(self.nodes) if node.is_running()]

    def paused_nodes(self) -> list[int]:
        """Indexes of the nodes paused with :meth:`pause` and not resumed yet."""
        return sorted(self._paused)

    def pid(self, index: int) -> int | None:
        """PID of node ``index``'s broker process (None when it does not run)."""
        return self._node(index).pid

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start every node that does not run and wait until each is ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every node gracefully (paused nodes are resumed first); keep the data."""
        self.resume()
        for index in self._stop_order():
            self.nodes[index].stop()

    def kill(self, node: int | None = None) -> None:
        """SIGKILL node ``node``'s broker process group (None: every node), like a crash."""
        for index in self._indexes(node):
            self._paused.discard(index)
            self.nodes[index].kill()

    def restart(self, node: int | None = None) -> Self:
        """Stop node ``node`` gracefully and start it again (None: stop every node, then start
        the whole cluster together). Returns once the restarted nodes are ready."""
        if node is None:
            self.stop()
            return self.start()
        self.resume(node)
        self._node(node).restart()
        return self

    def pause(self, node: int) -> None:
        """SIGSTOP node ``node``'s broker process group (it keeps its sockets open but answers
        nothing). Raises :class:`BrokerHarnessError` when that node does not run."""
        proc = self._main(node)
        os.killpg(proc.pgid, signal.SIGSTOP)
        self._paused.add(node)

    def resume(self, node: int | None = None) -> None:
        """SIGCONT node ``node`` (None: every paused node). No-op for a node not paused."""
        for index in self._indexes(node):
            if index in self._paused:
                self._paused.discard(index)
                proc = self.nodes[index]._main
                if proc is not None and proc.is_running():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pgid, signal.SIGCONT)

    def close(self) -> None:
        """Stop every node and delete the data folder if the cluster created it."""
        try:
            self.stop()
        finally:
            for node in self.nodes:
                with contextlib.suppress(Exception):
                    node.close()
            if self._given_data_dir is None:
                shutil.rmtree(self._data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of every node's logs, labelled by file."""
        return "\n".join(node.log_tail(lines) for node in self.nodes)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        running = ",".join(map(str, self.running_nodes())) or "none"
        return f"<{type(self).__name__} {self.size} nodes, running: {running}>"

    # ------------------------------------------------------------------ helpers

    def _stop_order(self) -> list[int]:
        return list(reversed(range(self.size)))

    def _node(self, index: int) -> BrokerProcess:
        if not 0 <= index < self.size:
            raise IndexError(f"node {index} out of range: the cluster has {self.size} nodes")
        return self.nodes[index]

    def _indexes(self, node: int | None) -> list[int]:
        if node is None:
            return list(range(self.size))
        self._node(node)
        return [node]

    def _main(self, index: int):
        proc = self._node(index)._main
        if proc is None or not proc.is_running():
            raise BrokerHarnessError(f"{self.product} node {index} does not run")
        return proc
