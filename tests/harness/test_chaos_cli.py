"""``msgbus chaos`` without a broker: arguments, schedules, targets, logs and the verdict.

The runs themselves (real clusters, real faults) are in ``tests/cluster/test_chaos.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from msgbus.testing.faults import History, check
from msgbus.testing.faults.chaos import ChaosResult
from msgbus.testing.faults.cli import main
from msgbus.testing.faults.schedules import SCHEDULES, get_schedule
from msgbus.testing.faults.targets import ChaosTarget, open_target
from msgbus.testing.faults.workload import read_log


def test_help_lists_every_schedule_with_its_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for schedule in SCHEDULES.values():
        assert schedule.name in text
        assert ", ".join(schedule.faults) in text


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no target
        ["memory://", "--cluster", "kafka"],  # two targets
        ["memory://", "--schedule", "nope"],
        ["memory://", "--duration", "0"],
        ["memory://", "--consumers", "0"],
    ],
)
def test_bad_arguments_exit_2_before_anything_starts(argv: list[str]) -> None:
    assert main(argv) == 2


def test_unknown_schedule_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: mixed, network, nodes, processes, smoke"):
        get_schedule("nope")


def test_a_url_target_knows_which_faults_it_cannot_inject() -> None:
    kafka = open_target("kafka://127.0.0.1:9092")
    assert kafka.profile == "url" and kafka.kind == "kafka"
    assert "advertised" in (kafka.supports("partition") or "")
    assert "plain URL" in (kafka.supports("kill-node") or "")
    assert kafka.supports("kill-producer") is None
    remote = open_target("amqp://u:p@broker.example:5672/")
    assert "127.0.0.1" in (remote.supports("reset") or "")
    local = open_target("amqp://u:p@127.0.0.1:5672,127.0.0.1:5673/")
    assert local.supports("reset") is None


def test_proxies_take_every_host_and_keep_the_credentials() -> None:
    target = ChaosTarget(
        "amqp://u:s3cret@127.0.0.1:5672,127.0.0.1:5673/vh?queue_type=quorum",
        kind="rabbitmq",
        profile="url",
        description="test",
    )
    target.open_proxies()
    try:
        ports = [p.port for p in target.proxies]
        assert [p.target_port for p in target.proxies] == [5672, 5673]
        assert target.client_url == (
            f"amqp://u:s3cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/vh?queue_type=quorum"
        )
    finally:
        target.close()
    assert target.proxies == []


def test_the_cluster_profiles_name_their_options() -> None:
    from msgbus.testing.faults.targets import PROFILE_OPTIONS

    assert PROFILE_OPTIONS[("kafka", "cluster")] == {"replication_factor": "3"}
    assert PROFILE_OPTIONS[("rabbitmq", "cluster")] == {"queue_type": "quorum"}


def test_a_torn_last_log_line_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "c0.log"
    log.write_text("delivered 1.5 c0.1 7\nmail 1.6 c0.1 ev-7\ndelivered 1.7 c0")
    assert read_log(log) == [("delivered", 1.5, "c0.1", "7"), ("mail", 1.6, "c0.1", "ev-7")]
    assert read_log(tmp_path / "missing.log") == []


def test_recovery_from_a_faults_end_counts_only_later_publishes() -> None:
    history = History()
    for seq, at in ((0, 1.0), (1, 5.0)):
        history.published("a", seq, at=at)
        history.confirmed("a", seq)
    history.delivered("a", 0, at=1.1)  # published after the start, before the end
    history.delivered("a", 1, at=5.5)
    history.fault("restart-all", 0.5, 4.0, from_end=True)
    history.fault("kill-node 0", 0.5, 4.0)
    history.finish()
    report = check(history)
    assert report.recovery == [5.0, 0.6]  # 5.5 - 0.5, and 1.1 - 0.5


def _result(pending: int = 0, lost: bool = False) -> ChaosResult:
    history = History()
    history.published("1", 0, at=1.0)
    history.confirmed("1", 0)
    history.published("2", 0, at=2.0)
    history.confirmed("2", 0)
    history.delivered("1", 0, "c0", at=1.2)
    if not lost:
        history.delivered("2", 0, "c1", at=2.5)
        history.delivered("2", 0, "c0", at=2.6)
    history.fault("kill-consumer c0", 1.5, 1.6)
    history.fault("kill-consumer c1", 1.9, 2.0)
    history.finish()
    return ChaosResult(
        target="t",
        profile="cluster",
        schedule="processes",
        quick=True,
        duration=3.0,
        report=check(history),
        skipped={"reset": "not here"},
        pending=pending,
        problems=[f"{pending} account(s) committed but never published (outbox)"]
        if pending
        else [],
    )


def test_the_verdict_fails_on_a_loss_or_an_unpublished_account() -> None:
    assert _result().ok
    assert not _result(lost=True).ok
    assert not _result(pending=1).ok
    good = _result()
    assert good.by_kind() == {
        "kill-consumer": {"count": 2, "recovery_p50": 0.8, "recovery_max": 1.0}
    }
    table = good.table()
    assert "| kill-consumer | 2 | 0.80s | 1.00s |" in table
    assert "skipped reset: not here" in table and table.endswith("result: OK")
    data = json.loads(json.dumps(good.as_dict()))
    assert (data["confirmed"], data["lost"], data["duplicated"], data["ok"]) == (2, 0, 1, True)
    out = io.StringIO()
    print(_result(lost=True).table(), file=out)
    assert "PROBLEM: 1 confirmed message(s) lost" in out.getvalue()
