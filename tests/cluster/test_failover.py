"""Failover against real clusters: the node a client is on dies mid-stream.

One test per backend (RabbitMQ/pika and kombu+amqp on a 3-node RabbitMQ cluster with quorum
queues, ActiveMQ/stomp.py on master/slave, Kafka/kafka-python on a 3-node Apache Kafka
cluster). A publisher sends at a fixed rate with keys; a group consumes; the node is
SIGKILLed; publishing goes on; then every confirmed publish must have been delivered (none
lost), duplicates are allowed (at-least-once) and, where the backend's features promise
per-key order, no key's messages may arrive out of order. The checker is
:mod:`msgbus.testing.faults.checker`. Each test brings the killed node back before it ends.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

import msgbus
from msgbus.testing.faults import History, check
from msgbus.testing.recorder import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RATE = 100.0
"""Publishes per second."""
KEYS = 4
TIMEOUT = 90.0


class _Publisher(threading.Thread):
    """Publishes ``{"k": key, "s": seq}`` at ``RATE`` per second until stopped."""

    def __init__(self, bus: msgbus.Bus, topic: str, history: History) -> None:
        super().__init__(daemon=True, name="failover-publisher")
        self.bus, self.topic, self.history = bus, topic, history
        self.stop = threading.Event()
        self.futures: list[Any] = []
        self.errors: list[BaseException] = []

    def _settled(self, future: Any, key: str, n: int) -> None:
        error = future.exception()
        if error is not None and len(self.errors) < 5:
            self.errors.append(error)
        self.history.confirmed(key, n, error is None)

    def run(self) -> None:
        seq = 0
        started = time.monotonic()
        while not self.stop.is_set():
            key = f"k{seq % KEYS}"
            n = seq // KEYS
            self.history.published(key, n)
            try:
                future = self.bus.publish(self.topic, {"k": key, "s": n}, key=key)
            except msgbus.MsgBusError as exc:  # refused at once: not confirmed
                self.history.confirmed(key, n, ok=False)
                self.errors.append(exc)
            else:
                future.add_done_callback(lambda f, key=key, n=n: self._settled(f, key, n))
                self.futures.append(future)
            seq += 1
            # pacing at a fixed rate (a workload property, not a synchronisation)
            self.stop.wait(max(0.0, started + seq / RATE - time.monotonic()))


def _failover(url: str, kill: Any, *, order_expected: bool, **options: Any) -> None:
    """Run the workload on ``url``, call ``kill()`` (which returns the fault's name) once
    deliveries flow, keep publishing 5 s, then drain and check."""
    topic = f"failover.{uuid.uuid4().hex[:8]}"
    history = History()
    bus = msgbus.connect(url, **options)

    def handler(message: msgbus.Message) -> None:
        history.delivered(message.payload["k"], message.payload["s"], "member")

    bus.subscribe(topic, handler, group="g")
    bus.start()
    publisher = _Publisher(bus, topic, history)
    try:
        publisher.start()
        wait_until(lambda: history.delivered_count() >= 100, TIMEOUT, "deliveries before the kill")
        start = time.monotonic()
        name = kill()
        history.fault(name, start)
        killed_at = time.monotonic()
        wait_until(lambda: time.monotonic() - killed_at >= 5, 10, "5 s of publishing after it")
        publisher.stop.set()
        publisher.join(TIMEOUT)
        for future in publisher.futures:
            future.exception(TIMEOUT)  # resolved either way; the history has the outcome
        wait_until(
            lambda: history.missing_confirmed() == 0, TIMEOUT, "every confirmed message delivered"
        )
        history.finish()
    finally:
        publisher.stop.set()
        bus.close(10)
    report = check(history, order_expected=order_expected)
    print(report.summary())
    errors = "".join(f"\nfirst errors: {e!r}" for e in publisher.errors[:3])
    assert report.ok, report.summary() + errors
    assert report.failed == 0 and report.unanswered == 0, report.summary() + errors


@pytest.mark.rabbitmq
def test_rabbitmq_quorum_queue_survives_the_death_of_the_clients_node(rabbitmq_cluster) -> None:  # type: ignore[no-untyped-def]
    def kill() -> str:
        rabbitmq_cluster.kill(0)  # the backend connects to the first host in the URL
        return "SIGKILL node 0"

    try:
        _failover(
            rabbitmq_cluster.url + "?queue_type=quorum",
            kill,
            order_expected=False,
            connect_timeout=5,
        )
    finally:
        rabbitmq_cluster.start()


@pytest.mark.rabbitmq
@pytest.mark.kombu
def test_kombu_amqp_fails_over_to_another_rabbitmq_node(rabbitmq_cluster) -> None:  # type: ignore[no-untyped-def]
    # kombu declares classic queues: mirror them over every node (a classic queue lives on
    # one node, and dies with it otherwise)
    rabbitmq_cluster.set_policy(
        "failover-mirror", r"^failover\.", {"ha-mode": "all", "ha-sync-mode": "automatic"}
    )

    def kill() -> str:
        rabbitmq_cluster.kill(0)
        return "SIGKILL node 0"

    try:
        _failover(
            "kombu+" + rabbitmq_cluster.url,
            kill,
            order_expected=False,
            connect_timeout=5,
        )
    finally:
        rabbitmq_cluster.start()


@pytest.mark.activemq
def test_activemq_fails_over_from_master_to_slave(activemq_cluster) -> None:  # type: ignore[no-untyped-def]
    master = activemq_cluster.wait_master()

    def kill() -> str:
        activemq_cluster.kill(master)
        return f"SIGKILL master node {master}"

    try:
        _failover(activemq_cluster.url, kill, order_expected=True, connect_timeout=5)
    finally:
        activemq_cluster.start()


@pytest.mark.kafka
def test_kafka_keeps_every_acknowledged_record_when_a_broker_dies(kafka_cluster) -> None:  # type: ignore[no-untyped-def]
    def kill() -> str:
        kafka_cluster.kill(0)
        return "SIGKILL node 0"

    try:
        # no replication_factor: msgbus's default, min(3, brokers), must give every
        # partition a replica that outlives node 0
        _failover(kafka_cluster.url, kill, order_expected=True)
    finally:
        kafka_cluster.start()


@pytest.mark.kafka
@pytest.mark.parametrize("driver", ["kafka-python", "confluent"])
def test_kafka_topics_get_three_replicas_on_a_three_node_cluster(kafka_cluster, driver) -> None:  # type: ignore[no-untyped-def]
    """Without ``replication_factor`` msgbus creates its topics with min(3, brokers) replicas:
    3 on this cluster, so no node's death leaves a partition leaderless."""
    from kafka import KafkaAdminClient

    topic = f"replicas.{uuid.uuid4().hex[:8]}"
    with msgbus.connect(f"{kafka_cluster.url}?driver={driver}") as bus:
        bus.publish(topic, "x").result(60)
    admin = KafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    assert described["partitions"], described
    assert {len(p["replica_nodes"]) for p in described["partitions"]} == {3}, described
