"""The availability workload on ActiveMQ's real master/standby pair: the master is killed
mid-window, the clients fail over, nothing confirmed is lost, the outage is measured."""

from __future__ import annotations

import math
from typing import Any

import pytest

pytest.importorskip("hdrh")

from msgbus.bench.runner import run_once
from msgbus.bench.targets import Target, harness_target
from msgbus.bench.workloads import parse_workload

TINY = """
name = "tiny-availability"
kind = "availability"
producer_rate = 100
durability = "D1"
partitions = 1
warmup = 1
duration = 6
kill_at = 1.5
drain_timeout = 60
profiles = ["failover"]
"""


@pytest.mark.activemq
@pytest.mark.slow
def test_master_killed_mid_window(activemq_cluster: Any) -> None:
    # The session's cluster, borrowed: the target attaches to it and never closes it.
    owner = Target("activemq-2", "activemq", harness=True, broker=activemq_cluster)
    target = harness_target("activemq-2")
    target.attach(owner)
    before = activemq_cluster.wait_master()
    (step,) = parse_workload(TINY)
    result = run_once(target, "tiny-availability", step, "msgbus")
    assert (result["profile"], result["nodes"]) == ("failover", 2)
    availability = result["availability"]
    assert availability["node"] == before
    assert 1.5 <= availability["killed_at_s"] < 2.5
    assert availability["outage_s"] > 0 and not math.isnan(availability["outage_s"])
    assert result["lost"] == 0, result["groups"]
    assert (
        result["sent"] > 0 and result["groups"][0]["received"] >= result["sent"] - result["failed"]
    )
    # the killed node is back (as the standby) for whoever runs next
    assert set(activemq_cluster.running_nodes()) == {0, 1}
