"""The checks of the publish contract every backend makes before it queues a message."""

from __future__ import annotations

from msgbus.errors import BusClosed, ConfigurationError, MessageTooLarge

__all__ = ["check_publish"]


def check_publish(
    backend: str, *, closed: bool, body: bytes, max_message_bytes: int, key: object = None
) -> None:
    """Raise at once what ``publish`` must raise before anything is sent.

    :class:`BusClosed` when the backend is ``closed``; :class:`MessageTooLarge` when ``body``
    is over ``max_message_bytes``; :class:`ConfigurationError` when ``key`` is neither a str
    nor None. ``backend`` names the backend in the messages (e.g. ``"RabbitMQ"``).
    """
    if closed:
        raise BusClosed(f"the {backend} backend is closed")
    if len(body) > max_message_bytes:
        raise MessageTooLarge(
            f"message of {len(body)} bytes exceeds max_message_bytes={max_message_bytes}"
        )
    if key is not None and not isinstance(key, str):
        raise ConfigurationError(f"key must be a str or None, not {type(key).__name__}")
