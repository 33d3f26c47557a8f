"""Rendering the confirmation mail, and host:port parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from msgbus.contrib.bank.events import AccountCreated
from msgbus.contrib.bank.mailer import parse_hostport, render_confirmation


def test_plain_and_html_parts_with_headers() -> None:
    event = AccountCreated.new(42, "Ana <Lima> & Co", "ana@example.com", datetime.now(UTC))
    mail = render_confirmation(event, correlation_id="corr-1")
    assert mail["To"] == "ana@example.com"
    assert mail["X-Correlation-ID"] == "corr-1"
    assert mail["X-Event-ID"] == event.event_id
    assert event.event_id in mail["Message-ID"]
    assert "42" in mail["Subject"]
    plain = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Hello Ana <Lima> & Co," in plain and "corr-1" in plain
    assert "Ana &lt;Lima&gt; &amp; Co" in html and "<Lima>" not in html


def test_no_correlation_id_no_header() -> None:
    event = AccountCreated.new(1, "Bo", "bo@example.com", datetime.now(UTC))
    assert "X-Correlation-ID" not in render_confirmation(event, correlation_id=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("localhost:2525", ("localhost", 2525)), ("mail", ("mail", 25)), ("[::1]:25", ("::1", 25))],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", [":25", "host:x", "host:0", "host:70000"])
def test_parse_hostport_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text)
