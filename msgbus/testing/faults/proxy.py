"""A TCP fault proxy on 127.0.0.1, between a client and one broker port.

``FaultProxy(target_port)`` listens on a free port below 32768 and forwards every connection
to ``127.0.0.1:target_port``, one thread per direction. While it runs, a test or a chaos
schedule can:

* ``delay(seconds)`` — hold every chunk that much before forwarding it (order kept);
* ``partition()`` / ``heal()`` — stop forwarding in both directions while connections stay
  open (a cut network: the peers see silence, then their heartbeats time out), and resume;
* ``refuse(True)`` — close new connections at once (a port nobody answers);
* ``reset_all()`` — abort every open connection with a TCP RST on both sides.

Toxiproxy does the same as a separate Go server that is not installed here; this is a small
standard-library module instead. Not a performance tool: each chunk costs two thread hops.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Self

from msgbus.testing.brokers.base import HOST, pick_free_port, release_port

__all__ = ["FaultProxy"]

_CHUNK = 65536


def _abort(sock: socket.socket) -> None:
    """Close ``sock`` with a RST (SO_LINGER 0), ignoring errors."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:port`` to ``127.0.0.1:target_port`` with faults on
    demand (see the module docstring). Thread-safe; ``close()`` (or the ``with`` block's end)
    stops it and aborts every connection."""

    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        """``target_port``: the broker port to forward to; ``port``: where to listen (None: a
        free port below 32768)."""
        self.target_port = target_port
        self._own_port = port is None
        self.port = pick_free_port() if port is None else port
        self._delay = 0.0
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self.accepted = 0
        """Connections accepted so far."""

    # ------------------------------------------------------------------ control

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, where clients connect."""
        return f"{HOST}:{self.port}"

    def start(self) -> Self:
        """Listen and start the accept thread; returns self."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((HOST, self.port))
            listener.listen(64)
        except OSError:
            listener.close()  # the port is taken: no socket left behind
            raise
        self._listener = listener
        threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy").start()
        return self

    def delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before forwarding it (0: no delay)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._delay = seconds

    def partition(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self._flowing.clear()

    def heal(self) -> None:
        """Forward again after :meth:`partition`, and accept connections after :meth:`refuse`."""
        self._refusing = False
        self._flowing.set()

    def refuse(self, on: bool = True) -> None:
        """Close new connections at once while ``on``."""
        self._refusing = on

    def reset_all(self) -> int:
        """Abort every open connection with a RST on both sides; return how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _abort(client)
            _abort(upstream)
        return len(pairs)

    @property
    def open_connections(self) -> int:
        """Connections currently proxied."""
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        """Stop listening and abort every connection. Idempotent."""
        self._closed.set()
        self._flowing.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        self.reset_all()
        if self._own_port:
            release_port(self.port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.address} -> {HOST}:{self.target_port}>"

    # ------------------------------------------------------------------ threads

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._closed.is_set() and listener is not None:
            try:
                client, _addr = listener.accept()
            except OSError:
                return
            if self._refusing:
                _abort(client)
                continue
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, client, upstream), daemon=True
                ).start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        client: socket.socket,
        upstream: socket.socket,
    ) -> None:
        try:
            while not self._closed.is_set():
                self._flowing.wait()
                try:
                    ready, _w, _x = select.select([src], [], [], 0.2)
                except (OSError, ValueError):
                    break
                if not ready:
                    continue
                if not self._flowing.is_set():
                    continue  # partitioned after select: leave the bytes in the kernel
                data = src.recv(_CHUNK)
                if not data:
                    break
                if self._delay:
                    time.sleep(self._delay)  # the fault itself: hold the bytes
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                pair = (client, upstream)
                if pair in self._pairs:
                    self._pairs.remove(pair)
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
