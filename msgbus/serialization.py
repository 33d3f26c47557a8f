"""Codecs: how payloads become bodies and back, chosen by name or by content type.

Built in: ``json`` (``application/json``, the default), ``bytes``
(``application/octet-stream``, passes bytes through untouched) and ``text``
(``text/plain; charset=utf-8``). Add more with :func:`register_codec`. The registry is
process-wide and thread-safe to read; register codecs at import time.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
from collections.abc import Callable
from typing import Any

from msgbus.errors import ConfigurationError, DecodeError, SerializationError

__all__ = ["Codec", "codec_for_content_type", "get_codec", "register_codec"]


@dataclasses.dataclass(frozen=True)
class Codec:
    """A named pair of functions: ``encode(payload) -> bytes`` and ``decode(bytes) -> payload``.

    ``encode`` raises :class:`SerializationError` (or ``TypeError``/``ValueError``, which the
    bus wraps) for payloads it cannot encode; ``decode`` raises :class:`DecodeError` (or
    ``ValueError``) for bodies it cannot decode.
    """

    name: str
    content_type: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_json_encoder = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
)
# The C encoder built once (JSONEncoder.encode builds one per call). Without a markers dict
# it does no circular-reference check: a cycle ends in RecursionError, reported below.
_c_encoder = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _json_default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
    if getattr(json.encoder, "c_make_encoder", None) is not None
    else None
)


def _json_encode(payload: Any) -> bytes:
    if _c_encoder is None or isinstance(payload, str):
        return _json_encoder.encode(payload).encode("utf-8")
    try:
        return "".join(_c_encoder(payload, 0)).encode("utf-8")
    except RecursionError:
        raise SerializationError("payload is too deeply nested or contains a cycle") from None


_json_decoder = json.JSONDecoder()
_JSON_STARTS = frozenset('{["-0123456789tfn')


def _json_decode(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
        if text[:1] in _JSON_STARTS:  # the common case, without JSONDecoder's two regex scans
            value, end = _json_decoder.raw_decode(text)
            if end == len(text) or not text[end:].strip():
                return value
        return _json_decoder.decode(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from exc


def _bytes_encode(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    raise SerializationError(f"the bytes codec takes bytes, not {type(payload).__name__}")


def _text_encode(payload: Any) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    raise SerializationError(f"the text codec takes str, not {type(payload).__name__}")


def _text_decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"body is not valid UTF-8 text: {exc}") from exc


_CODECS: dict[str, Codec] = {}
_BY_CONTENT_TYPE: dict[str, Codec] = {}


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Make ``codec`` available by its name and content type.

    Raises :class:`ConfigurationError` if the name is taken, unless ``replace``.
    """
    if codec.name in _CODECS and not replace:
        raise ConfigurationError(f"a codec named {codec.name!r} is already registered")
    _CODECS[codec.name] = codec
    _BY_CONTENT_TYPE[_media_type(codec.content_type)] = codec
    _BY_CONTENT_TYPE[codec.content_type] = codec


def get_codec(name: str) -> Codec:
    """Return the codec called ``name``; :class:`ConfigurationError` lists the known ones."""
    try:
        return _CODECS[name]
    except KeyError:
        known = ", ".join(sorted(_CODECS))
        raise ConfigurationError(f"unknown codec {name!r}; known codecs: {known}") from None


def codec_for_content_type(content_type: str | None) -> Codec | None:
    """Return the codec for a content type (parameters such as charset ignored), or None."""
    if not content_type:
        return None
    codec = _BY_CONTENT_TYPE.get(content_type)
    return codec if codec is not None else _BY_CONTENT_TYPE.get(_media_type(content_type))


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


JSON = Codec("json", "application/json", _json_encode, _json_decode)
BYTES = Codec("bytes", "application/octet-stream", _bytes_encode, bytes)
TEXT = Codec("text", "text/plain; charset=utf-8", _text_encode, _text_decode)
for _codec in (JSON, BYTES, TEXT):
    register_codec(_codec)
