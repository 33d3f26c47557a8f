"""What the raw clients of every broker share: the JSON body and the URL's endpoints."""

from __future__ import annotations

import json
from typing import Any

from msgbus.url import BusURL

__all__ = ["dumps", "endpoints"]


def dumps(payload: dict[str, Any]) -> bytes:
    """``payload`` as the JSON body the raw clients send."""
    return json.dumps(payload).encode()


def endpoints(url: str, default_port: int) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of a msgbus-style URL, ``default_port`` where none."""
    parsed = BusURL.parse(url)
    return [(h.host, h.port or default_port) for h in parsed.hosts]
