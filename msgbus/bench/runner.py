"""Runs workloads against targets and writes raw results (JSON + ``.hlog``) to a folder.

:func:`run_once` runs one step of one workload on one target with one client (msgbus or raw)
once: consumer processes first (each a consumer-group member, ready before anything is
sent), then producer processes, then the measured window (for a workload with ``kill_at``,
the cluster node serving the clients is killed in it and started again after the run), then
the drain, then the accounting, the CPU of broker, clients and the whole box, and the
warm-up curve. Workers are separate processes from the ``spawn`` context, except on
``memory://`` where the broker lives in one process and they are threads.

:class:`Runner` interleaves the targets' runs (:func:`interleave`: workload by workload, step
by step, every target once per repeat), starts each harness broker when its first run comes
(a target that shares another's broker attaches to it), puts a priming load on a freshly
started JVM broker, stops each broker after its last run, prints progress with an ETA on
stderr, and on Ctrl-C stops cleanly: the current run's workers are stopped, the brokers are
closed, and every finished result stays on disk. Results layout::

    RESULTS/manifest.json
    RESULTS/runs/<workload>/<step>-<target>-<client>-r<repeat>.json   (+ .hlog)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os
import queue
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from msgbus.bench import metrics
from msgbus.bench.accounting import merge_counts, tally
from msgbus.bench.targets import Target
from msgbus.bench.warmup import rate_curve, settled_at
from msgbus.bench.worker import (
    ConsumerSpec,
    Control,
    ProducerSpec,
    consumer_main,
    producer_main,
)
from msgbus.bench.workloads import Step, Workload

__all__ = ["RunError", "RunOutcome", "Runner", "run_once"]

READY_TIMEOUT = 120.0
SAMPLE_EVERY = 0.1
SPAWN_ESTIMATE = 1.2
"""Seconds each worker process beyond the first producer and consumer adds to a run."""
SETUP_ESTIMATE = {"kafka": 6.0, "rabbitmq": 2.5, "activemq": 2.5, "memory": 0.3, "kombu": 3.0}


class RunError(RuntimeError):
    """A run could not be carried out (a worker failed or hung); the message says which."""


class _Cell:
    """Thread-mode stand-in for ``multiprocessing.Value``."""

    def __init__(self, value: int = 0) -> None:
        self.value = value


@dataclass
class _Pool:
    """The workers of one run and the control objects they share."""

    in_process: bool
    ctx: Any
    go: Any
    fast: Any
    stop: Any
    t0: Any
    results: Any
    workers: list[Any] = field(default_factory=list)
    producer_counters: list[Any] = field(default_factory=list)
    consumer_counters: list[Any] = field(default_factory=list)

    @classmethod
    def create(cls, in_process: bool) -> _Pool:
        if in_process:
            return cls(
                True,
                None,
                threading.Event(),
                threading.Event(),
                threading.Event(),
                _Cell(),
                queue.Queue(),
            )
        ctx = multiprocessing.get_context("spawn")
        return cls(
            False,
            ctx,
            ctx.Event(),
            ctx.Event(),
            ctx.Event(),
            ctx.Value("q", 0, lock=False),
            ctx.Queue(),
        )

    def _counter(self) -> Any:
        return _Cell() if self.in_process else self.ctx.Value("q", 0, lock=False)

    def spawn(self, role: str, target: Callable[..., None], spec: Any) -> None:
        counter = self._counter()
        (self.producer_counters if role == "producer" else self.consumer_counters).append(counter)
        ctl = Control(self.go, self.fast, self.stop, self.t0, self.results, counter)
        name = f"bench-{role}-{spec.index}"
        if self.in_process:
            worker = threading.Thread(target=target, args=(spec, ctl), name=name, daemon=True)
        else:
            worker = self.ctx.Process(target=target, args=(spec, ctl), name=name, daemon=True)
        worker.start()
        self.workers.append(worker)

    def pids(self) -> list[int]:
        if self.in_process:
            return [os.getpid()]
        return [w.pid for w in self.workers if w.pid is not None]

    def dead_worker(self) -> str | None:
        if self.in_process:
            return None
        for w in self.workers:
            if w.exitcode is not None and w.exitcode != 0:
                return f"{w.name} exited with status {w.exitcode}"
        return None

    def shutdown(self) -> None:
        self.stop.set()
        self.go.set()
        deadline = time.monotonic() + 20
        for w in self.workers:
            w.join(max(0.1, deadline - time.monotonic()))
        if not self.in_process:
            for w in self.workers:
                if w.is_alive():
                    w.terminate()
                    w.join(5)
                if w.is_alive():
                    w.kill()
                    w.join(5)
            with contextlib.suppress(Exception):
                self.results.close()
                self.results.join_thread()


@dataclass
class _Collected:
    ready: dict[str, int] = field(default_factory=lambda: {"producer": 0, "consumer": 0})
    producers: dict[int, dict[str, Any]] = field(default_factory=dict)
    consumers: dict[int, dict[str, Any]] = field(default_factory=dict)


def _pump(pool: _Pool, got: _Collected, timeout: float) -> None:
    """Take every waiting message off the results queue (waiting up to ``timeout`` for one)."""
    wait = timeout
    while True:
        try:
            item = pool.results.get(timeout=wait) if wait > 0 else pool.results.get_nowait()
        except queue.Empty:
            return
        wait = 0
        kind, role, index = item[0], item[1], item[2]
        if kind == "ready":
            got.ready[role] += 1
        elif kind == "result":
            (got.producers if role == "producer" else got.consumers)[index] = item[3]
        else:
            raise RunError(f"{role} {index} failed:\n{item[3]}")


def _wait_until(
    pool: _Pool, got: _Collected, done: Callable[[], bool], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        dead = pool.dead_worker()
        if dead:
            _pump(pool, got, 0.5)  # its error report, if any
            raise RunError(f"{dead} while waiting for {what}")
        if time.monotonic() > deadline:
            raise RunError(f"timed out after {timeout:.0f} s waiting for {what}")
        _pump(pool, got, 0.1)


@dataclass
class RunOutcome:
    """One finished run: its result dict (as written) and where it was written."""

    result: dict[str, Any]
    path: Path | None


def _drain_figures(
    samples: list[tuple[float, int, int]], pause: float, rate: float
) -> dict[str, float]:
    """Backlog peak, seconds to drain after the pause, consume rate while draining."""
    if not samples:
        return {"peak": 0, "drain_seconds": 0.0, "drain_rate": 0.0}
    peak = max(s - r for _, s, r in samples)
    out: dict[str, float] = {"peak": float(peak), "drain_seconds": 0.0, "drain_rate": 0.0}
    if pause <= 0:
        return out
    threshold = max(50.0, rate * 0.05)
    release = next((x for x in samples if x[0] >= pause), None)
    if release is None:
        return out
    drained = next((x for x in samples if x[0] > release[0] and x[1] - x[2] <= threshold), None)
    if drained is None:
        out["drain_seconds"] = float("nan")
        return out
    seconds = drained[0] - release[0]
    out["drain_seconds"] = seconds
    out["drain_rate"] = (drained[2] - release[2]) / seconds if seconds > 0 else 0.0
    return out


def run_once(
    target: Target,
    workload_name: str,
    step: Step,
    client: str,
    *,
    on_tick: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``step`` of ``workload_name`` on ``target`` with ``client`` once; return the
    result dict (see ``docs/benchmark.md`` for its fields). Raises :class:`RunError` when a
    worker fails or hangs, ValueError when the target lacks the step's durability profile."""
    w: Workload = step.workload
    options = target.options(w.durability, w.partitions)
    if options is None:
        raise ValueError(f"{target.name} has no durability profile {w.durability}")
    if target.url is None:
        raise ValueError(f"{target.name} is not started")
    tag = uuid.uuid4().hex[:8]
    url = f"memory://bench-{tag}" if target.in_process else target.url
    topics = tuple(f"bench-{workload_name}-{tag}-{i}" for i in range(w.topics))
    groups = [f"g{j}-{tag}" for j in range(w.consumer_groups)]
    data = w.to_dict()
    if target.kind == "kafka" or client == "raw":
        from msgbus.bench import raw

        raw.prepare(target.kind, url, options, topics)

    pool = _Pool.create(target.in_process)
    got = _Collected()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        n = 0
        for group in groups:
            for _ in range(w.consumers_per_group):
                spec = ConsumerSpec(
                    client,
                    target.kind,
                    url,
                    options,
                    topics,
                    group,
                    n,
                    data,
                    target.in_process,
                    target.driver,
                )
                pool.spawn("consumer", consumer_main, spec)
                n += 1
        _wait_until(
            pool, got, lambda: got.ready["consumer"] == n, READY_TIMEOUT, "consumers to be ready"
        )
        for p in range(w.producers):
            spec = ProducerSpec(
                client, target.kind, url, options, topics, p, data, target.in_process, target.driver
            )
            pool.spawn("producer", producer_main, spec)
        _wait_until(
            pool,
            got,
            lambda: got.ready["producer"] == w.producers,
            READY_TIMEOUT,
            "producers to be ready",
        )
        group_of = [j for j in range(w.consumer_groups) for _ in range(w.consumers_per_group)]
        measured = _measure(pool, got, target, w, group_of, on_tick)
    finally:
        pool.shutdown()
        if w.kill_at > 0:
            target.heal()  # the killed node rejoins (as the standby) for the next run
    return _result(
        target, workload_name, step, client, options, started_at, w, got, groups, group_of, measured
    )


def _received_per_group(pool: _Pool, group_of: list[int], groups: int) -> list[int]:
    out = [0] * groups
    for counter, g in zip(pool.consumer_counters, group_of, strict=True):
        out[g] += int(counter.value)
    return out


def _measure(
    pool: _Pool,
    got: _Collected,
    target: Target,
    w: Workload,
    group_of: list[int],
    on_tick: Callable[[str], None] | None,
) -> dict[str, Any]:
    t0 = time.monotonic_ns() + 300_000_000
    pool.t0.value = t0
    pool.go.set()
    start = t0 + int(w.warmup * 1e9)
    end = start + int(w.duration * 1e9)
    samples: list[tuple[float, int, int]] = []
    broker_cpu: list[metrics.ProcessSample] = []
    client_cpu: list[metrics.ProcessSample] = []
    peak = {"broker": 0, "clients": 0}
    last_rss = 0.0
    last_tick = 0.0

    def sample(now: int) -> None:
        nonlocal last_rss, last_tick
        sent = sum(int(c.value) for c in pool.producer_counters)
        received = _received_per_group(pool, group_of, w.consumer_groups)
        samples.append(((now - start) / 1e9, sent, min(received)))
        wall = time.monotonic()
        if wall - last_rss >= 0.5:
            last_rss = wall
            b = metrics.sample_processes(target.pids())
            c = metrics.sample_processes(pool.pids())
            peak["broker"] = max(peak["broker"], b.rss_bytes)
            peak["clients"] = max(peak["clients"], c.rss_bytes)
        if on_tick is not None and wall - last_tick >= 1.0:
            last_tick = wall
            t = (now - start) / 1e9
            phase = "warm-up" if t < 0 else "window" if now < end else "drain"
            on_tick(f"{phase} {t:+.0f}s sent {sent:,} received {min(received):,}")

    box_cpu: list[float | None] = []
    marked: list[float] = []

    def cpu_mark() -> None:
        # the box's reading and its time first, together: listing a cluster's processes
        # can take a while on a busy machine
        box_cpu.append(metrics.box_busy_seconds())
        marked.append(time.monotonic())
        broker_cpu.append(metrics.sample_processes(target.pids()))
        client_cpu.append(metrics.sample_processes(pool.pids()))

    hard_deadline = end + int((w.drain_timeout + 60) * 1e9)
    kill_at = start + int(w.kill_at * 1e9) if w.kill_at > 0 else None
    fault: dict[str, Any] | None = None
    while len(got.producers) < w.producers:
        _pump(pool, got, SAMPLE_EVERY)
        now = time.monotonic_ns()
        if kill_at is not None and fault is None and now >= kill_at:
            fault = {"at_s": (now - start) / 1e9, "node": None}
            fault["node"] = target.kill_serving_node()
        if len(broker_cpu) == 0 and now >= start:
            cpu_mark()
        if len(broker_cpu) == 1 and now >= end:
            cpu_mark()
        sample(now)
        dead = pool.dead_worker()
        if dead:
            raise RunError(dead)
        if now > hard_deadline:
            raise RunError("producers did not finish in time")
    if len(broker_cpu) < 2:
        while len(broker_cpu) < 2:
            cpu_mark()
    pool.fast.set()
    failed = sum(len(p["failed"]) for p in got.producers.values())
    expected = sum(p["sent"] for p in got.producers.values()) - failed
    deadline = time.monotonic() + w.drain_timeout
    while time.monotonic() < deadline:
        received = _received_per_group(pool, group_of, w.consumer_groups)
        sample(time.monotonic_ns())
        if min(received) >= expected:
            time.sleep(0.3)  # late duplicates, if any, still count
            break
        _pump(pool, got, SAMPLE_EVERY)
    sample(time.monotonic_ns())
    pool.stop.set()
    consumers = len(group_of)
    _wait_until(pool, got, lambda: len(got.consumers) == consumers, 60, "consumer reports")
    window = (end - start) / 1e9
    # CPU over the time between the two marks (each taken at the first sample after the
    # window's edge), not over the nominal window: a short window would otherwise be off
    # by up to a sampling interval
    cpu_span = max(1e-3, marked[1] - marked[0]) if len(marked) >= 2 else window
    box = (
        (box_cpu[1] - box_cpu[0]) / cpu_span
        if len(box_cpu) >= 2 and box_cpu[0] is not None and box_cpu[1] is not None
        else None
    )
    return {
        "samples": samples,
        "window": window,
        "box_cpu": box,
        "fault": fault,
        "warmup_curve": rate_curve(samples, -w.warmup, 0.0),
        "broker_cpu": broker_cpu[1].cpu_since(broker_cpu[0]) / cpu_span,
        "clients_cpu": client_cpu[1].cpu_since(client_cpu[0]) / cpu_span,
        "broker_rss": peak["broker"],
        "clients_rss": peak["clients"],
        "broker_processes": broker_cpu[0].processes,
    }


def _availability(
    samples: list[tuple[float, int, int]], fault: dict[str, Any] | None
) -> dict[str, Any] | None:
    """For a run with a killed node: when and which node, and the outage, the longest time
    after the kill in which no group received anything new (sampled every 100 ms)."""
    if fault is None:
        return None
    after = [(t, r) for t, _, r in samples if t >= fault["at_s"] - SAMPLE_EVERY]
    outage = 0.0
    if after:
        last_t, last_r = after[0]
        for t, r in after[1:]:
            if r > last_r:
                outage = max(outage, t - last_t)
                last_t, last_r = t, r
        if after[-1][1] <= after[0][1]:
            outage = float("nan")  # nothing arrived after the kill at all
    return {"killed_at_s": round(fault["at_s"], 3), "node": fault["node"], "outage_s": outage}


def _downsample(samples: list[tuple[float, int, int]], limit: int = 400) -> list[list[float]]:
    step = max(1, len(samples) // limit)
    return [[round(t, 3), s, r] for t, s, r in samples[::step]]


def _result(
    target: Target,
    workload_name: str,
    step: Step,
    client: str,
    options: dict[str, Any],
    started_at: str,
    w: Workload,
    got: _Collected,
    groups: list[str],
    group_of: list[int],
    m: dict[str, Any],
) -> dict[str, Any]:
    producers = got.producers
    sent = {i: p["sent"] for i, p in producers.items()}
    failed = {i: p["failed"] for i, p in producers.items()}
    group_rows = []
    for g, name in enumerate(groups):
        members = [got.consumers[i] for i, gg in enumerate(group_of) if gg == g]
        merged = merge_counts(c["counts"] for c in members)
        t = tally(merged, sent, failed)
        group_rows.append(
            {
                "group": name,
                "expected": t.expected,
                "received": t.received,
                "lost": t.lost,
                "duplicated": t.duplicated,
                "unexpected": t.unexpected,
                "out_of_order": sum(c["out_of_order"] for c in members),
                "deliveries": sum(c["deliveries"] for c in members),
                "received_in_window": sum(c["received_in_window"] for c in members),
            }
        )
    window = m["window"]
    latency = metrics.merge(c["latency"] for c in got.consumers.values())
    delay = metrics.merge(p["publish_delay"] for p in producers.values())
    ack = metrics.merge(p["publish_latency"] for p in producers.values())
    publish_rate = sum(p["sent_in_window"] for p in producers.values()) / window
    consume_rate = sum(r["received_in_window"] for r in group_rows) / window / len(groups)
    samples = m["samples"]
    at_end = [s - r for t, s, r in samples if t <= window]
    backlog_at_end = at_end[-1] if at_end else 0
    rate = w.producer_rate
    kept_up = rate <= 0 or (
        publish_rate >= 0.95 * rate
        and consume_rate >= 0.95 * rate
        and backlog_at_end <= rate * 1.0 + 100
    )
    delivered = sum(r["received"] for r in group_rows)
    delivered_rate = sum(r["received_in_window"] for r in group_rows) / window
    box = m["box_cpu"]
    broker_cores = m["broker_cpu"] if target.pids() or m["broker_processes"] else None
    return {
        "schema": 1,
        "workload": workload_name,
        "kind": w.kind,
        "step": step.index,
        "step_label": step.label,
        "target": target.name,
        "broker_kind": target.kind,
        "client": client,
        "driver": target.driver,
        "profile": target.profile,
        "nodes": target.nodes,
        "on_tansu": target.on_tansu,
        "started_at": started_at,
        "settings": w.to_dict(),
        "options": options,
        "durability_note": target.durability_note(w.durability),
        "sent": sum(sent.values()),
        "failed": sum(len(f) for f in failed.values()),
        "publish_errors": [e for p in producers.values() for e in p["errors"]][:10],
        "publish_rate": publish_rate,
        "consume_rate": consume_rate,
        "target_rate": rate,
        "kept_up": kept_up,
        # closed loop (max rate) or fallen behind: latency is mostly time spent queued in the
        # backlog, not the broker's end-to-end latency; the report labels it so
        "latency_includes_backlog": rate <= 0 or not kept_up,
        "groups": group_rows,
        "lost": sum(r["lost"] for r in group_rows),
        "duplicated": sum(r["duplicated"] for r in group_rows),
        "out_of_order": sum(r["out_of_order"] for r in group_rows),
        "unexpected": sum(r["unexpected"] for r in group_rows),
        "latency": metrics.summarize(latency),
        "publish_delay": metrics.summarize(delay),
        "publish_latency": metrics.summarize(ack),
        "histograms": {
            "latency": metrics.encode(latency),
            "publish_delay": metrics.encode(delay),
            "publish_latency": metrics.encode(ack),
        },
        "backlog": {
            "series": _downsample(samples),
            "at_window_end": backlog_at_end,
            **_drain_figures(samples, w.backlog_pause, rate),
        },
        "warmup_curve": m["warmup_curve"],
        "availability": _availability(samples, m["fault"]),
        "resources": {
            "broker_cpu_cores": broker_cores,
            "broker_rss_mib": m["broker_rss"] / 2**20 if m["broker_rss"] else None,
            "clients_cpu_cores": m["clients_cpu"],
            "clients_rss_mib": m["clients_rss"] / 2**20,
            "broker_cpu_us_per_msg": (
                m["broker_cpu"] * 1e6 / (publish_rate or 1) if m["broker_processes"] else None
            ),
            "clients_cpu_us_per_msg": (
                m["clients_cpu"] * 1e6 / delivered_rate if delivered_rate > 0 else None
            ),
            "box_cpu_cores": box,
            "box_cpus": os.cpu_count(),
            "other_cpu_cores": (
                max(0.0, box - (broker_cores or 0.0) - m["clients_cpu"])
                if box is not None and broker_cores is not None
                else None
            ),
            "delivered": delivered,
        },
    }


def write_hlog(path: Path, result: dict[str, Any]) -> None:
    """Write the run's histograms as an HdrHistogram log (tags ``latency``, ``publish_delay``,
    ``publish_latency``; values in µs, max column in ms)."""
    lines = [
        "#[Histogram log format version 1.3]",
        f"#[msgbus bench: {result['workload']} step {result['step']} {result['target']} "
        f"{result['client']} repeat {result['repeat']}; values in microseconds]",
        '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"',
    ]
    window = result["settings"]["duration"]
    for tag, text in result["histograms"].items():
        peak = result[tag]["max"]
        lines.append(f"Tag={tag},0.000,{window:.3f},{peak:.3f},{text}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class _Planned:
    target: Target
    workload: str
    step: Step
    client: str
    repeat: int
    repeats: int = 1

    def estimate(self) -> float:
        w = self.step.workload
        setup = SETUP_ESTIMATE.get(self.target.kind, 3.0) * (1.5 if self.target.nodes > 1 else 1)
        # spawning a worker process takes about 1.2 s on the 2-core box (measured)
        setup += SPAWN_ESTIMATE * max(0, w.producers + w.consumers - 2)
        drain = 2.0 if w.producer_rate <= 0 else 1.0
        heal = START_ESTIMATE.get(self.target.kind, 10.0) if w.kill_at > 0 else 0.0
        return setup + 0.3 + w.warmup + w.duration + w.backlog_pause * 0.5 + drain + heal


@dataclass
class Summary:
    """What a :meth:`Runner.run` did: counts, runs with losses, errors, interruption."""

    runs: int = 0
    failed_runs: list[str] = field(default_factory=list)
    lossy_runs: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing was lost, no run failed and the run was not interrupted."""
        return not self.failed_runs and not self.lossy_runs and not self.interrupted


DEFAULT_REPEATS = 3
"""Runs per step when neither the command line nor the workload says."""

START_ESTIMATE = {"kafka": 15.0, "rabbitmq": 8.0, "activemq": 10.0, "memory": 0.0, "kombu": 0.0}
"""Seconds a harness broker takes to start (one node; a cluster about twice as long)."""

PRIME_SECONDS = {"kafka": 90.0, "activemq": 60.0}
"""Seconds of max-rate load a freshly started JVM broker gets before its first measured
run (``--prime``; see :func:`priming_step` and docs/benchmark.md, "Warm-up")."""


def priming_step(seconds: float) -> Step:
    """The throw-away load that warms a freshly started broker up: one producer at max rate
    (5,000 unconfirmed), one consumer, ``seconds`` of warm-up whose delivered rate is kept
    as the priming curve, then a 1 s window."""
    w = Workload(
        name="priming",
        kind="max-rate",
        description="JVM warm-up load after the broker started (not a result)",
        producer_rate=0,
        max_in_flight=5000,
        warmup=seconds,
        duration=1.0,
        drain_timeout=30.0,
    )
    return Step(0, "priming", w)


class Runner:
    """Runs ``workloads`` (name → steps) on ``targets`` into ``output``.

    ``repeats``: runs per step for every workload (None: each workload's own ``repeats``,
    else :data:`DEFAULT_REPEATS`). ``prime``: seconds of priming load per broker kind,
    run once after a harness broker starts (None: :data:`PRIME_SECONDS`; ``{}``: none).
    Harness brokers start when their first run comes and stop after their last one, so a
    three-node cluster is up only for the workload that uses it. Not thread-safe; one
    :meth:`run` per instance.
    """

    def __init__(
        self,
        workloads: Sequence[tuple[str, list[Step]]],
        targets: Sequence[Target],
        output: Path,
        *,
        repeats: int | None = None,
        stream: TextIO | None = None,
        manifest_extra: dict[str, Any] | None = None,
        prime: dict[str, float] | None = None,
    ) -> None:
        self.workloads = list(workloads)
        self.targets = list(targets)
        self.output = Path(output)
        self.repeats = repeats
        self.stream = stream if stream is not None else sys.stderr
        self.manifest_extra = manifest_extra or {}
        self.prime = dict(PRIME_SECONDS if prime is None else prime)
        self.summary = Summary()
        self._unusable: dict[str, dict[str, str]] = {}
        self._failed_open: dict[str, str] = {}

    def repeats_for(self, w: Workload) -> int:
        """Runs per step of ``w``: the command line's ``repeats``, else the workload's, else
        :data:`DEFAULT_REPEATS`."""
        return self.repeats or w.repeats or DEFAULT_REPEATS

    def _plan(self, target: Target) -> list[_Planned]:
        plan = []
        for name, steps in self.workloads:
            if not target.runs_workload(name):
                continue
            for step in steps:
                w = step.workload
                if w.kinds and target.kind not in w.kinds:
                    continue
                if w.profiles and target.profile not in w.profiles:
                    continue
                if target.options(w.durability, 1) is None:
                    continue
                repeats = self.repeats_for(w)
                for client in w.clients:
                    if client == "raw" and not target.has_raw_client:
                        continue
                    for r in range(repeats):
                        plan.append(_Planned(target, name, step, client, r, repeats))
        return plan

    def _owner(self, target: Target) -> Target:
        """The target whose broker ``target`` runs on (itself unless it shares one)."""
        if target.shares and target.harness:
            for other in self.targets:
                if other.name == target.shares and other.harness and other is not target:
                    return other
        return target

    def _prime_seconds(self, target: Target) -> float:
        """Seconds of priming load ``target`` gets after its start (failover pairs none:
        they measure an outage, not a rate)."""
        if not target.harness or target.kind == "memory" or target.profile == "failover":
            return 0.0
        return self.prime.get(target.kind, 0.0)

    def _start_seconds(self, target: Target) -> float:
        if not target.harness or target.kind == "memory":
            return 0.0
        start = START_ESTIMATE.get(target.kind, 10.0) * (2.5 if target.nodes > 1 else 1.0)
        prime = self._prime_seconds(target)
        return start + (prime + 10.0 if prime else 0.0)

    def _brokers_started(self, plans: dict[str, list[_Planned]]) -> list[Target]:
        owners: dict[str, Target] = {}
        for target in self.targets:
            if plans.get(target.name):
                owner = self._owner(target)
                owners.setdefault(owner.name, owner)
        return list(owners.values())

    def estimate_seconds(self) -> float:
        """The plan's estimated duration: every run's set-up + warm-up + window + drain, plus
        the broker starts and their priming load."""
        plans = {t.name: self._plan(t) for t in self.targets}
        runs = sum(p.estimate() for plan in plans.values() for p in plan)
        return runs + sum(self._start_seconds(t) for t in self._brokers_started(plans))

    def plan_text(self) -> str:
        """The plan, without running it: per target and workload the steps, clients,
        repeats, runs and each run's warm-up + window, the time that takes (set-up + warm-up
        + window + drain per run), then the broker starts with their priming load and the
        estimated total. What ``msgbus bench run --plan`` prints."""
        lines = [
            "| target | workload | steps | clients | repeats | runs | warm-up + window "
            "| estimated |",
            "|---|---|---:|---|---:|---:|---|---:|",
        ]
        total = 0.0
        runs = 0
        plans = {t.name: self._plan(t) for t in self.targets}
        for target in self.targets:
            plan = plans[target.name]
            for name, _steps in self.workloads:
                mine = [p for p in plan if p.workload == name]
                if not mine:
                    continue
                seconds = sum(p.estimate() for p in mine)
                total += seconds
                runs += len(mine)
                steps = len({p.step.index for p in mine})
                clients = ", ".join(dict.fromkeys(p.client for p in mine))
                repeats = "/".join(str(r) for r in sorted({p.repeats for p in mine}))
                windows = sorted({(p.step.workload.warmup, p.step.workload.duration) for p in mine})
                window = ", ".join(f"{w:g} + {d:g} s" for w, d in windows)
                lines.append(
                    f"| {target.name} | {name} | {steps} | {clients} | {repeats} "
                    f"| {len(mine)} | {window} | {_fmt_seconds(seconds)} |"
                )
        starts = self._brokers_started(plans)
        start_total = sum(self._start_seconds(t) for t in starts)
        if start_total:
            primed = [
                f"{t.name} {self._prime_seconds(t):g} s" for t in starts if self._prime_seconds(t)
            ]
            lines.append(
                f"| (broker starts) | {len(starts)} start(s)"
                + (f", priming {', '.join(primed)}" if primed else "")
                + f" | | | | | | {_fmt_seconds(start_total)} |"
            )
        total += start_total
        lines.append(f"\n{runs} runs, estimated {_fmt_seconds(total)} in all")
        return "\n".join(lines)

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run(self) -> Summary:
        """Run everything; return the :class:`Summary`. Ctrl-C stops cleanly (summary
        ``interrupted``); finished results stay written."""
        from msgbus.bench.environment import manifest
        from msgbus.bench.provenance import (
            HOST_SPEED_UNIT,
            host_speed,
            load_average,
            source_state,
        )

        self.output.mkdir(parents=True, exist_ok=True)
        plans = {t.name: self._plan(t) for t in self.targets}
        total = sum(len(p) for p in plans.values())
        remaining_estimate = sum(p.estimate() for ps in plans.values() for p in ps)
        remaining_estimate += sum(self._start_seconds(t) for t in self._brokers_started(plans))
        ratio = 1.0
        done = 0
        started = time.monotonic()
        invocation: dict[str, Any] = {
            "command": self.manifest_extra.get("command"),
            "source": source_state(),
            "started_at": _now(),
            "load_before": load_average(),
            "host_speed_before": host_speed(rounds=15),
        }
        info: dict[str, Any] = {"targets": {}, "started_at": _now(), **self.manifest_extra}
        info["source"] = invocation["source"]
        info["invocations"] = [invocation]
        previous = self._previous_manifest()
        if previous:
            # Appending to an earlier results folder: keep what it recorded.
            info["targets"] = dict(previous.get("targets", {}))
            info["started_at"] = previous.get("started_at", info["started_at"])
            earlier = previous.get("commands") or [previous.get("command")]
            info["commands"] = [c for c in earlier if c] + [self.manifest_extra.get("command")]
            info["invocations"] = [*previous.get("invocations", []), invocation]
            prior = previous.get("summary", {})
            self._prior_summary = prior
            self._prior_workloads = previous.get("workloads", [])
            self._prior_repeats = previous.get("repeats_per_workload") or {}
            self._prior_kafka_note = previous.get("kafka_note")
        self._info = info
        self._manifest = manifest
        self._say(
            f"msgbus bench: {total} runs on {len(self.targets)} target(s); host speed "
            f"{invocation['host_speed_before']} {HOST_SPEED_UNIT} (compare it with a quiet run's)"
        )
        order = interleave(
            [plans[t.name] for t in self.targets], [name for name, _ in self.workloads]
        )
        last_use: dict[str, int] = {}
        for i, p in enumerate(order):
            last_use[self._owner(p.target).name] = i
        opened: list[Target] = []
        try:
            self._write_manifest(info, manifest)
            behind: set[tuple[str, str, str]] = set()
            step_results: dict[tuple[str, str, int, str], list[bool]] = {}
            for i, p in enumerate(order):
                target = p.target
                remaining_estimate -= p.estimate()
                done += 1
                key = (target.name, p.workload, p.client)
                w = p.step.workload
                label = (
                    f"{target.name}/{p.client} {p.workload} [{p.step.label}] "
                    f"rep {p.repeat + 1}/{p.repeats}"
                )
                if not self._ensure_open(target, opened):
                    reason = self._failed_open[target.name]
                    if p.repeat == 0:
                        self.summary.skipped.append(f"{label}: not started: {reason}")
                    self._close_after(i, last_use, opened)
                    continue
                problem = self._unusable.get(target.name, {}).get(p.client)
                if problem:
                    if p.repeat == 0:
                        self.summary.skipped.append(f"{label}: {problem}")
                    self._close_after(i, last_use, opened)
                    continue
                if key in behind:
                    self.summary.skipped.append(f"{label}: an earlier step fell behind")
                    self._close_after(i, last_use, opened)
                    continue
                eta = remaining_estimate * ratio
                prefix = f"[{done}/{total}] {label}"
                self._say(f"{prefix} (ETA {_fmt_seconds(eta)})")
                t_run = time.monotonic()
                self._one(p, prefix)
                ratio = 0.7 * ratio + 0.3 * ((time.monotonic() - t_run) / p.estimate())
                sk = (target.name, p.workload, p.step.index, p.client)
                step_results.setdefault(sk, []).append(self._last_kept_up)
                if (
                    w.stop_when_behind
                    and len(step_results[sk]) == p.repeats
                    and sum(step_results[sk]) * 2 < len(step_results[sk])
                ):
                    behind.add(key)
                    self._say(
                        f"   {p.workload}: {target.name}/{p.client} fell behind; "
                        "skipping its higher steps"
                    )
                self._close_after(i, last_use, opened)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self._say("interrupted: stopping workers and brokers; finished results are kept")
        finally:
            for target in reversed(opened):
                target.close()
        invocation["finished_at"] = _now()
        invocation["load_after"] = load_average()
        invocation["host_speed_after"] = host_speed(rounds=15)
        info["finished_at"] = _now()
        info["elapsed_seconds"] = round(time.monotonic() - started, 1)
        info["interrupted"] = self.summary.interrupted
        prior = self._prior_summary
        info["summary"] = {
            "runs": prior.get("runs", 0) + self.summary.runs,
            "failed_runs": prior.get("failed_runs", []) + self.summary.failed_runs,
            "lossy_runs": prior.get("lossy_runs", []) + self.summary.lossy_runs,
            "skipped": prior.get("skipped", []) + self.summary.skipped,
        }
        self._write_manifest(info, manifest)
        return self.summary

    def _ensure_open(self, target: Target, opened: list[Target]) -> bool:
        """Start ``target``'s broker (or attach it to its owner's) on first use; False when
        that failed (the reason is in ``_failed_open``)."""
        if target in opened:
            return True
        if target.name in self._failed_open:
            return False
        owner = self._owner(target)
        try:
            if owner is not target and owner not in opened:
                if owner.name in self._failed_open:
                    raise RuntimeError(self._failed_open[owner.name])
                self._open_broker(owner, opened)
            if owner is not target:
                target.attach(owner)
                opened.append(target)
                self._say(f"== {target.name}: on {owner.name}'s broker")
            else:
                self._open_broker(target, opened)
        except Exception as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._say(f"!! {target.name}: cannot start: {text}")
            self._failed_open[target.name] = text
            self.summary.failed_runs.append(f"{target.name}: not started: {text}")
            return False
        self._record_target(target)
        return True

    def _open_broker(self, target: Target, opened: list[Target]) -> None:
        self._say(f"== {target.name}: starting" if target.harness else f"== {target.name}")
        target.open()
        opened.append(target)
        self._record_target(target)
        seconds = self._prime_seconds(target)
        if seconds:
            self._say(f"   {target.name}: priming load for {seconds:g} s")
            self._info["targets"][target.name]["priming"] = self._prime(target, seconds)

    def _prime(self, target: Target, seconds: float) -> dict[str, Any]:
        problems = _client_problems(target)
        client = "msgbus" if not problems.get("msgbus") else "raw"
        try:
            result = run_once(target, "priming", priming_step(seconds), client)
        except Exception as exc:  # priming is best effort; the runs say whether it matters
            self._say(f"   priming failed: {exc}")
            return {"seconds": seconds, "client": client, "error": str(exc).splitlines()[0]}
        curve = result["warmup_curve"]
        settled = settled_at(curve)
        self._say(
            f"   primed: {curve[-1][1] if curve else 0:,.0f} msg/s at the end, "
            f"settled after {settled if settled is not None else '?'} s"
        )
        return {"seconds": seconds, "client": client, "curve": curve, "settled_at_s": settled}

    def _record_target(self, target: Target) -> None:
        info = self._info
        entry = {**info["targets"].get(target.name, {}), **_target_info(target)}
        info["targets"][target.name] = entry
        if target.name not in self._unusable:
            problems = _client_problems(target)
            self._unusable[target.name] = problems
            if problems.get("msgbus"):
                self._say(f"   {target.name}: no msgbus runs: {problems['msgbus']}")
                entry["msgbus_missing"] = problems["msgbus"]
            if problems.get("raw"):
                self._say(f"   {target.name}: no raw runs: {problems['raw']}")
                entry["raw_missing"] = problems["raw"]
        self._write_manifest(info, self._manifest)

    def _close_after(self, index: int, last_use: dict[str, int], opened: list[Target]) -> None:
        """Stop the brokers whose last planned run was ``index`` (sharers first)."""
        finished = {name for name, last in last_use.items() if last == index}
        if not finished:
            return
        for target in [t for t in opened if self._owner(t).name in finished]:
            if target.harness and self._owner(target) is target:
                continue
            target.close()
            opened.remove(target)
        for target in [t for t in opened if self._owner(t).name in finished]:
            if target.harness and target.kind != "memory":
                self._say(f"== {target.name}: stopping (no runs left)")
            target.close()
            opened.remove(target)

    _last_kept_up = True
    _prior_summary: dict[str, Any] = {}
    _prior_workloads: list[str] = []
    _prior_repeats: dict[str, int] = {}
    _prior_kafka_note: str | None = None
    _info: dict[str, Any] = {}
    _manifest: Callable[..., Any] | None = None

    def _previous_manifest(self) -> dict[str, Any]:
        path = self.output / "manifest.json"
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _one(self, p: _Planned, prefix: str) -> None:
        def tick(text: str) -> None:
            if self.stream.isatty():
                print(f"\r   {text}\033[K", end="", file=self.stream, flush=True)

        from msgbus.bench.provenance import host_speed

        speed = host_speed()
        try:
            result = run_once(p.target, p.workload, p.step, p.client, on_tick=tick)
        except (RunError, ValueError, OSError) as exc:
            if self.stream.isatty():
                print(file=self.stream)
            self._say(f"   FAILED: {exc}")
            self.summary.failed_runs.append(f"{prefix}: {str(exc).splitlines()[0]}")
            self._last_kept_up = False
            return
        except Exception as exc:  # a client library error: report it, keep going
            if self.stream.isatty():
                print(file=self.stream)
            self._say(f"   FAILED: {type(exc).__name__}: {exc}")
            self.summary.failed_runs.append(f"{prefix}: {type(exc).__name__}: {exc}")
            self._last_kept_up = False
            return
        if self.stream.isatty():
            print(file=self.stream)
        result["repeat"] = p.repeat
        result["host_speed"] = speed
        folder = self.output / "runs" / p.workload
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{p.step.index:02d}-{p.target.name}-{p.client}-r{p.repeat}"
        result["hlog"] = f"{stem}.hlog"
        (folder / f"{stem}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        write_hlog(folder / f"{stem}.hlog", result)
        self.summary.runs += 1
        self._last_kept_up = bool(result["kept_up"])
        lat = result["latency"]
        self._say(
            f"   sent {result['sent']:,} | publish {result['publish_rate']:,.0f}/s "
            f"consume {result['consume_rate']:,.0f}/s | p50 {lat['p50']:.2f} "
            f"p99 {lat['p99']:.2f} p99.9 {lat['p99.9']:.2f} ms | lost {result['lost']} "
            f"dup {result['duplicated']} ooo {result['out_of_order']}"
            + ("" if result["kept_up"] else " | fell behind")
        )
        if result["lost"] or result["unexpected"]:
            self.summary.lossy_runs.append(
                f"{prefix}: lost {result['lost']}, unexpected {result['unexpected']}"
            )

    def _write_manifest(self, info: dict[str, Any], manifest: Callable[..., Any]) -> None:
        names = list(dict.fromkeys([*self._prior_workloads, *(n for n, _ in self.workloads)]))
        repeats = {
            name: max([self.repeats_for(s.workload) for s in steps] or [0])
            for name, steps in self.workloads
        }
        data = manifest(self.targets, names, self.repeats or max(repeats.values(), default=0))
        data["repeats_per_workload"] = {**self._prior_repeats, **repeats}
        data["kafka_note"] = data.get("kafka_note") or self._prior_kafka_note
        data.update(info)
        (self.output / "manifest.json").write_text(json.dumps(data, indent=1), encoding="utf-8")


def interleave(plans: Sequence[Sequence[_Planned]], workloads: Sequence[str]) -> list[_Planned]:
    """The targets' plans merged so that brokers alternate: workload by workload, step by
    step, repeat by repeat, every target runs once (its clients one after the other) before
    any runs the next repeat, and the targets' order rotates with the repeat, so no broker
    always goes first (or right after another one) and slow drifts of the machine spread
    over all of them."""
    position = {name: i for i, name in enumerate(workloads)}
    count = max(len(plans), 1)
    merged = [(t, p) for t, plan in enumerate(plans) for p in plan]

    def order(item: tuple[int, _Planned]) -> tuple[int, int, int, int, int]:
        t, p = item
        clients = p.step.workload.clients
        rank = clients.index(p.client) if p.client in clients else len(clients)
        return (position.get(p.workload, 0), p.step.index, p.repeat, (t - p.repeat) % count, rank)

    return [p for _, p in sorted(merged, key=order)]


DRIVER_MODULES = {
    ("kafka", "confluent"): ("confluent_kafka", "msgbus[kafka-confluent]"),
    ("kafka", "kafka-python"): ("kafka", "msgbus[kafka]"),
    ("rabbitmq", "pika"): ("pika", "msgbus[rabbitmq]"),
    ("activemq", "stomp.py"): ("stomp", "msgbus[activemq]"),
}
"""(kind, driver) → (the module its clients import, the extra that installs it)."""


def _client_problems(target: Target) -> dict[str, str]:
    """Why msgbus or the raw client cannot drive ``target`` (client → reason; a client
    that can is absent): the backend or the driver's library is missing."""
    import importlib.util

    from msgbus.registry import load_backend
    from msgbus.url import BusURL

    problems: dict[str, str] = {}
    module = DRIVER_MODULES.get((target.kind, target.driver))
    if module is not None and importlib.util.find_spec(module[0]) is None:
        text = f'{target.driver} is not installed (pip install "{module[1]}")'
        problems = {"msgbus": text, "raw": text}
    try:
        load_backend(BusURL.parse(target.url or "memory://").scheme)
    except Exception as exc:  # UnknownBackend, BackendNotInstalled, a broken module
        problems.setdefault("msgbus", f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    return problems


def _target_info(target: Target) -> dict[str, Any]:
    return {
        **target.info(),
        "kind": target.kind,
        "url": target.display_url(),
        "description": target.description,
        "harness": target.harness,
        "on_tansu": target.on_tansu,
        "durability": {d: target.durability_note(d) for d in ("D0", "D1")},
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def median_of(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return statistics.median(values) if values else float("nan")
