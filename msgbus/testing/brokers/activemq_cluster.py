"""ActiveMQ Classic master/slave on a shared KahaDB folder: ``ActiveMQ(nodes=2)``.

Every node is a private ActiveMQ (:class:`~msgbus.testing.brokers.ActiveMQ`) with its own STOMP
port, logs and temp folder, but all of them point KahaDB at one shared folder guarded by
KahaDB's shared-file locker: the node holding the lock is the master and opens its
connectors; the others wait as slaves (no connector open) and retry the lock every second.
When the master dies, a slave takes the lock, replays the journal and opens its connectors;
clients reach it through the failover host list in ``url`` (``stomp://h:p0,h:p1``).

This is **availability, not replication**: there is one copy of the data (the shared folder).
A message survives a master's death because the next master reads the same journal; a lost
disk loses everything, and while no master runs nothing is reachable.
"""

from __future__ import annotations

import os
import time
from typing import Any, Self

from msgbus.testing.brokers.activemq import ActiveMQ
from msgbus.testing.brokers.base import HOST, BrokerStartError, HandshakeError, ProcessSpec
from msgbus.testing.brokers.cluster import BrokerCluster, run_parallel

__all__ = ["ActiveMQCluster"]

_STANDBY_TEXT = "This broker is now in slave mode"
_KAHADB_DEFAULT = '<kahaDB directory="${activemq.data}/kahadb"/>'


class _ClusterNode(ActiveMQ):
    """One node of an :class:`ActiveMQCluster` (not for direct use). Ready when it answers
    STOMP (master) or its log says it waits for the lock (slave)."""

    def __init__(self, index: int, shared_dir: str, **options: Any) -> None:
        super().__init__(**options)
        self.index = index
        self.shared_dir = shared_dir
        self._log_offset = 0

    def _write_config(self) -> None:
        super()._write_config()
        xml = self._conf_dir / "activemq.xml"
        text = xml.read_text()
        if _KAHADB_DEFAULT not in text:
            raise BrokerStartError("ActiveMQ cluster: unexpected activemq.xml template")
        xml.write_text(
            text.replace(
                _KAHADB_DEFAULT,
                f'<kahaDB directory="{self.shared_dir}">\n'
                '                <locker><shared-file-locker lockAcquireSleepInterval="1000"/>'
                "</locker>\n            </kahaDB>",
            )
        )

    def _main_spec(self) -> ProcessSpec:
        log = self.data_dir / "activemq.log"
        self._log_offset = log.stat().st_size if log.is_file() else 0
        return super()._main_spec()

    def is_standby(self) -> bool:
        """True when this run of the node logged that it waits for the lock as a slave."""
        log = self.data_dir / "activemq.log"
        try:
            with open(log, "rb") as fh:
                fh.seek(self._log_offset)
                return _STANDBY_TEXT.encode() in fh.read()
        except OSError:
            return False

    def is_master(self) -> bool:
        """True when the node answers a STOMP handshake right now."""
        try:
            super()._handshake(2.0)
        except (OSError, HandshakeError):
            return False
        return True

    def _handshake(self, timeout: float) -> str | None:
        try:
            return super()._handshake(timeout)
        except (OSError, HandshakeError):
            if self.is_standby():
                return None
            raise


class ActiveMQCluster(BrokerCluster):
    """``size`` ActiveMQ Classic nodes as master/slave on one shared KahaDB folder.

    ``url`` is ``stomp://127.0.0.1:P0,127.0.0.1:P1,...`` (msgbus's ActiveMQ backend tries the
    hosts in turn); :meth:`master` says which node holds the lock. Lifecycle:
    :class:`~msgbus.testing.brokers.cluster.BrokerCluster`; after ``kill(master)`` a slave
    takes over within a few seconds (lock retry every second plus the journal replay).
    """

    kind = "activemq"
    product = "ActiveMQ"

    def __init__(
        self,
        port: int | None = None,
        *,
        nodes: int = 2,
        data_dir: str | os.PathLike[str] | None = None,
        heap: str = "512m",
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
    ) -> None:
        """``nodes``: how many nodes (2 or more); ``port``: node 0's STOMP port (None: free
        ports). ``heap``: each JVM's heap. Others: see :class:`BrokerCluster`."""
        super().__init__(nodes, data_dir)
        shared = self.data_dir / "shared-kahadb"
        shared.mkdir(parents=True, exist_ok=True)
        self.nodes = [
            _ClusterNode(
                i,
                str(shared),
                port=port if i == 0 else None,
                heap=heap,
                data_dir=self.node_dir(i),
                startup_timeout=startup_timeout,
                stop_timeout=stop_timeout,
            )
            for i in range(nodes)
        ]

    @property
    def url(self) -> str:
        """``stomp://127.0.0.1:P0,127.0.0.1:P1,...`` (every node, the failover list)."""
        return "stomp://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    @property
    def description(self) -> str:
        """Names the set-up: master/slave on a shared KahaDB (availability, not replication)."""
        return (
            f"{super().description}; master/slave on one shared KahaDB folder "
            "(availability, not replication)"
        )

    def master(self) -> int | None:
        """Index of the node answering STOMP now (the lock holder), or None."""
        for index, node in enumerate(self.nodes):
            if node.is_running() and node.is_master():  # type: ignore[attr-defined]
                return index
        return None

    def wait_master(self, timeout: float = 60.0) -> int:
        """Wait until some node answers STOMP; return its index. Raises
        :class:`BrokerStartError` (with the log tails) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.master()
            if found is not None:
                return found
            time.sleep(0.2)
        raise BrokerStartError(f"no ActiveMQ master after {timeout:g} s", self.log_tail())

    def start(self) -> Self:
        """Start every node not running (the first to get the lock becomes master) and
        wait until each is master or slave, then until some node is master."""
        waiting = [node for node in self.nodes if not node.is_running()]
        if waiting:
            waiting[0].start()
            run_parallel([node.start for node in waiting[1:]])
        self.wait_master(self.nodes[0].startup_timeout)
        return self
