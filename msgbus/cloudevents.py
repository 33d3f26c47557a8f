"""CloudEvents 1.0 in binary content mode: ``bus.publish(..., codec="cloudevents")``.

The body stays the event's ``data`` alone (JSON by default, or the codec the payload calls
for: bytes, text); the context attributes travel as headers, named as each protocol binding
says:

- **Kafka** (the Kafka protocol binding): ``ce_id``, ``ce_source``, ``ce_type``,
  ``ce_specversion``, ``ce_time``, ``ce_subject``, extensions ``ce_<name>``; the record
  header ``content-type`` is ``datacontenttype``.
- **AMQP 0-9-1 (RabbitMQ, kombu) and STOMP (ActiveMQ)**: the AMQP binding is written for
  AMQP 1.0, where attributes are *application properties* ``cloudEvents_<name>`` (or
  ``cloudEvents:<name>``) and ``datacontenttype`` is the ``content-type`` property. msgbus
  maps it onto the nearest thing: application properties become AMQP 0-9-1 header-table
  entries (STOMP frame headers on ActiveMQ) named ``cloudEvents_<name>`` (the ``_`` form,
  which JMS and STOMP can carry), ``datacontenttype`` the ``content_type`` property (the
  ``content-type`` header on STOMP). Values are strings; ``time`` is RFC 3339
  (``2026-12-01T22:14:03.120Z``), which the binding lets receivers accept besides an AMQP
  timestamp.
- **memory** and other backends: the AMQP names.

Reading works on any backend and with either prefix (``ce_``, ``cloudEvents_``,
``cloudEvents:``): :func:`attributes` gives a message's context attributes, and a message
without the msgbus id or timestamp gets the event's ``id`` and ``time`` (so events from Dapr,
Knative or the CloudEvents SDKs read as msgbus messages with their ids).

Publishing: the event ``id`` is the message id (``message_id=``, else a new one), ``time``
the publish time, ``specversion`` 1.0. ``type`` and ``source`` come from the headers
``ce_type`` and ``ce_source`` (any of the three prefixes; also ``ce_subject``,
``ce_dataschema`` and extensions), defaulting to the topic and ``/msgbus/<topic>``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from msgbus.errors import ConfigurationError
from msgbus.message import MESSAGE_ID, TIMESTAMP

__all__ = [
    "AMQP_PREFIX",
    "CODEC",
    "KAFKA_PREFIX",
    "PREFIXES",
    "SPECVERSION",
    "attribute_name",
    "attributes",
    "bind",
    "event_id",
    "event_time_ms",
    "prefix_for",
]

CODEC = "cloudevents"
"""The ``codec=`` name that publishes a message as a CloudEvent."""
SPECVERSION = "1.0"
KAFKA_PREFIX = "ce_"
AMQP_PREFIX = "cloudEvents_"
AMQP_COLON_PREFIX = "cloudEvents:"
PREFIXES = (KAFKA_PREFIX, AMQP_PREFIX, AMQP_COLON_PREFIX)
"""Every header prefix read as a CloudEvents attribute."""
_SET_BY_MSGBUS = ("id", "specversion", "time", "datacontenttype")


def prefix_for(backend: Any) -> str:
    """The attribute header prefix for ``backend``: its ``cloudevents_prefix`` attribute if
    it has one, else ``ce_`` for Kafka schemes and ``cloudEvents_`` for the others."""
    prefix = getattr(backend, "cloudevents_prefix", None)
    if isinstance(prefix, str):
        return prefix
    schemes = getattr(backend, "schemes", ())
    return KAFKA_PREFIX if any(s.startswith("kafka") for s in schemes) else AMQP_PREFIX


def attribute_name(header: str) -> str | None:
    """The CloudEvents attribute a header carries (``ce_type`` → ``type``), or None."""
    for prefix in PREFIXES:
        if header.startswith(prefix) and len(header) > len(prefix):
            return header[len(prefix) :].lower()
    return None


def attributes(headers: Mapping[str, str]) -> dict[str, str]:
    """The CloudEvents context attributes found in ``headers`` (a message's headers or a
    delivery's), by attribute name; empty when the message is not a CloudEvent."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        attr = attribute_name(name)
        if attr is not None:
            out.setdefault(attr, value)
    return out


def event_id(headers: Mapping[str, str]) -> str | None:
    """The event ``id`` attribute in ``headers``, if any."""
    for prefix in PREFIXES:
        value = headers.get(prefix + "id")
        if value:
            return value
    return None


def event_time_ms(headers: Mapping[str, str]) -> int | None:
    """The event ``time`` in ``headers`` as epoch milliseconds (RFC 3339 text, or an AMQP
    timestamp in milliseconds as text), or None when absent or unreadable."""
    for prefix in PREFIXES:
        value = headers.get(prefix + "time")
        if not value:
            continue
        if value.isdigit():
            return int(value)
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return int(stamp.timestamp() * 1000)
    return None


def _rfc3339(ms: int) -> str:
    stamp = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bind(wire: dict[str, str], *, topic: str, prefix: str) -> dict[str, str]:
    """Turn the wire headers of a msgbus message into a binary-mode CloudEvent's (in place;
    returned): attributes given as headers under any prefix are renamed to ``prefix``,
    ``id``/``specversion``/``time`` are set, ``type``/``source`` defaulted.

    Raises :class:`~msgbus.ConfigurationError` for an attribute msgbus sets itself (``id``:
    use ``message_id=``; ``time``, ``specversion``, ``datacontenttype``) or a bad name.
    """
    given: dict[str, str] = {}
    for name in [n for n in wire if attribute_name(n) is not None]:
        attr = attribute_name(name)
        assert attr is not None
        if attr in _SET_BY_MSGBUS:
            hint = " (use message_id=)" if attr == "id" else ""
            raise ConfigurationError(f"the CloudEvents attribute {attr!r} is set by msgbus{hint}")
        if not attr.isalnum() or not attr.isascii():
            raise ConfigurationError(
                f"CloudEvents attribute names are lower-case letters and digits: {name!r}"
            )
        given[attr] = wire.pop(name)
    given.setdefault("type", topic)
    given.setdefault("source", f"/msgbus/{topic}")
    given["id"] = wire[MESSAGE_ID]
    given["specversion"] = SPECVERSION
    given["time"] = _rfc3339(int(wire[TIMESTAMP]))
    for attr, value in given.items():
        wire[prefix + attr] = value
    return wire
