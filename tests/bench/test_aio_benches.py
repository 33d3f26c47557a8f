"""Smoke runs of the asyncio benchmark's memory:// measurements (they finish, nothing lost)."""

from __future__ import annotations

from msgbus.bench.memory import aio_latency, aio_throughput


def test_aio_throughput_handles_every_message() -> None:
    assert aio_throughput(500) > 0  # raises if a message is missing after 120 s


def test_aio_latency_records_one_sample_per_message() -> None:
    samples = aio_latency(2000, 200)
    assert len(samples) == 200
    assert all(value >= 0 for value in samples)
