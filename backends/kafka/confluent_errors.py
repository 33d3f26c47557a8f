"""The confluent-kafka driver's errors: librdkafka's error codes mapped to the msgbus error
tree (:func:`translate_error`), and the ``error_cb`` that logs them (:class:`ErrorLog`)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException

from msgbus.errors import (
    AuthenticationError,
    BrokerUnavailable,
    BusClosed,
    MessageTooLarge,
    MsgBusError,
    PublishError,
    TopicNotFound,
)

__all__ = ["AUTH", "STALE", "ErrorLog", "translate_error"]

log = logging.getLogger("msgbus.kafka")

_SIZE = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
}
AUTH = {
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.UNSUPPORTED_SASL_MECHANISM,
    KafkaError.ILLEGAL_SASL_STATE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}
_UNKNOWN_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}
_UNAVAILABLE = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TIMED_OUT_QUEUE,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._SSL,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
}


_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
"""Reports of records purged by ``close``: still unconfirmed when the backend closed."""

STALE = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}
"""Errors of a request sent on stale metadata: refresh it and retry."""


def translate_error(exc: BaseException | KafkaError, where: str) -> MsgBusError:
    """Map a confluent-kafka exception (or a ``KafkaError``) to the msgbus error tree.

    Size errors become :class:`MessageTooLarge`, authentication and authorization failures
    :class:`AuthenticationError`, connection trouble and timeouts :class:`BrokerUnavailable`,
    unknown topics :class:`TopicNotFound`, anything else :class:`PublishError`. msgbus errors
    pass through unchanged. librdkafka's texts never contain the SASL password.
    """
    if isinstance(exc, MsgBusError):
        return exc
    error = exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error = exc.args[0]
    if isinstance(error, KafkaError):
        code = error.code()
        text = f"{where}: {error.name()}: {error.str()}"
        if code in _PURGED:
            return BusClosed(f"{where}: the backend closed before the broker confirmed it")
        if code in _SIZE:
            return MessageTooLarge(text)
        if code in AUTH:
            return AuthenticationError(text)
        if code in _UNKNOWN_TOPIC:
            return TopicNotFound(text)
        if code in _UNAVAILABLE:
            return BrokerUnavailable(text)
        return PublishError(text)
    text = f"{where}: {type(exc).__name__}: {exc}"
    if isinstance(exc, BufferError | ConnectionError | OSError):
        return BrokerUnavailable(text)
    return PublishError(text)


class ErrorLog:
    """librdkafka's ``error_cb``: logs, and remembers the last authentication failure."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.auth_failure: KafkaError | None = None
        self.last: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        self.last = error
        if error.code() in AUTH:
            self.auth_failure = error
        level = logging.ERROR if error.fatal() else logging.INFO
        log.log(level, "%s: librdkafka: %s: %s", self.what, error.name(), error.str())
