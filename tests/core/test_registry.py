"""Finding backends: built-ins, entry points, unknown schemes, missing drivers."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import msgbus
from msgbus import registry


def test_unknown_scheme_lists_schemes_and_suggests() -> None:
    with pytest.raises(msgbus.UnknownBackend) as info:
        msgbus.connect("kafak://127.0.0.1:9092")
    text = str(info.value)
    assert "did you mean 'kafka'" in text.lower()
    for scheme in ("amqp", "kafka", "memory", "stomp", "kombu"):
        assert scheme in text
    assert isinstance(info.value, ValueError)


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kafka", None)  # as if kafka-python were not installed
    monkeypatch.delitem(sys.modules, "msgbus.backends.kafka", raising=False)
    monkeypatch.delitem(sys.modules, "msgbus.backends.kafka.kafka_python", raising=False)
    monkeypatch.setattr(registry, "_loaded", {})
    with pytest.raises(msgbus.BackendNotInstalled) as info:
        msgbus.connect("kafka://127.0.0.1:9092")
    assert 'pip install "msgbus[kafka]"' in str(info.value)


def test_builtins_are_declared_as_entry_points() -> None:
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert declared == registry.BUILTIN_BACKENDS


def test_third_party_backend_via_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "thirdparty_bus.py").write_text(
        textwrap.dedent(
            """
            from msgbus.backends.memory import MemoryBackend

            class EchoBackend(MemoryBackend):
                schemes = ("echo",)

                @classmethod
                def from_url(cls, url, **options):
                    from msgbus.url import BusURL
                    return super().from_url(BusURL.parse("memory://echo"), **options)
            """
        )
    )
    dist = tmp_path / "thirdparty_bus-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-bus\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[msgbus.backends]\necho = thirdparty_bus:EchoBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", {})
    assert "echo" in msgbus.available_schemes()
    with msgbus.connect("echo://") as bus:
        assert type(bus.backend).__name__ == "EchoBackend"


def test_register_backend_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from msgbus.backends.memory import MemoryBackend

    monkeypatch.setattr(registry, "_registered", {})
    monkeypatch.setattr(registry, "_loaded", {})
    msgbus.register_backend("mem2", MemoryBackend)
    with msgbus.connect("mem2://x") as bus:
        assert isinstance(bus.backend, MemoryBackend)


def test_broken_backend_path_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registered", {})
    monkeypatch.setattr(registry, "_loaded", {})
    msgbus.register_backend("broken", "no_such_module_anywhere:Backend")
    with pytest.raises(msgbus.ConfigurationError, match="cannot be imported"):
        msgbus.connect("broken://x")


def test_builtin_extras_are_the_backends_declared_extras() -> None:
    import importlib

    from msgbus.registry import BUILTIN_BACKENDS, BUILTIN_EXTRAS

    checked = 0
    for scheme, target in BUILTIN_BACKENDS.items():
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue  # its driver is not installed in this env; another env checks it
        assert BUILTIN_EXTRAS.get(scheme, "") == getattr(module, attr).extra, scheme
        checked += 1
    assert checked >= 2  # memory and at least the kombu backend (the memory env has kombu)
