"""The bank's probes and metrics: /healthz, /readyz (also through a broker outage), /metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgbus.contrib.bank.events import ACCOUNT_CREATED
from msgbus.contrib.bank.http_server import ServerThread
from msgbus.contrib.bank.probes import probe_app
from msgbus.contrib.bank.smtp_sink import SmtpSink
from msgbus.contrib.bank.testing import BankRig
from msgbus.testing.brokers import Broker
from msgbus.testing.pytest_plugin import require_managed
from msgbus.testing.recorder import wait_until

TIMEOUT = 30.0


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET (error statuses included); OSError while nobody listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "msgbus.contrib.bank.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, out
    return out


def wait_for_http(url: str, process: subprocess.Popen[str]) -> None:
    def up() -> bool:
        assert process.poll() is None, process.communicate()[0]
        try:
            return get(url)[0] == 200
        except OSError:
            return False

    wait_until(up, TIMEOUT, f"{url} to answer 200")


def metric_line(text: str, name: str, *labels: str) -> str | None:
    """The first sample line of ``name`` carrying every label in ``labels``."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            return line
    return None


def test_accounts_serve_probes_and_prometheus_metrics(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus")
    port, metrics_port = free_port(), free_port()
    process = spawn(
        *("accounts", "--url", "memory://", "--port", str(port)),
        *("--metrics-port", str(metrics_port)),
        cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/readyz", process)
        assert json.loads(get(f"{base}/healthz")[1])["status"] == "ok"
        ready = json.loads(get(f"{base}/readyz")[1])
        assert ready["ready"] is True and ready["database"] == "ok"
        assert ready["bus"]["state"] == "connected"
        request = urllib.request.Request(
            f"{base}/accounts",
            data=json.dumps({"owner": "Ana", "email": "ana@example.com"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201

        def confirmed() -> bool:
            text = get(f"http://127.0.0.1:{metrics_port}/metrics")[1]
            line = metric_line(
                text,
                "msgbus_messages_confirmed_total",
                'messaging_destination_name="account.created"',
                'messaging_system="memory"',
            )
            return line is not None and line.endswith(" 1.0")

        wait_until(confirmed, TIMEOUT, "the outbox's confirmed publish on /metrics")
        text = get(f"http://127.0.0.1:{metrics_port}/metrics")[1]
        assert "msgbus_publish_duration_seconds_bucket{" in text
    finally:
        stop(process)


def test_emails_serve_probes_and_metrics_on_ports_of_their_own(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus")
    port, metrics_port = free_port(), free_port()
    with SmtpSink() as sink:
        process = spawn(
            *("emails", "--url", "memory://", "--smtp", sink.address),
            *("--port", str(port), "--metrics-port", str(metrics_port)),
            cwd=tmp_path,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/readyz", process)  # 503 until subscribed
            assert get(f"http://127.0.0.1:{port}/healthz") == (200, '{"status":"ok"}')
            body = json.loads(get(f"http://127.0.0.1:{port}/readyz")[1])
            assert body["database"] == "ok"
            (sub,) = body["bus"]["subscriptions"]
            assert (sub["topic"], sub["group"], sub["state"]) == (
                "account.created",
                "email-service",
                "connected",
            )
            status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert status == 200 and "# HELP" in text
        finally:
            stop(process)


@pytest.fixture
def bank_url() -> str:
    """The broker URL (overridden per broker class below)."""
    return f"memory://probes-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rig(bank_url: str, tmp_path: Path) -> Iterator[BankRig]:
    """A :class:`BankRig` (SMTP sink, services on demand) on a topic of its own."""
    with SmtpSink() as sink:
        topic = f"{ACCOUNT_CREATED}.t{uuid.uuid4().hex[:10]}"
        rig = BankRig(bank_url, topic, tmp_path, sink, TIMEOUT)
        try:
            yield rig
        finally:
            rig.close()


def test_readyz_is_503_when_the_database_is_unreadable(rig: BankRig) -> None:
    service, server = rig.account_service()
    assert get(f"{server.url}/readyz")[0] == 200
    service.store.close()  # every later query raises sqlite3.ProgrammingError
    status, text = get(f"{server.url}/readyz")
    body = json.loads(text)
    assert status == 503 and body["ready"] is False
    assert "closed" in body["database"] and body["bus"]["ready"] is True


def _probe_outage(rig: BankRig, broker: Broker, *, publisher_notices: bool = True) -> None:
    """Both services' /readyz: 200, 503 while ``broker`` is stopped, 200 after its restart.

    ``publisher_notices=False``: the account service's bus (publish only) learns of the
    outage at its next publish, so only the email service's probe is watched during it.
    """
    require_managed(broker)
    bus, emailer = rig.email_service()
    probes = ServerThread(probe_app(bus, emailer.processed.db.ping, title="emails")).start()
    _, api = rig.account_service()
    try:
        bases = (api.url, probes.url)
        for base in bases:
            assert get(f"{base}/readyz")[0] == 200, get(f"{base}/readyz")
        broker.stop()
        try:
            for base in bases if publisher_notices else (probes.url,):
                wait_until(lambda b=base: get(f"{b}/readyz")[0] == 503, TIMEOUT, f"{base} 503")
                body = json.loads(get(f"{base}/readyz")[1])
                assert body["ready"] is False and body["database"] == "ok"
                assert body["bus"]["last_error"] or any(
                    s["last_error"] for s in body["bus"]["subscriptions"]
                )
                assert "guest" not in json.dumps(body)  # no credentials in a probe body
                assert get(f"{base}/healthz")[0] == 200  # alive all the same
        finally:
            broker.start()
        for base in bases:
            wait_until(lambda b=base: get(f"{b}/readyz")[0] == 200, TIMEOUT * 2, f"{base} 200")
        created = rig.create_accounts(api, 1, "after-outage")  # and the bank works again
        assert rig.sink.wait_for(1, TIMEOUT), sorted(created)
    finally:
        probes.stop()


@pytest.mark.rabbitmq
@pytest.mark.slow
class TestProbesOnRabbitMQ:
    @pytest.fixture
    def bank_url(self, rabbitmq_broker: Broker) -> str:
        return rabbitmq_broker.url

    def test_readyz_follows_a_broker_outage(self, rig: BankRig, rabbitmq_broker: Broker) -> None:
        _probe_outage(rig, rabbitmq_broker)


@pytest.mark.kombu
@pytest.mark.redis
@pytest.mark.slow
class TestProbesOnKombuRedis:
    @pytest.fixture
    def bank_url(self, redis_broker: Broker) -> str:
        return "kombu+" + redis_broker.url

    def test_readyz_follows_a_broker_outage(self, rig: BankRig, redis_broker: Broker) -> None:
        # kombu's Redis transport has no heartbeat: an idle publishing connection finds the
        # outage only when it next publishes, so the account service's probe is not watched.
        _probe_outage(rig, redis_broker, publisher_notices=False)
