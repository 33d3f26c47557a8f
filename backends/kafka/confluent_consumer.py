"""The confluent-kafka driver's subscription: one ``Consumer`` per subscription, driven by its
own thread, with ``on_assign``/``on_revoke``/``on_lost`` (see ``confluent.py``'s docstring);
the driver-independent bookkeeping is :class:`~.subscription.KafkaSubscriptionBase`."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from msgbus.backend import Delivery
from msgbus.errors import AuthenticationError, TopicNotFound
from msgbus.message import TIMESTAMP

from .confluent_errors import AUTH, translate_error
from .subscription import KafkaSubscriptionBase, PartitionState

if TYPE_CHECKING:
    from .confluent import ConfluentKafkaBackend

__all__ = ["ConfluentSubscription", "Key"]

log = logging.getLogger("msgbus.kafka")

Key = tuple[str, int]
"""A partition as the shared bookkeeping keys it: (topic, partition)."""


class ConfluentSubscription(KafkaSubscriptionBase):
    """A member of ``group`` on ``topic`` (see the package docstring).

    Whoever holds the poll baton (the ``msgbus-kafka ...`` thread, or an idle worker in
    ``receive``: see :class:`~.subscription.KafkaSubscriptionBase`) calls into the
    ``Consumer``: it polls, runs the rebalance callbacks (librdkafka runs them on the
    polling thread), commits. ``ack``/``nack`` (any thread) only update offset bookkeeping
    under a lock.
    """

    _backend: ConfluentKafkaBackend

    def _new_consumer(self, group_id: str | None, where: str) -> Consumer:
        config = self._backend.consumer_config(group_id)
        config["on_commit"] = self._on_committed
        return Consumer(config)

    def _join(self, consumer: Consumer) -> None:
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _assign_all(self, consumer: Consumer) -> None:
        """Private member: own every partition, positioned at the start (no group)."""
        count = self._backend._partition_counts.get(self.topic)
        if not count:
            raise TopicNotFound(f"Kafka topic {self.topic!r} has no partitions")
        keys = [(self.topic, p) for p in range(count)]
        starts = self._backend.start_offsets(keys, earliest=self._earliest)
        consumer.assign([TopicPartition(t, p, starts[(t, p)]) for t, p in keys])
        for key in keys:
            self._states[key] = PartitionState(key, key[1], starts[key], starts[key])
        self._ready = True

    # ------------------------------------------------------------------ consumer thread

    def _step(self, timeout: float) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._commit(consumer, sync=False)
        self._poll(consumer, timeout)

    def _poll(self, consumer: Consumer, timeout: float) -> None:
        with self._lock:
            room = self._room()
        if room <= 0:
            # Window full. Pausing would make librdkafka drop what it prefetched (and fetch
            # it again on resume), so the consumer is only paused once a whole window waits
            # beyond it; until then one record per round is taken while callbacks
            # (rebalances, commits) are served, and receive() keeps to the window.
            if -room >= self._prefetch and not self._flow_paused:
                self._flow_paused = True
                consumer.pause(consumer.assignment())
            self._wait_for_space()
            messages = consumer.consume(1, 0)
        else:
            if self._flow_paused:
                self._flow_paused = False
                consumer.resume(consumer.assignment())
            # consume(n, t) waits until n messages or t has passed; poll returns on the first
            messages = consumer.consume(room, 0)
            if not messages:
                first = consumer.poll(timeout)
                if first is None:
                    return
                messages = [first]
                if room > 1:
                    messages.extend(consumer.consume(room - 1, 0))
        if messages:
            self._ingest(messages)

    def _ingest(self, messages: list[Message]) -> None:
        settle, topic = self._settle, self.topic  # one topic per subscription
        with self._lock:
            states, ready = self._states, []
            append = ready.append
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.fatal() or error.code() in AUTH:
                        raise KafkaException(error)
                    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise KafkaException(error)
                    log.info("%r: %s", self, error.str())
                    continue
                partition, offset = message.partition(), message.offset()
                state = states.get((topic, partition))
                if state is None or state.dead or offset < state.next_offset:
                    continue  # revoked, or already handed out
                state.order.append(offset)  # = state.add(offset), inlined (hot loop)
                state.next_offset = offset + 1
                # = record_headers(...), inlined (hot loop)
                raw_headers = message.headers()
                headers: dict[str, str] = (
                    {
                        name: value.decode("utf-8", "replace") if value else ""
                        for name, value in raw_headers
                    }
                    if raw_headers
                    else {}
                )
                kind, stamp = message.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE and stamp >= 0 and TIMESTAMP not in headers:
                    headers[TIMESTAMP] = str(stamp)
                key = message.key()
                value = message.value()
                append(
                    Delivery(
                        topic,
                        value if value is not None else b"",
                        headers,
                        key.decode("utf-8", "replace") if key is not None else None,
                        settle,
                        native_id=f"{topic}/{partition}/{offset}",
                        token=(state, offset),
                    )
                )
            self._accept_locked(ready)

    def _commit(self, consumer: Consumer, *, sync: bool) -> None:
        """Commit the commit points of partitions whose settled offsets moved on."""
        points = self._take_commits(sync=sync)
        if not points:
            return
        offsets = [TopicPartition(t, p, point) for (t, p), point in points.items()]
        if sync:
            consumer.commit(offsets=offsets, asynchronous=False)
        else:
            consumer.commit(offsets=offsets, asynchronous=True)

    def _on_committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            log.info("%r: offset commit failed (%s); it is retried with the next one", self, error)
            self._commit_failed([(tp.topic, tp.partition) for tp in partitions])

    # ------------------------------------------------------------------ rebalance callbacks

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Position the assigned partitions (committed offset, else the start of a new
        group, committed at once), then assign them. Consumer thread, inside ``poll``.

        If the broker does not answer the positioning (a coordinator failing over, a
        stalled broker), the partitions are assigned anyway, without explicit offsets:
        librdkafka then starts them at the group's committed offsets itself (else at
        ``auto_offset_reset``), and their records are accepted from the first one that
        arrives, so no partition stalls until the next rebalance. Only an authentication
        failure or a missing topic is raised (and fails the subscription).
        """
        keys = [(tp.topic, tp.partition) for tp in partitions]
        try:
            starts, unstored = self._positions(consumer, partitions)
        except Exception as exc:
            error = translate_error(exc, f"joining group {self.group!r} on {self.topic!r}")
            if isinstance(error, AuthenticationError | TopicNotFound):
                log.warning("%r: positioning the assignment failed: %s", self, error)
                self._fail(error)
                raise
            log.warning(
                "%r: positioning the assignment failed (%s); the partitions start where the "
                "group committed, as librdkafka finds it",
                self,
                error,
            )
            starts, unstored = {}, set()
        positioned = []
        with self._cond:
            for key in keys:
                start = starts.get(key)
                if start is None:
                    # start unknown: accept from the first record; commit nothing below it
                    state = PartitionState(key, key[1], 0, 0)
                    positioned.append(TopicPartition(key[0], key[1]))
                else:
                    state = PartitionState(key, key[1], start, None if key in unstored else start)
                    if key in unstored:
                        self._dirty.add(state)
                    positioned.append(TopicPartition(key[0], key[1], start))
                self._states[key] = state
        consumer.assign(positioned)
        if self._flow_paused and positioned:
            consumer.pause(positioned)
        with self._cond:
            self._ready = True
            self._cond.notify_all()

    def _positions(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> tuple[dict[Key, int], set[Key]]:
        """Where each partition starts (its committed offset, else the start of a new
        group, committed at once), and the partitions whose start is not stored yet (that
        commit failed). Raises what the broker's answer (or its absence) raises."""
        if not partitions:
            return {}, set()
        timeout = self._options.request_timeout_ms / 1000
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in consumer.committed(partitions, timeout=timeout)
        }
        fresh = [k for k, offset in committed.items() if offset < 0]
        starts = self._backend.start_offsets(fresh, earliest=self._earliest)
        unstored: set[Key] = set()
        if starts:
            try:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in starts.items()],
                    asynchronous=False,
                )
            except KafkaException as exc:  # the next commit stores it
                log.info("%r: could not store start offsets yet: %s", self, exc)
                unstored = set(starts)
        known = {k: offset for k, offset in committed.items() if offset >= 0}
        return {**known, **starts}, unstored

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(consumer, partitions, lost=False)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release(consumer, partitions, lost=True)

    def _release(self, consumer: Consumer, partitions: list[TopicPartition], *, lost: bool) -> None:
        """Stop handing out records of ``partitions``, wait up to ``revoke_timeout_ms`` for
        their in-flight deliveries, commit (unless ``lost``), let them go."""
        states, wait = self._revoke_begin(
            [(tp.topic, tp.partition) for tp in partitions], lost=lost
        )
        if states:
            deadline = time.monotonic() + wait
            with self._space:
                self._space_waiting = True
                while self._revoke_busy_locked(states):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._space.wait(min(remaining, 0.05))  # settles notify; recheck requeues
                self._space_waiting = False
            points = self._revoke_finish(states, wait)
            if points and not lost:
                try:
                    consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in points.items()],
                        asynchronous=False,
                    )
                except KafkaException as exc:
                    log.warning(
                        "%r: commit on rebalance failed (%s); expect redeliveries", self, exc
                    )
        try:
            consumer.unassign()
        except KafkaException as exc:
            log.debug("%r: unassign: %s", self, exc)

    @staticmethod
    def _revoke_busy_locked(states: list[PartitionState]) -> bool:
        return any(state.inflight for state in states)

    # ------------------------------------------------------------------ closing

    def _commit_now(self) -> None:
        if self._consumer is not None:
            self._commit(self._consumer, sync=True)

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
