"""A private Redis server (Debian package ``redis-server``) as a child process.

Started as ``redis-server --bind 127.0.0.1 --port N --dir DATA --save '' --appendonly
yes|no`` without any config file, so nothing of ``/etc/redis`` applies. Readiness is
``PING`` answered by ``+PONG``, then ``INFO server`` for the version.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from msgbus.testing.brokers.base import (
    HOST,
    BrokerNotInstalled,
    BrokerProcess,
    HandshakeError,
    ProcessSpec,
)

__all__ = ["Redis", "redis_handshake"]

INSTALL_HINT = "apt-get update && apt-get install -y redis-server"


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        raw = part.encode()
        out.append(f"${len(raw)}\r\n".encode() + raw + b"\r\n")
    return b"".join(out)


def _read_line(sock: socket.socket, buffer: bytearray) -> bytes:
    while b"\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError("connection closed before a complete Redis reply")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line


def redis_handshake(host: str, port: int, timeout: float = 5.0) -> dict[str, str]:
    """Send ``PING`` (requires ``+PONG``) then ``INFO server``; return INFO's fields.

    Raises OSError when the port does not answer and :class:`HandshakeError` on any other
    reply (e.g. ``-LOADING`` while a large AOF is read back).
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        buffer = bytearray()
        sock.sendall(_command("PING"))
        reply = _read_line(sock, buffer)
        if reply != b"+PONG":
            raise HandshakeError(f"Redis PING answered {reply[:80]!r}")
        sock.sendall(_command("INFO", "server"))
        header = _read_line(sock, buffer)
        if not header.startswith(b"$"):
            raise HandshakeError(f"Redis INFO answered {header[:80]!r}")
        size = int(header[1:])
        while len(buffer) < size + 2:
            chunk = sock.recv(4096)
            if not chunk:
                raise HandshakeError("connection closed inside the INFO reply")
            buffer += chunk
        text = bytes(buffer[:size]).decode("utf-8", "replace")
        sock.sendall(_command("QUIT"))
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class Redis(BrokerProcess):
    """A private Redis server on 127.0.0.1 (``url``: ``redis://127.0.0.1:PORT/0``).

    ``persistent=False`` (default): no RDB snapshots, no AOF; data is lost on any restart.
    ``persistent=True``: append-only file in ``data_dir`` (``appendfsync everysec``), so data
    survives ``restart()`` and ``stop()`` + ``start()``; after ``kill()`` up to the last second
    of writes may be lost. See :class:`~msgbus.testing.brokers.base.BrokerProcess` for the
    lifecycle.
    """

    kind = "redis"
    product = "Redis"
    install_hint = INSTALL_HINT
    default_startup_timeout = 20.0
    default_stop_timeout = 10.0

    def __init__(
        self,
        port: int | None = None,
        *,
        persistent: bool = False,
        data_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        db: int = 0,
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
        ipv6: bool = False,
    ) -> None:
        """``port``: the Redis port (None: free port below 32768). ``persistent``: AOF on/off.
        ``binary``: ``redis-server`` (None: from PATH or /usr/bin). ``db``: the database
        number in :attr:`url`. ``ipv6``: also listen on ``[::1]`` (same port). Other
        parameters: see :class:`BrokerProcess`."""
        super().__init__(
            port, data_dir=data_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self.persistent = persistent
        self.binary = Path(binary) if binary is not None else None
        self.db = db
        self.ipv6 = ipv6

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/DB``."""
        return f"redis://{HOST}:{self.port}/{self.db}"

    @property
    def description(self) -> str:
        """E.g. ``Redis 7.0.15, in-memory (no persistence)``."""
        version = f" {self._version}" if self._version else ""
        storage = (
            "append-only file on disk (fsync every second)"
            if self.persistent
            else "in-memory (no persistence)"
        )
        return f"Redis{version}, {storage}"

    def _binary(self) -> Path | None:
        if self.binary is not None:
            return self.binary
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
        )
        return Path(found) if found else None

    def check_installed(self) -> None:
        """Raise :class:`BrokerNotInstalled` unless ``redis-server`` is executable."""
        binary = self._binary()
        if binary is None or not (binary.is_file() and os.access(binary, os.X_OK)):
            raise BrokerNotInstalled(
                "Redis",
                f"no executable redis-server ({binary or 'not on PATH'})",
                self.install_hint,
            )

    def _main_spec(self) -> ProcessSpec:
        argv = [
            str(self._binary()),
            "--bind",
            HOST,
            *(["::1"] if self.ipv6 else []),
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "",
        ]
        return ProcessSpec(
            name="redis",
            argv=argv,
            env=self._base_env(),
            cwd=self.data_dir,
            log_path=self.log_dir / "redis.log",
        )

    def _handshake(self, timeout: float) -> str | None:
        return redis_handshake(HOST, self.port, timeout).get("redis_version") or None
