"""The msgbus exception tree.

Every error msgbus raises derives from :class:`MsgBusError`. Configuration mistakes
(malformed URL, unknown scheme or option, reserved header) are also :class:`ValueError`, so
code that already handles ``ValueError`` keeps working. No message in this module ever
contains a password: callers render URLs with ``BusURL.render(hide_password=True)``, and
every :class:`MsgBusError` masks the secrets known to the process (``msgbus.secrets``) in its
arguments, including driver texts wrapped into it.
"""

from __future__ import annotations

from msgbus import secrets

__all__ = [
    "AuthenticationError",
    "BackendNotInstalled",
    "BrokerUnavailable",
    "BusClosed",
    "ConfigurationError",
    "DecodeError",
    "HandlerTimeout",
    "InvalidURL",
    "MessageTooLarge",
    "MsgBusError",
    "NotSupported",
    "PublishError",
    "Reject",
    "ReservedHeader",
    "SerializationError",
    "TopicNotFound",
    "UnknownBackend",
    "UnknownOption",
]


class MsgBusError(Exception):
    """Root of every exception raised by msgbus; its text never contains a known secret."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(secrets.mask(a) if isinstance(a, str) else a for a in args))


class ConfigurationError(MsgBusError, ValueError):
    """The bus was asked for something that cannot be configured; fix the call, not the broker."""


class NotSupported(ConfigurationError):
    """The backend cannot do what was asked natively (e.g. ``publish(..., delay=...)``)."""


class InvalidURL(ConfigurationError):
    """A bus URL could not be parsed (the message says which part and why)."""


class UnknownBackend(ConfigurationError):
    """No backend is registered for the URL's scheme; the message lists the known schemes."""


class UnknownOption(ConfigurationError):
    """A URL query key or keyword option is not understood; the message lists the valid ones."""


class ReservedHeader(ConfigurationError):
    """A user header tried to set a name msgbus reserves for its own metadata."""


class BackendNotInstalled(MsgBusError, ImportError):
    """The backend exists but its driver library is missing; the message names the pip extra."""


class BrokerUnavailable(MsgBusError, ConnectionError):
    """The broker could not be reached, or the connection was lost and not recovered in time."""


class AuthenticationError(BrokerUnavailable):
    """The broker refused the credentials. Retrying with the same credentials will not help."""


class PublishError(MsgBusError):
    """The broker refused or lost a published message (nack, unroutable, or failed write)."""


class MessageTooLarge(PublishError, ValueError):
    """The message exceeds the backend's maximum size; nothing was sent."""


class TopicNotFound(MsgBusError):
    """The topic does not exist and the backend is configured not to create topics."""


class SerializationError(MsgBusError, ValueError):
    """A payload could not be encoded with the chosen codec; nothing was sent."""


class DecodeError(MsgBusError):
    """A received body could not be decoded; the bus dead-letters such messages."""


class BusClosed(MsgBusError):
    """The bus (or backend) is closed and cannot accept the operation."""


class HandlerTimeout(MsgBusError, TimeoutError):
    """A handler ran longer than its subscription's ``handler_timeout`` (``msgbus.aio``).

    The attempt counts as failed: it is retried, then dead-lettered like any other failure.
    """


class Reject(MsgBusError):
    """Raise from a handler to dead-letter the message at once, without further retries.

    Use it for messages that can never succeed (unknown schema version, invalid content).
    """
