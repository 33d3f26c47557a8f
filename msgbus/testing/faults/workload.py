"""The chaos workload's processes: the bank's account service (producer) and email service
(consumer), each run as its own OS process so a schedule can SIGKILL it.

Both read the broker URL from ``$MSGBUS_URL`` (never from the command line, where ``ps`` would
show a password).

``python -m msgbus.testing.faults.workload producer --db FILE --topic T --rate R``
    The account service's write path: at ``rate`` accounts per second it commits an account
    and its ``account.created`` outbox row in one SQLite transaction
    (:meth:`~msgbus.contrib.bank.store.AccountStore.create_account`) and notifies the
    :class:`~msgbus.contrib.bank.outbox.OutboxRelay`, which publishes the row on an
    :class:`msgbus.aio.AsyncBus` and marks it sent once the broker confirmed it. The outbox
    file is the producer's history: a row with ``sent_at`` was confirmed. SIGUSR1 makes the
    process commit one more account and SIGKILL itself before returning to the event loop,
    so the relay (on that loop) cannot have published it: a crash between commit and publish,
    which the next start's relay must repair. SIGTERM stops creating accounts, waits (up to
    ``--drain`` seconds) until the outbox is empty, then exits 0 (1 if rows stay pending).

``python -m msgbus.testing.faults.workload consumer --topic T --log FILE --emails FILE --name N``
    One member of the ``email-service`` group: an
    :class:`~msgbus.contrib.bank.email_service.EmailService` whose mailer only records. Each
    delivery is appended to ``--log`` (``delivered <wall time> <name> <account id>``) as the
    handler starts, before the acknowledgement, and each mail as ``mail <wall time> <name>
    <event id>``; the file
    ``<log>.ready`` appears once the subscription is ready. SIGTERM drains and exits.

The bank modules are imported lazily inside the worker processes (they need the ``bank``
extra). Log lines are written with one ``os.write`` on an ``O_APPEND`` file, so a SIGKILL
leaves at most a torn last line, which :func:`read_log` skips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "read_log"]


def read_log(path: str | os.PathLike[str]) -> list[tuple[str, float, str, str]]:
    """The complete lines of a consumer log as ``(kind, wall_time, consumer, ident)`` (a torn
    last line is skipped); [] if the file is missing."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[0] not in ("delivered", "mail"):
            continue
        try:
            entries.append((parts[0], float(parts[1]), parts[2], parts[3]))
        except ValueError:
            continue
    return entries


class _Log:
    """An append-only line log, one ``os.write`` per line (atomic for short lines)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, kind: str, name: str, ident: str) -> None:
        os.write(self.fd, f"{kind} {time.time():.6f} {name} {ident}\n".encode())


# ---------------------------------------------------------------------- producer


async def _producer(args: argparse.Namespace) -> int:
    from msgbus.aio import connect
    from msgbus.contrib.bank.outbox import OutboxRelay
    from msgbus.contrib.bank.store import AccountStore

    store = AccountStore(args.db, topic=args.topic)
    bus = connect()
    await bus.start()
    relay = OutboxRelay(store, bus, sweep_interval=1.0, max_backoff=2.0).start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    crash = asyncio.Event()
    wake = asyncio.Event()  # set by either signal: ends the pacing wait at once
    for signum, event in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGUSR1, crash)):
        loop.add_signal_handler(signum, lambda e=event: (e.set(), wake.set()))
    started = time.monotonic()
    made = 0
    while not stop.is_set():
        if crash.is_set():
            # committed on the loop's own thread, then dead before the loop runs again:
            # the relay (a task on this loop) cannot have published the row
            store.create_account("Chaos Crash", "crash@example.com")
            os.kill(os.getpid(), signal.SIGKILL)
        made += 1
        await asyncio.to_thread(store.create_account, f"Chaos {made}", f"c{made}@example.com")
        relay.notify()
        # pacing at a fixed rate (the workload's property, not a synchronisation)
        delay = started + made / args.rate - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)
    deadline = time.monotonic() + args.drain
    while store.counts()["pending"] and time.monotonic() < deadline:
        relay.notify()
        await asyncio.sleep(0.2)  # polling the outbox file, bounded by --drain
    pending = store.counts()["pending"]
    await relay.stop(10)
    await bus.close(10)
    store.close()
    if pending:
        print(f"producer: {pending} outbox row(s) still pending", file=sys.stderr)
    return 1 if pending else 0


# ---------------------------------------------------------------------- consumer


async def _consumer(args: argparse.Namespace) -> int:
    import msgbus
    from msgbus.aio import connect
    from msgbus.contrib.bank.email_service import EmailService
    from msgbus.contrib.bank.mailer import EVENT_HEADER

    log = _Log(args.log)
    name = args.name

    class _RecordingMailer:
        async def send(self, mail: Any) -> None:
            log.line("mail", name, str(mail[EVENT_HEADER]))

    class _RecordedEmailService(EmailService):
        async def handle(self, message: msgbus.Message) -> None:
            payload = message.payload
            account = payload.get("account_id", -1) if isinstance(payload, dict) else -1
            log.line("delivered", name, str(account))
            await super().handle(message)

    bus = connect()
    service = _RecordedEmailService(
        bus,
        _RecordingMailer(),
        args.emails,
        topic=args.topic,
        lease=5.0,
        max_attempts=1000,
        max_backoff=2.0,
    )
    ready = Path(args.log + ".ready")
    try:
        await bus.run(drain_timeout=5.0, on_ready=ready.touch)
    finally:
        service.close()
    return 0


# ---------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run one worker (``producer`` or ``consumer``; see the module docstring); returns the
    exit status."""
    parser = argparse.ArgumentParser(prog="python -m msgbus.testing.faults.workload")
    sub = parser.add_subparsers(dest="role", required=True)
    prod = sub.add_parser("producer")
    prod.add_argument("--db", required=True)
    prod.add_argument("--topic", required=True)
    prod.add_argument("--rate", type=float, default=50.0)
    prod.add_argument("--drain", type=float, default=120.0)
    cons = sub.add_parser("consumer")
    cons.add_argument("--topic", required=True)
    cons.add_argument("--log", required=True)
    cons.add_argument("--emails", required=True)
    cons.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    if args.role == "producer":
        return asyncio.run(_producer(args))
    return asyncio.run(_consumer(args))


if __name__ == "__main__":
    sys.exit(main())
