"""The msgbus command: publish and consume on a named memory broker in one process."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from msgbus.cli import main
from msgbus.testing.recorder import wait_until


def test_publish_lines_then_consume_json() -> None:
    url = f"memory://cli-{uuid.uuid4().hex[:8]}"
    out, err = io.StringIO(), io.StringIO()
    status: list[int] = []
    consumer = threading.Thread(
        target=lambda: status.append(
            main(
                ["consume", url, "orders", "--group", "g", "--json", "--max-messages", "3"],
                stdout=out,
                stderr=err,
            )
        )
    )
    consumer.start()
    wait_until(lambda: "consuming orders" in err.getvalue(), 10, "consumer ready")
    stdin = io.StringIO('{"id": 1}\nplain words\n\n42\n')
    perr = io.StringIO()
    assert (
        main(
            ["publish", url, "orders", "--key", "k1", "--header", "tenant=a"],
            stdin=stdin,
            stderr=perr,
        )
        == 0
    )
    assert "published 3 message(s)" in perr.getvalue()
    consumer.join(15)
    assert status == [0]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["payload"] for line in lines] == [{"id": 1}, "plain words", 42]
    assert {line["key"] for line in lines} == {"k1"}
    assert all(line["headers"] == {"tenant": "a"} for line in lines)


def test_errors_are_one_line_and_exit_1() -> None:
    err = io.StringIO()
    assert main(["publish", "nope://x", "t", "--data", "1"], stderr=err) == 1
    assert err.getvalue().startswith("msgbus: error: no msgbus backend for scheme 'nope'")
    err = io.StringIO()
    status = main(
        ["publish", "memory://x", "t", "--format", "json"], stdin=io.StringIO("{bad\n"), stderr=err
    )
    assert status == 1 and "line 1 is not JSON" in err.getvalue()


def test_memory_urls_warn_that_they_stay_in_one_process() -> None:
    err = io.StringIO()
    assert main(["publish", "memory://w", "t", "--data", "1"], stderr=err) == 0
    warning = err.getvalue().splitlines()[0]
    assert "only buses inside this process" in warning
    assert "kombu+sqla+sqlite" in warning and "msgbus broker start" in warning


def test_missing_extra_is_one_line_with_the_install_hint() -> None:
    code = (
        "import sys; sys.modules['hdrh'] = None; sys.modules['matplotlib'] = None\n"
        "from msgbus.cli import main\n"
        "raise SystemExit(main(['bench', 'report', '/nonexistent']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "msgbus: error: this needs the Python package 'hdrh', which is not installed: "
        'pip install "msgbus[bench]"'
    ] or ("matplotlib" in done.stderr and len(done.stderr.splitlines()) == 1)


def test_idle_timeout_counts_from_the_last_message() -> None:
    url = f"memory://cli-{uuid.uuid4().hex[:8]}"
    out, err = io.StringIO(), io.StringIO()
    status: list[int] = []
    consumer = threading.Thread(
        target=lambda: status.append(
            main(["consume", url, "t", "--idle-timeout", "1"], stdout=out, stderr=err)
        )
    )
    consumer.start()
    wait_until(lambda: "consuming t" in err.getvalue(), 10, "consumer ready")
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 2.5:  # messages keep coming for longer than 1 s
        assert main(["publish", url, "t", "--data", str(sent)], stderr=io.StringIO()) == 0
        sent += 1
        wait_until(lambda n=sent: len(out.getvalue().splitlines()) == n, 5, "message shown")
        assert consumer.is_alive(), "stopped while messages kept coming"
        time.sleep(0.3)  # the pace of the publisher, not a synchronisation
    consumer.join(10)
    assert status == [0] and len(out.getvalue().splitlines()) == sent


def test_ctrl_c_exits_130() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "msgbus.cli", "consume", "memory://", "t"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=tempfile.gettempdir(),  # not the repository: import msgbus as installed
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("consuming"):
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
    finally:
        proc.kill()
        proc.wait()
