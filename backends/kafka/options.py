"""The Kafka backend's options (one set of msgbus option names, mapped to kafka-python's
and librdkafka's settings), the broker list of a URL, topic configs, and the header and
timestamp mapping on the wire. No Kafka client library is imported here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from msgbus.backendkit import require_positive
from msgbus.errors import ConfigurationError
from msgbus.message import TIMESTAMP
from msgbus.url import BusURL

__all__ = [
    "DEFAULT_PORT",
    "HEADROOM",
    "POLL_MS",
    "KafkaOptions",
    "bootstrap_servers",
    "record_headers",
    "topic_configs",
    "wire_headers",
]

DEFAULT_PORT = 9092
"""Port used for a host of the URL that names none."""

HEADROOM = 64 * 1024
"""Bytes allowed on top of ``max_message_bytes`` for the key, headers and batch framing."""

POLL_MS = 100
"""Longest a consumer thread stays inside its driver's poll (bounds close latency)."""


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
    #: None: min(3, the brokers the cluster's metadata lists) — one copy on one broker, three on
    #: a cluster, so a node's death leaves each partition a leader
    replication_factor: int | None = None
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
        require_positive(self, "connect_timeout", *positive, backend="kafka")
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
