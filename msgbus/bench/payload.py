"""The benchmark's message: an ``account.created`` event with a ``bench`` stamp, optionally
padded to a target body size.

The stamp ``{"p": producer, "s": sequence, "t": intended send time, "k": key}`` travels in the JSON
body (``t`` is ``time.monotonic_ns()``, comparable across processes on one Linux machine),
so msgbus and the raw clients carry exactly the same bytes and no broker timestamp is used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["ACCOUNT_CREATED", "PayloadFactory", "make_factory", "stamp_of"]

ACCOUNT_CREATED: dict[str, Any] = {
    "type": "account.created",
    "version": 1,
    "event_id": "6f1c0a7e-2b9d-4f3a-8c5e-1d0b7a6f4e2c",
    "account_id": 1234567,
    "owner": "Ana Example",
    "email": "ana.example@example.com",
    "currency": "EUR",
    "created_at": "2026-11-26T18:00:00.000000+00:00",
}
"""The bank's ``account.created`` event (about 250 bytes of JSON with the stamp)."""

PayloadFactory = Callable[[int, int, int, str | None], dict[str, Any]]
"""``factory(producer, sequence, intended_ns, key) -> payload dict``."""

_STAMP_WIDTH = len(json.dumps({"bench": {"p": 99, "s": 9_999_999, "t": 10**19, "k": "k999"}}))


def make_factory(body_bytes: int) -> PayloadFactory:
    """Return a payload factory. ``body_bytes`` 0: the event as is; otherwise the event gets
    a ``pad`` string so that its JSON body is about ``body_bytes`` long (within a few bytes:
    the stamp's numbers vary in width)."""
    base = dict(ACCOUNT_CREATED)
    pad = ""
    if body_bytes:
        overhead = len(json.dumps({**base, "pad": ""})) + _STAMP_WIDTH - 2
        pad = "x" * max(0, body_bytes - overhead)

    if not pad:

        def natural(producer: int, seq: int, intended_ns: int, key: str | None) -> dict[str, Any]:
            return {**base, "bench": {"p": producer, "s": seq, "t": intended_ns, "k": key}}

        return natural

    def padded(producer: int, seq: int, intended_ns: int, key: str | None) -> dict[str, Any]:
        stamp = {"p": producer, "s": seq, "t": intended_ns, "k": key}
        return {**base, "bench": stamp, "pad": pad}

    return padded


def stamp_of(payload: Any) -> tuple[int, int, int, str | None]:
    """``(producer, sequence, intended_ns, key)`` of a received payload; raises
    KeyError/TypeError for anything that is not a benchmark message."""
    stamp = payload["bench"]
    return stamp["p"], stamp["s"], stamp["t"], stamp["k"]
