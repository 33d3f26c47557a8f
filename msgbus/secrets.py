"""Secrets known to this process, and their masking in text, exceptions and log records.

Contract:

- :func:`is_secret_option` says whether an option name holds a secret (passwords, SASL
  secrets, key-file passphrases, tokens); URL rendering and option errors mask those values.
- :func:`remember` records a secret (a URL password, a secret option) when a bus is built;
  :func:`mask` replaces every remembered secret in a text with ``***``.
- :func:`install_log_filter` (called by :func:`msgbus.connect`, idempotent) makes every log
  record of msgbus and of the brokers' drivers (pika, kafka-python, stomp.py, kombu, py-amqp,
  confluent-kafka) masked before any handler sees it: its message, its arguments and its
  formatted traceback. Records of other loggers are left alone; :class:`SecretFilter` can be
  added to any handler to mask those too.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable

__all__ = [
    "DRIVER_LOGGERS",
    "MASK",
    "MIN_MASKED_LENGTH",
    "SecretFilter",
    "install_log_filter",
    "is_secret_option",
    "mask",
    "mask_record",
    "remember",
]

MASK = "***"
"""What a secret is replaced with."""

DRIVER_LOGGERS: tuple[str, ...] = (
    "msgbus",
    "pika",
    "kafka",
    "stomp",
    "stomp.py",
    "kombu",
    "amqp",
    "confluent_kafka",
    "redis",
)
"""Logger names (and their children) whose records are masked once the filter is installed."""

_SECRET_WORDS = re.compile(r"pass(word|wd|code|phrase)?$|secret|token|credential|api_?key", re.I)
_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None
_installed = False


def is_secret_option(name: str) -> bool:
    """True when an option called ``name`` carries a secret (``password``,
    ``ssl_key_password``, ``sasl_plain_password``, ``sasl_oauth_token``, ``passcode``...)."""
    return bool(_SECRET_WORDS.search(name))


MIN_MASKED_LENGTH = 4
"""Secrets shorter than this are not masked in free text: hiding every ``p`` of every message
for a password ``p`` would garble them all. URL rendering and option errors, which know
where a secret is, hide secrets of any length."""


def remember(*secrets: str | None) -> None:
    """Add ``secrets`` to the set :func:`mask` hides (None, and secrets shorter than
    :data:`MIN_MASKED_LENGTH`, are ignored).

    Each secret is also remembered percent-encoded (drivers log URLs) and as it shows inside
    the ``repr`` of a str or of its UTF-8 bytes (drivers log frames and parameter dicts).
    """
    from urllib.parse import quote, quote_plus

    global _secrets, _pattern
    new = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_MASKED_LENGTH:
            new.update(
                {
                    secret,
                    quote(secret, safe=""),
                    quote_plus(secret, safe=""),
                    repr(secret)[1:-1],  # as inside a logged str or dict repr
                    repr(secret.encode("utf-8", "surrogatepass"))[2:-1],  # inside a bytes repr
                }
            )
    with _lock:
        if new <= _secrets:
            return
        _secrets = _secrets | new
        ordered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def mask(text: str) -> str:
    """Return ``text`` with every remembered secret replaced by ``***``.

    Every occurrence of every secret is hidden, also where two secrets overlap (the union of
    their spans becomes one ``***``), so no part of one survives next to another.
    """
    pattern = _pattern
    if pattern is None or not text or pattern.search(text) is None:
        return text
    spans: list[tuple[int, int]] = []
    for secret in _secrets:
        start = text.find(secret)
        while start >= 0:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    spans.sort()
    out, last_end, current = [], 0, spans[0]
    for begin, end in spans[1:]:
        if begin <= current[1]:
            current = (current[0], max(current[1], end))
        else:
            out += [text[last_end : current[0]], MASK]
            last_end, current = current[1], (begin, end)
    out += [text[last_end : current[0]], MASK, text[current[1] :]]
    return "".join(out)


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask ``record`` in place: message and arguments merged and masked, traceback masked."""
    if _pattern is None:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: keep what can be shown, masked
        message = f"{record.msg} {record.args}"
    record.msg = mask(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = mask(record.exc_text)
    if record.stack_info:
        record.stack_info = mask(record.stack_info)
    return record


class SecretFilter(logging.Filter):
    """A logging filter that masks remembered secrets in every record it sees (never drops)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask ``record`` (see :func:`mask_record`) and let it through."""
        mask_record(record)
        return True


def _is_driver(name: str, prefixes: Iterable[str] = DRIVER_LOGGERS) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def install_log_filter() -> None:
    """Mask every record of msgbus's and the drivers' loggers at creation. Idempotent.

    Done with a log-record factory wrapped around the current one, so it covers child
    loggers created later (``pika.adapters.blocking_connection``...) and every handler.
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _pattern is not None and _is_driver(record.name):
            mask_record(record)
        return record

    logging.setLogRecordFactory(factory)
