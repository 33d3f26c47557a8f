"""The account store's transactional outbox and the relay that publishes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import msgbus
from msgbus.contrib.bank import events as events_module
from msgbus.contrib.bank.outbox import OutboxRelay
from msgbus.contrib.bank.store import AccountStore
from msgbus.testing.recorder import Recorder, wait_until

TOPIC = "account.created"
TIMEOUT = 10.0


@pytest.fixture
def bus() -> Iterator[msgbus.Bus]:
    with msgbus.connect(f"memory://outbox-{uuid.uuid4().hex[:8]}") as bus:
        yield bus


@pytest.fixture
def recorder(bus: msgbus.Bus) -> Recorder:
    recorder = Recorder()
    bus.subscribe(TOPIC, recorder, group=None)
    bus.start()
    return recorder


class FlakyBus:
    """Publishes through ``bus``, but the first ``fail`` calls fail (raise or failed future)."""

    def __init__(self, bus: msgbus.Bus, fail: int, *, raise_at_once: bool) -> None:
        self.bus, self.fail, self.raise_at_once = bus, fail, raise_at_once
        self.calls = 0

    def publish(self, topic: str, payload: Any, **options: Any) -> Any:
        self.calls += 1
        if self.calls <= self.fail:
            error = msgbus.BrokerUnavailable("broker is down (test)")
            if self.raise_at_once:
                raise error
            future: Future[None] = Future()
            future.set_exception(error)
            return future
        return self.bus.publish(topic, payload, **options)


def test_account_and_event_are_written_together(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "a.db")
    account, event = store.create_account("Ana", "ana@example.com", correlation_id="c1")
    assert store.get_account(account.id) == account
    (entry,) = store.pending()
    assert entry.event_id == event.event_id and entry.key == str(account.id)
    assert entry.payload == event.to_dict() and entry.correlation_id == "c1"
    assert store.counts() == {"accounts": 1, "pending": 1, "sent": 0}


def test_no_account_without_its_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AccountStore(tmp_path / "a.db")

    def broken(*args: Any) -> Any:
        raise RuntimeError("crash between the two inserts")

    monkeypatch.setattr(events_module.AccountCreated, "new", broken)
    with pytest.raises(RuntimeError):
        store.create_account("Ana", "ana@example.com")
    assert store.counts() == {"accounts": 0, "pending": 0, "sent": 0}


def test_relay_publishes_in_order_with_key_correlation_and_id(
    tmp_path: Path, bus: msgbus.Bus, recorder: Recorder
) -> None:
    store = AccountStore(tmp_path / "a.db")
    created = [
        store.create_account(f"U{i}", f"u{i}@example.com", correlation_id=f"c{i}")
        for i in range(20)
    ]
    relay = OutboxRelay(store, bus, batch_size=7).start()
    try:
        recorder.wait_for(20, TIMEOUT)
        wait_until(lambda: store.counts()["pending"] == 0, TIMEOUT)
    finally:
        relay.stop()
    got = [(m.key, m.correlation_id, m.id, m.payload["event_id"]) for m in recorder.messages]
    assert got == [(str(a.id), f"c{i}", e.event_id, e.event_id) for i, (a, e) in enumerate(created)]
    assert relay.published == 20


def test_notify_wakes_the_relay_without_waiting_for_the_sweep(
    tmp_path: Path, bus: msgbus.Bus, recorder: Recorder
) -> None:
    store = AccountStore(tmp_path / "a.db")
    relay = OutboxRelay(store, bus, sweep_interval=3600).start()
    try:
        wait_until(lambda: relay._thread is not None, TIMEOUT)
        store.create_account("Ana", "ana@example.com")
        relay.notify()
        recorder.wait_for(1, TIMEOUT)
    finally:
        relay.stop()


def test_sweep_finds_rows_written_elsewhere(
    tmp_path: Path, bus: msgbus.Bus, recorder: Recorder
) -> None:
    relay = OutboxRelay(AccountStore(tmp_path / "a.db"), bus, sweep_interval=0.1).start()
    try:
        other_process = AccountStore(tmp_path / "a.db")  # no notify reaches this relay
        other_process.create_account("Ana", "ana@example.com")
        recorder.wait_for(1, TIMEOUT)
    finally:
        relay.stop()


@pytest.mark.parametrize("raise_at_once", [True, False], ids=["raises", "failed-future"])
def test_publish_failures_are_retried_with_backoff(
    tmp_path: Path, bus: msgbus.Bus, recorder: Recorder, raise_at_once: bool
) -> None:
    store = AccountStore(tmp_path / "a.db")
    store.create_account("Ana", "ana@example.com")
    store.create_account("Bo", "bo@example.com")
    flaky = FlakyBus(bus, 3, raise_at_once=raise_at_once)
    relay = OutboxRelay(store, flaky, backoff=0.01, max_backoff=0.05).start()
    try:
        recorder.wait_for(2, TIMEOUT)
        wait_until(lambda: store.counts()["pending"] == 0, TIMEOUT)
    finally:
        relay.stop()
    assert relay.failures >= 2 and flaky.calls >= 5  # one failed pass per failed batch
    assert sorted(m.payload["owner"] for m in recorder.messages) == ["Ana", "Bo"]  # once each


def test_a_row_is_marked_sent_only_after_confirmation(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "a.db")
    store.create_account("Ana", "ana@example.com")

    class NeverConfirms:
        def publish(self, topic: str, payload: Any, **options: Any) -> Future[None]:
            return Future()  # the broker never answers

    relay = OutboxRelay(store, NeverConfirms(), publish_timeout=0.05)
    with pytest.raises(TimeoutError):
        relay.publish_pending()
    (entry,) = store.pending()
    assert entry.attempts == 1
    assert store.counts()["sent"] == 0
