"""The topics bound on a kombu backend's exchange, for ``msgbus dlq list`` without topics.

kombu's virtual transports keep every queue binding of an exchange where any process can
read it — Redis in the set ``_kombu.binding.<exchange>``, the SQLAlchemy transport in this
project's ``kombu_binding`` table (:mod:`msgbus.backends.kombu_sqla`), the memory
transport in the process — and answer ``channel.get_table(exchange)``; a binding's routing
key is the msgbus topic (``<topic>.dlq`` for a dead-letter store). AMQP has no such call
(py-amqp channels have no ``get_table``): None, and the caller names the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from msgbus.errors import BrokerUnavailable

__all__ = ["bound_topics"]

log = logging.getLogger("msgbus.kombu")


def bound_topics(new_connection: Callable[[], Any], exchange: str) -> list[str] | None:
    """The routing keys bound on ``exchange`` (sorted), read on a short-lived connection of
    its own (the backend's belongs to its I/O thread); None where the transport cannot list
    its bindings. Raises :class:`~msgbus.BrokerUnavailable` when the broker cannot be
    reached."""
    conn = new_connection()
    try:
        try:
            conn.connect()
            channel = conn.channel()
        except Exception as exc:
            raise BrokerUnavailable(f"kombu: listing the topics of {exchange!r}: {exc}") from exc
        get_table = getattr(channel, "get_table", None)
        if get_table is None:
            return None
        try:
            rows = get_table(exchange)
        except Exception as exc:  # Redis: no binding at all is an "inconsistency"
            log.debug("kombu: no bindings on %r: %s: %s", exchange, type(exc).__name__, exc)
            rows = []
        return sorted({key for key, _pattern, _queue in rows if key})
    finally:
        try:
            conn.release()
        except Exception as exc:
            log.debug("kombu: releasing the listing connection failed: %s", exc)
