"""The conformance tests of a backend that talks to a broker over the network.

Every network backend adopts them with one subclass and a fixture each (Watermill's
``pubsub/tests`` style: the class flags and the backend's ``features`` pick what applies)::

    @pytest.mark.rabbitmq
    class TestRabbitMQNetwork(NetworkConformance):
        @pytest.fixture
        def broker(self, rabbitmq_broker):          # restart(), kill(), start(): the harness's
            return rabbitmq_broker
        @pytest.fixture
        def url(self, broker):
            return broker.url
        def unreachable_url(self, port):            # nothing listens on port
            return f"amqp://127.0.0.1:{port}/"
        @pytest.fixture
        def bad_credentials_url(self, broker): ...  # a user the broker refuses
        @pytest.fixture
        def tls(self, rabbitmq_tls_broker): ...     # (url, options) trusting the test CA
        @pytest.fixture
        def secret_urls(self, broker): ...          # (url, bad url) whose password is SECRET

What is asserted: a broker restart keeps every confirmed message when ``features.persistent``
(and the backend resubscribes either way); publishes made while the broker is down are
confirmed once it is back; TLS round-trips; refused credentials are an
``AuthenticationError`` at once; an unreachable broker is ``BrokerUnavailable`` within a
bound; the password never shows in a log record, repr or error. A flag set to False skips a
test and says why (``restartable``, ``supports_tls``, ``checks_credentials``).
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any, ClassVar

import pytest

import msgbus
from msgbus.testing.leaks import find_leaks, secret_cycle
from msgbus.testing.pytest_plugin import require_managed
from msgbus.testing.recorder import Recorder, drain, wait_until

__all__ = ["SECRET", "NetworkConformance"]

SECRET = "S3cr/?#@:%[]et-ü"
"""The password ``secret_urls`` must carry (URL delimiters and non-ASCII on purpose)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NetworkConformance:
    """Outage, TLS, credential and secret-masking tests; see the module docstring."""

    timeout: ClassVar[float] = 30.0
    options: ClassVar[dict[str, Any]] = {}
    restartable: ClassVar[bool] = True
    """False: the broker cannot be restarted by the harness (the restart tests skip)."""
    supports_tls: ClassVar[bool] = True
    """False: no TLS setup for this backend (the TLS test skips, saying so)."""
    checks_credentials: ClassVar[bool] = True
    """False: the test broker accepts any credentials (the credentials test skips)."""

    def unreachable_url(self, port: int) -> str:
        """The backend's URL of a broker on 127.0.0.1:``port``, where nothing listens."""
        raise NotImplementedError("a NetworkConformance subclass must define unreachable_url")

    @pytest.fixture
    def topic(self) -> str:
        """A fresh topic per test."""
        return f"net.{uuid.uuid4().hex[:12]}"

    def _connect(self, url: str, **extra: Any) -> msgbus.Bus:
        return msgbus.connect(url, **{"connect_timeout": 10, **self.options, **extra})

    # ------------------------------------------------------------------ outages

    def test_broker_restart_keeps_confirmed_messages_and_resubscribes(
        self, broker: Any, url: str, topic: str
    ) -> None:
        if not self.restartable:
            pytest.skip("the harness cannot restart this broker")
        require_managed(broker)
        bus = self._connect(url)
        backend = bus.backend
        sub = backend.subscribe(topic, "survivors", prefetch=100)
        try:
            count = 50
            for i in range(count):
                backend.publish(topic, str(i).encode(), key=f"k{i % 3}", headers={})
            backend.flush(self.timeout)
            broker.restart()
            if backend.features.persistent:  # the flag promises exactly this
                got = {d.body for d in drain(sub, count, self.timeout * 2)}
                assert got == {str(i).encode() for i in range(count)}
            wait_until(
                lambda: (
                    backend.publish(topic, b"after", key=None, headers={}).exception(self.timeout)
                    is None
                ),
                self.timeout * 2,
                "publishing after the restart",
            )
            # resubscribed on its own; records redelivered around the restart may come first
            # (at-least-once), so read (acking) until "after" arrives
            seen: list[bytes] = []
            wait_until(
                lambda: (
                    b"after" in seen
                    or bool(seen.extend(d.body for d in drain(sub, 1, self.timeout * 2)))
                ),
                self.timeout * 2,
                "the message published after the restart",
            )
        finally:
            sub.close()
            bus.close(5)

    def test_publishes_during_a_restart_are_confirmed_after_it(
        self, broker: Any, url: str, topic: str
    ) -> None:
        if not self.restartable:
            pytest.skip("the harness cannot restart this broker")
        require_managed(broker)
        bus = self._connect(url)
        rec = Recorder()
        bus.subscribe(topic, rec, group="g")
        bus.start()
        try:
            broker.kill()
            try:
                futures = [bus.publish(topic, i) for i in range(20)]
            finally:
                broker.start()  # also when publishing failed: later tests need the broker
            for future in futures:
                assert future.exception(self.timeout * 2) is None
            wait_until(
                lambda: set(range(20)) <= {m.payload for m in rec.messages},
                self.timeout * 2,
                "every message published during the restart",
            )
        finally:
            bus.close(5)

    def test_unreachable_broker_is_unavailable_in_bounded_time(self) -> None:
        port = _free_port()
        started = time.monotonic()
        with pytest.raises(msgbus.BrokerUnavailable) as info:
            msgbus.connect(self.unreachable_url(port), connect_timeout=2)
        assert time.monotonic() - started < 8
        assert not isinstance(info.value, msgbus.AuthenticationError)

    # ------------------------------------------------------------------ security

    def test_tls_round_trip(self, tls: tuple[str, dict[str, Any]], topic: str) -> None:
        if not self.supports_tls:
            pytest.skip("no TLS setup for this backend in the suite")
        tls_url, tls_options = tls
        bus = self._connect(tls_url, **tls_options)
        try:
            rec = Recorder()
            bus.subscribe(topic, rec, group="g")
            bus.start()
            bus.publish(topic, "over tls").result(self.timeout)
            assert rec.wait_for(1, self.timeout)[0].payload == "over tls"
        finally:
            bus.close(5)

    def test_wrong_credentials_are_an_authentication_error_at_once(
        self, bad_credentials_url: str
    ) -> None:
        if not self.checks_credentials:
            pytest.skip("the test broker accepts any credentials")
        started = time.monotonic()
        with pytest.raises(msgbus.AuthenticationError) as info:
            msgbus.connect(bad_credentials_url, connect_timeout=10)
        assert time.monotonic() - started < 5, "a refused login must not be retried"
        assert "wrong-pa55" not in str(info.value)

    def test_secret_never_shown(self, secret_urls: tuple[str, str]) -> None:
        url, bad_url = secret_urls
        leaks = find_leaks(SECRET, secret_cycle(url, bad_url, SECRET, timeout=self.timeout))
        assert not leaks, leaks[:5]
