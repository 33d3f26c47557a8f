"""What a ``kombu+<transport>://`` URL becomes for kombu: the query split between msgbus's
options and kombu's parameters, one kombu URL per failover host, and the checks of the
filesystem transport's folders. Pure functions; thread-safe.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from msgbus.errors import ConfigurationError
from msgbus.url import BusURL

__all__ = ["KOMBU_QUERY", "check_filesystem_folders", "kombu_urls"]

KOMBU_QUERY = ("heartbeat", "login_method", "insist")
"""Query parameters handed to kombu (besides ``ssl`` and ``ssl_*``)."""


def kombu_urls(url: BusURL, *, amqp: bool) -> tuple[BusURL, list[str], dict[str, str]]:
    """Split ``url`` (``kombu+<transport>://...``) three ways.

    Returns the URL with only msgbus's options left in its query (for
    :func:`~msgbus.backendkit.parse_options`); kombu's URLs, ``<transport>://...`` with
    kombu's query parameters, one per host of a failover list (password included: never log
    them); and, for an AMQP transport (``amqp``), the ``ssl``/``ssl_*`` parameters, which
    are then left out of kombu's URLs (:mod:`msgbus.backends.kombu_tls` maps them).
    """
    passed = {k: v for k, v in url.query.items() if k.startswith("ssl") or k in KOMBU_QUERY}
    ours = url.with_query(**dict.fromkeys(passed))
    tls_query: dict[str, str] = {}
    if amqp:
        tls_query = {k: v for k, v in passed.items() if k.startswith("ssl")}
        passed = {k: v for k, v in passed.items() if k not in tls_query}
    for_kombu = url.with_query(**{k: None for k in url.query if k not in passed})
    hosts = for_kombu.hosts or ()
    if len(hosts) > 1:
        urls = [
            dataclasses.replace(for_kombu, hosts=(host,)).render(
                hide_password=False, scheme=url.driver
            )
            for host in hosts
        ]
    else:
        urls = [for_kombu.render(hide_password=False, scheme=url.driver)]
    return ours, urls, tls_query


def check_filesystem_folders(transport_options: Mapping[str, Any]) -> None:
    """kombu's filesystem transport reads and writes folders named by transport options
    (default ``data_in``/``data_out`` in the working directory); refuse at once, naming the
    options, when they are not existing folders."""
    for name, default in (
        ("data_folder_in", "data_in"),
        ("data_folder_out", "data_out"),
    ):
        folder = transport_options.get(name, default)
        if not os.path.isdir(folder):
            raise ConfigurationError(
                f"kombu's filesystem transport needs the folder {folder!r} ({name}): create "
                "it, or pass existing folders, e.g. transport_options={'data_folder_in': D, "
                "'data_folder_out': D} (D the same for every process)"
            )
