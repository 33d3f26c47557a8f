"""The email service's idempotency record: claims, leases, races."""

from __future__ import annotations

import threading
from pathlib import Path

from msgbus.contrib.bank.processed import Claim, ProcessedEvents


def test_claim_send_then_skip(tmp_path: Path) -> None:
    store = ProcessedEvents(tmp_path / "e.db")
    assert store.claim("e1", "a", lease=60) is Claim.SEND
    assert store.state("e1") == "sending"
    store.mark_sent("e1")
    assert store.claim("e1", "b", lease=60) is Claim.ALREADY_SENT
    assert store.counts() == {"sent": 1}


def test_live_claim_is_busy_and_an_expired_one_is_taken_over(tmp_path: Path) -> None:
    store = ProcessedEvents(tmp_path / "e.db")
    assert store.claim("e1", "a", lease=60) is Claim.SEND
    assert store.claim("e1", "b", lease=60) is Claim.BUSY
    assert store.claim("e1", "b", lease=0) is Claim.SEND  # a's claim is older than the lease
    store.release("e1", "a", "late failure of the old owner")  # not a's claim any more
    assert store.state("e1") == "sending"


def test_released_claim_can_be_claimed_again(tmp_path: Path) -> None:
    store = ProcessedEvents(tmp_path / "e.db")
    assert store.claim("e1", "a", lease=60) is Claim.SEND
    store.release("e1", "a", "SMTPServerDisconnected: gone")
    assert store.state("e1") == "failed"
    assert store.claim("e1", "b", lease=60) is Claim.SEND


def test_one_winner_among_racing_instances(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    stores = [ProcessedEvents(path) for _ in range(4)]  # separate connections, like processes
    barrier = threading.Barrier(16)
    results: list[Claim] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        barrier.wait()
        outcome = stores[index % 4].claim("e1", f"owner{index}", lease=60)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.value for r in results) == ["busy"] * 15 + ["send"]
