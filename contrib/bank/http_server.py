"""Run an ASGI app with uvicorn on a background thread (for the demo and the tests).

The listening socket is bound before uvicorn starts (port 0 picks a free one), so the port is
known at once and never raced for.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["ServerThread"]


class ServerThread:
    """Serve ``app`` on ``host:port`` from a daemon thread.

    :meth:`start` returns once uvicorn accepts connections (raises ``RuntimeError`` if it did
    not within ``timeout``); :meth:`stop` shuts it down gracefully. ``url`` is
    ``http://host:port``. Not restartable.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        # IPPROTO_TCP explicitly, so that asyncio turns Nagle off (see smtp_sink.py).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        # lifespan "on": the app's startup (bus, outbox relay) runs before start() returns
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="bank-http", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL, ``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        """Start serving (the app's lifespan startup included); return when ready."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"HTTP server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish open requests, and join the thread (bounded by ``timeout``)."""
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
