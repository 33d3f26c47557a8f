"""The msgbus-bank command: argument handling, the demo, and the two services as processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from msgbus.contrib.bank.cli import main
from msgbus.contrib.bank.demo import run_demo
from msgbus.contrib.bank.smtp_sink import SmtpSink

TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_prints_a_summary_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--accounts", "25"]) == 0
    out = capsys.readouterr().out
    assert "msgbus bank demo on memory://" in out
    assert "25/25 created" in out and "25 received" in out
    assert "duplicates      0" in out and "dead letters    0" in out
    assert "result          OK" in out


def test_demo_keeps_a_given_data_folder(tmp_path: Path) -> None:
    result = run_demo("memory://demo-data", accounts=5, data_dir=tmp_path, progress=None)
    assert result.ok, result.summary()
    assert (tmp_path / "accounts.db").exists() and (tmp_path / "emails.db").exists()
    assert result.rate > 0


def test_demo_reports_a_timeout_as_failure() -> None:
    result = run_demo("memory://demo-timeout", accounts=3, timeout=0.0, progress=None)
    assert not result.ok and result.timed_out
    assert "FAILED (timeout)" in result.summary()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["emails", "--url", "memory://"],  # --smtp is required
        ["emails", "--smtp", "host:notaport"],
        ["demo", "--accounts", "0"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: msgbus-bank" in capsys.readouterr().err


def test_unknown_broker_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", "nosuchbroker://x", "--accounts", "1"]) == 2
    assert "msgbus-bank: error:" in capsys.readouterr().err


def _spawn(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "msgbus.contrib.bank.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=TIMEOUT)
    return process.returncode, out


def test_accounts_command_serves_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = _spawn("accounts", "--url", "memory://", "--port", str(port), cwd=tmp_path)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert json.load(r) == {"status": "ok", "outbox_pending": 0}
                break
            except OSError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the account service did not come up"
                time.sleep(0.05)
    finally:
        code, out = _stop(process)
    assert code == 0, out
    assert (tmp_path / "bank-data" / "accounts.db").exists()  # the default data folder


def test_emails_command_runs_until_sigterm(tmp_path: Path) -> None:
    with SmtpSink() as sink:
        process = _spawn("emails", "--url", "memory://", "--smtp", sink.address, cwd=tmp_path)
        try:
            assert process.stdout is not None
            seen = []
            for line in process.stdout:  # ends at EOF if the process dies
                seen.append(line)
                if "email service ready" in line:
                    break
            assert "email service ready" in seen[-1], seen
        finally:
            code, out = _stop(process)
    assert code == 0, out
    assert (tmp_path / "bank-data" / "emails.db").exists()
