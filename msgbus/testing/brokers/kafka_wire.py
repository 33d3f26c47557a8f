"""What the Kafka launchers share: a minimal wire-protocol probe and their common base.

:func:`kafka_handshake` (ApiVersions, then Metadata, on one connection) is the readiness check
for Apache Kafka and tansu: just enough of the protocol to know the broker answers as a Kafka
broker and advertises the expected listener. :class:`KafkaProtocolBroker` gives both launchers
their URL forms and that check. Standard library only.
"""

from __future__ import annotations

import socket
import struct

from msgbus.testing.brokers.base import HOST, BrokerProcess, HandshakeError, recv_exactly

__all__ = ["KafkaProtocolBroker", "kafka_handshake"]

_API_VERSIONS = 18
_METADATA = 3
_CLIENT_ID = b"msgbus-harness"


def _request(
    sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes
) -> bytes:
    header = struct.pack("!hhih", api_key, version, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    message = header + body
    sock.sendall(struct.pack("!i", len(message)) + message)
    (size,) = struct.unpack("!i", recv_exactly(sock, 4))
    if not 4 <= size <= 64 * 1024 * 1024:
        raise HandshakeError(f"implausible Kafka response size {size}")
    response = recv_exactly(sock, size)
    (answered,) = struct.unpack("!i", response[:4])
    if answered != correlation_id:
        raise HandshakeError(f"Kafka correlation id {answered}, expected {correlation_id}")
    return response[4:]


def _api_versions(body: bytes) -> dict[int, tuple[int, int]]:
    (error_code,) = struct.unpack("!h", body[:2])
    if error_code != 0:
        raise HandshakeError(f"Kafka ApiVersions error code {error_code}")
    (count,) = struct.unpack("!i", body[2:6])
    apis = {}
    for i in range(max(count, 0)):
        key, low, high = struct.unpack_from("!hhh", body, 6 + 6 * i)
        apis[key] = (low, high)
    return apis


def _metadata_version(apis: dict[int, tuple[int, int]]) -> int:
    """Metadata v4 where offered (Apache Kafka 4 dropped v0-v3), else v1 (older brokers)."""
    if _METADATA not in apis:
        raise HandshakeError("Kafka broker does not offer the Metadata API")
    low, high = apis[_METADATA]
    for version in (4, 1):
        if low <= version <= high:
            return version
    raise HandshakeError(f"Kafka broker offers Metadata v{low}-v{high}, neither v1 nor v4")


def kafka_handshake(host: str, port: int, timeout: float = 5.0) -> list[tuple[int, str, int]]:
    """ApiVersions v0 then Metadata (v4, or v1 on brokers without it) for no topics.

    Checks the correlation ids and ApiVersions' error code, and returns the advertised brokers
    as ``(node_id, host, port)``. Raises OSError when the port does not answer and
    :class:`~msgbus.testing.brokers.base.HandshakeError` when the answer is not a healthy
    Kafka response.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        apis = _api_versions(_request(sock, _API_VERSIONS, 0, 1, b""))
        version = _metadata_version(apis)
        request = struct.pack("!i", 0)  # an empty topic list: brokers only
        if version >= 4:
            request += b"\x00"  # allow_auto_topic_creation = false
        body = _request(sock, _METADATA, version, 2, request)
        pos = 4 if version >= 3 else 0  # throttle_time_ms

        def take(fmt: str) -> int:
            nonlocal pos
            (value,) = struct.unpack_from(fmt, body, pos)
            pos += struct.calcsize(fmt)
            return int(value)

        def string() -> str:
            nonlocal pos
            length = take("!h")
            if length < 0:
                return ""
            text = body[pos : pos + length].decode("utf-8", "replace")
            pos += length
            return text

        brokers = []
        try:
            for _ in range(take("!i")):
                node_id = take("!i")
                broker_host = string()
                broker_port = take("!i")
                string()  # rack
                brokers.append((node_id, broker_host, broker_port))
        except struct.error as exc:
            raise HandshakeError(f"malformed Kafka Metadata response: {exc}") from exc
        return brokers


class KafkaProtocolBroker(BrokerProcess):
    """Base of the Kafka launchers (kind ``kafka``): ``url``, ``bootstrap_servers`` and a
    readiness check that the broker advertises 127.0.0.1 and the client port."""

    kind = "kafka"

    @property
    def url(self) -> str:
        """``kafka://127.0.0.1:PORT``."""
        return f"kafka://{HOST}:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``, for Kafka clients."""
        return f"{HOST}:{self.port}"

    def _check_advertised(self, timeout: float) -> None:
        """One handshake; :class:`HandshakeError` unless ``HOST:port`` is advertised."""
        brokers = kafka_handshake(HOST, self.port, timeout)
        if not any(host == HOST and port == self.port for _node, host, port in brokers):
            raise HandshakeError(f"{self.product} advertises {brokers}, not {HOST}:{self.port}")
