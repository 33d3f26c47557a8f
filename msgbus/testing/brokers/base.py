"""Process management shared by every broker launcher.

A launcher runs a real broker as ordinary child processes on 127.0.0.1, on ports below 32768,
with its own data folder. This module holds what all of them share:

* :class:`BrokerProcess`, the base class: ``start()`` / ``stop()`` / ``restart()`` / ``kill()`` /
  ``close()``, context-manager use, bounded readiness waits on a real protocol handshake, and
  start-up errors that carry the tail of the broker's logs;
* :class:`ExternalBroker`, a stand-in for a broker given by URL that this process does not own;
* free-port picking below the ephemeral range (see :func:`pick_free_port`);
* a process registry that guards against orphans: every child runs in its own
  process group (``start_new_session=True``); the groups are terminated at interpreter exit
  (``atexit``, which also covers Ctrl-C), on SIGTERM/SIGHUP (when nobody else handles those),
  and, should this process die by SIGKILL, by a tiny watchdog process that notices its pipe
  closing and terminates the groups left behind.

Only the standard library is used here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, ClassVar, Self, TypeVar

from msgbus.errors import MsgBusError

__all__ = [
    "HOST",
    "PORT_RANGE",
    "BrokerHarnessError",
    "BrokerNotInstalled",
    "BrokerProcess",
    "BrokerStartError",
    "ExternalBroker",
    "ExternalBrokerError",
    "HandshakeError",
    "ManagedProcess",
    "ProcessSpec",
    "ci_requested",
    "group_members",
    "pick_free_port",
    "port_is_free",
    "recv_exactly",
    "release_port",
    "running_processes",
    "tail_lines",
]

HOST = "127.0.0.1"
"""The only address any launched broker binds or is reached on."""

PORT_RANGE = (20000, 32000)
"""Half-open range ``[low, high)`` free ports are picked from: below the ephemeral range
(32768-60999 here), so a readiness probe can never self-connect to a port a broker is about to
bind (see BROKERS.md)."""

T = TypeVar("T")


# --------------------------------------------------------------------------- errors


class BrokerHarnessError(MsgBusError, RuntimeError):
    """Root of the errors raised by the broker launchers."""


class BrokerNotInstalled(BrokerHarnessError):
    """A broker's binary (or a helper it needs) is missing.

    ``str(error)`` names what is missing and the command that installs it; the same command is
    in :attr:`install_hint`.
    """

    def __init__(self, product: str, missing: str, install_hint: str) -> None:
        self.product = product
        self.missing = missing
        self.install_hint = install_hint
        super().__init__(f"{product} is not installed: {missing}. Install it with: {install_hint}")


class BrokerStartError(BrokerHarnessError):
    """A broker did not become ready in time, or exited during start-up.

    The message ends with the tail of the broker's log files; :attr:`log_tail` holds it alone.
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        if log_tail:
            message = f"{message}\n--- broker log tail ---\n{log_tail}"
        super().__init__(message)


class ExternalBrokerError(BrokerHarnessError):
    """An operation needs control over the broker process, but the broker is external
    (given by a ``MSGBUS_<BROKER>_URL`` environment variable or a URL): msgbus did not start it
    and cannot stop, restart or kill it."""


class HandshakeError(Exception):
    """A readiness probe reached the port but the protocol handshake did not succeed (yet)."""


# --------------------------------------------------------------------------- ports

_port_lock = threading.Lock()
_reserved_ports: set[int] = set()


def port_is_free(port: int, host: str = HOST) -> bool:
    """Return True when ``host:port`` can be bound right now (no listener, no TIME_WAIT).

    The bind is done without ``SO_REUSEADDR``, so it is stricter than the brokers' own binds.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(low: int = PORT_RANGE[0], high: int = PORT_RANGE[1]) -> int:
    """Pick a random free TCP port in ``[low, high)`` on 127.0.0.1 and reserve it in-process.

    A port handed out once is not handed out again by this process until
    :func:`release_port` returns it, so several launchers started back to back never collide.
    Thread-safe. Raises :class:`BrokerHarnessError` when no free port is found after a few
    hundred tries. Another process can still grab the port before the broker binds it; the
    broker's start-up then fails with a clear :class:`BrokerStartError`.
    """
    if not 0 < low < high <= 65536:
        raise ValueError(f"bad port range [{low}, {high})")
    with _port_lock:
        for _ in range(500):
            port = random.randrange(low, high)
            if port in _reserved_ports:
                continue
            if port_is_free(port):
                _reserved_ports.add(port)
                return port
    raise BrokerHarnessError(f"no free TCP port found in [{low}, {high}) on {HOST}")


def release_port(port: int) -> None:
    """Let :func:`pick_free_port` hand out ``port`` again (no-op if it was not reserved)."""
    with _port_lock:
        _reserved_ports.discard(port)


# --------------------------------------------------------------------------- sockets


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    """Read exactly ``count`` bytes from ``sock``; raise :class:`HandshakeError` on EOF.

    Socket timeouts propagate as :class:`TimeoutError` (an :class:`OSError`).
    """
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise HandshakeError(f"connection closed after {len(chunks)} of {count} bytes")
        chunks += chunk
    return bytes(chunks)


# --------------------------------------------------------------------------- process groups


def group_members(pgid: int) -> list[int]:
    """Return the PIDs of the live (non-zombie) processes in process group ``pgid``.

    On Linux this scans ``/proc`` (zombies are left out: in a container whose init does not
    reap, an exited orphan stays a zombie forever and must not count as running). Elsewhere it
    falls back to ``killpg(pgid, 0)`` and returns ``[pgid]`` when the group exists.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 3:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


_WATCHDOG_CODE = r"""
import os, signal, sys, time
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
groups = {}
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "add":
        groups[int(arg)] = None
    elif cmd == "del":
        groups.pop(int(arg), None)
def alive(g):
    try:
        names = os.listdir("/proc")
    except OSError:
        names = None
    if names is None:
        try:
            os.killpg(g, 0)
            return True
        except OSError:
            return False
    for name in names:
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as fh:
                    stat = fh.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if len(fields) > 2 and int(fields[2]) == g and fields[0] not in ("Z", "X"):
                return True
    return False
for g in groups:
    try:
        os.killpg(g, signal.SIGTERM)
    except OSError:
        pass
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and any(alive(g) for g in groups):
    time.sleep(0.1)
for g in groups:
    try:
        os.killpg(g, signal.SIGKILL)
    except OSError:
        pass
"""


class _Watchdog:
    """A child Python process that kills registered process groups when this process dies.

    It reads ``add PGID`` / ``del PGID`` lines on a pipe. When the pipe closes without the
    groups having been deleted (this process was SIGKILLed), it sends SIGTERM, waits a grace
    period, then SIGKILL to each remaining group. Best effort: if it cannot start, the atexit
    and signal handlers still cover every ordinary exit.
    """

    grace = 10.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._owner = -1

    def _ensure(self) -> subprocess.Popen[str] | None:
        if self._proc is not None and self._owner == os.getpid() and self._proc.poll() is None:
            return self._proc
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _WATCHDOG_CODE, str(self.grace)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                text=True,
            )
            self._owner = os.getpid()
        except OSError:
            self._proc = None
        return self._proc

    def send(self, command: str, pgid: int) -> None:
        proc = self._ensure()
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(f"{command} {pgid}\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            self._proc = None


class _Registry:
    """Every running child process group of this interpreter, cleaned up at exit.

    Thread-safe (an RLock, so the signal handler that runs on the main thread can re-enter).
    Entries remember the PID that created them: after a ``fork()``, the child does not tear
    down its parent's brokers.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._procs: dict[int, ManagedProcess] = {}
        self._installed = False
        self._watchdog = _Watchdog()

    def add(self, proc: ManagedProcess) -> None:
        with self._lock:
            self._install_hooks()
            self._procs[proc.pgid] = proc
            self._watchdog.send("add", proc.pgid)

    def remove(self, proc: ManagedProcess) -> None:
        with self._lock:
            if self._procs.get(proc.pgid) is proc:
                del self._procs[proc.pgid]
                self._watchdog.send("del", proc.pgid)

    def live(self) -> list[ManagedProcess]:
        with self._lock:
            return [p for p in self._procs.values() if p.owner_pid == os.getpid()]

    def terminate_all(self) -> None:
        """Stop every registered process group (newest first), bounded by their grace periods."""
        for proc in reversed(self.live()):
            with contextlib.suppress(Exception):
                proc.stop(grace=min(proc.grace, 10.0))

    def _install_hooks(self) -> None:
        if self._installed:
            return
        self._installed = True
        atexit.register(self.terminate_all)
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signum) == signal.SIG_DFL:
                    signal.signal(signum, self._on_fatal_signal)

    def _on_fatal_signal(self, signum: int, frame: FrameType | None) -> None:
        self.terminate_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


_registry = _Registry()


def running_processes() -> list[ManagedProcess]:
    """Return the child processes this interpreter currently runs for brokers (for tests)."""
    return _registry.live()


# --------------------------------------------------------------------------- one process


@dataclass
class ProcessSpec:
    """How to run one process of a broker.

    ``argv``/``env``/``cwd`` are passed to :class:`subprocess.Popen` (``env`` is the complete
    environment); stdout and stderr go to ``log_path`` (appended to across restarts). The
    process becomes leader of a new process group; ``stop_signal`` goes to the leader alone on
    a graceful stop, and the whole group is SIGKILLed after that.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    stop_signal: int = signal.SIGTERM


@dataclass
class ManagedProcess:
    """A running child process group, registered for cleanup at exit. Not thread-safe.

    Constructing it starts the process (raises :class:`BrokerStartError` when it cannot be
    executed at all).
    """

    spec: ProcessSpec
    grace: float
    popen: subprocess.Popen[bytes] = field(init=False)
    owner_pid: int = field(init=False)

    def __post_init__(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "ab") as log:
            log.write(f"\n=== msgbus: starting {' '.join(self.spec.argv)}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    list(self.spec.argv),
                    env=dict(self.spec.env),
                    cwd=self.spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise BrokerStartError(
                    f"cannot run {self.spec.name} ({self.spec.argv[0]}): {exc}"
                ) from exc
        self.owner_pid = os.getpid()
        _registry.add(self)

    @property
    def pid(self) -> int:
        """PID of the group leader."""
        return self.popen.pid

    @property
    def pgid(self) -> int:
        """Process group id (equal to the leader's PID)."""
        return self.popen.pid

    def exit_code(self) -> int | None:
        """The leader's exit status, or None while it runs."""
        return self.popen.poll()

    def is_running(self) -> bool:
        """True while the group leader runs."""
        return self.popen.poll() is None

    def stop(self, grace: float | None = None) -> None:
        """Send the stop signal to the leader, wait up to ``grace`` seconds, then SIGKILL the
        group and wait (bounded) until no member is left. Idempotent."""
        grace = self.grace if grace is None else grace
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.spec.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self._finish()

    def kill(self) -> None:
        """SIGKILL the whole group at once and wait (bounded) for it to be gone. Idempotent."""
        self._finish()

    def _finish(self) -> None:
        # Once the leader is reaped and no member is left, the pgid number may be reused by
        # an unrelated group: signal it only while it is certainly still ours.
        if self.popen.poll() is None or group_members(self.pgid):
            _signal_group(self.pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        _wait_group_gone(self.pgid, 10)
        _registry.remove(self)


# --------------------------------------------------------------------------- log tails


def tail_lines(path: Path, lines: int = 40, max_bytes: int = 64 * 1024) -> str:
    """Return the last ``lines`` lines of a text file ('' if it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- brokers


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


class BrokerProcess:
    """Base class of the broker launchers: a real broker as child processes on 127.0.0.1.

    Lifecycle (all methods are blocking; an instance is not thread-safe):

    * ``start()`` checks the install (raises :class:`BrokerNotInstalled`), picks free ports for
      any not given (once; they are kept for the life of the instance so clients can
      reconnect after a restart), creates the data folder (a new temporary one when
      ``data_dir`` is None), writes config files, starts any helper process (epmd, the S3
      server) that is not already running, then the broker, and returns once a real protocol
      handshake succeeds. It raises :class:`BrokerStartError` (with the log tail) when the
      broker exits early or is not ready within ``startup_timeout`` seconds. No-op if running.
    * ``stop()`` stops the broker gracefully (SIGTERM to the leader, SIGKILL of its whole
      process group after ``stop_timeout`` seconds) and then its helpers; the data folder is
      kept, so ``start()`` brings the same broker back.
    * ``restart()`` stops and starts the broker process only (helpers keep running).
    * ``kill()`` SIGKILLs the broker's process group at once (helpers keep running), to
      simulate a crash; ``start()`` brings it back.
    * ``close()`` stops everything and deletes the data folder if this instance created it.
      Context-manager use: ``with RabbitMQ() as broker:`` starts on enter, closes on exit.

    Attributes common to all brokers: :attr:`kind`, :attr:`url`, :attr:`port`,
    :attr:`description`, :attr:`data_dir`, :attr:`managed` (True), :attr:`last_start_seconds`,
    :attr:`last_stop_seconds`.
    """

    kind: ClassVar[str] = ""
    """Short name: ``rabbitmq``, ``activemq``, ``kafka`` or ``redis``."""
    product: ClassVar[str] = ""
    """Human name of what really runs, e.g. ``tansu`` for :class:`Kafka`."""
    install_hint: ClassVar[str] = ""
    """Command that installs the broker."""
    default_startup_timeout: ClassVar[float] = 60.0
    default_stop_timeout: ClassVar[float] = 15.0
    managed: ClassVar[bool] = True
    """True: this object owns the broker process and may stop/restart/kill it."""

    host: str = HOST

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """``nodes=N`` (N > 1) builds the broker's cluster launcher instead (see
        :mod:`msgbus.testing.brokers.cluster`); without it, or with 1, this class."""
        nodes = kwargs.get("nodes", 1)
        if nodes == 1:
            return super().__new__(cls)
        if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
            raise ValueError(f"nodes must be a positive int, got {nodes!r}")
        return cls._cluster(*args, **kwargs)

    @classmethod
    def _cluster(cls, *args: Any, **kwargs: Any) -> Any:
        """Build the cluster launcher for ``nodes=N`` (brokers that have one override this)."""
        raise ValueError(f"{cls.product or cls.__name__} has no cluster launcher; use nodes=1")

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
    ) -> None:
        """``port``: the client port (None: pick a free one below 32768 at first start).
        ``data_dir``: where state, configs and logs go (None: a new temporary folder, deleted
        by ``close()``; a given folder is created if needed and never deleted).
        ``startup_timeout`` / ``stop_timeout``: seconds; None takes the broker's default."""
        self._port = port
        self._own_ports: list[int] = []
        self._auto_ports: dict[str, int] = {}
        self._ever_started = False
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._data_dir: Path | None = self._given_data_dir
        self.startup_timeout = (
            self.default_startup_timeout if startup_timeout is None else startup_timeout
        )
        self.stop_timeout = self.default_stop_timeout if stop_timeout is None else stop_timeout
        self._main: ManagedProcess | None = None
        self._helpers: dict[str, ManagedProcess] = {}
        self._version = ""
        self.last_start_seconds: float | None = None
        """Wall time of the last successful ``start()`` (spawn to handshake), in seconds."""
        self.last_stop_seconds: float | None = None
        """Wall time of the last ``stop()``, in seconds."""

    # ----------------------------------------------------------------- public properties

    @property
    def port(self) -> int:
        """The client port. Raises :class:`BrokerHarnessError` before the first ``start()``
        when no port was given."""
        if self._port is None:
            raise BrokerHarnessError(f"{self.product}: no port yet; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """The URL msgbus connects with (e.g. ``kafka://127.0.0.1:24017``)."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        """What really runs: product, version (once started) and storage, in one line."""
        version = f" {self._version}" if self._version else ""
        return f"{self.product}{version}"

    @property
    def data_dir(self) -> Path:
        """The data folder. Raises :class:`BrokerHarnessError` before the first ``start()``
        when none was given."""
        if self._data_dir is None:
            raise BrokerHarnessError(f"{self.product}: no data folder yet; call start() first")
        return self._data_dir

    @property
    def log_dir(self) -> Path:
        """Folder of the captured stdout/stderr logs (``<name>.log`` per process)."""
        return self.data_dir / "logs"

    @property
    def pid(self) -> int | None:
        """PID of the broker process (group leader), or None when it is not running."""
        return self._main.pid if self._main is not None and self._main.is_running() else None

    @property
    def pgids(self) -> list[int]:
        """Process group ids of every running process of this broker (broker and helpers)."""
        procs = [*self._helpers.values(), *([self._main] if self._main else [])]
        return [p.pgid for p in procs if p.is_running()]

    @property
    def ports(self) -> list[int]:
        """Every TCP port this broker uses (client port first)."""
        return [self.port, *self._extra_ports()]

    def is_running(self) -> bool:
        """True while the broker process runs (it may not be ready yet)."""
        return self._main is not None and self._main.is_running()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Start the broker and wait for its handshake (see the class docstring).

        On the very first start, if the broker fails while a port picked automatically has
        been taken by another process meanwhile (a race with a parallel test run), the start
        is retried once on fresh ports.
        """
        if self.is_running():
            return self
        self.check_installed()
        for attempt in (1, 2):
            self._pick("_port")
            self._assign_ports()
            try:
                self._start_once()
            except BrokerStartError:
                clashed = [p for p in self._auto_ports.values() if not port_is_free(p)]
                if attempt == 2 or self._ever_started or not clashed:
                    raise
                for attr in self._auto_ports:
                    setattr(self, attr, None)
                self._auto_ports.clear()
                continue
            break
        self._ever_started = True
        self._auto_ports.clear()
        return self

    def _start_once(self) -> None:
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix=f"msgbus-{self.kind}-"))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            self._start_helpers()
            self._write_config()
            self._main = ManagedProcess(self._main_spec(), grace=self.stop_timeout)
            self._version = self._wait_ready(self._main, self._handshake, self.product) or ""
        except BaseException:
            self._stop_all(self.stop_timeout)
            raise
        self.last_start_seconds = time.monotonic() - started

    def _start_helpers(self) -> None:
        """Start every helper process that does not run and wait until each is ready."""
        for spec, probe in self._helper_specs():
            helper = self._helpers.get(spec.name)
            if helper is not None and helper.is_running():
                continue
            helper = ManagedProcess(spec, grace=self.stop_timeout)
            self._helpers[spec.name] = helper
            self._wait_ready(helper, probe, f"{self.product} helper {spec.name}")
            self._helper_started(spec.name)

    def stop(self) -> None:
        """Stop the broker and its helpers gracefully; keep the data folder. Idempotent."""
        started = time.monotonic()
        self._stop_all(self.stop_timeout)
        self.last_stop_seconds = time.monotonic() - started

    def restart(self) -> Self:
        """Stop the broker process gracefully and start it again on the same ports and data
        (helpers keep running). Returns once the handshake succeeds again."""
        if self._main is not None:
            started = time.monotonic()
            self._main.stop(self.stop_timeout)
            self.last_stop_seconds = time.monotonic() - started
            self._main = None
        return self.start()

    def kill(self) -> None:
        """SIGKILL the broker's whole process group (a crash; helpers keep running)."""
        if self._main is not None:
            self._main.kill()
            self._main = None

    def close(self) -> None:
        """Stop everything and delete the data folder if this instance created it."""
        self.stop()
        for port in self._own_ports:
            release_port(port)
        if self._given_data_dir is None and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

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
        state = "running" if self.is_running() else "stopped"
        where = self.url if self._port is not None else "no port yet"
        return f"<{type(self).__name__} {where} {state}>"

    def check_installed(self) -> None:
        """Raise :class:`BrokerNotInstalled` (naming the install command) when a binary or
        helper this broker needs is missing; return None otherwise."""
        raise NotImplementedError

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each log file of this broker, labelled by file."""
        parts = []
        for path in self._log_files():
            text = tail_lines(path, lines)
            if text.strip():
                parts.append(f"[{path}]\n{text}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- hooks for subclasses

    def _assign_ports(self) -> None:
        """Pick any extra port not given (called by ``start()`` after the client port)."""

    def _pick(self, attribute: str) -> None:
        """Give the port attribute ``attribute`` a free port unless it already has one."""
        if getattr(self, attribute) is None:
            port = pick_free_port()
            setattr(self, attribute, port)
            self._own_ports.append(port)
            self._auto_ports[attribute] = port

    def _extra_ports(self) -> list[int]:
        return []

    def _helper_specs(self) -> Iterable[tuple[ProcessSpec, Callable[[float], str | None]]]:
        """Helper processes to run before the broker, with their readiness probes."""
        return ()

    def _helper_started(self, name: str) -> None:
        """Called once a helper has just been started and is ready."""

    def _write_config(self) -> None:
        """Write the broker's config files into the data folder."""

    def _main_spec(self) -> ProcessSpec:
        raise NotImplementedError

    def _handshake(self, timeout: float) -> str | None:
        """One readiness probe: a real protocol handshake. Return the broker version (or None)
        on success; raise OSError or :class:`HandshakeError` when not ready."""
        raise NotImplementedError

    def _log_files(self) -> list[Path]:
        if self._data_dir is None or not self.log_dir.is_dir():
            return []
        return sorted(self.log_dir.glob("*.log"))

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    # ----------------------------------------------------------------- internals

    def _stop_all(self, grace: float) -> None:
        if self._main is not None:
            self._main.stop(grace)
            self._main = None
        for name in reversed(list(self._helpers)):
            self._helpers.pop(name).stop(grace)

    def _wait_ready(self, proc: ManagedProcess, probe: Callable[[float], T], what: str) -> T:
        deadline = time.monotonic() + self.startup_timeout
        last_error: BaseException | None = None
        while True:
            code = proc.exit_code()
            if code is not None:
                raise BrokerStartError(
                    f"{what} exited with status {code} during start-up"
                    f" ({' '.join(proc.spec.argv)})",
                    self.log_tail(),
                )
            remaining = deadline - time.monotonic()
            try:
                return probe(max(0.5, min(2.0, remaining)))
            except (OSError, HandshakeError) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"{what} was not ready on {self.host}:{self.port} after "
                    f"{self.startup_timeout:.0f} s (last handshake error: {last_error!r})",
                    self.log_tail(),
                )
            time.sleep(0.05)


class ExternalBroker:
    """A broker this process does not own, reached by URL (e.g. from ``MSGBUS_KAFKA_URL``).

    ``url`` is the URL as given; ``start()`` does nothing (the broker is assumed running);
    ``close()`` does nothing; ``stop()``, ``restart()`` and ``kill()`` raise
    :class:`ExternalBrokerError`, whose message says the broker is external and where its URL
    came from. Tests that need those should skip (the pytest plugin turns the error into a skip).
    """

    managed: ClassVar[bool] = False

    def __init__(self, kind: str, url: str, product: str, source: str = "") -> None:
        """``kind``: rabbitmq/activemq/kafka/redis; ``product``: the protocol's name for
        messages; ``source``: where the URL came from, e.g. ``$MSGBUS_KAFKA_URL``."""
        self.kind = kind
        self.url = url
        self.product = product
        self.source = source
        self.last_start_seconds: float | None = None
        self.last_stop_seconds: float | None = None

    @property
    def description(self) -> str:
        """Says the broker is external and which URL (password hidden) reached it."""
        where = f" from {self.source}" if self.source else ""
        return (
            f"external {self.product} broker at {_hide_password(self.url)}{where} "
            "(not started by msgbus; what really runs there is not known)"
        )

    def _refuse(self, action: str) -> ExternalBrokerError:
        where = f" (set by {self.source})" if self.source else ""
        return ExternalBrokerError(
            f"cannot {action} the {self.kind} broker at {_hide_password(self.url)}: it is an "
            f"external broker{where}, not started by msgbus"
        )

    def is_running(self) -> bool:
        """Always True: an external broker is assumed to be up."""
        return True

    def start(self) -> Self:
        """Do nothing (the external broker is assumed running); return self."""
        return self

    def stop(self) -> None:
        """Raise :class:`ExternalBrokerError`: msgbus cannot stop an external broker."""
        raise self._refuse("stop")

    def restart(self) -> Self:
        """Raise :class:`ExternalBrokerError`: msgbus cannot restart an external broker."""
        raise self._refuse("restart")

    def kill(self) -> None:
        """Raise :class:`ExternalBrokerError`: msgbus cannot kill an external broker."""
        raise self._refuse("kill")

    def close(self) -> None:
        """Do nothing: the external broker is left running."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ExternalBroker {self.kind} {_hide_password(self.url)}>"


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    return f"{scheme}://{netloc}{slash}{path}"


def ci_requested() -> bool:
    """True when the environment variable ``CI`` is set to something other than
    ''/0/false/no/off (missing brokers then fail instead of skipping)."""
    return _env_flag("CI")
