"""msgbus for asyncio: the same bus, contract and backends, awaited from an event loop.

``msgbus.aio.connect(url)`` returns an :class:`AsyncBus`, a facade over a synchronous
:class:`~msgbus.Bus` (same URL rules, options, errors and delivery contract). There is one
delivery engine, the core's :class:`~msgbus.consumer.Consumer`: it fetches, keeps per-key
lanes, schedules retries and dead-letters, on its own thread. What the facade adds:

- ``publish`` hands the message to the backend at once and returns an ``asyncio.Future``
  that the backend's ``concurrent.futures.Future`` resolves through
  ``loop.call_soon_threadsafe``; the loop never waits on a lock or a socket for it.
- ``async def`` handlers run as tasks on the bus's loop: the consumer's thread submits the
  runnable messages in batches (one ``call_soon_threadsafe`` per batch), at most
  ``concurrency`` tasks run at once, and a key's next message is only submitted once the
  previous one is settled, so per-key order holds. Acks happen on the loop (the backends'
  acks do not wait for the broker); a failed attempt is settled on a helper thread, as it
  may publish a dead letter and wait for its confirmation.
- Plain-function handlers run on the consumer's worker threads, exactly as on a ``Bus``.
- Blocking calls (``start``, ``flush``, ``close``) run on the bus's helper threads.

Everything here is standard library (``asyncio``); nothing is imported from a driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from msgbus.bus import Bus
from msgbus.bus import connect as connect_sync
from msgbus.consumer import Consumer
from msgbus.errors import BusClosed, ConfigurationError, HandlerTimeout, MsgBusError
from msgbus.message import Message
from msgbus.retry import RetryPolicy
from msgbus.url import BusURL

__all__ = ["AsyncBus", "bridge", "connect"]

log = logging.getLogger("msgbus")

F = TypeVar("F", bound=Callable[..., Any])
YIELD_EVERY = 0.001
"""A chain of handler calls gives the rest of the loop a turn at least this often (seconds)."""
HELPER_THREADS = 8
"""Threads per AsyncBus for its blocking calls (start, flush, close, failed-attempt settling)."""


def connect(url: str | BusURL | None = None, **options: Any) -> AsyncBus:
    """Open an :class:`AsyncBus` on the broker named by ``url`` (as :func:`msgbus.connect`).

    The same URL rules, options and errors as the synchronous ``connect``. Opening the
    backend happens here, synchronously (as a database engine is created): call it at import
    time or in a lifespan handler, not on a hot path.
    """
    return AsyncBus(connect_sync(url, **options))


def _is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _copy_outcome(source: Future[Any], target: asyncio.Future[Any]) -> None:
    """On the loop: give ``target`` the outcome of the finished ``source``."""
    if target.done():  # the awaiting code gave up (cancelled): nothing to deliver
        return
    try:
        result = source.result(0)  # done: returns (or raises) at once
    except CancelledError:
        target.cancel()
    except BaseException as error:  # the publish's failure, handed to the awaiting code
        target.set_exception(error)
    else:
        target.set_result(result)


def bridge(future: Future[Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """An ``asyncio.Future`` on ``loop`` that ``future`` resolves, from whatever thread.

    A finished ``future`` gives a finished result at once (no loop iteration). Cancelling the
    returned future does not cancel ``future``: a message handed to a backend stays sent.
    """
    waiter = loop.create_future()
    if future.done():
        _copy_outcome(future, waiter)
        return waiter

    def resolved(done: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody can await it
            loop.call_soon_threadsafe(_copy_outcome, done, waiter)

    future.add_done_callback(resolved)
    return waiter


class _Resolver:
    """Hands finished publish futures' outcomes to one loop, one wake-up per batch.

    A backend resolves publish futures on its I/O thread, often thousands per second: one
    ``call_soon_threadsafe`` (a write to the loop's self-pipe) per future would cost more than
    the publish. Outcomes queue here; only the one that finds the queue empty wakes the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._queue: list[tuple[Future[Any], asyncio.Future[Any]]] = []

    def bridge(self, future: Future[Any]) -> asyncio.Future[Any]:
        """As :func:`bridge`, batching the wake-ups."""
        waiter = self.loop.create_future()
        if future.done():
            _copy_outcome(future, waiter)
        else:
            future.add_done_callback(lambda done: self._add(done, waiter))
        return waiter

    def _add(self, source: Future[Any], target: asyncio.Future[Any]) -> None:
        with self._lock:
            wake = not self._queue
            self._queue.append((source, target))
        if wake:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        for source, target in batch:
            _copy_outcome(source, target)


class AsyncBus:
    """Publish and subscribe from asyncio code; a facade over one :class:`~msgbus.Bus`.

    Use it from one event loop (the one that calls :meth:`start`, :meth:`run` or
    ``async with``). ``bus`` is the synchronous bus underneath: it may be used from other
    threads at the same time (``bus.bus.publish`` returns a ``concurrent.futures.Future``).
    The delivery contract is the ``Bus``'s: at least once, ack after the handler returns,
    retries with backoff then ``<topic>.dlq``, per-key order.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed_event: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._resolver: _Resolver | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return repr(self.bus).replace("<msgbus.Bus", "<msgbus.aio.AsyncBus", 1)

    @property
    def backend(self) -> Any:
        """The backend under the bus."""
        return self.bus.backend

    @property
    def features(self) -> Any:
        """The backend's :class:`~msgbus.backend.Features` flags."""
        return self.bus.features

    def health(self) -> Any:
        """:meth:`msgbus.Bus.health` of the bus underneath (cheap, does not block the loop)."""
        return self.bus.health()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closing or self.bus.closed

    # ------------------------------------------------------------------ plumbing

    def _bind(self) -> asyncio.AbstractEventLoop:
        """The running loop, which becomes (or must be) this bus's loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = loop
            elif self._loop is not loop:
                raise MsgBusError("an AsyncBus is used from one event loop only")
        return loop

    def _helpers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(HELPER_THREADS, "msgbus-aio")
            return self._executor

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking call of the sync bus on a helper thread; await its result."""
        loop = self._bind()
        return await loop.run_in_executor(self._helpers(), functools.partial(fn, *args))

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        message_id: str | None = None,
        codec: str | None = None,
    ) -> asyncio.Future[None]:
        """Send ``payload`` to ``topic``; await the result to know the broker holds it.

        Call it from the bus's loop. The message is handed to the backend before this
        returns (so ``publish`` without ``await`` still sends it, and several publishes can
        be awaited together with ``asyncio.gather``); the returned future resolves when the
        broker holds the message, or fails with :class:`~msgbus.PublishError` /
        :class:`~msgbus.BrokerUnavailable`. Bad input raises at once, before any ``await``:
        the same errors as :meth:`msgbus.Bus.publish`. Cancelling the future does not
        withdraw the message.
        """
        future = self.bus.publish(
            topic,
            payload,
            key=key,
            headers=headers,
            correlation_id=correlation_id,
            message_id=message_id,
            codec=codec,
        )
        resolver = self._resolver
        loop = asyncio.get_running_loop()
        if resolver is None or resolver.loop is not loop:
            resolver = self._resolver = _Resolver(loop)
        return resolver.bridge(future)

    def publish_many(
        self,
        topic: str,
        payloads: Iterable[Any],
        *,
        key: str | None = None,
        keys: Sequence[str | None] | None = None,
        headers: Mapping[str, str] | None = None,
        codec: str | None = None,
    ) -> list[asyncio.Future[None]]:
        """:meth:`msgbus.Bus.publish_many` on the bus's loop: one asyncio future per message,
        in order (``await asyncio.gather(*futures)``); the messages are handed to the backend
        before this returns, and bad input raises at once, sending nothing."""
        futures = self.bus.publish_many(
            topic, payloads, key=key, keys=keys, headers=headers, codec=codec
        )
        resolver = self._resolver
        loop = asyncio.get_running_loop()
        if resolver is None or resolver.loop is not loop:
            resolver = self._resolver = _Resolver(loop)
        return [resolver.bridge(future) for future in futures]

    async def flush(self, timeout: float | None = None) -> None:
        """Return once every message published so far is confirmed (``TimeoutError`` if not)."""
        await self._blocking(self.bus.flush, timeout)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        topic: str,
        handler: Callable[[Message], Any] | None = None,
        *,
        group: str | None = None,
        concurrency: int = 1,
        max_attempts: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        retry: RetryPolicy | None = None,
        codec: str | None = None,
        prefetch: int | None = None,
        from_beginning: bool = False,
        dead_letter: bool = True,
        handler_timeout: float | None = None,
        retry_mode: str = "local",
    ) -> Any:
        """Register ``handler`` for ``topic``; usable as ``@bus.subscribe(topic, ...)``.

        The options are :meth:`msgbus.Bus.subscribe`'s. An ``async def`` handler runs as a
        task on the bus's loop, at most ``concurrency`` at once, one at a time per key;
        a plain function runs on ``concurrency`` worker threads, as on a ``Bus``.

        ``handler_timeout`` (seconds): an ``async def`` handler still running then is
        cancelled and the attempt fails with :class:`~msgbus.HandlerTimeout` (retried, then
        dead-lettered). A plain function cannot be interrupted: it runs to its end, and the
        attempt is then counted as failed in the same way if it took longer (its effects
        have happened; handlers must be idempotent anyway).

        Subscribe before :meth:`start` (the decorator style); a subscription added to a
        started bus is made at once, which waits for the broker on the calling thread.
        """
        if handler_timeout is not None and not handler_timeout > 0:
            raise ConfigurationError(
                f"handler_timeout must be a positive number of seconds or None, "
                f"not {handler_timeout!r}"
            )
        options: dict[str, Any] = {
            "group": group,
            "concurrency": concurrency,
            "max_attempts": max_attempts,
            "backoff": backoff,
            "max_backoff": max_backoff,
            "retry": retry,
            "codec": codec,
            "prefetch": prefetch,
            "from_beginning": from_beginning,
            "dead_letter": dead_letter,
            "retry_mode": retry_mode,
        }

        def register(fn: F) -> F:
            if not callable(fn):
                raise ConfigurationError(f"handler must be callable, not {fn!r}")
            if self._closing:
                raise BusClosed("subscribe on a closed bus")
            if _is_async(fn):
                runner = _LoopRunner(self, fn, handler_timeout)
                self.bus.subscribe(topic, fn, runner=runner, **options)
            elif handler_timeout is not None:
                self.bus.subscribe(topic, _timed(fn, handler_timeout), **options)
            else:
                self.bus.subscribe(topic, fn, **options)
            return fn

        if handler is not None:
            return register(handler)
        return register

    # ------------------------------------------------------------------ running

    async def start(self) -> AsyncBus:
        """Start every subscription; return once all are ready to receive (idempotent).

        A message published after this returns reaches every group subscribed before. The
        same errors as :meth:`msgbus.Bus.start`.
        """
        if self._closing:
            raise BusClosed("start on a closed bus")
        await self._blocking(self.bus.start)
        return self

    async def run(
        self, *, drain_timeout: float = 10.0, on_ready: Callable[[], object] | None = None
    ) -> None:
        """Start, then wait until SIGINT/SIGTERM, :meth:`stop` or cancellation; then close.

        ``on_ready`` is called once the signal handlers are installed and every subscription
        is ready (to log "ready", or notify a supervisor).

        Closing drains in-flight handlers for up to ``drain_timeout`` seconds (see
        :meth:`close`). Signal handlers are installed (on the loop) only in the main thread,
        and the previous ones are put back after. Under a web server that handles signals
        itself (uvicorn), use ``start``/``close`` in its lifespan instead.
        """
        loop = self._bind()
        stop = self._stop = asyncio.Event()
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                try:
                    handler = signal.getsignal(signum)
                    loop.add_signal_handler(signum, stop.set)
                except (NotImplementedError, RuntimeError, ValueError):
                    continue  # not on this platform / loop
                previous[signum] = handler
        try:
            await self.start()
            if on_ready is not None:
                on_ready()
            await stop.wait()
        finally:
            for signum, handler in previous.items():
                loop.remove_signal_handler(signum)
                signal.signal(signum, handler)
            await asyncio.shield(self.close(timeout=drain_timeout))

    def stop(self) -> None:
        """Ask a running :meth:`run` to shut down; call it on the bus's loop."""
        if self._stop is not None:
            self._stop.set()

    async def close(self, timeout: float | None = 10.0) -> None:
        """Stop consuming, drain, flush and close the backend. Idempotent.

        In-flight handlers get up to ``timeout`` seconds to finish and be acknowledged;
        ``async def`` handlers still running then are cancelled and their messages are not
        acknowledged, so the broker redelivers them (as after a crash). ``timeout=0``
        abandons in-flight handlers at once. Plain-function handlers are left to finish on
        their threads, unacknowledged, as with :meth:`msgbus.Bus.close`.
        """
        loop = self._bind()
        if self._closing:
            if self._closed_event is not None:
                await self._closed_event.wait()
            return
        self._closing = True
        self._closed_event = closed = asyncio.Event()
        try:
            closing = loop.run_in_executor(self._helpers(), self.bus.close, timeout)
            deadline = loop.time() + (timeout if timeout is not None else 1e9)
            while self._tasks and (remaining := deadline - loop.time()) > 0:
                await asyncio.wait(set(self._tasks), timeout=remaining)
            abandoned = list(self._tasks)
            for task in abandoned:
                task.cancel()
            if abandoned:
                log.warning("close: %d async handler(s) cancelled, not acked", len(abandoned))
                await asyncio.gather(*abandoned, return_exceptions=True)
            await closing
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            closed.set()

    async def __aenter__(self) -> AsyncBus:
        self._bind()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _timed(fn: Callable[[Message], Any], timeout: float) -> Callable[[Message], None]:
    """``fn``, failing its attempt with HandlerTimeout when it ran longer than ``timeout``."""

    @functools.wraps(fn)
    def timed(message: Message) -> None:
        started = time.monotonic()
        fn(message)
        took = time.monotonic() - started
        if took > timeout:
            raise HandlerTimeout(
                f"handler ran {took:.3f}s, longer than handler_timeout={timeout}s "
                "(a plain function cannot be interrupted: it ran to its end)"
            )

    return timed


class _LoopRunner:
    """Runs one subscription's ``async def`` handler as tasks on its AsyncBus's loop."""

    def __init__(
        self,
        owner: AsyncBus,
        handler: Callable[[Message], Awaitable[Any]],
        timeout: float | None,
    ) -> None:
        self.owner = owner
        self.handler = handler
        self.timeout = timeout

    def submit(self, consumer: Consumer, works: list[Any]) -> None:
        """From the consumer's thread: start ``works`` on the loop (one wake-up per batch)."""
        loop = self.owner._loop
        try:
            if loop is None:
                raise RuntimeError("the AsyncBus was started without a loop")
            loop.call_soon_threadsafe(self._start, consumer, works)
        except RuntimeError:  # the loop is closed: leave the messages to the broker
            log.warning("%s: event loop gone, %d message(s) left", consumer.spec.name, len(works))
            for work in works:
                consumer.finish(work, None)

    def _start(self, consumer: Consumer, works: list[Any]) -> None:
        """On the loop: one task per work (or none, when closing: they go back unsettled)."""
        owner = self.owner
        if owner._closing:
            for work in works:
                consumer.finish(work, None)
            return
        loop = owner._loop
        assert loop is not None
        tasks = owner._tasks
        for work in works:
            task = loop.create_task(self._run(consumer, work))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _run(self, consumer: Consumer, work: Any) -> None:
        """Handle ``work``, then the works its settlement made runnable, one after another
        (one task per chain, not per message; the rest of the loop gets a turn at least
        every :data:`YIELD_EVERY` seconds, even if the handler never awaits anything)."""
        next_work: Any = work
        loop = asyncio.get_running_loop()
        turn = loop.time()
        try:
            while next_work is not None:
                work, next_work = next_work, None
                more = await self._handle(consumer, work)
                if more:
                    next_work = more.pop()
                    if more:
                        self._start(consumer, more)
                    if loop.time() - turn >= YIELD_EVERY:  # handlers that never await
                        await asyncio.sleep(0)  # must not starve the rest of the loop
                        turn = loop.time()
        except asyncio.CancelledError:
            if next_work is not None:  # taken, not started: it goes back unsettled
                consumer.finish(next_work, None)
            raise

    async def _handle(self, consumer: Consumer, work: Any) -> list[Any]:
        """One attempt of ``work``, settled and finished; returns the works now runnable."""
        telemetry = consumer.telemetry
        if telemetry is None or not telemetry.on:
            return await self._attempt(consumer, work)
        observed = telemetry.begin(consumer, work)  # the span is current in this task
        try:
            return await self._attempt(consumer, work)
        finally:
            observed.end(work)

    async def _attempt(self, consumer: Consumer, work: Any) -> list[Any]:
        message = consumer.prepare(work)
        error: BaseException | None = None
        if isinstance(message, Message):
            try:
                if self.timeout is None:
                    await self.handler(message)
                else:
                    await self._call_with_timeout(message)
            except asyncio.CancelledError as exc:
                if self.owner._closing:  # shutdown: not acked, the broker redelivers it
                    consumer.finish(work, None)
                    raise
                error = exc  # cancelled by something else: a failed attempt
            except Exception as exc:
                error = exc
        else:
            error, message = message, None
        if error is None:
            retry_in = consumer.outcome(work, message, None)  # an ack: does not block
        else:
            loop = asyncio.get_running_loop()
            retry_in = await loop.run_in_executor(  # in this context: a dead letter's span
                self.owner._helpers(),  # is a child of the attempt's
                contextvars.copy_context().run,
                consumer.outcome,
                work,
                message,
                error,
            )
        more = consumer.finish(work, retry_in)
        if retry_in is not None:
            asyncio.get_running_loop().call_later(retry_in, self._retry_due, consumer)
        if self.owner._closing:
            for extra in more:  # not started: they go back unsettled
                consumer.finish(extra, None)
            return []
        return more

    async def _call_with_timeout(self, message: Message) -> None:
        timeout = self.timeout
        assert timeout is not None
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                await self.handler(message)
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError
            raise HandlerTimeout(
                f"handler still running after handler_timeout={timeout}s; cancelled"
            ) from None

    def _retry_due(self, consumer: Consumer) -> None:
        """On the loop: a retry delay passed; start what may run now."""
        works = consumer.take_ready()
        if works:
            self._start(consumer, works)
