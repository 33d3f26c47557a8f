"""No password in any log record, repr or error of a real connect/publish/consume/fail cycle.

The per-backend cycles of RabbitMQ, kombu+amqp, kombu+redis, ActiveMQ and Kafka (SASL, both
drivers) are ``test_secret_never_shown`` of the network suite
(msgbus.testing.network_conformance) in their test files; what stays here: a password in the
URL query on RabbitMQ and arbitrary passwords in connect errors of every scheme. The password
holds ``/?#@`` (and ``:%[]`` and non-ASCII); every log record of every logger is captured at
DEBUG.
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
def test_rabbitmq_unreachable_shows_no_password(rabbitmq_broker) -> None:  # type: ignore[no-untyped-def]
    rabbitmq_user(rabbitmq_broker)
    check(
        f"amqp://{credentials()}127.0.0.1:{rabbitmq_broker.port}/?password={quote(SECRET)}",
        f"amqp://127.0.0.1:{closed_port()}/?username=u&password={quote(SECRET)}&connect_timeout=1",
    )


# ------------------------------------------------------------------ property: connect errors

_UNREACHABLE = {
    "amqp": pytest.mark.rabbitmq,
    "kombu+amqp": pytest.mark.kombu,
    "kombu+redis": pytest.mark.kombu,
    "stomp": pytest.mark.activemq,
    "kafka": pytest.mark.kafka,
}


@pytest.mark.parametrize("scheme", [pytest.param(s, marks=m) for s, m in _UNREACHABLE.items()])
def test_connect_errors_never_show_an_arbitrary_password(scheme: str) -> None:
    """Hypothesis: any password, in the user info and as ``?password=``, on a broker that
    does not answer: neither the error nor any DEBUG log record shows it."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from msgbus import MsgBusError, connect
    from msgbus.testing.leaks import every_log_record

    secrets = st.text(st.characters(exclude_categories=("Cs",)), max_size=20).map(
        lambda s: f"Pw7x{s}Qz9k"
    )
    timeout = "connect_timeout_ms=300" if scheme == "kafka" else "connect_timeout=0.3"
    option = "" if scheme.startswith("kombu") else "&password={}"

    @settings(max_examples=8, deadline=None, database=None)
    @given(secret=secrets)
    def check(secret: str) -> None:
        query = f"?{timeout}" + option.format(quote(secret, safe=""))
        url = f"{scheme}://{credentials(secret=secret)}127.0.0.1:{closed_port()}{query}"
        with every_log_record() as records, pytest.raises(MsgBusError) as info:
            connect(url).close()
        leaks = find_leaks(
            secret, [str(info.value), repr(info.value), *records], anchors=("Pw7x", "Qz9k")
        )
        assert not leaks, leaks[:3]

    check()
