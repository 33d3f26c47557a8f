"""Provenance of benchmark results: the commit and dirty state recorded, staleness reported,
the plan printed without running anything, and brokers interleaved."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("hdrh")
pytest.importorskip("matplotlib")

from msgbus.bench.cli import main
from msgbus.bench.provenance import find_checkout, host_speed, source_state, stale_paths
from msgbus.bench.render import to_markdown
from msgbus.bench.report import ReportData, staleness
from msgbus.bench.report.data import Cell
from msgbus.bench.report.manifest import host_speed_warning, manifest_blocks


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout shaped like msgbus's: msgbus/, backends/, one commit."""
    root = tmp_path / "repo"
    for path in ("msgbus/core.py", "backends/broker.py", "notes.md"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("# v1\n")
    _git(root.parent, "init", "-q", str(root))
    _git(root, "add", "-A")
    _git(root, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qm", "one")
    return root


def test_source_state_records_commit_and_code_changes_only(checkout: Path) -> None:
    state = source_state(checkout)
    assert state["commit"] == _git(checkout, "rev-parse", "HEAD")
    assert state["dirty"] is False
    (checkout / "notes.md").write_text("a note written beside a run\n")
    assert source_state(checkout)["dirty"] is False  # not code
    (checkout / "backends" / "broker.py").write_text("# v2\n")
    state = source_state(checkout)
    assert state["dirty"] is True and state["dirty_paths"] == ["backends/broker.py"]


def test_stale_paths_lists_code_changed_since_the_commit(checkout: Path) -> None:
    first = _git(checkout, "rev-parse", "HEAD")
    assert stale_paths(first, checkout) == []
    (checkout / "msgbus" / "core.py").write_text("# v2\n")
    _git(checkout, "-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-qam", "2")
    (checkout / "msgbus" / "new.py").write_text("# untracked\n")
    assert stale_paths(first, checkout) == ["msgbus/core.py", "msgbus/new.py"]
    assert stale_paths("0" * 40, checkout) is None  # a commit this checkout does not know


def test_find_checkout_needs_msgbus_in_a_git_checkout(checkout: Path, tmp_path: Path) -> None:
    assert find_checkout([checkout / "backends"]) == checkout
    plain = tmp_path / "plain"
    (plain / "msgbus").mkdir(parents=True)
    assert find_checkout([plain]) is None
    assert source_state(None if find_checkout() else checkout)["commit"] is not None


def _report(manifest: dict[str, object], checkout: Path) -> str:
    return to_markdown(staleness(ReportData(manifest, {}), checkout))


def test_report_warns_when_results_are_stale_dirty_mixed_or_unknown(checkout: Path) -> None:
    first = _git(checkout, "rev-parse", "HEAD")
    clean = {"commit": first, "dirty": False, "dirty_paths": []}
    assert _report({"invocations": [{"source": clean}]}, checkout).strip() == ""
    (checkout / "backends" / "broker.py").write_text("# v2\n")
    assert "changed since the results' commit: `backends/broker.py`" in _report(
        {"invocations": [{"source": clean}]}, checkout
    )
    dirty = {"commit": first, "dirty": True, "dirty_paths": ["msgbus/core.py"]}
    assert "uncommitted changes to 1 file(s)" in _report({"source": dirty}, checkout)
    mixed = {"invocations": [{"source": clean}, {"source": {**clean, "commit": "f" * 40}}]}
    assert "mix runs made at different commits" in _report(mixed, checkout)
    assert "Provenance unknown" in _report({"command": "msgbus bench run"}, checkout)


def test_plan_prints_runs_and_total_without_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    status = main(["run", "--plan", "--url", "memory://", "--repeats", "5", "--output", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| memory | latency |" in printed and "| 5 |" in printed
    assert "estimated" in printed.splitlines()[-1]
    assert not out.exists()


def test_a_run_records_its_source_and_load(tmp_path: Path) -> None:
    workload = tmp_path / "tiny.toml"
    workload.write_text(
        'name = "tiny"\nkind = "latency"\ndescription = "tiny"\nproducer_rate = 200\n'
        "warmup = 0.1\nduration = 0.3\ndrain_timeout = 10\n"
    )
    results = tmp_path / "results"
    assert main(["run", str(workload), "--url", "memory://", "--output", str(results)]) == 0
    manifest = json.loads((results / "manifest.json").read_text())
    (invocation,) = manifest["invocations"]
    assert set(invocation["source"]) == {"commit", "dirty", "dirty_paths", "checkout"}
    assert invocation["load_before"] is not None and invocation["load_after"] is not None
    assert invocation["host_speed_before"] > 0 and invocation["host_speed_after"] > 0
    assert invocation["finished_at"] >= invocation["started_at"]
    runs = list((results / "runs" / "tiny").glob("*.json"))
    assert runs and all(json.loads(r.read_text())["host_speed"] > 0 for r in runs)
    # a second command writing into the folder keeps what the first recorded
    second = tmp_path / "second.toml"
    second.write_text(workload.read_text().replace('"tiny"', '"second"') + "repeats = 2\n")
    assert main(["run", str(second), "--url", "memory://", "--output", str(results)]) == 0
    manifest = json.loads((results / "manifest.json").read_text())
    assert len(manifest["invocations"]) == 2
    assert manifest["repeats_per_workload"] == {"tiny": 3, "second": 2}


def test_host_speed_is_a_rate_that_falls_when_the_cpu_is_shared() -> None:
    """Three threads spinning beside the calibration (one GIL) leave it about a quarter of
    the interpreter: its score must fall to well under half the unshared score (the margin
    covers a noisy host)."""
    import threading

    alone = max(host_speed(rounds=3) for _ in range(3))
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinners = [threading.Thread(target=spin) for _ in range(3)]
    for t in spinners:
        t.start()
    try:
        shared = host_speed(rounds=3)
    finally:
        stop.set()
        for t in spinners:
            t.join()
    assert alone > 0 and shared < alone / 2


def _timed_runs(speeds: list[float]) -> ReportData:
    cell = Cell("max-rate", "max-rate", 0, "max", "memory", "memory", "msgbus", False)
    cell.runs = [{"workload": "max-rate", "host_speed": v} for v in speeds]
    invocation = {"command": "msgbus bench run", "host_speed_before": 8.0}
    return ReportData({"invocations": [{**invocation, "host_speed_after": 7.5}]}, {"k": cell})


def test_report_warns_about_runs_on_a_slowed_host() -> None:
    steady = _timed_runs([8.0, 7.1, 9.0, 8.4])
    assert host_speed_warning(steady) == []
    environment = to_markdown(manifest_blocks(steady))
    assert "| host speed | median 8.20 (range 7.10–9.00) M loop steps/s" in environment
    assert "host speed 8.0 before, 7.5 after" in environment
    slowed = to_markdown(host_speed_warning(_timed_runs([8.0, 7.9, 8.2, 3.0, 2.5])))
    assert "2 of 5 runs started with the host over 1.5× slower" in slowed
    assert "workloads: max-rate" in slowed
    drifted = _timed_runs([8.0, 8.0])
    drifted.manifest["invocations"][0]["host_speed_after"] = 4.0
    assert "started at 8.0 and ended at 4.0" in to_markdown(host_speed_warning(drifted))
    assert "not recorded" in to_markdown(manifest_blocks(ReportData({}, {})))


def test_targets_alternate_within_each_repeat_and_rotate(tmp_path: Path) -> None:
    """Brokers interleaved: every target runs step s, repeat r before any runs repeat r+1,
    and the first target of a repeat rotates."""
    from msgbus.bench.runner import Runner, interleave
    from msgbus.bench.targets import url_target
    from msgbus.bench.workloads import load_workload

    workload = tmp_path / "two.toml"
    workload.write_text(
        'name = "two"\nkind = "fan-out"\ndescription = "two"\nproducer_rate = 100\n'
        "warmup = 0.1\nduration = 0.2\ndrain_timeout = 5\n"
        "[[steps]]\nconsumer_groups = 1\n[[steps]]\nconsumer_groups = 2\n"
    )
    names: set[str] = set()
    targets = []
    for url in ("memory://a", "memory://b", "memory://c"):
        targets.append(url_target(url, names))
        names.add(targets[-1].name)
    runner = Runner([("two", load_workload(workload))], targets, tmp_path / "r", repeats=2)
    order = [
        (p.step.index, p.repeat, p.target.name)
        for p in interleave([runner._plan(t) for t in targets], ["two"])
    ]
    a, b, c = (t.name for t in targets)
    first, second = order[0][0], order[-1][0]
    assert order == [
        (first, 0, a), (first, 0, b), (first, 0, c),
        (first, 1, b), (first, 1, c), (first, 1, a),
        (second, 0, a), (second, 0, b), (second, 0, c),
        (second, 1, b), (second, 1, c), (second, 1, a),
    ]  # fmt: skip
