"""The cluster launchers: every node listed in the URL, pause/resume, the CLI's --nodes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import pytest

from msgbus.testing.brokers.base import HOST
from msgbus.testing.brokers.rabbitmq import amqp_handshake
from msgbus.url import BusURL

pytestmark = [pytest.mark.cluster]


@pytest.mark.rabbitmq
def test_rabbitmq_cluster_lists_every_node_and_a_paused_node_answers_nothing(
    rabbitmq_cluster,  # type: ignore[no-untyped-def]
) -> None:
    hosts = BusURL.parse(rabbitmq_cluster.url).hosts
    assert [h.port for h in hosts] == rabbitmq_cluster.ports and len(hosts) == 3
    rabbitmq_cluster.pause(1)
    try:
        assert rabbitmq_cluster.paused_nodes() == [1]
        with pytest.raises(OSError):  # the socket accepts, the node never answers
            amqp_handshake(HOST, rabbitmq_cluster.ports[1], timeout=1.0)
        amqp_handshake(HOST, rabbitmq_cluster.ports[2], timeout=10.0)  # the others do
    finally:
        rabbitmq_cluster.resume(1)
    assert rabbitmq_cluster.paused_nodes() == []
    amqp_handshake(HOST, rabbitmq_cluster.ports[1], timeout=10.0)


@pytest.mark.activemq
def test_activemq_cluster_has_one_master_and_the_slave_takes_over(activemq_cluster) -> None:  # type: ignore[no-untyped-def]
    master = activemq_cluster.wait_master()
    slave = 1 - master
    assert activemq_cluster.nodes[slave].is_standby()
    activemq_cluster.kill(master)
    try:
        assert activemq_cluster.wait_master(60) == slave
    finally:
        activemq_cluster.start()
    assert activemq_cluster.nodes[master].is_standby()  # came back as the slave


@pytest.mark.activemq
def test_cli_starts_a_cluster_and_prints_every_node() -> None:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cwd:  # CLI tests run outside the repository
        proc = subprocess.Popen(
            [sys.executable, "-m", "msgbus.cli", "broker", "start", "activemq", "--nodes", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=env,
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("stomp://"), proc.stderr.read() if proc.stderr else url
            assert len(BusURL.parse(url).hosts) == 2
            assert "master/slave" in proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    assert code == 0
