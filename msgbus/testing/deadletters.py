"""Conformance tests of dead letters that cannot vanish, and of :mod:`msgbus.dlq` operations.

Mixed into :class:`~msgbus.testing.conformance.BackendConformance` (which supplies the
``url``, ``topic`` and ``group`` fixtures and the ``options``/``timeout`` attributes). A
class whose backend is ``persistent`` overrides :meth:`restartable_broker` to return a
broker it may restart (a harness broker: ``.url``, ``.restart()``); returning None (the
default) means the dead letters are read back without a restart in between.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from typing import Any, ClassVar

import pytest

import msgbus
import msgbus.dlq
from msgbus.deadletters import STORE_GROUP, dead_letter_topic
from msgbus.message import DLQ_ATTEMPTS, DLQ_ERROR, DLQ_ERROR_TYPE, DLQ_GROUP, DLQ_TOPIC
from msgbus.testing.recorder import Recorder, wait_until

__all__ = ["DeadLetterConformance"]


def _fail(msg: msgbus.Message) -> None:
    if msg.payload.get("reject"):
        raise msgbus.Reject(f"rejected {msg.payload['n']}")
    raise ValueError(f"boom {msg.payload['n']}")


# a redrive in another process that stops after two messages until it is killed
_REDRIVER = """
import json, sys, threading
import msgbus, msgbus.dlq
url, topic, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
done = []
def redriven(letter):
    done.append(letter.id)
    if len(done) == 2:
        print("redrove 2", flush=True)
        threading.Event().wait()  # until killed
bus = msgbus.connect(url, **options)
msgbus.dlq.redrive(bus, topic, on_redriven=redriven, idle=float(sys.argv[4]))
print("finished", flush=True)
"""


class DeadLetterConformance:
    """Dead letters are kept by their store group whether or not anybody reads the DLQ."""

    options: ClassVar[dict[str, Any]] = {}
    timeout: ClassVar[float] = 30.0

    @pytest.fixture
    def restartable_broker(self) -> Any:
        """A broker the dead-letter tests may restart (``.url``, ``.restart()``), or None."""
        return None

    lists_dead_letter_topics: ClassVar[bool] = False
    """True when the backend can list its dead-letter topics (``msgbus dlq list URL``
    without TOPIC); False: it must refuse with an error that names the fix."""

    dlq_idle: ClassVar[float] = 0.5
    """``idle`` of the :mod:`msgbus.dlq` calls: quiet seconds that end a read of the store."""

    def _dead_letter(
        self, url: str, topic: str, group: str, count: int, rejects: int = 0
    ) -> list[str]:
        """Publish ``count`` messages whose handler always fails (the last ``rejects`` of
        them rejected at once) with nobody reading the DLQ; return their ids once every one
        was handled (its dead letter confirmed) and the bus closed."""
        failing = Recorder(_fail)
        bus = msgbus.connect(url, **self.options)
        ids = [f"{topic}-m{n}" for n in range(count)]
        try:
            bus.subscribe(topic, failing, group=group, max_attempts=2, backoff=0.01)
            bus.start()
            for n in range(count):
                payload = {"n": n, "reject": n >= count - rejects}
                bus.publish(
                    topic,
                    payload,
                    key=f"k{n}",
                    headers={"tenant": "a"},
                    message_id=ids[n],
                    correlation_id=f"c{n}",
                )
            bus.flush(self.timeout)
            failing.wait_for_attempts(2 * count - rejects, self.timeout)
        finally:
            bus.close(timeout=self.timeout)  # drains: the last attempt's dead letter is confirmed
        return ids

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

    # ------------------------------------------------------------------ msgbus.dlq

    def test_dlq_list_and_show_leave_dead_letters_in_place(
        self, url: str, topic: str, group: str
    ) -> None:
        ids = self._dead_letter(url, topic, group, 3, rejects=1)
        idle = self.dlq_idle
        with msgbus.connect(url, **self.options) as bus:
            (summary,) = msgbus.dlq.list_dead_letters(bus, [topic], idle=idle)
            assert summary.count == 3 and summary.complete
            assert summary.error_types == {"builtins.ValueError": 2, "msgbus.errors.Reject": 1}
            assert summary.oldest is not None and summary.newest is not None
            assert summary.oldest <= summary.newest
            letters = msgbus.dlq.show(bus, topic, idle=idle)
            assert sorted(m.id or "" for m in letters) == ids
            first = next(m for m in letters if m.id == ids[0])
            assert (first.topic, first.group, first.attempts) == (topic, group, 2)
            assert first.key == "k0" and first.error == "boom 0"
            assert first.headers["tenant"] == "a" and first.preview().startswith("{")
            rejected = msgbus.dlq.show(bus, topic, error_type="Reject", idle=idle)
            assert [m.id for m in rejected] == [ids[2]]
            assert len(msgbus.dlq.show(bus, topic, limit=1, idle=idle)) == 1
            # nothing was removed by reading
            assert sorted(m.id or "" for m in msgbus.dlq.show(bus, topic, idle=idle)) == ids
            # purge one error type, then the rest
            assert msgbus.dlq.purge(bus, topic, error_type="msgbus.errors.Reject", idle=idle) == 1
            assert sorted(m.id or "" for m in msgbus.dlq.show(bus, topic, idle=idle)) == ids[:2]
            assert msgbus.dlq.purge(bus, topic, idle=idle) == 2
            (summary,) = msgbus.dlq.list_dead_letters(bus, [topic], idle=idle)
            assert summary.count == 0

    def test_dlq_list_without_topics_finds_the_store_or_names_the_fix(
        self, url: str, topic: str, group: str
    ) -> None:
        self._dead_letter(url, topic, group, 2)
        with msgbus.connect(url, **self.options) as bus:
            if not self.lists_dead_letter_topics:
                with pytest.raises(msgbus.ConfigurationError, match="name the topics to list"):
                    msgbus.dlq.list_dead_letters(bus, [], idle=self.dlq_idle)
                return
            assert msgbus.dlq.dead_letter_topics(bus, match=topic) == [topic]
            assert msgbus.dlq.dead_letter_topics(bus, match=topic + "?*") == []
            (summary,) = msgbus.dlq.list_dead_letters(bus, [], match=topic, idle=self.dlq_idle)
            assert summary.topic == topic and summary.count == 2

    def test_dlq_redrive_republishes_then_removes(self, url: str, topic: str, group: str) -> None:
        ids = self._dead_letter(url, topic, group, 3)
        idle = self.dlq_idle
        fixed = Recorder()
        with msgbus.connect(url, **self.options) as bus:
            report = msgbus.dlq.redrive(bus, topic, dry_run=True, idle=idle)
            assert sorted(i or "" for i in report.redriven) == ids and report.dry_run
            bus.subscribe(topic, fixed, group=group)  # the fixed service
            bus.start()
            report = msgbus.dlq.redrive(bus, topic, limit=2, idle=idle)
            assert len(report.redriven) == 2 and not report.skipped
            report = msgbus.dlq.redrive(bus, topic, idle=idle)
            assert len(report.redriven) == 1
            got = fixed.wait_for(3, self.timeout)
            assert sorted(m.id for m in got) == ids
            for msg in got:
                n = msg.payload["n"]
                assert msg.key == f"k{n}" and msg.correlation_id == f"c{n}"
                assert msg.headers["tenant"] == "a"
                assert msg.headers[msgbus.dlq.REDRIVEN] == "1"
                assert not [h for h in msg.headers if h.startswith("msgbus-dlq-")]
            assert msgbus.dlq.show(bus, topic, idle=idle) == []

    def test_dlq_redrive_skips_after_max_redrives_and_redrives_to_another_topic(
        self, url: str, topic: str, group: str
    ) -> None:
        (the_id,) = self._dead_letter(url, topic, group, 1)
        idle = self.dlq_idle
        other = Recorder()
        with msgbus.connect(url, **self.options) as bus:
            report = msgbus.dlq.redrive(bus, topic, max_redrives=0, idle=idle)
            assert report.skipped == [the_id] and report.redriven == []
            assert [m.id for m in msgbus.dlq.show(bus, topic, idle=idle)] == [the_id]
            bus.subscribe(topic + ".replay", other, group=group)
            bus.start()
            report = msgbus.dlq.redrive(bus, topic, to=topic + ".replay", idle=idle)
            assert report.redriven == [the_id]
            (msg,) = other.wait_for(1, self.timeout)
            assert msg.id == the_id and msg.payload["n"] == 0

    def test_dlq_redrive_killed_midway_loses_nothing(
        self, url: str, topic: str, group: str, tmp_path: Any
    ) -> None:
        with msgbus.connect(url, **self.options) as probe:
            if not probe.features.cross_process:
                pytest.skip("an in-process broker dies with the process that would be killed")
        ids = self._dead_letter(url, topic, group, 5)
        fixed = Recorder()
        bus = msgbus.connect(url, **self.options)
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _REDRIVER,
                url,
                topic,
                json.dumps(self.options),
                str(self.dlq_idle),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp_path,  # import msgbus as installed, not from a source checkout
            start_new_session=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(line.strip()) for line in child.stdout or ()], daemon=True
        ).start()
        try:
            bus.subscribe(topic, fixed, group=group)
            bus.start()
            assert lines.get(timeout=self.timeout) == "redrove 2"
            child.kill()  # SIGKILL mid-redrive: no goodbye to the broker
            child.wait(self.timeout)
            fixed.wait_for(2, self.timeout)

            def redriven_all() -> bool:
                # a broker may hold a killed reader's messages a while (kombu on Redis or
                # SQL: until the visibility timeout), so redrive again until they are back
                msgbus.dlq.redrive(bus, topic, idle=self.dlq_idle)
                return {m.id for m in fixed.messages} == set(ids)

            # kombu on Redis restores a dead reader's messages in a sweep after the
            # visibility timeout, whose timing varies: a wider bound than other waits
            wait_until(redriven_all, 2 * self.timeout, "every dead letter redriven after the kill")
            assert msgbus.dlq.show(bus, topic, idle=self.dlq_idle) == []
            # each removal is confirmed before the next republish: at most one comes twice
            assert len(fixed.messages) <= len(ids) + 1, [m.id for m in fixed.messages]
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(self.timeout)
            bus.close(timeout=self.timeout)
