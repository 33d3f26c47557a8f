"""The conformance suite on the in-process memory backend."""

from __future__ import annotations

import uuid

import pytest

from msgbus.testing.conformance import BackendConformance


class TestMemoryConformance(BackendConformance):
    """Every conformance test, on a fresh named memory broker per test."""

    lists_dead_letter_topics = True

    timeout = 10.0
    dlq_idle = 0.1  # in-process: a read of the dead-letter store ends 0.1 s after the last

    @pytest.fixture
    def url(self) -> str:
        return f"memory://conf-{uuid.uuid4().hex[:8]}"
