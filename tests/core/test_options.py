"""Typed backend options from URL queries and keywords."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

import msgbus
from msgbus.backend import parse_options
from msgbus.url import BusURL


@dataclass(frozen=True)
class Opts:
    retries: int = 3
    wait: float = 0.5
    fast: bool = False
    mode: Literal["classic", "quorum"] = "classic"
    name: str | None = None
    password: str | None = field(default=None, repr=False)


def test_converts_url_strings_and_keywords_win() -> None:
    url = BusURL.parse("x://h?retries=5&wait=0.25&fast=yes&mode=QUORUM&name=none")
    opts = parse_options(Opts, url, {"retries": 7}, backend="x")
    assert opts == Opts(retries=7, wait=0.25, fast=True, mode="quorum", name=None)


def test_unknown_option_lists_valid_ones_and_suggests() -> None:
    with pytest.raises(msgbus.UnknownOption) as info:
        parse_options(Opts, BusURL.parse("x://h?retrys=1"), {}, backend="x")
    text = str(info.value)
    assert "did you mean 'retries'" in text
    assert "fast, mode, name, password, retries, wait" in text
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("query", "message"),
    [("retries=many", "integer"), ("fast=maybe", "true or false"), ("mode=x", "one of")],
)
def test_bad_values_name_the_option(query: str, message: str) -> None:
    with pytest.raises(msgbus.ConfigurationError, match=message):
        parse_options(Opts, BusURL.parse(f"x://h?{query}"), {}, backend="x")


def test_secret_values_are_never_echoed() -> None:
    @dataclass(frozen=True)
    class Secretive:
        token: int = field(default=0, repr=False)

    with pytest.raises(msgbus.ConfigurationError) as info:
        parse_options(Secretive, BusURL.parse("x://h?token=hunter2"), {}, backend="x")
    assert "hunter2" not in str(info.value)


def test_memory_backend_refuses_unknown_options() -> None:
    with pytest.raises(msgbus.UnknownOption, match="max_message_bytes"):
        msgbus.connect("memory://x?prefetch=3")
    with pytest.raises(msgbus.UnknownOption):
        msgbus.connect("memory://x", bogus=True)
