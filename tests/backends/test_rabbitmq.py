"""The RabbitMQ backend against a real RabbitMQ (the harness's, or MSGBUS_RABBITMQ_URL).

``TestRabbitMQConformance`` runs the shared suite (classic and quorum group queues); the
other tests cover what is RabbitMQ's own: pipelined confirms, unroutable messages, broker
restarts, a consumer process killed mid-handler, authentication, unreachable hosts,
multi-host URLs, options, and interop with plain pika both ways. No mocks.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pika
import pytest

import msgbus
from msgbus.backends.rabbitmq import KEY_HEADER, RabbitMQBackend, group_queue
from msgbus.message import CONTENT_TYPE, CORRELATION_ID, MESSAGE_ID, TIMESTAMP
from msgbus.testing.brokers import pick_free_port
from msgbus.testing.brokers.base import HOST
from msgbus.testing.brokers.tls import make_tls_files
from msgbus.testing.conformance import BackendConformance, receive_one
from msgbus.testing.network_conformance import SECRET, NetworkConformance
from msgbus.testing.pytest_plugin import require_managed
from msgbus.testing.recorder import Recorder, drain, wait_until
from msgbus.url import BusURL

pytestmark = pytest.mark.rabbitmq

TIMEOUT = 30.0


class TestRabbitMQConformance(BackendConformance):
    """Every conformance test, on the session's RabbitMQ (classic group queues)."""

    options: dict[str, Any] = {}

    @pytest.fixture
    def url(self, rabbitmq_broker) -> str:  # type: ignore[no-untyped-def]
        return rabbitmq_broker.url

    @pytest.fixture
    def restartable_broker(self, rabbitmq_broker) -> Any:  # type: ignore[no-untyped-def]
        require_managed(rabbitmq_broker)
        return rabbitmq_broker


class TestRabbitMQQuorumConformance(BackendConformance):
    """Every conformance test with quorum group queues."""

    options: dict[str, Any] = {"queue_type": "quorum"}

    @pytest.fixture
    def url(self, rabbitmq_broker) -> str:  # type: ignore[no-untyped-def]
        return rabbitmq_broker.url


class TestRabbitMQNetwork(NetworkConformance):
    """The network suite: restarts, TLS, credentials, secret masking (one fixture each)."""

    @pytest.fixture
    def broker(self, rabbitmq_broker):  # type: ignore[no-untyped-def]
        return rabbitmq_broker

    @pytest.fixture
    def url(self, broker) -> str:  # type: ignore[no-untyped-def]
        return str(broker.url)

    def unreachable_url(self, port: int) -> str:
        return f"amqp://127.0.0.1:{port}/"

    @pytest.fixture
    def bad_credentials_url(self, broker) -> str:  # type: ignore[no-untyped-def]
        return f"amqp://ana-user:wrong-pa55@127.0.0.1:{broker.port}/"

    @pytest.fixture
    def tls(self, rabbitmq_tls_broker) -> tuple[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
        return rabbitmq_tls_broker.tls_url, {"cacertfile": str(rabbitmq_tls_broker.tls_files.ca)}

    @pytest.fixture
    def secret_urls(self, broker) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        broker.add_user("leaky", SECRET)
        return (
            f"amqp://leaky:{quote(SECRET, safe='')}@127.0.0.1:{broker.port}/",
            f"amqp://nobody:{quote(SECRET, safe='')}@127.0.0.1:{broker.port}/?connect_timeout=5",
        )


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def url(rabbitmq_broker) -> str:  # type: ignore[no-untyped-def]
    return rabbitmq_broker.url


@pytest.fixture
def backend(url: str) -> Iterator[RabbitMQBackend]:
    b = RabbitMQBackend.from_url(BusURL.parse(url))
    yield b
    b.close(5)


@pytest.fixture
def topic() -> str:
    return f"rmq.{uuid.uuid4().hex[:12]}"


def hostport(url: str) -> str:
    """``host:port`` of a harness URL."""
    host = BusURL.parse(url).hosts[0]
    return f"{host.host}:{host.port}"


def blocking(url: str) -> pika.BlockingConnection:
    """A plain pika connection to the broker of ``url``."""
    return pika.BlockingConnection(pika.URLParameters(url))


# --------------------------------------------------------------------------- publishing


def test_pipelined_confirms_thousands_outstanding_all_resolved(url: str, topic: str) -> None:
    backend = RabbitMQBackend.from_url(BusURL.parse(url), max_in_flight=10_000)
    sub = backend.subscribe(topic, "g", prefetch=1000)  # the group queue stores them
    try:
        count = 5000
        futures = [
            backend.publish(topic, f"{i}".encode(), key=None, headers={}) for i in range(count)
        ]
        outstanding = sum(not f.done() for f in futures)
        assert outstanding > 500, f"confirms were not pipelined ({outstanding} outstanding)"
        backend.flush(TIMEOUT * 2)
        assert all(f.done() and f.exception() is None for f in futures)
        bodies = sorted(int(d.body) for d in drain(sub, count, TIMEOUT * 2))
        assert bodies == list(range(count))
    finally:
        sub.close()
        backend.close(5)


def test_max_in_flight_bounds_unconfirmed_publishes(url: str, topic: str) -> None:
    backend = RabbitMQBackend.from_url(BusURL.parse(url), max_in_flight=10)
    try:
        futures = []
        for i in range(300):
            futures.append(backend.publish(topic, str(i).encode(), key=None, headers={}))
            assert sum(not f.done() for f in futures) <= 11
        backend.flush(TIMEOUT)
        assert all(f.exception() is None for f in futures)
    finally:
        backend.close(5)


def test_publish_to_a_topic_without_queue_succeeds_unless_mandatory(url: str, topic: str) -> None:
    plain = RabbitMQBackend.from_url(BusURL.parse(url))
    strict = RabbitMQBackend.from_url(BusURL.parse(url + "?mandatory=true"))
    try:
        assert plain.publish(topic, b"dropped", key=None, headers={}).result(TIMEOUT) is None
        before = strict.publish(topic + ".x", b"x", key=None, headers={})
        lost = strict.publish(topic, b"nobody", key="k", headers={MESSAGE_ID: "m-1"})
        with pytest.raises(msgbus.PublishError, match="unroutable"):
            lost.result(TIMEOUT)
        with pytest.raises(msgbus.PublishError):
            before.result(TIMEOUT)
        sub = strict.subscribe(topic, "g", prefetch=10)
        try:
            assert strict.publish(topic, b"taken", key=None, headers={}).result(TIMEOUT) is None
            assert receive_one(sub, TIMEOUT).body == b"taken"
        finally:
            sub.close()
    finally:
        plain.close(5)
        strict.close(5)


def test_publish_routed_fails_unroutable_and_reaches_the_dead_letter_store(
    backend: RabbitMQBackend, url: str, topic: str
) -> None:
    """``publish_routed`` (dead letters) is mandatory on a backend without ``mandatory=true``;
    ``ensure_group`` of the store declares the durable queue ``<topic>.dlq`` bound to it."""
    target = topic + ".dlq"
    lost = backend.publish_routed(target, b"nobody", key=None, headers={})
    with pytest.raises(msgbus.PublishError, match="unroutable"):
        lost.result(TIMEOUT)
    assert backend.publish(target, b"dropped", key=None, headers={}).result(TIMEOUT) is None
    backend.ensure_group(target, "msgbus-dlq")
    assert group_queue(target, "msgbus-dlq") == target
    assert backend.publish_routed(target, b"kept", key=None, headers={}).result(TIMEOUT) is None
    with blocking(url) as conn:
        channel = conn.channel()
        assert channel.queue_declare(target, passive=True).method.message_count == 1
        _method, _props, body = channel.basic_get(target, auto_ack=True)
        assert body == b"kept"
        channel.queue_delete(target)


def test_redrive_to_a_topic_no_queue_takes_keeps_the_dead_letter(url: str, topic: str) -> None:
    """RabbitMQ confirms a message no queue took: a redrive there must fail, not remove the
    dead letter for a republish that went nowhere."""

    def always_fails(msg: msgbus.Message) -> None:
        raise ConnectionError("smtp down")

    failing = Recorder(always_fails)
    with msgbus.connect(url) as bus:
        bus.subscribe(topic, failing, group="svc", max_attempts=1)
        bus.start()
        bus.publish(topic, {"n": 1}, message_id="lost-1").result(TIMEOUT)
        failing.wait_for_attempts(1, TIMEOUT)
    with msgbus.connect(url) as bus:
        with pytest.raises(msgbus.PublishError, match="unroutable"):
            msgbus.dlq.redrive(bus, topic, to=f"{topic}.nowhere", idle=0.5)
        assert [m.id for m in msgbus.dlq.show(bus, topic, idle=0.5)] == ["lost-1"]


def test_dead_letter_store_deleted_by_an_operator_is_declared_again(url: str, topic: str) -> None:
    """A dead letter that comes back unroutable (its queue was deleted) makes the next try
    declare the store again instead of failing the same way forever."""
    store = f"{topic}.dlq"

    def always_fails(msg: msgbus.Message) -> None:
        raise ConnectionError("smtp down")

    def stored(conn: pika.BlockingConnection) -> int | None:
        try:  # looked at with plain pika: msgbus.dlq would declare the store itself
            return conn.channel().queue_declare(store, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:  # 404: no such queue
            return None

    failing = Recorder(always_fails)
    with msgbus.connect(url) as bus, blocking(url) as conn:
        bus.subscribe(topic, failing, group="svc", max_attempts=1)
        bus.start()
        bus.publish(topic, {"n": 1}, message_id="first").result(TIMEOUT)
        wait_until(lambda: stored(conn) == 1, TIMEOUT, "the first dead letter stored")
        conn.channel().queue_delete(store)
        bus.publish(topic, {"n": 2}, message_id="second").result(TIMEOUT)
        wait_until(lambda: stored(conn) == 1, TIMEOUT, "the second one in a store declared again")


def test_durable_retry_of_a_quorum_group_waits_in_a_quorum_queue(url: str, topic: str) -> None:
    """The delay queue of a quorum group is itself a quorum queue (replicated, expired
    messages moved at least once), and the retry arrives through it."""

    def fail_first(msg: msgbus.Message) -> None:
        if msg.attempt == 1:
            raise ValueError("first try")

    rec = Recorder(fail_first)
    with msgbus.connect(url, queue_type="quorum") as bus:
        bus.subscribe(
            topic,
            rec,
            group="g",
            retry_mode="durable",
            retry=msgbus.RetryPolicy(max_attempts=3, backoff=0.2, jitter=0),
        )
        bus.start()
        bus.publish(topic, {"n": 1}).result(TIMEOUT)
        rec.wait_for_attempts(2, TIMEOUT)
    delay_queue = f"{topic}.g.retry.200"
    with blocking(url) as conn:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="x-queue-type"):
            # declaring it as a classic queue is refused: it exists as a quorum queue
            conn.channel().queue_declare(
                delay_queue,
                durable=True,
                arguments={
                    "x-message-ttl": 200,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": f"{topic}.g",
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                    "x-queue-type": "classic",
                },
            )
        conn.channel().queue_delete(delay_queue)


def test_oversized_message_is_refused_before_sending(url: str) -> None:
    backend = RabbitMQBackend.from_url(BusURL.parse(url), max_message_bytes=1000)
    try:
        assert backend.features.max_message_bytes == 1000
        with pytest.raises(msgbus.MessageTooLarge):
            backend.publish("rmq.big", b"x" * 1001, key=None, headers={})
    finally:
        backend.close(5)


def test_closed_backend_refuses_work(url: str, topic: str) -> None:
    backend = RabbitMQBackend.from_url(BusURL.parse(url))
    future = backend.publish(topic, b"last", key=None, headers={})
    backend.close(5)
    assert future.result(0) is None  # close flushed it
    backend.close(5)  # idempotent
    with pytest.raises(msgbus.BusClosed):
        backend.publish(topic, b"x", key=None, headers={})
    with pytest.raises(msgbus.BusClosed):
        backend.subscribe(topic, "g", prefetch=1)


# --------------------------------------------------------------------------- queues


def test_subscription_is_ready_when_subscribe_returns(url: str, topic: str) -> None:
    publisher = RabbitMQBackend.from_url(BusURL.parse(url))
    consumer = RabbitMQBackend.from_url(BusURL.parse(url))
    try:
        for i in range(30):
            sub = consumer.subscribe(topic, f"ready{i}", prefetch=1)
            publisher.publish(topic, str(i).encode(), key=None, headers={}).result(TIMEOUT)
            assert receive_one(sub, TIMEOUT).body == str(i).encode()
            sub.close()
    finally:
        publisher.close(5)
        consumer.close(5)


def test_group_queue_keeps_messages_while_no_member_is_connected(
    backend: RabbitMQBackend, url: str, topic: str
) -> None:
    backend.subscribe(topic, "durable", prefetch=10).close()
    for i in range(5):
        backend.publish(topic, str(i).encode(), key=None, headers={})
    backend.flush(TIMEOUT)
    conn = blocking(url)
    try:
        declared = conn.channel().queue_declare(group_queue(topic, "durable"), passive=True)
        assert declared.method.message_count == 5
    finally:
        conn.close()
    sub = backend.subscribe(topic, "durable", prefetch=10)
    try:
        assert sorted(d.body for d in drain(sub, 5)) == [str(i).encode() for i in range(5)]
    finally:
        sub.close()


def test_private_queue_is_deleted_with_its_subscription(
    backend: RabbitMQBackend, url: str, topic: str
) -> None:
    sub = backend.subscribe(topic, None, prefetch=10)
    name = sub.queue  # type: ignore[attr-defined]
    assert name.startswith("amq.gen-")
    backend.publish(topic, b"x", key=None, headers={}).result(TIMEOUT)
    assert receive_one(sub, TIMEOUT).body == b"x"
    sub.close()
    conn = blocking(url)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            conn.channel().queue_declare(name, passive=True)
    finally:
        conn.close()


def test_quorum_queue_and_mismatched_queue_type(url: str, topic: str) -> None:
    quorum = RabbitMQBackend.from_url(BusURL.parse(url), queue_type="quorum")
    classic = RabbitMQBackend.from_url(BusURL.parse(url))
    try:
        sub = quorum.subscribe(topic, "q", prefetch=10)
        quorum.publish(topic, b"q", key=None, headers={}).result(TIMEOUT)
        assert [d.body for d in drain(sub, 1)] == [b"q"]
        sub.close()
        conn = blocking(url)
        try:
            channel = conn.channel()
            declared = channel.queue_declare(
                group_queue(topic, "q"), durable=True, arguments={"x-queue-type": "quorum"}
            )
            assert declared.method.queue == group_queue(topic, "q")
        finally:
            conn.close()
        with pytest.raises(msgbus.ConfigurationError, match="queue_type"):
            classic.subscribe(topic, "q", prefetch=10)
        # the refused subscription did not break the backend
        other = classic.subscribe(topic, "c", prefetch=10)
        classic.publish(topic, b"c", key=None, headers={}).result(TIMEOUT)
        assert [d.body for d in drain(other, 1)] == [b"c"]
        other.close()
    finally:
        quorum.close(5)
        classic.close(5)


def test_nack_without_requeue_drops_and_with_requeue_redelivers(
    backend: RabbitMQBackend, topic: str
) -> None:
    sub = backend.subscribe(topic, "g", prefetch=10)
    try:
        backend.publish(topic, b"drop", key=None, headers={}).result(TIMEOUT)
        receive_one(sub, TIMEOUT).nack(requeue=False)
        backend.publish(topic, b"again", key=None, headers={}).result(TIMEOUT)
        first = receive_one(sub, TIMEOUT)
        assert first.body == b"again" and not first.redelivered
        first.nack(requeue=True)
        second = receive_one(sub, TIMEOUT)
        assert second.body == b"again" and second.redelivered
        second.ack()
        second.ack()  # settling twice is a no-op
        assert sub.receive(10, 0.3) == []
    finally:
        sub.close()


def test_prefetch_bounds_unacknowledged_deliveries(backend: RabbitMQBackend, topic: str) -> None:
    sub = backend.subscribe(topic, "g", prefetch=3)
    try:
        for i in range(10):
            backend.publish(topic, str(i).encode(), key=None, headers={})
        backend.flush(TIMEOUT)
        held: list[Any] = []
        wait_until(lambda: held.extend(sub.receive(10, 0.2)) or len(held) >= 3, TIMEOUT, "3")
        assert sub.receive(10, 0.5) == []  # the broker holds the rest back
        for delivery in held:
            delivery.ack()
        rest = drain(sub, 7)
        assert sorted(int(d.body) for d in held + rest) == list(range(10))
    finally:
        sub.close()


def test_one_member_sees_each_key_in_order(backend: RabbitMQBackend, topic: str) -> None:
    assert backend.features.per_key_order is False  # not across members: see the docstring
    sub = backend.subscribe(topic, "single", prefetch=50)
    try:
        for n in range(100):
            backend.publish(topic, str(n).encode(), key=f"k{n % 4}", headers={})
        backend.flush(TIMEOUT)
        got = drain(sub, 100)
        for k in range(4):
            assert [int(d.body) for d in got if d.key == f"k{k}"] == list(range(k, 100, 4))
    finally:
        sub.close()


# --------------------------------------------------------------------------- headers


def test_metadata_travels_in_amqp_properties(url: str, topic: str) -> None:
    conn = blocking(url)
    bus = msgbus.connect(url)
    try:
        channel = conn.channel()
        channel.exchange_declare("msgbus", "topic", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, "msgbus", routing_key=topic)
        before = int(time.time())
        bus.publish(
            topic,
            {"id": 7},
            key="7",
            headers={"tenant": "a:b", "unicode": "héllo ✓"},
            correlation_id="c-1",
            message_id="m-1",
        ).result(TIMEOUT)
        method, props, body = wait_for_get(channel, queue)
        assert body == b'{"id":7}' or body.replace(b" ", b"") == b'{"id":7}'
        assert props.content_type == "application/json"
        assert props.message_id == "m-1"
        assert props.correlation_id == "c-1"
        assert props.delivery_mode == 2
        assert before - 1 <= props.timestamp <= time.time() + 1
        assert props.headers[KEY_HEADER] == "7"
        assert props.headers["tenant"] == "a:b"
        assert props.headers["unicode"] == "héllo ✓"
        assert int(props.headers[TIMESTAMP]) // 1000 == props.timestamp
        assert method.routing_key == topic and method.exchange == "msgbus"
    finally:
        conn.close()
        bus.close(5)


def wait_for_get(channel: Any, queue: str) -> tuple[Any, Any, bytes]:
    """basic_get until a message is there (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        channel.connection.process_data_events(time_limit=0.05)
    raise AssertionError("no message in the queue")


def test_plain_pika_client_to_msgbus(url: str, topic: str) -> None:
    bus = msgbus.connect(url)
    rec = Recorder()
    bus.subscribe(topic, rec, group="from-plain")
    bus.start()
    conn = blocking(url)
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "msgbus",
            topic,
            b'{"hello": "world"}',
            pika.BasicProperties(
                content_type="application/json",
                correlation_id="c-9",
                message_id="plain-1",
                timestamp=1_700_000_000,
                headers={"tenant": "x", "count": 3, "flag": True, KEY_HEADER: "k-9"},
            ),
        )
        channel.basic_publish("msgbus", topic, b"plain bytes")
        first, second = rec.wait_for(2, TIMEOUT)
        assert first.payload == {"hello": "world"}
        assert first.id == "plain-1" and first.correlation_id == "c-9"
        assert first.key == "k-9"
        assert dict(first.headers) == {"tenant": "x", "count": "3", "flag": "True"}
        assert first.timestamp == 1_700_000_000
        assert second.payload == b"plain bytes" and second.content_type is None
        assert second.id and second.key is None and second.timestamp == 0.0
    finally:
        conn.close()
        bus.close(5)


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_long_outage_fails_pending_publishes_clearly(
    rabbitmq_broker,  # type: ignore[no-untyped-def]
    topic: str,
) -> None:
    require_managed(rabbitmq_broker)
    backend = RabbitMQBackend.from_url(
        BusURL.parse(rabbitmq_broker.url), connect_timeout=5, reconnect_timeout=1
    )
    sub = backend.subscribe(topic, "g", prefetch=10)
    try:
        rabbitmq_broker.stop()
        future = backend.publish(topic, b"x", key=None, headers={})
        with pytest.raises(msgbus.BrokerUnavailable, match="for more than 1s"):
            future.result(TIMEOUT)
        with pytest.raises(msgbus.BrokerUnavailable):
            sub.receive(1, 5)
        rabbitmq_broker.start()
        wait_until(
            lambda: backend.publish(topic, b"y", key=None, headers={}).exception(TIMEOUT) is None,
            TIMEOUT,
            "publishing after the broker came back",
        )
        assert b"y" in [d.body for d in drain(sub, 1)]
    finally:
        sub.close()
        backend.close(5)


@pytest.mark.slow
def test_health_follows_a_broker_outage(
    rabbitmq_broker,  # type: ignore[no-untyped-def]
    topic: str,
) -> None:
    require_managed(rabbitmq_broker)
    bus = msgbus.connect(rabbitmq_broker.url, connect_timeout=5)
    rec = Recorder()
    bus.subscribe(topic, rec, group="g")
    bus.start()
    try:
        assert bus.health().ready
        rabbitmq_broker.stop()
        wait_until(lambda: not bus.health().ready, TIMEOUT, "the bus to report the outage")
        health = bus.health()
        assert health.state == "reconnecting" and health.last_error_at is not None
        assert health.subscriptions[0].state == "reconnecting"
        assert "RabbitMQ" in (health.subscriptions[0].last_error or "")
        assert "guest" not in str(health.as_dict())  # no credentials in the probe body
        rabbitmq_broker.start()
        wait_until(lambda: bus.health().ready, TIMEOUT * 2, "the bus to be ready again")
        bus.publish(topic, "after").result(TIMEOUT)
        assert rec.wait_for(1, TIMEOUT)[0].payload == "after"
    finally:
        bus.close(5)


def test_unknown_vhost_fails_at_once(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(msgbus.BrokerUnavailable, match="vhost 'nope'"):
        msgbus.connect(f"amqp://guest:guest@{hostport(url)}/nope", connect_timeout=10)
    assert time.monotonic() - started < 3


def test_unresponsive_server_is_unavailable_in_bounded_time() -> None:
    with socket.socket() as server:  # accepts TCP but never speaks AMQP
        server.bind((HOST, pick_free_port()))
        server.listen(1)
        started = time.monotonic()
        with pytest.raises(msgbus.BrokerUnavailable):
            msgbus.connect(f"amqp://127.0.0.1:{server.getsockname()[1]}/", connect_timeout=2)
        assert time.monotonic() - started < 8


def test_hosts_are_tried_in_turn(url: str, topic: str) -> None:
    dead = pick_free_port()
    bus = msgbus.connect(f"amqp://guest:guest@127.0.0.1:{dead},{hostport(url)}/")
    try:
        assert f"127.0.0.1:{dead}" in bus.backend.describe()
        rec = Recorder()
        bus.subscribe(topic, rec, group="g")
        bus.start()
        bus.publish(topic, "x").result(TIMEOUT)
        assert rec.wait_for(1, TIMEOUT)[0].payload == "x"
    finally:
        bus.close(5)


# --------------------------------------------------------------------------- options


def test_unknown_option_lists_the_valid_ones(url: str) -> None:
    with pytest.raises(msgbus.UnknownOption) as info:
        msgbus.connect(url, prefetch_count=10)
    text = str(info.value)
    for name in ("exchange", "queue_type", "heartbeat", "max_in_flight", "cacertfile"):
        assert name in text
    with pytest.raises(msgbus.UnknownOption, match="did you mean 'heartbeat'"):
        msgbus.connect(url + "?heartbeet=1")
    with pytest.raises(msgbus.ConfigurationError, match="queue_type"):
        msgbus.connect(url, queue_type="stream")
    with pytest.raises(msgbus.ConfigurationError, match="connect_timeout"):
        msgbus.connect(url, connect_timeout=0)
    with pytest.raises(msgbus.ConfigurationError, match=r"amq\."):
        msgbus.connect(url, exchange="amq.topic")


def test_password_is_never_shown(url: str) -> None:
    secret = "pa55-w0rd-XYZ"
    where = hostport(url)
    with pytest.raises(msgbus.UnknownOption) as info:
        msgbus.connect(f"amqp://guest:{secret}@{where}/?bogus=1")
    assert secret not in str(info.value)
    with pytest.raises(msgbus.ConfigurationError) as bad:
        msgbus.connect(f"amqp://guest@{where}/", password=secret, heartbeat="x")
    assert secret not in str(bad.value)
    with pytest.raises(msgbus.AuthenticationError) as auth:
        msgbus.connect(f"amqp://guest:{secret}@{where}/")
    assert secret not in str(auth.value) and secret not in repr(auth.value)
    bus = msgbus.connect(f"amqp://guest:guest@{where}/")
    try:
        backend = bus.backend
        for text in (repr(bus), repr(backend), backend.describe(), repr(backend.options)):
            assert ":guest@" not in text and "password='guest'" not in text
    finally:
        bus.close(5)
    port = pick_free_port()
    with pytest.raises(msgbus.BrokerUnavailable) as down:
        msgbus.connect(f"amqp://bob:{secret}@127.0.0.1:{port}/", connect_timeout=1)
    assert secret not in str(down.value) and secret not in repr(down.value)


def test_url_form_vhost_heartbeat_and_exchange(url: str, topic: str) -> None:
    conn = blocking(url)
    conn.close()
    bus = msgbus.connect(
        f"amqp://guest:guest@{hostport(url)}/%2F?heartbeat=5&connection_timeout=3000"
        "&exchange=msgbus-alt"
    )
    try:
        backend = bus.backend
        assert isinstance(backend, RabbitMQBackend)
        assert backend.vhost == "/"
        assert backend.options.heartbeat == 5 and backend.options.exchange == "msgbus-alt"
        rec = Recorder()
        bus.subscribe(topic, rec, group="g")
        bus.start()
        bus.publish(topic, "alt").result(TIMEOUT)
        assert rec.wait_for(1, TIMEOUT)[0].payload == "alt"
    finally:
        bus.close(5)
    assert RabbitMQBackend(BusURL.parse("amqp://h"), _opts()).vhost == "/"
    assert RabbitMQBackend(BusURL.parse("amqp://h/prod%2Fa"), _opts()).vhost == "prod/a"
    tls = RabbitMQBackend(BusURL.parse("amqps://h1,h2:5000/v"), _opts(verify="verify_none"))
    assert tls.use_ssl and tls.host_ports == [("h1", 5671), ("h2", 5000)]


def _opts(**changes: Any) -> Any:
    from msgbus.backends.rabbitmq import RabbitMQOptions

    return RabbitMQOptions(**changes)


def test_amqps_to_a_closed_port_fails_in_bounded_time() -> None:
    port = pick_free_port()
    with pytest.raises(msgbus.BrokerUnavailable):
        msgbus.connect(f"amqps://127.0.0.1:{port}/", connect_timeout=1, verify="verify_none")
    with pytest.raises(msgbus.ConfigurationError, match="TLS"):
        msgbus.connect(f"amqps://127.0.0.1:{port}/", cacertfile="/nonexistent/ca.pem")


def test_headers_round_trip_exactly(backend: RabbitMQBackend, topic: str) -> None:
    headers = {
        "colon": "a:b:c",
        "newline": "one\ntwo",
        "unicode": "héllo ✓ 😀 日本",
        "empty": "",
        "nämé-ünïcödé": "v4",
        "x-death": "not really",
        CONTENT_TYPE: "application/x-test",
        MESSAGE_ID: "id-1",
        TIMESTAMP: "1700000000123",
        CORRELATION_ID: "corr-1",
        "msgbus-dlq-error": "boom",
    }
    sub = backend.subscribe(topic, "g", prefetch=10)
    try:
        backend.publish(topic, b"\x00body\x00", key="k:1\nx", headers=headers).result(TIMEOUT)
        delivery = receive_one(sub, TIMEOUT)
        delivery.ack()
        assert delivery.headers == headers
        assert delivery.key == "k:1\nx"
        assert delivery.body == b"\x00body\x00"
        assert delivery.native_id == "id-1"
    finally:
        sub.close()


def test_settling_from_other_threads(backend: RabbitMQBackend, topic: str) -> None:
    sub = backend.subscribe(topic, "g", prefetch=200)
    try:
        for i in range(400):
            backend.publish(topic, str(i).encode(), key=None, headers={})
        backend.flush(TIMEOUT)
        got: list[Any] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 400 and time.monotonic() < deadline:
            batch = sub.receive(100, 1.0)
            got += batch
            threads = [threading.Thread(target=d.ack) for d in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert sorted(int(d.body) for d in got) == list(range(400))
        assert sub.receive(10, 0.3) == []
    finally:
        sub.close()


# --------------------------------------------------------------------------- TLS (amqps://)


def _tls_round_trip(bus: msgbus.Bus, topic: str) -> None:
    rec = Recorder()
    bus.subscribe(topic, rec, group="g")
    bus.start()
    bus.publish(topic, "over tls").result(TIMEOUT)
    assert rec.wait_for(1, TIMEOUT)[0].payload == "over tls"


def test_amqps_with_a_client_certificate_in_the_url(rabbitmq_tls_broker: Any, topic: str) -> None:
    files = rabbitmq_tls_broker.tls_files
    query = urlencode(
        {"cacertfile": files.ca, "certfile": files.client_cert, "keyfile": files.client_key}
    )
    bus = msgbus.connect(f"{rabbitmq_tls_broker.tls_url}?{query}")
    try:
        assert bus.backend.options.certfile == str(files.client_cert)
        _tls_round_trip(bus, topic)
    finally:
        bus.close(5)


def test_amqps_to_an_untrusted_server_fails_at_once_naming_tls(
    rabbitmq_tls_broker: Any,
    tmp_path: Path,
) -> None:
    secret = "tls-pa55-w0rd"
    url = f"amqps://guest:{secret}@{HOST}:{rabbitmq_tls_broker.tls_port}/"
    other_ca = make_tls_files(tmp_path / "other-pki").ca
    ca = str(rabbitmq_tls_broker.tls_files.ca)
    attempts: list[dict[str, Any]] = [
        {},  # the system's CAs only
        {"cacertfile": str(other_ca)},  # another PKI's CA
        {"cacertfile": ca, "server_name_indication": "broker.example"},  # wrong host name
    ]
    for options in attempts:
        started = time.monotonic()
        with pytest.raises(msgbus.BrokerUnavailable, match="TLS certificate verification") as info:
            msgbus.connect(url, connect_timeout=10, **options)
        assert time.monotonic() - started < 3, f"{options}: a TLS failure must not be retried"
        assert not isinstance(info.value, msgbus.AuthenticationError)
        assert secret not in str(info.value) and secret not in repr(info.value)
    # verify_none accepts the unknown CA (and the password is right again)
    bus = msgbus.connect(rabbitmq_tls_broker.tls_url, verify="verify_none")
    bus.close(5)


def test_plain_amqp_and_amqps_on_the_wrong_port_fail_in_bounded_time(
    rabbitmq_tls_broker: Any,
) -> None:
    broker = rabbitmq_tls_broker
    ca = str(broker.tls_files.ca)
    for url, options in (
        (f"amqp://guest:guest@{HOST}:{broker.tls_port}/", {}),
        (f"amqps://guest:guest@{HOST}:{broker.port}/", {"cacertfile": ca}),
    ):
        started = time.monotonic()
        with pytest.raises(msgbus.BrokerUnavailable):
            msgbus.connect(url, connect_timeout=2, **options)
        assert time.monotonic() - started < 6


def test_cli_publish_timeout_is_one_line(url: str) -> None:
    """``--timeout 0``: the confirms are not waited for; a missing one is a one-line error,
    never a TimeoutError traceback."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "msgbus.cli", "publish", url, "cli-timeout", "--timeout", "0"],
        input="".join(f"{n}\n" for n in range(200)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),  # not the repository: import msgbus as installed
    )
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    if done.returncode == 0:  # every confirm was already there
        assert lines == ["published 200 message(s) to cli-timeout"]
    else:
        assert done.returncode == 1
        assert lines[0].startswith("msgbus: error: ") and "(--timeout)" in lines[0]


def test_cli_on_an_unreachable_broker_says_how_long_it_tried() -> None:
    import subprocess
    import sys

    url = f"amqp://u:Secr3t@127.0.0.1:{pick_free_port()}/?connect_timeout=1"
    done = subprocess.run(
        [sys.executable, "-m", "msgbus.cli", "publish", url, "t", "--data", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),  # not the repository: import msgbus as installed
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert "(tried for" in line and "connect_timeout=1s" in line and "Secr3t" not in line


def test_consume_command_serves_prometheus_metrics(
    rabbitmq_broker,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus")
    import subprocess
    import sys
    import urllib.request

    topic, port = f"cli.{uuid.uuid4().hex[:8]}", pick_free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "msgbus.cli",
            "consume",
            rabbitmq_broker.url,
            topic,
            "--group",
            "watchers",
            "--metrics-port",
            str(port),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # ends at EOF if the process dies
            if line.startswith("consuming"):
                break
        with msgbus.connect(rabbitmq_broker.url) as bus:
            for n in range(3):
                bus.publish(topic, {"n": n}).result(TIMEOUT)

        def counted() -> bool:
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            return any(
                line.startswith("msgbus_messages_acked_total{")
                and f'messaging_destination_name="{topic}"' in line
                and 'messaging_consumer_group_name="watchers"' in line
                and 'messaging_system="rabbitmq"' in line
                and line.endswith(" 3.0")
                for line in text.splitlines()
            )

        wait_until(counted, TIMEOUT, "3 acked messages on /metrics")
    finally:
        process.terminate()
        process.communicate(timeout=TIMEOUT)


def test_rabbitmq_reports_consumer_lag() -> None:
    # so that the conformance suite's lag test runs here instead of skipping
    assert RabbitMQBackend.reports_consumer_lag is True


def test_consumer_lag_of_a_missing_queue_is_none(url: str) -> None:
    with msgbus.connect(url) as bus:
        assert bus.backend.consumer_lag(f"nope.{uuid.uuid4().hex[:8]}", "g") is None
        bus.publish("lag.check", "x").result(TIMEOUT)  # the connection survived the 404


# --------------------------------------------------------------------------- CloudEvents


def test_cloudevents_sdk_reads_what_msgbus_sends(url: str, topic: str) -> None:
    from cloudevents.core.bindings import amqp as ce_amqp

    conn = blocking(url)
    try:
        channel = conn.channel()
        channel.exchange_declare("msgbus", "topic", durable=True)  # as msgbus declares it
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, "msgbus", routing_key=topic)
        with msgbus.connect(url) as bus:
            bus.publish(
                topic,
                {"id": 7},
                codec="cloudevents",
                message_id="ev-7",
                headers={"ce_type": "com.bank.account.created", "cloudEvents_source": "/bank"},
            ).result(TIMEOUT)
        _method, props, body = wait_for_get(channel, queue)
    finally:
        conn.close()
    assert "cloudEvents_type" in props.headers and "ce_type" not in props.headers
    event = ce_amqp.from_binary_event(
        ce_amqp.AMQPMessage(
            properties={"content-type": props.content_type},
            application_properties=props.headers,
            application_data=body,
        )
    )
    attrs = event.get_attributes()
    assert attrs["id"] == "ev-7" and attrs["specversion"] == "1.0"
    assert attrs["type"] == "com.bank.account.created" and attrs["source"] == "/bank"
    assert attrs["datacontenttype"] == "application/json"
    assert abs(attrs["time"].timestamp() - time.time()) < 60
    assert event.get_data() == {"id": 7}


def test_msgbus_reads_what_the_cloudevents_sdk_sends(url: str, topic: str) -> None:
    import datetime as dt

    from cloudevents.core.bindings import amqp as ce_amqp
    from cloudevents.core.v1.event import CloudEvent

    from msgbus import cloudevents

    when = dt.datetime(2026, 5, 4, 3, 2, 1, 250000, tzinfo=dt.UTC)
    event = CloudEvent(
        attributes={
            "id": "sdk-1",
            "type": "com.example.made",
            "source": "/sdk",
            "time": when,
            "datacontenttype": "application/json",
        },
        data={"made": True},
    )
    message = ce_amqp.to_binary_event(event)  # time: an AMQP timestamp (int milliseconds)
    rec = Recorder()
    with msgbus.connect(url) as bus:
        bus.subscribe(topic, rec, group="from-sdk")
        bus.start()
        conn = blocking(url)
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.basic_publish(
                "msgbus",
                topic,
                message.application_data,
                pika.BasicProperties(
                    content_type=message.properties["content-type"],
                    headers=message.application_properties,
                ),
            )
        finally:
            conn.close()
        (msg,) = rec.wait_for(1, TIMEOUT)
    assert msg.id == "sdk-1" and msg.payload == {"made": True}
    assert msg.timestamp == when.timestamp()
    attrs = cloudevents.attributes(msg.headers)
    assert attrs["type"] == "com.example.made" and attrs["source"] == "/sdk"


# --------------------------------------------------------------------------- driver fast path


def test_fast_path_falls_back_on_an_unverified_pika_with_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import pika

    from msgbus.backendkit import fastpath

    monkeypatch.setattr(pika, "__version__", "9.0.0")
    monkeypatch.setattr(fastpath, "_logged", set())
    monkeypatch.delenv(fastpath.ENV_VAR, raising=False)
    from msgbus.backends.rabbitmq import RabbitMQOptions

    with caplog.at_level(logging.INFO, logger="msgbus.rabbitmq"):
        for _ in range(2):
            backend = RabbitMQBackend(BusURL.parse("amqp://localhost"), RabbitMQOptions())
            assert backend._fast is None  # the stock path
    lines = [r for r in caplog.records if "fast path" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "pika 9.0.0 is not a version it was verified on" in lines[0].getMessage()


def test_fast_path_is_used_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from msgbus.backendkit import fastpath
    from msgbus.backends.rabbitmq import RabbitMQOptions

    url = BusURL.parse("amqp://localhost")
    monkeypatch.delenv(fastpath.ENV_VAR, raising=False)
    assert RabbitMQBackend(url, RabbitMQOptions())._fast is not None
    assert RabbitMQBackend(url, RabbitMQOptions(fast_path=False))._fast is None
    monkeypatch.setenv(fastpath.ENV_VAR, "0")
    assert RabbitMQBackend(url, RabbitMQOptions())._fast is None
