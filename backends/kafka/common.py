"""What both Kafka drivers share: the option table (one set of msgbus option names, mapped to
kafka-python's and librdkafka's settings), header and key mapping on the wire, topic-creation
rules, where a new group starts, and a subscription's offset and rebalance bookkeeping.

Nothing here imports a Kafka client library; each driver module (``kafka_python``,
``confluent``) holds only the calls into its library. The ``kafka://`` backend class,
:class:`KafkaBackend`, picks the driver from the ``driver`` option.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from msgbus.backend import Backend, Delivery, Features, Subscription, parse_options
from msgbus.errors import (
    AuthenticationError,
    BackendNotInstalled,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    MessageTooLarge,
    MsgBusError,
    TopicNotFound,
)
from msgbus.message import TIMESTAMP
from msgbus.url import BusURL

from . import commits, listing, retry

__all__ = [
    "DRIVERS",
    "HEADROOM",
    "KafkaBackend",
    "KafkaOptions",
    "KafkaSubscriptionBase",
    "PartitionState",
    "bootstrap_servers",
    "record_headers",
    "topic_configs",
    "wire_headers",
]

log = logging.getLogger("msgbus.kafka")

DEFAULT_PORT = 9092
"""Port used for a host of the URL that names none."""

HEADROOM = 64 * 1024
"""Bytes allowed on top of ``max_message_bytes`` for the key, headers and batch framing."""

POLL_MS = 100
"""Longest a consumer thread stays inside its driver's poll (bounds close latency)."""

DRIVERS: dict[str, tuple[str, str, str]] = {
    "kafka-python": ("kafka_python", "KafkaPythonBackend", "kafka"),
    "confluent": ("confluent", "ConfluentKafkaBackend", "kafka-confluent"),
}
"""``driver`` option -> (module in this package, backend class, pip extra)."""


@dataclass(frozen=True)
class KafkaOptions:
    """Options of the Kafka backend, the same names on both drivers; see the package
    docstring for meanings and defaults."""

    driver: Literal["kafka-python", "confluent"] = "kafka-python"
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
        """The security protocol in Kafka's spelling (upper case)."""
        if self.security_protocol is not None:
            return self.security_protocol.upper()
        return "SASL_PLAINTEXT" if self.username is not None else "PLAINTEXT"

    def client_config(self, bootstrap: list[str]) -> dict[str, Any]:
        """kafka-python: connection settings shared by producer, consumers and admin client."""
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

    def librdkafka_config(self, bootstrap: list[str]) -> dict[str, Any]:
        """librdkafka (confluent-kafka): the same connection settings under its names."""
        protocol = self.effective_security_protocol
        config: dict[str, Any] = {
            "bootstrap.servers": ",".join(bootstrap),
            "client.id": self.client_id,
            "socket.timeout.ms": self.request_timeout_ms,
            "socket.connection.setup.timeout.ms": self.connect_timeout_ms,
            "security.protocol": protocol,
        }
        if protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.sasl_mechanism.upper()
            config["sasl.username"] = self.username
            config["sasl.password"] = self.password
        if protocol.endswith("SSL"):
            for option, name in (
                (self.ssl_cafile, "ssl.ca.location"),
                (self.ssl_certfile, "ssl.certificate.location"),
                (self.ssl_keyfile, "ssl.key.location"),
            ):
                if option is not None:
                    config[name] = option
            config["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_check_hostname else "none"
            )
        return {k: v for k, v in config.items() if v is not None}


def bootstrap_servers(url: BusURL) -> list[str]:
    """The ``host:port`` list of ``url`` (port 9092 when omitted); ConfigurationError if none."""
    if not url.hosts:
        raise ConfigurationError("a Kafka URL needs at least one host: kafka://host:9092")
    return [f"{h.host}:{h.port if h.port is not None else DEFAULT_PORT}" for h in url.hosts]


def topic_configs(options: KafkaOptions) -> dict[str, str]:
    """Topic-level configs of a topic msgbus creates (its size limit, with headroom)."""
    return {"max.message.bytes": str(options.max_message_bytes + HEADROOM)}


# --------------------------------------------------------------------------- wire mapping


def wire_headers(headers: Mapping[str, str]) -> tuple[list[tuple[str, str]], int | None]:
    """Record headers and timestamp of a publish: every header but ``msgbus-timestamp``, which
    travels as the record's own timestamp (ms) when it is a number. Values stay ``str``; the
    driver encodes them as UTF-8 (librdkafka does it in C)."""
    stamp = headers.get(TIMESTAMP)
    if stamp is not None and stamp.isdigit():
        return [(k, v) for k, v in headers.items() if k != TIMESTAMP], int(stamp)
    return list(headers.items()), None


def record_headers(
    raw: Iterable[tuple[str, bytes | None]] | None, timestamp_ms: int | None
) -> dict[str, str]:
    """A record's headers as msgbus sees them: values decoded as UTF-8 (invalid bytes
    replaced, a null value is ""), plus ``msgbus-timestamp`` from the record's timestamp."""
    headers = {k: v.decode("utf-8", "replace") if v else "" for k, v in raw} if raw else {}
    if timestamp_ms is not None and timestamp_ms >= 0 and TIMESTAMP not in headers:
        headers[TIMESTAMP] = str(timestamp_ms)
    return headers


# --------------------------------------------------------------------------- offsets


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

    A consumer thread (the driver's) fills ``_buffer`` with deliveries whose token is
    ``(PartitionState, offset)``; ``receive`` (any thread) hands them out; ``ack``/``nack``
    (any thread) update the offset bookkeeping under ``_lock``; the consumer thread commits
    what :meth:`_take_commits` returns. On a rebalance the driver calls
    :meth:`_revoke_begin`, waits while :meth:`_revoke_busy` (bounded), then
    :meth:`_revoke_finish` for the offsets to commit.
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
        self._states: dict[Any, PartitionState] = {}
        self._dirty: set[PartitionState] = set()
        self._pending_init: set[Any] = set()
        self._inflight = 0
        self._receivers = 0  # threads waiting in receive
        self._ready = False
        self._closed = False
        self._stopping = False
        self._error: MsgBusError | None = None
        self._flow_paused = False
        self._thread: threading.Thread | None = None
        self._loop_done = threading.Event()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed

    def __repr__(self) -> str:
        return f"<KafkaSubscription topic={self.topic!r} group={self.group!r}>"

    def _room(self) -> int:
        """How many more deliveries the prefetch window allows (call with ``_lock`` held)."""
        return self._prefetch - len(self._buffer) - self._inflight

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
                    or len(self._buffer) + self._inflight < self._prefetch
                    or bool(self._dirty)
                ),
                POLL_MS / 1000,
            )
            self._space_waiting = False

    def _fail(self, error: MsgBusError) -> None:
        """Consumer thread: a fatal error; ``receive`` and ``start`` raise it from now on."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    # ------------------------------------------------------------------ commits

    def _take_commits(self) -> dict[Any, int]:
        """The commit points of partitions whose settled offsets moved on; marks them
        committed (call :meth:`_commit_failed` if the commit then fails)."""
        if self.group is None:
            with self._lock:
                self._dirty.clear()
            return {}
        with self._lock:
            if not self._dirty:
                return {}
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
            kept: deque[Delivery] = deque()
            for delivery in self._buffer:
                if delivery.token[0] in gone:
                    delivery._settle = None  # never handed out: nothing to settle
                else:
                    kept.append(delivery)
            self._buffer = kept
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
                # the buffer may hold more than the window (a driver that cannot stop its
                # consumer without dropping prefetched records): hand out within the window
                room = self._prefetch - self._inflight
                if buffer and room > 0:
                    count = min(max_messages, len(buffer), room)
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
                self._receivers += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._receivers -= 1

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
                if self._receivers and self._buffer:
                    self._cond.notify()  # a receiver waits for room in the window
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
            self._shutdown()
        elif thread is not threading.current_thread():
            self._loop_done.wait(self._options.request_timeout_ms / 1000 + 1)
        self._backend._forget(self)

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
        backoff (authentication and missing topics are fatal); then :meth:`_shutdown`."""
        failures = 0
        try:
            while not self._stopping:
                try:
                    self._step()
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
            self._shutdown()

    @abstractmethod
    def _step(self) -> None:
        """One round of the consumer thread: commit what was settled, poll, ingest."""

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
        url_fields: dict[str, Any] = {}
        if url.username is not None:
            url_fields["username"] = url.username
        if url.password is not None:
            url_fields["password"] = url.password
        opts = parse_options(KafkaOptions, url, options, backend="kafka", url_fields=url_fields)
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
        """Refuse a publish at once: closed, body above ``max_message_bytes``, topic missing."""
        if self._closed:
            raise BusClosed("the Kafka backend is closed")
        if len(body) > self._max_body:
            raise MessageTooLarge(
                f"message of {len(body)} bytes exceeds max_message_bytes={self._max_body}"
            )
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
            sub.start()  # type: ignore[attr-defined]
        except BaseException:
            sub.close()
            self._forget(sub)
            raise
        return sub

    def _forget(self, sub: KafkaSubscriptionBase) -> None:
        with self._lock:
            self._subscriptions.discard(sub)

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
