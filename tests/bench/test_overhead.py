"""``msgbus bench overhead`` runs end to end on memory:// and prints its tables."""

from __future__ import annotations

import pytest

from msgbus.bench.overhead import main


def test_overhead_command_prints_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("opentelemetry.sdk")
    assert main(["--brokers", "memory", "--messages", "300", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for mode in ("off", "api", "hooks", "sdk", "sdk-1%"):
        assert f"| memory | {mode} |" in out
        assert f"| msgbus publish on memory://, {mode} (median of " in out
    assert "| SDK histogram record |" in out
    assert "| memory | " in out.split("who adds the CPU")[1]
