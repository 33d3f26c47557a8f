"""A tiny benchmark run and report on memory:// (and, where a harness broker is marked, on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("hdrh")
pytest.importorskip("matplotlib")

from msgbus.bench.cli import main
from msgbus.bench.report import write_report

TINY = """
name = "tiny"
kind = "{kind}"
description = "tiny"
producer_rate = 400
warmup = 0.2
duration = 0.6
drain_timeout = 10
clients = {clients}
{extra}
"""


def _workload(
    tmp_path: Path, name: str, kind: str, clients: str = '["msgbus"]', extra: str = ""
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        TINY.format(kind=kind, clients=clients, extra=extra).replace('"tiny"', f'"{name}"', 1)
    )
    return path


def _runs(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*/*.json"))]


@pytest.mark.slow
def test_memory_run_and_report(tmp_path: Path) -> None:
    latency = _workload(tmp_path, "tiny-latency", "latency")
    fanout = _workload(
        tmp_path,
        "tiny-fanout",
        "fan-out",
        extra=(
            "[[steps]]\nconsumer_groups = 1\n"
            "[[steps]]\nconsumer_groups = 2\nkey_distribution = 'random'"
        ),
    )
    backlog = _workload(tmp_path, "tiny-backlog", "backlog", extra="backlog_pause = 0.3")
    results = tmp_path / "results"
    status = main(
        [
            "run",
            str(latency),
            str(fanout),
            str(backlog),
            "--url",
            "memory://",
            "--repeats",
            "2",
            "--output",
            str(results),
        ]
    )
    assert status == 0
    runs = _runs(results)
    assert len(runs) == (1 + 2 + 1) * 2
    for run in runs:
        assert run["lost"] == 0 and run["unexpected"] == 0 and run["duplicated"] == 0
        assert run["sent"] > 0
        assert all(g["received"] == g["expected"] == run["sent"] for g in run["groups"])
        assert (results / "runs" / run["workload"] / run["hlog"]).read_text().count("Tag=") == 3
        assert (run["driver"], run["profile"], run["nodes"]) == ("memory", "single", 1)
        assert run["resources"]["clients_cpu_us_per_msg"] > 0
        assert run["resources"]["box_cpu_cores"] > 0
        assert run["resources"]["broker_cpu_cores"] is None  # no broker process on memory://
    manifest = json.loads((results / "manifest.json").read_text())
    assert manifest["summary"]["lossy_runs"] == [] and manifest["interrupted"] is False
    assert "memory" in manifest["targets"]

    out = tmp_path / "report"
    paths = write_report(results, out)
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "## Workload: tiny-latency" in md and "Verdict" in md
    assert "data:image/png;base64," in html and "<img" in html
    assert all(p.exists() for p in paths)
    assert (out / "charts" / "tiny-latency-percentiles.png").stat().st_size > 1000


def test_report_of_empty_folder_fails(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path)]) == 2


def test_bad_workload_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nproducers = 0\n')
    assert main(["run", str(bad), "--url", "memory://", "--output", str(tmp_path / "r")]) == 2
    assert "'producers' must be an integer >= 1" in capsys.readouterr().err


def test_unknown_broker_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["run", "latency", "--brokers", "oracle", "--output", str(tmp_path)]) == 2
