"""The AMQP 0-9-1 mapping of msgbus headers to message properties and back (driver-free).

Used by every backend that speaks AMQP 0-9-1 (pika, py-amqp through kombu), so a message
published by one reads the same through the other. The rule, once:

- ``content-type`` → ``content_type``, ``msgbus-id`` → ``message_id``,
  ``msgbus-correlation-id`` → ``correlation_id`` when the value is ASCII and fits a
  short string (255 bytes); a value that does not fit travels as a header of the same name
  instead (and comes back the same way).
- The publish time in ``msgbus-timestamp`` (milliseconds) travels as that header and as
  ``timestamp`` (whole seconds).
- Every other header goes into the headers table as a string; the key as ``msgbus-key``.
- A header name longer than 255 bytes (AMQP's short-string limit on table field names) is
  refused with :class:`~msgbus.ConfigurationError` before anything is sent.

Back: table values that are not strings (set by plain AMQP clients) become their text; a
message without ``msgbus-timestamp`` gets its ``timestamp`` in milliseconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from msgbus.backendkit.headers import KEY_HEADER, as_text
from msgbus.errors import ConfigurationError
from msgbus.message import CONTENT_TYPE, CORRELATION_ID, MESSAGE_ID, TIMESTAMP

__all__ = ["SHORTSTR", "AmqpProperties", "from_amqp", "to_amqp"]

SHORTSTR = 255
"""The longest AMQP short string (names of exchanges, queues, routing keys, table fields)."""

_PROPERTY = {CONTENT_TYPE: 0, MESSAGE_ID: 1, CORRELATION_ID: 2}


class AmqpProperties(NamedTuple):
    """The AMQP basic properties msgbus sets (None: not set) and the headers table."""

    content_type: str | None
    message_id: str | None
    correlation_id: str | None
    timestamp: int | None
    headers: dict[str, str]


def to_amqp(headers: Mapping[str, str], key: str | None) -> AmqpProperties:
    """msgbus ``headers`` and ``key`` → AMQP properties (see the module docstring).

    Raises :class:`~msgbus.ConfigurationError` for a header name over 255 bytes. Pure.
    """
    props: list[str | None] = [None, None, None]
    table: dict[str, str] = {}
    timestamp = None
    for name, value in headers.items():
        slot = _PROPERTY.get(name)
        if slot is not None and len(value) <= SHORTSTR and value.isascii():
            props[slot] = value
            continue
        if len(name) > SHORTSTR // 4 and len(name.encode()) > SHORTSTR:
            raise ConfigurationError(
                f"header name {name[:40]!r}... is longer than AMQP's 255 bytes"
            )
        table[name] = value
        if name == TIMESTAMP:
            try:
                timestamp = int(value) // 1000
            except ValueError:
                timestamp = None
    if key is not None:
        table[KEY_HEADER] = key
    return AmqpProperties(props[0], props[1], props[2], timestamp, table)


def from_amqp(
    table: Mapping[str, Any] | None,
    content_type: Any,
    message_id: Any,
    correlation_id: Any,
    timestamp: Any,
) -> tuple[dict[str, str], str | None]:
    """AMQP properties of a received message → msgbus headers and the key. Pure; never
    raises for odd values a plain client set (they become text, a bad timestamp is left out).
    """
    out: dict[str, str] = {}
    key = None
    if table:
        for name, value in table.items():
            if name == KEY_HEADER:
                key = as_text(value)
            else:
                out[name] = value if value.__class__ is str else as_text(value)
    if content_type:
        out[CONTENT_TYPE] = as_text(content_type)
    if message_id:
        out[MESSAGE_ID] = as_text(message_id)
    if correlation_id:
        out[CORRELATION_ID] = as_text(correlation_id)
    if TIMESTAMP not in out and timestamp:
        with contextlib.suppress(TypeError, ValueError):
            out[TIMESTAMP] = str(int(timestamp) * 1000)
    return out, key
