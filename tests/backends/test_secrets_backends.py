"""No password in any log record, repr or error of a real connect/publish/consume/fail cycle.

One test per backend (each runs in its broker's tox env, selected by marker): the password
holds ``/?#@`` (and ``:%[]`` and non-ASCII); every log record of every logger is captured
at DEBUG. The RabbitMQ and Redis tests create a user with that password on the harness
broker, so the password is really checked by the broker; ActiveMQ's harness broker accepts
any credentials, which still sends the password through stomp.py.
"""

from __future__ import annotations

import socket
from urllib.parse import quote

import pytest

from msgbus.testing.brokers.base import BrokerHarnessError
from msgbus.testing.leaks import find_leaks, secret_cycle

SECRET = "S3cr/?#@:%[]et-ü"
USER = "leaky"


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def credentials(user: str = USER, secret: str = SECRET) -> str:
    return f"{quote(user, safe='')}:{quote(secret, safe='')}@"


def rabbitmq_user(broker) -> None:  # type: ignore[no-untyped-def]
    if not hasattr(broker, "add_user"):
        pytest.skip("an external RabbitMQ: the test needs to create a user")
    try:
        broker.add_user(USER, SECRET)
    except BrokerHarnessError as exc:  # pragma: no cover - depends on the machine
        pytest.fail(str(exc))


def check(url: str, bad_url: str) -> None:
    texts = secret_cycle(url, bad_url, SECRET)
    leaks = find_leaks(SECRET, texts)
    assert not leaks, leaks[:5]


@pytest.mark.rabbitmq
def test_rabbitmq_cycle_shows_no_password(rabbitmq_broker) -> None:  # type: ignore[no-untyped-def]
    rabbitmq_user(rabbitmq_broker)
    port = rabbitmq_broker.port
    check(
        f"amqp://{credentials()}127.0.0.1:{port}/",
        f"amqp://{credentials('nobody')}127.0.0.1:{port}/?connect_timeout=5",
    )


@pytest.mark.rabbitmq
def test_rabbitmq_unreachable_shows_no_password(rabbitmq_broker) -> None:  # type: ignore[no-untyped-def]
    rabbitmq_user(rabbitmq_broker)
    check(
        f"amqp://{credentials()}127.0.0.1:{rabbitmq_broker.port}/?password={quote(SECRET)}",
        f"amqp://127.0.0.1:{closed_port()}/?username=u&password={quote(SECRET)}&connect_timeout=1",
    )


@pytest.mark.kombu
@pytest.mark.rabbitmq
def test_kombu_amqp_cycle_shows_no_password(rabbitmq_broker) -> None:  # type: ignore[no-untyped-def]
    rabbitmq_user(rabbitmq_broker)
    port = rabbitmq_broker.port
    check(
        f"kombu+amqp://{credentials()}127.0.0.1:{port}/",
        f"kombu+amqp://{credentials('nobody')}127.0.0.1:{port}/?connect_timeout=5",
    )


@pytest.mark.kombu
@pytest.mark.redis
def test_kombu_redis_cycle_shows_no_password(redis_broker) -> None:  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_broker.port)
    try:
        client.acl_setuser(
            USER,
            enabled=True,
            reset_passwords=True,
            passwords=["+" + SECRET],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
    finally:
        client.close()
    port = redis_broker.port
    check(
        f"kombu+redis://{credentials()}127.0.0.1:{port}/0",
        f"kombu+redis://{credentials('nobody')}127.0.0.1:{port}/0?connect_timeout=5",
    )


@pytest.mark.activemq
def test_activemq_cycle_shows_no_password(activemq_broker) -> None:  # type: ignore[no-untyped-def]
    check(
        f"stomp://{credentials()}127.0.0.1:{activemq_broker.port}",
        f"stomp://{credentials()}127.0.0.1:{closed_port()}?connect_timeout=1",
    )
