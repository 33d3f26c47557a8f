"""Workload files: parsing, steps, shipped set, validation errors."""

from __future__ import annotations

import pytest

from msgbus.bench.workloads import (
    SHIPPED,
    WorkloadError,
    load_workload,
    parse_workload,
    quick,
    standard_set,
)


def test_single_step_defaults() -> None:
    steps = parse_workload('name = "x"\nproducer_rate = 500\n')
    assert len(steps) == 1
    w = steps[0].workload
    assert (w.name, w.producer_rate, w.durability, w.clients) == ("x", 500.0, "D0", ("msgbus",))
    assert w.body_bytes == 0 and w.size_label == "account.created"


def test_steps_override_and_label() -> None:
    text = """
name = "sweep"
kind = "sweep"
duration = 3
[[steps]]
producer_rate = 100
[[steps]]
label = "big"
message_size = 65536
"""
    steps = parse_workload(text)
    assert [s.label for s in steps] == ["producer_rate=100", "big"]
    assert steps[0].workload.producer_rate == 100.0
    assert steps[1].workload.body_bytes == 65536 and steps[1].workload.size_label == "64 KiB"
    assert all(s.workload.duration == 3.0 for s in steps)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("producer_rate = 1", "'name' is required"),
        ('name = "x"\nprodcers = 2', "unknown field 'prodcers' (did you mean 'producers'?)"),
        ('name = "x"\nproducers = 0', "'producers' must be an integer >= 1"),
        ('name = "x"\nproducer_rate = -1', "'producer_rate' must be a number >= 0"),
        ('name = "x"\nduration = 0', "'duration' must be > 0"),
        ('name = "x"\nmessage_size = "huge"', "'message_size' must be 'account.created'"),
        ('name = "x"\nmessage_size = 10', "between 64 and"),
        ('name = "x"\ndurability = "D2"', "'durability' must be 'D0' or 'D1'"),
        ('name = "x"\nkey_distribution = "zipf"', "'key_distribution' must be"),
        ('name = "x"\nclients = ["java"]', "'clients' must be"),
        ('name = "x"\nkind = "other"', "'kind' must be one of"),
        ('name = "x"\nsteps = []', "'steps' must be a non-empty array"),
        ('name = "x"\n[[steps]]\nname = "y"', "step 1: unknown field 'name'"),
        ('name = "x"\n[[steps]]\nconsumers_per_group = 1.5', "step 1: 'consumers_per_group'"),
        ("name = ", "not valid TOML"),
        ('name = "x"\nrepeats = 0', "'repeats' must be an integer >= 1"),
        ('name = "x"\nkinds = ["oracle"]', "'kinds' must be a list of broker kinds"),
        ('name = "x"\nprofiles = ["sharded"]', "'profiles' must be a list from"),
        ('name = "x"\nkill_at = -1', "'kill_at' must be a number >= 0"),
    ],
)
def test_validation_errors(text: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=None) as info:
        parse_workload(text, where="w.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("w.toml")
    assert isinstance(info.value, ValueError)


def test_shipped_set_loads() -> None:
    names = {p.stem for p in SHIPPED.glob("*.toml")}
    assert set(standard_set()) <= names
    assert set(standard_set(quick_run=True)) <= set(standard_set())
    for name in names:
        steps = load_workload(name)
        assert steps[0].workload.name == name


def test_unknown_shipped_name_lists_known() -> None:
    with pytest.raises(WorkloadError, match=r"shipped workloads: .*latency"):
        load_workload("no-such-workload")


def test_load_from_path(tmp_path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nproducers = 2\n')
    assert load_workload(path)[0].workload.producers == 2
    with pytest.raises(WorkloadError, match="cannot read"):
        load_workload(tmp_path / "missing.toml")


def test_quick_shrinks() -> None:
    steps = quick(load_workload("rate-sweep"))
    assert len(steps) == 2
    assert all(s.workload.duration <= 2 and s.workload.warmup <= 0.5 for s in steps)
    assert steps[1].workload.producer_rate == load_workload("rate-sweep")[-1].workload.producer_rate


def test_repeats_kinds_profiles_and_faults() -> None:
    text = """
name = "x"
repeats = 5
kinds = ["kafka", "kafka"]
[[steps]]
label = "a"
[[steps]]
label = "b"
kinds = ["rabbitmq"]
profiles = ["failover"]
kill_at = 2
"""
    a, b = parse_workload(text)
    assert (a.workload.repeats, a.workload.kinds, a.workload.profiles) == (5, ("kafka",), ())
    assert (b.workload.kinds, b.workload.profiles, b.workload.kill_at) == (
        ("rabbitmq",),
        ("failover",),
        2.0,
    )
    assert b.workload.to_dict()["kinds"] == ["rabbitmq"]
    assert quick([b])[0].workload.kill_at == 0.5


def test_standard_set_answers_the_claim() -> None:
    assert standard_set() == [
        "latency",
        "rate-sweep",
        "max-rate",
        "scaling",
        "fan-out",
        "replication",
        "availability",
    ]
    assert standard_set(quick_run=True) == ["latency", "scaling"]
