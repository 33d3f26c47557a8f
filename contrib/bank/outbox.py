"""The outbox relay: publishes committed event rows, then marks them sent.

One background thread. It wakes when :meth:`OutboxRelay.notify` is called (the HTTP handler
does so after each commit) and otherwise sweeps every ``sweep_interval`` seconds, so rows
left by a crashed process, or written by another process, are published too. It never
polls in a tight loop.

Each pass reads pending rows in ``seq`` order and publishes a batch (pipelined, in order, so
the bus keeps per-key order), then waits for the futures in order, all within one
``publish_timeout``. Confirmed rows are marked sent. At the first failure the relay stops
waiting: later rows whose futures already succeeded are marked sent too, the rest stay
pending, and the relay backs off exponentially before the next pass. A row is marked sent only
after the broker confirmed it, so a crash at any point leaves it pending and it is published
(again) on the next start: delivery is at least once, never zero, and consumers deduplicate
on ``event_id`` (also the message id). After a failure a later row may reach the broker
before the failed one; there is one event per account, so per-account order is unaffected.

Run one relay per database: two relays on one file would both publish the same rows (still
correct for an idempotent consumer, just wasteful).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from msgbus.contrib.bank.store import AccountStore

__all__ = ["OutboxRelay", "Publisher"]

log = logging.getLogger("msgbus.contrib.bank.outbox")


class Publisher(Protocol):
    """What the relay needs from a bus: ``msgbus.Bus.publish``'s signature."""

    def publish(
        self,
        topic: str,
        payload: Any,
        *,
        key: str | None = ...,
        correlation_id: str | None = ...,
        message_id: str | None = ...,
    ) -> Any: ...


class OutboxRelay:
    """Publishes ``store``'s pending outbox rows on ``bus``; see the module docstring.

    Thread-safe: :meth:`notify` may be called from any thread. :meth:`start` starts the
    thread (idempotent); :meth:`stop` ends it within ``timeout``. ``backoff``/``max_backoff``
    bound the wait after a failed publish; ``publish_timeout`` bounds the wait for one
    confirmation.
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
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def notify(self) -> None:
        """Tell the relay a row was committed; it publishes without waiting for the sweep."""
        self._wake.set()

    def start(self) -> OutboxRelay:
        """Start the relay thread (pending rows from earlier runs go first). Idempotent."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="bank-outbox-relay", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; rows not yet confirmed stay pending for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def publish_pending(self) -> int:
        """Publish every pending row now, in the calling thread; return how many were sent.

        Raises the first publish error (after marking what the broker did confirm).
        """
        total = 0
        while not self._stop.is_set():
            entries = self.store.pending(self.batch_size)
            if not entries:
                break
            futures = []
            error: BaseException | None = None
            for entry in entries:
                try:
                    futures.append(
                        self.bus.publish(
                            entry.topic,
                            entry.payload,
                            key=entry.key,
                            correlation_id=entry.correlation_id,
                            message_id=entry.event_id,
                        )
                    )
                except Exception as exc:
                    error = exc
                    break
            confirmed: list[int] = []
            failed: list[tuple[int, BaseException]] = []
            deadline = time.monotonic() + self.publish_timeout
            for entry, future in zip(entries, futures, strict=False):
                if not failed:
                    try:
                        future.result(timeout=max(0.0, deadline - time.monotonic()))
                    except Exception as exc:
                        failed.append((entry.seq, exc))
                        continue
                    confirmed.append(entry.seq)
                elif future.done() and future.exception() is None:
                    confirmed.append(entry.seq)  # after a failure: only what is already in
            self.store.mark_sent(confirmed)
            self.published += len(confirmed)
            total += len(confirmed)
            if error is not None and len(futures) < len(entries):
                failed.append((entries[len(futures)].seq, error))
            if failed:
                seq, first = failed[0]
                self.store.record_failure(seq, f"{type(first).__name__}: {first}")
                raise first
        return total

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()  # before reading: a notify during the pass means another pass
            try:
                self.publish_pending()
                failures = 0
            except Exception as exc:
                failures += 1
                self.failures += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (failures - 1))
                log.warning(
                    "outbox publish failed (%s: %s); retrying in %.2fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                self._stop.wait(delay)
                continue
            self._wake.wait(self.sweep_interval)
