"""The two client sides a benchmark process drives, behind one small interface.

A :class:`Sender` publishes payload dicts with a completion callback; a :class:`Receiver`
joins a consumer group on some topics and calls a handler with each decoded payload.
:func:`open_sender` / :func:`open_receiver` build the msgbus implementation (``msgbus.connect``
and the public Bus API only) or, for ``client="raw"``, the broker's plain Python client from
:mod:`msgbus.bench.raw` (imported lazily).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgbus
from msgbus.bench.interface import Done, Handler, Receiver, Sender

__all__ = ["Done", "Handler", "Receiver", "Sender", "open_receiver", "open_sender"]


class _BusSender:
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self._bus = msgbus.connect(url, **options)

    def send(self, topic: str, key: str | None, payload: dict[str, Any], done: Done) -> None:
        future = self._bus.publish(topic, payload, key=key)
        future.add_done_callback(lambda f: done(f.exception()))

    def flush(self, timeout: float) -> None:
        self._bus.flush(timeout)

    def close(self) -> None:
        self._bus.close(timeout=10)


class _BusReceiver:
    def __init__(
        self,
        url: str,
        options: dict[str, Any],
        topics: Sequence[str],
        group: str,
        handler: Handler,
        *,
        concurrency: int,
        prefetch: int,
    ) -> None:
        self._bus = msgbus.connect(url, **options)

        def handle(message: msgbus.Message) -> None:
            handler(message.payload)

        for topic in topics:
            self._bus.subscribe(
                topic,
                handle,
                group=group,
                concurrency=concurrency,
                prefetch=prefetch,
                max_attempts=1,
                dead_letter=False,
            )

    def start(self) -> None:
        self._bus.start()

    def close(self) -> None:
        self._bus.close(timeout=10)


def open_sender(
    client: str, kind: str, url: str, options: dict[str, Any], driver: str = ""
) -> Sender:
    """A connected :class:`Sender`: ``client`` is ``msgbus`` or ``raw``; ``kind`` the broker
    kind (kafka, rabbitmq, activemq, memory); ``options`` the target's connect options;
    ``driver`` the target's client library (which raw Kafka client; msgbus reads its driver
    from the URL)."""
    if client == "msgbus":
        return _BusSender(url, options)
    from msgbus.bench import raw

    return raw.open_sender(kind, url, options, driver)


def open_receiver(
    client: str,
    kind: str,
    url: str,
    options: dict[str, Any],
    topics: Sequence[str],
    group: str,
    handler: Handler,
    *,
    concurrency: int = 1,
    prefetch: int = 256,
    driver: str = "",
) -> Receiver:
    """A not yet started :class:`Receiver` of ``group`` on ``topics`` calling ``handler``."""
    if client == "msgbus":
        return _BusReceiver(
            url, options, topics, group, handler, concurrency=concurrency, prefetch=prefetch
        )
    from msgbus.bench import raw

    return raw.open_receiver(
        kind, url, options, topics, group, handler, prefetch=prefetch, driver=driver
    )
