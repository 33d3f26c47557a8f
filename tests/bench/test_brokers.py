"""A tiny run per real broker (started by the harness), msgbus and raw client, zero loss."""

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
clients = {clients}
[[steps]]
durability = "D0"
[[steps]]
durability = "D1"
consumer_groups = 2
"""


def _run(tmp_path: Path, url: str, clients: list[str]) -> list[dict[str, Any]]:
    workload = tmp_path / "tiny.toml"
    workload.write_text(TINY.format(clients=json.dumps(clients)))
    results = tmp_path / "results"
    assert (
        main(["run", str(workload), "--url", url, "--repeats", "1", "--output", str(results)]) == 0
    )
    return [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*/*.json"))]


def _check(runs: list[dict[str, Any]], expected: int) -> None:
    assert len(runs) == expected
    for run in runs:
        assert run["sent"] > 0
        assert run["lost"] == 0 and run["unexpected"] == 0, run["groups"]
        assert run["latency"]["count"] > 0


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka(kafka_broker: Any, tmp_path: Path) -> None:
    # Kafka has no D1 profile: only the D0 step runs, with msgbus and raw kafka-python.
    _check(_run(tmp_path, kafka_broker.url, ["msgbus", "raw"]), 2)


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
