"""The ``msgbus-bank`` command: run the account service, the email service, or the demo.

::

    msgbus-bank accounts --url URL [--db PATH] [--host 127.0.0.1] [--port 8000] [--metrics-port N]
    msgbus-bank emails   --url URL --smtp HOST:PORT [--db PATH] [--concurrency N]
                         [--host 127.0.0.1] [--port N] [--metrics-port N]
    msgbus-bank demo     [--url URL] [--accounts N] [--data DIR] [--print-spans]

``--url`` defaults to ``$MSGBUS_URL``, else ``memory://`` (which only reaches buses in the same
process: fine for the demo, useless for two separate services). Exit status: 0 on success
(a demo in which every mail arrived exactly once), 1 when the demo failed, 2 on bad usage or
an unreachable broker.

Probes: the account service answers ``/healthz`` and ``/readyz`` on its HTTP port; the email
service on ``--port`` when given (see :mod:`msgbus.contrib.bank.probes`). ``--metrics-port``
serves Prometheus ``/metrics`` on ``--host`` (extra ``msgbus[prometheus]``), the same endpoint
as ``msgbus consume --metrics-port``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import msgbus
import msgbus.aio
from msgbus.contrib.bank.account_service import DEFAULT_ACCOUNTS_DB, AccountService
from msgbus.contrib.bank.email_service import DEFAULT_EMAILS_DB, EmailService
from msgbus.contrib.bank.http_server import ServerThread
from msgbus.contrib.bank.mailer import SmtpMailer, parse_hostport
from msgbus.contrib.bank.probes import probe_app

__all__ = ["build_parser", "main"]

log = logging.getLogger("msgbus.contrib.bank")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _smtp(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="msgbus-bank",
        description="The msgbus bank example: account service, email service, demo.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    url_help = "broker URL (default: $MSGBUS_URL, else memory://)"

    accounts = commands.add_parser("accounts", help="run the account service (HTTP API + outbox)")
    accounts.add_argument("--url", help=url_help)
    accounts.add_argument("--db", default=str(DEFAULT_ACCOUNTS_DB), help="SQLite file")
    accounts.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    accounts.add_argument("--port", type=int, default=8000, help="listen port (8000)")
    accounts.add_argument(
        "--metrics-port", type=int, metavar="N", help="serve Prometheus /metrics on this port"
    )

    emails = commands.add_parser("emails", help="run the email service")
    emails.add_argument("--url", help=url_help)
    emails.add_argument(
        "--smtp", type=_smtp, required=True, metavar="HOST:PORT", help="SMTP server"
    )
    emails.add_argument("--db", default=str(DEFAULT_EMAILS_DB), help="SQLite file (idempotency)")
    emails.add_argument("--concurrency", type=_positive, default=4, help="concurrent handlers (4)")
    emails.add_argument("--max-attempts", type=_positive, default=10, help="sends before DLQ")
    emails.add_argument("--host", default="127.0.0.1", help="probe/metrics address (127.0.0.1)")
    emails.add_argument(
        "--port", type=int, metavar="N", help="serve /healthz and /readyz on this port"
    )
    emails.add_argument(
        "--metrics-port", type=int, metavar="N", help="serve Prometheus /metrics on this port"
    )

    demo = commands.add_parser("demo", help="both services + a local SMTP sink, N accounts")
    demo.add_argument("--url", help="broker URL (default: memory://)")
    demo.add_argument("--accounts", type=_positive, default=100, help="accounts to create (100)")
    demo.add_argument("--data", help="data folder (default: a fresh temporary one)")
    demo.add_argument("--concurrency", type=_positive, default=4, help="email workers (4)")
    demo.add_argument("--clients", type=_positive, default=4, help="parallel HTTP clients (4)")
    demo.add_argument("--timeout", type=float, help="seconds to wait for the mails")
    demo.add_argument(
        "--print-spans",
        action="store_true",
        help="print every OpenTelemetry span, one line each (extra msgbus[bank-otel])",
    )
    return parser


def _url(args: argparse.Namespace) -> str:
    url = args.url or os.environ.get("MSGBUS_URL") or "memory://"
    if url.startswith("memory:"):
        log.warning("%s only reaches buses in this process; pass --url for a real broker", url)
    return url


@contextmanager
def _until_signal() -> Iterator[threading.Event]:
    """Yield an Event set by SIGINT/SIGTERM (previous handlers restored afterwards)."""
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _serve_metrics(args: argparse.Namespace, stack: ExitStack) -> None:
    """Serve Prometheus ``/metrics`` on ``--metrics-port`` (if given) until ``stack`` closes."""
    if args.metrics_port is None:
        return
    from msgbus.prometheus import serve_metrics

    server = serve_metrics(args.metrics_port, args.host)
    stack.callback(server.close)
    log.info("metrics on %s", server.url)


def _run_accounts(args: argparse.Namespace) -> int:
    with _until_signal() as stop, ExitStack() as stack:
        _serve_metrics(args, stack)
        bus = msgbus.aio.connect(_url(args))  # started and closed by the app's lifespan
        stack.callback(bus.bus.close)  # idempotent: in case the server never started
        service = AccountService(bus, args.db)
        stack.callback(service.close)
        server = ServerThread(service.app, args.host, args.port).start()
        stack.callback(server.stop)
        log.info("account service ready on %s (db %s, bus %r)", server.url, args.db, bus)
        stop.wait()
        log.info("shutting down")
    return 0


def _run_emails(args: argparse.Namespace) -> int:
    host, port = args.smtp
    with ExitStack() as stack:
        _serve_metrics(args, stack)
        return _serve_emails(args, host, port, stack)


def _serve_emails(args: argparse.Namespace, host: str, port: int, stack: ExitStack) -> int:
    bus = msgbus.aio.connect(_url(args))
    service = EmailService(
        bus,
        SmtpMailer(host, port),
        args.db,
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
    )
    stack.callback(service.close)  # LIFO: after the bus (run closes it) and the probes
    stack.callback(bus.bus.close)  # idempotent: in case the loop never ran
    if args.port is not None:
        app = probe_app(bus, service.processed.db.ping, title="msgbus bank: email service")
        probes = ServerThread(app, args.host, args.port).start()
        stack.callback(probes.stop)
        log.info("email service probes on %s/healthz and /readyz", probes.url)

    def ready() -> None:
        log.info("email service ready (smtp %s:%d, db %s, bus %r)", host, port, args.db, bus)

    async def serve() -> None:
        await bus.run(on_ready=ready)  # until SIGINT/SIGTERM; finishes the mails in flight
        log.info("email service stopped")

    asyncio.run(serve())
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from msgbus.contrib.bank.demo import run_demo

    provider = None
    if args.print_spans:
        try:
            from msgbus.contrib.bank.tracing import print_spans

            provider = print_spans(sys.stdout)
        except ImportError as exc:
            print(
                f'msgbus-bank: error: --print-spans needs pip install "msgbus[bank-otel]"'
                f" ({exc.name} missing)",
                file=sys.stderr,
            )
            return 2
    print(f"msgbus bank demo: {args.accounts} accounts …", file=sys.stderr, flush=True)
    try:
        result = run_demo(
            args.url,
            accounts=args.accounts,
            data_dir=args.data,
            concurrency=args.concurrency,
            clients=args.clients,
            timeout=args.timeout,
        )
    finally:
        if provider is not None:
            provider.shutdown()
    print(result.summary())
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command != "demo":
        logging.getLogger("msgbus.contrib.bank").setLevel(logging.INFO)
    runners = {"accounts": _run_accounts, "emails": _run_emails, "demo": _run_demo}
    try:
        return runners[args.command](args)
    except msgbus.MsgBusError as exc:
        print(f"msgbus-bank: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
