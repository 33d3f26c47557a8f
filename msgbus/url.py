"""Bus URLs: ``scheme[+driver]://[user[:password]@]host[:port][,host[:port]...][/path][?k=v&...]``.

:class:`BusURL` is immutable. Its ``repr`` and ``str`` never show the password; only
``render(hide_password=False)`` does, for handing the URL to a driver. The same holds for
the values of secret query options (``?password=``, ``?ssl_key_password=``...).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

from msgbus.errors import InvalidURL
from msgbus.secrets import MASK, is_secret_option

__all__ = ["BusURL", "HostPort"]

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9.\-]*(\+[a-zA-Z][a-zA-Z0-9.\-]*)*$")
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._\-~%]+)$")


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

        The error names the wrong part; it never quotes the user info (``user:password@``)
        nor the value of a secret option, and quotes no part at all when the URL holds an
        ``@`` (a password with unencoded ``/ ? # @`` would otherwise leak into it).
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
            raise InvalidURL(f"invalid scheme {_part(scheme, text)}in {_redact(text)!r}")
        rest, _, fragment = rest.partition("#")
        if fragment or text.endswith("#"):
            raise InvalidURL(f"a bus URL takes no #fragment: {_redact(text)!r}{_ENCODE_HINT}")
        rest, _, query_text = rest.partition("?")
        netloc, slash, path = rest.partition("/")
        username = password = None
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            user, has_password, secret = userinfo.partition(":")
            username = unquote(user)
            password = unquote(secret) if has_password else None
        elif "@" in path:
            raise InvalidURL(
                f"an '@' after the host in {_redact(text)!r}: a user name or password with "
                f"'/', '?', '#' or '@'{_ENCODE_HINT[1:]}"
            )
        hosts = tuple(_parse_host(item, text) for item in netloc.split(",")) if netloc else ()
        query: dict[str, str] = {}
        try:
            pairs = parse_qsl(query_text, keep_blank_values=True, strict_parsing=bool(query_text))
        except ValueError:
            raise InvalidURL(
                f"malformed query string in {_redact(text)!r} (expected ?name=value&...)"
            ) from None
        for key, value in pairs:
            if key in query:
                raise InvalidURL(f"option {_part(key, text)}appears twice in {_redact(text)!r}")
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
        """Return the URL as text; the password and the values of secret options
        (:func:`msgbus.secrets.is_secret_option`) are ``***`` unless ``hide_password=False``.
        ``BusURL.parse(url.render(hide_password=False)) == url``.

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
            out += "?" + "&".join(
                f"{quote(k, safe='')}="
                + (MASK if hide_password and is_secret_option(k) else quote(v, safe=""))
                for k, v in self.query.items()
            )
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
        host, closed, after = item.partition("]")
        if not closed:
            raise InvalidURL(f"an IPv6 address without its closing ']' in {_redact(text)!r}")
        host += "]"
        if after and not after.startswith(":"):
            raise InvalidURL(
                f"unexpected {_part(after, text)}after an IPv6 address in {_redact(text)!r}"
            )
        port_text, has_port = after[1:], bool(after)
    else:
        host, has_port_sep, port_text = item.partition(":")
        has_port = bool(has_port_sep)
    if not _HOST.match(host) or (host.startswith("[") and not _is_ipv6(host[1:-1])):
        raise InvalidURL(f"invalid host {_part(host, text)}in {_redact(text)!r}")
    port = None
    if has_port:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidURL(
                f"invalid port {_part(port_text, text)}in {_redact(text)!r} "
                "(a number from 1 to 65535)"
            )
        port = int(port_text)
    return HostPort(unquote(host), port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_ENCODE_HINT = " (percent-encode / ? # @ : in a user name or password, e.g. %2F for /)"


def _part(part: str, text: str) -> str:
    """``'part' `` for an error message, or ``""`` when the URL holds user info or a secret
    option (the part might come from the password)."""
    if "@" in text or _SECRET_QUERY.search(text):
        return ""
    return f"{part!r} "


_SECRET_QUERY = re.compile(r"([?&;]([^=&#]*)=)([^&#]*)")


def _redact(text: str) -> str:
    """Hide the user info and secret option values of a (possibly malformed) URL so it can
    go into an error message. Everything up to the last ``@`` after ``://`` is user info;
    everything after the ``=`` of the first secret option is its value (an unencoded ``&``
    or ``#`` in it would otherwise end it early). When the two overlap, all is hidden."""
    scheme, sep, rest = text.partition("://")
    at = rest.rfind("@")
    secret_at = next(
        (m.end(1) for m in _SECRET_QUERY.finditer(rest) if is_secret_option(unquote(m.group(2)))),
        None,
    )
    if secret_at is not None and at >= secret_at:
        return scheme + sep + MASK
    if secret_at is not None:
        rest = rest[:secret_at] + MASK
    if sep and at >= 0:
        rest = MASK + rest[at:]
    return scheme + sep + rest
