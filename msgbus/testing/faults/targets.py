"""What a chaos schedule acts on: a broker (one node, a cluster, or just a URL) and the fault
proxies in front of it.

A :class:`ChaosTarget` knows the URL the workload's clients use, the profile it stands for
(``D1`` single node, ``cluster``, ``url``) and which fault kinds it can inject:

* node faults (``kill-node``, ``pause-node``, ``restart-all``) need a broker the harness
  started (:func:`open_target` with ``cluster=`` or ``broker=``); a plain URL has none;
* network faults (``partition``, ``delay``, ``reset``) put one
  :class:`~msgbus.testing.faults.proxy.FaultProxy` in front of every host of the URL, which
  must all be on 127.0.0.1. On Kafka a client uses the bootstrap list only to learn the
  brokers' advertised addresses and then connects to those, so a proxy in front of the
  bootstrap port alone would be bypassed: a Kafka the harness starts here gets a ``CLIENT``
  listener per node, advertised at a proxy port (``Kafka(proxy_port=)``), and the proxies
  forward from there; a Kafka given by URL or started elsewhere gets no network faults;
* process faults (``kill-consumer``, ``kill-producer``) work everywhere.

The profiles' options are fixed here (:data:`PROFILE_OPTIONS`): on RabbitMQ the group queue
is a quorum queue (replicated over a cluster; fsync before the confirm on one node: the
benchmark's D1), on Kafka clusters topics get ``replication_factor=3`` (msgbus's Kafka
backend's default there too, ``min(3, brokers)``; said explicitly so a run does not depend
on it).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import replace
from typing import Any

from msgbus.testing.faults.proxy import FaultProxy
from msgbus.url import BusURL, HostPort

__all__ = [
    "NETWORK_FAULTS",
    "NODE_FAULTS",
    "PROCESS_FAULTS",
    "PROFILE_OPTIONS",
    "ChaosTarget",
    "open_target",
]

NODE_FAULTS = ("kill-node", "pause-node", "restart-all")
NETWORK_FAULTS = ("partition", "delay", "reset")
PROCESS_FAULTS = ("kill-consumer", "kill-producer")

PROFILE_OPTIONS: dict[tuple[str, str], dict[str, str]] = {
    ("rabbitmq", "cluster"): {"queue_type": "quorum"},
    ("rabbitmq", "D1"): {"queue_type": "quorum"},
    ("kafka", "cluster"): {"replication_factor": "3"},
}
"""(broker kind, profile) → URL query options the workload's clients get."""

_KINDS = {"amqp": "rabbitmq", "amqps": "rabbitmq", "stomp": "activemq", "kafka": "kafka"}
_LOCAL = ("127.0.0.1", "localhost")


class _SingleNode:
    """A single-node launcher seen as a one-node cluster (kill/start/pause/resume/restart)."""

    size = 1

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.nodes = [broker]

    @property
    def url(self) -> str:
        return str(self.broker.url)

    @property
    def description(self) -> str:
        return str(self.broker.description)

    def kill(self, node: int | None = None) -> None:
        self.broker.kill()

    def start(self) -> Any:
        return self.broker.start()

    def restart(self, node: int | None = None) -> Any:
        return self.broker.restart()

    def pause(self, node: int) -> None:
        os.killpg(self._pgid(), signal.SIGSTOP)

    def resume(self, node: int | None = None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._pgid(), signal.SIGCONT)

    def _pgid(self) -> int:
        main = self.broker._main  # the harness's process handle (same package family)
        if main is None or not main.is_running():
            raise RuntimeError("the broker does not run")
        return int(main.pgid)

    def close(self) -> None:
        self.broker.close()


class ChaosTarget:
    """A broker under test: ``url`` (what the clients use, options included), ``kind``
    (rabbitmq, kafka, activemq or the URL's scheme), ``profile`` and ``description``.

    ``nodes`` is the harness object for node faults (None for a plain URL); ``size`` its node
    count. :meth:`open_proxies` inserts fault proxies (see the module docstring) and
    :attr:`client_url` then points at them. :meth:`close` closes the proxies and stops a
    broker this target started (``owned``). Not thread-safe: one schedule drives it.
    """

    def __init__(
        self,
        url: str,
        *,
        kind: str,
        profile: str,
        description: str,
        nodes: Any = None,
        owned: bool = False,
    ) -> None:
        self.url = url
        self.kind = kind
        self.profile = profile
        self.description = description
        self.nodes = nodes
        self.owned = owned
        self.proxies: list[FaultProxy] = []
        self.client_url = url

    @property
    def size(self) -> int:
        """Number of broker nodes the target can act on (0 for a plain URL)."""
        return int(self.nodes.size) if self.nodes is not None else 0

    def supports(self, fault: str) -> str | None:
        """None when ``fault`` can be injected here, else the reason it cannot."""
        if fault in NODE_FAULTS and self.nodes is None:
            return "a plain URL has no broker process to act on (use --cluster or --broker)"
        if fault in NETWORK_FAULTS:
            if self.kind == "kafka":
                if self._kafka_nodes() is None:
                    return (
                        "Kafka clients connect to the advertised broker addresses, around a "
                        "proxy: needs a harness Kafka started with proxy ports (--broker or "
                        "--cluster)"
                    )
                return None
            hosts = BusURL.parse(self.url).hosts
            if not hosts or any(h.host not in _LOCAL or h.port is None for h in hosts):
                return "network faults need every host on 127.0.0.1 with a port"
        return None

    def _kafka_nodes(self) -> list[Any] | None:
        """The Kafka node launchers when each advertises a proxy port, else None."""
        nodes = getattr(self.nodes, "nodes", None)
        if not nodes or any(getattr(n, "proxy_port", None) is None for n in nodes):
            return None
        return list(nodes)

    def open_proxies(self) -> None:
        """Start one proxy per host of the URL and point :attr:`client_url` at them. On Kafka,
        one proxy per node, from the port the node advertises to its ``CLIENT`` listener."""
        parsed = BusURL.parse(self.url)
        kafka = self._kafka_nodes() if self.kind == "kafka" else None
        # (broker port to forward to, port to listen on: None for a free one)
        routes: list[tuple[int, int | None]] = []
        if kafka is not None:
            routes = [(node.proxied_port, node.proxy_port) for node in kafka]
        else:
            for host in parsed.hosts:
                assert host.port is not None  # supports() refused such a URL
                routes.append((host.port, None))
        hosts = []
        for target_port, listen_port in routes:
            proxy = FaultProxy(target_port, port=listen_port).start()
            self.proxies.append(proxy)
            hosts.append(HostPort("127.0.0.1", proxy.port))
        self.client_url = replace(parsed, hosts=tuple(hosts)).render(hide_password=False)

    def close(self) -> None:
        """Close the proxies; stop the broker if this target started it."""
        for proxy in self.proxies:
            proxy.close()
        self.proxies.clear()
        if self.owned and self.nodes is not None:
            self.nodes.close()


def _with_options(url: str, kind: str, profile: str) -> str:
    options = PROFILE_OPTIONS.get((kind, profile), {})
    if not options:
        return url
    parsed = BusURL.parse(url)
    return parsed.with_query(**options).render(hide_password=False)


def open_target(
    url: str | None = None,
    *,
    cluster: str | None = None,
    broker: str | None = None,
    nodes: Any = None,
) -> ChaosTarget:
    """A target for ``url`` (used as given), or a harness broker started now: ``cluster``
    (rabbitmq: 3 nodes, kafka: 3 Apache Kafka nodes, activemq: 2 nodes master/slave) or
    ``broker`` (one node, the durable profile D1). ``nodes``: an already started harness
    cluster (or single-node launcher) with ``cluster``/``broker`` naming its kind; it is not
    stopped by :meth:`ChaosTarget.close`. Raises ValueError for an unknown kind or a bad
    combination, and what the launchers raise when a broker cannot start.
    """
    if sum(x is not None for x in (url, cluster, broker)) != 1:
        raise ValueError("give exactly one of a URL, --cluster KIND or --broker KIND")
    if url is not None:
        scheme = BusURL.parse(url).base_scheme
        return ChaosTarget(
            url,
            kind=_KINDS.get(scheme, scheme),
            profile="url",
            description=BusURL.parse(url).render(),
        )
    kind = cluster or broker
    assert kind is not None
    if kind not in ("rabbitmq", "kafka", "activemq"):
        raise ValueError(f"unknown broker kind {kind!r}; known: activemq, kafka, rabbitmq")
    from msgbus.testing.brokers import ActiveMQ, ApacheKafka, RabbitMQ, pick_free_port

    launcher: Any = {"rabbitmq": RabbitMQ, "kafka": ApacheKafka, "activemq": ActiveMQ}[kind]
    owned = nodes is None
    if cluster is not None:
        if nodes is None:
            count = 2 if kind == "activemq" else 3
            extra = {"proxy_ports": [pick_free_port() for _ in range(count)]}
            nodes = launcher(nodes=count, **(extra if kind == "kafka" else {}))
            nodes.start()
        profile = "cluster"
    else:
        if nodes is None:
            nodes = launcher(**({"proxy_port": pick_free_port()} if kind == "kafka" else {}))
            nodes.start()
        if not hasattr(nodes, "size"):
            nodes = _SingleNode(nodes)
        profile = "D1" if kind != "kafka" else "D0"  # Kafka: acks=all, no fsync per record
    return ChaosTarget(
        _with_options(nodes.url, kind, profile),
        kind=kind,
        profile=profile,
        description=nodes.description,
        nodes=nodes,
        owned=owned,
    )
