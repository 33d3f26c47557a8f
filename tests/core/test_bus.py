"""Bus behaviour on the memory backend: connect, publish errors, run() and signals."""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid

import pytest

import msgbus
from msgbus.testing.recorder import Recorder, wait_until


@pytest.fixture
def url() -> str:
    return f"memory://bus-{uuid.uuid4().hex[:8]}"


def test_connect_uses_env_then_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSGBUS_URL", raising=False)
    with msgbus.connect() as bus:
        assert bus.url is not None and bus.url.scheme == "memory"
    monkeypatch.setenv("MSGBUS_URL", "memory://from-env")
    with msgbus.connect() as bus:
        assert bus.backend.broker.name == "from-env"  # type: ignore[attr-defined]


def test_named_memory_broker_is_shared_between_buses(url: str) -> None:
    with msgbus.connect(url) as reader, msgbus.connect(url) as writer:
        rec = Recorder()
        reader.subscribe("t", rec, group="g")
        reader.start()
        writer.publish("t", {"id": 7}).result(5)
        assert rec.wait_for(1, 5)[0].payload == {"id": 7}


def test_publish_rejects_bad_input_before_sending(url: str) -> None:
    with msgbus.connect(url) as bus:
        for topic in ("", "has space", "slash/no", "ü", 5):
            with pytest.raises(msgbus.ConfigurationError):
                bus.publish(topic, 1)  # type: ignore[arg-type]
        with pytest.raises(msgbus.ConfigurationError):
            bus.publish("t", 1, key=7)  # type: ignore[arg-type]
        with pytest.raises(msgbus.ConfigurationError):
            bus.subscribe("t", print, concurrency=0)
        with pytest.raises(msgbus.ConfigurationError):
            bus.subscribe("t", print, max_attempts=0)


def test_oversized_message_is_refused_and_nothing_is_delivered(url: str) -> None:
    with msgbus.connect(url, max_message_bytes=1000) as bus:
        rec = Recorder()
        bus.subscribe("t", rec, group="g")
        bus.start()
        with pytest.raises(msgbus.MessageTooLarge):
            bus.publish("t", b"x" * 1001)
        bus.publish("t", b"small").result(5)
        assert [m.payload for m in rec.wait_for(1, 5)] == [b"small"]


def test_closed_bus_refuses_work(url: str) -> None:
    bus = msgbus.connect(url)
    bus.close()
    assert "closed" in repr(bus)
    with pytest.raises(msgbus.BusClosed):
        bus.publish("t", 1)
    with pytest.raises(msgbus.BusClosed):
        bus.subscribe("t", print)
    with pytest.raises(msgbus.BusClosed):
        bus.start()


def test_subscribe_after_start_is_ready_on_return(url: str) -> None:
    with msgbus.connect(url) as bus:
        bus.start()
        rec = Recorder()
        bus.subscribe("t", rec, group="late")
        bus.publish("t", "x").result(5)
        assert rec.wait_for(1, 5)[0].payload == "x"


def test_run_stops_on_sigterm_after_finishing_in_flight(url: str) -> None:
    bus = msgbus.connect(url)
    entered, release = threading.Event(), threading.Event()

    def slow(msg: msgbus.Message) -> None:
        entered.set()
        release.wait(10)

    rec = Recorder(slow)
    bus.subscribe("t", rec, group="g")

    def drive() -> None:
        wait_until(lambda: bus._started, 5, "bus started")
        bus.publish("t", "in-flight").result(5)
        entered.wait(5)
        os.kill(os.getpid(), signal.SIGTERM)
        release.set()

    driver = threading.Thread(target=drive)
    driver.start()
    previous = signal.getsignal(signal.SIGTERM)
    bus.run(drain_timeout=10)
    driver.join(5)
    assert bus.closed
    assert [m.payload for m in rec.messages] == ["in-flight"]
    assert signal.getsignal(signal.SIGTERM) == previous


def test_stop_from_another_thread_ends_run(url: str) -> None:
    bus = msgbus.connect(url)
    bus.subscribe("t", print, group="g")
    threading.Timer(0.1, bus.stop).start()
    bus.run()
    assert bus.closed


def test_password_never_logged_or_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(msgbus.ConfigurationError) as info:
        msgbus.connect("memory://ana:hunter2@host")
    assert "hunter2" not in str(info.value)
    with pytest.raises(msgbus.InvalidURL) as bad:
        msgbus.connect("memory://ana:hunter2@host:notaport")
    assert "hunter2" not in str(bad.value)
    assert "hunter2" not in caplog.text


def test_retry_policy_backoff_grows_and_caps() -> None:
    policy = msgbus.RetryPolicy(max_attempts=5, backoff=0.1, max_backoff=0.3, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    jittered = msgbus.RetryPolicy(backoff=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1) <= 1.5 for _ in range(50))


def test_handler_failure_is_logged_with_attempts(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="msgbus")
    with msgbus.connect(url) as bus:
        dead = Recorder()
        bus.subscribe("t.dlq", dead, group="d")

        def fail(msg: msgbus.Message) -> None:
            raise KeyError("nope")

        bus.subscribe("t", fail, group="g", max_attempts=2, backoff=0.01)
        bus.start()
        bus.publish("t", 1)
        dead.wait_for(1, 5)
    assert "attempt 1/2" in caplog.text and "dead-lettering" in caplog.text
