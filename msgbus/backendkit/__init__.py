"""The backend toolkit: what broker backends share, written once (standard library only).

- :mod:`~msgbus.backendkit.window`: the publish window (outbox, ``max_in_flight``, flush,
  confirms, resend after a reconnection, give-up after ``reconnect_timeout``);
- :mod:`~msgbus.backendkit.outage`: the outage policy (``down_since``, ``gave_up``,
  beyond recovery, backoff 0.1 → 2 s);
- :mod:`~msgbus.backendkit.buffer`: :class:`DeliveryBuffer`, the receive side of a
  subscription fed by a driver thread;
- :mod:`~msgbus.backendkit.options`: :func:`parse_options` and option checks;
- :mod:`~msgbus.backendkit.futures`: cheap publish futures and settling them;
- :mod:`~msgbus.backendkit.checks`, :mod:`~msgbus.backendkit.headers`: the publish contract
  checks, ``KEY_HEADER`` and header helpers;
- :mod:`~msgbus.backendkit.amqp`: the AMQP 0-9-1 property/header mapping.

The SPI itself (``Backend``, ``Subscription``, ``Delivery``, ``Features``) is
:mod:`msgbus.backend`; see docs/CONTRIBUTING-backends.md for a backend built on both.
"""

from __future__ import annotations

from msgbus.backendkit.buffer import DeliveryBuffer
from msgbus.backendkit.checks import check_publish
from msgbus.backendkit.futures import PendingFuture, ResolvedFuture, failed_future, settle_future
from msgbus.backendkit.headers import KEY_HEADER, as_text, with_message_id
from msgbus.backendkit.options import (
    host_ports,
    parse_options,
    require_positive,
    url_credentials,
)
from msgbus.backendkit.outage import Backoff, Outage
from msgbus.backendkit.window import MAX_LOSSES, Outgoing, PublishWindow

__all__ = [
    "KEY_HEADER",
    "MAX_LOSSES",
    "Backoff",
    "DeliveryBuffer",
    "Outage",
    "Outgoing",
    "PendingFuture",
    "PublishWindow",
    "ResolvedFuture",
    "as_text",
    "check_publish",
    "failed_future",
    "host_ports",
    "parse_options",
    "require_positive",
    "settle_future",
    "url_credentials",
    "with_message_id",
]
