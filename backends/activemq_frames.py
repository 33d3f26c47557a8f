"""ActiveMQ's STOMP frames as msgbus sees them: header mapping both ways and destinations.

Which msgbus header becomes which STOMP header (and back), the names STOMP or ActiveMQ would
interpret and so travel renamed, ActiveMQ's limits on header lines and counts, and the
virtual-topic destinations of topics and consumer groups. Pure functions; thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping

from msgbus.backendkit import KEY_HEADER
from msgbus.errors import ConfigurationError
from msgbus.message import CONTENT_TYPE, CORRELATION_ID, RESERVED_PREFIX, TIMESTAMP

__all__ = [
    "MARKER_HEADER",
    "RENAMED_PREFIX",
    "SCHEDULED_DELAY",
    "TOPIC_PREFIX",
    "check_name",
    "delivery_headers",
    "group_destination",
    "topic_destination",
    "wire_headers",
]

TOPIC_PREFIX = "VirtualTopic."
RENAMED_PREFIX = "msgbus-h-"
SCHEDULED_DELAY = "AMQ_SCHEDULED_DELAY"
"""ActiveMQ's header for a delivery delay in milliseconds (needs the broker's scheduler)."""
MARKER_HEADER = "msgbus-marker"
"""Header of the empty message each group subscription sends to its own queue (see
:meth:`msgbus.backends.activemq_subscription.ActiveMQSubscription.on_up`)."""
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

# Header names STOMP or ActiveMQ interpret on SEND or set on MESSAGE; user headers with these
# names (compared lower-cased) travel renamed as msgbus-h-<name>.
_PROTOCOL_HEADERS = frozenset(
    {
        "accept-version",
        "ack",
        "content-length",
        "content-type",
        "correlation-id",
        "destination",
        "expires",
        "heart-beat",
        "host",
        "id",
        "login",
        "message",
        "message-id",
        "original-destination",
        "passcode",
        "persistent",
        "priority",
        "receipt",
        "receipt-id",
        "redelivered",
        "reply-to",
        "selector",
        "server",
        "session",
        "subscription",
        "timestamp",
        "transaction",
        "transformation",
        "transformation-error",
        "type",
        "version",
    }
)
_PROTOCOL_PREFIXES = ("jms", "amq_", "activemq.")
# Headers of a MESSAGE frame that describe the delivery, not the message: not user headers.
_FRAME_ONLY = frozenset(
    {
        "ack",
        "content-length",
        "destination",
        "expires",
        "message-id",
        "original-destination",
        "persistent",
        "priority",
        "redelivered",
        "reply-to",
        "subscription",
        "timestamp",
        "type",
        "JMSXUserID",
        "JMSXGroupID",
        "JMSXGroupSeq",
        "transformation",
    }
)


def _escape_name(name: str) -> str:
    # stomp.py 9.0 escapes header values but not names; STOMP 1.2 wants both escaped.
    return name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace(":", "\\c")


def _needs_rename(name: str) -> bool:
    lowered = name.lower()
    return not name or lowered in _PROTOCOL_HEADERS or lowered.startswith(_PROTOCOL_PREFIXES)


def _check_text(what: str, text: str) -> None:
    if "\x00" in text:
        raise ConfigurationError(f"{what} contains a NUL character, which STOMP cannot carry")


def wire_headers(headers: Mapping[str, str], key: str | None) -> dict[str, str]:
    """Map msgbus headers (and ``key``) to the headers of a STOMP SEND (names escaped).

    Raises :class:`~msgbus.ConfigurationError` for a NUL character in a name or value, a
    header line longer than ActiveMQ's 10 KiB or more headers than it takes. Pure function;
    thread-safe.
    """
    wire: dict[str, str] = {}
    for name, value in headers.items():
        _check_text("a header name", name)
        _check_text(f"the value of header {name!r}", value)
        if name == CONTENT_TYPE:
            wire["content-type"] = value
        elif name == CORRELATION_ID:
            wire["correlation-id"] = value
        elif name.startswith(RESERVED_PREFIX):
            wire[_escape_name(name)] = value
        elif _needs_rename(name):
            wire[_escape_name(RENAMED_PREFIX + name)] = value
        else:
            wire[_escape_name(name)] = value
    if key is not None:
        _check_text("the key", key)
        wire[KEY_HEADER] = key
        if key:
            wire["JMSXGroupID"] = key
    if len(wire) > _MAX_HEADERS:
        raise ConfigurationError(f"ActiveMQ takes at most {_MAX_HEADERS} headers, not {len(wire)}")
    for name, value in wire.items():
        if _escaped_length(name) + 1 + _escaped_length(value) > _MAX_HEADER_LINE:
            raise ConfigurationError(
                f"header {name[:40]!r} is longer than the {_MAX_HEADER_LINE} bytes ActiveMQ "
                "accepts for one header (name, ':' and value, escaped, in UTF-8)"
            )
    return wire


_MAX_HEADER_LINE = 10 * 1024
"""ActiveMQ's limit for one STOMP header line (StompWireFormat's MAX_HEADER_LENGTH)."""
_MAX_HEADERS = 1000 - 16
"""ActiveMQ's limit of headers per frame (MAX_HEADERS), less those msgbus and stomp.py add."""


def _escaped_length(text: str) -> int:
    """Bytes of ``text`` on the wire, counting the two-byte STOMP 1.2 escapes of backslash,
    newline, carriage return and colon."""
    return len(text.encode("utf-8")) + sum(text.count(c) for c in "\\\n\r:")


def delivery_headers(frame: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """Map the headers of a STOMP MESSAGE back to msgbus headers and the key. Thread-safe."""
    out: dict[str, str] = {}
    key = None
    for name, value in frame.items():
        if name in _FRAME_ONLY:
            continue
        if name == "correlation-id":
            out[CORRELATION_ID] = value
        elif name == KEY_HEADER:
            key = value
        elif name.startswith(RENAMED_PREFIX):
            out[name[len(RENAMED_PREFIX) :]] = value
        else:
            out[name] = value
    if TIMESTAMP not in out and frame.get("timestamp", "0") not in ("", "0"):
        out[TIMESTAMP] = frame["timestamp"]
    return out, key


def check_name(what: str, name: str) -> None:
    """Raise ConfigurationError unless ``name`` (a topic or group) is letters, digits, '.',
    '_' and '-' only (what ActiveMQ destinations and virtual-topic selectors take)."""
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise ConfigurationError(
            f"invalid {what} {name!r} for ActiveMQ: use letters, digits, '.', '_' and '-' only"
        )


def topic_destination(topic: str) -> str:
    """The STOMP destination messages for ``topic`` are sent to."""
    return f"/topic/{TOPIC_PREFIX}{topic}"


def group_destination(topic: str, group: str | None) -> str:
    """The STOMP destination a member of ``group`` subscribes to (the topic when None)."""
    if group is None:
        return topic_destination(topic)
    return f"/queue/Consumer.{group.replace('.', '~')}.{TOPIC_PREFIX}{topic}"
