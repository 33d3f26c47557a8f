"""The driver-independent half of a Kafka subscription: per-partition offset bookkeeping
(:class:`PartitionState`), the receive buffer and prefetch window, commits of settled
offsets, rebalance bookkeeping and the consumer thread's life (:class:`KafkaSubscriptionBase`).
No Kafka client library is imported here."""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from msgbus.backend import Delivery, Subscription
from msgbus.backendkit import DeliveryBuffer
from msgbus.errors import (
    AuthenticationError,
    BrokerUnavailable,
    BusClosed,
    MsgBusError,
    TopicNotFound,
)

from . import commits
from .options import POLL_MS

if TYPE_CHECKING:
    from .common import KafkaBackend

__all__ = ["COMMIT_INTERVAL_S", "HANDBACK_S", "KafkaSubscriptionBase", "PartitionState"]

log = logging.getLogger("msgbus.kafka")

HANDBACK_S = POLL_MS / 1000
"""How long the poll baton stays free after a worker gave it back before the consumer thread
takes it again (s): a worker that handles its records and asks again within this time polls
again itself; when every worker is busy longer, the consumer thread serves the group."""

COMMIT_INTERVAL_S = POLL_MS / 1000
"""Asynchronous commits of a subscription go at most this often (s). One per round meant one
OffsetCommit request per record at low rates (1,000/s at 1,000 msg/s); queued behind each
other on the coordinator connection they delayed the heartbeats until the session timed out
on a loaded machine (measured: 2,646 requests in flight, then a rebalance and redeliveries).
The final and rebalance commits are synchronous and not limited."""

_THREAD = "thread"
_WORKER = "worker"


class _YourTurn(Exception):
    """Raised inside ``receive``'s wait: the baton is free and this worker may poll."""


class PartitionState:
    """Offsets of one assigned partition, from its assignment until it is revoked.

    ``tp`` is the driver's key of the partition; ``partition`` its number. ``order`` holds,
    in offset order, the offsets handed to this subscription (buffered or delivered) that are
    not known to be settled, plus settled ones behind an unsettled one; ``done`` the settled
    offsets still inside ``order``. The commit point (the highest contiguous settled offset
    plus one) is the first offset of ``order``, or, when it is empty, the one after the last
    handed-out offset. All fields are guarded by the subscription's lock.
    """

    __slots__ = (
        "committed",
        "dead",
        "done",
        "inflight",
        "next_offset",
        "order",
        "partition",
        "tp",
    )

    def __init__(self, tp: Hashable, partition: int, start: int, committed: int | None) -> None:
        self.tp = tp
        self.partition = partition
        self.order: deque[int] = deque()
        self.done: set[int] = set()
        self.next_offset = start
        self.committed = committed
        self.inflight = 0
        self.dead = False

    def add(self, offset: int) -> None:
        """Record that ``offset`` was handed to the subscription."""
        self.order.append(offset)
        self.next_offset = offset + 1

    def settle(self, offset: int) -> None:
        """Record that ``offset`` was acknowledged (or dropped)."""
        order, done = self.order, self.done
        if order and order[0] == offset:
            order.popleft()
            while order and order[0] in done:
                done.discard(order.popleft())
        else:
            done.add(offset)

    def commit_point(self) -> int:
        """The offset to commit: never past an unsettled one."""
        return self.order[0] if self.order else self.next_offset

    def needs_commit(self) -> bool:
        """True when the commit point moved past what was last committed."""
        return self.committed is None or self.commit_point() > self.committed


class KafkaSubscriptionBase(Subscription):
    """The driver-independent half of a Kafka subscription.

    A consumer thread (the driver's) hands deliveries whose token is
    ``(PartitionState, offset)`` to :meth:`_accept_locked`: the toolkit's
    :class:`~msgbus.backendkit.DeliveryBuffer` holds what the prefetch window allows, and
    ``_overflow`` what a driver had to take beyond it (librdkafka, which drops its prefetch
    when paused), moved into the buffer as deliveries settle. ``receive`` (any thread) is the
    buffer's ``take``; ``ack``/``nack`` (any thread) update the offset bookkeeping under
    ``_lock``; the consumer thread commits what :meth:`_take_commits` returns. On a
    rebalance the driver calls :meth:`_revoke_begin`, waits while :meth:`_revoke_busy`
    (bounded), then :meth:`_revoke_finish` for the offsets to commit.

    **The poll baton** (the direct worker hand-off): only the thread holding it calls into
    the driver's consumer (:meth:`_step`). The consumer thread holds it by default. A
    ``receive`` that finds the buffer empty while the window has room asks for it; the
    consumer thread gives it up at the end of its current round, and the worker then runs
    the same round itself (commit, position new partitions, poll at most the window's room,
    ingest: rebalance callbacks run on it) and takes its records from the buffer, so they
    reach the handler on the thread that fetched them. The worker gives the baton back
    before ``receive`` returns; the consumer thread takes it again once it stayed free for
    :data:`HANDBACK_S`, so the group is served while every handler is busy.
    """

    def __init__(
        self,
        backend: KafkaBackend,
        topic: str,
        group: str | None,
        prefetch: int,
        from_beginning: bool,
    ) -> None:
        self.topic = topic
        self.group = group
        self._backend = backend
        self._options = backend.options
        self._prefetch = prefetch
        self._earliest = from_beginning or backend.options.auto_offset_reset == "earliest"
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # ready, fatal error, closed
        self._space = threading.Condition(self._lock)  # for the consumer thread: room, close
        self._space_waiting = False
        self._buffer = DeliveryBuffer(self._lock)  # within the window: buffer + inflight
        self._overflow: deque[Delivery] = deque()  # taken beyond the window, oldest first
        self._states: dict[Any, PartitionState] = {}
        self._dirty: set[PartitionState] = set()
        self._pending_init: set[Any] = set()
        self._inflight = 0
        self._ready = False
        self._closed = False
        self._stopping = False
        self._error: MsgBusError | None = None
        self._flow_paused = False
        self._consumer: Any = None  # the driver's consumer, made by start()
        self._thread: threading.Thread | None = None
        self._loop_done = threading.Event()
        # the poll baton: who may call into the driver's consumer (see the class docstring)
        self._holder: str | None = None
        self._wanted = 0  # receives waiting with an empty buffer, that would poll themselves
        self._free_since = float("-inf")  # when a worker last gave the baton back
        self._direct_after = 0.0  # after a worker's poll failed: the consumer thread retries
        self._next_commit = 0.0  # no asynchronous commit before (monotonic)
        self._baton = threading.Condition(self._lock)  # consumer thread: baton free, closing

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def __repr__(self) -> str:
        return f"<KafkaSubscription topic={self.topic!r} group={self.group!r}>"

    def _room(self) -> int:
        """How many more deliveries the prefetch window allows (call with ``_lock`` held)."""
        return self._prefetch - len(self._buffer) - len(self._overflow) - self._inflight

    def _accept_locked(self, deliveries: list[Delivery]) -> None:
        """Consumer thread, ``_lock`` held: buffer ``deliveries`` (in order) as far as the
        window allows, hold the rest back until deliveries settle."""
        if not deliveries:
            return
        room = 0 if self._overflow else self._prefetch - len(self._buffer) - self._inflight
        put = self._buffer.put
        for delivery in deliveries[:room]:
            put(delivery)
        if room < len(deliveries):
            self._overflow.extend(deliveries[max(room, 0) :])

    def _refill_locked(self) -> None:
        """``_lock`` held: move held-back deliveries into the buffer while the window has room."""
        overflow = self._overflow
        while overflow and len(self._buffer) + self._inflight < self._prefetch:
            self._buffer.put(overflow.popleft())

    def _wait_ready(self, where: str) -> None:
        """Block until the consumer thread set ``_ready`` (bounded by subscribe_timeout_ms)."""
        opts = self._options
        deadline = time.monotonic() + opts.subscribe_timeout_ms / 1000
        with self._cond:
            while not self._ready:
                if self._error is not None:
                    raise self._error
                if self._closed:
                    raise BusClosed(f"{where}: closed while joining")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerUnavailable(
                        f"{where}: group {self.group!r} not joined within "
                        f"{opts.subscribe_timeout_ms} ms (subscribe_timeout_ms)"
                    )
                self._cond.wait(remaining)

    def _wait_for_space(self) -> None:
        """Consumer thread, window full: wait (at most one poll interval) for room."""
        with self._space:
            self._space_waiting = True
            self._space.wait_for(
                lambda: (
                    self._stopping
                    or self._room() > 0
                    or (bool(self._dirty) and time.monotonic() >= self._next_commit)
                ),
                POLL_MS / 1000,
            )
            self._space_waiting = False

    def _fail(self, error: MsgBusError) -> None:
        """A fatal error (consumer thread, or a worker holding the baton): ``receive`` and
        ``start`` raise it from now on."""
        with self._cond:
            self._error = error
            self._stopping = True  # the consumer thread leaves; no worker polls any more
            self._cond.notify_all()
            self._baton.notify_all()
            for delivery in self._buffer.clear():  # wakes every waiting receive
                self._buffer.put(delivery)

    def _raise_error(self) -> None:
        """``receive``'s check while it waits: the consumer's fatal error, if any."""
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------------ commits

    def _take_commits(self, *, sync: bool = False) -> dict[Any, int]:
        """The commit points of partitions whose settled offsets moved on; marks them
        committed (call :meth:`_commit_failed` if the commit then fails). For an
        asynchronous commit (``sync`` false) at most once per :data:`COMMIT_INTERVAL_S`:
        ``{}`` until then, and the points stay due."""
        if self.group is None:
            with self._lock:
                self._dirty.clear()
            return {}
        with self._lock:
            if not self._dirty:
                return {}
            if not sync:
                now = time.monotonic()
                if now < self._next_commit:
                    return {}
                self._next_commit = now + COMMIT_INTERVAL_S
            offsets = {}
            for state in self._dirty:
                if state.dead or not state.needs_commit():
                    continue
                point = state.commit_point()
                offsets[state.tp] = point
                state.committed = point
            self._dirty.clear()
        return offsets

    def _commit_failed(self, tps: Iterable[Any]) -> None:
        """A commit of ``tps`` failed: commit them again with the next one."""
        with self._lock:
            for tp in tps:
                state = self._states.get(tp)
                if state is not None and not state.dead:
                    state.committed = None
                    self._dirty.add(state)

    # ------------------------------------------------------------------ rebalances

    def _revoke_begin(
        self, tps: Iterable[Any], *, lost: bool
    ) -> tuple[list[PartitionState], float]:
        """Stop handing out records of ``tps``: drop their buffered deliveries, forget them.

        Returns their states and how long to wait for their in-flight deliveries (0 when
        ``lost`` or closing).
        """
        with self._cond:
            tps = set(tps)
            self._pending_init.difference_update(tps)
            states = [self._states.pop(tp) for tp in tps if tp in self._states]
            if not states:
                return [], 0.0
            gone = set(states)
            kept: list[Delivery] = []
            for delivery in [*self._buffer.clear(), *self._overflow]:
                if delivery.token[0] in gone:
                    delivery._settle = None  # never handed out: nothing to settle
                else:
                    kept.append(delivery)
            self._overflow.clear()
            self._accept_locked(kept)
            self._dirty.difference_update(gone)
            wait = 0.0 if (lost or self._closed) else self._options.revoke_timeout_ms / 1000
        return states, wait

    def _revoke_busy(self, states: list[PartitionState]) -> bool:
        """True while a delivery of ``states`` is in flight (handed out, not settled)."""
        with self._lock:
            return any(state.inflight for state in states)

    def _revoke_finish(self, states: list[PartitionState], waited: float) -> dict[Any, int]:
        """Let ``states`` go: later settlements are ignored; return their commit points."""
        with self._lock:
            busy = any(state.inflight for state in states)
            offsets = {s.tp: s.commit_point() for s in states if s.needs_commit()}
            for state in states:
                state.dead = True
                self._inflight -= state.inflight  # their settlements are ignored from now on
                state.inflight = 0
            self._refill_locked()
        if busy and waited:
            log.warning(
                "%r: rebalance: deliveries still in flight after %.1fs; they will be "
                "delivered again to the new owner",
                self,
                waited,
            )
        return offsets

    # ------------------------------------------------------------------ receiving

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Hand out up to ``max_messages`` deliveries, waiting up to ``timeout``.

        What the consumer thread buffered is handed out at once. With nothing buffered and
        room in the window, the calling thread polls the driver itself once the poll baton is
        free (see the class docstring); otherwise it waits for the buffer (the toolkit's
        :meth:`~msgbus.backendkit.DeliveryBuffer.take`). Returns ``[]`` on timeout or once
        closed; raises :class:`~msgbus.AuthenticationError` or :class:`~msgbus.TopicNotFound`
        if the consumer hit a fatal error. Any thread.
        """
        buffer = self._buffer
        direct = timeout > 0 and self._thread is not None
        deadline = time.monotonic() + timeout
        with buffer:
            if self._error is not None:
                raise self._error
            if not direct:
                return self._hand_out_locked(buffer.take(max_messages, timeout, self._raise_error))
            self._wanted += 1
            try:
                return self._hand_out_locked(buffer.take(max_messages, timeout, self._check_turn))
            except _YourTurn:
                self._holder = _WORKER
            finally:
                self._wanted -= 1
        return self._receive_direct(max_messages, deadline)

    def _hand_out_locked(self, out: list[Delivery]) -> list[Delivery]:
        """``_lock`` held: count ``out`` as in flight."""
        if out:
            self._inflight += len(out)
            for delivery in out:
                delivery.token[0].inflight += 1
        return out

    def _worker_may_poll_locked(self) -> bool:
        """``_lock`` held: whether a worker with nothing buffered may take the baton."""
        return (
            self._ready
            and not self._stopping
            and self._room() > 0
            and time.monotonic() >= self._direct_after
        )

    def _check_turn(self) -> None:
        """``receive``'s check while the buffer is empty: a fatal error raises it; a free
        baton raises :class:`_YourTurn` when this worker may poll."""
        if self._error is not None:
            raise self._error
        if self._holder is None and self._worker_may_poll_locked():
            raise _YourTurn

    def _receive_direct(self, max_messages: int, deadline: float) -> list[Delivery]:
        """The calling thread holds the baton: run rounds until records arrive, the window
        closes, the subscription stops or ``deadline`` passes; then give the baton back."""
        buffer = self._buffer
        try:
            while True:
                remaining = max(0.0, min(deadline - time.monotonic(), POLL_MS / 1000))
                try:
                    self._step(remaining)
                except Exception as exc:
                    error = self._backend._translate(exc, f"consuming Kafka topic {self.topic!r}")
                    if isinstance(error, AuthenticationError | TopicNotFound):
                        self._fail(error)
                        raise error from exc
                    log.warning("%r: %s; the consumer thread retries", self, error)
                    with self._lock:
                        self._direct_after = time.monotonic() + 1.0
                    return []
                with buffer:
                    if self._error is not None:
                        raise self._error
                    if len(buffer):
                        return self._hand_out_locked(buffer.take(max_messages, 0))
                    if time.monotonic() >= deadline or not self._worker_may_poll_locked():
                        return []
        finally:
            with self._lock:
                self._holder = None
                self._free_since = time.monotonic()
                if self._stopping:
                    self._baton.notify_all()
                buffer.wake()  # another waiting receive may take the baton now

    def confirm_settled(self, timeout: float) -> bool:
        """Wait until the broker holds the commits of what was settled (see commits.py)."""
        return commits.confirm_committed(self, timeout)

    def _settle(self, delivery: Delivery, ack: bool, requeue: bool) -> None:
        state, offset = delivery.token
        with self._lock:
            if state.dead or self._closed:
                return  # revoked or closed: the partition's next owner delivers it again
            state.inflight -= 1
            self._inflight -= 1
            if ack or not requeue:
                state.settle(offset)
                self._dirty.add(state)
                if self._space_waiting:
                    self._space.notify()
                if self._overflow:
                    self._buffer.put(self._overflow.popleft())  # the window has room again
                return
            self._buffer.put_back(delivery, self._settle)  # again first, marked redelivered

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Leave the group: commit what was settled, hand the rest back; wake ``receive``.

        Idempotent, any thread. Waits (bounded by ``request_timeout_ms``) for the consumer
        thread to commit and leave, so the partitions move on without a session timeout.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            for delivery in [*self._buffer.close(), *self._overflow]:
                delivery._settle = None
            self._overflow.clear()
            self._cond.notify_all()
            self._space.notify_all()
            self._baton.notify_all()
        thread = self._thread
        if thread is None:
            self._shutdown()
        elif thread is not threading.current_thread():
            self._loop_done.wait(self._options.request_timeout_ms / 1000 + 1)
        self._backend._forget(self)

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Create the driver's consumer, join the group (or, private, assign every
        partition) and wait until the partitions are positioned; raise the driver's error
        as a msgbus error (bounded by ``subscribe_timeout_ms``)."""
        where = f"subscribing to Kafka topic {self.topic!r}"
        group_id = None if self.group is None else self._options.group_id(self.group, self.topic)
        try:
            self._consumer = self._new_consumer(group_id, where)
            if self.group is None:
                self._assign_all(self._consumer)
            else:
                self._join(self._consumer)
        except MsgBusError:
            raise
        except Exception as exc:
            raise self._backend._translate(exc, where) from exc
        self._start_thread(where)

    @abstractmethod
    def _new_consumer(self, group_id: str | None, where: str) -> Any:
        """The driver's consumer of this subscription (``group_id`` None: private)."""

    @abstractmethod
    def _assign_all(self, consumer: Any) -> None:
        """Private member: own every partition, positioned at its start; set ``_ready``."""

    @abstractmethod
    def _join(self, consumer: Any) -> None:
        """Subscribe ``consumer`` to the topic with this driver's rebalance hooks."""

    # ------------------------------------------------------------------ consumer thread

    def _start_thread(self, where: str) -> None:
        """Start the consumer thread and wait until the member is ready (or raise)."""
        self._thread = threading.Thread(
            target=self._run, name=f"msgbus-kafka {self.topic}[{self.group or 'private'}]"
        )
        self._thread.daemon = True
        self._thread.start()
        self._wait_ready(where)

    def _run(self) -> None:
        """The consumer thread: :meth:`_step` until stopped, retrying driver errors with
        backoff (authentication and missing topics are fatal); then :meth:`_shutdown`.
        It runs a round only while it holds the poll baton, and gives the baton up after a
        round when a worker asks for it (see the class docstring)."""
        failures = 0
        try:
            while self._thread_turn():
                try:
                    self._step(POLL_MS / 1000)
                    failures = 0
                except Exception as exc:
                    error = self._backend._translate(exc, f"consuming Kafka topic {self.topic!r}")
                    if isinstance(error, AuthenticationError | TopicNotFound):
                        self._fail(error)
                        return
                    failures += 1
                    delay = min(2.0, 0.05 * 2**failures)
                    log.warning("%r: %s; retrying in %.2fs", self, error, delay)
                    with self._space:
                        self._space.wait_for(lambda: self._stopping, delay)
        finally:
            self._last_turn()
            self._shutdown()

    def _thread_turn(self) -> bool:
        """Consumer thread, between rounds: keep the baton unless a worker asks for it and
        may poll; without it, wait until it stayed free for :data:`HANDBACK_S`. False once
        stopping."""
        with self._lock:
            if self._holder == _THREAD:
                if not (self._wanted and self._worker_may_poll_locked()):
                    return not self._stopping
                self._holder = None  # a worker waits with nothing buffered: its turn
                self._free_since = time.monotonic()
                self._buffer.wake()
            while not self._stopping:
                if self._holder is None and not (self._wanted and self._worker_may_poll_locked()):
                    idle = time.monotonic() - self._free_since
                    if idle >= HANDBACK_S:
                        self._holder = _THREAD
                        return True
                    self._baton.wait(HANDBACK_S - idle)
                else:
                    self._baton.wait(HANDBACK_S)  # a worker polls (or is about to)
            return False

    def _last_turn(self) -> None:
        """Consumer thread, stopping: wait (bounded) for a polling worker to give the baton
        back, then hold it for the final commit and close."""
        limit = time.monotonic() + self._options.request_timeout_ms / 1000
        with self._lock:
            while self._holder == _WORKER and time.monotonic() < limit:
                self._baton.wait(POLL_MS / 1000)
            self._holder = _THREAD

    @abstractmethod
    def _step(self, timeout: float) -> None:
        """One round, by whoever holds the poll baton: commit what was settled, position
        new partitions, poll (waiting at most ``timeout`` s) at most the window's room,
        ingest."""

    @abstractmethod
    def _commit_now(self) -> None:
        """Commit every moved commit point synchronously (the final commit)."""

    @abstractmethod
    def _close_consumer(self) -> None:
        """Leave the group and close the driver's consumer (if one was created)."""

    def _shutdown(self) -> None:
        """On the consumer thread: final commit, leave the group, close the consumer."""
        with self._cond:
            self._stopping = True
        try:
            if self.group is not None and self._error is None:
                try:
                    self._commit_now()
                except Exception as exc:
                    log.warning("%r: final commit failed (%s); expect redeliveries", self, exc)
            try:
                self._close_consumer()
            except Exception as exc:
                log.debug("%r: closing the consumer: %s", self, exc)
        finally:
            self._forget_states()

    def _forget_states(self) -> None:
        """After the consumer closed: every partition is gone."""
        with self._cond:
            for state in self._states.values():
                state.dead = True
            self._states.clear()
            self._cond.notify_all()
        self._loop_done.set()
