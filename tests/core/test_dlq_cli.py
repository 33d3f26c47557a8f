"""``msgbus dlq`` list/show/redrive/purge, driven through ``msgbus.cli.main`` in-process on a
named memory broker (the conformance suite covers the API on every real broker)."""

from __future__ import annotations

import io
import json
import uuid

import pytest

import msgbus
import msgbus.dlq
from msgbus.cli import main
from msgbus.dlq.cli import main as dlq_main
from msgbus.testing.recorder import Recorder


def _fail(msg: msgbus.Message) -> None:
    if msg.payload.get("reject"):
        raise msgbus.Reject("bad version")
    raise ConnectionError("smtp down")


@pytest.fixture
def dead(tmp_path: object) -> tuple[str, str]:
    """A memory broker whose topic ``mail`` has three dead letters (2 ConnectionError, 1
    Reject) and a group ``svc`` that now succeeds; yields (url, topic)."""
    url = f"memory://dlqcli-{uuid.uuid4().hex[:8]}"
    failing = Recorder(_fail)
    with msgbus.connect(url) as bus:
        bus.subscribe("mail", failing, group="svc", max_attempts=1)
        bus.start()
        for n in range(3):
            bus.publish("mail", {"n": n, "reject": n == 2}, key=f"k{n}", message_id=f"id{n}")
        failing.wait_for_attempts(3, 10)
    return url, "mail"


def run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    """``msgbus dlq ARGV`` (its module's main, given stdin/stdout) -> (status, out, err)."""
    out = io.StringIO()
    code = dlq_main([*argv, "--idle", "0.1"], stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue(), ""


def test_list_as_table_and_json(dead: tuple[str, str]) -> None:
    url, topic = dead
    code, out, _ = run("list", url, topic)
    assert code == 0
    assert "TOPIC" in out and "builtins.ConnectionError 2" in out and "Reject 1" in out
    code, out, _ = run("list", url, topic, "--json")
    (row,) = json.loads(out)
    assert row["count"] == 3 and row["complete"] is True
    assert row["error_types"] == {"builtins.ConnectionError": 2, "msgbus.errors.Reject": 1}


def test_show_filters_and_leaves_in_place(dead: tuple[str, str]) -> None:
    url, topic = dead
    code, out, _ = run("show", url, topic, "--error-type", "ConnectionError", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["id"] for r in rows) == ["id0", "id1"]
    assert rows[0]["error"] == "smtp down" and rows[0]["group"] == "svc"
    assert rows[0]["body_preview"].startswith('{"n"')
    code, out, _ = run("show", url, topic, "--limit", "1")
    assert "1 dead letter(s) of mail" in out and "error: builtins.ConnectionError" in out
    _, out, _ = run("list", url, topic, "--json")
    assert json.loads(out)[0]["count"] == 3


def test_redrive_dry_run_then_for_real(dead: tuple[str, str]) -> None:
    url, topic = dead
    code, out, _ = run("redrive", url, topic, "--error-type", "ConnectionError", "--dry-run")
    assert (code, out.strip()) == (
        0,
        "would redrive: 2, skipped (max redrives): 0, not matching: 1",
    )
    fixed = Recorder()
    with msgbus.connect(url) as bus:
        bus.subscribe(topic, fixed, group="svc")
        bus.start()
        code, out, _ = run("redrive", url, topic, "--error-type", "ConnectionError")
        assert out.strip() == "redriven: 2, skipped (max redrives): 0, not matching: 1"
        assert sorted(m.id for m in fixed.wait_for(2, 10)) == ["id0", "id1"]
    _, out, _ = run("show", url, topic, "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["id2"]


def test_purge_asks_first(dead: tuple[str, str]) -> None:
    url, topic = dead
    code, out, _ = run("purge", url, topic, stdin="n\n")
    assert code == 2 and "not purged" in out
    code, out, _ = run("purge", url, topic, "--error-type", "Reject", stdin="y\n")
    assert code == 0 and out.endswith("purged: 1\n")
    code, out, _ = run("purge", url, topic, "--yes")
    assert (code, out) == (0, "purged: 2\n")


def test_msgbus_dlq_is_a_subcommand_and_errors_are_one_line(
    dead: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, topic = dead
    assert main(["dlq", "list", url, topic, "--idle", "0.1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["count"] == 3
    err = io.StringIO()
    assert main(["dlq", "show", url, topic + ".dlq"], stderr=err) == 1
    assert "original topic, not its dead-letter topic" in err.getvalue()


def test_bad_usage_exits_2() -> None:
    assert main(["dlq", "frobnicate"], stdout=io.StringIO(), stderr=io.StringIO()) == 2


def test_list_without_topics_lists_every_dead_letter_topic(dead: tuple[str, str]) -> None:
    url, _ = dead
    code, out, _ = run("list", url, "--json")
    assert code == 0
    assert [(row["topic"], row["count"]) for row in json.loads(out)] == [("mail", 3)]


def test_dead_letter_error_text_hides_remembered_secrets() -> None:
    """The error text is kept in the broker and printed by ``msgbus dlq show``."""
    from msgbus import secrets

    secrets.remember("Dlq-S3cret!")

    def leaks(msg: msgbus.Message) -> None:
        raise ConnectionError("login as bank:Dlq-S3cret! refused")

    url = f"memory://dlqmask-{uuid.uuid4().hex[:8]}"
    failing = Recorder(leaks)
    with msgbus.connect(url) as bus:
        bus.subscribe("mail", failing, group="svc", max_attempts=1)
        bus.start()
        bus.publish("mail", {"n": 1})
        failing.wait_for_attempts(1, 10)
    code, out, _ = run("show", url, "mail", "--json")
    assert code == 0
    (line,) = out.splitlines()  # one JSON object per dead letter
    assert "Dlq-S3cret!" not in out
    assert json.loads(line)["error"] == "login as bank:*** refused"


def test_list_match_and_redrive_window(dead: tuple[str, str]) -> None:
    url, topic = dead
    _, out, _ = run("list", url, "--match", "ma*", "--json")
    assert [row["topic"] for row in json.loads(out)] == ["mail"]
    _, out, _ = run("list", url, "--match", "other.*", "--json")
    assert json.loads(out) == []
    with msgbus.connect(url) as bus:
        with pytest.raises(msgbus.ConfigurationError, match="window"):
            msgbus.dlq.redrive(bus, topic, window=0)
        fixed = Recorder()
        bus.subscribe(topic, fixed, group="svc")
        bus.start()
        report = msgbus.dlq.redrive(bus, topic, window=2, idle=0.1)
        assert sorted(i or "" for i in report.redriven) == ["id0", "id1", "id2"]
        assert sorted(m.id for m in fixed.wait_for(3, 10)) == ["id0", "id1", "id2"]
        assert msgbus.dlq.show(bus, topic, idle=0.1) == []


def test_management_url_errors_are_clear_and_hide_the_password() -> None:
    from msgbus.dlq.management import management_queues
    from msgbus.testing.brokers.base import pick_free_port

    with pytest.raises(msgbus.ConfigurationError, match="http://user:password@host"):
        management_queues("amqp://guest:s3cret-xyz@host:5672", "/")
    closed = f"http://guest:s3cret-xyz@127.0.0.1:{pick_free_port()}"  # nothing listens
    with pytest.raises(msgbus.BrokerUnavailable) as unreachable:
        management_queues(closed, "/", timeout=2)
    assert "s3cret-xyz" not in str(unreachable.value)


def test_url_from_msgbus_url_keeps_it_off_the_command_line(
    dead: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a URL word (no ``://``) the URL comes from $MSGBUS_URL; with neither, exit 2
    with a message naming the fix; a wrong topic count is a usage error too."""
    url, topic = dead
    monkeypatch.setenv("MSGBUS_URL", url)
    code, out, _ = run("show", topic, "--json")
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run("list", "--json")
    assert code == 0 and json.loads(out)[0]["count"] == 3
    monkeypatch.delenv("MSGBUS_URL")
    assert run("show", topic)[0] == 2
    assert "set MSGBUS_URL" in capsys.readouterr().err
    assert run("show", url, topic, "another")[0] == 2
    assert "expected one TOPIC" in capsys.readouterr().err
