"""``msgbus bench``: run the broker comparison and write its report.

::

    msgbus bench run [WORKLOAD...] [--url URL]... [--brokers kafka,rabbitmq,activemq,memory]
                     [--repeats N] [--prime SECONDS] [--quick] [--output DIR] [--plan]
    msgbus bench report RESULTS [--output DIR] [--readme README.md]
    msgbus bench list
    msgbus bench overhead [--brokers memory,rabbitmq] [--messages N] [--rounds R]

``run`` without workloads runs the standard set (``--quick``: the reduced smoke set);
``--plan`` prints what it would run and how long that should take, and runs nothing.
Without ``--url`` and ``--brokers`` it uses every default harness target whose broker is
installed here (Apache Kafka through the confluent driver and through kafka-python, RabbitMQ,
ActiveMQ, ``memory://``, and the three-node clusters for the ``replication`` workload).
It exits 1 if any run lost a message or failed, 130 on Ctrl-C, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
from pathlib import Path
from types import FrameType

from msgbus.bench.targets import (
    DEFAULT_HARNESS,
    HARNESS_KINDS,
    Target,
    harness_target,
    url_target,
)
from msgbus.bench.workloads import (
    WorkloadError,
    load_workload,
    quick,
    standard_set,
)

__all__ = ["available_harness_kinds", "main"]


def available_harness_kinds() -> list[str]:
    """The default harness targets (:data:`~msgbus.bench.targets.DEFAULT_HARNESS`) whose
    broker is installed here, in that order; ``memory`` always."""
    from msgbus.testing.brokers.base import BrokerNotInstalled

    kinds = []
    for kind in DEFAULT_HARNESS:
        try:
            harness_target(kind).check_installed()
        except BrokerNotInstalled:
            continue
        kinds.append(kind)
    return kinds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msgbus bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run workloads against brokers, write raw results")
    run.add_argument("workloads", nargs="*", help="workload files or shipped names")
    run.add_argument("--url", action="append", default=[], help="a broker URL (repeatable)")
    run.add_argument(
        "--brokers",
        help=f"harness brokers to start, comma-separated from: {', '.join(HARNESS_KINDS)}",
    )
    run.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per step for every workload (default: each workload's own, else 3; "
        "1 with --quick)",
    )
    run.add_argument(
        "--prime",
        type=float,
        default=None,
        help="seconds of max-rate load a freshly started Kafka or ActiveMQ gets before its "
        "first measured run (default Kafka 90, ActiveMQ 60; 0 with --quick)",
    )
    run.add_argument("--quick", action="store_true", help="the reduced smoke set, shortened")
    run.add_argument("--output", type=Path, default=None, help="results folder")
    run.add_argument("--report", action="store_true", help="write the report afterwards")
    run.add_argument(
        "--plan",
        action="store_true",
        help="print workloads x targets x repeats x (warm-up + window) and the estimated "
        "total, then exit without running",
    )
    report = sub.add_parser("report", help="write report.md and report.html from results")
    report.add_argument("results", type=Path)
    report.add_argument("--output", type=Path, default=None, help="default: RESULTS")
    report.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="also rewrite the marked broker-comparison summary in this README",
    )
    sub.add_parser("list", help="list the shipped workloads")
    sub.add_parser("overhead", help="cost of tracing/metrics (see: msgbus bench overhead -h)")
    return parser


def _targets(args: argparse.Namespace) -> list[Target]:
    standard = not args.workloads
    targets: list[Target] = []
    names: set[str] = set()
    if args.brokers:
        for kind in (k.strip() for k in args.brokers.split(",")):
            if kind:
                targets.append(harness_target(kind, standard=standard))
                names.add(kind)
    for url in args.url:
        target = url_target(url, names)
        names.add(target.name)
        targets.append(target)
    if not targets:
        targets = [harness_target(k, standard=standard) for k in available_harness_kinds()]
    return targets


def _run(args: argparse.Namespace) -> int:
    from msgbus.bench.runner import Runner

    names = args.workloads or standard_set(args.quick)
    loaded = []
    for name in names:
        steps = load_workload(name)
        loaded.append((steps[0].workload.name, quick(steps) if args.quick else steps))
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else None)
    if repeats is not None and repeats < 1:
        raise WorkloadError("--repeats must be at least 1")
    if args.prime is not None and args.prime < 0:
        raise WorkloadError("--prime must be 0 or more seconds")
    from msgbus.bench.runner import PRIME_SECONDS

    seconds = args.prime if args.prime is not None else (0.0 if args.quick else None)
    prime = None if seconds is None else {k: seconds for k in PRIME_SECONDS if seconds > 0}
    targets = _targets(args)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = args.output or Path(f"bench-results-{stamp}")
    runner = Runner(
        loaded,
        targets,
        output,
        repeats=repeats,
        prime=prime,
        manifest_extra={
            "quick": args.quick,
            "command": " ".join(["msgbus", "bench", *sys.argv[2:]]),
        },
    )
    if args.plan:
        print(runner.plan_text())
        return 0
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: workers and brokers stopped

    signal.signal(signal.SIGTERM, on_term)
    try:
        summary = runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(
        f"{summary.runs} runs written to {output}; failed {len(summary.failed_runs)}, "
        f"with losses {len(summary.lossy_runs)}, skipped {len(summary.skipped)}",
        file=sys.stderr,
    )
    for line in summary.failed_runs + summary.lossy_runs:
        print(f"  {line}", file=sys.stderr)
    if args.report and summary.runs:
        from msgbus.bench.report import write_report

        write_report(output, output)
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``msgbus bench``; returns the exit status (see the module docstring)."""
    if argv and argv[0] == "overhead":
        from msgbus.bench.overhead import main as overhead_main

        return overhead_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            from msgbus.bench.workloads import SHIPPED

            for path in sorted(SHIPPED.glob("*.toml")):
                steps = load_workload(path)
                print(f"{path.stem:14} {len(steps)} step(s)  {steps[0].workload.description}")
            return 0
        if args.command == "report":
            from msgbus.bench.report import write_report

            paths = write_report(args.results, args.output or args.results)
            if args.readme is not None:
                from msgbus.bench.readme import rewrite, summary

                rewrite(args.readme, summary(args.results))
                paths.append(args.readme)
            for path in paths:
                print(path)
            return 0
        return _run(args)
    except (WorkloadError, ValueError, FileNotFoundError) as exc:
        print(f"msgbus bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
