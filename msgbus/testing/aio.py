"""A blocking, ``Bus``-shaped view of an :class:`~msgbus.aio.AsyncBus`, for the conformance suite.

The suite is written against the blocking API. :class:`BlockingAsyncBus` lets the very same
tests drive the asyncio facade: each call is run as a coroutine on a :class:`LoopThread`
(one event loop per test, shared by the test's buses, as in a service), and every handler
is registered as an ``async def`` handler, so deliveries go through the facade's tasks,
concurrency bound, per-key lanes and cancellation. A handler with blocking work (a
``Recorder`` with an ``action``) awaits that work on a thread, so the loop never blocks.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from msgbus.aio import AsyncBus
from msgbus.message import Message
from msgbus.testing.recorder import Recorder

__all__ = ["BlockingAsyncBus", "LoopThread", "as_async_handler"]

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running on a daemon thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="msgbus-test-loop", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and return its result (re-raising its error)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop, join its thread and close it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def as_async_handler(handler: Callable[[Message], Any]) -> Callable[[Message], Any]:
    """``handler`` as an ``async def`` handler: called on the loop when it cannot block (a
    plain ``Recorder``), else awaited on a thread (``asyncio.to_thread``)."""
    if isinstance(handler, Recorder) and handler.action is None:

        async def record(message: Message) -> None:
            handler(message)

        return record

    async def delegate(message: Message) -> None:
        await asyncio.to_thread(handler, message)

    return delegate


class BlockingAsyncBus:
    """The blocking ``Bus`` API, implemented by awaiting an :class:`AsyncBus` on a loop thread.

    ``publish`` raises bad input at once and returns a ``concurrent.futures.Future`` that
    the facade's ``asyncio.Future`` resolves; ``subscribe`` registers ``async def``
    wrappers (:func:`as_async_handler`); ``start``, ``flush`` and ``close`` block until the
    facade's coroutines return.
    """

    def __init__(self, bus: AsyncBus, loop: LoopThread) -> None:
        self.aio = bus
        self._loop = loop

    @property
    def backend(self) -> Any:
        """The backend under the facade."""
        return self.aio.backend

    @property
    def closed(self) -> bool:
        """True once the facade is closing or closed."""
        return self.aio.closed

    def health(self) -> Any:
        """``AsyncBus.health()``."""
        return self.aio.health()

    def publish(self, topic: str, payload: Any, **options: Any) -> Future[None]:
        """``AsyncBus.publish`` on the loop; bad input raises here, the rest in the future."""
        result: Future[None] = Future()

        def forward(pending: asyncio.Future[None]) -> None:
            if pending.cancelled():
                result.cancel()
            elif (error := pending.exception()) is not None:
                result.set_exception(error)
            else:
                result.set_result(None)

        async def begin() -> None:
            self.aio.publish(topic, payload, **options).add_done_callback(forward)

        self._loop.call(begin())
        return result

    def publish_many(self, topic: str, payloads: Any, **options: Any) -> list[Future[None]]:
        """``AsyncBus.publish_many`` on the loop; bad input raises here, the rest in the
        futures (one per message)."""
        results: list[Future[None]] = []

        def forward(result: Future[None], pending: asyncio.Future[None]) -> None:
            if pending.cancelled():
                result.cancel()
            elif (error := pending.exception()) is not None:
                result.set_exception(error)
            else:
                result.set_result(None)

        async def begin() -> None:
            for pending in self.aio.publish_many(topic, payloads, **options):
                result: Future[None] = Future()
                results.append(result)
                pending.add_done_callback(functools.partial(forward, result))

        self._loop.call(begin())
        return results

    def flush(self, timeout: float | None = None) -> None:
        """``await AsyncBus.flush(timeout)``."""
        self._loop.call(self.aio.flush(timeout))

    def subscribe(
        self, topic: str, handler: Callable[[Message], Any] | None = None, **options: Any
    ) -> Any:
        """``AsyncBus.subscribe`` with ``handler`` wrapped as an ``async def`` handler."""

        def register(fn: Callable[[Message], Any]) -> Callable[[Message], Any]:
            self.aio.subscribe(topic, as_async_handler(fn), **options)
            return fn

        return register(handler) if handler is not None else register

    def start(self) -> BlockingAsyncBus:
        """``await AsyncBus.start()``."""
        self._loop.call(self.aio.start())
        return self

    def close(self, timeout: float | None = 10.0) -> None:
        """``await AsyncBus.close(timeout)``."""
        self._loop.call(self.aio.close(timeout))
