"""Backend options: one frozen dataclass per backend, filled from the URL query and keywords."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from msgbus import secrets
from msgbus.errors import ConfigurationError, UnknownOption
from msgbus.url import BusURL

__all__ = ["host_ports", "parse_options", "require_positive", "url_credentials"]


Opts = TypeVar("Opts")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_options(
    options_type: type[Opts],
    url: BusURL,
    options: Mapping[str, Any],
    *,
    backend: str,
    url_fields: Mapping[str, Any] | None = None,
) -> Opts:
    """Build the dataclass ``options_type`` from URL query strings and keyword options.

    Keywords win over the URL query; ``url_fields`` (values taken from the URL itself, such as
    the user name) are applied first. Strings are converted to each field's annotated type
    (bool, int, float, str, ``Literal`` choices, their ``| None`` forms). An unknown key raises
    :class:`UnknownOption` naming the valid ones (and the nearest match); a bad value raises
    :class:`ConfigurationError` naming the option, never echoing a secret field's value.
    """
    if not dataclasses.is_dataclass(options_type):
        raise TypeError(f"{options_type!r} is not a dataclass")
    hints = typing.get_type_hints(options_type)
    fields = {f.name: f for f in dataclasses.fields(options_type) if f.init}
    values: dict[str, Any] = dict(url_fields or {})
    for source, items in (("URL option", url.query), ("option", options)):
        after_secret = False
        for name, raw in items.items():
            if (name not in fields or name.startswith("_")) and after_secret:
                raise UnknownOption(
                    f"unknown {source} after the secret option of the {backend} URL (its name "
                    "is not shown: it may be part of the secret; percent-encode & and = in a "
                    "secret, %26 and %3D)"
                )
            if name not in fields or name.startswith("_"):
                valid = ", ".join(sorted(n for n in fields if not n.startswith("_")))
                close = difflib.get_close_matches(name, list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnknownOption(
                    f"unknown {source} {name!r} for the {backend} backend{hint}; "
                    f"valid options: {valid}"
                )
            secret = not fields[name].repr or secrets.is_secret_option(name)
            after_secret = after_secret or (secret and source == "URL option")
            values[name] = _convert(name, raw, hints[name], backend=backend, secret=secret)
    return options_type(**values)


def _convert(name: str, raw: Any, hint: Any, *, backend: str, secret: bool) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        empty = raw is None or (isinstance(raw, str) and raw.lower() in ("", "none", "null"))
        if empty and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    shown = "<hidden>" if secret else repr(raw)
    if origin is typing.Literal:
        value = raw.lower() if isinstance(raw, str) else raw
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigurationError(
                f"{backend} option {name!r} must be one of {choices}, not {shown}"
            )
        return value
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ConfigurationError(f"{backend} option {name!r} must be true or false, not {shown}")
    if hint in (int, float):
        if isinstance(raw, bool):
            raise ConfigurationError(f"{backend} option {name!r} must be a number, not {shown}")
        try:
            return hint(raw)
        except (TypeError, ValueError):
            kind = "an integer" if hint is int else "a number"
            raise ConfigurationError(
                f"{backend} option {name!r} must be {kind}, not {shown}"
            ) from None
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigurationError(f"{backend} option {name!r} must be a string, not {shown}")
        return raw
    return raw


def require_positive(options: Any, *names: str, backend: str) -> None:
    """Raise :class:`ConfigurationError` naming the first of ``names`` whose value on
    ``options`` is not positive (None counts as unset and passes)."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value <= 0:
            raise ConfigurationError(f"{backend} option {name!r} must be positive")


def url_credentials(url: BusURL) -> dict[str, Any]:
    """``username``/``password`` from the URL's user info, for ``parse_options(url_fields=)``."""
    fields: dict[str, Any] = {}
    if url.username is not None:
        fields["username"] = url.username
    if url.password is not None:
        fields["password"] = url.password
    return fields


def host_ports(url: BusURL, default_port: int) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of ``url`` in order (IPv6 brackets stripped, missing ports
    ``default_port``); ``[("localhost", default_port)]`` when the URL names no host."""
    pairs = [(h.host.strip("[]"), h.port or default_port) for h in url.hosts]
    return pairs or [("localhost", default_port)]
