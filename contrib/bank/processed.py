"""The email service's idempotency record: which events got their mail, in SQLite.

One row per ``event_id`` with a state:

``sending``
    claimed by an instance that is sending the mail right now (``owner``, ``claimed_at``);
``sent``
    the SMTP server accepted the mail; a redelivered event is skipped;
``failed``
    the last send failed and the claim was released; the next attempt may claim it.

:meth:`ProcessedEvents.claim` reads and writes the row in one ``BEGIN IMMEDIATE``
transaction, so two instances (threads or processes sharing the file) can never both decide
to send the same event while a claim is live. A ``sending`` row older than the lease is
taken over: its owner crashed between claiming and recording the outcome. That is the one
window where a mail can go out twice (the owner may have sent it just before dying); see
docs/bank.md.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path

from msgbus.contrib.bank.db import Database

__all__ = ["Claim", "ProcessedEvents"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    event_id    TEXT PRIMARY KEY,
    state       TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed')),
    owner       TEXT NOT NULL,
    claimed_at  REAL NOT NULL,
    sent_at     REAL,
    attempts    INTEGER NOT NULL DEFAULT 1,
    recipient   TEXT,
    last_error  TEXT
);
"""


class Claim(enum.Enum):
    """The outcome of :meth:`ProcessedEvents.claim`."""

    SEND = "send"
    """The caller owns the event now and must send, then ``mark_sent`` or ``release``."""
    ALREADY_SENT = "already-sent"
    """The mail went out before: skip it (acknowledge the message)."""
    BUSY = "busy"
    """Another live claim holds it: try again later (its owner may still succeed)."""


class ProcessedEvents:
    """The ``processed`` table in the SQLite file ``path``. Thread- and process-safe.

    Methods raise ``sqlite3.Error`` on storage failure.
    """

    def __init__(self, path: str | Path) -> None:
        self.db = Database(path, _SCHEMA)

    def claim(self, event_id: str, owner: str, *, lease: float, recipient: str = "") -> Claim:
        """Atomically decide whether ``owner`` sends the mail for ``event_id``.

        ``lease`` (seconds) is how long another owner's ``sending`` claim is trusted; it must
        exceed the longest possible send (the SMTP timeout) so a slow live sender is never
        overtaken.
        """
        now = time.time()
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT state, claimed_at FROM processed WHERE event_id = ?", (event_id,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO processed (event_id, state, owner, claimed_at, recipient)"
                    " VALUES (?, 'sending', ?, ?, ?)",
                    (event_id, owner, now, recipient),
                )
                return Claim.SEND
            if row["state"] == "sent":
                return Claim.ALREADY_SENT
            if row["state"] == "sending" and row["claimed_at"] + lease > now:
                return Claim.BUSY
            conn.execute(
                "UPDATE processed SET state = 'sending', owner = ?, claimed_at = ?,"
                " attempts = attempts + 1 WHERE event_id = ?",
                (owner, now, event_id),
            )
            return Claim.SEND

    def mark_sent(self, event_id: str) -> None:
        """Record that the SMTP server accepted the mail for ``event_id``."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE processed SET state = 'sent', sent_at = ?, last_error = NULL"
                " WHERE event_id = ?",
                (time.time(), event_id),
            )

    def release(self, event_id: str, owner: str, error: str) -> None:
        """Give up ``owner``'s claim after a failed send, so that a retry may claim it."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE processed SET state = 'failed', last_error = ?"
                " WHERE event_id = ? AND owner = ? AND state = 'sending'",
                (error[:1000], event_id, owner),
            )

    def state(self, event_id: str) -> str | None:
        """The row's state (``sending``/``sent``/``failed``), or None if never claimed."""
        row = (
            self.db.connection()
            .execute("SELECT state FROM processed WHERE event_id = ?", (event_id,))
            .fetchone()
        )
        return row["state"] if row else None

    def counts(self) -> dict[str, int]:
        """Rows per state, e.g. ``{"sent": 10, "failed": 1}``."""
        rows = self.db.connection().execute(
            "SELECT state, COUNT(*) AS n FROM processed GROUP BY state"
        )
        return {row["state"]: row["n"] for row in rows}

    def close(self) -> None:
        """Close the database connections."""
        self.db.close()
