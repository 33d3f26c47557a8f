"""What pika hands the RabbitMQ backend and what it takes: AMQP properties to and from
msgbus headers (the mapping itself is :mod:`msgbus.backendkit.amqp`), and pika's errors read
into a reason a person can act on (never holding the password). Pure functions; thread-safe.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import pika
import pika.exceptions
from pika.spec import BasicProperties

from msgbus.backendkit.amqp import from_amqp, to_amqp

__all__ = [
    "delivery_headers",
    "describe_error",
    "is_auth_error",
    "is_tls_verify_error",
    "root_error",
    "to_properties",
]


def to_properties(
    headers: Mapping[str, str], key: str | None, delivery_mode: int
) -> BasicProperties:
    """msgbus headers and key → pika properties (:func:`msgbus.backendkit.amqp.to_amqp`)."""
    content_type, message_id, correlation_id, timestamp, table = to_amqp(headers, key)
    return BasicProperties(
        content_type=content_type,
        message_id=message_id,
        correlation_id=correlation_id,
        timestamp=timestamp,
        delivery_mode=delivery_mode,
        headers=table or None,
    )


def delivery_headers(props: BasicProperties) -> tuple[dict[str, str], str | None]:
    """pika properties → msgbus headers and the key (:func:`msgbus.backendkit.amqp.from_amqp`)."""
    return from_amqp(
        props.headers, props.content_type, props.message_id, props.correlation_id, props.timestamp
    )


def is_auth_error(exc: BaseException) -> bool:
    """True when ``exc`` says the broker refused the login (bad user or password)."""
    if isinstance(
        exc,
        pika.exceptions.AuthenticationError | pika.exceptions.ProbableAuthenticationError,
    ):
        return True
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
        return exc.reply_code == 403
    return False


def root_error(exc: BaseException) -> BaseException:
    """The innermost error of pika's connection-workflow wrappers."""
    for _ in range(5):
        inner = getattr(exc, "exceptions", None)
        if inner:
            exc = inner[-1]
            continue
        inner = getattr(exc, "exception", None)
        if isinstance(inner, BaseException):
            exc = inner
            continue
        if exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
            continue
        break
    return exc


def is_tls_verify_error(exc: BaseException) -> bool:
    """True when ``exc`` is (or wraps) a failed check of the server's TLS certificate."""
    return isinstance(root_error(exc), ssl.SSLCertVerificationError)


def describe_error(exc: BaseException | None) -> str:
    """``exc`` (or what it wraps) in a few words for logs and errors: the broker's reply
    code and text for a closed connection or channel, else the error's type and text."""
    if exc is None:
        return "unknown reason"
    exc = root_error(exc)
    if isinstance(exc, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosed):
        return f"{exc.reply_code} {exc.reply_text}".strip()
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
