"""The confluent-kafka (librdkafka) driver of the Kafka backend (``driver=confluent``).

Only the calls into confluent-kafka live here; options, header mapping, topic rules, offset
and rebalance bookkeeping are shared with the kafka-python driver (``common.py``). See the
package docstring for features, URL form and options.

Publishing: one ``Producer`` per backend (``acks=all``, idempotent), thread-safe. Its delivery
reports are served by the backend's own poll thread (``msgbus-kafka-producer``), which calls
``poll`` all the time, so a publish future resolves as soon as the broker acknowledges, with
nobody calling ``flush``. ``flush`` waits for librdkafka's queue to drain and for the poll
thread to finish serving the reports it took.

Consuming: every subscription owns a ``Consumer`` driven by its consumer thread or by an
idle worker holding its poll baton; librdkafka heartbeats on its own threads
(``confluent_consumer.py``). ``on_assign``, ``on_revoke`` and ``on_lost`` run on the polling
thread inside ``poll``/``consume``: an assignment is positioned
(committed offset, else the start of a new group, committed at once) before it is assigned,
or, when the broker does not answer that in time, assigned without explicit offsets so that
librdkafka starts it at the group's committed offsets; a revoke stops handing out records of
those partitions, waits up to ``revoke_timeout_ms`` for their in-flight handlers, commits
synchronously and lets them go; lost partitions are dropped without a commit.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from msgbus.backend import (
    PendingFuture,
    ResolvedFuture,
    Subscription,
)
from msgbus.errors import (
    AuthenticationError,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    MessageTooLarge,
    MsgBusError,
)
from msgbus.message import TIMESTAMP
from msgbus.url import BusURL

from .common import (
    HEADROOM,
    POLL_MS,
    KafkaBackend,
    KafkaOptions,
    topic_configs,
)
from .confluent_consumer import ConfluentSubscription
from .confluent_errors import STALE, ErrorLog, translate_error

__all__ = ["ConfluentKafkaBackend", "translate_error"]

log = logging.getLogger("msgbus.kafka")
driver_log = logging.getLogger("msgbus.kafka.librdkafka")

PURGE_REPORTS_TIMEOUT = 1.0
"""Seconds ``close`` waits for librdkafka to report the records it purged."""

# --------------------------------------------------------------------------- backend


class ConfluentKafkaBackend(KafkaBackend):
    """Kafka through confluent-kafka (see the package docstring for features, URL, options).

    ``publish`` and ``flush`` are thread-safe (one shared producer, its reports served by a
    poll thread). Each subscription has its own consumer and consumer thread. After ``close``
    every method raises :class:`~msgbus.BusClosed`.
    """

    driver_name = "confluent"
    extra = "kafka-confluent"

    def __init__(
        self, url: BusURL, options: KafkaOptions, producer: Producer, errors: ErrorLog
    ) -> None:
        """Use :meth:`from_url`; this only wires parts that are already connected."""
        super().__init__(url, options)
        self._producer = producer
        self._errors = errors
        self._admin: AdminClient | None = None
        self._probe: Consumer | None = None
        self._polling = True
        self._rounds = 0
        self._round_done = threading.Condition()
        self._poller = threading.Thread(target=self._serve, name="msgbus-kafka-producer")
        self._poller.daemon = True
        self._poller.start()

    @classmethod
    def _connect(cls, url: BusURL, options: KafkaOptions) -> ConfluentKafkaBackend:
        opts = options
        where = f"Kafka at {url.render()}"
        errors = ErrorLog(where)
        config = cls._client_config(url, opts, errors)
        config.update(
            {
                "acks": "all",
                "enable.idempotence": opts.idempotent,
                "linger.ms": opts.linger_ms,
                "batch.size": opts.batch_size,
                "compression.type": opts.compression,
                "message.max.bytes": opts.max_message_bytes + HEADROOM,
                "delivery.timeout.ms": opts.delivery_timeout_ms,
                "request.timeout.ms": opts.request_timeout_ms,
            }
        )
        try:
            producer = Producer(config)
        except KafkaException as exc:
            raise ConfigurationError(f"{where}: {exc.args[0].str()}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        cls._await_metadata(producer, errors, opts, where)
        return cls(url, opts, producer, errors)

    @staticmethod
    def _await_metadata(
        producer: Producer, errors: ErrorLog, opts: KafkaOptions, where: str
    ) -> None:
        """Wait up to ``connect_timeout_ms`` for the broker's metadata, in slices that serve
        ``error_cb`` between them: librdkafka retries a refused login until the timeout, but
        a refused login is final, so it raises :class:`~msgbus.AuthenticationError` at once;
        no answer in time raises :class:`~msgbus.BrokerUnavailable`."""
        deadline = time.monotonic() + opts.connect_timeout_ms / 1000
        while True:
            try:
                producer.list_topics(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                producer.poll(0)  # serves error_cb: was it the credentials?
                auth = errors.auth_failure
                if auth is not None:
                    raise AuthenticationError(
                        f"{where} refused the credentials (check the user name and password): "
                        f"{auth.str()}"
                    ) from None
                if time.monotonic() < deadline:
                    continue
                hint = (
                    "; check the user name and password too"
                    if opts.effective_security_protocol.startswith("SASL")
                    else ""
                )
                last = errors.last.str() if errors.last is not None else exc.args[0].str()
                raise BrokerUnavailable(
                    f"{where} did not answer within {opts.connect_timeout_ms} ms "
                    f"(connect_timeout_ms): {last}{hint}"
                ) from None

    @staticmethod
    def _client_config(url: BusURL, opts: KafkaOptions, errors: ErrorLog) -> dict[str, Any]:
        from .common import bootstrap_servers

        config = opts.librdkafka_config(bootstrap_servers(url))
        config["error_cb"] = errors
        config["logger"] = driver_log
        return config

    def _config(self) -> dict[str, Any]:
        return self._client_config(self.url, self.options, self._errors)

    def _translate(self, exc: BaseException, where: str) -> MsgBusError:
        return translate_error(exc, where)

    # ------------------------------------------------------------------ poll thread

    def _serve(self) -> None:
        """The poll thread: serve delivery reports (resolving publish futures) until closed."""
        poll = self._producer.poll
        timeout = POLL_MS / 1000
        while self._polling:
            try:
                poll(timeout)
            except Exception as exc:  # a callback must not end the thread
                log.error("%r: serving delivery reports: %s", self, exc)
            with self._round_done:
                self._rounds += 1
                self._round_done.notify_all()

    # ------------------------------------------------------------------ topics

    def _admin_client(self) -> AdminClient:
        """The lazily created admin client (call with ``_topics_lock`` held)."""
        if self._admin is None:
            self._admin = AdminClient(self._config())
        return self._admin

    def _topic_exists(self, topic: str) -> bool:
        metadata = self._admin_client().list_topics(timeout=self.options.request_timeout_ms / 1000)
        return topic in metadata.topics

    def _leaderless(self, topic: str) -> tuple[int, list[int]]:
        metadata = self._admin_client().list_topics(
            topic=topic, timeout=self.options.request_timeout_ms / 1000
        )
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            return 0, []
        leaderless = sorted(
            p.id for p in info.partitions.values() if p.error is not None or p.leader < 0
        )
        return len(info.partitions), leaderless

    def _broker_count(self) -> int:
        timeout = self.options.request_timeout_ms / 1000
        return len(self._admin_client().list_topics(timeout=timeout).brokers)

    def _create_topic(self, topic: str) -> None:
        opts, admin = self.options, self._admin_client()
        timeout = opts.request_timeout_ms / 1000
        replicas = self.replication_factor()

        def create(configs: dict[str, str]) -> None:
            new = NewTopic(
                topic,
                num_partitions=opts.partitions,
                replication_factor=replicas,
                config=configs,
            )
            admin.create_topics([new], request_timeout=timeout)[topic].result(timeout + 1)

        try:
            create(topic_configs(opts))
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.TOPIC_ALREADY_EXISTS:
                return
            if code not in (KafkaError.INVALID_CONFIG, KafkaError.POLICY_VIOLATION):
                raise
            log.info("creating topic %s with max.message.bytes failed (%s); plain", topic, exc)
            try:
                create({})
            except KafkaException as again:
                if again.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                return
        log.debug("created Kafka topic %s (%d partitions)", topic, opts.partitions)

    def _partition_key(self, topic: str, partition: int) -> Any:
        return (topic, partition)

    def _group_offsets(self, group_id: str, keys: list[Any]) -> dict[Any, int | None]:
        request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(t, p) for t, p in keys])
        timeout = self.options.request_timeout_ms / 1000
        futures = self._admin_client().list_consumer_group_offsets(
            [request], request_timeout=timeout
        )
        answer = futures[group_id].result(timeout + 1)
        out: dict[Any, int | None] = {key: None for key in keys}
        for tp in answer.topic_partitions or []:
            if tp.error is None and tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
        return out

    # ------------------------------------------------------------------ new groups

    def _probe_consumer(self) -> Consumer:
        """The group-less consumer ``start_offsets`` uses (call with ``_probe_lock`` held)."""
        if self._probe is None:
            config = self._config()
            config.update(
                {
                    "group.id": f"msgbus-probe-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "fetch.wait.max.ms": self.options.fetch_max_wait_ms,
                    "max.partition.fetch.bytes": 1,
                    "allow.auto.create.topics": False,
                }
            )
            self._probe = Consumer(config)
        return self._probe

    def _list_offsets(self, tps: list[Any], *, earliest: bool, timeout_ms: int) -> dict[Any, int]:
        probe = self._probe_consumer()
        deadline = time.monotonic() + timeout_ms / 1000
        out = {}
        for topic, partition in tps:
            while True:
                try:
                    low, high = probe.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=timeout_ms / 1000, cached=False
                    )
                    break
                except KafkaException as exc:
                    # the probe's metadata of a topic created a moment ago may name no leader,
                    # or an old one: refresh it and ask again (bounded)
                    if exc.args[0].code() not in STALE or time.monotonic() >= deadline:
                        raise
                    probe.list_topics(topic, timeout=timeout_ms / 1000)
            out[(topic, partition)] = low if earliest else high
        return out

    def _fetch_highwater(self, latest: Mapping[Any, int], timeout_ms: int) -> dict[Any, int]:
        probe = self._probe_consumer()
        probe.assign([TopicPartition(t, p, offset) for (t, p), offset in latest.items()])
        try:
            deadline = time.monotonic() + timeout_ms / 1000
            highwater: dict[Any, int] = {}
            while True:
                for t, p in latest:
                    _, high = probe.get_watermark_offsets(TopicPartition(t, p), cached=True)
                    if high >= 0:
                        highwater[(t, p)] = high
                if len(highwater) == len(latest):
                    return highwater
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"no Fetch response carried the high watermarks within {timeout_ms} ms"
                    )
                probe.consume(1, 0.05)  # fetches; the response carries the high watermark
        finally:
            probe.unassign()

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
        :class:`~msgbus.BrokerUnavailable` (librdkafka's queue stayed full for
        ``delivery_timeout_ms``) and :class:`~msgbus.BusClosed`.
        """
        if self._closed or len(body) > self._max_body or topic not in self._known_topics:
            self._check_publish(topic, body)
        return self._produce(topic, body, key, headers)

    def publish_many(
        self, topic: str, messages: Sequence[tuple[bytes, str | None, Mapping[str, str]]]
    ) -> list[Future[None]]:
        """Queue every ``(body, key, headers)`` in librdkafka's producer queue, in order; one
        future per message (see :meth:`msgbus.backend.Backend.publish_many`). The topic is
        checked once; a message refused at once gets a failed future, the rest are sent."""
        if self._closed or topic not in self._known_topics:
            self._check_publish(topic, b"")
        produce, limit = self._produce, self._max_body
        futures: list[Future[None]] = []
        for body, key, headers in messages:
            try:
                if len(body) > limit:
                    raise MessageTooLarge(
                        f"message of {len(body)} bytes exceeds max_message_bytes={limit}"
                    )
                futures.append(produce(topic, body, key, headers))
            except BusClosed:
                raise
            except MsgBusError as exc:
                futures.append(ResolvedFuture(exception=exc))
        return futures

    def _produce(
        self, topic: str, body: bytes, key: str | None, headers: Mapping[str, str]
    ) -> Future[None]:
        """Hand one checked record to librdkafka; its future resolves from the report."""
        wire: Any = dict(headers)  # str values: confluent-kafka encodes them as UTF-8
        # the publish time travels as the record's own timestamp, not as a header
        stamp = wire.pop(TIMESTAMP, None)
        timestamp_ms = int(stamp) if stamp is not None and stamp.isdigit() else 0  # 0: now
        if "\x00" in "".join(wire.values()):
            # librdkafka would cut a str value at its first NUL character: bytes instead
            wire = [(name, value.encode()) for name, value in wire.items()]
        if "\x00" in "".join(headers):  # names go to librdkafka as C strings
            raise ConfigurationError(
                "a header name holds a NUL character, which librdkafka cannot send"
            )
        future = _PublishFuture()
        try:
            self._producer.produce(
                topic, body, key, headers=wire, timestamp=timestamp_ms, on_delivery=future.reported
            )
        except BufferError:
            self._produce_when_room(topic, body, key, wire, timestamp_ms, future)
        except Exception as exc:
            raise translate_error(exc, f"publishing to Kafka topic {topic!r}") from exc
        return future

    def _produce_when_room(
        self,
        topic: str,
        body: bytes,
        key: str | None,
        wire: Any,
        timestamp_ms: int,
        future: _PublishFuture,
    ) -> None:
        """librdkafka's queue is full: wait for room (bounded by ``delivery_timeout_ms``)."""
        deadline = time.monotonic() + self.options.delivery_timeout_ms / 1000
        while True:
            if self._closed:
                raise BusClosed("the Kafka backend is closed")
            with self._round_done:  # the poll thread drains the queue; wait for a round
                self._round_done.wait(POLL_MS / 1000)
            try:
                self._producer.produce(
                    topic,
                    body,
                    key,
                    headers=wire,
                    timestamp=timestamp_ms,
                    on_delivery=future.reported,
                )
                return
            except BufferError as exc:
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(
                        f"publishing to Kafka topic {topic!r}: librdkafka's queue stayed full "
                        f"for {self.options.delivery_timeout_ms} ms"
                    ) from exc
            except Exception as exc:
                raise translate_error(exc, f"publishing to Kafka topic {topic!r}") from exc

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every publish so far has resolved; ``TimeoutError`` if not in time."""
        if self._closed:
            raise BusClosed("the Kafka backend is closed")
        self._flush(timeout)

    def _flush(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            raise TimeoutError(f"{left} Kafka publishes not confirmed within {timeout}s")
        # the queue is empty; the poll thread may still be running the callbacks of reports it
        # took: the end of its current round means they ran
        if not self._poller.is_alive():
            return
        with self._round_done:
            start = self._rounds
            while self._rounds == start and self._poller.is_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"Kafka publishes not confirmed within {timeout}s")
                self._round_done.wait(remaining)

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
            ConfluentSubscription(self, topic, group, prefetch, from_beginning)
        )

    def consumer_config(self, group_id: str | None) -> dict[str, Any]:
        """librdkafka settings of a subscription's consumer (``group_id`` None: private)."""
        opts = self.options
        config = self._config()
        config.update(
            {
                "group.id": group_id or f"msgbus-private-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": opts.auto_offset_reset,
                "session.timeout.ms": opts.session_timeout_ms,
                "heartbeat.interval.ms": opts.heartbeat_interval_ms,
                "fetch.wait.max.ms": opts.fetch_max_wait_ms,
                "max.poll.interval.ms": max(60000, 2 * opts.revoke_timeout_ms + 10000),
                "max.partition.fetch.bytes": max(1024 * 1024, opts.max_message_bytes + HEADROOM),
                "allow.auto.create.topics": False,
            }
        )
        return config

    # ------------------------------------------------------------------ closing

    def _close_clients(self, deadline: float | None) -> None:
        self._polling = False
        self._poller.join(POLL_MS / 1000 + 5)
        # what librdkafka still holds (the flush ran out of time, or a publish raced the close)
        # fails now with BusClosed instead of leaving its future pending for ever; flush serves
        # the purge reports
        self._producer.purge(in_queue=True, in_flight=True)
        self._producer.flush(PURGE_REPORTS_TIMEOUT)
        with self._probe_lock:
            if self._probe is not None:
                try:
                    self._probe.close()
                except Exception as exc:
                    log.debug("closing the probe consumer: %s", exc)
                self._probe = None
        with self._topics_lock:
            self._admin = None


class _PublishFuture(PendingFuture):
    """The future ``publish`` returns, resolved from its delivery report (poll thread).

    Nothing per future beyond a :class:`~msgbus.backend.PendingFuture`: the topic named in
    an error comes from the report's message."""

    def reported(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery report: acknowledged, or failed with ``error``."""
        if error is None:
            self.settle()
        else:
            topic = message.topic() if message is not None else None
            where = f"publishing to Kafka topic {topic!r}"
            self.settle(translate_error(error, where))
