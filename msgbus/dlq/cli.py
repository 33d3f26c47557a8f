"""``msgbus dlq``: see, redrive and purge dead letters on any backend.

::

    msgbus dlq list [URL] [TOPIC...] [--match GLOB] [--management-url URL] [--json]
                       (no TOPIC: every one, where the broker can list them; RabbitMQ
                       through its management plugin's HTTP API)
    msgbus dlq show [URL] TOPIC [--limit N] [--error-type T] [--json]
    msgbus dlq redrive [URL] TOPIC [--to TOPIC] [--error-type T] [--limit N] [--dry-run]
                       [--max-redrives N] [--window N]
    msgbus dlq purge [URL] TOPIC [--error-type T] [--yes]

URL defaults to ``$MSGBUS_URL`` (and ``--management-url`` to ``$MSGBUS_MANAGEMENT_URL``): in
the environment a password stays out of the process list and the shell history. TOPIC is
always the original topic (``account.created``), never its ``.dlq``. ``show`` and
``list`` leave the dead letters in place; ``redrive`` removes each only after its republish
is confirmed; ``purge`` asks for confirmation unless ``--yes``. Every command reads until
the store has been quiet for ``--idle`` seconds (1). Exit status: 0 on success, 1 on a
failure (one line, no password), 2 on bad usage or a purge not confirmed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from typing import TextIO

from msgbus.dlq import api

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgbus dlq", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, *, many: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "words",
            nargs="*" if many else "+",
            metavar="[URL] TOPIC" + ("..." if many else ""),
            help="the broker URL (msgbus.connect form; default $MSGBUS_URL, which keeps a "
            "password out of the process list), then the original topic(s), not their .dlq",
        )
        p.add_argument(
            "--idle", type=float, default=api.DEFAULT_IDLE, help="quiet seconds = end (1)"
        )
        p.add_argument("--scan", type=int, default=api.DEFAULT_SCAN, help="read at most N (10000)")
        return p

    ls = command("list", "dead letters per topic: count, times, error types", many=True)
    ls.add_argument("--json", action="store_true", help="JSON instead of a table")
    ls.add_argument("--match", help="without TOPIC: only topics matching this shell pattern")
    ls.add_argument(
        "--management-url",
        help="without TOPIC on RabbitMQ: its management API, http://USER:PASSWORD@HOST:15672 "
        "(default $MSGBUS_MANAGEMENT_URL)",
    )
    show = command("show", "the dead letters of a topic, left in place")
    show.add_argument("--limit", type=int, help="at most N messages")
    show.add_argument("--error-type", help="only this error type (qualified or class name)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    red = command("redrive", "republish dead letters to their topic, then remove them")
    red.add_argument("--to", help="republish to this topic instead of the original")
    red.add_argument("--error-type", help="only this error type")
    red.add_argument("--limit", type=int, help="at most N messages")
    red.add_argument("--dry-run", action="store_true", help="show what would be redriven")
    red.add_argument(
        "--max-redrives",
        type=int,
        default=api.DEFAULT_MAX_REDRIVES,
        help="skip messages redriven this many times already (3)",
    )
    red.add_argument(
        "--window",
        type=int,
        default=1,
        help="confirm removals every N messages: faster, but a crash may resend N (1)",
    )
    pur = command("purge", "delete dead letters (asks first)")
    pur.add_argument("--error-type", help="only this error type")
    pur.add_argument("--yes", action="store_true", help="do not ask")
    return parser


def _url_and_topics(words: list[str], *, many: bool) -> tuple[str, list[str]]:
    """Split the positional words into the URL and the topics. The first word is the URL when
    it has a scheme (``kafka://…``; a topic never contains ``://``), else the URL comes from
    ``$MSGBUS_URL``. Raises ValueError when there is no URL or the topic count is wrong."""
    if words and "://" in words[0]:
        url, topics = words[0], words[1:]
    else:
        url, topics = os.environ.get("MSGBUS_URL", ""), list(words)
        if not url:
            raise ValueError("no broker URL: give one before the topic, or set MSGBUS_URL")
    if not many and len(topics) != 1:
        raise ValueError(f"expected one TOPIC after the URL, got {len(topics)}")
    return url, topics


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_list(rows: list[api.DeadLetterSummary], out: TextIO) -> None:
    print(
        f"{'TOPIC':<30} {'COUNT':>7}  {'OLDEST (UTC)':<19}  {'NEWEST (UTC)':<19}  ERRORS", file=out
    )
    for row in rows:
        count = f"{row.count}" + ("" if row.complete else "+")
        kinds = ", ".join(f"{k} {n}" for k, n in row.error_types.items()) or "-"
        print(
            f"{row.topic:<30} {count:>7}  {_time(row.oldest):<19}  {_time(row.newest):<19}  "
            f"{kinds}",
            file=out,
        )


def _print_letter(letter: api.DeadLetter, out: TextIO) -> None:
    print(
        f"--- {letter.id}  topic={letter.topic} group={letter.group} "
        f"attempts={letter.attempts} redriven={letter.redriven}",
        file=out,
    )
    print(f"    error: {letter.error_type}: {letter.error}", file=out)
    print(f"    key: {letter.key}  content-type: {letter.content_type}", file=out)
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("msgbus-dlq-")}
    print(f"    headers: {json.dumps(headers, sort_keys=True)}", file=out)
    print(f"    body ({len(letter.body)} bytes): {letter.preview()}", file=out)


def main(argv: list[str], *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run ``msgbus dlq`` with ``argv`` (after ``dlq``); return the exit status. Errors of
    the bus propagate (``msgbus.cli`` prints them)."""
    import msgbus

    stdin, out = stdin or sys.stdin, stdout or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        url, topics = _url_and_topics(args.words, many=args.command == "list")
    except ValueError as exc:
        print(f"msgbus dlq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    args.topics, args.topic = topics, (topics[0] if topics else None)
    logging.basicConfig(level=logging.WARNING, format="msgbus: warning: %(message)s")
    reads = {"idle": args.idle, "scan": args.scan}
    with msgbus.connect(url) as bus:
        if args.command == "list":
            rows = api.list_dead_letters(
                bus,
                args.topics,
                match=args.match,
                management_url=args.management_url or os.environ.get("MSGBUS_MANAGEMENT_URL"),
                **reads,
            )
            if args.json:
                print(json.dumps([r.to_json() for r in rows]), file=out)
            else:
                _print_list(rows, out)
            return 0
        if args.command == "show":
            letters = api.show(
                bus, args.topic, limit=args.limit, error_type=args.error_type, **reads
            )
            for letter in letters:
                if args.json:
                    print(json.dumps(letter.to_json()), file=out)
                else:
                    _print_letter(letter, out)
            if not args.json:
                print(f"{len(letters)} dead letter(s) of {args.topic}", file=out)
            return 0
        if args.command == "redrive":
            report = api.redrive(
                bus,
                args.topic,
                to=args.to,
                error_type=args.error_type,
                limit=args.limit,
                dry_run=args.dry_run,
                max_redrives=args.max_redrives,
                window=args.window,
                **reads,
            )
            verb = "would redrive" if report.dry_run else "redriven"
            print(
                f"{verb}: {len(report.redriven)}, skipped (max redrives): "
                f"{len(report.skipped)}, not matching: {report.unmatched}",
                file=out,
            )
            return 0
        if not args.yes:
            which = f" of type {args.error_type}" if args.error_type else ""
            print(f"delete the dead letters{which} of {args.topic}? [y/N] ", end="", file=out)
            out.flush()
            if stdin.readline().strip().lower() not in ("y", "yes"):
                print("not purged", file=out)
                return 2
        removed = api.purge(bus, args.topic, error_type=args.error_type, **reads)
        print(f"purged: {removed}", file=out)
        return 0
