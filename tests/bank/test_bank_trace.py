"""One OpenTelemetry trace from ``POST /accounts`` to the SMTP send (``demo --print-spans``)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from msgbus.contrib.bank.store import AccountStore
from msgbus.contrib.bank.tracing import restored
from msgbus.testing.brokers import Broker

LINE = re.compile(
    r"^trace=(?P<trace>[0-9a-f]{32}) span=(?P<span>[0-9a-f]{16}) parent=(?P<parent>\S+) "
    r"(?P<kind>\w+)\s+'(?P<name>[^']*)'"
)


def demo_spans(tmp_path: Path, *url: str, accounts: int = 2) -> list[dict[str, str]]:
    """Run ``msgbus-bank demo --print-spans`` (cwd outside the repo); return its spans."""
    pytest.importorskip("opentelemetry.instrumentation.fastapi")
    command = [sys.executable, "-m", "msgbus.contrib.bank.cli", "demo", "--print-spans"]
    done = subprocess.run(
        [*command, "--accounts", str(accounts), *url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result          OK" in done.stdout
    return [m.groupdict() for m in map(LINE.match, done.stdout.splitlines()) if m]


def assert_one_trace_per_account(spans: list[dict[str, str]], accounts: int) -> None:
    """Each SMTP send's ancestry is process <- send <- POST /accounts (the root), all in one
    trace, and every account has its own trace."""
    by_id = {s["span"]: s for s in spans}
    sends = [s for s in spans if s["name"] == "smtp send"]
    assert len(sends) == accounts, spans
    traces = set()
    for leaf in sends:
        chain = [leaf]
        while chain[-1]["parent"] in by_id:
            chain.append(by_id[chain[-1]["parent"]])
        assert [(s["kind"], s["name"].split()[0]) for s in chain] == [
            ("client", "smtp"),
            ("consumer", "process"),
            ("producer", "send"),
            ("server", "POST"),
        ], chain
        assert chain[-1]["name"] == "POST /accounts" and chain[-1]["parent"] == "-"
        (trace_id,) = {s["trace"] for s in chain}
        traces.add(trace_id)
    assert len(traces) == accounts


def test_one_trace_from_the_request_to_the_smtp_send_on_memory(tmp_path: Path) -> None:
    assert_one_trace_per_account(demo_spans(tmp_path), 2)


@pytest.mark.rabbitmq
def test_one_trace_from_the_request_to_the_smtp_send_on_rabbitmq(
    tmp_path: Path, rabbitmq_broker: Broker
) -> None:
    spans = demo_spans(tmp_path, "--url", rabbitmq_broker.url)
    assert_one_trace_per_account(spans, 2)
    assert all("guest" not in s["name"] for s in spans)


def test_a_bad_stored_context_is_ignored() -> None:
    for stored in (None, "", "{not json", "[1, 2]", '{"traceparent": "00-zz"}'):
        with restored(stored):
            pass  # no error: the relay publishes outside any trace


def test_an_outbox_written_before_tracing_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL"
            " UNIQUE, topic TEXT NOT NULL, msg_key TEXT, payload TEXT NOT NULL, correlation_id"
            " TEXT, created_at REAL NOT NULL, sent_at REAL, attempts INTEGER NOT NULL DEFAULT 0,"
            " last_error TEXT)"
        )
    conn.close()
    store = AccountStore(path)
    try:
        store.create_account("Ana", "ana@example.com", trace_context='{"traceparent": "x"}')
        (entry,) = store.pending()
        assert entry.trace_context == '{"traceparent": "x"}'
    finally:
        store.close()
