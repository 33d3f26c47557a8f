"""The bank example's end-to-end suite, reusable on every broker (needs pytest).

Subclass :class:`BankEndToEnd` in a test module and override the ``bank_url`` fixture::

    from msgbus.contrib.bank.testing import BankEndToEnd

    class TestBankOnKafka(BankEndToEnd):
        timeout = 60.0

        @pytest.fixture
        def bank_url(self, kafka_broker):
            return kafka_broker.url

Each test uses its own topic (``account.created.<random>``) and its own SQLite files, so
tests do not see each other's messages even on a long-lived broker. Every wait is bounded
by ``timeout`` and woken by the event it waits for (mails, messages) or by a short poll of
an in-process counter; nothing sleeps a fixed time.
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import msgbus
import msgbus.aio
from msgbus.contrib.bank.account_service import AccountService
from msgbus.contrib.bank.email_service import EmailService
from msgbus.contrib.bank.events import ACCOUNT_CREATED, AccountCreated
from msgbus.contrib.bank.http_server import ServerThread
from msgbus.contrib.bank.mailer import SmtpMailer
from msgbus.contrib.bank.smtp_sink import SmtpSink
from msgbus.testing.aio import BlockingAsyncBus, LoopThread
from msgbus.testing.recorder import Recorder, wait_until

__all__ = ["BankEndToEnd", "BankRig", "HttpResult"]


class HttpResult:
    """Status, headers and decoded JSON body of one HTTP exchange."""

    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.json = body

    def __repr__(self) -> str:
        return f"HttpResult({self.status}, {self.json!r})"


class BankRig:
    """Builds and tears down the pieces of one test: buses, services, HTTP server, recorders.

    Everything it makes is closed by :meth:`close` (in reverse order), even if a test fails.
    Email services run on an event loop thread of the rig's (one loop, as in one process);
    each account service runs on its HTTP server's loop.
    """

    def __init__(self, url: str, topic: str, data: Path, sink: SmtpSink, timeout: float) -> None:
        self.url = url
        self.topic = topic
        self.data = data
        self.sink = sink
        self.timeout = timeout
        self._stack = ExitStack()
        self._publisher: msgbus.Bus | None = None
        self._loop: LoopThread | None = None

    def close(self) -> None:
        """Close everything this rig made."""
        self._stack.close()

    def bus(self) -> msgbus.Bus:
        """A new bus on the test's broker (closed at teardown with the default drain)."""
        bus = msgbus.connect(self.url)
        self._stack.callback(bus.close)
        return bus

    def recorder(self, topic: str | None = None) -> Recorder:
        """A started private-group subscription on ``topic`` (default: the event topic)."""
        bus = self.bus()
        recorder = Recorder()
        bus.subscribe(topic or self.topic, recorder, group=None)
        bus.start()
        return recorder

    def loop(self) -> LoopThread:
        """The rig's event loop thread (stopped at teardown, after everything on it)."""
        if self._loop is None:
            self._loop = LoopThread()
            self._stack.callback(self._loop.stop)
        return self._loop

    def email_service(
        self, *, db: str = "emails.db", **options: Any
    ) -> tuple[BlockingAsyncBus, EmailService]:
        """A started email service on an AsyncBus of its own (on the rig's loop), sending to
        the sink; returned with a blocking view of that bus (``close(timeout=0)`` kills it).

        Defaults suited to tests: 2 concurrent handlers, many quick retries, a 30 s lease;
        ``options`` override them. Its subscription is ready when this returns. At teardown
        the bus closes (draining its handlers) before the service's database does.
        """
        async_bus = msgbus.aio.connect(self.url)
        bus = BlockingAsyncBus(async_bus, self.loop())
        settings: dict[str, Any] = {
            "concurrency": 2,
            "max_attempts": 200,
            "backoff": 0.02,
            "max_backoff": 0.25,
            "lease": 30.0,
            "topic": self.topic,
        }
        settings.update(options)
        service = EmailService(
            async_bus,
            SmtpMailer(self.sink.host, self.sink.port, timeout=10),
            self.data / db,
            **settings,
        )
        self._stack.callback(service.close)
        self._stack.callback(bus.close)  # LIFO: the bus closes first
        bus.start()
        return bus, service

    def account_service(
        self, *, start_relay: bool = True, db: str = "accounts.db"
    ) -> tuple[AccountService, ServerThread]:
        """An account service with its HTTP server on loopback; the relay started if asked."""
        bus = msgbus.aio.connect(self.url)
        self._stack.callback(bus.bus.close)  # if the server's lifespan never ran
        service = AccountService(
            bus, self.data / db, topic=self.topic, start_relay=start_relay, sweep_interval=1.0
        )
        self._stack.callback(service.close)
        server = ServerThread(service.app).start()
        self._stack.callback(server.stop)
        return service, server

    def publish(self, payload: Any, *, key: str | None = None, **options: Any) -> None:
        """Publish ``payload`` to the event topic and wait for the broker's confirmation."""
        if self._publisher is None:
            self._publisher = self.bus()
        self._publisher.publish(self.topic, payload, key=key, **options).result(self.timeout)

    def request(
        self,
        server: ServerThread,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> HttpResult:
        """One HTTP request to ``server``; ``body`` is sent as JSON (or ``raw`` bytes)."""
        where = urlsplit(server.url)
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=self.timeout)
        try:
            data = raw if raw is not None else None if body is None else json.dumps(body).encode()
            send_headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, data, send_headers)
            response = conn.getresponse()
            content = response.read()
            return HttpResult(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                json.loads(content) if content else None,
            )
        finally:
            conn.close()

    def create_accounts(self, server: ServerThread, count: int, tag: str) -> dict[str, str]:
        """POST ``count`` accounts; return ``{email: correlation_id}``. Asserts 201 each."""
        sent: dict[str, str] = {}
        for index in range(count):
            email = f"user{index}.{tag}@example.com"
            correlation_id = f"corr-{tag}-{index}"
            result = self.request(
                server,
                "POST",
                "/accounts",
                {"owner": f"User {index}", "email": email},
                headers={"X-Correlation-ID": correlation_id},
            )
            assert result.status == 201, result
            sent[email] = correlation_id
        return sent


class BankEndToEnd:
    """The bank example end to end: HTTP → SQLite outbox → broker → email service → SMTP.

    Override ``bank_url`` (and ``timeout`` for slow brokers). The SMTP server is a real
    aiosmtpd server on loopback.
    """

    timeout = 30.0
    accounts = 12

    @pytest.fixture
    def bank_url(self) -> str:
        """The broker URL; a fresh named memory broker unless a subclass overrides it."""
        return f"memory://bank-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def smtp_sink(self) -> Iterator[SmtpSink]:
        """A running SMTP sink on a free loopback port."""
        sink = SmtpSink().start()
        yield sink
        sink.stop()

    @pytest.fixture
    def rig(self, bank_url: str, smtp_sink: SmtpSink, tmp_path: Path) -> Iterator[BankRig]:
        """A :class:`BankRig` on a topic of its own."""
        topic = f"{ACCOUNT_CREATED}.t{uuid.uuid4().hex[:10]}"
        rig = BankRig(bank_url, topic, tmp_path, smtp_sink, self.timeout)
        yield rig
        rig.close()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check_mails(rig: BankRig, expected: dict[str, str]) -> None:
        mails = rig.sink.mails
        got = sorted(recipient for mail in mails for recipient in mail.rcpt_tos)
        assert got == sorted(expected), "every account gets one mail, no more"
        for mail in mails:
            (recipient,) = mail.rcpt_tos
            assert mail.message["To"] == recipient
            assert mail.correlation_id == expected[recipient]
        assert len({mail.event_id for mail in mails}) == len(mails)

    # ------------------------------------------------------------------ tests

    def test_every_account_gets_exactly_one_mail(self, rig: BankRig) -> None:
        _, emailer = rig.email_service()
        service, server = rig.account_service()
        expected = rig.create_accounts(server, self.accounts, "happy")
        assert rig.sink.wait_for(self.accounts, self.timeout), rig.sink.count()
        wait_until(lambda: service.store.counts()["pending"] == 0, self.timeout, "an empty outbox")
        rig.close()  # drains in-flight handlers: a duplicate in flight would land now
        self._check_mails(rig, expected)
        assert emailer.snapshot().get("sent") == self.accounts
        text = rig.sink.mails[0].message
        assert text.get_body(("plain",)) is not None and text.get_body(("html",)) is not None

    def test_instances_share_the_work(self, rig: BankRig) -> None:
        services = [rig.email_service()[1] for _ in range(2)]
        _, server = rig.account_service()
        expected = rig.create_accounts(server, self.accounts, "shared")
        assert rig.sink.wait_for(self.accounts, self.timeout), rig.sink.count()
        rig.close()
        self._check_mails(rig, expected)
        assert sum(s.snapshot().get("sent", 0) for s in services) == self.accounts

    def test_killed_email_service_is_replaced_without_a_second_mail(self, rig: BankRig) -> None:
        held, release = threading.Event(), threading.Event()
        first: list[str] = []

        def hold_first(envelope: Any) -> None:  # runs in the SMTP server, per mail
            if not first:
                first.append(envelope.rcpt_tos[0])
                held.set()
                release.wait(self.timeout)

        rig.sink.before_accept = hold_first
        bus_a, _ = rig.email_service(concurrency=2)
        _, server = rig.account_service()
        expected = rig.create_accounts(server, self.accounts, "kill")
        assert held.wait(self.timeout), "a send is in progress in instance A"
        bus_a.close(timeout=0)  # "kill": stop at once, nothing in flight is acknowledged
        _, emailer_b = rig.email_service(concurrency=2)
        # B gets the held event again, finds A's live claim, and retries instead of sending.
        wait_until(
            lambda: emailer_b.snapshot().get("busy", 0) >= 1,
            self.timeout,
            "instance B to see the live claim",
        )
        release.set()  # A's SMTP transaction completes now, and A records "sent"
        assert rig.sink.wait_for(self.accounts, self.timeout), rig.sink.count()
        # B's next retry finds A's "sent" record and skips the event.
        wait_until(
            lambda: emailer_b.snapshot().get("duplicate", 0) >= 1,
            self.timeout,
            "instance B to skip the sent mail",
        )
        rig.close()
        self._check_mails(rig, expected)

    def test_mails_arrive_after_an_smtp_outage(self, rig: BankRig) -> None:
        rig.sink.stop()
        _, emailer = rig.email_service()
        _, server = rig.account_service()
        expected = rig.create_accounts(server, self.accounts, "outage")
        wait_until(
            lambda: emailer.snapshot().get("smtp_failed", 0) >= 3,
            self.timeout,
            "three SMTP failures",
        )
        assert rig.sink.count() == 0
        rig.sink.start()  # same port as before
        assert rig.sink.wait_for(self.accounts, self.timeout), rig.sink.count()
        rig.close()
        self._check_mails(rig, expected)

    def test_smtp_failures_end_in_the_dead_letter_queue(self, rig: BankRig) -> None:
        rig.sink.stop()
        dead = rig.recorder(rig.topic + ".dlq")
        _, emailer = rig.email_service(max_attempts=3, backoff=0.01, max_backoff=0.05)
        _, server = rig.account_service()
        rig.create_accounts(server, 1, "dlq")
        dead.wait_for(1, self.timeout)
        (letter,) = dead.messages
        assert letter.headers["msgbus-dlq-attempts"] == "3"
        assert letter.headers["msgbus-dlq-topic"] == rig.topic
        event = AccountCreated.from_dict(letter.payload)
        assert emailer.processed.state(event.event_id) == "failed"
        assert emailer.snapshot().get("smtp_failed") == 3
        assert rig.sink.count() == 0

    def test_outbox_publishes_after_a_crash_between_commit_and_publish(self, rig: BankRig) -> None:
        events = rig.recorder()
        rig.email_service()
        crashed, server = rig.account_service(start_relay=False)  # dies after the commit
        created = rig.request(
            server,
            "POST",
            "/accounts",
            {"owner": "Ana Lima", "email": "ana@example.com"},
            headers={"X-Correlation-ID": "corr-crash"},
        )
        assert created.status == 201
        assert crashed.store.counts() == {"accounts": 1, "pending": 1, "sent": 0}
        assert events.messages == []  # committed, never published
        server.stop()
        crashed.close()
        restarted, _ = rig.account_service()  # same database file, relay starts
        events.wait_for(1, self.timeout)
        assert rig.sink.wait_for(1, self.timeout)
        wait_until(
            lambda: restarted.store.counts()["pending"] == 0,
            self.timeout,
            "the restarted relay to empty the outbox",
        )
        (message,) = events.messages
        event = AccountCreated.from_dict(message.payload)
        assert event.account_id == created.json["id"]
        assert message.key == str(event.account_id)
        assert message.correlation_id == "corr-crash"
        rig.close()
        self._check_mails(rig, {"ana@example.com": "corr-crash"})

    def test_bad_input_is_refused_and_nothing_is_published(self, rig: BankRig) -> None:
        events = rig.recorder()
        service, server = rig.account_service()
        bad_bodies: list[tuple[Any, str]] = [
            ({"owner": "Ana"}, "email"),
            ({"email": "ana@example.com"}, "owner"),
            ({"owner": "Ana", "email": "not-an-email"}, "email"),
            ({"owner": "", "email": "ana@example.com"}, "owner"),
            ({"owner": "Ana", "email": "ana@example.com", "balance": 10**6}, "balance"),
            ([1, 2], "body"),
        ]
        for body, field in bad_bodies:
            result = rig.request(server, "POST", "/accounts", body)
            assert result.status == 422, (body, result)
            assert field in result.json["message"], (body, result.json)
        result = rig.request(server, "POST", "/accounts", raw=b"{not json")
        assert result.status == 422
        result = rig.request(
            server,
            "POST",
            "/accounts",
            {"owner": "Ana", "email": "ana@example.com"},
            headers={"X-Correlation-ID": "bad id\twith tab"},
        )
        assert result.status == 422 and "X-Correlation-ID" in result.json["message"]
        assert service.store.counts() == {"accounts": 0, "pending": 0, "sent": 0}
        good = rig.request(server, "POST", "/accounts", {"owner": "Bo", "email": "bo@example.com"})
        assert good.status == 201
        events.wait_for(1, self.timeout)
        assert [m.payload["email"] for m in events.messages] == ["bo@example.com"]

    def test_unknown_version_and_bad_bodies_are_dead_lettered(self, rig: BankRig) -> None:
        dead = rig.recorder(rig.topic + ".dlq")
        _, emailer = rig.email_service()
        good = AccountCreated.new(1, "Ana", "ana@example.com", _now()).to_dict()
        rig.publish({**good, "version": 99, "event_id": "v99"}, key="1")
        rig.publish({"type": ACCOUNT_CREATED, "version": 1}, key="2")
        rig.publish(b"\x00 not an event", key="3")
        rig.publish(good, key="1", correlation_id="corr-good")
        assert rig.sink.wait_for(1, self.timeout)
        dead.wait_for(3, self.timeout)
        errors = sorted(m.headers["msgbus-dlq-error-type"] for m in dead.messages)
        assert errors == ["msgbus.errors.Reject"] * 3
        assert any("version" in m.headers["msgbus-dlq-error"] for m in dead.messages)
        rig.close()
        self._check_mails(rig, {"ana@example.com": "corr-good"})
        assert emailer.snapshot().get("rejected") == 3


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
