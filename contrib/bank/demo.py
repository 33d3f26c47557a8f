"""``msgbus-bank demo``: both services, a local SMTP sink and N accounts, in one process.

Everything listens on 127.0.0.1 only (free ports). The accounts are created through the real
HTTP API; the run ends when every confirmation mail has reached the SMTP sink (or at the
timeout). Mails are matched to this run by recipient (each run's addresses carry a run id),
so leftovers from earlier runs on a persistent broker are reported apart, not miscounted.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgbus
import msgbus.aio
from msgbus.contrib.bank.account_service import AccountService
from msgbus.contrib.bank.email_service import EmailService
from msgbus.contrib.bank.events import ACCOUNT_CREATED
from msgbus.contrib.bank.http_server import ServerThread
from msgbus.contrib.bank.mailer import SmtpMailer
from msgbus.contrib.bank.smtp_sink import SmtpSink

__all__ = ["DemoResult", "run_demo"]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class DemoResult:
    """What a demo run measured."""

    url: str
    data_dir: str
    accounts: int
    created: int
    mails: int
    duplicates: int
    dead_letters: int
    foreign_mails: int
    elapsed: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        """Every account got exactly one mail, nothing was dead-lettered, no timeout."""
        return (
            not self.timed_out
            and self.created == self.accounts
            and self.mails == self.accounts
            and self.duplicates == 0
            and self.dead_letters == 0
        )

    @property
    def rate(self) -> float:
        """Accounts per second, end to end (first request to last mail)."""
        return self.created / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [
            f"msgbus bank demo on {self.url}",
            f"  data folder     {self.data_dir}",
            f"  accounts        {self.created}/{self.accounts} created through HTTP",
            f"  mails           {self.mails} received by the SMTP sink",
            f"  duplicates      {self.duplicates}",
            f"  dead letters    {self.dead_letters}",
            f"  elapsed         {self.elapsed:.2f} s",
            f"  rate            {self.rate:.0f} accounts/s (HTTP → outbox → broker → SMTP)",
        ]
        if self.foreign_mails:
            lines.append(f"  (ignored {self.foreign_mails} mails for earlier runs' accounts)")
        lines.append(
            "  result          " + ("OK" if self.ok else "FAILED" + (" (timeout)" * self.timed_out))
        )
        return "\n".join(lines)


class _Client:
    """POSTs accounts over keep-alive connections, one per worker thread."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._local = threading.local()

    def create(self, owner: str, email: str, correlation_id: str) -> dict[str, Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        body = json.dumps({"owner": owner, "email": email})
        headers = {"Content-Type": "application/json", "X-Correlation-ID": correlation_id}
        try:
            conn.request("POST", "/accounts", body, headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        if response.status != 201:
            raise RuntimeError(f"POST /accounts: {response.status} {data[:200]!r}")
        return json.loads(data)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_demo(
    url: str | None = None,
    *,
    accounts: int = 100,
    data_dir: str | Path | None = None,
    concurrency: int = 4,
    clients: int = 4,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = _stderr,
    progress_every: float = 1.0,
) -> DemoResult:
    """Run the demo and return its figures (see the module docstring).

    ``url`` None means ``memory://``. ``data_dir`` None uses a fresh temporary folder,
    removed afterwards. ``timeout`` (default ``30 + accounts / 20`` s) bounds the wait for
    the mails. ``progress`` gets a line every ``progress_every`` seconds once a run lasts
    longer than that (None: silent). Raises msgbus errors if the broker is unreachable.
    """
    url = url or "memory://"
    shown_url = msgbus.BusURL.parse(url).render(hide_password=True)
    temp = data_dir is None
    folder = Path(tempfile.mkdtemp(prefix="msgbus-bank-demo-") if temp else data_dir)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    timeout = 30.0 + accounts / 20 if timeout is None else timeout
    run_id = uuid.uuid4().hex[:8]
    emails = {f"customer{i}.{run_id}@example.com" for i in range(accounts)}

    sink = SmtpSink(LOOPBACK).start()
    email_bus = msgbus.aio.connect(url)  # the email service's loop: this function's
    account_bus = msgbus.aio.connect(url)  # the account service's loop: its HTTP server's
    dead: Counter[str] = Counter()
    dead_lock = threading.Lock()

    def count_dead_letter(message: msgbus.Message) -> None:
        payload = message.payload if isinstance(message.payload, dict) else {}
        with dead_lock:
            dead["ours" if payload.get("email") in emails else "other"] += 1

    service: AccountService | None = None
    server: ServerThread | None = None
    emailer: EmailService | None = None
    created = 0
    timed_out = False
    started = time.monotonic()
    elapsed = 0.0

    async def run() -> None:
        nonlocal service, server, emailer, created, timed_out, started, elapsed
        try:
            emailer = EmailService(
                email_bus,
                SmtpMailer(LOOPBACK, sink.port, timeout=10),
                folder / "emails.db",
                concurrency=concurrency,
                max_attempts=5,
                backoff=0.2,
                max_backoff=2.0,
                lease=30.0,
            )
            email_bus.subscribe(ACCOUNT_CREATED + ".dlq", count_dead_letter, group=None)
            # subscribed before the first event: new groups start at the end
            await email_bus.start()
            service = AccountService(account_bus, folder / "accounts.db")
            server = await asyncio.to_thread(ServerThread(service.app, LOOPBACK, 0).start)
            client = _Client(LOOPBACK, server.port)

            seen: set[str | None] = set()
            scanned = 0

            def ours() -> int:  # incremental: called after every mail
                nonlocal scanned
                new = sink.mails_since(scanned)
                scanned += len(new)
                seen.update(m.event_id for m in new if not emails.isdisjoint(m.rcpt_tos))
                return len(seen)

            started = time.monotonic()
            deadline = started + timeout
            errors: list[BaseException] = []
            created_lock = threading.Lock()

            def create(index: int) -> None:
                nonlocal created
                email = f"customer{index}.{run_id}@example.com"
                client.create(f"Customer {index}", email, f"demo-{run_id}-{index}")
                with created_lock:
                    created += 1

            def create_all() -> None:
                try:
                    with ThreadPoolExecutor(clients, thread_name_prefix="bank-demo-client") as pool:
                        for future in [pool.submit(create, i) for i in range(accounts)]:
                            future.result()
                except Exception as exc:
                    errors.append(exc)

            creator = threading.Thread(target=create_all, name="bank-demo-creator", daemon=True)
            creator.start()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if await asyncio.to_thread(
                    sink.wait_until,
                    lambda: ours() >= accounts or bool(errors),
                    min(progress_every, remaining),
                ):
                    break
                if progress is not None:
                    progress(
                        f"  … {created}/{accounts} accounts created, {ours()} mails received"
                        f" ({time.monotonic() - started:.0f} s)"
                    )
            elapsed = time.monotonic() - started
            await asyncio.to_thread(creator.join, max(0.0, deadline - time.monotonic()))
            if errors and progress is not None:
                progress(f"  creating accounts failed: {errors[0]}")
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)  # its lifespan closes account_bus
            await email_bus.close()

    try:
        asyncio.run(run())
    finally:
        if service is not None:
            service.close()
        account_bus.bus.close()  # idempotent: in case the server never started
        email_bus.bus.close()
        if emailer is not None:
            emailer.close()
        sink.stop()
        if temp:
            shutil.rmtree(folder, ignore_errors=True)

    mails = [m for m in sink.mails if not emails.isdisjoint(m.rcpt_tos)]
    per_event = Counter(m.event_id for m in mails)
    return DemoResult(
        url=shown_url,
        data_dir=str(folder) + (" (temporary, removed)" if temp else ""),
        accounts=accounts,
        created=created,
        mails=len(mails),
        duplicates=sum(n - 1 for n in per_event.values()),
        dead_letters=dead["ours"],
        foreign_mails=len(sink.mails) - len(mails),
        elapsed=elapsed,
        timed_out=timed_out,
    )
