"""The ActiveMQ backend against a real ActiveMQ Classic (the harness's, or a private one).

``TestActiveMQConformance`` runs the shared suite; the other tests cover what is ActiveMQ's
own: pipelined receipts, STOMP header escaping, virtual topics, message groups, broker
restarts, crashed consumers, authentication, interop with plain stomp.py clients, and
configuration errors. No mocks: every test talks to a real broker.
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

import pytest
import stomp

import msgbus
from msgbus.backends.activemq import ActiveMQBackend, group_destination, topic_destination
from msgbus.message import CONTENT_TYPE, CORRELATION_ID, MESSAGE_ID, TIMESTAMP
from msgbus.testing.brokers import ActiveMQ, BrokerNotInstalled, pick_free_port
from msgbus.testing.brokers.activemq import stomp_handshake
from msgbus.testing.brokers.base import HOST, ci_requested
from msgbus.testing.brokers.tls import make_tls_files
from msgbus.testing.conformance import BackendConformance, receive_one
from msgbus.testing.network_conformance import SECRET, NetworkConformance
from msgbus.testing.pytest_plugin import require_managed
from msgbus.testing.recorder import Recorder, drain, wait_until
from msgbus.url import BusURL

pytestmark = pytest.mark.activemq

TIMEOUT = 30.0


class TestActiveMQConformance(BackendConformance):
    """Every conformance test, on the session's ActiveMQ."""

    options: dict[str, Any] = {}

    @pytest.fixture
    def url(self, activemq_broker) -> str:  # type: ignore[no-untyped-def]
        return activemq_broker.url

    @pytest.fixture
    def restartable_broker(self, activemq_broker) -> Any:  # type: ignore[no-untyped-def]
        require_managed(activemq_broker)
        return activemq_broker


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def url(activemq_broker) -> str:  # type: ignore[no-untyped-def]
    return activemq_broker.url


@pytest.fixture
def backend(url: str) -> Iterator[ActiveMQBackend]:
    b = ActiveMQBackend.from_url(BusURL.parse(url))
    yield b
    b.close(5)


@pytest.fixture
def topic() -> str:
    return f"amq.{uuid.uuid4().hex[:12]}"


class TestActiveMQNetwork(NetworkConformance):
    """The network suite: restarts, TLS, credentials, secret masking (one fixture each)."""

    @pytest.fixture
    def broker(self, activemq_broker):  # type: ignore[no-untyped-def]
        return activemq_broker

    @pytest.fixture
    def url(self, broker) -> str:  # type: ignore[no-untyped-def]
        return str(broker.url)

    def unreachable_url(self, port: int) -> str:
        return f"stomp://127.0.0.1:{port}"

    @pytest.fixture
    def bad_credentials_url(self, auth_broker: ActiveMQ) -> str:
        return f"stomp://{USER}:wrong-pa55@{auth_broker.url.split('://', 1)[1]}"

    @pytest.fixture
    def tls(self, activemq_tls_broker) -> tuple[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
        return activemq_tls_broker.tls_url, {"ssl_ca_certs": str(activemq_tls_broker.tls_files.ca)}

    @pytest.fixture
    def secret_urls(self, broker) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        # the harness broker takes any credentials: the password still goes through stomp.py
        secret = quote(SECRET, safe="")
        return (
            f"stomp://leaky:{secret}@127.0.0.1:{broker.port}",
            f"stomp://leaky:{secret}@127.0.0.1:{pick_free_port()}?connect_timeout=1",
        )


class RawClient(stomp.ConnectionListener):
    """A plain stomp.py 1.2 client that records what it receives."""

    def __init__(self, url: str, *, login: str | None = None, passcode: str | None = None) -> None:
        parsed = BusURL.parse(url)
        self.conn = stomp.Connection12(
            [(parsed.hosts[0].host, parsed.hosts[0].port)], auto_decode=False
        )
        self.cond = threading.Condition()
        self.frames: list[Any] = []
        self.receipts: set[str] = set()
        self.conn.set_listener("raw", self)
        self.conn.connect(username=login, passcode=passcode, wait=True)

    def on_message(self, frame: Any) -> None:
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.add(frame.headers["receipt-id"])
            self.cond.notify_all()

    def wait_receipt(self, receipt: str) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: receipt in self.receipts, TIMEOUT), receipt

    def wait_frames(self, count: int) -> list[Any]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.frames) >= count, TIMEOUT)
            return list(self.frames)

    def subscribe(self, destination: str) -> None:
        receipt = uuid.uuid4().hex
        self.conn.subscribe(destination, id=receipt, ack="auto", headers={"receipt": receipt})
        self.wait_receipt(receipt)

    def close(self) -> None:
        self.conn.disconnect()


# --------------------------------------------------------------------------- publishing


def test_pipelined_receipts_thousands_outstanding_all_resolved(url: str, topic: str) -> None:
    backend = ActiveMQBackend.from_url(BusURL.parse(url), max_in_flight=5000)
    sub = backend.subscribe(topic, "g", prefetch=1000)  # the group queue stores them
    try:
        count = 4000
        futures = [
            backend.publish(topic, f"{i}".encode(), key=None, headers={}) for i in range(count)
        ]
        outstanding = backend._publisher.window.pending
        assert outstanding > 500, f"receipts were not pipelined ({outstanding} outstanding)"
        backend.flush(TIMEOUT * 2)
        assert all(f.done() and f.exception() is None for f in futures)
        assert backend._publisher.window.pending == 0
        bodies = sorted(int(d.body) for d in drain(sub, count, TIMEOUT * 2))
        assert bodies == list(range(count))
    finally:
        sub.close()
        backend.close(5)


def test_error_frame_with_receipt_fails_only_its_future(backend: ActiveMQBackend) -> None:
    publisher = backend._publisher
    destination = topic_destination("amq.err")
    good_before = backend.publish("amq.err", b"1", key=None, headers={})
    # ActiveMQ answers an unknown transaction with an ERROR naming the SEND's receipt
    bad = publisher.publish(destination, b"x", {"persistent": "true", "transaction": "nope"})
    with pytest.raises(msgbus.PublishError, match="Invalid transaction"):
        bad.result(TIMEOUT)
    assert good_before.result(TIMEOUT) is None
    generation = publisher.link.generation
    assert backend.publish("amq.err", b"2", key=None, headers={}).result(TIMEOUT) is None
    assert publisher.link.generation == generation  # no reconnection for that


def test_error_frame_without_receipt_fails_outstanding_and_reconnects(
    backend: ActiveMQBackend,
) -> None:
    publisher = backend._publisher
    link = publisher.link
    generation = link.generation
    futures = [backend.publish("amq.err", b"x", key=None, headers={}) for _ in range(200)]
    conn = link.conn
    assert conn is not None
    conn.ack("no-such-ack-id")  # answered by an ERROR frame without a receipt-id
    wait_until(lambda: link.generation > generation and link.conn is not None, TIMEOUT, "reconnect")
    for future in futures:
        error = future.exception(TIMEOUT)
        assert error is None or isinstance(error, msgbus.PublishError)
    assert backend.publish("amq.err", b"y", key=None, headers={}).result(TIMEOUT) is None


def test_a_message_the_broker_drops_the_connection_for_fails_after_resends(
    backend: ActiveMQBackend,
) -> None:
    publisher = backend._publisher
    generation = publisher.link.generation
    # ActiveMQ closes the connection (no ERROR, no receipt) on a SEND without destination
    poison = publisher.publish("", b"x", {"persistent": "true"})
    with pytest.raises(msgbus.PublishError, match="3 connections in a row"):
        poison.result(TIMEOUT)
    assert publisher.link.generation >= generation + 2  # sent on three connections
    assert backend.publish("amq.poison", b"ok", key=None, headers={}).result(TIMEOUT) is None


def test_oversized_message_is_refused_before_sending(url: str) -> None:
    backend = ActiveMQBackend.from_url(BusURL.parse(url), max_message_bytes=1000)
    try:
        assert backend.features.max_message_bytes == 1000
        with pytest.raises(msgbus.MessageTooLarge):
            backend.publish("amq.big", b"x" * 1001, key=None, headers={})
    finally:
        backend.close(5)


def test_nul_in_a_header_is_a_clear_error(backend: ActiveMQBackend) -> None:
    with pytest.raises(msgbus.ConfigurationError, match="NUL"):
        backend.publish("amq.nul", b"x", key=None, headers={"a": "b\x00c"})
    with pytest.raises(msgbus.ConfigurationError, match="NUL"):
        backend.publish("amq.nul", b"x", key="k\x00", headers={})


def test_invalid_topic_and_group_names_are_refused(backend: ActiveMQBackend) -> None:
    with pytest.raises(msgbus.ConfigurationError):
        backend.publish("a/b", b"x", key=None, headers={})
    with pytest.raises(msgbus.ConfigurationError):
        backend.subscribe("amq.t", "a*b", prefetch=1)
    with pytest.raises(msgbus.ConfigurationError, match="from_beginning"):
        backend.subscribe("amq.t", "g", prefetch=1, from_beginning=True)


# --------------------------------------------------------------------------- headers, bodies


def test_header_escaping_round_trip(backend: ActiveMQBackend, topic: str) -> None:
    headers = {
        "colon": "a:b:c",
        "newline": "one\ntwo",
        "carriage": "one\rtwo\r\n",
        "backslash": "c:\\temp\\n",
        "unicode": "héllo ✓ 😀 日本",
        "empty": "",
        "name:with:colons": "v1",
        "name\nwith newline": "v2",
        "name\\with\\backslash": "v3",
        "nämé-ünïcödé": "v4",
        "hyphen-ated.dotted_name": "v5",
        # names STOMP or ActiveMQ would interpret or overwrite
        "destination": "d",
        "expires": "1",
        "priority": "9",
        "type": "t",
        "timestamp": "ts",
        "message-id": "mid",
        "subscription": "sub",
        "ack": "a",
        "receipt": "r",
        "persistent": "false",
        "reply-to": "/queue/x",
        "correlation-id": "user-corr",
        "JMSType": "jt",
        "JMSXGroupID": "user-group",
        "AMQ_SCHEDULED_DELAY": "100000",
        "content-length": "3",
        "": "empty name",
    }
    wire = {
        **headers,
        CONTENT_TYPE: "application/x-test",
        MESSAGE_ID: "id-1",
        TIMESTAMP: "1700000000000",
        CORRELATION_ID: "corr-1",
    }
    sub = backend.subscribe(topic, "g", prefetch=10)
    try:
        backend.publish(topic, b"body", key="k:1\nx", headers=wire).result(TIMEOUT)
        delivery = receive_one(sub, TIMEOUT)
        delivery.ack()
        assert delivery.headers == wire
        assert delivery.key == "k:1\nx"
        assert delivery.body == b"body"
        assert delivery.native_id and delivery.native_id.startswith("ID:")
    finally:
        sub.close()


def test_binary_bodies_with_nul_bytes_round_trip(backend: ActiveMQBackend, topic: str) -> None:
    bodies = [
        b"\x00",
        b"\x00\x00\x00",
        bytes(range(256)) * 16,
        b"\x00\nMESSAGE\ncontent-length:0\n\n\x00",
        b"",
        "ünïcode\x00".encode(),
    ]
    sub = backend.subscribe(topic, "g", prefetch=10)
    try:
        for body in bodies:
            backend.publish(topic, body, key="same", headers={})
        backend.flush(TIMEOUT)
        assert [d.body for d in drain(sub, len(bodies))] == bodies
    finally:
        sub.close()


# --------------------------------------------------------------------------- virtual topics


def test_subscription_is_ready_when_subscribe_returns(url: str, topic: str) -> None:
    publisher = ActiveMQBackend.from_url(BusURL.parse(url))
    consumer = ActiveMQBackend.from_url(BusURL.parse(url))
    try:
        for i in range(30):
            sub = consumer.subscribe(topic, f"ready{i}", prefetch=1)
            publisher.publish(topic, str(i).encode(), key=None, headers={}).result(TIMEOUT)
            assert receive_one(sub, TIMEOUT).body == str(i).encode()
            sub.close()
    finally:
        publisher.close(5)
        consumer.close(5)


def test_destinations_and_dotted_group_names(
    backend: ActiveMQBackend, url: str, topic: str
) -> None:
    assert topic_destination("a.b") == "/topic/VirtualTopic.a.b"
    assert group_destination("a.b", "svc.x") == "/queue/Consumer.svc~x.VirtualTopic.a.b"
    assert group_destination("a.b", None) == "/topic/VirtualTopic.a.b"
    dotted = backend.subscribe(topic, "svc.one", prefetch=10)
    private = backend.subscribe(topic, None, prefetch=10)
    try:
        backend.publish(topic, b"x", key=None, headers={}).result(TIMEOUT)
        assert receive_one(dotted, TIMEOUT).body == b"x"
        assert receive_one(private, TIMEOUT).body == b"x"
    finally:
        dotted.close()
        private.close()


def test_group_queue_keeps_messages_while_no_member_is_connected(
    backend: ActiveMQBackend, topic: str
) -> None:
    backend.subscribe(topic, "durable", prefetch=10).close()
    for i in range(5):
        backend.publish(topic, str(i).encode(), key=None, headers={})
    backend.flush(TIMEOUT)
    sub = backend.subscribe(topic, "durable", prefetch=10)
    try:
        assert sorted(d.body for d in drain(sub, 5)) == [str(i).encode() for i in range(5)]
    finally:
        sub.close()


def test_nack_without_requeue_goes_to_the_activemq_dlq(
    backend: ActiveMQBackend, url: str, topic: str
) -> None:
    raw = RawClient(url)
    try:
        raw.subscribe("/queue/ActiveMQ.DLQ")
        sub = backend.subscribe(topic, "g", prefetch=10)
        marker = uuid.uuid4().hex
        backend.publish(topic, b"poison", key=None, headers={MESSAGE_ID: marker}).result(TIMEOUT)
        receive_one(sub, TIMEOUT).nack(requeue=False)
        wait_until(
            lambda: any(f.headers.get(MESSAGE_ID) == marker for f in raw.frames),
            TIMEOUT,
            "the message in ActiveMQ.DLQ",
        )
        assert sub.receive(1, 0.5) == []
        sub.close()
    finally:
        raw.close()


def test_requeued_delivery_comes_back_before_newer_ones(
    backend: ActiveMQBackend, topic: str
) -> None:
    sub = backend.subscribe(topic, "g", prefetch=10)
    try:
        for i in range(3):
            backend.publish(topic, str(i).encode(), key="k", headers={})
        backend.flush(TIMEOUT)
        first = receive_one(sub, TIMEOUT)
        assert first.body == b"0"
        first.nack(requeue=True)
        again = drain(sub, 3)
        assert [d.body for d in again] == [b"0", b"1", b"2"]
        assert again[0].redelivered and again[0].native_id == first.native_id
    finally:
        sub.close()


# --------------------------------------------------------------------------- message groups


def test_key_order_across_two_members_of_a_group(url: str, topic: str) -> None:
    backend = ActiveMQBackend.from_url(BusURL.parse(url))
    members = [backend.subscribe(topic, "ordered", prefetch=20) for _ in range(2)]
    seen: dict[int, list[tuple[str, int]]] = {0: [], 1: []}
    keys = [f"key-{k}" for k in range(12)]
    per_key = 40
    total = per_key * len(keys)
    lock = threading.Lock()
    count = [0]
    done = threading.Event()

    def consume(index: int) -> None:
        sub = members[index]
        while not done.is_set():
            for delivery in sub.receive(10, 0.2):
                key, n = delivery.body.decode().split(":")
                if int(n) % 5 == index:
                    time.sleep(0.001)  # uneven handler cost
                seen[index].append((key, int(n)))
                delivery.ack()
                with lock:
                    count[0] += 1
                    if count[0] >= total:
                        done.set()

    threads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        for n in range(per_key):
            for key in keys:
                backend.publish(topic, f"{key}:{n}".encode(), key=key, headers={})
        backend.flush(TIMEOUT)
        assert done.wait(TIMEOUT * 2), f"only {count[0]} of {total} handled"
    finally:
        done.set()
        for thread in threads:
            thread.join(5)
        for sub in members:
            sub.close()
        backend.close(5)
    assert seen[0] and seen[1], "one member got every key"
    for key in keys:
        owners = [i for i in (0, 1) if any(k == key for k, _ in seen[i])]
        assert len(owners) == 1, f"{key} was split across members"
        assert [n for k, n in seen[owners[0]] if k == key] == list(range(per_key))


# --------------------------------------------------------------------------- failures


def test_empty_group_queue_survives_a_broker_crash(activemq_broker, topic: str) -> None:  # type: ignore[no-untyped-def]
    require_managed(activemq_broker)
    url = activemq_broker.url
    first = ActiveMQBackend.from_url(BusURL.parse(url), connect_timeout=5)
    first.subscribe(topic, "crash-proof", prefetch=10).close()  # the group exists, empty
    first.close(5)
    activemq_broker.kill()
    activemq_broker.start()
    backend = ActiveMQBackend.from_url(BusURL.parse(url), connect_timeout=5)
    try:
        backend.publish(topic, b"after the crash", key=None, headers={}).result(TIMEOUT)
        sub = backend.subscribe(topic, "crash-proof", prefetch=10)
        assert [d.body for d in drain(sub, 1)] == [b"after the crash"]
        assert sub.receive(10, 0.5) == []  # no marker is ever handed out
        sub.close()
    finally:
        backend.close(5)


def test_unresponsive_server_is_unavailable_in_bounded_time() -> None:
    with socket.socket() as server:  # accepts TCP but never speaks STOMP
        server.bind((HOST, pick_free_port()))
        server.listen(1)
        started = time.monotonic()
        with pytest.raises(msgbus.BrokerUnavailable, match="did not answer"):
            msgbus.connect(f"stomp://127.0.0.1:{server.getsockname()[1]}", connect_timeout=2)
        assert time.monotonic() - started < 5


def test_hosts_are_tried_in_turn(url: str) -> None:
    dead = pick_free_port()
    good = BusURL.parse(url).hosts[0]
    bus = msgbus.connect(f"stomp://127.0.0.1:{dead},{good.host}:{good.port}")
    try:
        assert f"127.0.0.1:{dead}" in bus.backend.describe()
        bus.publish("amq.hosts", b"x").result(TIMEOUT)
    finally:
        bus.close(5)


def test_heart_beating_is_negotiated(backend: ActiveMQBackend) -> None:
    conn = backend._publisher.link.conn
    assert conn is not None
    assert conn.heartbeats != (0, 0)  # stomp.py stores the negotiated intervals here


# --------------------------------------------------------------------------- options


def test_unknown_option_lists_the_valid_ones(url: str) -> None:
    with pytest.raises(msgbus.UnknownOption) as info:
        msgbus.connect(url, prefetch_size=10)
    text = str(info.value)
    for name in ("connect_timeout", "heartbeat_ms", "max_in_flight", "ssl_ca_certs"):
        assert name in text
    with pytest.raises(msgbus.UnknownOption, match="did you mean 'heartbeat_ms'"):
        msgbus.connect(url + "?heartbeat_m=1")
    with pytest.raises(msgbus.ConfigurationError, match="connect_timeout"):
        msgbus.connect(url, connect_timeout=0)


def test_password_is_never_shown(url: str) -> None:
    secret = "pa55-w0rd-XYZ"
    hostport = url.split("://", 1)[1]
    with pytest.raises(msgbus.UnknownOption) as info:
        msgbus.connect(f"stomp://bob:{secret}@{hostport}?bogus=1")
    assert secret not in str(info.value)
    with pytest.raises(msgbus.ConfigurationError) as bad:
        msgbus.connect(f"stomp://bob@{hostport}", password=secret, heartbeat_ms="x")
    assert secret not in str(bad.value)
    bus = msgbus.connect(f"stomp://bob:{secret}@{hostport}")  # no auth on the harness broker
    try:
        backend = bus.backend
        for text in (repr(bus), repr(backend), backend.describe(), repr(backend.options)):
            assert secret not in text
        assert "bob" in backend.describe()
    finally:
        bus.close(5)
    port = pick_free_port()
    with pytest.raises(msgbus.BrokerUnavailable) as down:
        msgbus.connect(f"stomp://bob:{secret}@127.0.0.1:{port}", connect_timeout=1)
    assert secret not in str(down.value) and secret not in repr(down.value)


def test_activemq_scheme_alias_and_tls_option_parsing(url: str) -> None:
    hostport = url.split("://", 1)[1]
    bus = msgbus.connect(f"activemq://{hostport}")
    try:
        assert isinstance(bus.backend, ActiveMQBackend)
        bus.publish("amq.alias", b"x").result(TIMEOUT)
    finally:
        bus.close(5)
    port = pick_free_port()
    # stomp+ssl to a closed port: TLS is configured, the connection fails in bounded time
    with pytest.raises(msgbus.BrokerUnavailable):
        msgbus.connect(f"stomp+ssl://127.0.0.1:{port}", connect_timeout=1, ssl_verify=False)


# --------------------------------------------------------------------------- interop


def test_msgbus_to_plain_stomp_client(url: str, topic: str) -> None:
    raw = RawClient(url)
    bus = msgbus.connect(url)
    try:
        raw.subscribe(group_destination(topic, "plain"))
        bus.publish(
            topic,
            {"id": 7},
            key="7",
            headers={"tenant": "a:b", "priority": "user"},
            correlation_id="c-1",
            message_id="m-1",
        ).result(TIMEOUT)
        (frame,) = raw.wait_frames(1)
        assert frame.body == b'{"id":7}' or frame.body.replace(b" ", b"") == b'{"id":7}'
        h = frame.headers
        assert h["content-type"] == "application/json"
        assert h["correlation-id"] == "c-1"
        assert h["msgbus-id"] == "m-1"
        assert h["msgbus-key"] == "7"
        assert h["tenant"] == "a:b"
        assert h["msgbus-h-priority"] == "user"
        assert h["persistent"] == "true"
    finally:
        raw.close()
        bus.close(5)


def test_plain_stomp_client_to_msgbus(url: str, topic: str) -> None:
    raw = RawClient(url)
    bus = msgbus.connect(url)
    rec = Recorder()
    bus.subscribe(topic, rec, group="from-plain")
    bus.start()
    try:
        raw.conn.send(
            topic_destination(topic),
            b'{"hello": "world"}',
            content_type="application/json",
            headers={"correlation-id": "c-9", "tenant": "x", "receipt": "sent"},
        )
        raw.wait_receipt("sent")
        raw.conn.send(topic_destination(topic), "plain text", headers={"receipt": "t"})
        raw.wait_receipt("t")
        first, second = rec.wait_for(2, TIMEOUT)
        assert first.payload == {"hello": "world"}
        assert first.correlation_id == "c-9"
        assert dict(first.headers) == {"tenant": "x"}
        assert first.id.startswith("ID:")  # the broker's message-id
        assert abs(first.timestamp - time.time()) < 60  # ActiveMQ's timestamp
        assert second.payload == b"plain text" and second.content_type is None
    finally:
        raw.close()
        bus.close(5)


# --------------------------------------------------------------------------- authentication

USER, PASSWORD = "alice", "s3cret-Pa55"

_AUTH_PLUGIN = f"""
        <plugins>
            <simpleAuthenticationPlugin anonymousAccessAllowed="false">
                <users>
                    <authenticationUser username="{USER}" password="{PASSWORD}"
                                        groups="users,admins"/>
                </users>
            </simpleAuthenticationPlugin>
        </plugins>
        <transportConnectors>"""


class AuthActiveMQ(ActiveMQ):
    """The harness's ActiveMQ with a simpleAuthenticationPlugin (one user: alice)."""

    def _write_config(self) -> None:
        super()._write_config()
        path = self._conf_dir / "activemq.xml"
        xml = path.read_text()
        assert "<transportConnectors>" in xml
        path.write_text(xml.replace("\n        <transportConnectors>", _AUTH_PLUGIN, 1))

    def _handshake(self, timeout: float) -> str | None:
        headers = stomp_handshake(HOST, self.port, login=USER, passcode=PASSWORD, timeout=timeout)
        server = headers.get("server", "")
        return server.split("/", 1)[1] if "/" in server else None


@pytest.fixture(scope="module")
def auth_broker() -> Iterator[ActiveMQ]:
    broker = AuthActiveMQ()
    try:
        broker.check_installed()
    except BrokerNotInstalled as exc:
        if ci_requested():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def test_wrong_password_is_an_authentication_error(auth_broker: ActiveMQ) -> None:
    hostport = auth_broker.url.split("://", 1)[1]
    started = time.monotonic()
    with pytest.raises(msgbus.AuthenticationError) as info:
        msgbus.connect(f"stomp://{USER}:wrong-{PASSWORD}@{hostport}", connect_timeout=5)
    assert time.monotonic() - started < 5, "an auth failure must not be retried"
    assert PASSWORD not in str(info.value) and USER in str(info.value)
    with pytest.raises(msgbus.AuthenticationError):
        msgbus.connect(f"stomp://{hostport}", connect_timeout=5)  # anonymous
    bus = msgbus.connect(f"stomp://{USER}:{PASSWORD}@{hostport}")
    try:
        rec = Recorder()
        bus.subscribe("amq.auth", rec, group="g")
        bus.start()
        bus.publish("amq.auth", "ok").result(TIMEOUT)
        assert rec.wait_for(1, TIMEOUT)[0].payload == "ok"
    finally:
        bus.close(5)


# --------------------------------------------------------------------------- TLS (stomp+ssl://)


def _tls_round_trip(bus: msgbus.Bus, topic: str) -> None:
    rec = Recorder()
    bus.subscribe(topic, rec, group="g")
    bus.start()
    bus.publish(topic, "over tls").result(TIMEOUT)
    assert rec.wait_for(1, TIMEOUT)[0].payload == "over tls"


def test_stomp_ssl_with_a_client_certificate_in_the_url(
    activemq_tls_broker: Any, topic: str
) -> None:
    files = activemq_tls_broker.tls_files
    query = urlencode(
        {
            "ssl_ca_certs": files.ca,
            "ssl_certfile": files.client_cert,
            "ssl_keyfile": files.client_key,
        }
    )
    bus = msgbus.connect(f"{activemq_tls_broker.tls_url}?{query}")
    try:
        assert bus.backend.options.ssl_certfile == str(files.client_cert)
        _tls_round_trip(bus, topic)
    finally:
        bus.close(5)


def test_stomp_ssl_to_an_untrusted_server_fails_at_once_naming_tls(
    activemq_tls_broker: Any,
    tmp_path: Path,
) -> None:
    secret = "tls-pa55-w0rd"
    url = f"stomp+ssl://admin:{secret}@{HOST}:{activemq_tls_broker.tls_port}"
    other_ca = make_tls_files(tmp_path / "other-pki").ca
    for options in ({}, {"ssl_ca_certs": str(other_ca)}):  # system CAs; another PKI's CA
        started = time.monotonic()
        with pytest.raises(msgbus.BrokerUnavailable, match="TLS certificate verification") as info:
            msgbus.connect(url, connect_timeout=10, **options)
        assert time.monotonic() - started < 3, f"{options}: a TLS failure must not be retried"
        assert not isinstance(info.value, msgbus.AuthenticationError)
        assert secret not in str(info.value) and secret not in repr(info.value)
    # ssl_verify=false accepts the unknown CA
    bus = msgbus.connect(url, ssl_verify=False)
    bus.close(5)


def test_stomp_ssl_unreadable_tls_files_are_a_configuration_error(
    activemq_tls_broker: Any,
) -> None:
    with pytest.raises(msgbus.ConfigurationError, match="TLS") as info:
        msgbus.connect(activemq_tls_broker.tls_url, ssl_ca_certs="/nonexistent/ca.pem")
    assert "/nonexistent/ca.pem" in str(info.value)
    files = activemq_tls_broker.tls_files
    with pytest.raises(msgbus.ConfigurationError, match="TLS"):
        msgbus.connect(
            activemq_tls_broker.tls_url,
            ssl_ca_certs=str(files.ca),
            ssl_certfile=str(files.client_cert),
            ssl_keyfile=str(files.server_key),  # not the certificate's key
        )


def test_plain_stomp_and_stomp_ssl_on_the_wrong_port_fail_in_bounded_time(
    activemq_tls_broker: Any,
) -> None:
    broker = activemq_tls_broker
    for url, options in (
        (f"stomp://{HOST}:{broker.tls_port}", {}),
        (f"stomp+ssl://{HOST}:{broker.port}", {"ssl_ca_certs": str(broker.tls_files.ca)}),
    ):
        started = time.monotonic()
        with pytest.raises(msgbus.BrokerUnavailable):
            msgbus.connect(url, connect_timeout=2, **options)
        assert time.monotonic() - started < 6


def test_headers_over_activemqs_limit_are_refused_at_once(url: str) -> None:
    """ActiveMQ drops the connection on a header line over its limit; msgbus refuses such a
    header before sending, and the largest accepted one round-trips."""
    topic = f"amq.{uuid.uuid4().hex[:12]}"
    with msgbus.connect(url) as bus:
        seen = Recorder()
        bus.subscribe(topic, seen, group="g")
        bus.start()
        with pytest.raises(msgbus.ConfigurationError, match="10240 bytes"):
            bus.publish(topic, 1, headers={"k": "v" * 10239})
        with pytest.raises(msgbus.ConfigurationError, match="10240 bytes"):
            bus.publish(topic, 1, headers={"k": "\n" * 5120})  # escaped: two bytes each
        bus.publish(topic, 2, headers={"k": "v" * 10238}).result(30)
        (message,) = seen.wait_for(1, 30)
        assert message.headers == {"k": "v" * 10238}


@pytest.mark.activemq
def test_cli_on_an_unreachable_broker_prints_one_line() -> None:
    """stomp.py's per-attempt warnings stay below WARNING: the user sees msgbus's error only,
    saying how long it tried."""
    import subprocess
    import sys

    url = f"stomp://127.0.0.1:{pick_free_port()}?connect_timeout=1"
    done = subprocess.run(
        [sys.executable, "-m", "msgbus.cli", "publish", url, "t", "--data", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),  # not the repository: import msgbus as installed
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("msgbus: error: could not connect to ActiveMQ at 127.0.0.1:")
    assert "(tried for" in line and "connect_timeout=1s" in line


def test_queue_browser_reads_a_snapshot_without_consuming(
    backend: ActiveMQBackend, topic: str
) -> None:
    """``browse`` (used by ``msgbus dlq list/show``) sees the waiting messages, ends after
    the snapshot, and leaves them in the queue, not marked redelivered."""
    backend.ensure_group(topic, "g")
    for n in range(2):
        backend.publish(topic, f"m{n}".encode(), key=None, headers={}).result(TIMEOUT)
    browser = backend.browse(topic, "g", prefetch=100)
    assert browser is not None
    try:
        seen: list[bytes] = []
        while len(seen) < 2:
            batch = browser.receive(10, TIMEOUT)
            assert batch, "the browser ended before the snapshot"
            seen.extend(d.body for d in batch)
        started = time.monotonic()
        assert browser.receive(10, TIMEOUT) == []  # browser:end, not a timeout
        assert time.monotonic() - started < TIMEOUT / 2
    finally:
        browser.close()
    assert seen == [b"m0", b"m1"]
    sub = backend.subscribe(topic, "g", prefetch=10)
    try:
        got = [receive_one(sub, TIMEOUT) for _ in range(2)]
        assert [d.body for d in got] == [b"m0", b"m1"]
        assert not any(d.redelivered for d in got)
        for d in got:
            d.ack()
    finally:
        sub.close()
