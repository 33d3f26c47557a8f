"""``msgbus dlq list URL`` without topics on RabbitMQ (pika and kombu+amqp): through the
management plugin's HTTP API (``management_url``), against the session's RabbitMQ (the
harness enables the plugin); without it, a clear error naming the fix."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import msgbus
import msgbus.dlq
from msgbus.testing.recorder import Recorder

pytestmark = pytest.mark.rabbitmq

TIMEOUT = 30.0


@pytest.fixture
def managed_rabbitmq(rabbitmq_broker: Any) -> Any:
    """The session's RabbitMQ, which the harness starts with the management plugin."""
    if getattr(rabbitmq_broker, "management_url", None) is None:
        pytest.skip(f"needs the management plugin's URL; {rabbitmq_broker.description}")
    return rabbitmq_broker


def _dead_letter(url: str, topic: str) -> None:
    """One message of ``topic`` dead-lettered (nobody reads its DLQ)."""

    def fail(_msg: msgbus.Message) -> None:
        raise msgbus.Reject("bad")

    failing = Recorder(fail)
    with msgbus.connect(url) as bus:
        bus.subscribe(topic, failing, group="g")
        bus.start()
        bus.publish(topic, {"n": 1}).result(TIMEOUT)
        failing.wait_for_attempts(1, TIMEOUT)


@pytest.mark.parametrize("scheme", ["amqp", pytest.param("kombu+amqp", marks=pytest.mark.kombu)])
def test_list_without_topics_uses_the_management_api(managed_rabbitmq: Any, scheme: str) -> None:
    url = managed_rabbitmq.url.replace("amqp://", f"{scheme}://", 1)
    topic = f"ml.{uuid.uuid4().hex[:10]}"
    _dead_letter(url, topic)
    management = managed_rabbitmq.management_url
    with msgbus.connect(url) as bus:
        with pytest.raises(msgbus.ConfigurationError, match="--management-url"):
            msgbus.dlq.dead_letter_topics(bus)
        assert topic in msgbus.dlq.dead_letter_topics(bus, management_url=management)
        (summary,) = msgbus.dlq.list_dead_letters(
            bus, [], match=topic, management_url=management, idle=0.5
        )
        assert summary.topic == topic and summary.count == 1
        wrong = management.replace("guest:guest", "guest:not-the-password")
        with pytest.raises(msgbus.AuthenticationError) as refused:
            msgbus.dlq.dead_letter_topics(bus, management_url=wrong)
        assert "not-the-password" not in str(refused.value)
