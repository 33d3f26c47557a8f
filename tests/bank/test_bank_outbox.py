"""The account store's transactional outbox and the relay that publishes it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import msgbus
import msgbus.aio
from msgbus.contrib.bank import events as events_module
from msgbus.contrib.bank.outbox import OutboxRelay
from msgbus.contrib.bank.store import AccountStore
from msgbus.testing.recorder import Recorder, wait_until

TOPIC = "account.created"
TIMEOUT = 10.0


@pytest.fixture
def url() -> str:
    return f"memory://outbox-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def recorder(url: str) -> Iterator[Recorder]:
    """Every message on TOPIC, received by a plain bus of its own."""
    recorder = Recorder()
    with msgbus.connect(url) as bus:
        bus.subscribe(TOPIC, recorder, group=None)
        bus.start()
        yield recorder


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait (on a thread, off the loop) until ``predicate`` holds; bounded by TIMEOUT."""
    await asyncio.to_thread(wait_until, predicate, TIMEOUT, what)


class FlakyBus:
    """Publishes through ``bus``, but the first ``fail`` calls fail (raise or failed future)."""

    def __init__(self, bus: msgbus.aio.AsyncBus, fail: int, *, raise_at_once: bool) -> None:
        self.bus, self.fail, self.raise_at_once = bus, fail, raise_at_once
        self.calls = 0

    def publish(self, topic: str, payload: Any, **options: Any) -> Any:
        self.calls += 1
        if self.calls <= self.fail:
            error = msgbus.BrokerUnavailable("broker is down (test)")
            if self.raise_at_once:
                raise error
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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
    tmp_path: Path, url: str, recorder: Recorder
) -> None:
    store = AccountStore(tmp_path / "a.db")
    created = [
        store.create_account(f"U{i}", f"u{i}@example.com", correlation_id=f"c{i}")
        for i in range(20)
    ]

    async def main() -> OutboxRelay:
        async with msgbus.aio.connect(url) as bus:
            relay = OutboxRelay(store, bus, batch_size=7).start()
            try:
                await until(lambda: len(recorder.messages) >= 20, "20 events")
                await until(lambda: store.counts()["pending"] == 0, "an empty outbox")
            finally:
                await relay.stop()
        return relay

    relay = asyncio.run(main())
    got = [(m.key, m.correlation_id, m.id, m.payload["event_id"]) for m in recorder.messages]
    assert got == [(str(a.id), f"c{i}", e.event_id, e.event_id) for i, (a, e) in enumerate(created)]
    assert relay.published == 20


def test_notify_from_another_thread_wakes_the_relay_without_waiting_for_the_sweep(
    tmp_path: Path, url: str, recorder: Recorder
) -> None:
    store = AccountStore(tmp_path / "a.db")

    async def main() -> None:
        async with msgbus.aio.connect(url) as bus:
            relay = OutboxRelay(store, bus, sweep_interval=3600).start()
            try:
                await until(lambda: relay.passes == 1, "the first pass")
                # the relay sleeps now until the sweep, an hour away, or a notify

                def create_and_notify() -> None:  # as the HTTP handler does, on a thread
                    store.create_account("Ana", "ana@example.com")
                    relay.notify()

                await asyncio.to_thread(create_and_notify)
                await until(lambda: len(recorder.messages) >= 1, "the event")
            finally:
                await relay.stop()

    asyncio.run(main())


def test_sweep_finds_rows_written_elsewhere(tmp_path: Path, url: str, recorder: Recorder) -> None:
    async def main() -> None:
        async with msgbus.aio.connect(url) as bus:
            relay = OutboxRelay(AccountStore(tmp_path / "a.db"), bus, sweep_interval=0.1).start()
            try:
                other_process = AccountStore(tmp_path / "a.db")  # no notify reaches this relay
                other_process.create_account("Ana", "ana@example.com")
                await until(lambda: len(recorder.messages) >= 1, "the event")
            finally:
                await relay.stop()

    asyncio.run(main())


@pytest.mark.parametrize("raise_at_once", [True, False], ids=["raises", "failed-future"])
def test_publish_failures_are_retried_with_backoff(
    tmp_path: Path, url: str, recorder: Recorder, raise_at_once: bool
) -> None:
    store = AccountStore(tmp_path / "a.db")
    store.create_account("Ana", "ana@example.com")
    store.create_account("Bo", "bo@example.com")

    async def main() -> tuple[OutboxRelay, FlakyBus]:
        async with msgbus.aio.connect(url) as bus:
            flaky = FlakyBus(bus, 3, raise_at_once=raise_at_once)
            relay = OutboxRelay(store, flaky, backoff=0.01, max_backoff=0.05).start()
            try:
                await until(lambda: len(recorder.messages) >= 2, "both events")
                await until(lambda: store.counts()["pending"] == 0, "an empty outbox")
            finally:
                await relay.stop()
        return relay, flaky

    relay, flaky = asyncio.run(main())
    assert relay.failures >= 2 and flaky.calls >= 5  # one failed pass per failed batch
    assert sorted(m.payload["owner"] for m in recorder.messages) == ["Ana", "Bo"]  # once each


def test_a_row_is_marked_sent_only_after_confirmation(tmp_path: Path) -> None:
    store = AccountStore(tmp_path / "a.db")
    store.create_account("Ana", "ana@example.com")

    class NeverConfirms:
        def publish(self, topic: str, payload: Any, **options: Any) -> Any:
            return asyncio.get_running_loop().create_future()  # the broker never answers

    relay = OutboxRelay(store, NeverConfirms(), publish_timeout=0.05)
    with pytest.raises(TimeoutError):
        asyncio.run(relay.publish_pending())
    (entry,) = store.pending()
    assert entry.attempts == 1
    assert store.counts()["sent"] == 0
