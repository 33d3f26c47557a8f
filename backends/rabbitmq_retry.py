"""Durable delayed retries on RabbitMQ without a plugin: one delay queue per retry delay.

``retry_mode="durable"`` hands a failed message back to the broker. For group ``g`` of topic
``t`` and a retry delay of ``D`` ms the message goes to the durable queue ``t.g.retry.D``,
declared with ``x-message-ttl = D``, ``x-dead-letter-exchange = ""`` (the default exchange)
and ``x-dead-letter-routing-key = t.g``, and bound to the backend's exchange with its own name
as routing key. Nobody consumes it: when a message's TTL runs out the broker dead-letters it
straight into the group's queue ``t.g`` (other groups are not involved). Every message of one
queue has the same TTL, so they expire in order at the head; RabbitMQ expires per-message
TTLs only at the head, which is why the delay is fixed per queue, not per message. The
consumer computes delays without jitter, so each retry level maps to one queue.

With ``queue_type=quorum`` the delay queue is a quorum queue with the ``at-least-once``
dead-letter strategy (RabbitMQ 3.10+): the move into the group's queue is confirmed inside
the broker. A classic delay queue moves expired messages at most once (the broker drops one
whose target queue is unavailable at that moment) — acceptable for classic groups, which live
on one node anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from msgbus.backend import settle_future
from msgbus.errors import BrokerUnavailable, ConfigurationError

if TYPE_CHECKING:
    from msgbus.backends.rabbitmq import RabbitMQBackend

__all__ = ["RetryQueues", "retry_queue"]


def retry_queue(group_queue: str, delay_ms: int) -> str:
    """The delay queue of ``group_queue`` for ``delay_ms``: ``<t>.<g>.retry.<ms>``."""
    return f"{group_queue}.retry.{delay_ms}"


class RetryQueues:
    """Declares delay queues (once per backend and name, on the I/O thread) and publishes
    retries into them. Thread-safe."""

    def __init__(self, backend: RabbitMQBackend) -> None:
        self._backend = backend
        self._declared: set[str] = set()
        self._lock = threading.Lock()

    def publish(
        self,
        group_queue: str,
        body: bytes,
        *,
        key: str | None,
        headers: Mapping[str, str],
        delay: float,
    ) -> Future[None]:
        """Publish to the delay queue of ``group_queue`` for ``delay`` s (declared first);
        the future resolves on the broker's confirm (mandatory: routed or failed)."""
        delay_ms = max(1, round(delay * 1000))
        name = retry_queue(group_queue, delay_ms)
        if len(name.encode()) > 255:
            raise ConfigurationError(f"retry queue name {name[:40]!r}... is longer than 255 bytes")
        with self._lock:
            known = name in self._declared
        if not known:
            self._declare(name, delay_ms, group_queue).result(self._backend.options.connect_timeout)
            with self._lock:
                self._declared.add(name)
        return self._backend.publish_routed(name, body, key=key, headers=headers)

    def _declare(self, name: str, ttl_ms: int, target: str) -> Future[None]:
        backend = self._backend
        exchange = backend.options.exchange
        done: Future[None] = Future()
        arguments: dict[str, Any] = {
            "x-message-ttl": ttl_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": target,
        }
        if backend.options.queue_type == "quorum":
            # a classic queue dead-letters at most once (no confirm, removed at once) and lives
            # on one node: for quorum groups the delay queue is a quorum queue whose expired
            # messages move at least once (RabbitMQ 3.10+, needs reject-publish overflow)
            arguments.update(
                {
                    "x-queue-type": "quorum",
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                }
            )

        def run() -> None:
            conn = backend.connection()
            if conn is None or not backend.connection_open():
                settle_future(done, BrokerUnavailable("RabbitMQ is not connected"))
                return

            def on_open(channel: Any) -> None:
                channel.add_on_close_callback(  # after success: a no-op
                    lambda _ch, reason: settle_future(
                        done, ConfigurationError(f"could not declare {name!r}: {reason}")
                    )
                )
                channel.queue_declare(
                    name,
                    durable=True,
                    arguments=arguments,
                    callback=lambda _f: channel.queue_bind(
                        name, exchange, routing_key=name, callback=lambda _f: bound(channel)
                    ),
                )

            def bound(channel: Any) -> None:
                settle_future(done, None)
                channel.close()

            try:
                conn.channel(on_open_callback=on_open)
            except Exception as exc:  # the connection is closing
                settle_future(done, BrokerUnavailable(f"RabbitMQ: {exc}"))

        if not backend.call_soon(run):
            settle_future(done, BrokerUnavailable("the RabbitMQ backend is closed"))
        return done
