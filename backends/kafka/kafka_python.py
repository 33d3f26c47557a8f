"""The kafka-python driver of the Kafka backend (``driver=kafka-python``, the default).

Only the calls into kafka-python live here; options, header mapping, topic rules, offset and
rebalance bookkeeping are shared with the confluent driver (``common.py``). See the package
docstring for features, URL form and options.

Publishing: one idempotent, batching ``KafkaProducer`` per backend; the future resolves from
the producer's callback on the broker's acknowledgement. Consuming: every subscription owns a
``KafkaConsumer`` driven by one thread at a time, its consumer thread or an idle worker that
polls it directly (the driver's consumer is not thread-safe, and must keep polling to take
part in rebalances); rebalance hooks are kafka-python's asynchronous
listener, run on its I/O thread, so heartbeats go on while a revoke waits for handlers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import kafka.errors as kerr
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from msgbus.backend import Delivery, PendingFuture, Subscription, settle_future
from msgbus.errors import (
    AuthenticationError,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    MessageTooLarge,
    MsgBusError,
    PublishError,
    TopicNotFound,
)
from msgbus.message import TIMESTAMP
from msgbus.url import BusURL

from .common import (
    HEADROOM,
    KafkaBackend,
    KafkaOptions,
    KafkaSubscriptionBase,
    PartitionState,
    bootstrap_servers,
    time_left,
    topic_configs,
)

__all__ = ["KafkaPythonBackend", "translate_error"]

log = logging.getLogger("msgbus.kafka")

# --------------------------------------------------------------------------- errors

_AUTH_ERRORS: tuple[type[BaseException], ...] = (
    kerr.SaslAuthenticationFailedError,
    kerr.AuthorizationError,
    kerr.UnsupportedSaslMechanismError,
    kerr.IllegalSaslStateError,
)
_SIZE_ERRORS: tuple[type[BaseException], ...] = (
    kerr.MessageSizeTooLargeError,
    kerr.RecordListTooLargeError,
)
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    kerr.KafkaTimeoutError,
    kerr.KafkaConnectionError,
    kerr.RequestTimedOutError,
    kerr.NodeNotReadyError,
    kerr.BrokerNotAvailableError,
    kerr.CoordinatorNotAvailableError,
    kerr.LeaderNotAvailableError,
    kerr.NotLeaderForPartitionError,
    kerr.NotEnoughReplicasError,
    kerr.NotEnoughReplicasAfterAppendError,
)


def translate_error(exc: BaseException, where: str) -> MsgBusError:
    """Map a kafka-python exception to the msgbus error tree (``where`` prefixes the text).

    Size errors become :class:`MessageTooLarge`, authentication and authorization failures
    :class:`AuthenticationError`, connection trouble and timeouts :class:`BrokerUnavailable`,
    unknown topics :class:`TopicNotFound`, anything else :class:`PublishError`. msgbus errors
    pass through unchanged. Driver texts never contain the SASL password.
    """
    if isinstance(exc, MsgBusError):
        return exc
    text = f"{where}: {type(exc).__name__}: {exc}"
    if isinstance(exc, _SIZE_ERRORS):
        return MessageTooLarge(text)
    if isinstance(exc, _AUTH_ERRORS):
        return AuthenticationError(text)
    if isinstance(exc, kerr.UnknownTopicOrPartitionError):
        return TopicNotFound(text)
    if isinstance(exc, (*_UNAVAILABLE_ERRORS, ConnectionError, OSError)):
        return BrokerUnavailable(text)
    return PublishError(text)


# --------------------------------------------------------------------------- backend


class KafkaPythonBackend(KafkaBackend):
    """Kafka through kafka-python (see the package docstring for features, URL and options).

    ``publish`` and ``flush`` are thread-safe (one shared producer). Each subscription has
    its own consumer and consumer thread. After ``close`` every method raises
    :class:`~msgbus.BusClosed`.
    """

    driver_name = "kafka-python"

    def __init__(self, url: BusURL, options: KafkaOptions, producer: KafkaProducer) -> None:
        """Use :meth:`from_url`; this only wires parts that are already connected."""
        super().__init__(url, options)
        self._producer = producer
        self._unconfirmed: set[_PublishFuture] = set()  # failed by close if still pending
        self._admin: KafkaAdminClient | None = None
        self._probe: KafkaConsumer | None = None

    @classmethod
    def _connect(cls, url: BusURL, options: KafkaOptions) -> KafkaPythonBackend:
        opts = options
        config = opts.client_config(bootstrap_servers(url))
        config.update(
            acks="all",
            enable_idempotence=opts.idempotent,
            linger_ms=opts.linger_ms,
            batch_size=opts.batch_size,
            compression_type=None if opts.compression == "none" else opts.compression,
            max_request_size=opts.max_message_bytes + HEADROOM,
            delivery_timeout_ms=opts.delivery_timeout_ms,
            max_block_ms=opts.connect_timeout_ms,
            allow_auto_create_topics=False,
        )
        where = f"Kafka at {url.render()}"
        try:
            producer = KafkaProducer(**config)
        except RuntimeError as exc:  # a compression library is missing
            raise ConfigurationError(f"kafka option 'compression': {exc}") from None
        except kerr.KafkaTimeoutError as exc:
            hint = (
                "; kafka-python reports refused SASL credentials the same way, so check the "
                "user name and password too"
                if opts.effective_security_protocol.startswith("SASL")
                else ""
            )
            raise BrokerUnavailable(
                f"{where} did not answer within {opts.connect_timeout_ms} ms "
                f"(connect_timeout_ms): {exc}{hint}"
            ) from exc
        except kerr.KafkaConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        except Exception as exc:
            raise translate_error(exc, f"connecting to {where}") from exc
        return cls(url, opts, producer)

    def _translate(self, exc: BaseException, where: str) -> MsgBusError:
        return translate_error(exc, where)

    # ------------------------------------------------------------------ topics

    def _admin_client(self) -> KafkaAdminClient:
        """The lazily created admin client (call with ``_topics_lock`` held)."""
        if self._admin is None:
            self._admin = KafkaAdminClient(**self.options.client_config(self._bootstrap))
        return self._admin

    def _topic_exists(self, topic: str) -> bool:
        return topic in set(self._admin_client().list_topics())

    def _leaderless(self, topic: str) -> tuple[int, list[int]]:
        described = self._admin_client().describe_topics([topic])
        info = described[0] if described else {}
        if info.get("error_code", 0) != 0:
            return 0, []
        partitions = info.get("partitions") or []
        leaderless = sorted(
            p["partition_index"]
            for p in partitions
            if p.get("error_code", 0) != 0 or p.get("leader_id", -1) < 0
        )
        return len(partitions), leaderless

    def _broker_count(self) -> int:
        return len(self._admin_client().describe_cluster().get("brokers") or ())

    def _create_topic(self, topic: str) -> None:
        opts, admin = self.options, self._admin_client()
        configs = topic_configs(opts)
        replicas = self.replication_factor()
        new = NewTopic(topic, opts.partitions, replicas, topic_configs=configs)
        try:
            admin.create_topics([new])
        except kerr.TopicAlreadyExistsError:
            return
        except (kerr.InvalidConfigurationError, kerr.PolicyViolationError) as exc:
            log.info(
                "creating topic %s with max.message.bytes failed (%s); retrying plain", topic, exc
            )
            try:
                admin.create_topics([NewTopic(topic, opts.partitions, replicas)])
            except kerr.TopicAlreadyExistsError:
                return
        log.debug("created Kafka topic %s (%d partitions)", topic, opts.partitions)

    def _partition_key(self, topic: str, partition: int) -> Any:
        return TopicPartition(topic, partition)

    def _group_offsets(self, group_id: str, keys: list[Any]) -> dict[Any, int | None]:
        offsets = self._admin_client().list_group_offsets({group_id: keys}).get(group_id, {})
        out: dict[Any, int | None] = {}
        for key in keys:
            meta = offsets.get(key)
            out[key] = meta.offset if meta is not None and meta.offset >= 0 else None
        return out

    # ------------------------------------------------------------------ new groups

    def _list_offsets(self, tps: list[Any], *, earliest: bool, timeout_ms: int) -> dict[Any, int]:
        probe = self._probe_consumer()
        if earliest:
            return dict(probe.beginning_offsets(tps, timeout_ms=timeout_ms))
        return dict(probe.end_offsets(tps, timeout_ms=timeout_ms))

    def _probe_consumer(self) -> KafkaConsumer:
        """The group-less consumer ``start_offsets`` uses (call with ``_probe_lock`` held)."""
        if self._probe is None:
            config = self.options.client_config(self._bootstrap)
            config.update(
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self.options.fetch_max_wait_ms,
                max_partition_fetch_bytes=1,
                allow_auto_create_topics=False,
                enable_incremental_fetch_sessions=False,
            )
            self._probe = KafkaConsumer(**config)
        return self._probe

    def _fetch_highwater(self, latest: Mapping[Any, int], timeout_ms: int) -> dict[Any, int]:
        probe = self._probe_consumer()
        tps = list(latest)
        probe.assign([])
        probe.assign(tps)
        try:
            for tp in tps:
                probe.seek(tp, latest[tp])
            deadline = time.monotonic() + timeout_ms / 1000
            while any(probe.highwater(tp) is None for tp in tps):
                if time.monotonic() > deadline:
                    raise kerr.KafkaTimeoutError(
                        f"no Fetch response carried the high watermarks within {timeout_ms} ms"
                    )
                probe.poll(timeout_ms=50, max_records=1)
            return {tp: probe.highwater(tp) or 0 for tp in tps}
        finally:
            probe.assign([])

    # ------------------------------------------------------------------ publishing

    def publish(
        self, topic: str, body: bytes, *, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        """Send one record (key = partition key, headers = record headers); thread-safe.

        The future resolves when every in-sync replica holds the record (``acks=all``), or
        fails with :class:`~msgbus.BrokerUnavailable` (not acknowledged within
        ``delivery_timeout_ms``), :class:`~msgbus.MessageTooLarge` or
        :class:`~msgbus.PublishError`. Raises at once :class:`~msgbus.MessageTooLarge` for a
        body above ``max_message_bytes``, :class:`~msgbus.TopicNotFound` (``auto_create`` off),
        :class:`~msgbus.BrokerUnavailable` (metadata not obtainable within
        ``connect_timeout_ms``) and :class:`~msgbus.BusClosed`.
        """
        if self._closed or len(body) > self._max_body or topic not in self._known_topics:
            self._check_publish(topic, body)
        timestamp_ms = None
        stamp = headers.get(TIMESTAMP)
        if stamp is not None and stamp.isdigit():
            # the publish time travels as the record's own timestamp, not as a header
            timestamp_ms = int(stamp)
            wire = [(name, value.encode()) for name, value in headers.items() if name != TIMESTAMP]
        else:
            wire = [(name, value.encode()) for name, value in headers.items()]
        try:
            sent = self._producer.send(
                topic,
                value=body,
                key=key.encode() if key is not None else None,
                headers=wire,
                timestamp_ms=timestamp_ms,
            )
        except kerr.IllegalStateError:
            raise BusClosed("the Kafka backend is closed") from None
        except Exception as exc:
            raise translate_error(exc, f"publishing to Kafka topic {topic!r}") from exc
        future = _PublishFuture(topic, self._unconfirmed)
        sent.add_callback(future.acked)
        sent.add_errback(future.failed)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every publish so far has resolved; ``TimeoutError`` if not in time."""
        if self._closed:
            raise BusClosed("the Kafka backend is closed")
        self._flush(timeout)

    def _flush(self, timeout: float | None) -> None:
        # kafka-python runs every record's callbacks before it marks the batch complete,
        # so once flush returns every future handed out by publish is resolved
        try:
            self._producer.flush(timeout=timeout)
        except kerr.KafkaTimeoutError as exc:
            raise TimeoutError(f"Kafka publishes not confirmed within {timeout}s") from exc

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self, topic: str, group: str | None, *, prefetch: int, from_beginning: bool = False
    ) -> Subscription:
        """Join ``group`` on ``topic`` and return once its partitions are positioned.

        Creates the topic if needed (or raises :class:`~msgbus.TopicNotFound`). ``group=None``
        gives a private, group-less member owning every partition. Raises
        :class:`~msgbus.BrokerUnavailable` if the group is not joined within
        ``subscribe_timeout_ms``. Thread-safe.
        """
        self._check_subscribe(topic, prefetch)
        return self._start_subscription(
            _KafkaSubscription(self, topic, group, prefetch, from_beginning)
        )

    def consumer_config(self, group: str | None) -> dict[str, Any]:
        """kafka-python settings of a subscription's consumer."""
        opts = self.options
        config = opts.client_config(self._bootstrap)
        config.update(
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=opts.auto_offset_reset,
            session_timeout_ms=opts.session_timeout_ms,
            heartbeat_interval_ms=opts.heartbeat_interval_ms,
            fetch_max_wait_ms=opts.fetch_max_wait_ms,
            max_poll_interval_ms=max(60000, 2 * opts.revoke_timeout_ms + 10000),
            max_partition_fetch_bytes=max(1024 * 1024, opts.max_message_bytes + HEADROOM),
            allow_auto_create_topics=False,
        )
        return config

    # ------------------------------------------------------------------ closing

    def _close_clients(self, deadline: float | None) -> None:
        try:
            self._producer.close(timeout=time_left(deadline))
        except Exception as exc:  # closing must not raise driver errors
            log.warning("closing the Kafka producer: %s", exc)
        # kafka-python leaves the futures of records it never got an answer for pending when
        # the broker is down: they fail now (the broker may still hold some: at-least-once)
        for future in list(self._unconfirmed):
            future.closed_unconfirmed()
        with self._probe_lock:
            if self._probe is not None:
                _quietly_close(self._probe)
                self._probe = None
        with self._topics_lock:
            if self._admin is not None:
                _quietly_close(self._admin)
                self._admin = None


class _PublishFuture(PendingFuture):
    """The future ``publish`` returns, resolved by the producer's callbacks (sender thread).

    A :class:`~msgbus.backend.PendingFuture`: no Condition unless someone waits on it. Its
    bound methods are the callbacks (cheaper per record than ``add_both`` with arguments).
    """

    def __init__(self, topic: str, unconfirmed: set[_PublishFuture]) -> None:
        super().__init__()
        self._topic = topic
        self._unconfirmed = unconfirmed
        unconfirmed.add(self)

    def acked(self, metadata: Any) -> None:
        """Every in-sync replica holds the record."""
        self._unconfirmed.discard(self)
        settle_future(self, None)

    def failed(self, error: BaseException) -> None:
        """The broker refused the record, or did not acknowledge it in time."""
        self._unconfirmed.discard(self)
        settle_future(self, translate_error(error, f"publishing to Kafka topic {self._topic!r}"))

    def closed_unconfirmed(self) -> None:
        """The backend closed before the broker answered for the record."""
        self._unconfirmed.discard(self)
        settle_future(
            self,
            BusClosed(
                f"publishing to Kafka topic {self._topic!r}: "
                "the backend closed before the broker confirmed it"
            ),
        )


def _quietly_close(client: Any) -> None:
    try:
        client.close()
    except Exception as exc:
        log.debug("closing %s: %s", type(client).__name__, exc)


class _Listener(AsyncConsumerRebalanceListener):
    """Rebalance hooks; kafka-python awaits them on its I/O thread, so heartbeats go on."""

    def __init__(self, sub: _KafkaSubscription) -> None:
        self._sub = sub

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sub.release(revoked, lost=False)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        await self._sub.release(lost, lost=True)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._sub.assigned(assigned)


class _KafkaSubscription(KafkaSubscriptionBase):
    """A member of ``group`` on ``topic`` (see the package docstring).

    Whoever holds the poll baton (the ``msgbus-kafka ...`` thread, or an idle worker in
    ``receive``: see :class:`~.subscription.KafkaSubscriptionBase`) calls into the
    ``KafkaConsumer``, one thread at a time (it is not thread-safe): it polls, positions new
    partitions, commits. The rebalance listener runs on kafka-python's I/O thread.
    ``ack``/``nack`` (any thread) only update offset bookkeeping under a lock.
    """

    _backend: KafkaPythonBackend
    _consumer: KafkaConsumer | None

    # ------------------------------------------------------------------ start

    def _new_consumer(self, group_id: str | None, where: str) -> KafkaConsumer:
        try:
            return KafkaConsumer(**self._backend.consumer_config(group_id))
        except kerr.KafkaTimeoutError as exc:
            raise BrokerUnavailable(f"{where}: broker did not answer: {exc}") from exc

    def _join(self, consumer: KafkaConsumer) -> None:
        consumer.subscribe([self.topic], listener=_Listener(self))
        self._await_partition_metadata(consumer)

    def _await_partition_metadata(self, consumer: KafkaConsumer) -> None:
        """Refresh ``consumer``'s metadata until it lists every partition of the topic.

        Called after ``subscribe`` and before the first poll (which joins the group). A
        member that joins before its own metadata lists the topic's partitions gets an empty
        assignment (Apache Kafka, a topic created a moment ago); and a group leader whose
        metadata changes between join and assignment rejoins at once, which kafka-python 3.0
        can abandon half-way (the new assignment is never applied). A metadata response
        received after ``subscribe`` fixes both. Bounded by ``subscribe_timeout_ms`` (then
        :class:`~msgbus.BrokerUnavailable`).
        """
        expected = self._backend._partition_counts.get(self.topic, 1)
        limit_ms = self._options.subscribe_timeout_ms
        deadline = time.monotonic() + limit_ms / 1000
        while True:
            consumer.topics()  # always a Metadata round trip, which updates the consumer
            if len(consumer.partitions_for_topic(self.topic)) >= expected:
                return
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"Kafka topic {self.topic!r}: the consumer saw no metadata for its "
                    f"{expected} partitions within {limit_ms} ms (subscribe_timeout_ms)"
                )
            time.sleep(0.02)  # between metadata round trips; no event to wait on

    def _assign_all(self, consumer: KafkaConsumer) -> None:
        """Private member: own every partition, positioned at the start (no group)."""
        self._await_partition_metadata(consumer)
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise TopicNotFound(f"Kafka topic {self.topic!r} has no partitions")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        starts = self._backend.start_offsets(tps, earliest=self._earliest)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
            self._states[tp] = PartitionState(tp, tp.partition, starts[tp], starts[tp])
        self._ready = True

    # ------------------------------------------------------------------ consumer thread

    def _step(self, timeout: float) -> None:
        consumer = self._consumer
        assert consumer is not None
        if self._pending_init:
            self._init_partitions(consumer)
        self._commit(consumer, sync=False)
        self._poll(consumer, timeout)

    def _poll(self, consumer: KafkaConsumer, timeout: float) -> None:
        with self._lock:
            room = self._room()
        if room <= 0:
            if not self._flow_paused:
                self._flow_paused = True
                consumer.pause(*consumer.assignment())
            self._wait_for_space()
            consumer.poll(timeout_ms=0)  # keeps group membership and rebalances going
            return
        if self._flow_paused:
            self._flow_paused = False
            with self._lock:
                waiting = set(self._pending_init)
            consumer.resume(*(consumer.assignment() - waiting))
        records = consumer.poll(timeout_ms=int(timeout * 1000), max_records=room)
        if records:
            self._ingest(records)

    def _ingest(self, records: Mapping[TopicPartition, list[Any]]) -> None:
        settle = self._settle
        with self._lock:
            states, ready = self._states, []
            append = ready.append
            for tp, batch in records.items():
                state = states.get(tp)
                if state is None or state.dead:
                    continue  # revoked or not positioned yet: it will be fetched again
                topic = tp.topic
                where = f"{topic}/{tp.partition}/"
                order_append = state.order.append
                next_offset = state.next_offset
                for record in batch:
                    offset = record.offset
                    if offset < next_offset:
                        continue
                    order_append(offset)  # = state.add(offset), inlined (hot loop)
                    next_offset = offset + 1
                    # = record_headers(...), inlined (hot loop)
                    raw_headers = record.headers
                    headers: dict[str, str] = (
                        {
                            name: value.decode("utf-8", "replace") if value else ""
                            for name, value in raw_headers
                        }
                        if raw_headers
                        else {}
                    )
                    stamp = record.timestamp
                    if stamp is not None and stamp >= 0 and TIMESTAMP not in headers:
                        headers[TIMESTAMP] = str(stamp)
                    key = record.key
                    value = record.value
                    append(
                        Delivery(
                            topic,
                            value if value is not None else b"",
                            headers,
                            key.decode("utf-8", "replace") if key is not None else None,
                            settle,
                            native_id=where + str(offset),
                            token=(state, offset),
                        )
                    )
                    state.next_offset = next_offset
            self._accept_locked(ready)

    def _init_partitions(self, consumer: KafkaConsumer) -> None:
        """Position newly assigned partitions: committed offset, else start and commit it."""
        with self._lock:
            pending = set(self._pending_init)
        assignment = consumer.assignment()
        tps = sorted(tp for tp in pending if tp in assignment)
        committed: dict[TopicPartition, int | None] = {tp: consumer.committed(tp) for tp in tps}
        fresh = [tp for tp, offset in committed.items() if offset is None]
        starts = self._backend.start_offsets(fresh, earliest=self._earliest)
        stored = False
        if starts:
            try:
                consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in starts.items()})
                stored = True
            except kerr.KafkaError as exc:  # a rebalance began: the next commit stores it
                log.info("%r: could not store start offsets yet: %s", self, exc)
        with self._cond:
            for tp in tps:
                offset = committed[tp]
                if offset is None:
                    start = starts[tp]
                    state = PartitionState(tp, tp.partition, start, start if stored else None)
                    if not stored:
                        self._dirty.add(state)
                else:
                    start = offset
                    state = PartitionState(tp, tp.partition, start, start)
                consumer.seek(tp, start)
                self._states[tp] = state
            self._pending_init.difference_update(pending)
            if not self._flow_paused and tps:
                consumer.resume(*tps)
            self._ready = True
            self._cond.notify_all()

    def _commit(self, consumer: KafkaConsumer, *, sync: bool) -> None:
        """Commit the commit points of partitions whose settled offsets moved on."""
        points = self._take_commits(sync=sync)
        if not points:
            return
        offsets = {tp: OffsetAndMetadata(point, "", -1) for tp, point in points.items()}
        if sync:
            consumer.commit(offsets, timeout_ms=self._options.request_timeout_ms)
        else:
            consumer.commit_async(offsets, callback=self._on_committed)

    def _on_committed(self, offsets: Mapping[TopicPartition, Any], result: Any) -> None:
        if isinstance(result, BaseException):
            log.info("%r: offset commit failed (%s); it is retried with the next one", self, result)
            self._commit_failed(offsets)

    # ------------------------------------------------------------------ rebalance hooks

    def assigned(self, partitions: set[TopicPartition]) -> None:
        """Rebalance hook (I/O thread): park new partitions until the consumer thread
        positions them."""
        consumer = self._consumer
        assert consumer is not None
        with self._cond:
            fresh = {tp for tp in partitions if tp not in self._states}
            self._pending_init.update(fresh)
            if not fresh:
                self._ready = True
                self._cond.notify_all()
        if fresh:
            consumer.pause(*fresh)

    async def release(self, partitions: set[TopicPartition], *, lost: bool) -> None:
        """Rebalance hook (I/O thread): stop handing out records of ``partitions``, wait up
        to ``revoke_timeout_ms`` for their in-flight deliveries, commit, let them go.

        When the partitions are ``lost`` (the member was evicted), nothing is committed:
        another member owns them already.
        """
        consumer = self._consumer
        assert consumer is not None
        states, wait = self._revoke_begin(partitions, lost=lost)
        if not states:
            return
        deadline = time.monotonic() + wait
        net = getattr(consumer, "_net", None)
        while self._revoke_busy(states) and time.monotonic() < deadline:
            if net is not None:
                await net.sleep(0.005)
            else:
                time.sleep(0.005)  # pragma: no cover - kafka-python without an I/O loop
        points = self._revoke_finish(states, wait)
        if lost or not points:
            return
        offsets = {tp: OffsetAndMetadata(point, "", -1) for tp, point in points.items()}
        try:
            await consumer.commit_async(offsets)
        except Exception as exc:
            log.warning("%r: commit on rebalance failed (%s); expect redeliveries", self, exc)

    # ------------------------------------------------------------------ closing

    def _commit_now(self) -> None:
        if self._consumer is not None:
            self._commit(self._consumer, sync=True)

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False, timeout_ms=self._options.request_timeout_ms)
