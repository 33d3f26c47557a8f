"""The ``msgbus`` command: the terminal flow of Kafka's quickstart, on any backend.

::

    msgbus publish URL TOPIC [--data TEXT] [--key K] [--header k=v ...] [--format F]
    msgbus consume URL TOPIC [--group G] [--from-beginning] [--json] [--max-messages N]
                   [--metrics-port N [--metrics-host H]]   # Prometheus /metrics
    msgbus broker start kafka|rabbitmq|activemq|redis [--port N]   (test brokers)
    msgbus bench run|report ...                                    (comparison benchmark)
    msgbus dlq list|show|redrive|purge URL TOPIC ...               (dead-letter operations)
    msgbus NAME ...    any other subcommand: the entry-point group ``msgbus.commands``

Exit status: 0 on success, 1 on any failure (printed as one line, ``msgbus: error: ...``,
without any password, with the ``pip install`` hint when an extra is missing), 2 for bad
command-line usage, 130 after Ctrl-C (143 after SIGTERM). ``MSGBUS_TRACEBACK=1`` adds the
traceback of an unexpected failure.

``memory://`` reaches only buses inside one process: ``publish`` and ``consume`` on it warn
and name the alternatives (``kombu+sqla+sqlite:///FILE`` between processes on one machine,
or a real broker).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import msgbus
from msgbus import secrets
from msgbus.commands import available_commands, load_command
from msgbus.errors import MsgBusError

__all__ = ["main"]


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a header is NAME=VALUE, not {text!r}")
    return name, value


def _payload_from_line(line: str, fmt: str) -> tuple[Any, str | None]:
    """Return (payload, codec) for one input line under ``fmt``."""
    if fmt == "text":
        return line, "text"
    if fmt == "bytes":
        return line.encode("utf-8"), "bytes"
    if fmt == "json":
        return json.loads(line), "json"
    try:  # auto: JSON when the line is JSON, else text
        return json.loads(line), "json"
    except ValueError:
        return line, "text"


MEMORY_WARNING = (
    "msgbus: warning: memory:// reaches only buses inside this process; to talk between "
    "processes use kombu+sqla+sqlite:////tmp/msgbus.db (no broker, one machine) or a broker "
    "(msgbus broker start rabbitmq|kafka|activemq|redis)"
)
"""Printed by ``publish`` and ``consume`` on a ``memory://`` URL."""

_OWN = ("publish", "consume")
"""Subcommands of this module; the others come from the ``msgbus.commands`` entry points."""

_COMMAND_HELP = {
    "broker": "run a real broker for development (see: msgbus broker -h)",
    "bench": "the broker comparison benchmark (see: msgbus bench -h)",
    "dlq": "list, show, redrive, purge dead letters (see: msgbus dlq -h)",
}

_EXTRAS = {
    "hdrh": "bench",
    "matplotlib": "bench",
    "pika": "rabbitmq",
    "kafka": "kafka",
    "stomp": "activemq",
    "kombu": "kombu",
    "amqp": "kombu",
    "redis": "kombu",
    "sqlalchemy": "kombu",
}


def _warn_if_memory(url: str, stderr: TextIO) -> None:
    if url.strip().lower().startswith("memory:"):
        print(MEMORY_WARNING, file=stderr, flush=True)


def _publish(args: argparse.Namespace, stdin: TextIO, stderr: TextIO) -> int:
    _warn_if_memory(args.url, stderr)
    lines: Iterable[str]
    lines = [args.data] if args.data is not None else (line.rstrip("\r\n") for line in stdin)
    headers = dict(args.header or [])
    count = 0
    with msgbus.connect(args.url) as bus:
        futures = []
        for line in lines:
            if not line and args.data is None:
                continue
            try:
                payload, codec = _payload_from_line(line, args.format)
            except ValueError as exc:
                raise msgbus.SerializationError(f"line {count + 1} is not JSON: {exc}") from None
            futures.append(
                bus.publish(args.topic, payload, key=args.key, headers=headers, codec=codec)
            )
            count += 1
        deadline = time.monotonic() + args.timeout
        for done, future in enumerate(futures):
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise _Failure(
                    f"{len(futures) - done} of {count} message(s) not confirmed by the broker "
                    f"within {args.timeout:g}s (--timeout)"
                ) from None
    print(f"published {count} message(s) to {args.topic}", file=stderr)
    return 0


def _jsonable(message: msgbus.Message) -> dict[str, Any]:
    payload: Any = message.payload
    encoding = None
    if isinstance(payload, bytes):
        encoding = "base64"
        payload = base64.b64encode(payload).decode("ascii")
    return {
        "id": message.id,
        "topic": message.topic,
        "key": message.key,
        "headers": dict(message.headers),
        "content_type": message.content_type,
        "correlation_id": message.correlation_id,
        "timestamp": message.timestamp,
        "payload": payload,
        **({"payload_encoding": encoding} if encoding else {}),
    }


def _human(message: msgbus.Message) -> str:
    payload = message.payload
    if isinstance(payload, bytes):
        text = payload.decode("utf-8", errors="backslashreplace")
    elif isinstance(payload, str):
        text = payload
    else:
        text = json.dumps(payload, ensure_ascii=False)
    parts = []
    if message.key is not None:
        parts.append(f"key={message.key}")
    if message.headers:
        parts.append("headers=" + ",".join(f"{k}={v}" for k, v in message.headers.items()))
    return "\t".join([*parts, text])


class _Failure(Exception):
    """A CLI failure whose text is the whole story (printed as one line, exit 1)."""


def _consume(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    if args.metrics_port is None:
        return _consume_messages(args, stdout, stderr)
    from msgbus.prometheus import serve_metrics

    metrics = serve_metrics(args.metrics_port, args.metrics_host)
    print(f"metrics on {metrics.url}", file=stderr, flush=True)
    try:
        return _consume_messages(args, stdout, stderr)
    finally:
        metrics.close()


def _consume_messages(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    _warn_if_memory(args.url, stderr)
    enough = threading.Event()
    lock = threading.Lock()
    seen = 0
    last_message = time.monotonic()

    def show(message: msgbus.Message) -> None:
        nonlocal seen, last_message
        last_message = time.monotonic()
        line = json.dumps(_jsonable(message), ensure_ascii=False) if args.json else _human(message)
        with lock:
            late = enough.is_set()
            if not late:
                print(line, file=stdout, flush=True)
                seen += 1
                if args.max_messages and seen >= args.max_messages:
                    enough.set()
        if late:  # never acknowledged: the bus is closing and the broker keeps it
            threading.Event().wait()

    bus = msgbus.connect(args.url)
    try:
        bus.subscribe(args.topic, show, group=args.group, from_beginning=args.from_beginning)
        bus.start()
        if args.max_messages:
            threading.Thread(target=lambda: (enough.wait(), bus.stop()), daemon=True).start()
        if args.idle_timeout:
            last_message = time.monotonic()
            watcher = threading.Thread(
                target=_stop_when_idle,
                args=(bus, args.idle_timeout, lambda: last_message),
                name="msgbus-cli-idle",
                daemon=True,
            )
            watcher.start()
        bus.run(
            drain_timeout=1.0 if args.max_messages else 10.0,
            on_ready=lambda: print(
                f"consuming {args.topic} (Ctrl-C to stop)", file=stderr, flush=True
            ),
        )
    finally:
        bus.close()
    if bus.stop_signal is not None:
        return 128 + bus.stop_signal
    return 0


def _stop_when_idle(bus: msgbus.Bus, idle: float, last: Any) -> None:
    """Stop ``bus`` once ``idle`` seconds passed since ``last()`` (the last message's time)."""
    stopped = bus._stop  # set by run's end too, so this thread never outlives the bus
    while True:
        remaining = last() + idle - time.monotonic()
        if remaining <= 0:
            bus.stop()
            return
        if stopped.wait(remaining):
            return


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _missing_module(exc: ModuleNotFoundError) -> str:
    name = (exc.name or "").partition(".")[0]
    extra = _EXTRAS.get(name)
    how = f'pip install "msgbus[{extra}]"' if extra else f"pip install {name}"
    return f"this needs the Python package {name!r}, which is not installed: {how}"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msgbus", description="Publish and consume on any msgbus backend."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    pub = sub.add_parser("publish", help="publish stdin lines (or --data) as messages")
    pub.add_argument("url", help="bus URL, e.g. memory://, kafka://127.0.0.1:9092")
    pub.add_argument("topic")
    pub.add_argument("--data", help="publish this one message instead of reading stdin")
    pub.add_argument("--key", help="ordering key for every message")
    pub.add_argument("--header", action="append", type=_header, metavar="NAME=VALUE")
    pub.add_argument(
        "--format",
        choices=["auto", "json", "text", "bytes"],
        default="auto",
        help="how to read each line: auto (JSON if it parses, else text), json, text, bytes",
    )
    pub.add_argument("--timeout", type=_seconds, default=30.0, help="seconds to wait for confirms")

    con = sub.add_parser("consume", help="print messages as they arrive")
    con.add_argument("url")
    con.add_argument("topic")
    con.add_argument("--group", help="consumer group (default: a private one)")
    con.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new group starts at the oldest message (backends that keep a log)",
    )
    con.add_argument("--json", action="store_true", help="one JSON object per line")
    con.add_argument("--max-messages", type=int, default=0, help="stop after N messages")
    con.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=0,
        help="stop once S seconds passed without a message (0: never)",
    )
    con.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    con.add_argument("--metrics-host", default="127.0.0.1", help="its address (127.0.0.1)")

    for name in sorted(available_commands()):
        sub.add_parser(name, help=_COMMAND_HELP.get(name, f"see: msgbus {name} -h"))
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the ``msgbus`` command with ``argv``; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    command = available_commands().get(argv[0]) if argv and argv[0] not in _OWN else None
    args = None if command is not None else _build_parser().parse_args(argv)
    try:
        if command is not None:
            return load_command(command)(argv[1:])
        assert args is not None
        if args.command == "publish":
            return _publish(args, stdin, stderr)
        return _consume(args, stdout, stderr)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except (MsgBusError, _Failure) as exc:
        return _fail(str(exc), stderr)
    except ModuleNotFoundError as exc:
        return _fail(_missing_module(exc), stderr)
    except Exception as exc:
        if os.environ.get("MSGBUS_TRACEBACK"):
            traceback.print_exc(file=stderr)
        hint = "" if os.environ.get("MSGBUS_TRACEBACK") else " (MSGBUS_TRACEBACK=1 shows where)"
        return _fail(f"{type(exc).__name__}: {exc}{hint}", stderr)


def _fail(text: str, stderr: TextIO) -> int:
    """Print ``text`` as one masked line; return the exit status 1."""
    line = " ".join(secrets.mask(text).split())
    print(f"msgbus: error: {line}", file=stderr, flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
