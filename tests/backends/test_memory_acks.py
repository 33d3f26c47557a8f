"""The memory broker's acknowledgements, at the backend SPI.

Acks are applied lazily (by the next receive, requeue or close in the group) unless a member
is waiting in ``receive``; these tests pin down that nobody can observe the delay: a waiting
member is released by an ack at once, and what was acked before a close stays acked.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from msgbus.backend import Delivery, Subscription
from msgbus.backends.memory import MemoryBackend
from msgbus.testing.recorder import wait_until
from msgbus.url import BusURL

WAIT = 10.0  # bound on every wait for something that must happen promptly
STUCK = 60.0  # the receive timeout in the waiting thread: far longer than WAIT


@pytest.fixture
def backend() -> Iterator[MemoryBackend]:
    backend = MemoryBackend.from_url(BusURL.parse(f"memory://acks-{uuid.uuid4().hex[:8]}"))
    yield backend
    backend.close()


def _receive_in_thread(
    sub: Subscription,
    max_messages: int = 10,
) -> tuple[threading.Thread, list[Delivery]]:
    got: list[Delivery] = []
    thread = threading.Thread(target=lambda: got.extend(sub.receive(max_messages, STUCK)))
    thread.start()
    return thread, got


def _wait_until_waiting(backend: MemoryBackend, topic: str, group: str) -> None:
    """Bounded wait until a member of ``group`` sleeps in receive (the broker's own counter)."""
    state = backend.broker.topics[topic][group]
    wait_until(lambda: state.waiting > 0, WAIT, "a member waiting in receive")


def test_an_ack_releases_the_key_for_a_member_waiting_on_it(backend: MemoryBackend) -> None:
    first = backend.subscribe("t", "g", prefetch=10)
    second = backend.subscribe("t", "g", prefetch=10)
    backend.publish("t", b"1", key="k", headers={}).result()
    backend.publish("t", b"2", key="k", headers={}).result()
    [head] = first.receive(10, WAIT)  # the key is now in flight with `first`
    assert head.body == b"1"

    thread, got = _receive_in_thread(second)
    _wait_until_waiting(backend, "t", "g")
    head.ack()
    thread.join(WAIT)

    assert not thread.is_alive(), "the waiting receive was not woken by the ack"

    assert [d.body for d in got] == [b"2"]


def test_an_ack_frees_prefetch_room_for_a_waiting_receive(backend: MemoryBackend) -> None:
    sub = backend.subscribe("t", "g", prefetch=1)
    for body in (b"1", b"2"):
        backend.publish("t", body, key=None, headers={}).result()
    [head] = sub.receive(10, WAIT)

    thread, got = _receive_in_thread(sub)  # no room until `head` is acked
    _wait_until_waiting(backend, "t", "g")
    head.ack()
    thread.join(WAIT)

    assert not thread.is_alive(), "the waiting receive was not woken by the ack"

    assert [d.body for d in got] == [b"2"]


def test_what_was_acked_before_close_is_not_redelivered(backend: MemoryBackend) -> None:
    leaving = backend.subscribe("t", "g", prefetch=10)
    for body in (b"acked", b"unacked"):
        backend.publish("t", body, key=None, headers={}).result()
    acked, unacked = leaving.receive(10, WAIT)
    acked.ack()  # nobody waits: the ack is queued, not yet applied
    leaving.close()

    staying = backend.subscribe("t", "g", prefetch=10)
    redelivered = staying.receive(10, WAIT)

    assert [(d.body, d.redelivered) for d in redelivered] == [(b"unacked", True)]
    assert unacked.body == b"unacked"


def test_a_dropped_message_is_not_redelivered(backend: MemoryBackend) -> None:
    sub = backend.subscribe("t", "g", prefetch=10)
    backend.publish("t", b"x", key="k", headers={}).result()
    backend.publish("t", b"y", key="k", headers={}).result()
    [head] = sub.receive(10, WAIT)
    head.nack(requeue=False)

    [following] = sub.receive(10, WAIT)

    assert following.body == b"y"
    assert not following.redelivered
