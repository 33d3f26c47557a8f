"""The behavioural suite every msgbus backend runs against a real broker.

Adopt it with one subclass that supplies a ``url`` fixture (and, if needed, ``options``)::

    @pytest.mark.kafka
    class TestKafkaConformance(BackendConformance):
        options = {"session_timeout_ms": 6000}

        @pytest.fixture
        def url(self, kafka_broker):
            return kafka_broker.url

Every test runs twice: through the blocking :class:`~msgbus.Bus` (``[sync]``) and through the
asyncio facade ``msgbus.aio`` with ``async def`` handlers (``[aio]``, marked ``aio``; see
:mod:`msgbus.testing.aio`). Each test uses fresh topic and group names, so tests never see
each other's messages. What is asserted depends on the backend's ``features`` flags; a test
that a backend cannot pass by design is skipped with the flag that excuses it. Waits are
bounded (``timeout``) and woken by events, never fixed sleeps.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

import msgbus
import msgbus.aio
from msgbus.message import (
    CONTENT_TYPE,
    DLQ_ATTEMPTS,
    DLQ_CONTENT_TYPE,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_GROUP,
    DLQ_TOPIC,
    MESSAGE_ID,
)
from msgbus.testing.aio import BlockingAsyncBus, LoopThread
from msgbus.testing.deadletters import DeadLetterConformance
from msgbus.testing.observability import ObservabilityConformance
from msgbus.testing.recorder import Recorder, drain, wait_until

__all__ = ["BackendConformance"]


_STUCK_MEMBER = """
import json, sys, threading
import msgbus

url, topic, group, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
bus = msgbus.connect(url, **options)

def stuck(msg):
    print("entered", msg.id, flush=True)
    threading.Event().wait()  # never returns: the process is killed here

bus.subscribe(topic, stuck, group=group)
bus.start()
print("ready", flush=True)
threading.Event().wait()
"""

_STUCK_ASYNC_MEMBER = """
import asyncio, json, sys
import msgbus.aio

url, topic, group, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

async def main():
    bus = msgbus.aio.connect(url, **options)

    async def stuck(msg):
        print("entered", msg.id, flush=True)
        await asyncio.Event().wait()  # never returns: the process is killed here

    bus.subscribe(topic, stuck, group=group)
    await bus.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

Connect = Callable[..., msgbus.Bus]


class BackendConformance(DeadLetterConformance, ObservabilityConformance):
    """Reusable conformance tests; subclass with a ``url`` fixture to run them on a backend.

    Includes the tracing, metrics and health tests of
    :class:`~msgbus.testing.observability.ObservabilityConformance` and the dead-letter
    tests of :class:`~msgbus.testing.deadletters.DeadLetterConformance` (a persistent
    backend's class overrides its ``restartable_broker`` fixture).
    """

    options: ClassVar[dict[str, Any]] = {}
    """Keyword options passed to every ``msgbus.connect`` of the suite."""
    timeout: ClassVar[float] = 30.0
    """Upper bound of every wait in the suite, in seconds."""

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def url(self) -> str:
        """The backend's URL; every subclass must override this fixture."""
        raise NotImplementedError("a BackendConformance subclass must provide a url fixture")

    @pytest.fixture(params=["sync", pytest.param("aio", marks=pytest.mark.aio)])
    def api(self, request: pytest.FixtureRequest) -> str:
        """Which API the test drives: the blocking ``Bus``, or ``msgbus.aio`` (async handlers)."""
        return str(request.param)

    @pytest.fixture
    def connect(self, url: str, api: str) -> Iterator[Connect]:
        """A factory of buses on ``url`` that closes every bus it made after the test.

        With ``api == "aio"`` each is an :class:`~msgbus.aio.AsyncBus` seen through
        :class:`~msgbus.testing.aio.BlockingAsyncBus`, all on one event loop thread.
        """
        buses: list[Any] = []
        loop = LoopThread() if api == "aio" else None

        def make(**extra: Any) -> Any:
            options = {**self.options, **extra}
            if loop is None:
                bus: Any = msgbus.connect(url, **options)
            else:
                bus = BlockingAsyncBus(msgbus.aio.connect(url, **options), loop)
            buses.append(bus)
            return bus

        try:
            yield make
        finally:
            for bus in buses:
                bus.close(timeout=5)
            if loop is not None:
                loop.stop()

    @pytest.fixture
    def topic(self) -> str:
        """A topic name no other test uses."""
        return f"conf.{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def group(self) -> str:
        """A group name no other test uses."""
        return f"g{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ round trips

    def test_round_trip_payload_headers_and_metadata(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        headers = {
            "tenant": "a",
            "colon": "a:b",
            "unicode": "héllo ✓",
            "backslash": "c:\\temp",
            "newline": "two\nlines",
            "empty": "",
        }
        before = time.time()
        bus.publish(
            topic,
            {"id": 7, "email": "ana@example.com", "tags": ["x", "ÿ"]},
            key="7",
            headers=headers,
            correlation_id="corr-1",
            message_id="id-0001",
        ).result(self.timeout)
        (msg,) = rec.wait_for(1, self.timeout)
        assert msg.payload == {"id": 7, "email": "ana@example.com", "tags": ["x", "ÿ"]}
        assert msg.topic == topic
        assert msg.key == "7"
        assert dict(msg.headers) == headers
        assert msg.id == "id-0001"
        assert msg.correlation_id == "corr-1"
        assert msg.content_type == "application/json"
        assert msg.attempt == 1
        assert before - 5 <= msg.timestamp <= time.time() + 5

    def test_generated_message_ids_are_unique(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        for i in range(20):
            bus.publish(topic, i, key=str(i % 3))
        bus.flush(self.timeout)
        ids = [m.id for m in rec.wait_for(20, self.timeout)]
        assert len(set(ids)) == 20 and all(ids)

    def test_binary_payload_round_trips_untouched(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        data = bytes(range(256)) * 4 + b"\x00\r\n\x00"
        bus.publish(topic, data).result(self.timeout)
        (msg,) = rec.wait_for(1, self.timeout)
        assert msg.payload == data and msg.body == data
        assert msg.content_type == "application/octet-stream"

    def test_one_mebibyte_payload(self, connect: Connect, topic: str, group: str) -> None:
        bus = connect()
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        data = os.urandom(1024 * 1024)
        bus.publish(topic, data, key="big").result(self.timeout)
        (msg,) = rec.wait_for(1, self.timeout)
        assert msg.body == data

    def test_text_codec_and_plain_json_values(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        bus.publish(topic, "plain text ✓", codec="text", key="k")
        for value in ("a json string", 42, 1.5, [1, 2], None, True):
            bus.publish(topic, value, key="k")
        bus.flush(self.timeout)
        msgs = rec.wait_for(7, self.timeout)
        assert [m.payload for m in msgs] == [
            "plain text ✓",
            "a json string",
            42,
            1.5,
            [1, 2],
            None,
            True,
        ]

    def test_topic_isolation(self, connect: Connect, topic: str, group: str) -> None:
        bus = connect()
        mine, other, child = Recorder(), Recorder(), Recorder()
        bus.subscribe(topic, mine, group=group)
        bus.subscribe(topic + "-other", other, group=group)
        bus.subscribe(topic + ".child", child, group=group)
        bus.start()
        bus.publish(topic + "-other", "other")
        bus.publish(topic + ".child", "child")
        bus.publish(topic, "mine")
        bus.flush(self.timeout)
        assert rec_payloads(mine.wait_for(1, self.timeout)) == ["mine"]
        assert rec_payloads(other.wait_for(1, self.timeout)) == ["other"]
        assert rec_payloads(child.wait_for(1, self.timeout)) == ["child"]
        # a straggler would have had time to arrive while the others were awaited
        bus.publish(topic, "mine-2").result(self.timeout)
        assert rec_payloads(mine.wait_for(2, self.timeout)) == ["mine", "mine-2"]
        assert rec_payloads(other.messages) == ["other"]

    # ------------------------------------------------------------------ groups

    def test_every_group_receives_every_message(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        first, second = Recorder(), Recorder()
        bus.subscribe(topic, first, group=group + "-a")
        bus.subscribe(topic, second, group=group + "-b")
        bus.start()
        for i in range(30):
            bus.publish(topic, i, key=str(i % 5))
        bus.flush(self.timeout)
        assert sorted(rec_payloads(first.wait_for(30, self.timeout))) == list(range(30))
        assert sorted(rec_payloads(second.wait_for(30, self.timeout))) == list(range(30))

    def test_private_groups_each_get_everything(self, connect: Connect, topic: str) -> None:
        one, two = connect(), connect()
        first, second = Recorder(), Recorder()
        one.subscribe(topic, first)
        two.subscribe(topic, second)
        one.start()
        two.start()
        for i in range(10):
            one.publish(topic, i, key=str(i))
        one.flush(self.timeout)
        assert sorted(rec_payloads(first.wait_for(10, self.timeout))) == list(range(10))
        assert sorted(rec_payloads(second.wait_for(10, self.timeout))) == list(range(10))

    def test_competing_consumers_split_the_work(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        one, two = connect(), connect()

        def work(msg: msgbus.Message) -> None:
            time.sleep(0.001)  # handler cost, so that no member can drain the topic alone

        first, second = Recorder(work), Recorder(work)
        one.subscribe(topic, first, group=group, prefetch=10)
        two.subscribe(topic, second, group=group, prefetch=10)
        one.start()
        two.start()
        count = 200
        for i in range(count):
            one.publish(topic, i, key=f"k{i}")
        one.flush(self.timeout)
        wait_until(
            lambda: len(set(rec_payloads(first.messages + second.messages))) >= count,
            self.timeout,
            f"{count} distinct messages across both members",
        )
        everything = first.messages + second.messages
        assert sorted(set(rec_payloads(everything))) == list(range(count))
        duplicates = [p for p, n in Counter(rec_payloads(everything)).items() if n > 1]
        redelivered = {m.payload for m in everything if m.redelivered}
        assert set(duplicates) <= redelivered, "duplicates that were not redeliveries"
        if self.features_of(one).consumer_groups:
            assert first.messages and second.messages, "one member got all the work"

    def test_new_group_starts_at_the_end(self, connect: Connect, topic: str, group: str) -> None:
        bus = connect()
        warm = Recorder()
        bus.subscribe(topic, warm, group=group + "-warm")
        bus.start()
        bus.publish(topic, "before").result(self.timeout)
        warm.wait_for(1, self.timeout)
        late = Recorder()
        bus.subscribe(topic, late, group=group + "-late")
        bus.publish(topic, "after").result(self.timeout)
        assert rec_payloads(late.wait_for(1, self.timeout)) == ["after"]
        warm.wait_for(2, self.timeout)
        assert rec_payloads(late.messages) == ["after"]

    def test_replay_flag_is_honoured(self, connect: Connect, topic: str, group: str) -> None:
        """``features.replay``: a new group with ``from_beginning`` gets what was published
        before it; without the flag, asking for it is a ConfigurationError."""
        backend = connect().backend
        if not backend.features.replay:
            with pytest.raises(msgbus.ConfigurationError):
                backend.subscribe(topic, group, prefetch=10, from_beginning=True)
            return
        for i in range(5):
            backend.publish(topic, str(i).encode(), key=None, headers={})
        backend.flush(self.timeout)
        sub = backend.subscribe(topic, group, prefetch=10, from_beginning=True)
        try:
            got = drain(sub, 5, self.timeout)
            assert sorted(int(d.body) for d in got) == list(range(5))
        finally:
            sub.close()

    # ------------------------------------------------------------------ order

    def test_per_key_order_with_concurrency(self, connect: Connect, topic: str, group: str) -> None:
        bus = connect()
        tick = itertools.count()

        def work(msg: msgbus.Message) -> None:
            if next(tick) % 7 == 0:
                time.sleep(0.002)  # uneven handler cost, so that lanes interleave

        rec = Recorder(work)
        bus.subscribe(topic, rec, group=group, concurrency=4)
        bus.start()
        keys = [f"key-{k}" for k in range(5)]
        per_key = 40
        for i in range(per_key):
            for key in keys:
                bus.publish(topic, {"key": key, "n": i}, key=key)
        bus.flush(self.timeout)
        msgs = rec.wait_for(per_key * len(keys), self.timeout)
        for key in keys:
            seen = [m.payload["n"] for m in msgs if m.key == key]
            assert seen == list(range(per_key)), f"order broken for {key}"

    def test_per_key_order_across_group_members(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        one, two = connect(), connect()
        if not self.features_of(one).per_key_order:
            pytest.skip("backend does not promise per-key order across members")
        shared = Recorder()
        one.subscribe(topic, shared, group=group, concurrency=2)
        two.subscribe(topic, shared, group=group, concurrency=2)
        one.start()
        two.start()
        keys = [f"key-{k}" for k in range(6)]
        for i in range(30):
            for key in keys:
                one.publish(topic, {"n": i}, key=key)
        one.flush(self.timeout)
        msgs = shared.wait_for(30 * len(keys), self.timeout)
        for key in keys:
            assert [m.payload["n"] for m in msgs if m.key == key] == list(range(30))

    # ------------------------------------------------------------------ failures

    def test_retry_then_dead_letter(self, connect: Connect, topic: str, group: str) -> None:
        bus = connect()
        dead = Recorder()
        bus.subscribe(topic + ".dlq", dead, group="dlq-watch")

        def always_fail(msg: msgbus.Message) -> None:
            raise ValueError(f"boom {msg.payload['n']}")

        failing = Recorder(always_fail)
        bus.subscribe(topic, failing, group=group, max_attempts=3, backoff=0.01)
        bus.start()
        bus.publish(topic, {"n": 1}, key="k", headers={"tenant": "a"}, message_id="m-1")
        bus.flush(self.timeout)
        (letter,) = dead.wait_for(1, self.timeout)
        assert [m.attempt for m in failing.attempts] == [1, 2, 3]
        assert failing.messages == []
        assert letter.payload == {"n": 1}
        assert letter.id == "m-1" and letter.key == "k"
        assert letter.headers["tenant"] == "a"
        assert letter.headers[DLQ_TOPIC] == topic
        assert letter.headers[DLQ_GROUP] == group
        assert letter.headers[DLQ_ATTEMPTS] == "3"
        assert letter.headers[DLQ_ERROR_TYPE] == "builtins.ValueError"
        assert letter.headers[DLQ_ERROR] == "boom 1"

    def test_publish_with_delay_is_scheduled_or_refused(self, url: str, topic: str) -> None:
        """``publish(..., delay=)`` is delivered no sooner than asked where the broker
        schedules natively, and refused at once with NotSupported (nothing sent) elsewhere."""
        arrived: list[float] = []
        with msgbus.connect(url, **self.options) as bus:
            rec = Recorder(lambda _msg: arrived.append(time.monotonic()))
            bus.subscribe(topic, rec, group="delayed")
            bus.start()
            sent = time.monotonic()
            try:
                future = bus.publish(topic, {"n": 1}, delay=1.0)
            except msgbus.NotSupported:
                bus.publish(topic, {"n": 2}).result(self.timeout)
                assert [m.payload for m in rec.wait_for(1, self.timeout)] == [{"n": 2}]
                return
            future.result(self.timeout)
            (msg,) = rec.wait_for(1, self.timeout)
        assert msg.payload == {"n": 1}
        assert arrived[0] - sent >= 0.95, f"delivered after {arrived[0] - sent:.3f}s"

    def test_durable_retry_survives_a_consumer_restart_or_is_refused(
        self, url: str, topic: str, group: str
    ) -> None:
        """``retry_mode="durable"``: a failed attempt goes back to the broker, which
        redelivers it to the group after the backoff, to a member started after the first one
        is gone (attempt 2); refused at subscribe with NotSupported where not native."""

        def fail(_msg: msgbus.Message) -> None:
            raise ValueError("first try")

        first = Recorder(fail)
        bus = msgbus.connect(url, **self.options)
        try:
            try:
                bus.subscribe(
                    topic,
                    first,
                    group=group,
                    retry_mode="durable",
                    retry=msgbus.RetryPolicy(max_attempts=3, backoff=1.0, jitter=0),
                )
            except msgbus.NotSupported:
                return  # refused before anything was subscribed
            bus.start()
            sent = time.monotonic()
            bus.publish(topic, {"n": 1}, message_id="durable-1").result(self.timeout)
            first.wait_for_attempts(1, self.timeout)
        finally:
            bus.close(timeout=self.timeout)  # the retry now waits in the broker, not here
        assert len(first.attempts) == 1
        second = Recorder()
        with msgbus.connect(url, **self.options) as bus:
            bus.subscribe(topic, second, group=group, retry_mode="durable", backoff=1.0)
            bus.start()
            (msg,) = second.wait_for(1, self.timeout)
        assert msg.id == "durable-1" and msg.attempt == 2 and msg.payload == {"n": 1}
        assert time.monotonic() - sent >= 0.95

    def test_retry_succeeds_without_dead_letter(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()

        def flaky(msg: msgbus.Message) -> None:
            if msg.attempt < 3:
                raise RuntimeError("not yet")

        rec = Recorder(flaky)
        bus.subscribe(topic, rec, group=group, max_attempts=5, backoff=0.01)
        bus.start()
        bus.publish(topic, "x").result(self.timeout)
        (msg,) = rec.wait_for(1, self.timeout)
        assert msg.attempt == 3
        assert [m.attempt for m in rec.attempts] == [1, 2, 3]

    def test_retry_does_not_block_other_keys(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        order: list[str] = []
        lock = threading.Lock()
        first_failure = threading.Event()

        def handler(msg: msgbus.Message) -> None:
            with lock:
                order.append(f"{msg.key}{msg.attempt}")
            if msg.key == "slow" and msg.attempt == 1:
                first_failure.set()
                raise RuntimeError("fail once")

        rec = Recorder(handler)
        # one worker thread: only a retry that waits outside the worker lets others through
        bus.subscribe(topic, rec, group=group, concurrency=1, max_attempts=2, backoff=3.0)
        bus.start()
        bus.publish(topic, 0, key="slow").result(self.timeout)
        assert first_failure.wait(self.timeout), "the failing message never arrived"
        for i in range(5):
            bus.publish(topic, i, key=f"fast{i}")
        bus.flush(self.timeout)
        rec.wait_for(6, self.timeout)
        assert order[0] == "slow1" and order[-1] == "slow2", order
        assert sorted(order[1:-1]) == [f"fast{i}1" for i in range(5)]

    def test_reject_dead_letters_at_once(self, connect: Connect, topic: str, group: str) -> None:
        bus = connect()
        dead = Recorder()
        bus.subscribe(topic + ".dlq", dead, group="dlq-watch")

        def reject(msg: msgbus.Message) -> None:
            raise msgbus.Reject("unknown version")

        failing = Recorder(reject)
        bus.subscribe(topic, failing, group=group, max_attempts=5, backoff=0.01)
        bus.start()
        bus.publish(topic, {"version": 99}).result(self.timeout)
        (letter,) = dead.wait_for(1, self.timeout)
        assert len(failing.attempts) == 1
        assert letter.headers[DLQ_ERROR_TYPE] == "msgbus.errors.Reject"

    def test_undecodable_body_goes_to_dead_letter(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        dead, good = Recorder(), Recorder()
        bus.subscribe(topic + ".dlq", dead, group="dlq-watch")
        bus.subscribe(topic, good, group=group)
        bus.start()
        bus.backend.publish(
            topic,
            b"{not json",
            key=None,
            headers={CONTENT_TYPE: "application/json", MESSAGE_ID: "bad-1"},
        ).result(self.timeout)
        bus.publish(topic, {"ok": True}).result(self.timeout)
        assert rec_payloads(good.wait_for(1, self.timeout)) == [{"ok": True}]
        (letter,) = dead.wait_for(1, self.timeout)
        assert letter.body == b"{not json" and letter.id == "bad-1"
        assert letter.headers[DLQ_ERROR_TYPE] == "msgbus.errors.DecodeError"
        assert letter.headers[DLQ_CONTENT_TYPE] == "application/json"

    def test_message_without_content_type_arrives_as_bytes(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        raw, declared = Recorder(), Recorder()
        bus.subscribe(topic, raw, group=group + "-raw")
        bus.subscribe(topic, declared, group=group + "-json", codec="json")
        bus.start()
        bus.backend.publish(topic, b'{"plain": 1}', key=None, headers={}).result(self.timeout)
        (msg,) = raw.wait_for(1, self.timeout)
        assert msg.payload == b'{"plain": 1}' and msg.id
        assert rec_payloads(declared.wait_for(1, self.timeout)) == [{"plain": 1}]

    def test_redelivery_after_consumer_dies_mid_handler(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        entered, release = threading.Event(), threading.Event()

        def stuck(msg: msgbus.Message) -> None:
            entered.set()
            release.wait(self.timeout)

        doomed = connect()
        doomed.subscribe(topic, Recorder(stuck), group=group)
        doomed.start()
        doomed.publish(topic, {"n": 1}, key="k", message_id="crash-1").result(self.timeout)
        assert entered.wait(self.timeout), "the first member never got the message"
        try:
            doomed.close(timeout=0)  # abandons the handler, like a crash
            survivor = connect()
            rec = Recorder()
            survivor.subscribe(topic, rec, group=group)
            survivor.start()
            (msg,) = rec.wait_for(1, self.timeout)
        finally:
            release.set()
        assert msg.id == "crash-1" and msg.payload == {"n": 1}

    def test_member_process_killed_mid_handler_redelivers(
        self, connect: Connect, url: str, api: str, topic: str, group: str, tmp_path: Any
    ) -> None:
        if not self.features_of(connect()).cross_process:
            pytest.skip("backend members cannot live in other processes")
        script = _STUCK_ASYNC_MEMBER if api == "aio" else _STUCK_MEMBER
        child = subprocess.Popen(
            [sys.executable, "-c", script, url, topic, group, json.dumps(self.options)],
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
            assert lines.get(timeout=self.timeout) == "ready"
            publisher = connect()
            publisher.publish(topic, {"n": 1}, key="k", message_id="killed-1").result(self.timeout)
            assert lines.get(timeout=self.timeout) == "entered killed-1"
            child.kill()  # SIGKILL: no goodbye to the broker, no ack
            child.wait(self.timeout)
            survivor = connect()
            rec = Recorder()
            survivor.subscribe(topic, rec, group=group)
            survivor.start()
            (msg,) = rec.wait_for(1, self.timeout)
            assert msg.id == "killed-1" and msg.payload == {"n": 1}
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(self.timeout)

    def test_nack_requeue_redelivers(self, connect: Connect, topic: str, group: str) -> None:
        bus = connect()
        if not self.features_of(bus).requeue:
            pytest.skip("backend has no requeue")
        sub = bus.backend.subscribe(topic, group, prefetch=10)
        try:
            bus.publish(topic, "again", key="k").result(self.timeout)
            first = receive_one(sub, self.timeout)
            first.nack(requeue=True)
            second = receive_one(sub, self.timeout)
            assert second.body == first.body
            assert second.redelivered
            second.ack()
        finally:
            sub.close()

    # ------------------------------------------------------------------ lifecycle

    def test_close_flushes_pending_publishes(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        reader = connect()
        rec = Recorder()
        reader.subscribe(topic, rec, group=group)
        reader.start()
        writer = connect()
        futures = [writer.publish(topic, i, key=str(i % 4)) for i in range(300)]
        writer.close(timeout=self.timeout)
        assert all(f.done() and f.exception() is None for f in futures)
        assert sorted(rec_payloads(rec.wait_for(300, self.timeout))) == list(range(300))
        with pytest.raises(msgbus.BusClosed):
            writer.publish(topic, "late")

    def test_publish_many_gives_one_future_per_message(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        """``publish_many``: one future per message, in order; every message arrives (in
        key order where the backend keeps it); bad input raises and sends nothing; a message
        the backend refuses gets a failed future while the rest are sent."""
        bus = connect()
        rec = Recorder()
        bus.subscribe(topic, rec, group=group)
        bus.start()
        with pytest.raises(msgbus.SerializationError):
            bus.publish_many(topic, [1, {"bad": object()}, 3])  # nothing of it is sent
        futures = bus.publish_many(topic, list(range(60)), keys=[f"k{i % 3}" for i in range(60)])
        assert len(futures) == 60
        for future in futures:
            future.result(self.timeout)
        got = rec.wait_for(60, self.timeout)
        assert sorted(rec_payloads(got)) == list(range(60))
        if self.features_of(bus).per_key_order:
            for k in range(3):
                mine = [m.payload for m in got if m.key == f"k{k}"]
                assert mine == sorted(mine)
        limit = self.features_of(bus).max_message_bytes
        if limit is not None:
            mixed = bus.publish_many(topic, [b"a", b"x" * (limit + 1), b"c"])
            assert mixed[1].exception(self.timeout).__class__ is msgbus.MessageTooLarge
            mixed[0].result(self.timeout)
            mixed[2].result(self.timeout)
            more = rec.wait_for(62, self.timeout)[60:]
            assert sorted(m.payload for m in more) == [b"a", b"c"]

    def test_close_while_blocked_in_receive_returns_promptly(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        sub = bus.backend.subscribe(topic, group, prefetch=10)
        returned = threading.Event()

        def block() -> None:
            sub.receive(10, self.timeout * 2)
            returned.set()

        thread = threading.Thread(target=block, daemon=True)
        thread.start()
        wait_until(lambda: thread.is_alive(), 5, "receiver thread")
        started = time.monotonic()
        sub.close()
        assert returned.wait(5), "receive did not return after close"
        assert time.monotonic() - started < 5

    def test_bus_close_is_prompt_and_idempotent(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        bus = connect()
        bus.subscribe(topic, Recorder(), group=group, concurrency=3)
        bus.start()
        started = time.monotonic()
        bus.close(timeout=10)
        bus.close(timeout=10)
        assert time.monotonic() - started < 10
        assert bus.closed

    def test_in_flight_handler_finishes_and_is_acked_on_close(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        entered, release = threading.Event(), threading.Event()

        def slow(msg: msgbus.Message) -> None:
            entered.set()
            release.wait(self.timeout)

        first = connect()
        done = Recorder(slow)
        first.subscribe(topic, done, group=group)
        first.start()
        first.publish(topic, "once", message_id="drain-1").result(self.timeout)
        assert entered.wait(self.timeout)
        closer = threading.Thread(target=first.close, kwargs={"timeout": self.timeout})
        closer.start()
        release.set()
        closer.join(self.timeout)
        assert rec_payloads(done.messages) == ["once"]
        # acknowledged: a new member of the group does not get it again
        second = connect()
        rec = Recorder()
        second.subscribe(topic, rec, group=group)
        second.start()
        second.publish(topic, "next").result(self.timeout)
        assert rec_payloads(rec.wait_for(1, self.timeout)) == ["next"]

    def test_reserved_and_bad_headers_are_refused(self, connect: Connect, topic: str) -> None:
        bus = connect()
        with pytest.raises(msgbus.ReservedHeader):
            bus.publish(topic, 1, headers={"msgbus-id": "mine"})
        with pytest.raises(msgbus.ReservedHeader):
            bus.publish(topic, 1, headers={"Content-Type": "text/plain"})
        with pytest.raises(msgbus.ConfigurationError):
            bus.publish(topic, 1, headers={"n": 1})  # type: ignore[dict-item]

    #: property-based round trips per backend (each example is one publish and receive)
    property_examples: ClassVar[int] = 25

    def test_arbitrary_headers_and_payloads_round_trip_or_are_refused(
        self, connect: Connect, topic: str, group: str
    ) -> None:
        """Hypothesis: arbitrary ``str -> str`` headers (any text, names and values) and
        payloads (JSON values, bytes, text) arrive unchanged, or ``publish`` refuses them at
        once with a documented :class:`~msgbus.ConfigurationError` (reserved or unusable
        header) or :class:`~msgbus.SerializationError`; never a hang, never a changed value."""
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        bus = connect()
        arrived: dict[str, msgbus.Message] = {}
        ready = threading.Condition()

        def keep(message: msgbus.Message) -> None:
            with ready:
                arrived[message.id] = message
                ready.notify_all()

        bus.subscribe(topic, keep, group=group)
        bus.start()
        text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text,
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
            max_leaves=10,
        )
        payloads = st.one_of(
            json_values.map(lambda v: (v, None)),
            st.binary(max_size=200).map(lambda v: (v, None)),
            text.map(lambda v: (v, "text")),
        )

        @settings(
            max_examples=self.property_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(headers=st.dictionaries(text, text, max_size=5), payload=payloads)
        def round_trip(headers: dict[str, str], payload: tuple[Any, str | None]) -> None:
            value, codec = payload
            message_id = uuid.uuid4().hex
            try:
                future = bus.publish(
                    topic, value, headers=headers, codec=codec, message_id=message_id
                )
            except (msgbus.ConfigurationError, msgbus.SerializationError):
                return  # refused at once, with a documented error
            future.result(self.timeout)
            with ready:
                ready.wait_for(lambda: message_id in arrived, self.timeout)
            assert message_id in arrived, "published, confirmed, never received"
            message = arrived.pop(message_id)
            assert dict(message.headers) == headers
            assert message.payload == value

        round_trip()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def features_of(bus: Any) -> msgbus.Features:
        """The features of the backend behind ``bus``."""
        return bus.backend.features


def rec_payloads(messages: list[msgbus.Message]) -> list[Any]:
    """The payloads of ``messages`` in order."""
    return [m.payload for m in messages]


def receive_one(sub: msgbus.Subscription, timeout: float) -> msgbus.Delivery:
    """Return the next delivery of ``sub``, unsettled; ``AssertionError`` if none in time."""
    return drain(sub, 1, timeout, ack=False)[0]
