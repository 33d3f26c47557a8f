"""The account service: storage + outbox relay + HTTP API, wired together.

The service runs on one event loop, the web server's: the app's lifespan starts the
:class:`msgbus.aio.AsyncBus` and the outbox relay (an asyncio task publishing with
``await bus.publish``) when the server starts, and on shutdown stops the relay and closes the
bus. The HTTP layer itself only writes the account and its outbox row, then notifies the relay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from msgbus.aio import AsyncBus
from msgbus.contrib.bank.events import ACCOUNT_CREATED
from msgbus.contrib.bank.http_api import create_app
from msgbus.contrib.bank.outbox import OutboxRelay
from msgbus.contrib.bank.probes import add_readiness
from msgbus.contrib.bank.store import AccountStore

__all__ = ["DEFAULT_ACCOUNTS_DB", "AccountService"]

DEFAULT_ACCOUNTS_DB = Path("bank-data") / "accounts.db"
"""Where the account service keeps its SQLite file unless told otherwise."""


class AccountService:
    """Accounts in ``db_path``, their events published on ``bus`` to ``topic``.

    ``app`` is the FastAPI application to serve (with its lifespan: a server that runs
    lifespan events, as uvicorn does by default, starts and closes ``bus`` and the relay),
    with the probes ``/healthz`` (alive) and ``/readyz`` (bus ready and database readable,
    else 503: see :mod:`~msgbus.contrib.bank.probes`).
    ``start_relay=False`` leaves the relay off (a service that "crashes" after a commit, in
    the tests). :meth:`close` closes the database once the server has stopped.
    ``relay_options`` go to :class:`~msgbus.contrib.bank.outbox.OutboxRelay`.
    """

    def __init__(
        self,
        bus: AsyncBus,
        db_path: str | Path = DEFAULT_ACCOUNTS_DB,
        *,
        topic: str = ACCOUNT_CREATED,
        start_relay: bool = True,
        drain_timeout: float = 10.0,
        **relay_options: Any,
    ) -> None:
        self.bus = bus
        self.store = AccountStore(db_path, topic=topic)
        self.relay = OutboxRelay(self.store, bus, **relay_options)
        self.start_relay = start_relay
        self.drain_timeout = drain_timeout
        self.app = create_app(self.store, on_created=self.relay.notify, lifespan=self.lifespan)
        add_readiness(self.app, bus, self.store.db.ping)

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Start the bus and the relay on the server's loop; stop both on shutdown."""
        await self.bus.start()
        if self.start_relay:
            self.relay.start()
        try:
            yield
        finally:
            await self.relay.stop(self.drain_timeout)
            await self.bus.close(self.drain_timeout)

    def close(self) -> None:
        """Close the store (after the server, and with it the relay, stopped)."""
        self.store.close()
