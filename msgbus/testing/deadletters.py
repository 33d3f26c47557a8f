"""Conformance tests of dead letters that cannot vanish, and of :mod:`msgbus.dlq` operations.

Mixed into :class:`~msgbus.testing.conformance.BackendConformance` (which supplies the
``url``, ``topic`` and ``group`` fixtures and the ``options``/``timeout`` attributes). A
class whose backend is ``persistent`` overrides :meth:`restartable_broker` to return a
broker it may restart (a harness broker: ``.url``, ``.restart()``); returning None (the
default) means the dead letters are read back without a restart in between.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

import msgbus
from msgbus.deadletters import STORE_GROUP, dead_letter_topic
from msgbus.message import DLQ_ATTEMPTS, DLQ_ERROR, DLQ_ERROR_TYPE, DLQ_GROUP, DLQ_TOPIC
from msgbus.testing.recorder import Recorder

__all__ = ["DeadLetterConformance"]


def _fail(msg: msgbus.Message) -> None:
    raise ValueError(f"boom {msg.payload['n']}")


class DeadLetterConformance:
    """Dead letters are kept by their store group whether or not anybody reads the DLQ."""

    options: ClassVar[dict[str, Any]] = {}
    timeout: ClassVar[float] = 30.0

    @pytest.fixture
    def restartable_broker(self) -> Any:
        """A broker the dead-letter tests may restart (``.url``, ``.restart()``), or None."""
        return None

    def _dead_letter(self, url: str, topic: str, group: str, count: int) -> None:
        """Publish ``count`` messages whose handler always fails, with nobody reading the
        DLQ; return once every one was handled (its dead letter confirmed) and the bus closed."""
        failing = Recorder(_fail)
        bus = msgbus.connect(url, **self.options)
        try:
            bus.subscribe(topic, failing, group=group, max_attempts=2, backoff=0.01)
            bus.start()
            for n in range(count):
                bus.publish(topic, {"n": n}, key=f"k{n}", headers={"tenant": "a"})
            bus.flush(self.timeout)
            failing.wait_for_attempts(2 * count, self.timeout)
        finally:
            bus.close(timeout=self.timeout)  # drains: the last attempt's dead letter is confirmed

    def test_dead_letter_kept_without_a_reader(
        self, url: str, restartable_broker: Any, topic: str, group: str
    ) -> None:
        if restartable_broker is not None:
            url = restartable_broker.url
        self._dead_letter(url, topic, group, 3)
        with msgbus.connect(url, **self.options) as probe:
            features = probe.features
        if features.persistent and restartable_broker is not None:
            restartable_broker.restart()
        reader = Recorder()
        with msgbus.connect(url, **self.options) as bus:
            bus.subscribe(
                dead_letter_topic(topic), reader, group=STORE_GROUP, from_beginning=features.replay
            )
            bus.start()
            letters = reader.wait_for(3, self.timeout)
        assert sorted(m.payload["n"] for m in letters) == [0, 1, 2]
        for letter in letters:
            assert letter.key == f"k{letter.payload['n']}"
            assert letter.headers["tenant"] == "a"
            assert letter.headers[DLQ_TOPIC] == topic
            assert letter.headers[DLQ_GROUP] == group
            assert letter.headers[DLQ_ATTEMPTS] == "2"
            assert letter.headers[DLQ_ERROR_TYPE] == "builtins.ValueError"
            assert letter.headers[DLQ_ERROR] == f"boom {letter.payload['n']}"
