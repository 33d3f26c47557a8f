"""The bank end-to-end suite on every real broker (each class runs in its broker's tox env)."""

from __future__ import annotations

import pytest

from msgbus.contrib.bank.testing import BankEndToEnd
from msgbus.testing.brokers import Broker


@pytest.mark.kafka
class TestBankOnKafka(BankEndToEnd):
    """On the harness's Kafka: Apache Kafka (tansu with MSGBUS_KAFKA_IMPL=tansu)."""

    accounts = 20

    @pytest.fixture
    def bank_url(self, kafka_broker: Broker) -> str:
        return kafka_broker.url


@pytest.mark.kafka
class TestBankOnKafkaConfluent(TestBankOnKafka):
    """The same, through the Kafka backend's confluent-kafka (librdkafka) driver."""

    @pytest.fixture
    def bank_url(self, kafka_broker: Broker) -> str:
        return kafka_broker.url + "?driver=confluent"


@pytest.mark.rabbitmq
class TestBankOnRabbitMQ(BankEndToEnd):
    """On a private RabbitMQ."""

    accounts = 20

    @pytest.fixture
    def bank_url(self, rabbitmq_broker: Broker) -> str:
        return rabbitmq_broker.url


@pytest.mark.activemq
class TestBankOnActiveMQ(BankEndToEnd):
    """On a private ActiveMQ Classic, over STOMP."""

    accounts = 20

    @pytest.fixture
    def bank_url(self, activemq_broker: Broker) -> str:
        return activemq_broker.url


@pytest.mark.kombu
class TestBankOnKombuRedis(BankEndToEnd):
    """On kombu's Redis transport."""

    accounts = 20

    @pytest.fixture
    def bank_url(self, redis_broker: Broker) -> str:
        return "kombu+" + redis_broker.url
