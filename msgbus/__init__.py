"""msgbus: one small publish/subscribe API over Kafka, RabbitMQ, ActiveMQ, kombu and memory.

``msgbus.connect(url)`` returns a :class:`Bus`; the URL's scheme picks the broker. See the
README for the delivery contract and the error tree.
"""

from msgbus.backend import Backend, Delivery, Features, Subscription
from msgbus.bus import DEFAULT_URL, Bus, connect
from msgbus.errors import (
    AuthenticationError,
    BackendNotInstalled,
    BrokerUnavailable,
    BusClosed,
    ConfigurationError,
    DecodeError,
    HandlerTimeout,
    InvalidURL,
    MessageTooLarge,
    MsgBusError,
    NotSupported,
    PublishError,
    Reject,
    ReservedHeader,
    SerializationError,
    TopicNotFound,
    UnknownBackend,
    UnknownOption,
)
from msgbus.health import BusHealth, SubscriptionHealth
from msgbus.message import Message
from msgbus.registry import available_schemes, register_backend
from msgbus.retry import RetryPolicy
from msgbus.serialization import Codec, register_codec
from msgbus.url import BusURL

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "AuthenticationError",
    "Backend",
    "BackendNotInstalled",
    "BrokerUnavailable",
    "Bus",
    "BusClosed",
    "BusHealth",
    "BusURL",
    "Codec",
    "ConfigurationError",
    "DecodeError",
    "Delivery",
    "Features",
    "HandlerTimeout",
    "InvalidURL",
    "Message",
    "MessageTooLarge",
    "MsgBusError",
    "NotSupported",
    "PublishError",
    "Reject",
    "ReservedHeader",
    "RetryPolicy",
    "SerializationError",
    "Subscription",
    "SubscriptionHealth",
    "TopicNotFound",
    "UnknownBackend",
    "UnknownOption",
    "__version__",
    "available_schemes",
    "connect",
    "register_backend",
    "register_codec",
]
