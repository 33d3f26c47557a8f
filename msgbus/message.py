"""The received message, and the header names msgbus reserves for its metadata.

On the wire the body is the serialized payload alone. Metadata travels in headers whose
names are listed in :data:`RESERVED_HEADERS` (or start with ``msgbus-``); backends map them
to native properties where the broker has them (AMQP ``message_id``, ``content_type``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ATTEMPT",
    "CONTENT_TYPE",
    "CORRELATION_ID",
    "DLQ_ATTEMPTS",
    "DLQ_CONTENT_TYPE",
    "DLQ_ERROR",
    "DLQ_ERROR_TYPE",
    "DLQ_GROUP",
    "DLQ_TOPIC",
    "MESSAGE_ID",
    "RESERVED_HEADERS",
    "RESERVED_PREFIX",
    "TIMESTAMP",
    "Message",
    "is_reserved",
]

CONTENT_TYPE = "content-type"
"""Header carrying the codec's content type (``application/json``, ...)."""
MESSAGE_ID = "msgbus-id"
"""Header carrying the message id chosen by the publisher (32 hex chars by default)."""
TIMESTAMP = "msgbus-timestamp"
"""Header carrying the publish time in integer milliseconds since the epoch."""
CORRELATION_ID = "msgbus-correlation-id"
"""Header carrying the correlation id that ties a message to the request that caused it."""
RESERVED_PREFIX = "msgbus-"
"""Every header whose name starts with this prefix belongs to msgbus."""
DLQ_TOPIC = "msgbus-dlq-topic"
"""On a dead letter: the topic the message was first published to."""
DLQ_GROUP = "msgbus-dlq-group"
"""On a dead letter: the consumer group whose handler gave up on it."""
DLQ_ATTEMPTS = "msgbus-dlq-attempts"
"""On a dead letter: how many times the handler was called."""
DLQ_ERROR_TYPE = "msgbus-dlq-error-type"
"""On a dead letter: the qualified class name of the last exception."""
DLQ_ERROR = "msgbus-dlq-error"
"""On a dead letter: the text of the last exception (truncated to 1,000 characters)."""
ATTEMPT = "msgbus-attempt"
"""On a message redelivered by a durable retry (``retry_mode="durable"``): its attempt number."""
DLQ_CONTENT_TYPE = "msgbus-dlq-content-type"
"""On a dead letter that could not be decoded: its original content type (the dead letter
itself is marked ``application/octet-stream`` so that it can always be read)."""

RESERVED_HEADERS = frozenset({CONTENT_TYPE, MESSAGE_ID, TIMESTAMP, CORRELATION_ID})
"""Header names users may not set themselves (besides anything starting ``msgbus-``)."""

METADATA_HEADERS = RESERVED_HEADERS
"""Headers turned into :class:`Message` attributes and left out of ``Message.headers``."""


def is_reserved(name: str) -> bool:
    """Return True when ``name`` is a header msgbus reserves (case-insensitive)."""
    lowered = name.lower()
    return lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIX)


@dataclass(frozen=True)
class Message:
    """One message as a handler receives it. Immutable and safe to share between threads.

    - ``id``: the publisher's message id (or the broker's, for messages from plain clients).
    - ``topic``/``key``: where it was published and its ordering key (None when unkeyed).
    - ``payload``: the decoded body (by ``content_type``; ``bytes`` when there is none).
    - ``body``: the raw bytes exactly as received.
    - ``headers``: user headers plus dead-letter headers; metadata headers are attributes.
    - ``timestamp``: publish time, seconds since the epoch (0.0 when unknown).
    - ``attempt``: 1 for the first handler call, 2 for the first retry, and so on.
    - ``redelivered``: the broker says an earlier delivery of it was not acknowledged.
    """

    id: str
    topic: str
    payload: Any
    body: bytes = field(repr=False)
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timestamp: float = 0.0
    attempt: int = 1
    content_type: str | None = None
    correlation_id: str | None = None
    redelivered: bool = False


_new = object.__new__


def build_message(
    id: str,
    topic: str,
    payload: Any,
    body: bytes,
    key: str | None,
    headers: Mapping[str, str],
    timestamp: float,
    content_type: str | None,
    correlation_id: str | None,
    redelivered: bool,
) -> Message:
    """Construct a :class:`Message` (attempt 1) without the frozen ``__init__``'s cost.

    Used on the receive path, where it runs once per message; the result is the same as
    calling ``Message(...)`` with these fields.
    """
    message = _new(Message)
    fields = message.__dict__
    fields["id"] = id
    fields["topic"] = topic
    fields["payload"] = payload
    fields["body"] = body
    fields["key"] = key
    fields["headers"] = headers
    fields["timestamp"] = timestamp
    fields["attempt"] = 1
    fields["content_type"] = content_type
    fields["correlation_id"] = correlation_id
    fields["redelivered"] = redelivered
    return message
