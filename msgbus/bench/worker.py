"""The producer and consumer of one benchmark run, each run in its own process (or thread).

Both take a picklable spec and a :class:`Control` (events and counters shared with the
runner), report ``("ready", role, index)`` on the control's queue once connected, and at the
end put a result dict there (``("result", role, index, data)``, or ``("error", role, index,
text)`` if anything failed).

Timeline of a run (``t0`` is set by the runner just before ``go``): ``[t0, t0+warmup)``
warm-up, not measured; ``[t0+warmup, t0+warmup+duration)`` the measured window. Producers
stop sending at the window's end, flush and report; the runner then sets ``fast`` (handlers
skip their simulated cost) and, once every group has everything or the drain timeout has
passed, ``stop``.

Producers are open loop: message ``n`` of a producer at rate ``r`` has the intended send
time ``t0 + offset + n/r``; it carries that time, and its latency is measured from it, so a
stalled producer shows up as latency (no coordinated omission). The time the send really
started minus the intended time is the *publish delay*; confirmation minus start is the
*publish latency*. With ``producer_rate = 0`` a producer sends as fast as ``max_in_flight``
unconfirmed sends allow, and the intended time is the moment of sending.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from msgbus.bench import metrics
from msgbus.bench.accounting import SeqTracker
from msgbus.bench.clients import open_receiver, open_sender
from msgbus.bench.payload import make_factory, stamp_of
from msgbus.bench.workloads import Workload

__all__ = ["ConsumerSpec", "Control", "ProducerSpec", "consumer_main", "producer_main"]


@dataclass
class Control:
    """What the runner shares with its workers: events ``go``, ``fast``, ``stop``; ``t0``
    (a Value holding the start time in ns); ``results`` (a queue); and one counter Value per
    worker (``counter``: sends for a producer, deliveries for a consumer). Works with
    multiprocessing objects (processes) and with their threading stand-ins (threads)."""

    go: Any
    fast: Any
    stop: Any
    t0: Any
    results: Any
    counter: Any


@dataclass(frozen=True)
class ProducerSpec:
    """One producer: which client, broker and topics, its index and the workload."""

    client: str
    kind: str
    url: str
    options: dict[str, Any]
    topics: tuple[str, ...]
    index: int
    workload: dict[str, Any]
    in_process: bool = False
    driver: str = ""


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer-group member: client, broker, topics, group, its index and the workload."""

    client: str
    kind: str
    url: str
    options: dict[str, Any]
    topics: tuple[str, ...]
    group: str
    index: int
    workload: dict[str, Any]
    in_process: bool = False
    driver: str = ""


def _workload(data: dict[str, Any]) -> Workload:
    return Workload(
        **{
            **data,
            "clients": tuple(data["clients"]),
            "kinds": tuple(data.get("kinds", ())),
            "profiles": tuple(data.get("profiles", ())),
        }
    )


def _quiet_signals(in_process: bool) -> None:
    # Ctrl-C reaches the whole foreground process group; the runner alone decides.
    if not in_process:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)


_PARENT = os.getppid()


def _orphaned(in_process: bool) -> bool:
    """True when the runner process is gone (a worker then stops on its own)."""
    return not in_process and os.getppid() != _PARENT


def _wait_t0(ctl: Control, in_process: bool) -> int | None:
    while not ctl.go.wait(0.2):
        if ctl.stop.is_set() or _orphaned(in_process):
            return None
    return int(ctl.t0.value)


def _key_chooser(w: Workload, index: int) -> Any:
    if w.key_distribution == "none":
        return lambda seq: None
    keys = [f"k{i}" for i in range(w.keys)]
    if w.key_distribution == "random":
        rnd = random.Random(index)
        return lambda seq: keys[rnd.randrange(len(keys))]
    return lambda seq: keys[seq % len(keys)]


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def producer_main(spec: ProducerSpec, ctl: Control) -> None:
    """Run one producer to completion and report (see the module docstring). Never raises."""
    _quiet_signals(spec.in_process)
    try:
        ctl.results.put(("result", "producer", spec.index, _produce(spec, ctl)))
    except BaseException:
        ctl.results.put(("error", "producer", spec.index, traceback.format_exc(limit=8)))


def _produce(spec: ProducerSpec, ctl: Control) -> dict[str, Any]:
    w = _workload(spec.workload)
    sender = open_sender(spec.client, spec.kind, spec.url, spec.options, spec.driver)
    factory = make_factory(w.body_bytes)
    choose_key = _key_chooser(w, spec.index)
    topics = spec.topics
    delay_hist = metrics.new_histogram()
    ack_hist = metrics.new_histogram()
    lock = threading.Lock()
    window = threading.BoundedSemaphore(w.max_in_flight)
    failed: list[int] = []
    errors: list[str] = []
    ctl.results.put(("ready", "producer", spec.index))
    t0 = _wait_t0(ctl, spec.in_process)
    seq = 0
    in_window = 0
    if t0 is not None:
        start = t0 + int(w.warmup * 1e9)
        end = start + int(w.duration * 1e9)
        rate = w.producer_rate / w.producers
        interval = 1e9 / rate if rate > 0 else 0.0
        offset = interval * spec.index / w.producers
        counter = ctl.counter
        stop = ctl.stop
        sleep = time.sleep
        now_ns = time.monotonic_ns
        while not stop.is_set():
            if interval:
                intended = t0 + int(offset + seq * interval)
                if intended >= end:
                    break
                ahead = intended - now_ns()
                if ahead > 0:
                    sleep(ahead / 1e9)
                window.acquire()
            else:
                window.acquire()
                intended = now_ns()
                if intended >= end:
                    window.release()
                    break
            key = choose_key(seq)
            payload = factory(spec.index, seq, intended, key)
            began = now_ns()
            measured = start <= intended
            if measured:
                in_window += 1
                metrics.record_us(delay_hist, began - intended)

            def done(exc: BaseException | None, seq: int = seq, began: int = began) -> None:
                finished = time.monotonic_ns()
                with lock:
                    if exc is not None:
                        failed.append(seq)
                        if len(errors) < 5:
                            errors.append(f"{type(exc).__name__}: {exc}")
                    elif began >= start:
                        metrics.record_us(ack_hist, finished - began)
                window.release()

            try:
                sender.send(topics[seq % len(topics)], key, payload, done)
            except Exception as exc:
                done(exc)
            seq += 1
            counter.value = seq
            if not seq % 1000 and _orphaned(spec.in_process):
                break
    flush_error = ""
    try:
        sender.flush(w.drain_timeout + 30)
    except Exception as exc:
        flush_error = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            sender.close()
    with lock:
        return {
            "sent": seq,
            "sent_in_window": in_window,
            "failed": list(failed),
            "errors": list(errors) + ([f"flush: {flush_error}"] if flush_error else []),
            "publish_delay": metrics.encode(delay_hist),
            "publish_latency": metrics.encode(ack_hist),
            "max_rss": _max_rss(),
            "pid": os.getpid(),
        }


def consumer_main(spec: ConsumerSpec, ctl: Control) -> None:
    """Run one consumer-group member until ``stop`` and report. Never raises."""
    _quiet_signals(spec.in_process)
    try:
        ctl.results.put(("result", "consumer", spec.index, _consume(spec, ctl)))
    except BaseException:
        ctl.results.put(("error", "consumer", spec.index, traceback.format_exc(limit=8)))


class _Handling:
    """The consumer's handler state; ``__call__`` is the handler (thread-safe)."""

    def __init__(self, w: Workload, ctl: Control) -> None:
        self.w = w
        self.ctl = ctl
        self.lock = threading.Lock()
        self.tracker = SeqTracker()
        self.hist = metrics.new_histogram()
        self.in_window = 0
        self.bad = 0
        self.bounds: tuple[int, int, int] | None = None
        self.cost = w.handler_cost_ms / 1000.0

    def _bounds(self) -> tuple[int, int, int]:
        if self.bounds is None:
            t0 = int(self.ctl.t0.value)
            start = t0 + int(self.w.warmup * 1e9)
            self.bounds = (
                start,
                start + int(self.w.duration * 1e9),
                start + int(self.w.backlog_pause * 1e9),
            )
        return self.bounds

    def __call__(self, payload: Any) -> None:
        now = time.monotonic_ns()
        try:
            producer, seq, intended, key = stamp_of(payload)
        except (KeyError, TypeError):
            with self.lock:
                self.bad += 1
            return
        start, end, resume = self._bounds()
        with self.lock:
            first = self.tracker.record(producer, seq, key)
            if first:
                if start <= intended < end:
                    metrics.record_us(self.hist, now - intended)
                if start <= now < end:
                    self.in_window += 1
            self.ctl.counter.value = self.tracker.deliveries
        if resume > start and now < resume:
            time.sleep((resume - now) / 1e9)
        if self.cost and not self.ctl.fast.is_set():
            time.sleep(self.cost)


def _consume(spec: ConsumerSpec, ctl: Control) -> dict[str, Any]:
    w = _workload(spec.workload)
    handling = _Handling(w, ctl)
    receiver = open_receiver(
        spec.client,
        spec.kind,
        spec.url,
        spec.options,
        spec.topics,
        spec.group,
        handling,
        concurrency=w.consumer_concurrency,
        prefetch=w.prefetch,
        driver=spec.driver,
    )
    try:
        receiver.start()
        ctl.results.put(("ready", "consumer", spec.index))
        while not ctl.stop.wait(0.2):
            if _orphaned(spec.in_process):
                break
    finally:
        receiver.close()
    t = handling.tracker
    with handling.lock:
        return {
            "counts": {p: bytes(c) for p, c in t.counts.items()},
            "deliveries": t.deliveries,
            "duplicates": t.duplicates,
            "out_of_order": t.out_of_order,
            "received_in_window": handling.in_window,
            "not_benchmark": handling.bad,
            "latency": metrics.encode(handling.hist),
            "max_rss": _max_rss(),
            "pid": os.getpid(),
        }
