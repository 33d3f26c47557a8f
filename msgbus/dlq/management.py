"""Listing RabbitMQ's queues through its management plugin's HTTP API (standard library only).

AMQP 0-9-1 has no way to list queues, so ``msgbus dlq list`` without topics on RabbitMQ
(``amqp://`` and ``kombu+amqp://``) needs the management plugin: ``GET
/api/queues/<vhost>?columns=name`` answers the queue names of a virtual host (see the
RabbitMQ documentation, "Management HTTP API"). A dead-letter store is the durable queue
``<topic>.dlq`` (:mod:`msgbus.deadletters`). The URL's user and password authenticate (HTTP
basic); the password is remembered as a secret, so it never shows in an error or a log.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from msgbus import secrets
from msgbus.errors import AuthenticationError, BrokerUnavailable, ConfigurationError

__all__ = ["management_queues", "vhost_of"]


def vhost_of(backend: Any) -> str:
    """The virtual host a backend uses: its ``vhost`` option, else its URL's path, else
    ``/``."""
    chosen = getattr(getattr(backend, "options", None), "vhost", None)
    if chosen:
        return str(chosen)
    path = getattr(getattr(backend, "url", None), "path", "") or ""
    return unquote(path) or "/"


def management_queues(management_url: str, vhost: str, *, timeout: float = 10.0) -> list[str]:
    """The names of the queues of ``vhost``, from the management API at ``management_url``
    (``http[s]://user:password@host:15672``; without a user, guest/guest as RabbitMQ's
    default). Raises :class:`~msgbus.ConfigurationError` for a malformed URL,
    :class:`~msgbus.AuthenticationError` when refused and :class:`~msgbus.BrokerUnavailable`
    when the API does not answer."""
    parts = urlsplit(management_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "management_url must look like http://user:password@host:15672, not "
            f"{secrets.mask(management_url)!r}"
        )
    user = unquote(parts.username or "guest")
    password = unquote(parts.password or "guest")
    secrets.remember(password if parts.password else None)
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:  # IPv6
        netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    url = f"{base}/api/queues/{quote(vhost, safe='')}?columns=name"
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    where = f"the RabbitMQ management API at {base}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            rows = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise AuthenticationError(f"{where} refused user {user!r} ({exc.code})") from None
        if exc.code == 404:
            raise ConfigurationError(f"{where}: no virtual host {vhost!r} (404)") from None
        raise BrokerUnavailable(f"{where} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BrokerUnavailable(f"{where} did not answer: {secrets.mask(str(exc))}") from None
    return sorted(str(row["name"]) for row in rows if isinstance(row, dict) and "name" in row)
