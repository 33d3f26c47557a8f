"""msgbus.testing.faults: the history checker and the TCP fault proxy (no broker needed)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from msgbus.testing.brokers.base import HOST
from msgbus.testing.faults import History, check
from msgbus.testing.faults.proxy import FaultProxy


def test_a_clean_history_is_ok() -> None:
    history = History()
    for seq in range(3):
        history.published("a", seq, at=float(seq))
        history.confirmed("a", seq)
        history.delivered("a", seq, at=5.0 + seq)
    history.fault("kill", 0.5, 0.6)
    history.finish()
    report = check(history, order_expected=True)
    assert report.ok, report.summary()
    assert (report.confirmed, report.delivered, report.recovery) == (
        3,
        3,
        [5.5],
    )  # seq 1, published after the fault's start


def test_lost_duplicated_and_reordered_are_counted() -> None:
    history = History()
    for seq in range(4):
        history.published("a", seq, at=float(seq))
        history.confirmed("a", seq)
    history.published("a", 4, at=4.0)
    history.confirmed("a", 4, ok=False)  # failed: its absence is no loss
    for seq, at in ((0, 10.0), (2, 11.0), (1, 12.0), (2, 13.0)):
        history.delivered("a", seq, at=at)
    history.finish()
    report = check(history, order_expected=True)
    assert report.lost == [("a", 3)]
    assert (report.duplicated, report.reordered, report.failed) == (1, 1, 1)
    assert not report.ok
    assert any("lost" in p for p in report.problems)
    assert any("out of order" in p for p in report.problems)
    assert check(history, order_expected=False).reordered == 1  # counted, not a problem


def test_a_check_that_could_not_run_is_never_a_success() -> None:
    empty = History()
    empty.finish()
    assert not check(empty).ok  # nothing confirmed
    unfinished = History()
    unfinished.published("a", 0)
    unfinished.confirmed("a", 0)
    unfinished.delivered("a", 0)
    assert not check(unfinished).ok  # not drained
    no_recovery = History()
    no_recovery.published("a", 0, at=0.0)
    no_recovery.confirmed("a", 0)
    no_recovery.delivered("a", 0, at=1.0)
    no_recovery.fault("kill", 2.0, 3.0)  # nothing published after it arrived
    no_recovery.finish()
    report = check(no_recovery)
    assert report.recovery == [None] and not report.ok


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.socket()
    server.bind((HOST, 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def echo(conn: socket.socket = conn) -> None:
                with conn, contextlib.suppress(OSError):  # the proxy resets some on purpose
                    while data := conn.recv(4096):
                        conn.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _roundtrip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def test_proxy_forwards_delays_partitions_and_resets(echo_port: int) -> None:
    with FaultProxy(echo_port) as proxy:
        assert _roundtrip(proxy.port, b"hello") == b"hello"
        proxy.delay(0.3)
        started = time.monotonic()
        assert _roundtrip(proxy.port, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.6  # held once each way
        proxy.delay(0)
        sock = socket.create_connection((HOST, proxy.port), timeout=0.5)
        assert _roundtrip(proxy.port, b"x") == b"x"
        proxy.partition()
        sock.sendall(b"cut")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.heal()
        sock.settimeout(2)
        assert sock.recv(10) == b"cut"  # held, not lost, while partitioned
        assert proxy.reset_all() >= 1
        with pytest.raises((ConnectionResetError, BrokenPipeError, OSError)):
            sock.sendall(b"after")
            if not sock.recv(10):
                raise ConnectionResetError("closed")
        sock.close()
        proxy.refuse(True)
        with pytest.raises(OSError):
            _roundtrip(proxy.port, b"no")
        proxy.heal()
        assert _roundtrip(proxy.port, b"back") == b"back"


def test_proxy_on_a_taken_port_raises_and_leaves_no_socket(echo_port: int) -> None:
    import gc
    import warnings

    proxy = FaultProxy(echo_port, port=echo_port)  # the echo server holds that port
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(OSError):
            proxy.start()
        gc.collect()  # an unclosed listener would warn when collected
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
