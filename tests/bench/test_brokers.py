"""A tiny run per real broker (started by the harness), msgbus and raw client, zero loss.

The prefetch is small (16) so that a raw consumer whose batched acknowledgements did not
reach the broker would stall after 16 messages and the run would lose what it never got."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("hdrh")
pytest.importorskip("matplotlib")

from msgbus.bench.cli import main

TINY = """
name = "tiny"
kind = "latency"
producer_rate = 300
warmup = 0.3
duration = 1
drain_timeout = 20
prefetch = 16
clients = {clients}
[[steps]]
durability = "D0"
[[steps]]
durability = "D1"
consumer_groups = 2
"""


def _run(tmp_path: Path, url: str | None, clients: list[str], *extra: str) -> list[dict[str, Any]]:
    workload = tmp_path / "tiny.toml"
    workload.write_text(TINY.format(clients=json.dumps(clients)))
    results = tmp_path / "results"
    where = ["--url", url] if url is not None else []
    args = ["run", str(workload), *where, *extra, "--repeats", "1", "--output", str(results)]
    assert main(args) == 0
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*/*.json"))]


def _check(runs: list[dict[str, Any]], expected: int) -> None:
    assert len(runs) == expected
    for run in runs:
        assert run["sent"] > 0
        assert run["lost"] == 0 and run["unexpected"] == 0, run["groups"]
        assert run["latency"]["count"] > 0
        resources = run["resources"]
        assert resources["clients_cpu_us_per_msg"] > 0
        assert 0 < resources["box_cpu_cores"] <= resources["box_cpus"] * 1.1  # jiffy rounding
        assert run["profile"] == "single" and run["nodes"] == 1
        assert isinstance(run["warmup_curve"], list)


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_both_drivers_on_one_apache_kafka(tmp_path: Path) -> None:
    # The harness's Apache Kafka, once, driven by confluent-kafka (target kafka) and by
    # kafka-python (target kafka-python, on the same broker), msgbus and raw each. Kafka has
    # no D1 profile: only the D0 step runs. A short priming load runs after the start.
    runs = _run(
        tmp_path, None, ["msgbus", "raw"], "--brokers", "kafka,kafka-python", "--prime", "2"
    )
    _check(runs, 4)
    assert {(r["target"], r["client"], r["driver"]) for r in runs} == {
        ("kafka", "msgbus", "confluent"),
        ("kafka", "raw", "confluent"),
        ("kafka-python", "msgbus", "kafka-python"),
        ("kafka-python", "raw", "kafka-python"),
    }
    assert all(r["resources"]["broker_cpu_us_per_msg"] > 0 for r in runs)
    assert all(not r["on_tansu"] for r in runs)
    manifest = json.loads((tmp_path / "results" / "manifest.json").read_text())
    assert manifest["targets"]["kafka-python"]["shares_broker_with"] == "kafka"
    assert "Apache Kafka" in manifest["targets"]["kafka"]["description"]
    assert "driver=confluent" in manifest["targets"]["kafka"]["url"]
    assert manifest["targets"]["kafka"]["priming"]["curve"]


@pytest.mark.activemq
@pytest.mark.slow
def test_activemq(activemq_broker: Any, tmp_path: Path) -> None:
    _check(_run(tmp_path, activemq_broker.url, ["msgbus", "raw"]), 4)


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_rabbitmq(rabbitmq_broker: Any, tmp_path: Path) -> None:
    have_backend = importlib.util.find_spec("msgbus.backends.rabbitmq") is not None
    clients = ["msgbus", "raw"] if have_backend else ["raw"]
    _check(_run(tmp_path, rabbitmq_broker.url, clients), 2 * len(clients))
