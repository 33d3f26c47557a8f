"""``codec="cloudevents"``: the binary-mode mapping on memory:// (the AMQP names), and
reading events from other producers under every prefix. The official SDK checks the Kafka
and AMQP wire forms in tests/backends/test_kafka.py and test_rabbitmq.py."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

import msgbus
from msgbus import cloudevents
from msgbus.backends.memory import MemoryBackend
from msgbus.message import CONTENT_TYPE, MESSAGE_ID, TIMESTAMP
from msgbus.testing.conformance import receive_one
from msgbus.testing.recorder import Recorder


@pytest.fixture
def bus() -> msgbus.Bus:
    with msgbus.connect(f"memory://ce-{uuid.uuid4().hex[:8]}") as bus:
        yield bus


def test_publish_maps_attributes_to_amqp_names_on_memory(bus: msgbus.Bus) -> None:
    sub = bus.backend.subscribe("acct", "raw", prefetch=10)
    bus.publish(
        "acct",
        {"id": 7},
        codec="cloudevents",
        message_id="ev-1",
        headers={"ce_type": "com.bank.account.created", "ce_subject": "7", "tenant": "a"},
    ).result(5)
    headers = receive_one(sub, 5).headers
    sub.close()
    assert headers[CONTENT_TYPE] == "application/json"
    assert headers["cloudEvents_id"] == "ev-1" == headers[MESSAGE_ID]
    assert headers["cloudEvents_type"] == "com.bank.account.created"
    assert headers["cloudEvents_source"] == "/msgbus/acct"
    assert headers["cloudEvents_subject"] == "7"
    assert headers["cloudEvents_specversion"] == "1.0"
    assert "ce_type" not in headers and headers["tenant"] == "a"
    when = dt.datetime.fromisoformat(headers["cloudEvents_time"].replace("Z", "+00:00"))
    assert int(when.timestamp() * 1000) == int(headers[TIMESTAMP])
    assert headers["cloudEvents_time"].endswith("Z")


def test_attributes_msgbus_set_are_refused(bus: msgbus.Bus) -> None:
    with pytest.raises(msgbus.ConfigurationError, match="message_id"):
        bus.publish("acct", {}, codec="cloudevents", headers={"ce_id": "x"})
    with pytest.raises(msgbus.ConfigurationError, match="set by msgbus"):
        bus.publish("acct", {}, codec="cloudevents", headers={"cloudEvents_time": "x"})
    with pytest.raises(msgbus.ConfigurationError, match="lower-case letters and digits"):
        bus.publish("acct", {}, codec="cloudevents", headers={"ce_my-ext": "x"})


@pytest.mark.parametrize("prefix", ["ce_", "cloudEvents_", "cloudEvents:"])
def test_foreign_event_reads_with_its_id_and_time(bus: msgbus.Bus, prefix: str) -> None:
    rec = Recorder()
    bus.subscribe("acct", rec, group="svc", codec="cloudevents")
    bus.start()
    backend = bus.backend
    assert isinstance(backend, MemoryBackend)
    backend.publish(
        "acct",
        b'{"id": 9}',
        key=None,
        headers={
            f"{prefix}id": "foreign-1",
            f"{prefix}source": "/dapr",
            f"{prefix}type": "t",
            f"{prefix}specversion": "1.0",
            f"{prefix}time": "2026-01-02T03:04:05.678Z",
        },
    ).result(5)
    (msg,) = rec.wait_for(1, 5)
    assert msg.id == "foreign-1" and msg.payload == {"id": 9}  # no content type: JSON
    assert msg.timestamp == dt.datetime(2026, 1, 2, 3, 4, 5, 678000, dt.UTC).timestamp()
    assert cloudevents.attributes(msg.headers) == {
        "id": "foreign-1",
        "source": "/dapr",
        "type": "t",
        "specversion": "1.0",
        "time": "2026-01-02T03:04:05.678Z",
    }


def test_time_as_an_amqp_timestamp_in_milliseconds() -> None:
    assert cloudevents.event_time_ms({"cloudEvents_time": "1700000000123"}) == 1700000000123
    assert cloudevents.event_time_ms({"ce_time": "not a time"}) is None


def test_prefix_per_backend(bus: msgbus.Bus) -> None:
    assert cloudevents.prefix_for(bus.backend) == "cloudEvents_"

    class KafkaLike:
        schemes = ("kafka",)

    assert cloudevents.prefix_for(KafkaLike()) == "ce_"
