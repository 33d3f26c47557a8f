"""What both Kafka drivers share, and the ``kafka://`` backend class.

:class:`KafkaBackend` picks the driver from the ``driver`` option and holds what both do
the same way: option parsing, features, topic-creation rules, where a new group starts,
publish checks, the subscription registry. The option table and wire mapping live in
``options.py``, a subscription's offset and rebalance bookkeeping in ``subscription.py``
(both re-exported here). Nothing here imports a Kafka client library; each driver module
(``kafka_python``, ``confluent``) holds only the calls into its library.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from msgbus.backend import Backend, Delivery, Features
from msgbus.backendkit import check_publish, parse_options, url_credentials
from msgbus.errors import (
    BackendNotInstalled,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    MsgBusError,
    TopicNotFound,
)
from msgbus.url import BusURL

from . import listing, retry
from .options import (
    HEADROOM,
    POLL_MS,
    KafkaOptions,
    bootstrap_servers,
    record_headers,
    topic_configs,
    wire_headers,
)
from .subscription import KafkaSubscriptionBase, PartitionState

__all__ = [
    "DRIVERS",
    "HEADROOM",
    "POLL_MS",
    "KafkaBackend",
    "KafkaOptions",
    "KafkaSubscriptionBase",
    "PartitionState",
    "bootstrap_servers",
    "driver_class",
    "record_headers",
    "time_left",
    "topic_configs",
    "wire_headers",
]

log = logging.getLogger("msgbus.kafka")

DRIVERS: dict[str, tuple[str, str, str]] = {
    "kafka-python": ("kafka_python", "KafkaPythonBackend", "kafka"),
    "confluent": ("confluent", "ConfluentKafkaBackend", "kafka-confluent"),
}
"""``driver`` option -> (module in this package, backend class, pip extra)."""


# --------------------------------------------------------------------------- backend

_FEATURES = dict(
    consumer_groups=True,
    per_key_order=True,
    persistent=True,
    native_dead_letter=False,
    requeue=True,
    replay=True,
    cross_process=True,
)


class KafkaBackend(Backend):
    """The ``kafka://`` backend; ``from_url`` returns the subclass of the ``driver`` option.

    Holds what both drivers do the same way: option parsing, features, the topic cache and
    creation rules, where a new group starts (and what the broker proved about ListOffsets),
    publish checks, and the subscription registry. ``publish`` and ``flush`` are thread-safe.
    After ``close`` every method raises :class:`~msgbus.BusClosed`.
    """

    schemes = ("kafka",)
    features = Features(**_FEATURES, max_message_bytes=KafkaOptions.max_message_bytes)
    extra = "kafka"
    driver_name = ""
    """The ``driver`` option value of the subclass."""

    def __init__(self, url: BusURL, options: KafkaOptions) -> None:
        self.url = url
        self.options = options
        self.features = Features(**_FEATURES, max_message_bytes=options.max_message_bytes)
        self._bootstrap = bootstrap_servers(url)
        self._closed = False
        self._lock = threading.Lock()
        self._topics_lock = threading.Lock()
        self._known_topics: set[str] = set()
        self._partition_counts: dict[str, int] = {}
        self._probe_lock = threading.Lock()
        self.end_offsets_reliable: bool | None = None
        """What this broker's ListOffsets "latest" proved to be: True once it matched a Fetch
        high watermark on a partition holding records (Apache Kafka), False once it fell short
        of one (tansu), None until a partition with records was probed."""
        self._subscriptions: set[KafkaSubscriptionBase] = set()
        self._max_body = options.max_message_bytes

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_url(cls, url: BusURL, **options: Any) -> KafkaBackend:
        """Connect to the brokers of ``url`` with the driver named by the ``driver`` option.

        Raises :class:`~msgbus.UnknownOption` (listing the valid ones) or
        :class:`~msgbus.ConfigurationError` for bad options,
        :class:`~msgbus.BackendNotInstalled` when the driver's package is missing,
        :class:`~msgbus.BrokerUnavailable` when no broker answers within
        ``connect_timeout_ms`` and :class:`~msgbus.AuthenticationError` when the broker
        refuses the credentials.
        """
        if url.path:
            raise ConfigurationError(
                f"a Kafka URL has no path: {url.render()!r} (kafka://host:port[,host:port])"
            )
        opts = parse_options(
            KafkaOptions, url, options, backend="kafka", url_fields=url_credentials(url)
        )
        opts.validate()
        bootstrap_servers(url)
        return driver_class(opts.driver)._connect(url, opts)

    @classmethod
    @abstractmethod
    def _connect(cls, url: BusURL, options: KafkaOptions) -> KafkaBackend:
        """Build the driver's clients and check the broker answers (see ``from_url``)."""

    def describe(self) -> str:
        """``Kafka protocol at kafka://host:port (driver)``; never shows a password."""
        return f"Kafka protocol at {self.url.render()} ({self.driver_name})"

    def __repr__(self) -> str:
        return f"<KafkaBackend {self.url.render()} driver={self.driver_name}>"

    def delivery_attributes(self, delivery: Delivery) -> Mapping[str, Any] | None:
        """The record's partition and offset, as OpenTelemetry messaging attributes."""
        token = delivery.token
        if not isinstance(token, tuple) or not isinstance(token[0], PartitionState):
            return None
        return {
            "messaging.destination.partition.id": str(token[0].partition),
            "messaging.kafka.offset": token[1],
        }

    # ------------------------------------------------------------------ topics

    def ensure_topic(self, topic: str) -> None:
        """Make sure ``topic`` exists: create it (``auto_create``) or raise ``TopicNotFound``;
        then wait until every partition has a leader.

        Thread-safe; remembers topics it has seen, so later calls cost nothing. Raises
        :class:`~msgbus.BrokerUnavailable` if the broker cannot be asked.
        """
        if topic in self._known_topics:
            return
        with self._topics_lock:
            if topic in self._known_topics:
                return
            if self._closed:
                raise BusClosed("the Kafka backend is closed")
            try:
                if self.options.auto_create:
                    self._create_topic(topic)
                elif not self._topic_exists(topic):
                    raise TopicNotFound(
                        f"Kafka topic {topic!r} does not exist and auto_create is false"
                    )
                self._partition_counts[topic] = self._await_leaders(topic)
            except MsgBusError:
                raise
            except Exception as exc:
                raise self._translate(exc, f"checking Kafka topic {topic!r}") from exc
            self._known_topics.add(topic)

    def _await_leaders(self, topic: str) -> int:
        """Wait until every partition of ``topic`` has a leader; return the partition count.

        Apache Kafka answers a topic it has just created with no partitions, or partitions
        without a leader, for a moment (tansu never does). Waits up to ``connect_timeout_ms``,
        then raises :class:`~msgbus.BrokerUnavailable` naming the partitions still leaderless.
        """
        limit_ms = self.options.connect_timeout_ms
        deadline = time.monotonic() + limit_ms / 1000
        delay = 0.01
        while True:
            count, leaderless = self._leaderless(topic)
            if count and not leaderless:
                return count
            if time.monotonic() >= deadline:
                what = f"partitions {leaderless} have no leader" if count else "no partitions"
                raise BrokerUnavailable(
                    f"Kafka topic {topic!r}: {what} after {limit_ms} ms (connect_timeout_ms)"
                )
            time.sleep(delay)  # bounded poll of broker state: there is no event to wait on
            delay = min(0.2, delay * 2)

    def replication_factor(self) -> int:
        """The replication factor of the topics this backend creates: the option when
        given, else ``min(3, brokers in the cluster's metadata)`` (1 on one broker). Raises
        what the driver raises when the broker does not answer."""
        given = self.options.replication_factor
        if given is not None:
            return given
        return max(1, min(3, self._broker_count()))

    @abstractmethod
    def _broker_count(self) -> int:
        """How many brokers the cluster's metadata lists."""

    @abstractmethod
    def _create_topic(self, topic: str) -> None:
        """Create ``topic`` with ``partitions``, ``replication_factor`` and
        :func:`topic_configs` (plain if the broker refuses the configs); exists is fine."""

    @abstractmethod
    def _topic_exists(self, topic: str) -> bool:
        """True when the broker lists ``topic``."""

    @abstractmethod
    def _leaderless(self, topic: str) -> tuple[int, list[int]]:
        """(partition count, partitions without a leader or with an error) of ``topic``;
        a topic error counts as no partitions."""

    # ------------------------------------------------------------------ new groups

    def start_offsets(self, partitions: Iterable[Any], *, earliest: bool) -> dict[Any, int]:
        """Where a new group starts on each partition: its beginning, or its true end.

        The end is ListOffsets "latest", which Apache Kafka answers right and tansu does not
        (it answers 1 for a partition holding hundreds of records). Until the broker has
        shown which kind it is (:attr:`end_offsets_reliable`), and whenever it has shown it is
        the wrong kind, the end is checked against the high watermark of a Fetch at that
        offset and the larger taken. Thread-safe. Raises :class:`~msgbus.BrokerUnavailable`
        when the broker does not answer within ``request_timeout_ms``.
        """
        tps = sorted(set(partitions))
        if not tps:
            return {}
        timeout_ms = self.options.request_timeout_ms
        with self._probe_lock:
            try:
                if earliest:
                    return self._list_offsets(tps, earliest=True, timeout_ms=timeout_ms)
                latest = self._list_offsets(tps, earliest=False, timeout_ms=timeout_ms)
                if self.end_offsets_reliable:
                    return latest
                highwater = self._fetch_highwater(latest, timeout_ms)
                self._learn_end_offsets(latest, highwater)
                return {tp: max(latest[tp], highwater[tp]) for tp in tps}
            except MsgBusError:
                raise
            except Exception as exc:
                raise self._translate(exc, "finding where a new group starts") from exc

    @abstractmethod
    def _list_offsets(self, tps: list[Any], *, earliest: bool, timeout_ms: int) -> dict[Any, int]:
        """ListOffsets "earliest" or "latest" of ``tps`` (called with ``_probe_lock`` held)."""

    @abstractmethod
    def _fetch_highwater(self, latest: Mapping[Any, int], timeout_ms: int) -> dict[Any, int]:
        """The high watermark of each partition, from Fetch responses at ``latest``, by a
        group-less probe consumer that uses no incremental fetch session (``_probe_lock``
        held)."""

    def _learn_end_offsets(self, latest: Mapping[Any, int], highwater: Mapping[Any, int]) -> None:
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

    # ------------------------------------------------------------------ durable retries

    durable_retries = True  # retry topics <topic>.retry.<n>: see retry.py
    publish_retry = retry.publish_retry
    subscribe_retrying = retry.subscribe_retrying
    topics = listing.list_topics  # for `msgbus dlq list` without topics

    # ------------------------------------------------------------------ lag

    reports_consumer_lag = True
    """:meth:`consumer_lag` asks the broker (committed offsets against end offsets)."""

    def consumer_lag(self, topic: str, group: str) -> int | None:
        """How many records of ``topic`` msgbus group ``group`` has not acknowledged yet.

        Per partition, the true end offset (as for a new group: ListOffsets, checked
        against a Fetch high watermark on brokers that answer it wrong) minus the group's
        committed offset, summed. A partition the group never committed counts 0 (a new
        group starts at the end); None when the topic does not exist. Any thread; two or
        three broker round trips. Raises :class:`~msgbus.BrokerUnavailable` when the broker
        cannot be asked and :class:`~msgbus.BusClosed` after ``close``.
        """
        if self._closed:
            raise BusClosed("the Kafka backend is closed")
        group_id = self.options.group_id(group, topic)
        try:
            with self._topics_lock:
                count, _ = self._leaderless(topic)
                if not count:
                    return None
                keys = [self._partition_key(topic, p) for p in range(count)]
                committed = self._group_offsets(group_id, keys)
        except MsgBusError:
            raise
        except Exception as exc:
            raise self._translate(exc, f"asking the lag of group {group_id!r}") from exc
        ends = self.start_offsets(keys, earliest=False)
        return sum(
            max(0, ends[key] - committed[key]) for key in keys if committed.get(key) is not None
        )

    @abstractmethod
    def _partition_key(self, topic: str, partition: int) -> Any:
        """The driver's key of a partition (what ``start_offsets`` takes)."""

    @abstractmethod
    def _group_offsets(self, group_id: str, keys: list[Any]) -> dict[Any, int | None]:
        """The committed offset of Kafka group ``group_id`` on each partition, None where it
        has none (call with ``_topics_lock`` held: uses the admin client)."""

    # ------------------------------------------------------------------ helpers

    def _check_publish(self, topic: str, body: bytes) -> None:
        """Refuse a publish at once: closed, body above ``max_message_bytes``, topic missing
        (the toolkit's :func:`~msgbus.backendkit.check_publish`, then :meth:`ensure_topic`)."""
        check_publish("Kafka", closed=self._closed, body=body, max_message_bytes=self._max_body)
        if topic not in self._known_topics:
            self.ensure_topic(topic)

    def _check_subscribe(self, topic: str, prefetch: int) -> None:
        if self._closed:
            raise BusClosed("the Kafka backend is closed")
        if prefetch < 1:
            raise ConfigurationError("prefetch must be at least 1")
        self.ensure_topic(topic)

    def _start_subscription(self, sub: KafkaSubscriptionBase) -> KafkaSubscriptionBase:
        """Register ``sub`` and start it (``sub.start()``); closed and forgotten on failure."""
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

    def _forget(self, sub: KafkaSubscriptionBase) -> None:
        with self._lock:
            self._subscriptions.discard(sub)

    def close(self, timeout: float | None = None) -> None:
        """Flush publishes (up to ``timeout``), close subscriptions, producer and clients.

        Idempotent. Unsettled deliveries of the subscriptions go back to their groups; a
        publish not confirmed within ``timeout`` fails with a msgbus error (never left
        pending), and the whole close keeps to ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._close_subscriptions():
            return
        try:
            self._flush(time_left(deadline))  # what is left of ``timeout`` after the subscriptions
        except TimeoutError:
            log.error("Kafka backend closed with publishes not yet confirmed")
        self._close_clients(deadline)

    @abstractmethod
    def _flush(self, timeout: float | None) -> None:
        """Wait until every publish so far is confirmed or failed; TimeoutError after
        ``timeout`` seconds (None: no limit)."""

    @abstractmethod
    def _close_clients(self, deadline: float | None) -> None:
        """Close the producer and the helper clients by ``deadline`` (a ``time.monotonic``
        instant; None: no limit), failing every publish still unconfirmed."""

    def _close_subscriptions(self) -> bool:
        """Mark closed and close every subscription; False if already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            subs = list(self._subscriptions)
            self._subscriptions.clear()
        for sub in subs:
            sub.close()
        return True

    @abstractmethod
    def _translate(self, exc: BaseException, where: str) -> MsgBusError:
        """The driver's exception as a msgbus error (``where`` prefixes the text)."""


def time_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never below 0), None when there is none."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def driver_class(driver: str) -> type[KafkaBackend]:
    """The backend class of ``driver`` (imported now); :class:`BackendNotInstalled` naming the
    pip extra when its client library is missing."""
    module_name, class_name, extra = DRIVERS[driver]
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"{__package__}"):
            raise
        raise BackendNotInstalled(
            f"the Kafka driver {driver!r} needs the Python package {exc.name!r}, which is not "
            f'installed: pip install "msgbus[{extra}]"'
        ) from exc
    return getattr(module, class_name)  # type: ignore[no-any-return]
