"""Benchmark targets: names, drivers, profiles, durability mappings, URLs (no broker needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from msgbus.bench.targets import (
    DEFAULT_HARNESS,
    HARNESS_KINDS,
    HEADLINE,
    harness_target,
    url_target,
)


def test_kafka_is_apache_kafka_on_the_confluent_driver() -> None:
    kafka = harness_target("kafka")
    assert (kafka.kind, kafka.driver, kafka.impl, kafka.profile, kafka.nodes) == (
        "kafka",
        "confluent",
        "apache",
        "single",
        1,
    )
    assert not kafka.on_tansu
    # the URL msgbus gets names the driver; the description is the broker's own
    kafka._adopt(SimpleNamespace(url="kafka://127.0.0.1:9999", description="Apache Kafka 4.1.1"))
    assert kafka.url == "kafka://127.0.0.1:9999?driver=confluent"
    assert kafka.description == "Apache Kafka 4.1.1"


def test_kafka_python_is_a_labelled_second_row_on_the_same_broker() -> None:
    second = harness_target("kafka-python", standard=True)
    assert (second.name, second.kind, second.driver, second.shares) == (
        "kafka-python",
        "kafka",
        "kafka-python",
        "kafka",
    )
    assert second.workloads == HEADLINE
    assert second.runs_workload("latency") and not second.runs_workload("scaling")
    # named workloads: the restriction is off
    assert harness_target("kafka-python").workloads is None
    second._adopt(SimpleNamespace(url="kafka://127.0.0.1:9999", description="Apache Kafka"))
    assert second.url == "kafka://127.0.0.1:9999"  # kafka-python is msgbus's default driver


def test_tansu_is_explicit_and_labelled() -> None:
    assert "tansu" in HARNESS_KINDS and "tansu" not in DEFAULT_HARNESS
    tansu = harness_target("tansu")
    assert tansu.name == "tansu" and tansu.impl == "tansu" and tansu.on_tansu


def test_replicated_targets_and_their_profiles() -> None:
    kafka3 = harness_target("kafka-3")
    rabbit3 = harness_target("rabbitmq-3")
    for target in (kafka3, rabbit3):
        assert (target.profile, target.nodes, target.workloads) == (
            "replicated",
            3,
            ("replication",),
        )
        assert target.info()["profile"] == "replicated" and target.info()["nodes"] == 3
    assert kafka3.options("D0", 3) == {"replication_factor": 3, "partitions": 3}
    assert kafka3.options("D1", 3) is None
    assert rabbit3.options("D0", 1) is None
    assert rabbit3.options("D1", 1) == {"queue_type": "quorum"}
    assert "min.insync.replicas 2" in kafka3.durability_note("D0")
    # the single-node RabbitMQ's D1 is the same quorum queue: one node against three
    assert harness_target("rabbitmq").options("D1", 1) == {"queue_type": "quorum"}


def test_activemq_failover_pair_is_for_availability_only() -> None:
    pair = harness_target("activemq-2")
    assert (pair.kind, pair.profile, pair.nodes, pair.workloads) == (
        "activemq",
        "failover",
        2,
        ("availability",),
    )
    assert pair.options("D1", 1) == {"persistent": True, "connect_timeout": 5}
    with pytest.raises(ValueError, match="not a cluster"):
        harness_target("activemq").kill_serving_node()


def test_drivers_of_the_other_kinds() -> None:
    assert harness_target("rabbitmq").driver == "pika"
    assert harness_target("activemq").driver == "stomp.py"
    assert harness_target("memory").driver == "memory"
    assert harness_target("memory", standard=True).workloads == HEADLINE


def test_url_targets_read_the_kafka_driver_from_the_url() -> None:
    assert url_target("kafka://h:1?driver=confluent").driver == "confluent"
    assert url_target("kafka://h:1").driver == "kafka-python"
    taken = {"rabbitmq"}
    second = url_target("amqp://u:secret@h/", taken)
    assert second.name == "rabbitmq-2" and second.driver == "pika" and second.profile == "single"
    assert "secret" not in second.description and "secret" not in second.display_url()


def test_unknown_harness_target() -> None:
    with pytest.raises(ValueError, match="choose from"):
        harness_target("oracle")
