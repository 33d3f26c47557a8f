"""msgbus.aio on memory://: publish bridging, async handlers, bounds, timeouts, shutdown.

The delivery contract itself is covered by the conformance suite's ``[aio]`` run; these
tests cover what is the facade's own. Each test runs its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

import pytest

import msgbus
import msgbus.aio
from msgbus.message import DLQ_ATTEMPTS, DLQ_ERROR_TYPE

TIMEOUT = 10.0


def memory_url() -> str:
    return f"memory://aio-{uuid.uuid4().hex[:8]}"


async def wait_for(event: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_publish_resolves_and_bad_input_raises_before_any_await() -> None:
    async def main() -> None:
        async with msgbus.aio.connect(memory_url()) as bus:
            received: list[Any] = []
            arrived = asyncio.Event()

            @bus.subscribe("t", group="g")
            async def handle(msg: msgbus.Message) -> None:
                received.append((msg.payload, msg.key, dict(msg.headers)))
                arrived.set()

            await bus.start()
            assert await bus.publish("t", {"n": 1}, key="k", headers={"a": "b"}) is None
            await wait_for(arrived, "the message")
            assert received == [({"n": 1}, "k", {"a": "b"})]
            with pytest.raises(msgbus.ReservedHeader):
                bus.publish("t", 1, headers={"msgbus-id": "x"})  # no await needed to fail
            with pytest.raises(msgbus.SerializationError):
                bus.publish("t", object())
            await bus.flush(TIMEOUT)
        with pytest.raises(msgbus.BusClosed):
            bus.publish("t", 2)

    asyncio.run(main())


def test_bridge_resolves_from_another_thread_without_blocking_the_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        pending: Future[None] = Future()
        waiter = msgbus.aio.bridge(pending, loop)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        resolver = threading.Timer(0.05, pending.set_result, args=(None,))
        resolver.start()
        await asyncio.wait_for(waiter, TIMEOUT)
        tick_task.cancel()
        assert ticks >= 5, "the loop did not run while the publish was pending"

        failing: Future[None] = Future()
        failed = msgbus.aio.bridge(failing, loop)
        threading.Thread(target=failing.set_exception, args=(msgbus.PublishError("no"),)).start()
        with pytest.raises(msgbus.PublishError):
            await asyncio.wait_for(failed, TIMEOUT)

        unawaited: Future[None] = Future()
        gave_up = msgbus.aio.bridge(unawaited, loop)
        gave_up.cancel()
        unawaited.set_result(None)  # resolving after the waiter was cancelled is harmless
        assert not unawaited.cancelled()

    asyncio.run(main())


def test_publish_outcomes_resolved_on_another_thread_all_reach_their_awaiters() -> None:
    """Many backend futures resolved from an I/O thread (one loop wake-up per batch)."""

    async def main() -> None:
        resolver = msgbus.aio._Resolver(asyncio.get_running_loop())
        sources: list[Future[None]] = [Future() for _ in range(500)]
        waiters = [resolver.bridge(source) for source in sources]

        def resolve() -> None:
            for index, source in enumerate(sources):
                if index % 7 == 0:
                    source.set_exception(msgbus.PublishError(f"lost {index}"))
                else:
                    source.set_result(None)

        threading.Thread(target=resolve).start()
        outcomes = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), TIMEOUT)
        failed = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, Exception)]
        assert failed == [i for i in range(500) if i % 7 == 0]
        assert all(outcome is None for i, outcome in enumerate(outcomes) if i % 7)

    asyncio.run(main())


def test_async_handlers_run_on_the_loop_and_plain_ones_on_worker_threads() -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        seen: dict[str, int] = {}
        done = asyncio.Event()
        async with msgbus.aio.connect(memory_url()) as bus:

            @bus.subscribe("t", group="async")
            async def on_loop(msg: msgbus.Message) -> None:
                seen["async"] = threading.get_ident()
                if len(seen) == 2:
                    done.set()

            def on_thread(msg: msgbus.Message) -> None:
                seen["plain"] = threading.get_ident()
                if len(seen) == 2:
                    loop.call_soon_threadsafe(done.set)

            loop = asyncio.get_running_loop()
            bus.subscribe("t", on_thread, group="plain")
            await bus.start()
            await bus.publish("t", 1)
            await wait_for(done, "both handlers")
        assert seen["async"] == loop_thread
        assert seen["plain"] != loop_thread

    asyncio.run(main())


def test_concurrency_bounds_async_tasks() -> None:
    async def main() -> None:
        running = peak = handled = 0
        full, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
        async with msgbus.aio.connect(memory_url()) as bus:

            @bus.subscribe("t", group="g", concurrency=3)
            async def handle(msg: msgbus.Message) -> None:
                nonlocal running, peak, handled
                running += 1
                peak = max(peak, running)
                if running == 3:
                    full.set()
                await release.wait()
                running -= 1
                handled += 1
                if handled == 10:
                    finished.set()

            await bus.start()
            for i in range(10):
                await bus.publish("t", i)  # unkeyed: nothing but the bound holds them back
            await wait_for(full, "three handlers in flight")
            for _ in range(20):  # let the loop run: a fourth task would start now
                await asyncio.sleep(0)
            assert running == 3
            release.set()
            await wait_for(finished, "all ten messages")
        assert peak == 3

    asyncio.run(main())


def test_per_key_order_with_async_handlers_and_concurrency() -> None:
    async def main() -> None:
        seen: dict[str, list[int]] = {}
        count = 0
        done = asyncio.Event()
        async with msgbus.aio.connect(memory_url()) as bus:

            @bus.subscribe("t", group="g", concurrency=8)
            async def handle(msg: msgbus.Message) -> None:
                nonlocal count
                if msg.payload["n"] % 3 == 0:
                    await asyncio.sleep(0.001)  # uneven cost: lanes interleave
                seen.setdefault(msg.key or "", []).append(msg.payload["n"])
                count += 1
                if count == 200:
                    done.set()

            await bus.start()
            for n in range(50):
                for key in "abcd":
                    bus.publish("t", {"n": n}, key=key)
            await bus.flush(TIMEOUT)
            await wait_for(done, "200 messages")
        assert seen == {key: list(range(50)) for key in "abcd"}

    asyncio.run(main())


def test_failing_async_handler_is_retried_then_dead_lettered() -> None:
    async def main() -> None:
        attempts: list[int] = []
        letters: list[msgbus.Message] = []
        dead = asyncio.Event()
        async with msgbus.aio.connect(memory_url()) as bus:

            @bus.subscribe("t", group="g", max_attempts=3, backoff=0.01)
            async def handle(msg: msgbus.Message) -> None:
                attempts.append(msg.attempt)
                raise ValueError("nope")

            @bus.subscribe("t.dlq", group="watch")
            async def watch(msg: msgbus.Message) -> None:
                letters.append(msg)
                dead.set()

            await bus.start()
            await bus.publish("t", "x", key="k")
            await wait_for(dead, "the dead letter")
        assert attempts == [1, 2, 3]
        assert letters[0].headers[DLQ_ERROR_TYPE] == "builtins.ValueError"

    asyncio.run(main())


def test_async_handler_timeout_cancels_retries_then_dead_letters() -> None:
    async def main() -> None:
        cancelled: list[int] = []
        letters: list[msgbus.Message] = []
        dead = asyncio.Event()
        async with msgbus.aio.connect(memory_url()) as bus:

            @bus.subscribe("t", group="g", max_attempts=2, backoff=0.01, handler_timeout=0.05)
            async def hang(msg: msgbus.Message) -> None:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancelled.append(msg.attempt)
                    raise

            @bus.subscribe("t.dlq", group="watch")
            async def watch(msg: msgbus.Message) -> None:
                letters.append(msg)
                dead.set()

            await bus.start()
            await bus.publish("t", "x")
            await wait_for(dead, "the dead letter")
        assert cancelled == [1, 2]
        assert letters[0].headers[DLQ_ERROR_TYPE] == "msgbus.errors.HandlerTimeout"
        assert letters[0].headers[DLQ_ATTEMPTS] == "2"

    asyncio.run(main())


def test_handler_raising_its_own_timeout_error_is_not_a_handler_timeout() -> None:
    async def main() -> None:
        letters: list[msgbus.Message] = []
        dead = asyncio.Event()
        async with msgbus.aio.connect(memory_url()) as bus:

            @bus.subscribe("t", group="g", max_attempts=1, handler_timeout=5)
            async def handle(msg: msgbus.Message) -> None:
                raise TimeoutError("upstream timed out")

            @bus.subscribe("t.dlq", group="watch")
            async def watch(msg: msgbus.Message) -> None:
                letters.append(msg)
                dead.set()

            await bus.start()
            await bus.publish("t", "x")
            await wait_for(dead, "the dead letter")
        assert letters[0].headers[DLQ_ERROR_TYPE] == "builtins.TimeoutError"

    asyncio.run(main())


def test_plain_handler_overrunning_its_timeout_fails_the_attempt() -> None:
    async def main() -> None:
        attempts: list[int] = []
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with msgbus.aio.connect(memory_url()) as bus:

            def slow_first(msg: msgbus.Message) -> None:
                attempts.append(msg.attempt)
                if msg.attempt == 1:
                    time.sleep(0.1)  # overruns handler_timeout; cannot be interrupted
                else:
                    loop.call_soon_threadsafe(done.set)

            bus.subscribe("t", slow_first, group="g", backoff=0.01, handler_timeout=0.05)
            await bus.start()
            await bus.publish("t", "x")
            await wait_for(done, "the second attempt")
        assert attempts == [1, 2]

    asyncio.run(main())


def test_bad_handler_timeout_is_a_configuration_error() -> None:
    bus = msgbus.aio.connect(memory_url())
    for bad in (0, -1.0):
        with pytest.raises(msgbus.ConfigurationError, match="handler_timeout"):
            bus.subscribe("t", lambda msg: None, handler_timeout=bad)
    bus.bus.close()


def test_close_cancels_overrunning_handler_and_the_message_is_redelivered() -> None:
    url = memory_url()

    async def main() -> None:
        entered, cancelled = asyncio.Event(), asyncio.Event()
        first = msgbus.aio.connect(url)

        @first.subscribe("t", group="g")
        async def stuck(msg: msgbus.Message) -> None:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        await first.start()
        await first.publish("t", "again", message_id="m-1")
        await wait_for(entered, "the first delivery")
        started = time.monotonic()
        await first.close(timeout=0.2)
        assert cancelled.is_set()
        assert time.monotonic() - started < 5

        redelivered: list[msgbus.Message] = []
        arrived = asyncio.Event()
        async with msgbus.aio.connect(url) as second:

            @second.subscribe("t", group="g")
            async def handle(msg: msgbus.Message) -> None:
                redelivered.append(msg)
                arrived.set()

            await second.start()
            await wait_for(arrived, "the redelivery")
        assert [m.id for m in redelivered] == ["m-1"]

    asyncio.run(main())


def test_close_lets_in_flight_handler_finish_and_acks_it() -> None:
    url = memory_url()

    async def main() -> None:
        entered, release = asyncio.Event(), asyncio.Event()
        finished: list[str] = []
        first = msgbus.aio.connect(url)

        @first.subscribe("t", group="g")
        async def slow(msg: msgbus.Message) -> None:
            entered.set()
            await release.wait()
            finished.append(msg.id)

        await first.start()
        await first.publish("t", "once", message_id="m-1")
        await wait_for(entered, "the delivery")
        closing = asyncio.create_task(first.close(timeout=TIMEOUT))
        await asyncio.sleep(0)
        release.set()
        await closing
        assert finished == ["m-1"]

        later: list[str] = []
        arrived = asyncio.Event()
        async with msgbus.aio.connect(url) as second:

            @second.subscribe("t", group="g")
            async def handle(msg: msgbus.Message) -> None:
                later.append(msg.id)
                arrived.set()

            await second.start()
            await second.publish("t", "next", message_id="m-2")
            await wait_for(arrived, "the next message")
        assert later == ["m-2"], "the drained message was not acknowledged"

    asyncio.run(main())


def test_run_returns_after_stop_and_closes() -> None:
    async def main() -> None:
        bus = msgbus.aio.connect(memory_url())
        got = asyncio.Event()

        @bus.subscribe("t", group="g")
        async def handle(msg: msgbus.Message) -> None:
            got.set()
            bus.stop()

        ready = asyncio.Event()
        runner = asyncio.create_task(bus.run(drain_timeout=TIMEOUT, on_ready=ready.set))
        await wait_for(ready, "run() to have started the bus")
        await bus.publish("t", 1)
        await asyncio.wait_for(runner, TIMEOUT)
        assert got.is_set() and bus.closed

    asyncio.run(main())


def test_run_cancelled_closes_the_bus() -> None:
    async def main() -> None:
        bus = msgbus.aio.connect(memory_url())
        bus.subscribe("t", lambda msg: None, group="g")
        await bus.start()
        runner = asyncio.create_task(bus.run())
        await asyncio.sleep(0)  # run() is waiting now
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert bus.bus.closed

    asyncio.run(main())


def test_bus_is_bound_to_one_loop() -> None:
    bus = msgbus.aio.connect(memory_url())
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(bus.start())

        async def elsewhere() -> None:
            with pytest.raises(msgbus.MsgBusError, match="one event loop"):
                await bus.flush()

        asyncio.run(elsewhere())
    finally:
        first.close()
        bus.bus.close()
