"""DeliveryBuffer: the receive buffer the broker backends share (msgbus.backend)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import msgbus
from msgbus.backend import Delivery, DeliveryBuffer

# A take that misses its wake-up would wait this long (the test's bound on it is 10 s).
TAKE_TIMEOUT = 60.0


def _delivery(n: int) -> Delivery:
    return Delivery("t", str(n).encode(), {}, None, lambda _d, _ack, _requeue: None)


def _bodies(deliveries: list[Delivery]) -> list[bytes]:
    return [d.body for d in deliveries]


@pytest.fixture(autouse=True)
def _no_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    # a take rechecks the buffer every recheck_interval; so long that only a wake-up ends it
    monkeypatch.setattr(DeliveryBuffer, "recheck_interval", 2 * TAKE_TIMEOUT)


def _take_in_thread(
    buffer: DeliveryBuffer,
) -> tuple[threading.Thread, threading.Event, list[list[Delivery]]]:
    """Start a take(10, TAKE_TIMEOUT); return once it is about to wait for the buffer."""
    waiting = threading.Event()
    result: list[list[Delivery]] = []

    def take() -> None:
        with buffer:
            result.append(buffer.take(10, TAKE_TIMEOUT, check=waiting.set))

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    # check runs with the lock held right before the wait, which is what releases the lock:
    # whoever takes the lock after this event is set finds the taker waiting.
    assert waiting.wait(10.0), "take did not start waiting"
    return thread, waiting, result


def test_take_returns_what_was_put_in_order_up_to_max_messages() -> None:
    buffer = DeliveryBuffer()
    with buffer:
        for n in range(5):
            buffer.put(_delivery(n))
        assert len(buffer) == 5
        assert _bodies(buffer.take(2, 0.05)) == [b"0", b"1"]
        assert _bodies(buffer.take(10, 0.05)) == [b"2", b"3", b"4"]
        assert len(buffer) == 0


def test_put_front_is_taken_first() -> None:
    buffer = DeliveryBuffer()
    with buffer:
        buffer.put(_delivery(1))
        buffer.put(_delivery(2))
        buffer.put_front(_delivery(0))
        assert _bodies(buffer.take(10, 0.05)) == [b"0", b"1", b"2"]


def test_take_returns_empty_on_timeout() -> None:
    buffer = DeliveryBuffer()
    with buffer:
        assert buffer.take(10, 0.05) == []


@pytest.mark.parametrize("put", [DeliveryBuffer.put, DeliveryBuffer.put_front])
def test_a_put_from_another_thread_wakes_a_waiting_take(
    put: Callable[[DeliveryBuffer, Delivery], None],
) -> None:
    buffer = DeliveryBuffer()
    thread, _waiting, result = _take_in_thread(buffer)
    with buffer:
        put(buffer, _delivery(7))
    thread.join(10.0)
    assert not thread.is_alive(), f"{put.__name__} did not wake the waiting take"
    assert [_bodies(r) for r in result] == [[b"7"]]


def test_close_wakes_a_waiting_take_which_returns_nothing() -> None:
    buffer = DeliveryBuffer()
    thread, _waiting, result = _take_in_thread(buffer)
    with buffer:
        assert buffer.close() == []
    thread.join(10.0)
    assert not thread.is_alive(), "close did not wake the waiting take"
    assert result == [[]]
    assert buffer.closed


def test_close_drops_what_is_buffered_and_what_is_put_later() -> None:
    buffer = DeliveryBuffer()
    with buffer:
        buffer.put(_delivery(1))
        assert _bodies(buffer.close()) == [b"1"]
        buffer.put(_delivery(2))
        buffer.put_front(_delivery(3))
        assert len(buffer) == 0
        assert buffer.take(10, 0.05) == []


def test_clear_drops_what_is_buffered_and_wakes_take_to_check_again() -> None:
    buffer = DeliveryBuffer()
    thread, waiting, result = _take_in_thread(buffer)
    waiting.clear()
    with buffer:
        buffer.put_front(_delivery(1))  # wakes the taker, which finds the buffer cleared
        assert _bodies(buffer.clear()) == [b"1"]
    assert waiting.wait(10.0), "clear did not wake the waiting take to check again"
    with buffer:
        buffer.put(_delivery(2))
    thread.join(10.0)
    assert not thread.is_alive()
    assert [_bodies(r) for r in result] == [[b"2"]]
    assert not buffer.closed


def test_wake_makes_a_waiting_take_run_its_check_again_and_keeps_what_is_buffered() -> None:
    buffer = DeliveryBuffer()
    thread, waiting, result = _take_in_thread(buffer)
    waiting.clear()
    with buffer:
        buffer.wake()
    assert waiting.wait(10.0), "wake did not make the waiting take check again"
    with buffer:
        buffer.put(_delivery(3))
    thread.join(10.0)
    assert not thread.is_alive()
    assert [_bodies(r) for r in result] == [[b"3"]]


def test_a_raising_check_propagates_only_while_the_buffer_is_empty() -> None:
    def check() -> None:
        raise msgbus.BrokerUnavailable("gone")

    buffer = DeliveryBuffer()
    with buffer:
        with pytest.raises(msgbus.BrokerUnavailable, match="gone"):
            buffer.take(10, TAKE_TIMEOUT, check=check)
        buffer.put(_delivery(1))
        assert _bodies(buffer.take(10, TAKE_TIMEOUT, check=check)) == [b"1"]


def test_shares_the_lock_it_is_given() -> None:
    lock = threading.Lock()
    buffer = DeliveryBuffer(lock)
    assert buffer.lock is lock
    with buffer:
        assert lock.locked()
    assert not lock.locked()
