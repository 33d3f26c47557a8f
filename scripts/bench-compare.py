#!/usr/bin/env python3
"""Before/after performance check: every ``python -m msgbus.bench.<broker>`` ratio of an old
tree next to the new one, on the same brokers, runs alternated.

    .venv/bin/python scripts/bench-compare.py [--old 5f9467c] [--rounds 3]
        [--brokers rabbitmq,activemq,kafka] [--messages 20000] [--repeats 1]

Run it with the new tree's interpreter (its venv has the ``all`` extra and the test harness):

1. the old tree is ``git archive``d at ``--old`` into ``--workdir`` (default
   ``~/.cache/msgbus/bench-compare/<ref>``) and installed into a venv of its own there
   (``pip install -e ".[all]"``), once;
2. one broker per kind is started by the new tree's harness (RabbitMQ, ActiveMQ, Apache
   Kafka), so both trees measure the same broker;
3. for each of ``--rounds`` rounds and each broker, both trees run the broker's benchmark
   with ``--url``, the order alternating round by round (old first, then new first, ...),
   from a scratch folder outside both trees (so each imports its own install);
4. the ratio lines each benchmark prints (``msgbus / raw``) are collected; the table gives,
   per ratio, the median over the rounds of the old and of the new tree and the change (each
   run's whole output is kept in ``<workdir>/runs/``, replaced by the next run); a second
   table gives the absolute msg/s of every msgbus and raw row the same way — a ratio's median
   also carries the raw baseline's own spread, the absolute msgbus rows do not.
   ``--tabulate`` prints both tables again from the saved runs without running anything.

The issue's bar: every ratio within 5 % (medians of at least 3 alternated rounds). A loaded
machine makes these figures noisy: give the load average next to them (printed at the end).
Exit status 0 always (the table is for a person to read); standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RATIO = re.compile(r"^\s*(?P<label>\S[^=]*?/[^=]*?)\s*(?:=\s*)?(?P<ratio>\d+\.\d+)(?:\s+\(.*)?$")
"""A ratio line of the benchmarks: ``<label with a '/'> [=] 0.93 [(target ...)...]``."""
RATE = re.compile(r"^\s+(?P<label>(?:msgbus|raw) [^=/]*?)\s+(?P<rate>[\d,]+) msg/s\s*$")
"""A throughput line of the benchmarks: ``  msgbus kombu+amqp publish   7,740 msg/s``."""


def ratios(output: str) -> dict[str, float]:
    """The ratio lines of one benchmark's output, by label (later lines win)."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        match = RATIO.match(line)
        if match:
            found[" ".join(match["label"].split())] = float(match["ratio"])
    return found


def rates(output: str) -> dict[str, float]:
    """The absolute msg/s lines of one benchmark's output (first occurrence), by label."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        match = RATE.match(line)
        if match:
            label = " ".join(match["label"].split())
            found.setdefault(label, float(match["rate"].replace(",", "")))
    return found


def table(title: str, seen: dict[tuple[str, str, str], list[float]], fmt: str) -> None:
    """Print per (broker, label) the old and new medians and the change."""
    print(f"{'broker':<9} {title:<58} {'old':>8} {'new':>8} {'change':>8}")
    for kind, label in sorted({(k, lab) for k, lab, _ in seen}):
        old, new = seen.get((kind, label, "old")), seen.get((kind, label, "new"))
        if not old or not new:
            continue
        before, after = statistics.median(old), statistics.median(new)
        change = (after - before) / before * 100 if before else float("nan")
        flag = "" if abs(change) <= 5 else "  > 5 %"
        print(f"{kind:<9} {label[:58]:<58} {before:{fmt}} {after:{fmt}} {change:+7.1f}%{flag}")


def collect(runs: Path) -> tuple[dict[Any, list[float]], dict[Any, list[float]], int]:
    """Ratios and rates of every saved run in ``runs`` (``<round>-<broker>-<tree>.txt``)."""
    seen: dict[tuple[str, str, str], list[float]] = {}
    absolute: dict[tuple[str, str, str], list[float]] = {}
    rounds = 0
    for path in sorted(runs.glob("*-*-*.txt")):
        round_no, kind, tree = path.stem.split("-", 2)
        rounds = max(rounds, int(round_no))
        output = path.read_text()
        for label, value in ratios(output).items():
            seen.setdefault((kind, label, tree), []).append(value)
        for label, value in rates(output).items():
            absolute.setdefault((kind, label, tree), []).append(value)
    return seen, absolute, rounds


def old_tree(ref: str, workdir: Path) -> Path:
    """The old tree's interpreter: ``ref`` exported and installed into its own venv."""
    tree = workdir / "tree"
    python = workdir / "venv" / "bin" / "python"
    if python.exists():
        return python
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", str(workdir / "venv")], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-e", f"{tree}[all]"],
        check=True,
    )
    return python


@contextlib.contextmanager
def brokers(kinds: list[str]) -> Iterator[dict[str, str]]:
    """Start one harness broker per kind; yield their URLs by kind; stop them after."""
    from msgbus.testing.brokers import ActiveMQ, ApacheKafka, RabbitMQ

    makers: dict[str, Any] = {"rabbitmq": RabbitMQ, "activemq": ActiveMQ, "kafka": ApacheKafka}
    with contextlib.ExitStack() as stack:
        urls = {}
        for kind in kinds:
            broker = stack.enter_context(makers[kind]())
            print(f"started {broker.description} at {broker.url}", flush=True)
            urls[kind] = broker.url
        yield urls


def run_bench(python: Path, kind: str, url: str, args: argparse.Namespace, cwd: str) -> str:
    """One run of ``python -m msgbus.bench.<kind>`` of one tree; its standard output."""
    command = [str(python), "-m", f"msgbus.bench.{kind}", "--url", url]
    command += ["--messages", str(args.messages), "--repeats", str(args.repeats)]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode})")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default="5f9467c", help="git ref of the old tree")
    parser.add_argument("--new-python", default=sys.executable, help="the new tree's python")
    parser.add_argument("--workdir", type=Path, help="where the old tree and its venv go")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--brokers", default="rabbitmq,activemq,kafka")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=1, help="--repeats of each benchmark")
    parser.add_argument(
        "--tabulate", action="store_true", help="only print the tables of the saved runs"
    )
    args = parser.parse_args(argv)
    kinds = [k for k in args.brokers.split(",") if k]
    workdir = args.workdir or Path.home() / ".cache" / "msgbus" / "bench-compare" / args.old
    runs = workdir / "runs"  # each run's full output: <round>-<broker>-<tree>.txt
    if not args.tabulate:
        trees = {"old": old_tree(args.old, workdir), "new": Path(args.new_python)}
        for stale in runs.glob("*.txt"):
            stale.unlink()
        with brokers(kinds) as urls, tempfile.TemporaryDirectory() as scratch:
            for round_no in range(args.rounds):
                order = ["old", "new"] if round_no % 2 == 0 else ["new", "old"]
                for kind in kinds:
                    for tree in order:
                        print(f"round {round_no + 1}/{args.rounds} {kind} {tree}", flush=True)
                        output = run_bench(trees[tree], kind, urls[kind], args, scratch)
                        runs.mkdir(parents=True, exist_ok=True)
                        (runs / f"{round_no + 1}-{kind}-{tree}.txt").write_text(output)
    seen, absolute, rounds = collect(runs)
    print(f"\nold = {args.old}, new = {REPO} (medians of {rounds} alternated rounds)")
    table("ratio", seen, "8.2f")
    print("\nabsolute throughput, same broker (raw rows: each tree's own raw client code)")
    table("msg/s", absolute, "8,.0f")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
