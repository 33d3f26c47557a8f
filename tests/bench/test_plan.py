"""The standard and quick plans: what runs where, how often, how long (nothing is run)."""

from __future__ import annotations

from pathlib import Path

from msgbus.bench.runner import Runner
from msgbus.bench.targets import DEFAULT_HARNESS, harness_target
from msgbus.bench.workloads import load_workload, quick, standard_set

HEADLINE_REPEATS = 5
OTHER_REPEATS = 3
P999_SAMPLES = 10_000


def _runner(tmp_path: Path, quick_run: bool = False) -> Runner:
    workloads = []
    for name in standard_set(quick_run):
        steps = load_workload(name)
        workloads.append((name, quick(steps) if quick_run else steps))
    targets = [harness_target(k, standard=True) for k in DEFAULT_HARNESS]
    if quick_run:
        return Runner(workloads, targets, tmp_path, repeats=1, prime={})
    return Runner(workloads, targets, tmp_path)


def _runs(runner: Runner) -> list:
    return [p for t in runner.targets for p in runner._plan(t)]


def test_standard_plan_fits_two_hours(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    assert runner.estimate_seconds() <= 2 * 3600
    text = runner.plan_text()
    assert "estimated" in text and "(broker starts)" in text and "priming" in text


def test_standard_statistics(tmp_path: Path) -> None:
    runs = _runs(_runner(tmp_path))
    for p in runs:
        w = p.step.workload
        if p.workload == "availability":
            assert p.step.workload.kill_at > 0 and p.step.workload.durability == "D1"
        if p.workload in ("latency", "max-rate", "scaling"):
            assert p.repeats >= HEADLINE_REPEATS, p.workload
        else:
            assert p.repeats >= OTHER_REPEATS, p.workload
        if w.producer_rate > 0 and w.kind != "availability":  # that one measures an outage
            # every fixed-rate step records enough samples for a p99.9 per run
            assert w.producer_rate * w.duration >= P999_SAMPLES, (p.workload, p.step.label)
            if w.kind in ("latency", "sweep", "replication"):
                assert w.duration >= 30, (p.workload, p.step.label)
        assert w.warmup >= 5


def test_who_runs_what(tmp_path: Path) -> None:
    runs = _runs(_runner(tmp_path))
    where: dict[str, set[str]] = {}
    for p in runs:
        where.setdefault(p.workload, set()).add(p.target.name)
    core = {"kafka", "rabbitmq", "activemq"}
    assert where["latency"] == where["max-rate"] == core | {"kafka-python", "memory"}
    assert where["scaling"] == where["fan-out"] == where["rate-sweep"] == core
    assert where["replication"] == {"kafka", "kafka-3", "rabbitmq", "rabbitmq-3"}
    assert where["availability"] == {"activemq-2"}  # availability only, no throughput row
    # each replication step compares one broker kind with itself
    for p in runs:
        if p.workload == "replication":
            assert p.step.workload.kinds == (p.target.kind,)
            assert p.step.workload.clients == ("msgbus",)


def test_scaling_steps_scale_producers_with_consumers(tmp_path: Path) -> None:
    steps = load_workload("scaling")
    assert [(s.workload.partitions, s.workload.consumers, s.workload.producers) for s in steps] == [
        (1, 1, 1),
        (2, 2, 2),
        (4, 4, 4),
    ]
    assert all(s.workload.producer_rate == 0 for s in steps)


def test_quick_plan_is_small(tmp_path: Path) -> None:
    runner = _runner(tmp_path, quick_run=True)
    runs = _runs(runner)
    assert all(p.repeats == 1 for p in runs)
    assert {p.target.name for p in runs} == {
        "kafka",
        "kafka-python",
        "rabbitmq",
        "activemq",
        "memory",
    }
    assert len(runs) <= 16
    assert "priming" not in runner.plan_text()
