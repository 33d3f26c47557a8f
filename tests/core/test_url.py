"""BusURL parsing and rendering; passwords never shown."""

from __future__ import annotations

import pytest

from msgbus import BusURL, InvalidURL
from msgbus.url import HostPort


def test_parses_every_part() -> None:
    url = BusURL.parse("amqp://guest:s%40cret@h1:5672,h2/my%2Fvhost?heartbeat=30&x=")
    assert url.scheme == "amqp" and url.base_scheme == "amqp" and url.driver == ""
    assert url.hosts == (HostPort("h1", 5672), HostPort("h2", None))
    assert url.username == "guest" and url.password == "s@cret"
    assert url.path == "my/vhost"
    assert url.query == {"heartbeat": "30", "x": ""}


def test_driver_suffix_and_ipv6() -> None:
    url = BusURL.parse("kombu+redis://[::1]:6379/0")
    assert (url.base_scheme, url.driver) == ("kombu", "redis")
    assert url.hosts == (HostPort("[::1]", 6379),)
    assert url.render(scheme="redis") == "redis://[::1]:6379/0"


def test_memory_forms() -> None:
    assert BusURL.parse("memory://").hosts == ()
    assert BusURL.parse("memory://bank").hosts == (HostPort("bank"),)


def test_password_hidden_in_repr_str_and_render() -> None:
    url = BusURL.parse("amqp://ana:topsecret@h/")
    for text in (repr(url), str(url), url.render()):
        assert "topsecret" not in text and "***" in text
    assert "topsecret" in url.render(hide_password=False)


@pytest.mark.parametrize(
    "text",
    [
        "no-scheme-here",
        "1bad://host",
        "kafka://u:topsecret@host:99999",
        "kafka://u:topsecret@host:port",
        "kafka://u:topsecret@,host",
        "kafka://host?a=1&a=2",
        "kafka://host#frag",
        "kafka://bad host",
    ],
)
def test_malformed_urls_are_clear_value_errors(text: str) -> None:
    with pytest.raises(InvalidURL) as info:
        BusURL.parse(text)
    assert isinstance(info.value, ValueError)
    assert "topsecret" not in str(info.value)


def test_with_query_replaces_and_removes() -> None:
    url = BusURL.parse("kafka://h:1?a=1&b=2").with_query(a="3", b=None)
    assert url.query == {"a": "3"}
