"""msgbus.backendkit: the publish window, the outage policy and the AMQP mapping (no broker)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

import msgbus
from msgbus.backendkit import (
    MAX_LOSSES,
    Backoff,
    Outage,
    Outgoing,
    PendingFuture,
    PublishWindow,
    check_publish,
)
from msgbus.backendkit.amqp import from_amqp, to_amqp


def _window(max_in_flight: int = 2, reconnect_timeout: float = 30.0) -> PublishWindow[Outgoing]:
    return PublishWindow("Test", max_in_flight, Outage("test broker", reconnect_timeout))


def _entry() -> Outgoing:
    return Outgoing(PendingFuture())


def test_backoff_doubles_to_two_seconds_and_resets() -> None:
    backoff = Backoff()
    assert [backoff.next() for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    backoff.reset()
    assert backoff.next() == 0.1


def test_outage_reports_then_gives_up_once_and_recovers() -> None:
    outage = Outage("test broker", reconnect_timeout=0.05)
    assert outage.problem() is None
    assert outage.down(ConnectionError("refused"))
    assert not outage.down(ConnectionError("still refused"))  # one outage, newest reason
    problem = outage.problem()
    assert isinstance(problem, msgbus.BrokerUnavailable)
    assert "still refused" in str(problem)
    assert not outage.give_up_now()  # not beyond reconnect_timeout yet
    deadline = time.monotonic() + 5
    while not outage.beyond_recovery() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outage.give_up_now()
    assert not outage.give_up_now()  # exactly once per outage
    with pytest.raises(msgbus.BrokerUnavailable, match=r"for more than 0\.05s"):
        outage.check()
    outage.up()
    assert outage.problem() is None and not outage.gave_up
    outage.check()


def test_confirms_settle_in_order_and_multiple_covers_earlier_tags() -> None:
    window = _window(max_in_flight=10)
    entries = [_entry() for _ in range(4)]
    for entry in entries:
        assert window.admit(entry)
    for tag, entry in enumerate(window.queued(), start=1):
        window.record(tag, entry)
    window.finish(window.confirmed(2), None)
    assert [e.future.done() for e in entries] == [False, True, False, False]
    window.finish(window.confirmed(3, multiple=True), None)
    assert [e.future.done() for e in entries] == [True, True, True, False]
    assert window.pending == 1


def test_full_window_blocks_until_a_confirm_frees_room() -> None:
    window = _window(max_in_flight=1)
    first = _entry()
    window.admit(first)
    window.record(1, window.queued()[0])
    admitted = threading.Event()

    def second() -> None:
        window.admit(_entry())
        admitted.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not admitted.wait(0.2)  # blocked: the window is full
    window.finish(window.confirmed(1), None)
    assert admitted.wait(5)
    thread.join()


def test_full_window_fails_the_future_after_reconnect_timeout() -> None:
    window = _window(max_in_flight=1, reconnect_timeout=0.1)
    window.admit(_entry())
    late = _entry()
    assert not window.admit(late)
    with pytest.raises(msgbus.BrokerUnavailable, match="max_in_flight=1"):
        late.future.result(0)
    assert window.pending == 1  # the failed one was never counted


def test_close_wakes_a_blocked_publisher_with_bus_closed() -> None:
    window = _window(max_in_flight=1)
    window.admit(_entry())
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            window.admit(_entry())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=publish)
    thread.start()
    deadline = time.monotonic() + 5
    while window._waiting == 0 and time.monotonic() < deadline:  # blocked in admit
        time.sleep(0.005)
    assert window._waiting == 1
    window.close()
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], msgbus.BusClosed)


def test_lost_connection_requeues_in_order_and_fails_after_max_losses() -> None:
    window = _window(max_in_flight=10)
    entries = [_entry() for _ in range(3)]
    for entry in entries:
        window.admit(entry)
    for _ in range(MAX_LOSSES - 1):
        for tag, entry in enumerate(window.queued()):
            window.record(tag, entry)
        window.connection_lost("reset by peer")
        assert list(window.queued()) == entries  # front of the queue, publish order
        window.requeue(entries)
    for tag, entry in enumerate(window.queued()):
        window.record(tag, entry)
    window.connection_lost("reset by peer")
    for entry in entries:
        with pytest.raises(msgbus.PublishError, match="3 connections in a row"):
            entry.future.result(0)
    assert window.pending == 0


def test_give_up_fails_queued_and_new_publishes_until_up() -> None:
    outage = Outage("test broker", reconnect_timeout=0.0)
    window: PublishWindow[Outgoing] = PublishWindow("Test", 10, outage)
    queued = _entry()
    window.admit(queued)
    outage.down(ConnectionError("refused"))
    time.sleep(0.001)
    assert window.give_up()
    with pytest.raises(msgbus.BrokerUnavailable, match="refused"):
        queued.future.result(0)
    late = _entry()
    assert not window.admit(late)
    assert isinstance(late.future.exception(0), msgbus.BrokerUnavailable)
    outage.up()
    assert window.admit(_entry())


def test_flush_times_out_naming_the_pending_count() -> None:
    window = _window()
    window.admit(_entry())
    with pytest.raises(TimeoutError, match="1 publish"):
        window.flush(0.05)


def test_check_publish_refuses_closed_oversized_and_bad_keys() -> None:
    with pytest.raises(msgbus.BusClosed):
        check_publish("x", closed=True, body=b"", max_message_bytes=1)
    with pytest.raises(msgbus.MessageTooLarge):
        check_publish("x", closed=False, body=b"ab", max_message_bytes=1)
    with pytest.raises(msgbus.ConfigurationError, match="key must be a str"):
        check_publish("x", closed=False, body=b"", max_message_bytes=1, key=b"k")


def test_amqp_mapping_round_trips_and_refuses_long_header_names() -> None:
    headers = {
        "content-type": "application/json",
        "msgbus-id": "id-1",
        "msgbus-correlation-id": "c" * 300,  # too long for the property: a header instead
        "msgbus-timestamp": "1700000000123",
        "x-user": "ü",
    }
    props = to_amqp(headers, "k1")
    assert props.content_type == "application/json" and props.message_id == "id-1"
    assert props.correlation_id is None and props.timestamp == 1_700_000_000
    back, key = from_amqp(
        props.headers, props.content_type, props.message_id, props.correlation_id, 1
    )
    assert back == headers and key == "k1"
    with pytest.raises(msgbus.ConfigurationError, match="255 bytes"):
        to_amqp({"é" * 200: "v"}, None)


def test_amqp_mapping_reads_plain_client_values_as_text() -> None:
    back, key = from_amqp({"n": 5, "b": b"x", "msgbus-key": b"k"}, None, "m", None, 1700000000)
    assert back == {"n": "5", "b": "x", "msgbus-id": "m", "msgbus-timestamp": "1700000000000"}
    assert key == "k"


def test_settle_from_stock_future_is_tolerated() -> None:
    window = _window()
    entry = Outgoing(Future())
    window.admit(entry)
    entry.future.cancel()
    window.finish([entry], None)  # a cancelled future is left as it is
    assert window.pending == 0
