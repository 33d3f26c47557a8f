"""``msgbus chaos``: the bank workload under a fault schedule, checked like a Jepsen queue test.

``msgbus chaos (URL | --cluster KIND | --broker KIND) [--schedule NAME] [--duration S]
[--quick] [--json]`` runs :func:`msgbus.testing.faults.chaos.run_chaos` and prints its table
(or JSON). Exit status 0: every check ran and nothing confirmed was lost; 1: a loss, or a check
that could not run; 2: bad arguments or a broker that could not start.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from msgbus.testing.faults.schedules import SCHEDULES, describe_schedules

__all__ = ["build_parser", "main"]

_EPILOG = """\
schedules (--schedule NAME; a normal run repeats it until --duration, --quick runs it once
with 2 s holds):
{schedules}

profiles: --cluster rabbitmq (3 nodes, quorum queues), --cluster kafka (3 Apache Kafka nodes,
topics with replication_factor=3), --cluster activemq (2 nodes, master/slave on one shared
store); --broker KIND: one node, durable (RabbitMQ quorum queue, ActiveMQ persistent; Kafka
acks=all, no fsync per record). A URL is used as given: process faults only, plus proxy faults
when every host is on 127.0.0.1 (never on Kafka). See docs/reliability.md.
"""


def build_parser(prog: str = "msgbus chaos") -> argparse.ArgumentParser:
    """The argument parser of ``msgbus chaos``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run the bank workload (accounts through the outbox, an email-service group of "
            "processes) while a schedule injects faults; then check every confirmed publish "
            "against every delivery: lost, duplicated, reordered, recovery time per fault."
        ),
        epilog=_EPILOG.format(schedules=describe_schedules()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("url", nargs="?", help="an existing broker's msgbus URL")
    where.add_argument(
        "--cluster", choices=("rabbitmq", "kafka", "activemq"), help="start a cluster"
    )
    where.add_argument(
        "--broker", choices=("rabbitmq", "kafka", "activemq"), help="start one durable node"
    )
    parser.add_argument("--schedule", default="mixed", choices=sorted(SCHEDULES))
    parser.add_argument(
        "--duration", type=float, default=180.0, help="seconds of faults (default 180)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="each fault of the schedule once, short holds"
    )
    parser.add_argument("--rate", type=float, default=50.0, help="accounts per second (50)")
    parser.add_argument("--consumers", type=int, default=3, help="email-service processes (3)")
    parser.add_argument("--workdir", help="keep databases and worker logs here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run ``msgbus chaos`` with ``argv`` (after ``chaos``); return the exit status."""
    from msgbus.testing.brokers import BrokerHarnessError
    from msgbus.testing.faults.chaos import run_chaos
    from msgbus.testing.faults.targets import open_target

    out = stdout or sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.duration <= 0 or args.rate <= 0 or args.consumers < 1:
        print("msgbus chaos: --duration and --rate must be > 0, --consumers >= 1", file=sys.stderr)
        return 2

    try:  # the workers run the bank example: fail here, not as workers that never start
        import msgbus.contrib.bank.email_service  # noqa: F401
    except ImportError as exc:
        print(f'msgbus chaos: {exc}; pip install "msgbus[bank]"', file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        target = open_target(args.url, cluster=args.cluster, broker=args.broker)
    except (BrokerHarnessError, ValueError) as exc:
        print(f"msgbus chaos: {exc}", file=sys.stderr)
        return 2
    try:
        progress(f"target: {target.description} [{target.profile}]")
        result = run_chaos(
            target,
            schedule=args.schedule,
            duration=args.duration,
            quick=args.quick,
            rate=args.rate,
            consumers=args.consumers,
            workdir=args.workdir,
            log=progress,
        )
    finally:
        target.close()
    if args.json:
        print(json.dumps(result.as_dict(), indent=2), file=out)
    else:
        print(result.table(), file=out)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
