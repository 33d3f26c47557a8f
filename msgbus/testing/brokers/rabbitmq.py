"""A private RabbitMQ node (Debian package ``rabbitmq-server``) as a child process.

Each instance runs its own ``epmd`` on a private port (``ERL_EPMD_ADDRESS=127.0.0.1``) and
``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly (the ``/usr/sbin`` wrapper switches to the
``rabbitmq`` user), with ``HOME``, mnesia, logs, config, plugins file and pid file in the
instance's data folder, AMQP and Erlang distribution on 127.0.0.1. Nothing is shared with a
system RabbitMQ service. Readiness is a full AMQP 0-9-1 handshake as guest/guest on vhost
``/`` up to Channel.Open-Ok.

``RabbitMQ(tls=True)`` also opens an AMQPS listener (``tls_url``, ``amqps://``) on 127.0.0.1
with certificates made for this instance by ``openssl`` in ``<data_dir>/tls`` (see
:mod:`msgbus.testing.brokers.tls`); readiness then also needs the AMQP handshake over TLS,
checked against that CA.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from msgbus.testing.brokers.base import (
    HOST,
    BrokerHarnessError,
    BrokerNotInstalled,
    BrokerProcess,
    HandshakeError,
    ProcessSpec,
    recv_exactly,
)
from msgbus.testing.brokers.tls import TlsFiles, check_openssl, client_context, make_tls_files

__all__ = ["RabbitMQ", "amqp_handshake", "epmd_names"]

DEFAULT_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
INSTALL_HINT = "apt-get update && apt-get install -y rabbitmq-server"

_FRAME_METHOD = 1
_FRAME_HEARTBEAT = 8
_FRAME_END = 0xCE


# --------------------------------------------------------------------------- AMQP 0-9-1 codec


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("!B", len(raw)) + raw


def _longstr(raw: bytes) -> bytes:
    return struct.pack("!I", len(raw)) + raw


def _table(entries: dict[str, str]) -> bytes:
    body = b"".join(_shortstr(k) + b"S" + _longstr(v.encode()) for k, v in entries.items())
    return struct.pack("!I", len(body)) + body


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise HandshakeError("truncated AMQP frame")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fmt: str) -> Any:
        values = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return values[0] if len(values) == 1 else values

    def shortstr(self) -> str:
        return self.take(self.unpack("!B")).decode("utf-8", "replace")

    def longstr(self) -> bytes:
        return self.take(self.unpack("!I"))

    def table(self) -> dict[str, Any]:
        sub = _Reader(self.longstr())
        result: dict[str, Any] = {}
        while sub.pos < len(sub.data):
            key = sub.shortstr()
            result[key] = sub.value()
        return result

    def value(self) -> Any:
        kind = self.take(1)
        simple = {
            b"t": "!?",
            b"b": "!b",
            b"B": "!B",
            b"s": "!h",
            b"u": "!H",
            b"I": "!i",
            b"i": "!I",
            b"l": "!q",
            b"L": "!Q",
            b"f": "!f",
            b"d": "!d",
            b"T": "!Q",
        }
        if kind in simple:
            return self.unpack(simple[kind])
        if kind == b"S":
            return self.longstr().decode("utf-8", "replace")
        if kind == b"x":
            return self.longstr()
        if kind == b"F":
            return self.table()
        if kind == b"A":
            sub = _Reader(self.longstr())
            items = []
            while sub.pos < len(sub.data):
                items.append(sub.value())
            return items
        if kind == b"D":
            scale, unscaled = self.unpack("!BI")
            return unscaled / (10**scale)
        if kind == b"V":
            return None
        raise HandshakeError(f"unknown AMQP field type {kind!r}")


def _send_method(sock: socket.socket, channel: int, cls: int, method: int, args: bytes) -> None:
    payload = struct.pack("!HH", cls, method) + args
    sock.sendall(
        struct.pack("!BHI", _FRAME_METHOD, channel, len(payload)) + payload + bytes([_FRAME_END])
    )


def _read_method(sock: socket.socket, expect: tuple[int, int]) -> _Reader:
    while True:
        frame_type, _channel, size = struct.unpack("!BHI", recv_exactly(sock, 7))
        payload = recv_exactly(sock, size)
        if recv_exactly(sock, 1) != bytes([_FRAME_END]):
            raise HandshakeError("AMQP frame without frame-end octet")
        if frame_type == _FRAME_HEARTBEAT:
            continue
        if frame_type != _FRAME_METHOD:
            raise HandshakeError(f"unexpected AMQP frame type {frame_type}")
        reader = _Reader(payload)
        cls, method = reader.unpack("!HH")
        if (cls, method) in ((10, 50), (20, 40)):  # Connection.Close / Channel.Close
            code = reader.unpack("!H")
            text = reader.shortstr()
            raise HandshakeError(f"broker closed the AMQP connection: {code} {text}")
        if (cls, method) != expect:
            raise HandshakeError(f"expected AMQP method {expect}, got {(cls, method)}")
        return reader


def amqp_handshake(
    host: str,
    port: int,
    *,
    username: str = "guest",
    password: str = "guest",
    vhost: str = "/",
    timeout: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Do a complete AMQP 0-9-1 connection handshake and close it cleanly.

    Protocol header, Connection.Start → Start-Ok (PLAIN), Tune → Tune-Ok, Open(vhost) →
    Open-Ok, Channel.Open → Open-Ok, then Connection.Close → Close-Ok. Returns the server
    properties of Connection.Start (``product``, ``version``, ...). Raises OSError when the
    port does not answer and :class:`HandshakeError` when the broker answers otherwise (not
    AMQP 0-9-1, access refused, vhost missing, ...). With ``ssl_context`` the handshake runs
    over TLS (server certificate and host name checked by the context; a TLS failure is an
    ``ssl.SSLError``, an OSError).
    """
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
        if ssl_context is not None:
            sock = stack.enter_context(ssl_context.wrap_socket(sock, server_hostname=host))
        sock.settimeout(timeout)
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        first = recv_exactly(sock, 1)
        if first == b"A":
            rest = recv_exactly(sock, 7)
            raise HandshakeError(f"broker refused AMQP 0-9-1, offers {first + rest!r}")
        frame_type = first[0]
        _channel, size = struct.unpack("!HI", recv_exactly(sock, 6))
        payload = recv_exactly(sock, size)
        if frame_type != _FRAME_METHOD or recv_exactly(sock, 1) != bytes([_FRAME_END]):
            raise HandshakeError("malformed Connection.Start frame")
        start = _Reader(payload)
        if start.unpack("!HH") != (10, 10):
            raise HandshakeError("first AMQP method is not Connection.Start")
        major, minor = start.unpack("!BB")
        if (major, minor) != (0, 9):
            raise HandshakeError(f"AMQP version {major}-{minor}, expected 0-9")
        server_properties = start.table()
        mechanisms = start.longstr().decode().split()
        if "PLAIN" not in mechanisms:
            raise HandshakeError(f"broker offers no PLAIN login ({mechanisms})")
        credentials = b"\x00" + username.encode() + b"\x00" + password.encode()
        _send_method(
            sock,
            0,
            10,
            11,
            _table({"product": "msgbus broker harness"})
            + _shortstr("PLAIN")
            + _longstr(credentials)
            + _shortstr("en_US"),
        )
        tune = _read_method(sock, (10, 30))
        channel_max, frame_max, _heartbeat = tune.unpack("!HIH")
        _send_method(sock, 0, 10, 31, struct.pack("!HIH", channel_max, frame_max, 0))
        _send_method(sock, 0, 10, 40, _shortstr(vhost) + _shortstr("") + b"\x00")
        _read_method(sock, (10, 41))
        _send_method(sock, 1, 20, 10, _shortstr(""))
        _read_method(sock, (20, 11))
        _send_method(sock, 0, 10, 50, struct.pack("!H", 200) + _shortstr("bye") + b"\0\0\0\0")
        _read_method(sock, (10, 51))
        return server_properties


def epmd_names(host: str, port: int, timeout: float = 5.0) -> str:
    """Ask an epmd for its registered node names (EPMD ``NAMES_REQ``); return the text.

    Raises OSError when nothing listens and :class:`HandshakeError` on a malformed answer.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack("!H", 1) + b"n")
        reply = bytearray()
        while chunk := sock.recv(4096):
            reply += chunk
    if len(reply) < 4 or struct.unpack("!I", reply[:4])[0] != port:
        raise HandshakeError(f"not an epmd answer: {bytes(reply[:16])!r}")
    return reply[4:].decode("utf-8", "replace")


# --------------------------------------------------------------------------- the launcher


def _find_epmd() -> str | None:
    found = shutil.which("epmd")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"), reverse=True):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class RabbitMQ(BrokerProcess):
    """A private RabbitMQ node on 127.0.0.1 (``with RabbitMQ() as broker: broker.url``).

    Persistent: durable queues and persistent messages survive ``restart()``, ``kill()`` +
    ``start()`` and ``stop()`` + ``start()`` (mnesia and message store live in ``data_dir``).
    ``url`` is ``amqp://guest:guest@127.0.0.1:PORT/`` (vhost ``/``). With ``tls`` there is
    also an AMQPS listener: ``tls_url`` is ``amqps://guest:guest@127.0.0.1:TLS_PORT/`` and
    ``tls_files`` holds the CA, server and client certificates. See
    :class:`~msgbus.testing.brokers.base.BrokerProcess` for the lifecycle.
    """

    kind = "rabbitmq"
    product = "RabbitMQ"
    install_hint = INSTALL_HINT
    default_startup_timeout = 90.0
    default_stop_timeout = 20.0

    @classmethod
    def _cluster(cls, *args: Any, **kwargs: Any) -> Any:
        """``nodes=N``: a :class:`~msgbus.testing.brokers.rabbitmq_cluster.RabbitMQCluster`."""
        from msgbus.testing.brokers.rabbitmq_cluster import RabbitMQCluster

        return RabbitMQCluster(*args, **kwargs)

    def __init__(
        self,
        port: int | None = None,
        *,
        nodes: int = 1,
        data_dir: str | os.PathLike[str] | None = None,
        dist_port: int | None = None,
        epmd_port: int | None = None,
        nodename: str = "msgbus@localhost",
        plugins: Sequence[str] = (),
        server_binary: str | os.PathLike[str] = DEFAULT_SERVER,
        epmd_binary: str | os.PathLike[str] | None = None,
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
        tls: bool | TlsFiles = False,
        tls_port: int | None = None,
        tls_require_client_cert: bool = False,
        management_port: int | None = None,
    ) -> None:
        """``nodes``: a number above 1 builds the cluster launcher instead.
        ``port``: AMQP port; ``dist_port``: Erlang distribution port; ``epmd_port``: the
        private epmd's port (each None: a free port below 32768). ``nodename``: the Erlang
        node name (kept fixed so a given ``data_dir`` can be reused). ``plugins``: plugin
        names to enable, e.g. ``["rabbitmq_consistent_hash_exchange"]``. ``server_binary``:
        the ``rabbitmq-server`` script run directly; ``epmd_binary``: None finds ``epmd`` on
        PATH or under /usr/lib/erlang. ``tls``: True opens an AMQPS listener on ``tls_port``
        (None: a free port) with certificates made at first start in ``<data_dir>/tls``; a
        :class:`~msgbus.testing.brokers.tls.TlsFiles` uses those files instead. The listener
        verifies a client certificate when one is presented; ``tls_require_client_cert``
        refuses clients without one (mutual TLS). ``management_port``: enables the
        management plugin with its HTTP API on that loopback port (``.management_url``).
        Other parameters: see :class:`BrokerProcess`."""
        super().__init__(
            port, data_dir=data_dir, startup_timeout=startup_timeout, stop_timeout=stop_timeout
        )
        self.dist_port = dist_port
        self.epmd_port = epmd_port
        self.nodename = nodename
        self.management_port = management_port
        if management_port is not None and "rabbitmq_management" not in plugins:
            plugins = (*plugins, "rabbitmq_management")
        self.plugins = tuple(plugins)
        self.server_binary = Path(server_binary)
        self.epmd_binary = Path(epmd_binary) if epmd_binary is not None else None
        self.username = "guest"
        self.password = "guest"
        self.tls = bool(tls)
        self.tls_port = tls_port if self.tls else None
        self.tls_require_client_cert = tls_require_client_cert
        self._tls_files: TlsFiles | None = tls if isinstance(tls, TlsFiles) else None

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/`` (the default vhost ``/``)."""
        return f"amqp://{self.username}:{self.password}@{HOST}:{self.port}/"

    def add_user(self, username: str, password: str, *, timeout: float = 60.0) -> None:
        """Create (or reset) a user with ``password`` and full rights on the vhost ``/``,
        with ``rabbitmqctl`` talking to this node. Raises :class:`BrokerHarnessError` if
        rabbitmqctl fails; neither the password nor its output is shown then."""
        ctl = self.server_binary.parent / "rabbitmqctl"
        env = self._main_spec().env
        steps = [
            ["delete_user", username],
            ["add_user", username, password],
            ["set_permissions", "-p", "/", username, ".*", ".*", ".*"],
        ]
        for number, step in enumerate(steps):
            done = subprocess.run(
                [str(ctl), "-n", self.nodename, *step],
                env=env,
                cwd=self.data_dir,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            if done.returncode != 0 and number > 0:  # delete_user of a missing user may fail
                raise BrokerHarnessError(
                    f"RabbitMQ: rabbitmqctl {step[0]} {username!r} failed (exit {done.returncode})"
                )

    @property
    def tls_url(self) -> str:
        """``amqps://guest:guest@127.0.0.1:TLS_PORT/``. Raises :class:`BrokerHarnessError`
        when the broker has no TLS listener (or before the first ``start()``)."""
        if self.tls_port is None:
            raise BrokerHarnessError("RabbitMQ: no TLS listener (start it with tls=True)")
        return f"amqps://{self.username}:{self.password}@{HOST}:{self.tls_port}/"

    @property
    def tls_files(self) -> TlsFiles:
        """The CA, server and client certificates of the TLS listener. Raises
        :class:`BrokerHarnessError` without ``tls`` (or before the first ``start()``)."""
        if self._tls_files is None:
            raise BrokerHarnessError("RabbitMQ: no TLS files (start it with tls=True)")
        return self._tls_files

    @property
    def description(self) -> str:
        """E.g. ``RabbitMQ 3.10.8 (private node msgbus@localhost), durable storage on disk``."""
        version = f" {self._version}" if self._version else ""
        plugins = f", plugins: {', '.join(self.plugins)}" if self.plugins else ""
        tls = f", TLS on port {self.tls_port}" if self.tls_port is not None else ""
        return (
            f"RabbitMQ{version} (private node {self.nodename}), durable storage on disk"
            f"{plugins}{tls}"
        )

    def check_installed(self) -> None:
        """Raise :class:`BrokerNotInstalled` unless rabbitmq-server and epmd are present."""
        if not (self.server_binary.is_file() and os.access(self.server_binary, os.X_OK)):
            raise BrokerNotInstalled(
                "RabbitMQ", f"no executable {self.server_binary}", self.install_hint
            )
        epmd = self._epmd()
        if epmd is None or not (epmd.is_file() and os.access(epmd, os.X_OK)):
            raise BrokerNotInstalled(
                "RabbitMQ", f"no epmd (Erlang) at {epmd or 'PATH'}", self.install_hint
            )
        if self.tls and self._tls_files is None:
            check_openssl()

    def _epmd(self) -> Path | None:
        if self.epmd_binary is not None:
            return self.epmd_binary
        found = _find_epmd()
        return Path(found) if found else None

    def _assign_ports(self) -> None:
        self._pick("dist_port")
        self._pick("epmd_port")
        if self.tls:
            self._pick("tls_port")

    def _extra_ports(self) -> list[int]:
        return [p for p in (self.dist_port, self.epmd_port, self.tls_port) if p is not None]

    def _helper_specs(self) -> Iterable[tuple[ProcessSpec, Callable[[float], str | None]]]:
        assert self.epmd_port is not None
        env = self._base_env()
        env["ERL_EPMD_ADDRESS"] = HOST
        env.pop("ERL_EPMD_PORT", None)
        port = self.epmd_port
        spec = ProcessSpec(
            name="epmd",
            argv=[str(self._epmd()), "-port", str(port)],
            env=env,
            cwd=self.data_dir,
            log_path=self.log_dir / "epmd.log",
        )

        def probe(timeout: float) -> None:
            epmd_names(HOST, port, timeout)

        return [(spec, probe)]

    @property
    def _conf_dir(self) -> Path:
        return self.data_dir / "conf"

    def _write_config(self) -> None:
        conf = self._conf_dir
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "rabbitmq-env.conf").write_text(
            "# intentionally empty: keeps /etc/rabbitmq/rabbitmq-env.conf out of this node\n"
        )
        (conf / "rabbitmq.conf").write_text(
            "# private RabbitMQ node for msgbus tests (loopback only), written by msgbus\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            "disk_free_limit.absolute = 200MB\n" + self._tls_config() + self._management_config()
        )
        (conf / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")

    @property
    def management_url(self) -> str | None:
        """``http://guest:guest@127.0.0.1:PORT`` when started with ``management_port``."""
        if self.management_port is None:
            return None
        return f"http://{self.username}:{self.password}@{HOST}:{self.management_port}"

    def _management_config(self) -> str:
        if self.management_port is None:
            return ""
        return f"management.tcp.ip = {HOST}\nmanagement.tcp.port = {self.management_port}\n"

    def _tls_config(self) -> str:
        if not self.tls:
            return ""
        if self._tls_files is None:
            self._tls_files = make_tls_files(self.data_dir / "tls")
        files = self._tls_files
        require = "true" if self.tls_require_client_cert else "false"
        return (
            f"listeners.ssl.1 = {HOST}:{self.tls_port}\n"
            f"ssl_options.cacertfile = {files.ca}\n"
            f"ssl_options.certfile = {files.server_cert}\n"
            f"ssl_options.keyfile = {files.server_key}\n"
            "ssl_options.verify = verify_peer\n"
            f"ssl_options.fail_if_no_peer_cert = {require}\n"
        )

    def _main_spec(self) -> ProcessSpec:
        data = self.data_dir
        conf = self._conf_dir
        env = {
            k: v
            for k, v in self._base_env().items()
            if not k.startswith(("RABBITMQ_", "ERL_", "CONFIG_FILE"))
        }
        mnesia_base = data / "mnesia"
        (data / "log").mkdir(parents=True, exist_ok=True)
        mnesia_base.mkdir(parents=True, exist_ok=True)
        env.update(
            {
                "HOME": str(data),  # the Erlang cookie lives here
                "ERL_EPMD_PORT": str(self.epmd_port),
                "RABBITMQ_CONF_ENV_FILE": str(conf / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(conf / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(conf / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(conf / "enabled_plugins"),
                "RABBITMQ_NODENAME": self.nodename,
                "RABBITMQ_NODE_IP_ADDRESS": HOST,
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
                ),
                "RABBITMQ_MNESIA_BASE": str(mnesia_base),
                "RABBITMQ_MNESIA_DIR": str(mnesia_base / "node"),
                "RABBITMQ_FEATURE_FLAGS_FILE": str(mnesia_base / "feature_flags"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(mnesia_base / "plugins-expand"),
                "RABBITMQ_LOG_BASE": str(data / "log"),
                "RABBITMQ_PID_FILE": str(data / "rabbitmq.pid"),
            }
        )
        return ProcessSpec(
            name="rabbitmq",
            argv=[str(self.server_binary)],
            env=env,
            cwd=data,
            log_path=self.log_dir / "rabbitmq.log",
        )

    def _handshake(self, timeout: float) -> str | None:
        props = amqp_handshake(
            HOST, self.port, username=self.username, password=self.password, timeout=timeout
        )
        if self.tls_port is not None:
            amqp_handshake(
                HOST,
                self.tls_port,
                username=self.username,
                password=self.password,
                timeout=timeout,
                ssl_context=client_context(
                    self.tls_files, client_cert=self.tls_require_client_cert
                ),
            )
        version = props.get("version")
        return str(version) if version else None

    def _log_files(self) -> list[Path]:
        files = super()._log_files()
        if self._data_dir is not None and (self.data_dir / "log").is_dir():
            files += sorted((self.data_dir / "log").glob("*.log"))
        return files
