"""The account service's storage: accounts and the transactional outbox, in one SQLite file.

:meth:`AccountStore.create_account` writes the account row and its ``account.created`` event
row in a single transaction, so either both exist or neither does. The relay
(:mod:`msgbus.contrib.bank.outbox`) reads pending event rows in ``seq`` order and marks them
sent once the broker has confirmed them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from msgbus.contrib.bank.db import Database
from msgbus.contrib.bank.events import ACCOUNT_CREATED, AccountCreated

__all__ = ["ABANDONED_CLAIM", "IDEMPOTENCY_TTL", "Account", "AccountStore", "Claim", "OutboxEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner       TEXT NOT NULL,
    email       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    topic           TEXT NOT NULL,
    msg_key         TEXT,
    payload         TEXT NOT NULL,
    correlation_id  TEXT,
    created_at      REAL NOT NULL,
    sent_at         REAL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    trace_context   TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key             TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    account_id      INTEGER,
    correlation_id  TEXT,
    claimed_at      REAL NOT NULL
);
"""

IDEMPOTENCY_TTL = 24 * 3600.0
"""Seconds an ``Idempotency-Key`` is kept (from its first use)."""
ABANDONED_CLAIM = 60.0
"""Seconds after which a claimed key whose request never finished (its process died) may be
claimed again."""


@dataclass(frozen=True)
class Claim:
    """What :meth:`AccountStore.claim_key` found for an idempotency key.

    ``state`` is ``"new"`` (claimed now: go on), ``"done"`` (``account_id`` and
    ``correlation_id`` of the first request), ``"in_progress"`` (another request holds it) or
    ``"mismatch"`` (the key was used with another body).
    """

    state: str
    account_id: int | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class Account:
    """A stored account (immutable)."""

    id: int
    owner: str
    email: str
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the HTTP API returns it."""
        return {
            "id": self.id,
            "owner": self.owner,
            "email": self.email,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class OutboxEntry:
    """One event row waiting in (or sent from) the outbox."""

    seq: int
    event_id: str
    topic: str
    key: str | None
    payload: dict[str, Any]
    correlation_id: str | None
    attempts: int
    trace_context: str | None = None
    """The W3C trace context (JSON) of the request that wrote the row, or None."""


class AccountStore:
    """Accounts and their outbox in the SQLite file ``path`` (created if missing).

    Thread-safe; several processes may open the same file (SQLite serializes writers).
    Methods raise ``sqlite3.Error`` on storage failure.
    """

    def __init__(self, path: str | Path, *, topic: str = ACCOUNT_CREATED) -> None:
        self.topic = topic
        self.db = Database(path, _SCHEMA)
        conn = self.db.connection()
        columns = {row["name"] for row in conn.execute("PRAGMA table_info(outbox)")}
        if "trace_context" not in columns:  # a file written before tracing existed
            conn.execute("ALTER TABLE outbox ADD COLUMN trace_context TEXT")

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self.db.path

    def claim_key(self, key: str, fingerprint: str, *, now: float | None = None) -> Claim:
        """Claim idempotency ``key`` for a request whose body has ``fingerprint``.

        Keys older than :data:`IDEMPOTENCY_TTL` are forgotten first; a claim whose request
        never finished within :data:`ABANDONED_CLAIM` seconds is taken over. See
        :class:`Claim` for the outcomes; only ``"new"`` writes anything.
        """
        now = time.time() if now is None else now
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE claimed_at < ?", (now - IDEMPOTENCY_TTL,)
            )
            row = conn.execute(
                "SELECT fingerprint, account_id, correlation_id, claimed_at"
                " FROM idempotency_keys WHERE key = ?",
                (key,),
            ).fetchone()
            if row is not None:
                if row["fingerprint"] != fingerprint:
                    return Claim("mismatch")
                if row["account_id"] is not None:
                    return Claim("done", row["account_id"], row["correlation_id"])
                if row["claimed_at"] > now - ABANDONED_CLAIM:
                    return Claim("in_progress")
            conn.execute(
                "INSERT OR REPLACE INTO idempotency_keys (key, fingerprint, claimed_at)"
                " VALUES (?, ?, ?)",
                (key, fingerprint, now),
            )
        return Claim("new")

    def release_key(self, key: str) -> None:
        """Forget an unfinished claim (its request failed): the key may be used again."""
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE key = ? AND account_id IS NULL", (key,)
            )

    def create_account(
        self,
        owner: str,
        email: str,
        *,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
        trace_context: str | None = None,
    ) -> tuple[Account, AccountCreated]:
        """Insert an account and its ``account.created`` outbox row in ONE transaction.

        Returns the account and the event. The event is not published here: the relay
        does that after the commit (keyed by the account id, carrying ``correlation_id``,
        inside ``trace_context``: the W3C headers, as JSON, of the request that made it).
        With ``idempotency_key`` (claimed with :meth:`claim_key`), the same transaction
        records the account under the key.
        """
        now = datetime.now(UTC)
        created_at = now.isoformat()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO accounts (owner, email, created_at) VALUES (?, ?, ?)",
                (owner, email, created_at),
            )
            account_id = cursor.lastrowid
            assert account_id is not None
            event = AccountCreated.new(account_id, owner, email, now)
            conn.execute(
                "INSERT INTO outbox (event_id, topic, msg_key, payload, correlation_id,"
                " created_at, trace_context) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    self.topic,
                    str(account_id),
                    json.dumps(event.to_dict()),
                    correlation_id,
                    time.time(),
                    trace_context,
                ),
            )
            if idempotency_key is not None:
                conn.execute(
                    "UPDATE idempotency_keys SET account_id = ?, correlation_id = ? WHERE key = ?",
                    (account_id, correlation_id, idempotency_key),
                )
        return Account(account_id, owner, email, created_at), event

    def get_account(self, account_id: int) -> Account | None:
        """The account with this id, or None."""
        row = (
            self.db.connection()
            .execute(
                "SELECT id, owner, email, created_at FROM accounts WHERE id = ?", (account_id,)
            )
            .fetchone()
        )
        return Account(row["id"], row["owner"], row["email"], row["created_at"]) if row else None

    def pending(self, limit: int = 100) -> list[OutboxEntry]:
        """Up to ``limit`` unsent outbox rows, oldest first (by ``seq``)."""
        rows = (
            self.db.connection()
            .execute(
                "SELECT seq, event_id, topic, msg_key, payload, correlation_id, attempts,"
                " trace_context FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [
            OutboxEntry(
                seq=row["seq"],
                event_id=row["event_id"],
                topic=row["topic"],
                key=row["msg_key"],
                payload=json.loads(row["payload"]),
                correlation_id=row["correlation_id"],
                attempts=row["attempts"],
                trace_context=row["trace_context"],
            )
            for row in rows
        ]

    def mark_sent(self, seqs: list[int]) -> None:
        """Mark these outbox rows as sent (the broker confirmed them)."""
        if not seqs:
            return
        now = time.time()
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET sent_at = ?, last_error = NULL WHERE seq = ?",
                [(now, seq) for seq in seqs],
            )

    def record_failure(self, seq: int, error: str) -> None:
        """Count a failed publish attempt of row ``seq`` and remember the error text."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (error[:1000], seq),
            )

    def counts(self) -> dict[str, int]:
        """``{"accounts": n, "pending": n, "sent": n}`` — for health checks and the demo."""
        conn = self.db.connection()
        accounts = conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0]
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
        sent = conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL").fetchone()[0]
        return {"accounts": accounts, "pending": pending, "sent": sent}

    def close(self) -> None:
        """Close the database connections."""
        self.db.close()
