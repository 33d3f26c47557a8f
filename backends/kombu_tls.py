"""TLS for the kombu backend's AMQP transports (``kombu+amqps://``): the URL's ``ssl_*``
query parameters and the ``ssl_options`` option turned into kombu's ``ssl`` argument.

kombu's URL parser keeps ``ssl_*`` names as they are (redis-py's spelling), which py-amqp
does not take, so for ``amqp``/``amqps``/``pyamqp`` this module maps them to py-amqp's
names (the ``ssl`` argument of :class:`kombu.Connection`, documented by kombu's py-amqp
transport). The server's host name is checked by default (kombu fills in the host of the
connection), unless ``ssl_check_hostname=false`` or ``ssl_cert_reqs=none``. Pure functions;
thread-safe.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

from msgbus.errors import ConfigurationError

__all__ = ["TLS_QUERY", "amqp_ssl"]

TLS_QUERY = {
    "ssl_ca_certs": "ca_certs",
    "ssl_certfile": "certfile",
    "ssl_keyfile": "keyfile",
}
"""URL query parameters naming files, and py-amqp's name for each."""

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_KNOWN = ("ssl", *TLS_QUERY, "ssl_cert_reqs", "ssl_check_hostname")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in _TRUE + _FALSE:
        raise ConfigurationError(f"kombu URL parameter {name!r} must be true or false")
    return lowered in _TRUE


def amqp_ssl(
    transport: str, query: Mapping[str, str], option: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """kombu's ``ssl`` argument for an AMQP transport, or None for a plain connection.

    ``query``: the URL's ``ssl`` and ``ssl_*`` parameters (``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``: paths; ``ssl_cert_reqs``: ``none`` | ``optional`` |
    ``required`` (or ``CERT_*``); ``ssl_check_hostname``: bool, default true). ``option``:
    the ``ssl_options`` option, py-amqp's own names, applied over the URL's. TLS is on for
    ``amqps`` or when any of these is given (``ssl=false`` turns it off). Raises
    :class:`~msgbus.ConfigurationError` for an unknown ``ssl_*`` parameter, a bad value or a
    file that does not exist (named by its option, never its contents).
    """
    unknown = sorted(set(query) - set(_KNOWN))
    if unknown:
        raise ConfigurationError(
            f"unknown kombu TLS URL parameter(s) {', '.join(unknown)} for {transport}://; "
            f"known: {', '.join(_KNOWN)} (or the option ssl_options, py-amqp's names)"
        )
    wanted = transport == "amqps" or bool(option) or any(k != "ssl" for k in query)
    if "ssl" in query:
        wanted = _flag("ssl", query["ssl"])
    if not wanted:
        return None
    settings: dict[str, Any] = {py: query[name] for name, py in TLS_QUERY.items() if name in query}
    if "ssl_cert_reqs" in query:
        raw = query["ssl_cert_reqs"].lower().removeprefix("cert_")
        if raw not in _CERT_REQS:
            raise ConfigurationError(
                "kombu URL parameter 'ssl_cert_reqs' must be none, optional or required"
            )
        settings["cert_reqs"] = _CERT_REQS[raw]
    settings.update(option or {})
    for name, py in TLS_QUERY.items():
        path = settings.get(py)
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"kombu TLS: {py} ({name}) is not a readable file: {path!r}")
    check_hostname = _flag("ssl_check_hostname", query.get("ssl_check_hostname", "true"))
    if check_hostname and settings.get("cert_reqs") != ssl.CERT_NONE:
        settings.setdefault("server_hostname", None)  # kombu puts the connection's host here
    return settings
