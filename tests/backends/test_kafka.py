"""The Kafka backend against a real Kafka-protocol broker (tansu from the harness).

``TestKafkaConformance`` runs the shared suite; the other tests cover what is Kafka's own:
offsets and commits, rebalances, crashes, broker restarts, interop with plain kafka-python
clients, and configuration errors. No mocks: every test talks to a real broker.
"""

from __future__ import annotations

import pytest

from msgbus.testing.conformance import BackendConformance

pytestmark = pytest.mark.kafka


class TestKafkaConformance(BackendConformance):
    """Every conformance test, on the session's tansu (in-memory storage)."""

    options = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

    @pytest.fixture
    def url(self, kafka_broker) -> str:  # type: ignore[no-untyped-def]
        return kafka_broker.url
