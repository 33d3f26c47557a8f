"""PendingFuture: a stock Future's behaviour, with the Condition made only when needed."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from msgbus.futures import PendingFuture, ResolvedFuture, settle_future


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.001)


def test_resolving_a_future_nobody_watches_allocates_no_condition():
    future = PendingFuture()
    future.set_result(42)
    assert future._lazy_condition is None
    assert future.done() and future.result(0) == 42 and future.exception(0) is None


def test_a_failed_future_raises_its_exception():
    future = PendingFuture()
    error = ValueError("refused")
    future.set_exception(error)
    with pytest.raises(ValueError, match="refused"):
        future.result(0)
    assert future.exception(0) is error


def test_result_wakes_a_thread_already_waiting():
    future = PendingFuture()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(future.result(10)))
    waiter.start()
    # the waiter is blocked inside Condition.wait before the future is resolved
    _wait_until(lambda: future._lazy_condition is not None and future._condition._waiters)
    future.set_result("done")
    waiter.join(10)
    assert got == ["done"]


def test_result_times_out_while_pending():
    with pytest.raises(concurrent.futures.TimeoutError):
        PendingFuture().result(0.01)


def test_done_callbacks_run_on_resolution_or_at_once_when_already_done():
    future = PendingFuture()
    seen: list[object] = []
    future.add_done_callback(lambda f: seen.append(("early", f.result())))
    assert seen == []
    future.set_result(1)
    future.add_done_callback(lambda f: seen.append(("late", f.result())))
    assert seen == [("early", 1), ("late", 1)]


@pytest.mark.parametrize("watched", [False, True])
def test_resolving_twice_is_refused(watched):
    future = PendingFuture()
    if watched:
        future.done()  # creates the Condition
    future.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_result(2)
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_exception(RuntimeError())
    assert future.result(0) == 1


def test_a_cancelled_future_refuses_a_late_result():
    future = PendingFuture()
    assert future.cancel() and future.cancelled()
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_result(None)


def test_wait_and_as_completed_see_futures_resolved_from_another_thread():
    futures = [PendingFuture() for _ in range(50)]
    early = futures[:10]
    for index, future in enumerate(early):
        future.set_result(index)  # resolved before anyone watched
    resolver = threading.Thread(
        target=lambda: [f.set_result(i) for i, f in enumerate(futures[10:], 10)]
    )
    resolver.start()
    done, not_done = concurrent.futures.wait(futures, timeout=10)
    resolver.join(10)
    assert not not_done and len(done) == 50
    completed = {f.result() for f in concurrent.futures.as_completed(futures, timeout=10)}
    assert completed == set(range(50))


class _PausedResolver(PendingFuture):
    """Stops for a while right after deciding nobody watches it: the riskiest moment."""

    def __init__(self) -> None:
        super().__init__()
        self.deciding = threading.Event()

    def _finish_unobserved(self, result, exception) -> None:
        self.deciding.set()
        time.sleep(0.3)  # an adversarial pause: a watcher gets every chance to slip in here
        super()._finish_unobserved(result, exception)


@pytest.mark.parametrize("outcome", ["result", "exception"])
def test_a_watcher_arriving_while_an_unwatched_future_resolves_is_not_lost(outcome):
    """The resolver has found no Condition and is about to finish the future when a watcher
    arrives: the watcher must wait for that and then see the future done. Were the decision
    not guarded, the watcher would install itself unseen and never be notified."""
    future = _PausedResolver()
    if outcome == "result":
        resolve = threading.Thread(target=future.set_result, args=(1,))
    else:
        resolve = threading.Thread(target=future.set_exception, args=(RuntimeError("x"),))
    resolve.start()
    assert future.deciding.wait(5)
    done, not_done = concurrent.futures.wait([future], timeout=3)
    resolve.join(5)
    assert future in done and not not_done


@pytest.mark.parametrize("make", [PendingFuture, concurrent.futures.Future])
def test_settle_future_resolves_or_fails_and_leaves_finished_futures_alone(make):
    resolved, failed, cancelled = make(), make(), make()
    settle_future(resolved, None)
    settle_future(failed, RuntimeError("refused"))
    assert resolved.result(0) is None
    assert isinstance(failed.exception(0), RuntimeError)
    settle_future(resolved, RuntimeError("late"))  # a second outcome is ignored
    assert resolved.exception(0) is None
    assert cancelled.cancel()
    settle_future(cancelled, None)
    assert cancelled.cancelled()


@pytest.mark.parametrize("watched", [False, True])
def test_pending_future_settle_is_settle_future_in_one_call(watched):
    resolved, failed, cancelled = PendingFuture(), PendingFuture(), PendingFuture()
    seen: list[object] = []
    if watched:  # a callback makes the Condition: the stock path
        resolved.add_done_callback(seen.append)
    resolved.settle()
    failed.settle(RuntimeError("refused"))
    assert (resolved._lazy_condition is None) is not watched  # before result() makes one
    assert resolved.result(0) is None
    assert isinstance(failed.exception(0), RuntimeError)
    assert seen == ([resolved] if watched else [])
    resolved.settle(RuntimeError("late"))  # a second outcome is ignored
    assert resolved.exception(0) is None
    assert cancelled.cancel()
    cancelled.settle()
    assert cancelled.cancelled()


def test_resolved_future_is_done_at_once():
    future = ResolvedFuture("x")
    seen: list[object] = []
    future.add_done_callback(lambda f: seen.append(f.result()))
    assert future.done() and future.result(0) == "x" and seen == ["x"]
