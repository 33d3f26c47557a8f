"""The email service: turns each ``account.created`` event into exactly one confirmation mail.

It subscribes in the consumer group ``email-service`` on a :class:`msgbus.aio.AsyncBus`, so
several instances (tasks of one bus, or processes) share the events. Its handler is an
``async def``: it runs as a task on the bus's loop, sends with :mod:`aiosmtplib`, and does its
SQLite bookkeeping on a worker thread (``asyncio.to_thread``). For each message:

1. parse the event — an unknown ``version`` or a malformed body raises :class:`msgbus.Reject`
   and the bus dead-letters it at once (``<topic>.dlq``);
2. render the mail (before claiming, so a template error cannot strand a claim);
3. claim the event id in SQLite (:class:`~msgbus.contrib.bank.processed.ProcessedEvents`):
   already sent → acknowledge and skip; claimed by a live sender elsewhere → raise
   :class:`ClaimBusy` (the bus retries later, by when that sender has finished);
4. send over SMTP; on failure release the claim and raise, so the bus retries with backoff
   and dead-letters after ``max_attempts``; on success record ``sent``.

Steps 3 and 4 are shielded from cancellation as a whole: a handler cancelled at shutdown
(``close``) leaves its message unacknowledged for redelivery, but a claim it took is always
followed by the send and its ``sent`` record (or a release), so the idempotency record says
what the SMTP server got and the redelivery is skipped instead of mailed twice (or stuck
behind a claim nobody will finish).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

import msgbus
from msgbus.aio import AsyncBus
from msgbus.contrib.bank.events import ACCOUNT_CREATED, AccountCreated, EventError
from msgbus.contrib.bank.mailer import DEFAULT_SENDER, render_confirmation
from msgbus.contrib.bank.processed import Claim, ProcessedEvents

__all__ = ["DEFAULT_EMAILS_DB", "EMAIL_GROUP", "ClaimBusy", "EmailService", "Mailer"]

log = logging.getLogger("msgbus.contrib.bank.email")

EMAIL_GROUP = "email-service"
"""The consumer group every email-service instance joins."""
DEFAULT_EMAILS_DB = Path("bank-data") / "emails.db"
"""Where the email service keeps its idempotency record unless told otherwise."""


class ClaimBusy(Exception):
    """Another instance holds a live claim on this event; the bus should retry later."""


class Mailer(Protocol):
    """Anything with ``async send(mail)`` that raises when the mail was not accepted."""

    async def send(self, mail: Any) -> None: ...


class EmailService:
    """Subscribes ``handle`` on ``bus`` at construction; the caller starts/runs/closes the bus.

    - ``processed_db``: the SQLite idempotency record; instances that must not double-send
      share the file.
    - ``concurrency``, ``max_attempts``, ``backoff``, ``max_backoff``: passed to
      ``bus.subscribe``. The retries must outlast both an SMTP outage you want to ride out
      and ``lease``.
    - ``lease``: how long another instance's ``sending`` claim is trusted (> SMTP timeout).

    ``stats`` counts outcomes (``sent``, ``duplicate``, ``busy``, ``smtp_failed``,
    ``rejected``); read it with :meth:`snapshot`. Thread-safe.
    """

    def __init__(
        self,
        bus: AsyncBus,
        mailer: Mailer,
        processed_db: str | Path = DEFAULT_EMAILS_DB,
        *,
        topic: str = ACCOUNT_CREATED,
        group: str = EMAIL_GROUP,
        concurrency: int = 4,
        max_attempts: int = 10,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        lease: float = 90.0,
        sender: str = DEFAULT_SENDER,
    ) -> None:
        self.mailer = mailer
        self.processed = ProcessedEvents(processed_db)
        self.topic = topic
        self.lease = lease
        self.sender = sender
        self.instance_id = uuid.uuid4().hex[:12]
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        bus.subscribe(
            topic,
            self.handle,
            group=group,
            concurrency=concurrency,
            max_attempts=max_attempts,
            backoff=backoff,
            max_backoff=max_backoff,
        )

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.stats[outcome] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of the outcome counters."""
        with self._lock:
            return dict(self.stats)

    async def handle(self, message: msgbus.Message) -> None:
        """The message handler (see the module docstring for the steps and what it raises)."""
        try:
            event = AccountCreated.from_dict(message.payload)
        except EventError as exc:
            self._count("rejected")
            raise msgbus.Reject(f"{type(exc).__name__}: {exc}") from exc
        mail = render_confirmation(event, correlation_id=message.correlation_id, sender=self.sender)
        work = asyncio.ensure_future(self._claim_and_send(event, mail))
        work.add_done_callback(_retrieve)  # its outcome may arrive after a cancellation
        await asyncio.shield(work)

    async def _claim_and_send(self, event: AccountCreated, mail: Any) -> None:
        """Claim, send, record (shielded as a whole: see the module docstring)."""
        claim = await asyncio.to_thread(
            self.processed.claim,
            event.event_id,
            self.instance_id,
            lease=self.lease,
            recipient=event.email,
        )
        if claim is Claim.ALREADY_SENT:
            self._count("duplicate")
            log.info("event %s: mail already sent, skipping", event.event_id)
            return
        if claim is Claim.BUSY:
            self._count("busy")
            raise ClaimBusy(f"event {event.event_id} is being sent by another instance")
        try:
            await self.mailer.send(mail)
        except Exception as exc:
            self._count("smtp_failed")
            await asyncio.to_thread(
                self.processed.release,
                event.event_id,
                self.instance_id,
                f"{type(exc).__name__}: {exc}",
            )
            raise
        await asyncio.to_thread(self.processed.mark_sent, event.event_id)
        self._count("sent")

    def close(self) -> None:
        """Close the idempotency database (after the bus is closed)."""
        self.processed.close()


def _retrieve(work: asyncio.Future[None]) -> None:
    """Mark a shielded send's outcome as seen (its handler may have been cancelled)."""
    if not work.cancelled():
        work.exception()
