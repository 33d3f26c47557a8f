"""Kafka's durable retries (``retry_mode="durable"``): retry topics ``<topic>.retry.<n>``,
against the session's Kafka, through both drivers. The restart case is the conformance
suite's ``test_durable_retry_survives_a_consumer_restart_or_is_refused``."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import msgbus
from msgbus.backends.kafka.retry import RETRY_DUE, RETRY_GROUP, retry_topic
from msgbus.message import DLQ_ATTEMPTS
from msgbus.testing.recorder import Recorder, wait_until

pytestmark = pytest.mark.kafka

TIMEOUT = 30.0
FAST = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


@pytest.fixture(params=("kafka-python", "confluent"))
def url(request: pytest.FixtureRequest, kafka_broker: Any) -> str:
    return f"{kafka_broker.url}?driver={request.param}"


@pytest.fixture
def topic() -> str:
    return f"kr.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bus(url: str) -> Iterator[msgbus.Bus]:
    with msgbus.connect(url, **FAST) as bus:
        yield bus


def _records(bus: msgbus.Bus, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of ``topic`` (a private read from the beginning)."""
    sub = bus.backend.subscribe(topic, None, prefetch=10, from_beginning=True)
    try:
        out: list[Any] = []
        deadline = time.monotonic() + TIMEOUT
        while len(out) < count and time.monotonic() < deadline:
            out.extend(sub.receive(10, 0.5))
        return out
    finally:
        sub.close()


def test_each_retry_level_waits_in_its_topic_then_the_message_is_dead_lettered(
    bus: msgbus.Bus, topic: str
) -> None:
    times: list[float] = []

    def fail(msg: msgbus.Message) -> None:
        assert msg.topic == topic
        times.append(time.monotonic())
        raise ValueError(f"attempt {msg.attempt}")

    failing = Recorder(fail)
    dead = Recorder()
    bus.subscribe(topic + ".dlq", dead, group="watch")
    bus.subscribe(
        topic,
        failing,
        group="g",
        retry_mode="durable",
        retry=msgbus.RetryPolicy(max_attempts=3, backoff=0.5, multiplier=2, jitter=0),
    )
    bus.start()
    bus.publish(topic, {"n": 1}, key="k", headers={"tenant": "a"}, message_id="r-1")
    (letter,) = dead.wait_for(1, TIMEOUT)
    assert [m.attempt for m in failing.attempts] == [1, 2, 3]
    assert times[1] - times[0] >= 0.45 and times[2] - times[1] >= 0.95, times
    assert letter.id == "r-1" and letter.key == "k" and letter.headers["tenant"] == "a"
    assert letter.headers[DLQ_ATTEMPTS] == "3"
    assert not any(name.startswith("msgbus-retry-") for name in letter.headers)
    for level in (1, 2):  # one record per level, for group g, due after its delay
        (record,) = _records(bus, retry_topic(topic, level), 1)
        assert record.key == "k" and record.headers[RETRY_GROUP] == "g"
        assert record.headers[RETRY_DUE].isdigit()


def test_a_waiting_retry_holds_back_neither_its_key_nor_another_group(
    bus: msgbus.Bus, topic: str
) -> None:
    """While message 0 waits in ``<topic>.retry.1`` the group handles message 1 of the same
    key (the retried message leaves its key's order); another durable group reads the retry
    topic too and acknowledges g's retry without handling it."""
    failed_once = threading.Event()

    def flaky(msg: msgbus.Message) -> None:
        if msg.payload["n"] == 0 and not failed_once.is_set():
            failed_once.set()
            raise ValueError("first try")

    g = Recorder(flaky)
    h = Recorder()
    policy = msgbus.RetryPolicy(max_attempts=2, backoff=2.0, jitter=0)
    bus.subscribe(topic, g, group="g", retry_mode="durable", retry=policy)
    bus.subscribe(topic, h, group="h", retry_mode="durable", retry=policy)
    bus.start()
    sent = time.monotonic()
    for n in (0, 1):
        bus.publish(topic, {"n": n}, key="same").result(TIMEOUT)
    g.wait_for(2, TIMEOUT)
    assert [(m.payload["n"], m.attempt) for m in g.attempts] == [(0, 1), (1, 1), (0, 2)]
    assert time.monotonic() - sent >= 1.95
    assert [m.payload["n"] for m in h.messages] == [0, 1]
    wait_until(
        lambda: bus.backend.consumer_lag(retry_topic(topic, 1), "h") == 0,
        TIMEOUT,
        "group h past g's retry record",
    )
    assert [m.payload["n"] for m in h.attempts] == [0, 1]
