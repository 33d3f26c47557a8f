"""Codecs: JSON by default, bytes untouched, text, dataclasses, pluggable codecs."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid

import pytest

import msgbus
from msgbus.serialization import codec_for_content_type, get_codec


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Account:
    id: int
    email: str
    opened: datetime.date
    color: Color
    ref: uuid.UUID


def test_dataclasses_and_common_types_encode_as_json() -> None:
    ref = uuid.UUID(int=1)
    body = get_codec("json").encode(
        Account(7, "ana@example.com", datetime.date(2026, 1, 2), Color.RED, ref)
    )
    assert get_codec("json").decode(body) == {
        "id": 7,
        "email": "ana@example.com",
        "opened": "2026-01-02",
        "color": "red",
        "ref": str(ref),
    }


def test_unencodable_payloads_raise_serialization_error() -> None:
    bus = msgbus.connect("memory://ser")
    with pytest.raises(msgbus.SerializationError):
        bus.publish("t", object())
    with pytest.raises(msgbus.SerializationError):
        bus.publish("t", {"x": float("nan")})
    with pytest.raises(msgbus.SerializationError):
        bus.publish("t", "not bytes", codec="bytes")
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(msgbus.SerializationError):
        bus.publish("t", cyclic)


def test_content_type_lookup_ignores_parameters() -> None:
    assert codec_for_content_type("application/json; charset=utf-8") is get_codec("json")
    assert codec_for_content_type("TEXT/PLAIN") is get_codec("text")
    assert codec_for_content_type("application/xml") is None


def test_custom_codec_by_name_round_trips() -> None:
    codec = msgbus.Codec(
        "upper-test", "text/x-upper", lambda p: p.upper().encode(), lambda b: b.decode().lower()
    )
    msgbus.register_codec(codec, replace=True)
    with pytest.raises(msgbus.ConfigurationError):
        msgbus.register_codec(codec)
    from msgbus.testing.recorder import Recorder

    with msgbus.connect("memory://codec") as bus:
        rec = Recorder()
        bus.subscribe("t", rec, group="g")
        bus.start()
        bus.publish("t", "hello", codec="upper-test")
        (msg,) = rec.wait_for(1, 5)
    assert msg.body == b"HELLO" and msg.payload == "hello" and msg.content_type == "text/x-upper"


def test_unknown_codec_name_lists_known() -> None:
    with pytest.raises(msgbus.ConfigurationError, match="bytes, json"):
        get_codec("yaml")


def test_undecodable_text_and_json() -> None:
    with pytest.raises(msgbus.DecodeError):
        get_codec("json").decode(b"\xff\xfe")
    with pytest.raises(msgbus.DecodeError):
        get_codec("text").decode(b"\xff")
