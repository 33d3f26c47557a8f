"""Dead-letter operations: :func:`list_dead_letters`, :func:`show`, :func:`redrive`,
:func:`purge` (see :mod:`msgbus.dlq.api`), and the ``msgbus dlq`` command
(:mod:`msgbus.dlq.cli`)."""

from msgbus.dlq.api import (
    DEFAULT_MAX_REDRIVES,
    REDRIVEN,
    DeadLetter,
    DeadLetterSummary,
    RedriveReport,
    dead_letter_topics,
    list_dead_letters,
    purge,
    redrive,
    show,
)

__all__ = [
    "DEFAULT_MAX_REDRIVES",
    "REDRIVEN",
    "DeadLetter",
    "DeadLetterSummary",
    "RedriveReport",
    "dead_letter_topics",
    "list_dead_letters",
    "purge",
    "redrive",
    "show",
]
