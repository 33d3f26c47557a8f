"""Tests of the harness's pytest plugin, its CLI and its orphan-proofing, in subprocesses."""

from __future__ import annotations

import importlib.metadata
import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from msgbus.testing.brokers import kafka_impl
from msgbus.testing.brokers.base import group_members

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``condition`` until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def plugin_installed() -> bool:
    """True when msgbus is installed with its ``pytest11`` entry point (as tox and pip -e do)."""
    return "msgbus" in {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}


def child_env(**changes: str | None) -> dict[str, str]:
    """This environment without CI/MSGBUS_* broker URLs, plus ``changes`` (None deletes).

    When msgbus is not installed, the repository goes on PYTHONPATH so children import it.
    """
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("MSGBUS_")}
    if not plugin_installed():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def plugin_args() -> list[str]:
    """``-p msgbus.testing.pytest_plugin`` unless the pytest11 entry point already loads it."""
    return [] if plugin_installed() else ["-p", "msgbus.testing.pytest_plugin"]


def run_pytest(
    tmp_path: Path, source: str, *args: str, **env: str | None
) -> subprocess.CompletedProcess[str]:
    """Run pytest on a one-file test module in a subprocess; return the finished process."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    test_file = tmp_path / "test_generated.py"
    test_file.write_text(textwrap.dedent(source))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rs",
            *plugin_args(),
            *args,
            str(test_file),
        ],
        cwd=tmp_path,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


class LineReader:
    """Bounded line reads from a subprocess's unbuffered stdout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""
        self.proc = proc

    def line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no output line within {timeout} s: {self.buffer!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 4096)
                if not chunk:
                    raise AssertionError(f"process ended (output so far: {self.buffer!r})")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


def terminal_signals() -> None:
    """In the child before exec: SIGINT and SIGHUP as a terminal's process has them. A test
    run launched in the background (``nohup``, ``cmd &`` without job control) passes them on
    ignored, and a Python child then never sees the Ctrl-C or hang-up the test sends."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def spawn(argv: list[str], **env: str | None) -> subprocess.Popen[bytes]:
    """Start a Python helper subprocess with piped, unbuffered stdout (stderr to stdout),
    with the signal dispositions of :func:`terminal_signals`."""
    return subprocess.Popen(
        argv,
        preexec_fn=terminal_signals,
        env=child_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        bufsize=0,
        cwd=tempfile.gettempdir(),  # not the repo: import msgbus as installed
    )


def listening(port: int) -> bool:
    """True when something listens on 127.0.0.1:``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


# --------------------------------------------------------------------------- pytest plugin

MISSING_BROKER_TEST = """
    import pytest
    from msgbus.testing.pytest_plugin import start_broker_or_skip

    @pytest.fixture(scope="session")
    def bogus_redis():
        broker = start_broker_or_skip("redis", binary="/nonexistent/redis-server")
        yield broker
        broker.close()

    def test_needs_it(bogus_redis):
        pass
"""


def test_missing_broker_skips_outside_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, MISSING_BROKER_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "apt-get install -y redis-server" in result.stdout


def test_missing_broker_fails_in_ci(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, MISSING_BROKER_TEST, CI="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "apt-get install -y redis-server" in result.stdout
    assert "CI is set" in result.stdout


def test_external_broker_from_env_skips_fault_tests(tmp_path: Path) -> None:
    source = """
        import pytest
        from msgbus.testing.pytest_plugin import require_managed

        def test_url(redis_broker):
            assert redis_broker.url == "redis://127.0.0.1:1/0"
            assert not redis_broker.managed

        def test_restart_is_skipped(redis_broker):
            redis_broker.restart()

        def test_require_managed(redis_broker):
            require_managed(redis_broker)
            raise AssertionError("not reached")
    """
    result = run_pytest(tmp_path, source, MSGBUS_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 2 skipped" in result.stdout
    assert "redis broker is external ($MSGBUS_REDIS_URL)" in result.stdout
    assert "cannot restart the redis broker" in result.stdout


def test_fixture_users_get_the_broker_marker(tmp_path: Path) -> None:
    source = """
        def test_uses_redis(redis_broker):
            pass

        def test_plain():
            pass
    """
    result = run_pytest(tmp_path, source, "-m", "not redis")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 deselected" in result.stdout


@pytest.mark.kafka
def test_summary_says_which_kafka_the_fixture_was(tmp_path: Path) -> None:
    source = """
        def test_kafka(kafka_broker):
            assert kafka_broker.url.startswith("kafka://127.0.0.1:")
    """
    impl = kafka_impl()  # this run's Kafka, so each Kafka environment checks its own
    result = run_pytest(tmp_path, source, MSGBUS_KAFKA_IMPL=impl)
    assert result.returncode == 0, result.stdout + result.stderr
    if impl == "tansu":
        assert "run against tansu (MSGBUS_KAFKA_IMPL), not Apache Kafka" in result.stdout
        assert "kafka_broker: tansu 0.6.0 (Kafka wire protocol" in result.stdout
    else:
        assert "Kafka tests run against Apache Kafka (KRaft)" in result.stdout
        assert "kafka_broker: Apache Kafka 4." in result.stdout


@pytest.mark.kafka
def test_ctrl_c_of_a_pytest_run_leaves_no_broker(tmp_path: Path) -> None:
    marker = tmp_path / "pgids"
    source = f"""
        import threading

        def test_hangs(kafka_persistent_broker):
            with open({str(marker)!r}, "w") as fh:
                fh.write(" ".join(map(str, kafka_persistent_broker.pgids)))
            threading.Event().wait()
    """
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_hang.py").write_text(textwrap.dedent(source))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            *plugin_args(),
            "-q",
            str(tmp_path / "test_hang.py"),
        ],
        cwd=tmp_path,
        preexec_fn=terminal_signals,
        env=child_env(MSGBUS_KAFKA_IMPL="tansu"),  # two process groups: tansu and S3 server
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        text = wait_for(
            lambda: marker.read_text() if marker.exists() else "", 60, "the broker to start"
        )
        pgids = [int(g) for g in text.split()]
        assert len(pgids) == 2 and all(group_members(g) for g in pgids)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        proc.wait(60)
        for pgid in pgids:
            assert group_members(pgid) == [], f"process group {pgid} survived Ctrl-C"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- orphans

BROKER_SCRIPT = """
import sys, threading
from msgbus.testing.brokers import Tansu
broker = Tansu(persistent=sys.argv[1] == "persistent").start()
print(broker.port, *broker.pgids, flush=True)
threading.Event().wait()
"""


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("sig", "persistent"),
    [
        (signal.SIGINT, False),
        (signal.SIGTERM, False),
        (signal.SIGHUP, False),
        (signal.SIGKILL, True),
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"],
)
def test_no_orphan_when_the_owner_dies(sig: int, persistent: bool) -> None:
    proc = spawn([sys.executable, "-c", BROKER_SCRIPT, "persistent" if persistent else "memory"])
    try:
        fields = LineReader(proc).line(60).split()
        port, pgids = int(fields[0]), [int(g) for g in fields[1:]]
        assert len(pgids) == (2 if persistent else 1)
        assert listening(port)
        proc.send_signal(sig)
        proc.wait(30)
        # SIGKILL: the watchdog notices the closed pipe and terminates the groups
        wait_for(
            lambda: not any(group_members(g) for g in pgids), 20, f"process groups {pgids} to end"
        )
        assert not listening(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- CLI


@pytest.mark.redis
def test_cli_runs_until_sigterm_then_stops_cleanly() -> None:
    import redis

    proc = spawn([sys.executable, "-m", "msgbus.testing.brokers", "start", "redis"])
    try:
        reader = LineReader(proc)
        url = reader.line(60)
        assert url.startswith("redis://127.0.0.1:")
        assert reader.line(5).startswith("Redis 7")
        client = redis.Redis.from_url(url, socket_timeout=5)
        assert client.ping()
        client.close()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not listening(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.kafka
def test_cli_persistent_kafka_on_a_given_port_stops_on_ctrl_c() -> None:
    from msgbus.testing.brokers import pick_free_port

    port = pick_free_port()
    proc = spawn(
        [
            sys.executable,
            "-m",
            "msgbus.testing.brokers",
            "start",
            "kafka",
            "--impl",
            "tansu",
            "--port",
            str(port),
            "--persistent",
        ]
    )
    try:
        reader = LineReader(proc)
        assert reader.line(60) == f"kafka://127.0.0.1:{port}"
        description = reader.line(5)
        assert description.startswith("tansu 0.6.0 (Kafka wire protocol, not Apache Kafka)")
        assert "s3://" in description
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not listening(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.kafka
def test_cli_starts_apache_kafka_by_default_and_says_so() -> None:
    if kafka_impl() != "apache":
        pytest.skip("the Apache Kafka command runs in the Apache Kafka environment")
    proc = spawn([sys.executable, "-m", "msgbus.testing.brokers", "start", "kafka"])
    try:
        reader = LineReader(proc)
        url = reader.line(180)
        assert url.startswith("kafka://127.0.0.1:")
        assert reader.line(5).startswith("Apache Kafka 4.")
        port = int(url.rsplit(":", 1)[1])
        assert listening(port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not listening(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_an_unknown_broker() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "msgbus.testing.brokers", "start", "mqtt"],
        env=child_env(),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice: 'mqtt'" in result.stderr
