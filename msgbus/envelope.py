"""Between payloads and the wire: build headers and bodies for publishing, Messages on receipt.

The body on the wire is the serialized payload alone; every piece of metadata travels in
headers (see :mod:`msgbus.message`). These functions are pure and thread-safe.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from typing import Any

from msgbus import cloudevents
from msgbus.backend import Delivery
from msgbus.errors import ConfigurationError, ReservedHeader, SerializationError
from msgbus.message import (
    CONTENT_TYPE,
    CORRELATION_ID,
    MESSAGE_ID,
    METADATA_HEADERS,
    TIMESTAMP,
    Message,
    build_message,
    is_reserved,
)
from msgbus.serialization import BYTES, JSON, Codec, codec_for_content_type, get_codec

__all__ = ["check_topic", "decode", "encode", "new_message_id"]


class _IdSource:
    """Message ids: a random per-process prefix plus a counter (regenerated after fork).

    Unique across processes with overwhelming probability (64 random bits per process),
    and far cheaper than a system call per message.
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(4), "big") << 16)

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"  # 2**48 start: 16 digits for ages


_ids = _IdSource()
_BYTES_LIKE = (bytes, bytearray, memoryview)
_valid_topics: set[str] = set()


def new_message_id() -> str:
    """A fresh message id: 32 lowercase hex characters, unique within and across processes."""
    return _ids.next()


def check_topic(topic: object) -> str:
    """Return ``topic`` if it is a usable topic name, else raise :class:`ConfigurationError`.

    A topic is 1–200 characters of letters, digits, ``.``, ``_`` and ``-`` (the subset every
    broker accepts in topic, routing-key and destination names).
    """
    if topic in _valid_topics:
        return topic  # type: ignore[return-value]
    if not isinstance(topic, str) or not topic or len(topic) > 200:
        raise ConfigurationError(f"a topic must be a non-empty string, not {topic!r}")
    if not topic.replace(".", "").replace("_", "").replace("-", "").isalnum() or (
        not topic.isascii()
    ):
        raise ConfigurationError(
            f"invalid topic {topic!r}: use letters, digits, '.', '_' and '-' only"
        )
    if len(_valid_topics) < 10_000:
        _valid_topics.add(topic)
    return topic


def encode(
    payload: Any,
    *,
    codec: str | None,
    headers: Mapping[str, str] | None,
    correlation_id: str | None,
    message_id: str | None,
) -> tuple[bytes, dict[str, str]]:
    """Serialize ``payload`` and build the wire headers.

    The codec is the named one, else ``bytes`` for bytes-like payloads, else ``json``.
    Raises :class:`SerializationError` when the payload does not fit the codec and
    :class:`ReservedHeader` when a user header takes a reserved name.
    """
    chosen: Codec
    if codec is not None:
        chosen = get_codec(codec)
    elif isinstance(payload, _BYTES_LIKE):
        chosen = BYTES
    else:
        chosen = JSON
    try:
        body = chosen.encode(payload)
    except SerializationError:
        raise
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot encode payload with the {chosen.name} codec: {exc}"
        ) from exc
    wire: dict[str, str] = {}
    if headers:
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ConfigurationError(
                    f"headers map str to str; got {type(name).__name__} -> {type(value).__name__}"
                )
            if is_reserved(name):
                raise ReservedHeader(
                    f"header {name!r} is reserved for msgbus metadata; choose another name"
                )
            wire[name] = value
    wire[CONTENT_TYPE] = chosen.content_type
    wire[MESSAGE_ID] = message_id or new_message_id()
    wire[TIMESTAMP] = str(time.time_ns() // 1_000_000)
    if correlation_id is not None:
        wire[CORRELATION_ID] = str(correlation_id)
    return body, wire


def decode(delivery: Delivery, declared: Codec | None) -> Message:
    """Turn a delivery into a :class:`Message` (attempt 1).

    The codec is the one named by the ``content-type`` header, else the subscription's
    ``declared`` codec, else none (payload = the raw bytes). An unknown content type also
    leaves the payload as bytes. Raises :class:`~msgbus.DecodeError` when the codec rejects
    the body.
    """
    headers = delivery.headers
    content_type = headers.get(CONTENT_TYPE)
    codec = codec_for_content_type(content_type) if content_type else declared
    body = delivery.body
    payload = codec.decode(body) if codec is not None else body
    user = {k: v for k, v in headers.items() if k not in METADATA_HEADERS}
    stamp = headers.get(TIMESTAMP)
    try:
        timestamp = int(stamp) / 1000 if stamp else 0.0
    except ValueError:
        timestamp = 0.0
    message_id = cloudevents.event_id(headers)  # a CloudEvent's id wins (msgbus sets both)
    if message_id is None:
        message_id = headers.get(MESSAGE_ID)
    elif stamp is None:  # a CloudEvent from another producer: its time
        timestamp = (cloudevents.event_time_ms(headers) or 0) / 1000 or timestamp
    return build_message(
        message_id or delivery.native_id or "",
        delivery.topic,
        payload,
        body,
        delivery.key,
        user,
        timestamp,
        content_type,
        headers.get(CORRELATION_ID),
        delivery.redelivered,
    )
