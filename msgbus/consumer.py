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
from typing import TYPE_CHECKING, Any, Protocol

from msgbus import secrets
from msgbus.backend import Delivery, Subscription
from msgbus.deadletters import DeadLetterSink
from msgbus.envelope import decode
from msgbus.errors import BrokerUnavailable, DecodeError, MsgBusError, Reject
from msgbus.health import HealthRecord, SubscriptionHealth, subscription_health
from msgbus.message import (
    ATTEMPT,
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
    from msgbus.telemetry import Telemetry

__all__ = ["Consumer", "HandlerRunner", "SubscriptionSpec"]

log = logging.getLogger("msgbus")

Handler = Callable[[Message], Any]


class HandlerRunner(Protocol):
    """Runs a subscription's handler somewhere other than the consumer's worker threads.

    With a runner the consumer keeps one thread that fetches and schedules (lanes, retries,
    dead letters: the same engine), and hands runnable work to :meth:`submit` instead of
    calling the handler itself. The runner must, for each work ``w``, eventually call
    :meth:`Consumer.prepare`, run the handler, :meth:`Consumer.outcome` (which may block when
    the handler failed: it can dead-letter) and :meth:`Consumer.finish`, and submit the works
    ``finish`` returns. ``msgbus.aio`` runs ``async def`` handlers on an event loop this way.
    """

    def submit(self, consumer: Consumer, works: list[Any]) -> None:
        """Take ``works`` (runnable now, at most ``concurrency`` in flight); must not block."""


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
    runner: HandlerRunner | None = None
    retry_mode: str = "local"

    @property
    def name(self) -> str:
        """``topic[group]`` for logs."""
        return f"{self.topic}[{self.group or 'private'}]"


class _Work:
    """One delivery on its way through the lanes."""

    __slots__ = ("attempt", "dead_error", "delivery", "error", "lane", "message", "outcome")

    def __init__(self, delivery: Delivery, lane: str | None) -> None:
        self.delivery = delivery
        self.lane = lane
        self.message: Message | None = None
        again = delivery.headers.get(ATTEMPT)  # redelivered by a durable retry
        self.attempt = int(again) if again is not None and again.isdigit() else 1
        self.dead_error: BaseException | None = None
        self.error: BaseException | None = None  # of the last attempt, for telemetry
        self.outcome: str | None = None  # of the last attempt: ack, retry, dead_letter, ...


class Consumer:
    """Runs one :class:`SubscriptionSpec` against a backend. Owned by a ``Bus``.

    ``start`` subscribes (returns when the subscription is ready) and starts the threads.
    ``stop_fetching`` then ``drain`` then ``close`` shut it down: in-flight handlers finish
    within the deadline, everything not yet acknowledged stays with the broker.
    """

    def __init__(
        self, backend: Backend, spec: SubscriptionSpec, telemetry: Telemetry | None = None
    ) -> None:
        self.backend = backend
        self.spec = spec
        self.telemetry = telemetry
        self._dead_letters = DeadLetterSink(backend)
        self.health_record = HealthRecord()
        self.subscription: Subscription | None = None
        self._cond = threading.Condition()
        self._lanes: dict[str, deque[_Work]] = {}
        self._ready: deque[object] = deque()
        self._delayed: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        self._buffered = 0
        self._limit = max(spec.prefetch, spec.concurrency)
        self._slots = spec.concurrency  # handlers in flight at once (threads, or a runner's)
        # fetch again below this many buffered: at once for worker threads (they fetch only
        # when idle anyway); below half for a runner's pump, so that it fetches in batches
        self._refill = self._limit if spec.runner is None else max(1, self._limit // 2)
        self._running = 0
        self._sleepers = 0  # threads waiting on _cond: notify only when there is one
        self._fetching_now = False
        self._failures = 0
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Subscribe and start the worker threads; the subscription is ready when it returns."""
        spec = self.spec
        if spec.retry_mode == "durable" and spec.group is not None:
            self.subscription = self.backend.subscribe_retrying(
                spec.topic,
                spec.group,
                prefetch=spec.prefetch,
                from_beginning=spec.from_beginning,
                levels=spec.retry.max_attempts - 1,
            )
        else:
            self.subscription = self.backend.subscribe(
                spec.topic, spec.group, prefetch=spec.prefetch, from_beginning=spec.from_beginning
            )
        if spec.runner is not None:  # one thread fetches; the runner runs the handlers
            self._threads.append(
                threading.Thread(
                    target=self._pump_loop, name=f"msgbus-pump {spec.name}", daemon=True
                )
            )
        for index in range(spec.concurrency if spec.runner is None else 0):
            worker = threading.Thread(
                target=self._work_loop, name=f"msgbus-worker-{index} {spec.name}", daemon=True
            )
            self._threads.append(worker)
        for thread in self._threads:
            thread.start()

    def stop_fetching(self) -> None:
        """Take no more messages from the broker (those buffered are not started either)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def drain(self, deadline: float) -> bool:
        """Wait until no handler runs, or until ``deadline`` (monotonic); True if idle."""
        with self._cond:
            while self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._sleep(remaining)
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

    def health(self) -> SubscriptionHealth:
        """A snapshot of this subscription's health (see :mod:`msgbus.health`)."""
        return subscription_health(
            self.spec.topic,
            self.spec.group,
            record=self.health_record,
            stopped=self._stopping,
            problem=self._connection_problem(),
            in_flight=self._running,
            buffered=self._buffered,
        )

    def _connection_problem(self) -> BaseException | None:
        sub = self.subscription
        problem = sub.connection_problem() if sub is not None else None
        return problem if problem is not None else self.backend.connection_problem()

    # ------------------------------------------------------------------ scheduling

    def _next_work(self) -> _Work | None:
        """Under the lock: return the next runnable work, or None when the workers must stop.

        Leader/follower: a worker that finds nothing to run and room in the buffer fetches
        from the broker itself (one worker at a time), so a message needs no hand-off
        between threads. ``_ready`` holds keys whose lane head is runnable, and unkeyed works
        themselves.
        """
        while True:
            if self._stopping:
                return None
            work = self._take_ready()
            if work is not None:
                return work
            wait: float | None = None
            if self._delayed and self._running < self._slots:  # sleep until the next retry
                wait = self._delayed[0][0] - time.monotonic()
            if not self._fetching_now and self._buffered < self._refill:
                self._fetch(min(wait, 1.0) if wait is not None else 1.0)
            else:
                self._sleep(wait)

    def _take_ready(self) -> _Work | None:
        """Under the lock: the next runnable work if a handler slot is free, else None."""
        if self._stopping or self._running >= self._slots:
            return None
        delayed = self._delayed
        if delayed:  # retries whose time has come join the ready ones
            now = time.monotonic()
            while delayed and delayed[0][0] <= now:
                self._ready.append(heapq.heappop(delayed)[2])
        if not self._ready:
            return None
        item = self._ready.popleft()
        self._running += 1
        return item if isinstance(item, _Work) else self._lanes[item][0]

    def _sleep(self, timeout: float | None) -> None:
        """Under the lock: wait on the condition, counted so that wakers can skip notifying."""
        self._sleepers += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._sleepers -= 1

    def _fetch(self, timeout: float) -> None:
        """Under the lock (released while receiving): move one batch into the lanes."""
        sub = self.subscription
        assert sub is not None
        self._fetching_now = True
        room = self._limit - self._buffered
        self._cond.release()
        try:
            batch = sub.receive(room, timeout)
            self._failures = 0
            self.health_record.receive_ok(batch)
        except BrokerUnavailable as exc:
            self._failures += 1
            self.health_record.receive_failed(exc)
            delay = min(5.0, 0.1 * 2**self._failures)
            log.warning("%s: receive failed (%s); retrying in %.1fs", self.spec.name, exc, delay)
            batch = []
            self._cond.acquire()
            self._cond.wait(delay)
            self._cond.release()
        finally:
            self._cond.acquire()
            self._fetching_now = False
        if not batch or self._stopping:
            return  # when stopping, unstarted deliveries go back at close
        self._buffered += len(batch)
        lanes, ready = self._lanes, self._ready
        for delivery in batch:
            key = delivery.key
            work = _Work(delivery, key)
            if key is None:
                ready.append(work)  # unkeyed: a lane of its own
                continue
            lane = lanes.get(key)
            if lane is None:
                lanes[key] = deque((work,))
                ready.append(key)
            else:
                lane.append(work)
        if len(batch) > 1 and self._sleepers:
            self._cond.notify(len(batch) - 1)

    def _work_loop(self) -> None:
        cond = self._cond
        done: _Work | None = None
        retry_in: float | None = None
        while True:
            with cond:
                if done is not None:
                    self._finish(done, retry_in)
                work = self._next_work()
            if work is None:
                return
            telemetry = self.telemetry
            if telemetry is None or not telemetry.on:
                retry_in = self._process(work)
            else:
                retry_in = telemetry.process(self, work, self._process)
            done = work

    def _pump_loop(self) -> None:
        """With a runner: fetch and schedule here, hand runnable works to the runner."""
        runner = self.spec.runner
        assert runner is not None
        cond = self._cond
        while True:
            with cond:
                work = self._next_work()
                if work is None:
                    return
                works = [work]
                while (more := self._take_ready()) is not None:
                    works.append(more)
            runner.submit(self, works)

    # ------------------------------------------------------------------ for runners

    def finish(self, work: _Work, retry_in: float | None) -> list[_Work]:
        """Book ``work`` as done with (``retry_in``: from :meth:`outcome`); return the works
        that may run now, which the caller must run. ``retry_in=None`` without an
        :meth:`outcome` leaves the delivery unsettled (a handler abandoned at shutdown)."""
        works: list[_Work] = []
        with self._cond:
            self._finish(work, retry_in)
            while (more := self._take_ready()) is not None:
                works.append(more)
        return works

    def take_ready(self) -> list[_Work]:
        """The works that may run now (after a retry delay passed), which the caller must run."""
        works: list[_Work] = []
        with self._cond:
            while (more := self._take_ready()) is not None:
                works.append(more)
        return works

    def _finish(self, work: _Work, retry_in: float | None) -> None:
        """Under the lock: book a processed work as settled, or schedule its retry."""
        cond = self._cond
        self._running -= 1
        key = work.lane
        if retry_in is not None:
            due = time.monotonic() + retry_in
            heapq.heappush(self._delayed, (due, next(self._seq), work if key is None else key))
            cond.notify_all()
            return
        was_full = self._buffered == self._refill  # dropping below it now: a fetch may go on
        self._buffered -= 1
        if key is not None:
            queue = self._lanes[key]
            queue.popleft()
            if queue:
                self._ready.append(key)
                if self._sleepers and self.spec.runner is None:  # a runner takes it itself
                    cond.notify()
            else:
                del self._lanes[key]
        idle = self._running == 0 and (self._stopping or not self._ready)
        if self._sleepers and (was_full or idle):
            cond.notify_all()  # a fetch may go on now; drain may be waiting

    def _process(self, work: _Work) -> float | None:
        """Handle one attempt; return the delay before the next try, or None when settled."""
        message = self.prepare(work)
        if not isinstance(message, Message):
            work.error = message
            return self._dead_letter(work, message)
        try:
            self.spec.handler(message)
        except Exception as exc:
            return self.outcome(work, message, exc)
        work.outcome = "ack"
        self._settle(work.delivery, ack=True)
        return None

    def prepare(self, work: _Work) -> Message | BaseException:
        """The message to give the handler for ``work``'s attempt, or the error that
        dead-letters it without a handler call (undecodable body, or a dead letter that
        could not be published before); pass that error to :meth:`outcome` with no message."""
        if work.dead_error is not None:
            return work.dead_error
        message = work.message
        if message is None:
            try:
                message = work.message = decode(work.delivery, self.spec.codec)
            except DecodeError as exc:
                log.error("%s: undecodable message, dead-lettering: %s", self.spec.name, exc)
                return exc
        if work.attempt > 1:
            message = dataclasses.replace(message, attempt=work.attempt)
        return message

    def outcome(
        self, work: _Work, message: Message | None, error: BaseException | None
    ) -> float | None:
        """Settle one attempt: ack (``error`` None), or schedule a retry (return its delay),
        or dead-letter (blocks until the dead letter is confirmed). For :meth:`finish`."""
        spec = self.spec
        work.error = error
        if error is None:
            work.outcome = "ack"
            self._settle(work.delivery, ack=True)
            return None
        if message is None:
            return self._dead_letter(work, error)
        if not isinstance(error, Reject):
            self.health_record.handler_failed(error)
        if isinstance(error, Reject):
            log.warning("%s: handler rejected message %s: %s", spec.name, message.id, error)
            return self._dead_letter(work, error)
        if work.attempt >= spec.retry.max_attempts:
            log.error(
                "%s: message %s failed %d time(s), dead-lettering",
                spec.name,
                message.id,
                work.attempt,
                exc_info=error,
            )
            return self._dead_letter(work, error)
        delay = spec.retry.delay(work.attempt)
        log.warning(
            "%s: handler failed on message %s (attempt %d/%d): %s: %s; retrying in %.2fs",
            spec.name,
            message.id,
            work.attempt,
            spec.retry.max_attempts,
            type(error).__name__,
            error,
            delay,
        )
        work.attempt += 1
        work.outcome = "retry"
        if spec.retry_mode == "durable":  # a fixed delay per level: one broker queue each
            return self._retry_durably(work, spec.retry.without_jitter().delay(work.attempt - 1))
        return delay

    def _retry_durably(self, work: _Work, delay: float) -> float | None:
        """Hand the message to the broker for redelivery after ``delay``; ack it once the
        broker holds it. If that fails, retry locally (return ``delay``)."""
        delivery = work.delivery
        headers = dict(delivery.headers)
        headers[ATTEMPT] = str(work.attempt)
        spec = self.spec
        assert spec.group is not None
        try:
            self.backend.publish_retry(
                spec.topic,
                spec.group,
                delivery.body,
                key=delivery.key,
                headers=headers,
                delay=delay,
            ).result(timeout=DEAD_LETTER_TIMEOUT)
        except Exception as exc:  # not safe with the broker: keep it here
            log.warning("%s: durable retry failed (%s); retrying locally", spec.name, exc)
            return delay
        self._settle(delivery, ack=True)
        return None

    def _dead_letter(self, work: _Work, error: BaseException) -> float | None:
        spec = self.spec
        delivery = work.delivery
        if not spec.dead_letter:
            work.outcome = "dropped"
            self._settle(delivery, ack=True)
            return None
        headers = dict(delivery.headers)
        headers.setdefault(DLQ_TOPIC, spec.topic)  # a re-dead-lettered message keeps its origin
        headers[DLQ_GROUP] = spec.group or ""
        headers[DLQ_ATTEMPTS] = str(work.attempt if work.message is not None else 0)
        headers[DLQ_ERROR_TYPE] = f"{type(error).__module__}.{type(error).__qualname__}"
        # kept in the broker and shown by `msgbus dlq show`: no remembered secret in it;
        # NUL breaks STOMP headers
        headers[DLQ_ERROR] = secrets.mask(str(error))[:1000].replace("\x00", "\\0")
        if isinstance(error, DecodeError) and CONTENT_TYPE in headers:
            headers[DLQ_CONTENT_TYPE] = headers[CONTENT_TYPE]
            headers[CONTENT_TYPE] = "application/octet-stream"
        try:  # the store exists before the first dead letter; the publish must be routed
            future = self._dead_letters.send(
                spec.topic, delivery.body, key=delivery.key, headers=headers, publish=self._send
            )
            future.result(timeout=DEAD_LETTER_TIMEOUT)
        except Exception as exc:  # the dead letter is not safe yet: keep the message
            work.dead_error = error
            work.outcome = "dead_letter_failed"
            delay = spec.retry.delay(min(work.attempt, 10))
            log.error(
                "%s: could not dead-letter message (%s); trying again in %.2fs",
                spec.name,
                exc,
                delay,
            )
            return max(delay, 0.05)
        work.outcome = "dead_letter"
        self._settle(delivery, ack=True)
        return None

    def _send(self, topic: str, body: bytes, *, key: str | None, headers: dict[str, str]) -> Any:
        """``backend.publish_routed``, in a send span when telemetry is active."""
        send = self.backend.publish_routed
        telemetry = self.telemetry
        if telemetry is None or not telemetry.on:
            return send(topic, body, key=key, headers=headers)
        return telemetry.publish(send, topic, body, key=key, headers=headers)

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
