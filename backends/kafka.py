"""Apache Kafka (the reference broker), and Kafka-protocol brokers such as tansu, through
kafka-python (>= 3.0).

Features
    - ``consumer_groups``: msgbus group G on topic T is the Kafka consumer group ``G:T`` (see
      ``group_id_template``); its members share the topic's partitions.
    - ``per_key_order``: the key is the Kafka record key, so one key lives in one partition
      and reaches one member at a time, in publish order. Around a rebalance or a crash a
      message may be delivered again (at-least-once). Different partitions (so different
      keys) have no order between them.
    - ``persistent``: a publish resolves only on the acknowledgement of every in-sync replica
      (``acks=all``). Whether that survives a broker restart is the broker's business:
      Apache Kafka writes a log; tansu with ``memory://`` storage loses everything.
    - ``requeue``: ``nack(requeue=True)`` hands the record out again from this member's buffer,
      marked redelivered; its offset stays uncommitted until it is acknowledged, so a crash
      redelivers it to another member.
    - ``replay`` (``from_beginning``), ``cross_process``; no native dead-lettering (the bus
      publishes to ``<topic>.dlq``); ``max_message_bytes`` is the option of that name.

    Publishing: one idempotent, batching producer per backend; the future resolves on the
    broker's acknowledgement. Topics are created on first use (publish or subscribe) with
    ``partitions`` partitions, or must exist (``auto_create=false``).

    Consuming: every subscription owns a ``KafkaConsumer`` driven by its own thread (the
    driver's consumer is not thread-safe, and must keep polling to take part in rebalances).
    Offsets are committed for settled deliveries only, up to the first unsettled one of each
    partition. On a rebalance this member stops handing out records of the partitions it
    loses, waits up to ``revoke_timeout_ms`` for their in-flight deliveries, commits, and
    lets them go. A new group starts at the end of each partition: ListOffsets, verified
    against a Fetch high watermark until the broker has shown it answers ListOffsets right
    (Apache Kafka does, tansu does not; see ``docs/kafka.md``), committed at once, so a
    message published after ``subscribe`` returns reaches the group. Before joining, the
    backend waits (bounded) until the topic's partitions have leaders and the member's own
    metadata lists them, so a topic created a moment ago works too. A private subscription
    (``group=None``) uses no consumer group: one member owns every partition the topic has
    when it subscribes, starting at the end, and commits nothing.

URL form
    ``kafka://host[:port][,host[:port]...][?option=value&...]``; the port defaults to 9092.
    ``kafka://user:password@host:9092`` authenticates with SASL (``security_protocol`` then
    defaults to ``sasl_plaintext``, the mechanism to ``plain``). The password is never logged,
    shown in a repr or put in an error message.

Options (URL query or keyword; keywords win)
    - ``client_id`` (str, "msgbus").
    - ``security_protocol``: plaintext, ssl, sasl_plaintext, sasl_ssl (default plaintext, or
      sasl_plaintext with a user in the URL); ``sasl_mechanism``: plain, scram-sha-256,
      scram-sha-512 ("plain"); ``username`` / ``password`` (normally from the URL);
      ``ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile`` (PEM file paths);
      ``ssl_check_hostname`` (true).
    - ``compression``: none, gzip, snappy, lz4, zstd ("none"; all but gzip need their Python
      package, for producers and consumers alike).
    - ``auto_offset_reset``: latest, earliest: where a new group starts ("latest").
    - ``session_timeout_ms`` (6000), ``heartbeat_interval_ms`` (1000): short, so a dead member
      is noticed quickly (a tansu group join takes about 3 s whatever they are).
    - ``fetch_max_wait_ms`` (10): tansu's fetch long-poll always waits this long.
    - ``linger_ms`` (0), ``batch_size`` (262144): producer batching; records sent while a
      request is in flight are batched anyway. Below 256 KiB a burst queues a second batch
      per partition, and kafka-python then wakes its sender thread on every record (see
      docs/kafka.md).
    - ``partitions`` (3), ``replication_factor`` (1): for topics this backend creates;
      ``auto_create`` (true): create topics on first use, else raise ``TopicNotFound``.
    - ``max_message_bytes`` (4 MiB): larger bodies raise ``MessageTooLarge`` at once; created
      topics get a matching ``max.message.bytes``.
    - ``idempotent`` (true): idempotent producer where the broker supports it.
    - ``request_timeout_ms`` (15000); ``connect_timeout`` (seconds, as on every backend) or
      its alias ``connect_timeout_ms`` (10000): an unreachable broker raises
      ``BrokerUnavailable`` after this long; ``delivery_timeout_ms`` (120000, as Kafka's own
      producer): the producer retries with backoff until then, after which the publish
      future fails with ``BrokerUnavailable``.
    - ``revoke_timeout_ms`` (5000): how long a rebalance waits for in-flight deliveries of a
      partition this member loses; ``subscribe_timeout_ms`` (60000): bound on joining.
    - ``group_id_template`` ("{group}:{topic}"): the Kafka group id of a msgbus group on a
      topic. "{group}" maps groups one to one, but then a group subscribed to several topics
      is one Kafka group, and a member joining on any of them stops consumption on all
      while the group rebalances.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

import kafka.errors as kerr
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from msgbus.backend import (
    Backend,
    Delivery,
    Features,
    PendingFuture,
    Subscription,
    parse_options,
    settle_future,
)
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

__all__ = ["KafkaBackend", "KafkaOptions"]

log = logging.getLogger("msgbus.kafka")

DEFAULT_PORT = 9092
"""Port used for a host of the URL that names none."""

_HEADROOM = 64 * 1024
"""Bytes allowed on top of ``max_message_bytes`` for the key, headers and batch framing."""

_POLL_MS = 100
"""Longest a consumer thread stays inside ``KafkaConsumer.poll`` (bounds close latency)."""


@dataclass(frozen=True)
class KafkaOptions:
    """Options of the Kafka backend; see the module docstring for meanings and defaults."""

    client_id: str = "msgbus"
    security_protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] | None = None
    sasl_mechanism: Literal["plain", "scram-sha-256", "scram-sha-512"] = "plain"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    auto_offset_reset: Literal["latest", "earliest"] = "latest"
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    fetch_max_wait_ms: int = 10
    linger_ms: int = 0
    batch_size: int = 262144
    partitions: int = 3
    replication_factor: int = 1
    auto_create: bool = True
    max_message_bytes: int = 4 * 1024 * 1024
    idempotent: bool = True
    request_timeout_ms: int = 15000
    connect_timeout_ms: int = 10000
    #: seconds, the name every backend shares; when set it replaces ``connect_timeout_ms``
    connect_timeout: float | None = None
    delivery_timeout_ms: int = 120000
    revoke_timeout_ms: int = 5000
    subscribe_timeout_ms: int = 60000
    group_id_template: str = "{group}:{topic}"

    def __post_init__(self) -> None:
        if self.connect_timeout is not None and self.connect_timeout > 0:
            object.__setattr__(
                self, "connect_timeout_ms", max(1, round(self.connect_timeout * 1000))
            )

    def group_id(self, group: str, topic: str) -> str:
        """The Kafka consumer group id of msgbus group ``group`` on ``topic``."""
        return self.group_id_template.format(group=group, topic=topic)

    def validate(self) -> None:
        """Raise :class:`ConfigurationError` naming the first option with an impossible value."""
        positive = (
            "session_timeout_ms",
            "heartbeat_interval_ms",
            "batch_size",
            "partitions",
            "replication_factor",
            "max_message_bytes",
            "request_timeout_ms",
            "connect_timeout_ms",
            "delivery_timeout_ms",
            "subscribe_timeout_ms",
        )
        if self.connect_timeout is not None and not self.connect_timeout > 0:
            raise ConfigurationError("kafka option 'connect_timeout' must be positive")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"kafka option {name!r} must be positive")
        for name in ("fetch_max_wait_ms", "linger_ms", "revoke_timeout_ms"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"kafka option {name!r} must not be negative")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ConfigurationError(
                "kafka option 'heartbeat_interval_ms' must be smaller than 'session_timeout_ms'"
            )
        if self.fetch_max_wait_ms >= self.request_timeout_ms:
            raise ConfigurationError(
                "kafka option 'fetch_max_wait_ms' must be smaller than 'request_timeout_ms'"
            )
        if self.delivery_timeout_ms < self.linger_ms + self.request_timeout_ms:
            raise ConfigurationError(
                "kafka option 'delivery_timeout_ms' must be at least linger_ms + request_timeout_ms"
            )
        if not self.client_id:
            raise ConfigurationError("kafka option 'client_id' must not be empty")
        try:
            rendered = self.group_id("G", "T")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigurationError(
                f"kafka option 'group_id_template' may use {{group}} and {{topic}} only: {exc}"
            ) from None
        if "{group}" not in self.group_id_template or not rendered:
            raise ConfigurationError("kafka option 'group_id_template' must contain {group}")
        if self.password is not None and self.username is None:
            raise ConfigurationError("a Kafka password needs a user name (kafka://USER:PASS@...)")

    @property
    def effective_security_protocol(self) -> str:
        """The protocol handed to kafka-python (upper case)."""
        if self.security_protocol is not None:
            return self.security_protocol.upper()
        return "SASL_PLAINTEXT" if self.username is not None else "PLAINTEXT"

    def client_config(self, bootstrap: list[str]) -> dict[str, Any]:
        """Connection settings shared by the producer, consumers and the admin client."""
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.connect_timeout_ms,
            "security_protocol": self.effective_security_protocol,
        }
        if config["security_protocol"].startswith("SASL"):
            config["sasl_mechanism"] = self.sasl_mechanism.upper()
            config["sasl_plain_username"] = self.username
            config["sasl_plain_password"] = self.password
        if config["security_protocol"].endswith("SSL"):
            config["ssl_cafile"] = self.ssl_cafile
            config["ssl_certfile"] = self.ssl_certfile
            config["ssl_keyfile"] = self.ssl_keyfile
            config["ssl_check_hostname"] = self.ssl_check_hostname
        return config


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


class KafkaBackend(Backend):
    """Kafka through kafka-python (see the module docstring for features, URL and options).

    ``publish`` and ``flush`` are thread-safe (one shared producer). Each subscription has
    its own consumer and consumer thread. After ``close`` every method raises
    :class:`~msgbus.BusClosed`.
    """

    schemes = ("kafka",)
    features = Features(
        consumer_groups=True,
        per_key_order=True,
        persistent=True,
        native_dead_letter=False,
        requeue=True,
        replay=True,
        cross_process=True,
        max_message_bytes=KafkaOptions.max_message_bytes,
    )
    extra = "kafka"

    def __init__(self, url: BusURL, options: KafkaOptions, producer: KafkaProducer) -> None:
        """Use :meth:`from_url`; this only wires parts that are already connected."""
        self.url = url
        self.options = options
        self.features = Features(
            consumer_groups=True,
            per_key_order=True,
            persistent=True,
            native_dead_letter=False,
            requeue=True,
            replay=True,
            cross_process=True,
            max_message_bytes=options.max_message_bytes,
        )
        self._bootstrap = bootstrap_servers(url)
        self._producer = producer
        self._closed = False
        self._lock = threading.Lock()
        self._topics_lock = threading.Lock()
        self._known_topics: set[str] = set()
        self._admin: KafkaAdminClient | None = None
        self._partition_counts: dict[str, int] = {}
        self._probe: KafkaConsumer | None = None
        self._probe_lock = threading.Lock()
        self.end_offsets_reliable: bool | None = None
        """What this broker's ListOffsets "latest" proved to be: True once it matched a Fetch
        high watermark on a partition holding records (Apache Kafka), False once it fell short
        of one (tansu), None until a partition with records was probed."""
        self._subscriptions: set[_KafkaSubscription] = set()
        self._max_body = options.max_message_bytes

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_url(cls, url: BusURL, **options: Any) -> KafkaBackend:
        """Connect a producer to the brokers of ``url``.

        Raises :class:`~msgbus.UnknownOption` (listing the valid ones) or
        :class:`~msgbus.ConfigurationError` for bad options, :class:`~msgbus.BrokerUnavailable`
        when no broker answers within ``connect_timeout_ms`` and
        :class:`~msgbus.AuthenticationError` when the broker refuses the credentials.
        """
        if url.path:
            raise ConfigurationError(
                f"a Kafka URL has no path: {url.render()!r} (kafka://host:port[,host:port])"
            )
        url_fields: dict[str, Any] = {}
        if url.username is not None:
            url_fields["username"] = url.username
        if url.password is not None:
            url_fields["password"] = url.password
        opts = parse_options(KafkaOptions, url, options, backend="kafka", url_fields=url_fields)
        opts.validate()
        bootstrap = bootstrap_servers(url)
        config = opts.client_config(bootstrap)
        config.update(
            acks="all",
            enable_idempotence=opts.idempotent,
            linger_ms=opts.linger_ms,
            batch_size=opts.batch_size,
            compression_type=None if opts.compression == "none" else opts.compression,
            max_request_size=opts.max_message_bytes + _HEADROOM,
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

    def describe(self) -> str:
        """``Kafka protocol at kafka://host:port (kafka-python)``; never shows a password."""
        return f"Kafka protocol at {self.url.render()} (kafka-python)"

    def __repr__(self) -> str:
        return f"<KafkaBackend {self.url.render()}>"

    def delivery_attributes(self, delivery: Delivery) -> Mapping[str, Any] | None:
        """The record's partition and offset, as OpenTelemetry messaging attributes."""
        token = delivery.token
        if not isinstance(token, tuple) or not isinstance(token[0], _PartitionState):
            return None
        return {
            "messaging.destination.partition.id": str(token[0].tp.partition),
            "messaging.kafka.offset": token[1],
        }

    # ------------------------------------------------------------------ topics

    def _admin_client(self) -> KafkaAdminClient:
        """The lazily created admin client (call with ``_topics_lock`` held)."""
        if self._admin is None:
            self._admin = KafkaAdminClient(**self.options.client_config(self._bootstrap))
        return self._admin

    def ensure_topic(self, topic: str) -> None:
        """Make sure ``topic`` exists: create it (``auto_create``) or raise ``TopicNotFound``.

        Thread-safe; remembers topics it has seen, so later calls cost nothing. Raises
        :class:`~msgbus.BrokerUnavailable` if the broker cannot be asked.
        """
        if topic in self._known_topics:
            return
        opts = self.options
        with self._topics_lock:
            if topic in self._known_topics:
                return
            if self._closed:
                raise BusClosed("the Kafka backend is closed")
            try:
                admin = self._admin_client()
                if opts.auto_create:
                    self._create_topic(admin, topic)
                elif topic not in set(admin.list_topics()):
                    raise TopicNotFound(
                        f"Kafka topic {topic!r} does not exist and auto_create is false"
                    )
                self._partition_counts[topic] = self._await_leaders(admin, topic)
            except MsgBusError:
                raise
            except Exception as exc:
                raise translate_error(exc, f"checking Kafka topic {topic!r}") from exc
            self._known_topics.add(topic)

    def _await_leaders(self, admin: KafkaAdminClient, topic: str) -> int:
        """Wait until every partition of ``topic`` has a leader; return the partition count.

        Apache Kafka answers a topic it has just created with no partitions, or partitions
        without a leader, for a moment (tansu never does). Waits up to ``connect_timeout_ms``,
        then raises :class:`~msgbus.BrokerUnavailable` naming the partitions still leaderless.
        """
        limit_ms = self.options.connect_timeout_ms
        deadline = time.monotonic() + limit_ms / 1000
        delay = 0.01
        while True:
            described = admin.describe_topics([topic])
            info = described[0] if described else {}
            partitions = info.get("partitions") or []
            leaderless = sorted(
                p["partition_index"]
                for p in partitions
                if p.get("error_code", 0) != 0 or p.get("leader_id", -1) < 0
            )
            if partitions and not leaderless and info.get("error_code", 0) == 0:
                return len(partitions)
            if time.monotonic() >= deadline:
                what = f"partitions {leaderless} have no leader" if partitions else "no partitions"
                raise BrokerUnavailable(
                    f"Kafka topic {topic!r}: {what} after {limit_ms} ms (connect_timeout_ms)"
                )
            time.sleep(delay)  # bounded poll of broker state: there is no event to wait on
            delay = min(0.2, delay * 2)

    def _create_topic(self, admin: KafkaAdminClient, topic: str) -> None:
        opts = self.options
        configs = {"max.message.bytes": str(opts.max_message_bytes + _HEADROOM)}
        new = NewTopic(topic, opts.partitions, opts.replication_factor, topic_configs=configs)
        try:
            admin.create_topics([new])
        except kerr.TopicAlreadyExistsError:
            return
        except (kerr.InvalidConfigurationError, kerr.PolicyViolationError) as exc:
            log.info(
                "creating topic %s with max.message.bytes failed (%s); retrying plain", topic, exc
            )
            try:
                admin.create_topics([NewTopic(topic, opts.partitions, opts.replication_factor)])
            except kerr.TopicAlreadyExistsError:
                return
        log.debug("created Kafka topic %s (%d partitions)", topic, opts.partitions)

    def start_offsets(
        self, partitions: Iterable[TopicPartition], *, earliest: bool
    ) -> dict[TopicPartition, int]:
        """Where a new group starts on each partition: its beginning, or its true end.

        The end is ListOffsets "latest", which Apache Kafka answers right and tansu does not
        (it answers 1 for a partition holding hundreds of records). Until the broker has
        shown which kind it is (:attr:`end_offsets_reliable`), and whenever it has shown it is
        the wrong kind, the end is checked against the high watermark of a Fetch at that
        offset and the larger taken. The probe fetches without an incremental fetch session,
        whose responses leave out unchanged partitions (and so their high watermark). Uses a
        private group-less consumer; thread-safe. Raises :class:`~msgbus.BrokerUnavailable`
        when the broker does not answer within ``request_timeout_ms``.
        """
        tps = sorted(set(partitions))
        if not tps:
            return {}
        timeout_ms = self.options.request_timeout_ms
        with self._probe_lock:
            try:
                probe = self._probe_consumer()
                if earliest:
                    return dict(probe.beginning_offsets(tps, timeout_ms=timeout_ms))
                latest = dict(probe.end_offsets(tps, timeout_ms=timeout_ms))
                if self.end_offsets_reliable:
                    return latest
                highwater = self._fetch_highwater(probe, latest, timeout_ms)
                self._learn_end_offsets(latest, highwater)
                return {tp: max(latest[tp], highwater[tp]) for tp in tps}
            except Exception as exc:
                raise translate_error(exc, "finding where a new group starts") from exc

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

    @staticmethod
    def _fetch_highwater(
        probe: KafkaConsumer, latest: Mapping[TopicPartition, int], timeout_ms: int
    ) -> dict[TopicPartition, int]:
        """The high watermark of each partition, from Fetch responses at ``latest``."""
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

    def _learn_end_offsets(
        self, latest: Mapping[TopicPartition, int], highwater: Mapping[TopicPartition, int]
    ) -> None:
        """Record whether ListOffsets agreed with the high watermarks (see
        :attr:`end_offsets_reliable`); partitions without records prove nothing."""
        if any(latest[tp] < highwater[tp] for tp in latest):
            if self.end_offsets_reliable is not False:
                log.info(
                    "%s answers ListOffsets below the high watermark (tansu does): new groups "
                    "start at the Fetch high watermark instead",
                    self.describe(),
                )
            self.end_offsets_reliable = False
        elif self.end_offsets_reliable is None and any(highwater[tp] > 0 for tp in highwater):
            self.end_offsets_reliable = True

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
        if self._closed:
            raise BusClosed("the Kafka backend is closed")
        if len(body) > self._max_body:
            raise MessageTooLarge(
                f"message of {len(body)} bytes exceeds max_message_bytes={self._max_body}"
            )
        if topic not in self._known_topics:
            self.ensure_topic(topic)
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
        future = _PublishFuture(topic)
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
        if self._closed:
            raise BusClosed("the Kafka backend is closed")
        if prefetch < 1:
            raise ConfigurationError("prefetch must be at least 1")
        self.ensure_topic(topic)
        sub = _KafkaSubscription(self, topic, group, prefetch, from_beginning)
        with self._lock:
            if self._closed:
                sub.close()
                raise BusClosed("the Kafka backend is closed")
            self._subscriptions.add(sub)
        try:
            sub.start()
        except BaseException:
            sub.close()
            self._forget(sub)
            raise
        return sub

    def _forget(self, sub: _KafkaSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(sub)

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
            max_partition_fetch_bytes=max(1024 * 1024, opts.max_message_bytes + _HEADROOM),
            allow_auto_create_topics=False,
        )
        return config

    # ------------------------------------------------------------------ closing

    def close(self, timeout: float | None = None) -> None:
        """Flush publishes (up to ``timeout``), close subscriptions, producer and clients.

        Idempotent. Unsettled deliveries of the subscriptions go back to their groups.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subscriptions)
            self._subscriptions.clear()
        deadline = None if timeout is None else time.monotonic() + timeout
        for sub in subs:
            sub.close()
        try:
            self._flush(timeout)
        except TimeoutError:
            log.error("Kafka backend closed with publishes not yet confirmed")
        remaining = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self._producer.close(timeout=remaining if deadline is not None else None)
        except Exception as exc:  # closing must not raise driver errors
            log.warning("closing the Kafka producer: %s", exc)
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

    def __init__(self, topic: str) -> None:
        super().__init__()
        self._topic = topic

    def acked(self, metadata: Any) -> None:
        """Every in-sync replica holds the record."""
        settle_future(self, None)

    def failed(self, error: BaseException) -> None:
        """The broker refused the record, or did not acknowledge it in time."""
        settle_future(self, translate_error(error, f"publishing to Kafka topic {self._topic!r}"))


def _quietly_close(client: Any) -> None:
    try:
        client.close()
    except Exception as exc:
        log.debug("closing %s: %s", type(client).__name__, exc)


def bootstrap_servers(url: BusURL) -> list[str]:
    """The ``host:port`` list of ``url`` (port 9092 when omitted); ConfigurationError if none."""
    if not url.hosts:
        raise ConfigurationError("a Kafka URL needs at least one host: kafka://host:9092")
    return [f"{h.host}:{h.port if h.port is not None else DEFAULT_PORT}" for h in url.hosts]


# --------------------------------------------------------------------------- consuming


class _PartitionState:
    """Offsets of one assigned partition, from its assignment until it is revoked.

    ``order`` holds, in offset order, the offsets handed to this subscription (buffered or
    delivered) that are not known to be settled, plus settled ones behind an unsettled one;
    ``done`` the settled offsets still inside ``order``. The commit point is the first
    offset of ``order`` (or, when it is empty, the one after the last handed-out offset).
    All fields are guarded by the subscription's lock.
    """

    __slots__ = ("committed", "dead", "done", "inflight", "next_offset", "order", "tp")

    def __init__(self, tp: TopicPartition, start: int, committed: int | None) -> None:
        self.tp = tp
        self.order: deque[int] = deque()
        self.done: set[int] = set()
        self.next_offset = start
        self.committed = committed
        self.inflight = 0
        self.dead = False

    def add(self, offset: int) -> None:
        self.order.append(offset)
        self.next_offset = offset + 1

    def settle(self, offset: int) -> None:
        order, done = self.order, self.done
        if order and order[0] == offset:
            order.popleft()
            while order and order[0] in done:
                done.discard(order.popleft())
        else:
            done.add(offset)

    def commit_point(self) -> int:
        return self.order[0] if self.order else self.next_offset

    def needs_commit(self) -> bool:
        return self.committed is None or self.commit_point() > self.committed


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


class _KafkaSubscription(Subscription):
    """A member of ``group`` on ``topic`` (see the module docstring).

    One thread (``msgbus-kafka ...``) owns the ``KafkaConsumer``: it polls, positions new
    partitions, commits and takes part in rebalances. ``receive`` only takes deliveries from
    its buffer, so any thread may call it; ``ack``/``nack`` (any thread) only update offset
    bookkeeping under a lock; the consumer thread commits the result.
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
        self._cond = threading.Condition(self._lock)  # deliveries arrived, ready, closed
        self._space = threading.Condition(self._lock)  # for the consumer thread: room, close
        self._space_waiting = False
        self._buffer: deque[Delivery] = deque()
        self._states: dict[TopicPartition, _PartitionState] = {}
        self._dirty: set[_PartitionState] = set()
        self._pending_init: set[TopicPartition] = set()
        self._inflight = 0
        self._ready = False
        self._closed = False
        self._stopping = False
        self._error: MsgBusError | None = None
        self._flow_paused = False
        self._consumer: KafkaConsumer | None = None
        self._thread: threading.Thread | None = None
        self._loop_done = threading.Event()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def __repr__(self) -> str:
        return f"<KafkaSubscription topic={self.topic!r} group={self.group!r}>"

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Create the consumer, join and position; return when ready (or raise)."""
        backend, opts = self._backend, self._options
        where = f"subscribing to Kafka topic {self.topic!r}"
        try:
            group_id = None if self.group is None else opts.group_id(self.group, self.topic)
            consumer = KafkaConsumer(**backend.consumer_config(group_id))
        except kerr.KafkaTimeoutError as exc:
            raise BrokerUnavailable(f"{where}: broker did not answer: {exc}") from exc
        except Exception as exc:
            raise translate_error(exc, where) from exc
        self._consumer = consumer
        try:
            if self.group is None:
                self._await_partition_metadata(consumer)
                self._assign_all(consumer)
            else:
                consumer.subscribe([self.topic], listener=_Listener(self))
                self._await_partition_metadata(consumer)
        except MsgBusError:
            raise
        except Exception as exc:
            raise translate_error(exc, where) from exc
        self._thread = threading.Thread(
            target=self._run, name=f"msgbus-kafka {self.topic}[{self.group or 'private'}]"
        )
        self._thread.daemon = True
        self._thread.start()
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
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise TopicNotFound(f"Kafka topic {self.topic!r} has no partitions")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        starts = self._backend.start_offsets(tps, earliest=self._earliest)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
            self._states[tp] = _PartitionState(tp, starts[tp], starts[tp])
        self._ready = True

    # ------------------------------------------------------------------ consumer thread

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        failures = 0
        try:
            while not self._stopping:
                try:
                    if self._pending_init:
                        self._init_partitions(consumer)
                    self._commit(consumer, sync=False)
                    self._poll(consumer)
                    failures = 0
                except Exception as exc:
                    error = translate_error(exc, f"consuming Kafka topic {self.topic!r}")
                    if isinstance(error, AuthenticationError | TopicNotFound):
                        with self._cond:
                            self._error = error
                            self._cond.notify_all()
                        return
                    failures += 1
                    delay = min(2.0, 0.05 * 2**failures)
                    log.warning("%r: %s; retrying in %.2fs", self, error, delay)
                    with self._space:
                        self._space.wait_for(lambda: self._stopping, delay)
        finally:
            self._shutdown(consumer)

    def _poll(self, consumer: KafkaConsumer) -> None:
        with self._lock:
            room = self._prefetch - len(self._buffer) - self._inflight
        if room <= 0:
            if not self._flow_paused:
                self._flow_paused = True
                consumer.pause(*consumer.assignment())
            with self._space:
                self._space_waiting = True
                self._space.wait_for(
                    lambda: (
                        self._stopping
                        or len(self._buffer) + self._inflight < self._prefetch
                        or bool(self._dirty)
                    ),
                    _POLL_MS / 1000,
                )
                self._space_waiting = False
            consumer.poll(timeout_ms=0)  # keeps group membership and rebalances going
            return
        if self._flow_paused:
            self._flow_paused = False
            with self._lock:
                waiting = set(self._pending_init)
            consumer.resume(*(consumer.assignment() - waiting))
        records = consumer.poll(timeout_ms=_POLL_MS, max_records=room)
        if records:
            self._ingest(records)

    def _ingest(self, records: Mapping[TopicPartition, list[Any]]) -> None:
        settle = self._settle
        added = 0
        with self._lock:
            states, append = self._states, self._buffer.append
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
                    added += 1
                state.next_offset = next_offset
            if added:
                self._cond.notify_all()

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
                    state = _PartitionState(tp, start, start if stored else None)
                    if not stored:
                        self._dirty.add(state)
                else:
                    start = offset
                    state = _PartitionState(tp, start, start)
                consumer.seek(tp, start)
                self._states[tp] = state
            self._pending_init.difference_update(pending)
            if not self._flow_paused and tps:
                consumer.resume(*tps)
            self._ready = True
            self._cond.notify_all()

    def _commit(self, consumer: KafkaConsumer, *, sync: bool) -> None:
        """Commit the commit points of partitions whose settled offsets moved on."""
        if self.group is None:
            with self._lock:
                self._dirty.clear()
            return
        with self._lock:
            if not self._dirty:
                return
            offsets = {}
            for state in self._dirty:
                if state.dead or not state.needs_commit():
                    continue
                point = state.commit_point()
                offsets[state.tp] = OffsetAndMetadata(point, "", -1)
                state.committed = point
            self._dirty.clear()
        if not offsets:
            return
        if sync:
            consumer.commit(offsets, timeout_ms=self._options.request_timeout_ms)
        else:
            consumer.commit_async(offsets, callback=self._on_committed)

    def _on_committed(self, offsets: Mapping[TopicPartition, Any], result: Any) -> None:
        if isinstance(result, BaseException):
            log.info("%r: offset commit failed (%s); it is retried with the next one", self, result)
            with self._lock:
                for tp in offsets:
                    state = self._states.get(tp)
                    if state is not None and not state.dead:
                        state.committed = None
                        self._dirty.add(state)

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
        with self._cond:
            self._pending_init.difference_update(partitions)
            states = [self._states.pop(tp) for tp in partitions if tp in self._states]
            if not states:
                return
            gone = set(states)
            kept: deque[Delivery] = deque()
            for delivery in self._buffer:
                if delivery.token[0] in gone:
                    delivery._settle = None  # never handed out: nothing to settle
                else:
                    kept.append(delivery)
            self._buffer = kept
            self._dirty.difference_update(gone)
            wait = 0.0 if (lost or self._closed) else self._options.revoke_timeout_ms / 1000
        deadline = time.monotonic() + wait
        net = getattr(consumer, "_net", None)
        while True:
            with self._lock:
                busy = any(state.inflight for state in states)
            if not busy or time.monotonic() >= deadline:
                break
            if net is not None:
                await net.sleep(0.005)
            else:
                time.sleep(0.005)  # pragma: no cover - kafka-python without an I/O loop
        with self._lock:
            offsets = {
                state.tp: OffsetAndMetadata(state.commit_point(), "", -1)
                for state in states
                if state.needs_commit()
            }
            for state in states:
                state.dead = True
                self._inflight -= state.inflight  # their settlements are ignored from now on
                state.inflight = 0
            if busy and wait:
                log.warning(
                    "%r: rebalance: deliveries still in flight after %.1fs; they will be "
                    "delivered again to the new owner",
                    self,
                    wait,
                )
        if lost or not offsets:
            return
        try:
            await consumer.commit_async(offsets)
        except Exception as exc:
            log.warning("%r: commit on rebalance failed (%s); expect redeliveries", self, exc)

    # ------------------------------------------------------------------ receiving

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Hand out up to ``max_messages`` buffered deliveries, waiting up to ``timeout``.

        Returns ``[]`` on timeout or once closed; raises :class:`~msgbus.AuthenticationError`
        or :class:`~msgbus.TopicNotFound` if the consumer hit a fatal error. Any thread.
        """
        deadline = None
        with self._cond:
            while True:
                if self._closed:
                    return []
                if self._error is not None:
                    raise self._error
                buffer = self._buffer
                if buffer:
                    count = min(max_messages, len(buffer))
                    out = [buffer.popleft() for _ in range(count)]
                    self._inflight += count
                    for delivery in out:
                        delivery.token[0].inflight += 1
                    return out
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                remaining = deadline - now
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

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
                return
            again = Delivery(
                delivery.topic,
                delivery.body,
                delivery.headers,
                delivery.key,
                self._settle,
                redelivered=True,
                native_id=delivery.native_id,
                token=delivery.token,
            )
            self._buffer.appendleft(again)  # handed out again first, marked redelivered
            self._cond.notify()

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
            for delivery in self._buffer:
                delivery._settle = None
            self._buffer.clear()
            self._cond.notify_all()
            self._space.notify_all()
        thread = self._thread
        if thread is None:
            consumer = self._consumer
            if consumer is not None:
                self._shutdown(consumer)
        elif thread is not threading.current_thread():
            self._loop_done.wait(self._options.request_timeout_ms / 1000 + 1)
        self._backend._forget(self)

    def _shutdown(self, consumer: KafkaConsumer) -> None:
        """On the consumer thread: final commit, leave the group, close the consumer."""
        with self._cond:
            self._stopping = True
        try:
            if self.group is not None and self._error is None:
                try:
                    self._commit(consumer, sync=True)
                except Exception as exc:
                    log.warning("%r: final commit failed (%s); expect redeliveries", self, exc)
            try:
                consumer.close(autocommit=False, timeout_ms=self._options.request_timeout_ms)
            except Exception as exc:
                log.debug("%r: closing the consumer: %s", self, exc)
        finally:
            with self._cond:
                for state in self._states.values():
                    state.dead = True
                self._states.clear()
                self._cond.notify_all()
            self._loop_done.set()
