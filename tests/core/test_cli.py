"""The msgbus command: publish and consume on a named memory broker in one process."""

from __future__ import annotations

import io
import json
import threading
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
