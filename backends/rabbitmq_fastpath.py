"""The pika fast path of the RabbitMQ backend: coalesced frame writes, behind a capability check.

pika hands every frame it emits to its transport on its own (``Connection._adapter_emit_data``),
and the transport usually sends each at once: three system calls per published message
(method, header, body). :func:`coalesced_writes` wraps that private hook for the length of a
block on the I/O thread, collecting the frames and passing them on in writes of up to
256 KiB (measured gain: docs/rabbitmq.md).

:func:`unavailable` checks that the installed pika is a version this was verified on
(:data:`VERIFIED`) and still has the hook; when not, or when turned off (the backend option
``fast_path=false`` or ``MSGBUS_FAST_PATH=0``), the backend lets pika write each frame
itself and logs one line saying why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.connection

from msgbus.backendkit.fastpath import unverified_version

__all__ = ["VERIFIED", "coalesced_writes", "unavailable"]

VERIFIED = ((1, 4),)
"""pika (major, minor) versions the fast path was verified on (the ``rabbitmq`` extra pins
this range)."""


def unavailable() -> str | None:
    """Why the fast path cannot be used with the installed pika, or None when it can."""
    version = getattr(pika, "__version__", "unknown")
    reason = unverified_version("pika", version, VERIFIED)
    if reason is not None:
        return reason
    if not callable(getattr(pika.connection.Connection, "_adapter_emit_data", None)):
        return f"pika {version} has no Connection._adapter_emit_data"
    return None


class _Coalescer:
    """Collects emitted frames and passes them on in writes of up to ~256 KiB."""

    __slots__ = ("chunks", "emit", "size")

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit
        self.chunks: list[bytes] = []
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= 262_144:
            self.flush()

    def flush(self) -> None:
        if self.chunks:
            data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            self.chunks = []
            self.size = 0
            self.emit(data)


@contextlib.contextmanager
def coalesced_writes(conn: Any) -> Iterator[None]:
    """I/O thread: hand the frames pika emits inside the block to its transport in few
    writes (pika otherwise writes, and usually sends, each frame on its own: three system
    calls per published message)."""
    if conn is None or "_adapter_emit_data" in vars(conn) or not conn.is_open:
        yield
        return
    coalescer = _Coalescer(conn._adapter_emit_data)
    conn._adapter_emit_data = coalescer
    try:
        yield
    finally:
        del conn._adapter_emit_data
        if conn.is_open:
            coalescer.flush()
