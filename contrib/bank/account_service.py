"""The account service: storage + outbox relay + HTTP API, wired together.

The caller owns the bus (``msgbus.connect(url)``) and closes it after :meth:`close`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msgbus.contrib.bank.events import ACCOUNT_CREATED
from msgbus.contrib.bank.http_api import create_app
from msgbus.contrib.bank.outbox import OutboxRelay, Publisher
from msgbus.contrib.bank.store import AccountStore

__all__ = ["DEFAULT_ACCOUNTS_DB", "AccountService"]

DEFAULT_ACCOUNTS_DB = Path("bank-data") / "accounts.db"
"""Where the account service keeps its SQLite file unless told otherwise."""


class AccountService:
    """Accounts in ``db_path``, their events published on ``bus`` to ``topic``.

    ``app`` is the FastAPI application to serve. :meth:`start` starts the outbox relay, which
    first publishes whatever an earlier run left pending; :meth:`close` stops it (rows not yet
    confirmed stay pending) and closes the database. ``relay_options`` go to
    :class:`~msgbus.contrib.bank.outbox.OutboxRelay`.
    """

    def __init__(
        self,
        bus: Publisher,
        db_path: str | Path = DEFAULT_ACCOUNTS_DB,
        *,
        topic: str = ACCOUNT_CREATED,
        **relay_options: Any,
    ) -> None:
        self.store = AccountStore(db_path, topic=topic)
        self.relay = OutboxRelay(self.store, bus, **relay_options)
        self.app = create_app(self.store, on_created=self.relay.notify)

    def start(self) -> AccountService:
        """Start the outbox relay. Returns self."""
        self.relay.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the relay and close the store."""
        self.relay.stop(timeout)
        self.store.close()

    def __enter__(self) -> AccountService:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
