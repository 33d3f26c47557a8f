"""Run the bank workload under a fault schedule and check every confirmed publish.

:func:`run_chaos` drives one :class:`~msgbus.testing.faults.targets.ChaosTarget`:

1. the email-service group is made to exist (``ensure_group``), ``consumers`` email-service
   processes start (:mod:`msgbus.testing.faults.workload`) and report ready; then the account
   service process starts creating accounts at ``rate`` per second through its outbox;
2. the schedule's faults are injected one by one (:mod:`msgbus.testing.faults.schedules`),
   each followed by a bounded wait until an account created after its start was delivered;
3. the producer is stopped (it drains its outbox first), the run waits until every confirmed
   publish was delivered (bounded by ``drain_timeout``), and the consumers are stopped;
4. the history — the outbox file (a row with ``sent_at`` was confirmed by the broker), the
   consumers' delivery logs and the faults — goes to :func:`~msgbus.testing.faults.check`.

The result (:class:`ChaosResult`) is never OK when a check could not run: besides the
checker's own rules, an account committed but never published (the outbox did not drain),
a worker that could not start or a fault kind the schedule asked for and the target could
not inject all count as problems (``skipped`` faults are listed; they fail the run only
when nothing of the schedule could run).

Every account is its own key (the bank publishes one event per account, keyed by account
id), so per-key reordering cannot occur in this workload and the check does not expect
order; ``tests/cluster/test_failover.py`` measures per-key order under a node's death.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgbus.testing.faults.checker import History, Report, check
from msgbus.testing.faults.schedules import Schedule, get_schedule
from msgbus.testing.faults.targets import NETWORK_FAULTS, ChaosTarget
from msgbus.testing.faults.workload import read_log

__all__ = ["ChaosResult", "run_chaos"]

GROUP = "email-service"
DELAY_SECONDS = 0.2
"""What a ``delay`` fault adds to every chunk through the proxies."""


@dataclass
class ChaosResult:
    """A chaos run's outcome: the checker's :class:`~msgbus.testing.faults.Report` plus what
    only the bank workload knows. ``ok`` is True only when the report is OK and there is no
    extra problem."""

    target: str
    profile: str
    schedule: str
    quick: bool
    duration: float
    report: Report
    skipped: dict[str, str] = field(default_factory=dict)
    pending: int = 0
    mails: int = 0
    duplicate_mails: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every check ran and nothing confirmed was lost."""
        return self.report.ok and not self.problems

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Per fault kind: ``count``, ``recovery_p50``, ``recovery_max`` (seconds or None)."""
        times: dict[str, list[float | None]] = defaultdict(list)
        for fault, recovery in zip(self.report.faults, self.report.recovery, strict=True):
            times[fault.name.split()[0]].append(recovery)
        out = {}
        for kind, values in times.items():
            known = [v for v in values if v is not None]
            out[kind] = {
                "count": len(values),
                "recovery_p50": round(statistics.median(known), 3) if known else None,
                "recovery_max": round(max(known), 3) if known else None,
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "ok": self.ok,
            "target": self.target,
            "profile": self.profile,
            "schedule": self.schedule,
            "quick": self.quick,
            "seconds": round(self.duration, 1),
            **self.report.as_dict(),
            "by_kind": self.by_kind(),
            "skipped": self.skipped,
            "outbox_pending": self.pending,
            "mails": self.mails,
            "duplicate_mails": self.duplicate_mails,
            "problems": [*self.report.problems, *self.problems],
        }

    def table(self) -> str:
        """The human report: totals, one row per fault kind, problems, the verdict."""

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.2f}s"

        r = self.report
        lines = [
            f"chaos: {self.target} [{self.profile}], schedule {self.schedule}"
            f"{' (quick)' if self.quick else ''}, {self.duration:.0f} s",
            "",
            "| confirmed | lost | duplicated | reordered | unconfirmed | faults | "
            "recovery p50 | recovery max |",
            "|---|---|---|---|---|---|---|---|",
            f"| {r.confirmed} | {len(r.lost)} | {r.duplicated} | {r.reordered} | "
            f"{r.failed + r.unanswered} | {len(r.faults)} | {fmt(r.recovery_p50)} | "
            f"{fmt(r.recovery_max)} |",
            "",
            "| fault | count | recovery p50 | recovery max |",
            "|---|---|---|---|",
        ]
        for kind, row in self.by_kind().items():
            lines.append(
                f"| {kind} | {row['count']} | {fmt(row['recovery_p50'])} | "
                f"{fmt(row['recovery_max'])} |"
            )
        lines.append("")
        lines.append(
            f"published {r.published}, delivered {r.delivered}, mails {self.mails} "
            f"(sent twice: {self.duplicate_mails}), outbox rows never published {self.pending}"
        )
        for kind, reason in self.skipped.items():
            lines.append(f"skipped {kind}: {reason}")
        for problem in [*r.problems, *self.problems]:
            lines.append(f"PROBLEM: {problem}")
        lines.append("result: OK" if self.ok else "result: FAILED")
        return "\n".join(lines)


class _Workers:
    """The producer and consumer processes of one run, in ``workdir``."""

    def __init__(self, target: ChaosTarget, workdir: Path, topic: str, rate: float) -> None:
        self.url = target.client_url
        self.workdir = workdir
        self.topic = topic
        self.rate = rate
        self.db = workdir / "accounts.db"
        self.emails = workdir / "emails.db"
        self.consumers: list[subprocess.Popen[bytes] | None] = []
        self.generation: list[int] = []
        self.producer: subprocess.Popen[bytes] | None = None
        self.producer_starts = 0
        self.logs: list[Path] = []

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{name}.out", "ab")  # noqa: SIM115 (owned by the child)
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "msgbus.testing.faults.workload", *args],
                cwd=self.workdir,
                env={**os.environ, "MSGBUS_URL": self.url},  # not in argv: it may hold a password
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()

    def start_consumer(self, index: int) -> Path:
        """Start (or replace) consumer ``index``; return its log path."""
        while len(self.consumers) <= index:
            self.consumers.append(None)
            self.generation.append(0)
        self.generation[index] += 1
        name = f"c{index}.{self.generation[index]}"
        log = self.workdir / f"{name}.log"
        self.logs.append(log)
        self.consumers[index] = self._spawn(
            [
                "consumer",
                "--topic",
                self.topic,
                "--log",
                str(log),
                "--emails",
                str(self.emails),
                "--name",
                name,
            ],
            name,
        )
        return log

    def start_producer(self) -> None:
        """Start the account service process (its relay publishes what earlier runs left)."""
        self.producer_starts += 1
        self.producer = self._spawn(
            ["producer", "--db", str(self.db), "--topic", self.topic, "--rate", str(self.rate)],
            f"producer.{self.producer_starts}",
        )

    def deliveries(self) -> list[tuple[str, float, str, str]]:
        """Every log line of every consumer so far."""
        return [entry for log in self.logs for entry in read_log(log)]

    def outbox(self) -> list[tuple[str, float, float | None]]:
        """``(key, created_at, sent_at)`` of every outbox row ([] before the file exists)."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            rows = conn.execute("SELECT msg_key, created_at, sent_at FROM outbox").fetchall()
        except sqlite3.OperationalError:  # the producer has not made its schema yet
            return []
        finally:
            conn.close()
        return [(str(k), float(c), s) for k, c, s in rows]

    def crash_row_pending(self) -> bool:
        """True when the newest outbox row is the producer's crash account, still unsent
        (the crash happened between the commit and the publish)."""
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            row = conn.execute(
                "SELECT payload, sent_at FROM outbox ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        finally:
            conn.close()
        return row is not None and "Chaos Crash" in row[0] and row[1] is None

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM every process still running, SIGKILL those not gone after ``timeout``."""
        procs = [p for p in [self.producer, *self.consumers] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(condition: Callable[[], bool], timeout: float, poll: float = 0.2) -> bool:
    """Poll ``condition`` until true (True) or ``timeout`` passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)  # polling files written by other processes; bounded by timeout


class _Injector:
    """Injects one fault kind on a target; each call returns the fault's name."""

    def __init__(
        self,
        target: ChaosTarget,
        workers: _Workers,
        hold: float,
        log: Any,
        problems: list[str],
    ) -> None:
        self.target = target
        self.workers = workers
        self.hold = hold
        self.log = log
        self.turn: Counter[str] = Counter()
        self.problems = problems
        """Where faults that did not happen as intended are reported (they fail the run)."""

    def _next(self, kind: str, size: int) -> int:
        index = self.turn[kind] % size
        self.turn[kind] += 1
        return index

    def _node(self, kind: str) -> int:
        nodes = self.target.nodes
        if hasattr(nodes, "wait_master"):  # ActiveMQ master/slave: the master is the one
            return int(nodes.wait_master())
        return self._next(kind, self.target.size)

    def __call__(self, kind: str) -> str:
        return getattr(self, "_" + kind.replace("-", "_"))()

    def _kill_consumer(self) -> str:
        index = self._next("kill-consumer", len(self.workers.consumers))
        proc = self.workers.consumers[index]
        if proc is not None:
            proc.kill()
            proc.wait()
        self.workers.start_consumer(index)
        return f"kill-consumer c{index}"

    def _kill_producer(self) -> str:
        proc = self.workers.producer
        assert proc is not None
        proc.send_signal(signal.SIGUSR1)  # commit one account, then SIGKILL itself
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        if code != -signal.SIGKILL:
            self.problems.append(f"kill-producer: the producer ended with {code}, not SIGKILL")
        elif not self.workers.crash_row_pending():
            self.problems.append("kill-producer: the last committed account was not pending")
        self.workers.start_producer()
        return "kill-producer after-commit"

    def _kill_node(self) -> str:
        node = self._node("kill-node")
        self.target.nodes.kill(node)
        time.sleep(self.hold)  # the fault's length: the node stays down this long
        self.target.nodes.start()
        return f"kill-node {node}"

    def _pause_node(self) -> str:
        node = self._node("pause-node")
        self.target.nodes.pause(node)
        try:
            time.sleep(self.hold)  # the fault's length: the node answers nothing this long
        finally:
            self.target.nodes.resume(node)
        return f"pause-node {node}"

    def _restart_all(self) -> str:
        self.target.nodes.restart(None)
        return "restart-all"

    def _partition(self) -> str:
        for proxy in self.target.proxies:
            proxy.partition()
        try:
            time.sleep(self.hold)  # the fault's length
        finally:
            for proxy in self.target.proxies:
                proxy.heal()
        return "partition all"

    def _delay(self) -> str:
        for proxy in self.target.proxies:
            proxy.delay(DELAY_SECONDS)
        try:
            time.sleep(self.hold)  # the fault's length
        finally:
            for proxy in self.target.proxies:
                proxy.delay(0)
        return f"delay {DELAY_SECONDS:g}s"

    def _reset(self) -> str:
        count = sum(proxy.reset_all() for proxy in self.target.proxies)
        return f"reset {count}-connections"


def run_chaos(
    target: ChaosTarget,
    *,
    schedule: str | Schedule = "mixed",
    duration: float = 180.0,
    quick: bool = False,
    rate: float = 50.0,
    consumers: int = 3,
    recovery_timeout: float = 120.0,
    drain_timeout: float = 180.0,
    workdir: str | Path | None = None,
    log: Callable[[str], object] = lambda line: None,
) -> ChaosResult:
    """Run the bank workload on ``target`` under ``schedule`` (see the module docstring).

    ``duration``: seconds of faults in a normal run (the schedule repeats until then);
    ``quick``: the schedule once with short holds, ``duration`` ignored. ``rate``: accounts
    per second; ``consumers``: email-service processes. ``log`` receives progress lines.
    ``workdir`` keeps the databases and worker logs (None: a temporary folder, deleted
    unless the run failed). Raises ValueError for an unknown schedule; broker or worker
    trouble is reported in the result, not raised.
    """
    plan = get_schedule(schedule) if isinstance(schedule, str) else schedule
    hold, gap = (plan.quick_hold, plan.quick_gap) if quick else (plan.hold, plan.gap)
    skipped = {k: r for k in plan.faults if (r := target.supports(k)) is not None}
    faults = [k for k in plan.faults if k not in skipped]
    temp = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="msgbus-chaos-")) if workdir is None else Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    topic = f"account.created.chaos{uuid.uuid4().hex[:6]}"
    history = History()
    problems: list[str] = []
    if not faults:
        problems.append(f"schedule {plan.name!r} has no fault this target can inject")
    if any(k in NETWORK_FAULTS for k in faults):
        target.open_proxies()
    workers = _Workers(target, folder, topic, rate)
    started = time.monotonic()

    def note(line: str) -> None:
        log(f"[{time.monotonic() - started:6.1f}s] {line}")

    try:
        _prepare_group(target.client_url, topic)
        ready = [workers.start_consumer(i) for i in range(consumers)]
        if not _wait(lambda: all(Path(f"{p}.ready").exists() for p in ready), 120):
            problems.append("the email-service processes did not get ready within 120 s")
            raise _Abort
        note(f"{consumers} consumers ready; producing {rate:g} accounts/s on {topic}")
        workers.start_producer()
        if not _wait(lambda: bool(workers.deliveries()), 120):
            problems.append("nothing was delivered within 120 s of the producer's start")
            raise _Abort
        inject = _Injector(target, workers, hold, note, problems)
        end = time.monotonic() + duration
        step = 0
        while faults:
            kind = faults[step % len(faults)]
            step += 1
            start_wall = time.time()
            try:
                name = inject(kind)
            except Exception as exc:  # a node that would not come back, say
                problems.append(f"injecting {kind} failed: {type(exc).__name__}: {exc}")
                break
            history.fault(name, start_wall, time.time(), from_end=kind == "restart-all")
            note(f"{name}: injected ({time.time() - start_wall:.1f} s)")
            since = time.time() if kind == "restart-all" else start_wall
            recovered = _wait(
                lambda t=since: _delivered_since(workers, t), recovery_timeout, poll=0.25
            )
            note(f"{name}: {'recovered' if recovered else 'NOT recovered'}")
            time.sleep(gap)  # the schedule's spacing: normal running between faults
            if (quick and step >= len(faults)) or (not quick and time.monotonic() >= end):
                break
        proc = workers.producer
        assert proc is not None
        proc.send_signal(signal.SIGTERM)  # stops creating, drains its outbox
        try:
            code = proc.wait(drain_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0:
            problems.append(f"the producer's final drain ended with exit status {code}")
        note("producer stopped, its outbox drained; waiting for every confirmed delivery")
        if _wait(lambda: _missing(workers) == 0, drain_timeout):
            note("every confirmed account delivered; stopping the consumers")
        else:
            note(f"{_missing(workers)} confirmed account(s) still undelivered after the drain")
        history.finish()  # drained or timed out: what is missing now counts as lost
    except _Abort:
        pass
    except Exception as exc:  # the broker refused the group, say: a failed run, not a crash
        problems.append(f"the run stopped: {type(exc).__name__}: {exc}")
    finally:
        workers.stop_all()
    _fill(history, workers)
    report = check(history, order_expected=False)
    mails = [e[3] for e in workers.deliveries() if e[0] == "mail"]
    pending = sum(1 for _k, _c, sent in workers.outbox() if sent is None)
    if pending:
        problems.append(f"{pending} account(s) committed but never published (outbox)")
    result = ChaosResult(
        target=target.description,
        profile=target.profile,
        schedule=plan.name,
        quick=quick,
        duration=time.monotonic() - started,
        report=report,
        skipped=skipped,
        pending=pending,
        mails=len(mails),
        duplicate_mails=len(mails) - len(set(mails)),
        problems=problems,
    )
    if temp and result.ok:
        shutil.rmtree(folder, ignore_errors=True)
    elif not result.ok:
        note(f"worker logs kept in {folder}")
    return result


class _Abort(Exception):
    """The run cannot go on (a problem is already recorded)."""


def _prepare_group(url: str, topic: str) -> None:
    """Make the email-service group exist before anything is published (a new group starts
    at the end of the topic; on AMQP/STOMP the group queue must exist to keep messages)."""
    import msgbus

    bus = msgbus.connect(url)
    try:
        bus.backend.ensure_group(topic, GROUP)
    finally:
        bus.close(10)


def _delivered_since(workers: _Workers, start: float) -> bool:
    """True once an account created at or after ``start`` has been delivered."""
    created = {key: at for key, at, _sent in workers.outbox() if at >= start}
    return any(e[0] == "delivered" and e[3] in created for e in workers.deliveries())


def _missing(workers: _Workers) -> int:
    """Confirmed outbox rows not delivered yet."""
    seen = {e[3] for e in workers.deliveries() if e[0] == "delivered"}
    return sum(1 for key, _at, sent in workers.outbox() if sent is not None and key not in seen)


def _fill(history: History, workers: _Workers) -> None:
    """Put the outbox rows and the delivery logs into ``history`` (seq 0: one event per
    account key)."""
    for key, at, sent in workers.outbox():
        history.published(key, 0, at=at)
        if sent is not None:
            history.confirmed(key, 0)
    for kind, at, consumer, ident in workers.deliveries():
        if kind == "delivered":
            history.delivered(ident, 0, consumer, at=at)
