"""Bus URLs: ``scheme[+driver]://[user[:password]@]host[:port][,host[:port]...][/path][?k=v&...]``.

:class:`BusURL` is immutable. Its ``repr`` and ``str`` never show the password; only
``render(hide_password=False)`` does, for handing the URL to a driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

from msgbus.errors import InvalidURL

__all__ = ["BusURL", "HostPort"]

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9.\-]*(\+[a-zA-Z][a-zA-Z0-9.\-]*)?$")
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._\-~%]+)$")
MASK = "***"


@dataclass(frozen=True)
class HostPort:
    """One ``host[:port]`` of a URL's host list; ``port`` is None when the URL gives none."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BusURL:
    """A parsed bus URL.

    ``scheme`` is the full lower-cased scheme as written (``"kombu+redis"``), ``base_scheme``
    the part before ``+`` and ``driver`` the part after it (or ``""``). ``hosts`` keeps the
    order of the URL (backends try them in turn). ``path`` has no leading slash and is
    percent-decoded. ``query`` maps each option to its (decoded) string value.
    """

    scheme: str
    hosts: tuple[HostPort, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> BusURL:
        """Parse ``url``; raise :class:`InvalidURL` (a ``ValueError``) saying what is wrong.

        The error text never contains the password of the URL it rejects.
        """
        if not isinstance(url, str):
            raise InvalidURL(f"a bus URL must be a string, not {type(url).__name__}")
        text = url.strip()
        if "://" not in text:
            raise InvalidURL(
                f"not a bus URL: {_redact(text)!r} (expected scheme://..., e.g. memory:// "
                "or kafka://127.0.0.1:9092)"
            )
        scheme, rest = text.split("://", 1)
        if not _SCHEME.match(scheme):
            raise InvalidURL(f"invalid scheme {scheme!r} in {_redact(text)!r}")
        rest, _, fragment = rest.partition("#")
        if fragment:
            raise InvalidURL(f"a bus URL takes no #fragment: {_redact(text)!r}")
        rest, _, query_text = rest.partition("?")
        netloc, slash, path = rest.partition("/")
        username = password = None
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            user, has_password, secret = userinfo.partition(":")
            username = unquote(user)
            password = unquote(secret) if has_password else None
        hosts = tuple(_parse_host(item, text) for item in netloc.split(",")) if netloc else ()
        query: dict[str, str] = {}
        try:
            pairs = parse_qsl(query_text, keep_blank_values=True, strict_parsing=bool(query_text))
        except ValueError as exc:
            raise InvalidURL(f"malformed query string in {_redact(text)!r}: {exc}") from None
        for key, value in pairs:
            if key in query:
                raise InvalidURL(f"option {key!r} appears twice in {_redact(text)!r}")
            query[key] = value
        return cls(
            scheme=scheme.lower(),
            hosts=hosts,
            username=username,
            password=password,
            path=unquote(path) if slash else "",
            query=query,
        )

    @property
    def base_scheme(self) -> str:
        """The scheme before any ``+driver`` suffix (``"kombu"`` for ``kombu+redis``)."""
        return self.scheme.partition("+")[0]

    @property
    def driver(self) -> str:
        """The part of the scheme after ``+`` (``"redis"`` for ``kombu+redis``), or ``""``."""
        return self.scheme.partition("+")[2]

    def with_query(self, **changes: str | None) -> BusURL:
        """Return a copy with query options replaced (a value of None removes the option)."""
        query = dict(self.query)
        for key, value in changes.items():
            if value is None:
                query.pop(key, None)
            else:
                query[key] = value
        return BusURL(self.scheme, self.hosts, self.username, self.password, self.path, query)

    def render(self, *, hide_password: bool = True, scheme: str | None = None) -> str:
        """Return the URL as text; the password is ``***`` unless ``hide_password=False``.

        ``scheme`` replaces the scheme in the output (used to hand ``kombu+redis://`` to
        kombu as ``redis://``).
        """
        out = f"{scheme if scheme is not None else self.scheme}://"
        if self.username is not None:
            out += quote(self.username, safe="")
            if self.password is not None:
                out += ":" + (MASK if hide_password else quote(self.password, safe=""))
            out += "@"
        out += ",".join(str(h) for h in self.hosts)
        if self.path:
            out += "/" + quote(self.path, safe="/")
        if self.query:
            out += "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in self.query.items())
        return out

    def __str__(self) -> str:
        return self.render(hide_password=True)

    def __repr__(self) -> str:
        return f"BusURL({self.render(hide_password=True)!r})"


def _parse_host(item: str, text: str) -> HostPort:
    item = item.strip()
    if not item:
        raise InvalidURL(f"empty host in {_redact(text)!r}")
    if item.startswith("["):
        host, _, port_text = item.partition("]")
        host += "]"
        port_text = port_text[1:] if port_text.startswith(":") else port_text
    else:
        host, _, port_text = item.partition(":")
    if not _HOST.match(host):
        raise InvalidURL(f"invalid host {host!r} in {_redact(text)!r}")
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidURL(f"invalid port {port_text!r} in {_redact(text)!r}")
        port = int(port_text)
    return HostPort(unquote(host), port)


def _redact(text: str) -> str:
    """Hide the password of a (possibly malformed) URL so it can go into an error message."""
    return re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1" + MASK + "@", text)
