"""The outbox relay: publishes committed event rows, then marks them sent.

One asyncio task on the account service's event loop, publishing on a
:class:`msgbus.aio.AsyncBus`. It wakes when :meth:`OutboxRelay.notify` is called (the HTTP
handler does so after each commit, from any thread) and otherwise sweeps every
``sweep_interval`` seconds, so rows left by a crashed process, or written by another process,
are published too. It never polls in a tight loop. The SQLite reads and writes run on a
worker thread (``asyncio.to_thread``), so the loop serving HTTP never waits on the database.

Each pass reads pending rows in ``seq`` order and publishes a batch (pipelined, in order, so
the bus keeps per-key order), then awaits the confirmations in order, all within one
``publish_timeout``. Confirmed rows are marked sent. At the first failure the relay stops
waiting: later rows whose confirmations already arrived are marked sent too, the rest stay
pending, and the relay backs off exponentially before the next pass. A row is marked sent only
after the broker confirmed it, so a crash at any point leaves it pending and it is published
(again) on the next start: delivery is at least once, never zero, and consumers deduplicate
on ``event_id`` (also the message id). After a failure a later row may reach the broker
before the failed one; there is one event per account, so per-account order is unaffected.

Each row keeps the trace context of the request that wrote it, and the relay publishes inside
it, so with OpenTelemetry on, the publish (and the consumer's handling) continue that request's
trace (:mod:`msgbus.contrib.bank.tracing`).

Run one relay per database: two relays on one file would both publish the same rows (still
correct for an idempotent consumer, just wasteful).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from msgbus.contrib.bank.store import AccountStore
from msgbus.contrib.bank.tracing import restored

__all__ = ["OutboxRelay", "Publisher"]

log = logging.getLogger("msgbus.contrib.bank.outbox")


class Publisher(Protocol):
    """What the relay needs from a bus: ``msgbus.aio.AsyncBus.publish``'s signature."""

    def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = ...,
        correlation_id: str | None = ...,
        message_id: str | None = ...,
    ) -> Awaitable[None]: ...


class OutboxRelay:
    """Publishes ``store``'s pending outbox rows on ``bus``; see the module docstring.

    :meth:`start` (on the event loop) starts the task, idempotent; :meth:`stop` ends it
    within ``timeout``. :meth:`notify` may be called from any thread. ``backoff`` and
    ``max_backoff`` bound the wait after a failed publish; ``publish_timeout`` bounds the
    wait for one pass's confirmations.
    """

    def __init__(
        self,
        store: AccountStore,
        bus: Publisher,
        *,
        batch_size: int = 100,
        sweep_interval: float = 5.0,
        publish_timeout: float = 30.0,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.batch_size = batch_size
        self.sweep_interval = sweep_interval
        self.publish_timeout = publish_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.published = 0
        """Rows confirmed and marked sent by this relay (read-only for callers)."""
        self.failures = 0
        """Failed publish passes so far (read-only for callers)."""
        self.passes = 0
        """Publish passes completed so far, failed or not (read-only for callers)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Tell the relay a row was committed; it publishes without waiting for the sweep.

        Thread-safe; before :meth:`start` it does nothing (the first pass finds the row).
        """
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            if loop is _running_loop():
                wake.set()
            else:
                loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop is closed: the relay is gone
            pass

    def start(self) -> OutboxRelay:
        """Start the relay task on the running loop (pending rows from earlier runs go first)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = self._loop.create_task(self._run(), name="bank-outbox-relay")
        return self

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the task; rows not yet confirmed stay pending for the next start."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()  # a publish pass still waiting: its rows stay pending
            await asyncio.gather(task, return_exceptions=True)

    async def publish_pending(self) -> int:
        """Publish every pending row now; return how many were sent.

        Raises the first publish error (after marking what the broker did confirm).
        """
        total = 0
        while not self._stopping:
            entries = await asyncio.to_thread(self.store.pending, self.batch_size)
            if not entries:
                break
            futures: list[Awaitable[None]] = []
            error: BaseException | None = None
            for entry in entries:
                try:
                    with restored(entry.trace_context):  # the send joins the request's trace
                        sent = self.bus.publish(
                            entry.topic,
                            entry.payload,
                            key=entry.key,
                            correlation_id=entry.correlation_id,
                            message_id=entry.event_id,
                        )
                    futures.append(asyncio.ensure_future(sent))
                except Exception as exc:
                    error = exc
                    break
            confirmed: list[int] = []
            failed: list[tuple[int, BaseException]] = []
            deadline = asyncio.get_running_loop().time() + self.publish_timeout
            for entry, future in zip(entries, futures, strict=False):
                if not failed:
                    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
                    try:
                        await asyncio.wait_for(asyncio.shield(future), remaining)
                    except Exception as exc:
                        failed.append((entry.seq, exc))
                        continue
                    confirmed.append(entry.seq)
                elif _succeeded(future):
                    confirmed.append(entry.seq)  # after a failure: only what is already in
            await asyncio.to_thread(self.store.mark_sent, confirmed)
            self.published += len(confirmed)
            total += len(confirmed)
            if error is not None and len(futures) < len(entries):
                failed.append((entries[len(futures)].seq, error))
            if failed:
                seq, first = failed[0]
                await asyncio.to_thread(
                    self.store.record_failure, seq, f"{type(first).__name__}: {first}"
                )
                raise first
        return total

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        failures = 0
        while not self._stopping:
            wake.clear()  # before reading: a notify during the pass means another pass
            try:
                await self.publish_pending()
                failures = 0
                self.passes += 1
            except Exception as exc:
                self.passes += 1
                failures += 1
                self.failures += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
                log.warning(
                    "outbox publish failed (%s: %s); retrying in %.2fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await _sleep_unless(wake, delay)
                continue
            await _sleep_unless(wake, self.sweep_interval)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _succeeded(future: Any) -> bool:
    return bool(future.done() and not future.cancelled() and future.exception() is None)


async def _sleep_unless(wake: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``wake`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
