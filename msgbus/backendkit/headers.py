"""Header rules every backend shares: the key header, text of foreign values, the id fallback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgbus.envelope import new_message_id
from msgbus.message import MESSAGE_ID

__all__ = ["KEY_HEADER", "as_text", "with_message_id"]

KEY_HEADER = "msgbus-key"
"""The header that carries the message key where the broker has no key of its own
(``Delivery.key`` on receipt). The one definition; backends import it from here."""


def as_text(value: Any) -> str:
    """A header value a plain (non-msgbus) client set, as text: bytes decoded as UTF-8
    (undecodable bytes replaced), None as ``""``, anything else through ``str``."""
    if value.__class__ is str:
        return value  # type: ignore[no-any-return]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def with_message_id(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers``, with a fresh ``msgbus-id`` added when it has none (what a broker-assigned
    id is for raw publishers). Returns ``headers`` itself when it already has one."""
    if MESSAGE_ID in headers:
        return headers
    return {**headers, MESSAGE_ID: new_message_id()}
