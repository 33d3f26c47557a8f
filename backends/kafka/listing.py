"""The topics a Kafka broker knows, for tools such as ``msgbus dlq list`` (both drivers).

Kept apart from the drivers: one Metadata request through the backend's admin client
(kafka-python's ``KafkaAdminClient.list_topics`` answers names, librdkafka's
``AdminClient.list_topics`` a ``ClusterMetadata``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msgbus.errors import BusClosed, MsgBusError

if TYPE_CHECKING:
    from .common import KafkaBackend

__all__ = ["list_topics"]


def list_topics(backend: KafkaBackend) -> list[str]:
    """Every topic the broker lists (sorted; Kafka's internal ``__…`` topics left out).

    Thread-safe; one broker round trip. Raises :class:`~msgbus.BrokerUnavailable` when the
    broker cannot be asked and :class:`~msgbus.BusClosed` after ``close``."""
    if backend._closed:
        raise BusClosed("the Kafka backend is closed")
    try:
        with backend._topics_lock:
            admin: Any = backend._admin_client()
            if backend.driver_name == "confluent":
                timeout = backend.options.request_timeout_ms / 1000
                names = list(admin.list_topics(timeout=timeout).topics)
            else:
                names = list(admin.list_topics())
    except MsgBusError:
        raise
    except Exception as exc:
        raise backend._translate(exc, "listing Kafka topics") from exc
    return sorted(name for name in names if not name.startswith("__"))
