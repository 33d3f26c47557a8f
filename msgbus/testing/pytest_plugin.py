"""pytest plugin (entry point ``pytest11``: ``msgbus``): real brokers as session fixtures.

Fixtures, all session-scoped (each broker starts at most once per test session and is
closed at its end), each yielding a broker with ``.url``, ``.description``, ``.start()``,
``.stop()``, ``.restart()``, ``.kill()`` and ``.managed``:

* ``rabbitmq_broker`` — :class:`~msgbus.testing.brokers.RabbitMQ`
  (``amqp://guest:guest@127.0.0.1:PORT/``; plugins rabbitmq_consistent_hash_exchange and
  rabbitmq_management on, ``.management_url`` its HTTP API);
* ``activemq_broker`` — :class:`~msgbus.testing.brokers.ActiveMQ` (``stomp://127.0.0.1:PORT``);
* ``rabbitmq_tls_broker`` / ``activemq_tls_broker`` — a second RabbitMQ / ActiveMQ started with
  ``tls=True``: besides ``.url`` it has ``.tls_url`` (``amqps://guest:guest@127.0.0.1:PORT/``,
  ``stomp+ssl://127.0.0.1:PORT``) and ``.tls_files`` (CA, server and client certificates made
  for it). Only tests that ask for them start them; they are skipped (not external) when
  ``MSGBUS_<BROKER>_URL`` is set, since msgbus then does not control the broker's TLS set-up;
* ``kafka_broker`` — :class:`~msgbus.testing.brokers.Kafka`, Apache Kafka in KRaft mode
  (``kafka://127.0.0.1:PORT``); with ``MSGBUS_KAFKA_IMPL=tansu``,
  :class:`~msgbus.testing.brokers.Tansu` with in-memory storage instead;
* ``kafka_persistent_broker`` — a second Kafka of the same kind for tests that restart or kill
  it: Apache Kafka (its on-disk log), or tansu with ``s3://`` storage on a local S3 server
  (which holds up under bursts only, see BROKERS.md); ``.impl`` says which;
* ``kafka_tls_broker`` — Apache Kafka started with ``tls=True``: ``.tls_url`` (SSL),
  ``.sasl_url(mechanism)``, ``.sasl_ssl_url(mechanism)``, ``.tls_files``. Skipped when
  ``MSGBUS_KAFKA_URL`` is set; fails with ``MSGBUS_KAFKA_IMPL=tansu`` (tansu has no TLS here);
* ``redis_broker`` — :class:`~msgbus.testing.brokers.Redis` (``redis://127.0.0.1:PORT/0``);
* ``rabbitmq_cluster`` (3 nodes, joined), ``kafka_cluster`` (3 Apache Kafka KRaft nodes,
  replication factor 3, ``min.insync.replicas=2``) and ``activemq_cluster`` (2 nodes,
  master/slave on a shared KahaDB) — :class:`~msgbus.testing.brokers.BrokerCluster` launchers
  whose ``.url`` lists every node, with ``.kill(node)``, ``.pause(node)``, ``.resume(node)``,
  ``.restart(node)`` and ``.start()``. A test that kills or pauses a node must bring it back
  (``start()`` / ``resume()``) before it ends: the cluster lives for the session. They are
  skipped when ``MSGBUS_<BROKER>_URL`` names an external broker, and carry the ``cluster``
  marker besides the broker's.

``MSGBUS_<BROKER>_URL`` (``MSGBUS_RABBITMQ_URL``, ``MSGBUS_ACTIVEMQ_URL``, ``MSGBUS_KAFKA_URL``,
``MSGBUS_REDIS_URL``) makes the fixture yield an
:class:`~msgbus.testing.brokers.ExternalBroker` for that URL instead of starting one. A test
that then calls ``stop()``/``restart()``/``kill()`` is reported as skipped with the reason.

A broker that is not installed fails the test when the environment variable ``CI`` is set,
and skips it elsewhere; either way the message names the install command.

Tests using a broker fixture get the matching marker (``rabbitmq``, ``activemq``, ``kafka``,
``redis``) automatically, so ``-m "not rabbitmq"`` deselects them. The terminal summary lists
each broker the session used and what it really was (tansu, not Apache Kafka).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from msgbus.testing.brokers import (
    ActiveMQCluster,
    Broker,
    BrokerCluster,
    BrokerNotInstalled,
    ExternalBrokerError,
    KafkaCluster,
    RabbitMQCluster,
    broker_from_env_or_start,
    env_url,
    env_var,
    kafka_impl,
)
from msgbus.testing.brokers.base import ci_requested, pick_free_port
from msgbus.url import BusURL

__all__ = [
    "activemq_broker",
    "activemq_cluster",
    "activemq_tls_broker",
    "kafka_broker",
    "kafka_cluster",
    "kafka_persistent_broker",
    "kafka_tls_broker",
    "rabbitmq_broker",
    "rabbitmq_cluster",
    "rabbitmq_tls_broker",
    "redis_broker",
    "require_managed",
    "start_broker_or_skip",
]

MARKERS = {
    "rabbitmq": "needs a real RabbitMQ (started by the msgbus harness or MSGBUS_RABBITMQ_URL)",
    "activemq": "needs a real ActiveMQ (started by the msgbus harness or MSGBUS_ACTIVEMQ_URL)",
    "kafka": "needs a Kafka broker (Apache Kafka started by the harness, tansu with "
    "MSGBUS_KAFKA_IMPL=tansu, or MSGBUS_KAFKA_URL)",
    "redis": "needs a real Redis (started by the msgbus harness or MSGBUS_REDIS_URL)",
    "cluster": "needs a broker cluster started by the msgbus harness (several nodes)",
}
"""Markers this plugin registers."""

FIXTURE_MARKERS = {
    "rabbitmq_broker": "rabbitmq",
    "activemq_broker": "activemq",
    "rabbitmq_tls_broker": "rabbitmq",
    "activemq_tls_broker": "activemq",
    "kafka_broker": "kafka",
    "kafka_persistent_broker": "kafka",
    "kafka_tls_broker": "kafka",
    "redis_broker": "redis",
    "rabbitmq_cluster": "rabbitmq",
    "kafka_cluster": "kafka",
    "activemq_cluster": "activemq",
}
"""Broker fixture → marker added to every test that uses it."""

CLUSTER_FIXTURES = ("rabbitmq_cluster", "kafka_cluster", "activemq_cluster")
"""Fixtures that also get the ``cluster`` marker."""

_USED = pytest.StashKey[list[tuple[str, Broker | BrokerCluster]]]()


def start_broker_or_skip(kind: str, **options: Any) -> Broker:
    """Start a broker of ``kind`` (or take the external one from ``MSGBUS_<KIND>_URL``).

    When it is not installed: ``pytest.fail`` if ``CI`` is set, else ``pytest.skip``, with
    the message naming the install command. Start-up failures propagate as
    :class:`~msgbus.testing.brokers.BrokerStartError` (with the broker's log tail). The
    caller owns a started broker and must ``close()`` it.
    """
    try:
        return broker_from_env_or_start(kind, **options)
    except BrokerNotInstalled as exc:
        if ci_requested():
            pytest.fail(f"{exc} (CI is set, so a missing broker is an error)", pytrace=False)
        pytest.skip(str(exc))


def require_managed(broker: Broker) -> None:
    """Skip the calling test unless ``broker`` was started by msgbus (so it can be stopped,
    restarted or killed); the reason names the external URL's source."""
    if not broker.managed:
        pytest.skip(f"needs a broker msgbus controls; {broker.description}")


def _session_broker(
    request: pytest.FixtureRequest, name: str, kind: str, **options: Any
) -> Iterator[Broker]:
    broker = start_broker_or_skip(kind, **options)
    request.config.stash.setdefault(_USED, []).append((name, broker))
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def rabbitmq_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A RabbitMQ for the whole session (``amqp://guest:guest@127.0.0.1:PORT/``), with the
    consistent-hash exchange and management plugins enabled (``.management_url``); or the
    external one from MSGBUS_RABBITMQ_URL."""
    yield from _session_broker(
        request,
        "rabbitmq_broker",
        "rabbitmq",
        plugins=["rabbitmq_consistent_hash_exchange"],
        management_port=pick_free_port(),  # `msgbus dlq list` lists queues through it
    )


@pytest.fixture(scope="session")
def activemq_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """An ActiveMQ Classic for the whole session (``stomp://127.0.0.1:PORT``); or the
    external one from MSGBUS_ACTIVEMQ_URL."""
    yield from _session_broker(request, "activemq_broker", "activemq")


def _tls_session_broker(
    request: pytest.FixtureRequest, name: str, kind: str, **options: Any
) -> Iterator[Broker]:
    if env_url(kind):
        pytest.skip(
            f"{name} needs a {kind} broker started by msgbus with a TLS listener; "
            f"${env_var(kind)} names an external one"
        )
    yield from _session_broker(request, name, kind, tls=True, **options)


@pytest.fixture(scope="session")
def rabbitmq_tls_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A RabbitMQ for the whole session with an AMQPS listener besides AMQP: ``.tls_url``
    (``amqps://guest:guest@127.0.0.1:PORT/``) and ``.tls_files`` (throwaway CA, server and
    client certificates). Skipped when MSGBUS_RABBITMQ_URL is set."""
    yield from _tls_session_broker(request, "rabbitmq_tls_broker", "rabbitmq")


@pytest.fixture(scope="session")
def activemq_tls_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """An ActiveMQ Classic for the whole session with a ``stomp+ssl`` connector besides STOMP:
    ``.tls_url`` (``stomp+ssl://127.0.0.1:PORT``) and ``.tls_files`` (throwaway CA, server and
    client certificates). Skipped when MSGBUS_ACTIVEMQ_URL is set."""
    yield from _tls_session_broker(request, "activemq_tls_broker", "activemq")


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Apache Kafka (KRaft, one node) for the whole session (``kafka://127.0.0.1:PORT``);
    tansu with in-memory storage when ``MSGBUS_KAFKA_IMPL=tansu``; or the external broker
    from MSGBUS_KAFKA_URL."""
    yield from _session_broker(request, "kafka_broker", "kafka")


@pytest.fixture(scope="session")
def kafka_persistent_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A second Kafka for tests that restart or kill their broker: Apache Kafka (its on-disk
    log keeps every acknowledged record), or with ``MSGBUS_KAFKA_IMPL=tansu`` tansu with
    ``s3://`` storage on a local S3 server (good for bursts only). Or the external broker
    from MSGBUS_KAFKA_URL."""
    options = {"persistent": True} if kafka_impl() == "tansu" else {}
    yield from _session_broker(request, "kafka_persistent_broker", "kafka", **options)


@pytest.fixture(scope="session")
def kafka_tls_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Apache Kafka with SSL, SASL_PLAINTEXT and SASL_SSL listeners besides PLAINTEXT (see
    :class:`~msgbus.testing.brokers.Kafka`). Skipped when MSGBUS_KAFKA_URL is set."""
    if kafka_impl() != "apache":
        pytest.fail("kafka_tls_broker needs Apache Kafka (MSGBUS_KAFKA_IMPL=apache)")
    yield from _tls_session_broker(request, "kafka_tls_broker", "kafka")


@pytest.fixture(scope="session")
def redis_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A Redis for the whole session (``redis://127.0.0.1:PORT/0``, no persistence); or the
    external one from MSGBUS_REDIS_URL."""
    yield from _session_broker(request, "redis_broker", "redis")


def _session_cluster(
    request: pytest.FixtureRequest, name: str, kind: str, cluster: BrokerCluster
) -> Iterator[BrokerCluster]:
    if env_url(kind):
        cluster.close()
        pytest.skip(f"{name} needs {kind} nodes started by msgbus; ${env_var(kind)} is set")
    try:
        cluster.start()
    except BrokerNotInstalled as exc:
        cluster.close()
        if ci_requested():
            pytest.fail(f"{exc} (CI is set, so a missing broker is an error)", pytrace=False)
        pytest.skip(str(exc))
    except BaseException:
        cluster.close()
        raise
    request.config.stash.setdefault(_USED, []).append((name, cluster))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def rabbitmq_cluster(request: pytest.FixtureRequest) -> Iterator[BrokerCluster]:
    """Three RabbitMQ nodes joined into one cluster for the whole session (see
    :class:`~msgbus.testing.brokers.RabbitMQCluster`); ``url`` lists every node."""
    yield from _session_cluster(request, "rabbitmq_cluster", "rabbitmq", RabbitMQCluster(nodes=3))


@pytest.fixture(scope="session")
def kafka_cluster(request: pytest.FixtureRequest) -> Iterator[BrokerCluster]:
    """Three Apache Kafka nodes (KRaft, combined roles, replication factor 3,
    ``min.insync.replicas=2``) for the whole session, whatever ``MSGBUS_KAFKA_IMPL`` says
    (tansu has no cluster); ``url`` lists every node."""
    yield from _session_cluster(request, "kafka_cluster", "kafka", KafkaCluster(nodes=3))


@pytest.fixture(scope="session")
def activemq_cluster(request: pytest.FixtureRequest) -> Iterator[BrokerCluster]:
    """Two ActiveMQ nodes, master/slave on one shared KahaDB, for the whole session (see
    :class:`~msgbus.testing.brokers.ActiveMQCluster`); ``url`` is the failover list."""
    yield from _session_cluster(request, "activemq_cluster", "activemq", ActiveMQCluster(nodes=2))


# --------------------------------------------------------------------------- hooks


def pytest_configure(config: pytest.Config) -> None:
    """Register the broker markers."""
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a broker fixture with that broker's marker."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in names and item.get_closest_marker(marker) is None:
                item.add_marker(marker)
        if any(f in names for f in CLUSTER_FIXTURES) and item.get_closest_marker("cluster") is None:
            item.add_marker("cluster")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Report a test that tried to stop/restart/kill an external broker as skipped."""
    try:
        return (yield)
    except ExternalBrokerError as exc:
        pytest.skip(str(exc))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say which brokers come from the environment, and which Kafka 'kafka' means."""
    lines = []
    for kind in ("rabbitmq", "activemq", "kafka", "redis"):
        if env_url(kind):
            lines.append(f"msgbus: {kind} broker is external (${env_var(kind)})")
    if not env_url("kafka"):
        if kafka_impl() == "tansu":
            lines.append(
                "msgbus: Kafka tests run against tansu (MSGBUS_KAFKA_IMPL), not Apache Kafka"
            )
        else:
            lines.append("msgbus: Kafka tests run against Apache Kafka (KRaft)")
    return lines


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """List the brokers this session used, with what each really was and its start time."""
    used = config.stash.get(_USED, [])
    if not used:
        return
    terminalreporter.section("msgbus brokers")
    for name, broker in used:
        timing = (
            f", started in {broker.last_start_seconds:.2f} s"
            if broker.last_start_seconds is not None
            else ""
        )
        where = BusURL.parse(broker.url).render(hide_password=True)
        terminalreporter.write_line(f"{name}: {broker.description} at {where}{timing}")
