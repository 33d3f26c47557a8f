"""``msgbus broker start KIND``: run one real broker in the foreground until Ctrl-C/SIGTERM.

Also runnable as ``python -m msgbus.testing.brokers start kafka``. ``--nodes N`` runs a
cluster (rabbitmq, kafka = Apache Kafka, activemq). The first line printed is
the broker's URL alone (so scripts can read it), the second its description.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from msgbus.testing.brokers import BROKERS, KAFKA_IMPLS, BrokerHarnessError, broker_class
from msgbus.testing.brokers.base import BrokerProcess
from msgbus.testing.brokers.kafka_dist import apache_kafka_can_run

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "msgbus broker") -> argparse.ArgumentParser:
    """The argument parser of ``msgbus broker``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Run a real broker on 127.0.0.1 for development and demos."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser(
        "start",
        help="start a broker, print its URL, run until Ctrl-C or SIGTERM",
        description=(
            "Start a broker on 127.0.0.1, print its URL (first line) and description, and "
            "run until Ctrl-C or SIGTERM, then stop it cleanly. 'kafka' runs Apache Kafka "
            "(KRaft) when Java 17+ and Maven (or KAFKA_HOME, or jars cached by an earlier run) "
            "are present, else tansu, a Kafka-wire-protocol stand-in; --impl chooses."
        ),
    )
    start.add_argument("kind", choices=sorted(BROKERS), help="which broker")
    start.add_argument("--port", type=int, default=None, help="client port (default: a free one)")
    start.add_argument(
        "--impl",
        choices=("auto", "apache", "tansu"),
        default="auto",
        help="kafka only: Apache Kafka, tansu, or auto (Apache Kafka when it can run here)",
    )
    start.add_argument(
        "--persistent",
        action="store_true",
        help="tansu: s3:// storage on a local S3 server (survives tansu restarts); "
        "redis: append-only file. RabbitMQ, ActiveMQ and Apache Kafka always persist.",
    )
    start.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="run a cluster of this many nodes: rabbitmq (joined; use ?queue_type=quorum), "
        "kafka (Apache Kafka KRaft, replication factor 3, min.insync.replicas 2), activemq "
        "(master/slave on a shared KahaDB). The URL printed lists every node.",
    )
    start.add_argument(
        "--data-dir",
        default=None,
        help="keep state and logs in this folder (default: a temporary folder, deleted at exit)",
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "msgbus broker") -> int:
    """Run ``msgbus broker ...`` with ``argv`` (without the program name, e.g.
    ``["start", "kafka", "--port", "9092"]``; None: ``sys.argv[1:]``); return the exit
    status. ``prog`` is the program name shown in usage messages.

    Blocks until SIGINT or SIGTERM (then stops the broker and returns 0) or until the broker
    exits by itself (returns 1 with its log tail on stderr). Start-up failures (not installed,
    not ready) print the error and return 1; usage errors exit 2 via argparse.
    """
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    options: dict[str, Any] = {"port": args.port, "data_dir": args.data_dir}
    if args.nodes < 1:
        print("msgbus broker: --nodes must be 1 or more", file=sys.stderr)
        return 2
    if args.nodes > 1:
        if args.kind not in ("rabbitmq", "kafka", "activemq"):
            print(f"msgbus broker: no cluster launcher for {args.kind}", file=sys.stderr)
            return 2
        if args.kind == "kafka" and args.impl == "tansu":
            print("msgbus broker: a Kafka cluster runs Apache Kafka, not tansu", file=sys.stderr)
            return 2
        options["nodes"] = args.nodes
        launcher = broker_class(args.kind) if args.kind != "kafka" else KAFKA_IMPLS["apache"]
    else:
        launcher = _launcher(args.kind, args.impl)
    if args.persistent:
        if launcher.product not in ("tansu", "Redis"):
            print(
                f"note: {launcher.product} is always persistent; --persistent ignored",
                file=sys.stderr,
            )
        else:
            options["persistent"] = True

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    broker: Any = launcher(**options)
    try:
        try:
            broker.start()
        except BrokerHarnessError as exc:
            print(f"msgbus broker: {exc}", file=sys.stderr)
            return 1
        if received:
            return 0
        print(broker.url, flush=True)
        print(broker.description, flush=True)
        print(f"data: {broker.data_dir}  (Ctrl-C to stop)", flush=True)
        while not stop.wait(0.5):
            if not broker.is_running():
                print(
                    f"msgbus broker: {broker.product} exited unexpectedly\n{broker.log_tail()}",
                    file=sys.stderr,
                )
                return 1
        return 0
    finally:
        broker.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _launcher(kind: str, impl: str) -> type[BrokerProcess]:
    """The launcher for ``kind``; for kafka the one ``impl`` names (``auto``: Apache Kafka
    when Java 17+ and its jars or ``mvn`` are present, else tansu, saying so on stderr)."""
    if kind != "kafka":
        if impl != "auto":
            print(f"note: --impl is for kafka only; ignored for {kind}", file=sys.stderr)
        return broker_class(kind)
    if impl == "auto":
        reason = apache_kafka_can_run()
        impl = "apache" if reason is None else "tansu"
        if reason is not None:
            print(
                f"note: Apache Kafka cannot run here ({reason}); starting tansu, a "
                "Kafka-wire-protocol stand-in (--impl apache to insist)",
                file=sys.stderr,
            )
    return KAFKA_IMPLS[impl]
