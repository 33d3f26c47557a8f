"""One subscription at work: a fetch thread, per-key lanes, worker threads, retries, dead letters.

Messages with the same key form a lane and are handled one after another in arrival order;
different keys (and unkeyed messages) run in parallel on ``concurrency`` worker threads. A
failing message waits for its retry in a timer heap, not in a thread, so only its own lane
waits. A message is acknowledged only after its handler returned, or after its dead letter
was confirmed by the broker.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from msgbus.backend import Delivery, Subscription
from msgbus.envelope import decode
from msgbus.errors import BrokerUnavailable, DecodeError, MsgBusError, Reject
from msgbus.message import (
    CONTENT_TYPE,
    DLQ_ATTEMPTS,
    DLQ_CONTENT_TYPE,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_GROUP,
    DLQ_TOPIC,
    Message,
)
from msgbus.retry import RetryPolicy
from msgbus.serialization import Codec

if TYPE_CHECKING:
    from msgbus.backend import Backend

__all__ = ["Consumer", "SubscriptionSpec"]

log = logging.getLogger("msgbus")

Handler = Callable[[Message], Any]
DEAD_LETTER_SUFFIX = ".dlq"
DEAD_LETTER_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class SubscriptionSpec:
    """What ``Bus.subscribe`` was asked for (immutable)."""

    topic: str
    handler: Handler
    group: str | None
    concurrency: int
    retry: RetryPolicy
    codec: Codec | None
    prefetch: int
    from_beginning: bool
    dead_letter: bool

    @property
    def name(self) -> str:
        """``topic[group]`` for logs."""
        return f"{self.topic}[{self.group or 'private'}]"


class _Work:
    """One delivery on its way through the lanes."""

    __slots__ = ("attempt", "dead_error", "delivery", "lane", "message")

    def __init__(self, delivery: Delivery, lane: object) -> None:
        self.delivery = delivery
        self.lane = lane
        self.message: Message | None = None
        self.attempt = 1
        self.dead_error: BaseException | None = None


class Consumer:
    """Runs one :class:`SubscriptionSpec` against a backend. Owned by a ``Bus``.

    ``start`` subscribes (returns when the subscription is ready) and starts the threads.
    ``stop_fetching`` then ``drain`` then ``close`` shut it down: in-flight handlers finish
    within the deadline, everything not yet acknowledged stays with the broker.
    """

    def __init__(self, backend: Backend, spec: SubscriptionSpec) -> None:
        self.backend = backend
        self.spec = spec
        self.subscription: Subscription | None = None
        self._cond = threading.Condition()
        self._lanes: dict[object, deque[_Work]] = {}
        self._ready: deque[object] = deque()
        self._delayed: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        self._buffered = 0
        self._running = 0
        self._fetching = False
        self._workers_stop = False
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Subscribe and start the fetch and worker threads; ready when it returns."""
        spec = self.spec
        self.subscription = self.backend.subscribe(
            spec.topic, spec.group, prefetch=spec.prefetch, from_beginning=spec.from_beginning
        )
        self._fetching = True
        fetch = threading.Thread(target=self._fetch_loop, name=f"msgbus-fetch {spec.name}")
        fetch.daemon = True
        self._threads.append(fetch)
        for index in range(spec.concurrency):
            worker = threading.Thread(
                target=self._work_loop, name=f"msgbus-worker-{index} {spec.name}", daemon=True
            )
            self._threads.append(worker)
        for thread in self._threads:
            thread.start()

    def stop_fetching(self) -> None:
        """Take no more messages from the broker (those buffered are not started either)."""
        with self._cond:
            self._fetching = False
            self._workers_stop = True
            self._cond.notify_all()

    def drain(self, deadline: float) -> bool:
        """Wait until no handler runs, or until ``deadline`` (monotonic); True if idle."""
        with self._cond:
            while self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, deadline: float) -> None:
        """Close the subscription (unacked messages go back to the broker) and join threads."""
        self.stop_fetching()
        if self.subscription is not None:
            try:
                self.subscription.close()
            except MsgBusError as exc:
                log.warning("closing subscription %s: %s", self.spec.name, exc)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ fetching

    def _fetch_loop(self) -> None:
        sub = self.subscription
        assert sub is not None
        limit = max(self.spec.prefetch, self.spec.concurrency)
        failures = 0
        while True:
            with self._cond:
                while self._fetching and self._buffered >= limit:
                    self._cond.wait()
                if not self._fetching:
                    return
                room = limit - self._buffered
            try:
                batch = sub.receive(room, 1.0)
                failures = 0
            except BrokerUnavailable as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                log.warning(
                    "%s: receive failed (%s); retrying in %.1fs", self.spec.name, exc, delay
                )
                with self._cond:
                    self._cond.wait_for(lambda: not self._fetching, delay)
                continue
            if not batch:
                if sub.closed:
                    return
                continue
            with self._cond:
                if not self._fetching:
                    return  # not started: the broker redelivers them after close
                self._buffered += len(batch)
                lanes = self._lanes
                for delivery in batch:
                    key = delivery.key
                    work = _Work(delivery, key if key is not None else object())
                    lane = lanes.get(work.lane)
                    if lane is None:
                        lanes[work.lane] = deque((work,))
                        self._ready.append(work.lane)
                    else:
                        lane.append(work)
                self._cond.notify(len(batch))

    # ------------------------------------------------------------------ working

    def _next_work(self) -> _Work | None:
        """Under the lock: wait for a runnable lane; None when the workers must stop."""
        cond = self._cond
        while True:
            if self._workers_stop:
                return None
            delayed = self._delayed
            if delayed:
                now = time.monotonic()
                while delayed and delayed[0][0] <= now:
                    self._ready.append(heapq.heappop(delayed)[2])
            if self._ready:
                lane = self._ready.popleft()
                self._running += 1
                return self._lanes[lane][0]
            cond.wait(delayed[0][0] - time.monotonic() if delayed else None)

    def _work_loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                work = self._next_work()
            if work is None:
                return
            retry_in = self._process(work)
            with cond:
                self._running -= 1
                lane = work.lane
                if retry_in is not None:
                    heapq.heappush(
                        self._delayed, (time.monotonic() + retry_in, next(self._seq), lane)
                    )
                    cond.notify_all()
                    continue
                queue = self._lanes[lane]
                queue.popleft()
                self._buffered -= 1
                if queue:
                    self._ready.append(lane)
                else:
                    del self._lanes[lane]
                cond.notify_all()

    def _process(self, work: _Work) -> float | None:
        """Handle one attempt; return the delay before the next try, or None when settled."""
        spec = self.spec
        if work.dead_error is not None:
            return self._dead_letter(work, work.dead_error)
        message = work.message
        if message is None:
            try:
                message = work.message = decode(work.delivery, spec.codec)
            except DecodeError as exc:
                log.error("%s: undecodable message, dead-lettering: %s", spec.name, exc)
                return self._dead_letter(work, exc)
        if work.attempt > 1:
            message = dataclasses.replace(message, attempt=work.attempt)
        try:
            spec.handler(message)
        except Reject as exc:
            log.warning("%s: handler rejected message %s: %s", spec.name, message.id, exc)
            return self._dead_letter(work, exc)
        except Exception as exc:
            if work.attempt >= spec.retry.max_attempts:
                log.error(
                    "%s: message %s failed %d time(s), dead-lettering",
                    spec.name,
                    message.id,
                    work.attempt,
                    exc_info=exc,
                )
                return self._dead_letter(work, exc)
            delay = spec.retry.delay(work.attempt)
            log.warning(
                "%s: handler failed on message %s (attempt %d/%d): %s: %s; retrying in %.2fs",
                spec.name,
                message.id,
                work.attempt,
                spec.retry.max_attempts,
                type(exc).__name__,
                exc,
                delay,
            )
            work.attempt += 1
            return delay
        self._settle(work.delivery, ack=True)
        return None

    def _dead_letter(self, work: _Work, error: BaseException) -> float | None:
        spec = self.spec
        delivery = work.delivery
        if not spec.dead_letter:
            self._settle(delivery, ack=True)
            return None
        headers = dict(delivery.headers)
        headers.setdefault(DLQ_TOPIC, spec.topic)  # a re-dead-lettered message keeps its origin
        headers[DLQ_GROUP] = spec.group or ""
        headers[DLQ_ATTEMPTS] = str(work.attempt if work.message is not None else 0)
        headers[DLQ_ERROR_TYPE] = f"{type(error).__module__}.{type(error).__qualname__}"
        headers[DLQ_ERROR] = str(error)[:1000]
        if isinstance(error, DecodeError) and CONTENT_TYPE in headers:
            headers[DLQ_CONTENT_TYPE] = headers[CONTENT_TYPE]
            headers[CONTENT_TYPE] = "application/octet-stream"
        try:
            future = self.backend.publish(
                spec.topic + DEAD_LETTER_SUFFIX, delivery.body, key=delivery.key, headers=headers
            )
            future.result(timeout=DEAD_LETTER_TIMEOUT)
        except Exception as exc:  # the dead letter is not safe yet: keep the message
            work.dead_error = error
            delay = spec.retry.delay(min(work.attempt, 10))
            log.error(
                "%s: could not dead-letter message (%s); trying again in %.2fs",
                spec.name,
                exc,
                delay,
            )
            return max(delay, 0.05)
        self._settle(delivery, ack=True)
        return None

    def _settle(self, delivery: Delivery, *, ack: bool) -> None:
        try:
            if ack:
                delivery.ack()
            else:
                delivery.nack(requeue=True)
        except MsgBusError as exc:
            log.warning(
                "%s: could not settle a delivery (%s); the broker will redeliver it",
                self.spec.name,
                exc,
            )
