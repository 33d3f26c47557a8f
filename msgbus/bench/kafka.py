"""Kafka benchmark: msgbus on Kafka next to plain kafka-python, in one run on one broker.

``python -m msgbus.bench.kafka [--url kafka://HOST:PORT] [--messages N] [--repeats R]
[--rate 1000] [--seconds 10] [--api sync|aio] [--driver kafka-python|confluent|both]``

``--driver`` picks the Kafka driver measured: its raw client next to msgbus on it
(``confluent``: raw confluent-kafka, msgbus with ``driver=confluent``, and msgbus's
``publish_many``; ``both``: every row of both drivers, in one run, with their ratios).

``--api aio`` runs :mod:`msgbus.bench.kafka_aio` instead: ``msgbus.aio`` next to raw aiokafka
(and the blocking msgbus) in one run.

Without ``--url`` (or ``$MSGBUS_KAFKA_URL``) it starts the harness's Apache Kafka (KRaft, one
node), or with ``--impl tansu`` the harness's tansu (Kafka wire protocol, in-memory storage),
and says which: figures measured on tansu are not Apache Kafka's.

Measured with ~200-byte JSON payloads on a topic of 3 partitions, each run on a fresh topic:

- produce: N messages as fast as possible with ``acks=all``, until the last is acknowledged;
  raw = ``KafkaProducer.send(json.dumps(...))`` + ``flush``, msgbus = ``bus.publish`` +
  ``bus.flush``. For reference, raw again with the record headers and timestamp msgbus
  sends (content type and message id), and raw with those headers plus what msgbus adds per
  publish on the driver's side: a ``concurrent.futures.Future`` resolved from the producer's
  callback.
- consume: N messages published beforehand by msgbus (so both readers see the same records,
  headers included), each JSON-decoded; the clock runs from the first message handled to
  the last. raw = ``KafkaConsumer.poll`` with a commit (async) per poll batch, msgbus = a
  subscriber (one worker) acknowledging each message.
- end-to-end latency at a fixed rate (open loop): each payload carries its intended send
  time; latency = handling time minus intended time, so a stalled sender shows as latency.

Throughputs are the median of ``--repeats`` alternating runs, each printed with the process
CPU time it took per message (all threads: the GIL makes that the budget that bounds a Python
client). Targets (issue 5): msgbus at least 0.9x raw on both throughputs, p99 latency no worse
than raw.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgbus
from msgbus.bench.clock import Clock as _Clock
from msgbus.bench.clock import Result
from msgbus.bench.clock import paced as _paced
from msgbus.bench.payload import ACCOUNT_CREATED
from msgbus.bench.raw import kafka as raw_kafka
from msgbus.bench.raw.kafka import (
    BATCH_SIZE,
    PARTITIONS,
    raw_latency,
    raw_produce,
    raw_produce_with_futures,
    raw_produce_with_headers,
)
from msgbus.bench.raw.kafka import new_topic as _new_topic

__all__ = [
    "main",
    "msgbus_consume",
    "msgbus_latency",
    "msgbus_produce",
    "raw_consume",
    "raw_latency",
    "raw_produce",
    "raw_produce_with_futures",
    "raw_produce_with_headers",
]

PAYLOAD = ACCOUNT_CREATED
"""About 200 bytes as JSON (with the ``sent_ns`` field the latency runs add)."""

OPTIONS: dict[str, Any] = {}
"""Keyword options for ``msgbus.connect`` (the backend defaults; filled by ``main``)."""

FILL_OPTIONS: dict[str, Any] = {}
"""Options of the bus that fills the consume runs' topics (the fastest driver installed)."""


def _payload(sent_ns: int = 0) -> dict[str, Any]:
    return {**PAYLOAD, "sent_ns": sent_ns}


# --------------------------------------------------------------------------- produce


def msgbus_produce(url: str, messages: int, options: dict[str, Any] | None = None) -> Result:
    """``bus.publish`` of ``messages`` JSON payloads, until all confirmed."""
    topic = _new_topic(url)
    bus = msgbus.connect(url, **(OPTIONS if options is None else options))
    try:
        bus.publish(topic, {}).result(30)
        payload = _payload()
        clock = _Clock()
        for _ in range(messages):
            bus.publish(topic, payload)
        bus.flush(120)
        return clock.result(messages)
    finally:
        bus.close()


# --------------------------------------------------------------------------- consume


def _filled_topic(url: str, messages: int) -> str:
    """A fresh topic holding ``messages`` msgbus-published JSON messages."""
    topic = _new_topic(url)
    bus = msgbus.connect(url, **FILL_OPTIONS)
    try:
        payload = _payload()
        for _ in range(messages):
            bus.publish(topic, payload)
        bus.flush(120)
    finally:
        bus.close()
    return topic


def raw_consume(url: str, messages: int) -> Result:
    """A plain ``KafkaConsumer`` group member (JSON decode, commit per poll batch) on a topic
    msgbus filled (:func:`msgbus.bench.raw.kafka.raw_consume`)."""
    return raw_kafka.raw_consume(url, _filled_topic(url, messages), messages)


def msgbus_consume(url: str, messages: int, options: dict[str, Any] | None = None) -> Result:
    """A msgbus subscriber (one worker, acknowledging each) handling ``messages`` messages."""
    topic = _filled_topic(url, messages)
    bus = msgbus.connect(url, **(OPTIONS if options is None else options))
    done = threading.Event()
    count = 0
    clock: _Clock | None = None
    result: Result = (0.0, 0.0)

    def handle(msg: msgbus.Message) -> None:
        nonlocal count, clock, result
        count += 1
        if clock is None:
            clock = _Clock()
        if count == messages:
            result = clock.result(messages - 1)
            done.set()

    try:
        bus.subscribe(topic, handle, group=f"bus-{uuid.uuid4().hex[:8]}", from_beginning=True)
        bus.start()
        if not done.wait(120):
            raise RuntimeError(f"msgbus handled {count} of {messages} messages")
        return result
    finally:
        bus.close()


# --------------------------------------------------------------------------- latency


def msgbus_latency(
    url: str, rate: float, seconds: float, options: dict[str, Any] | None = None
) -> list[float]:
    """End-to-end latencies (ms) of msgbus publish → handler at ``rate`` msg/s."""
    topic = _new_topic(url)
    count = int(rate * seconds)
    latencies: list[float] = []
    done = threading.Event()
    warm = threading.Event()

    def handle(msg: msgbus.Message) -> None:
        if not warm.is_set():
            warm.set()
            return
        latencies.append((time.monotonic_ns() - msg.payload["sent_ns"]) / 1e6)
        if len(latencies) >= count:
            done.set()

    bus = msgbus.connect(url, **(OPTIONS if options is None else options))
    try:
        bus.subscribe(topic, handle, group=f"bus-{uuid.uuid4().hex[:8]}")
        bus.start()
        bus.publish(topic, _payload(time.monotonic_ns())).result(30)
        if not warm.wait(30):
            raise RuntimeError("msgbus subscriber never got the warm-up message")
        _paced(rate, count, lambda intended: bus.publish(topic, _payload(intended)))
        bus.flush(60)
        done.wait(60)
    finally:
        bus.close()
    return latencies


# --------------------------------------------------------------------------- report


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _row(runs: list[Result]) -> str:
    rates = [rate for rate, _ in runs]
    cpu = statistics.median(us for _, us in runs)
    return (
        f"{statistics.median(rates):>9,.0f} msg/s ({min(rates):,.0f}-{max(rates):,.0f})"
        f"  cpu {cpu:5.1f} us/msg"
    )


def _rate(runs: list[Result]) -> float:
    return statistics.median(rate for rate, _ in runs)


def _measurements(driver: str) -> list[tuple[str, str, Callable[[str, int], Result]]]:
    """(label, key, function) of the throughput rows of ``--driver``."""
    rows: list[tuple[str, str, Callable[[str, int], Result]]] = []
    if driver in ("confluent", "both"):
        from msgbus.bench import kafka_confluent as ck

        confluent = {**OPTIONS, "driver": "confluent"}
        rows += [
            ("produce  raw confluent-kafka", "cp", ck.raw_produce),
            ("produce  raw confluent + same headers", "ch", ck.raw_produce_with_headers),
            ("produce  msgbus on confluent", "mcp", lambda u, n: msgbus_produce(u, n, confluent)),
            (
                "produce  msgbus on confluent, publish_many",
                "mcb",
                lambda u, n: msgbus_produce_many(u, n, confluent),
            ),
        ]
    if driver in ("kafka-python", "both"):
        rows += [
            ("produce  raw kafka-python", "rp", raw_produce),
            ("produce  raw + same headers", "rh", raw_produce_with_headers),
            ("produce  raw + headers + Future", "rf", raw_produce_with_futures),
            ("produce  msgbus on kafka-python", "mp", msgbus_produce),
        ]
    if driver in ("confluent", "both"):
        from msgbus.bench import kafka_confluent as ck

        confluent = {**OPTIONS, "driver": "confluent"}
        rows += [
            ("consume  raw confluent-kafka", "cc", ck.raw_consume),
            ("consume  msgbus on confluent", "mcc", lambda u, n: msgbus_consume(u, n, confluent)),
        ]
    if driver in ("kafka-python", "both"):
        rows += [
            ("consume  raw kafka-python", "rc", raw_consume),
            ("consume  msgbus on kafka-python", "mc", msgbus_consume),
        ]
    return rows


def msgbus_produce_many(url: str, messages: int, options: dict[str, Any] | None = None) -> Result:
    """``bus.publish_many`` of ``messages`` JSON payloads in batches of 1,000, until all
    confirmed."""
    topic = _new_topic(url)
    bus = msgbus.connect(url, **(OPTIONS if options is None else options))
    try:
        bus.publish(topic, {}).result(30)
        payload = _payload()
        clock = _Clock()
        done = 0
        while done < messages:
            batch = min(1000, messages - done)
            bus.publish_many(topic, [payload] * batch)
            done += batch
        bus.flush(120)
        return clock.result(messages)
    finally:
        bus.close()


def main(argv: list[str] | None = None) -> None:
    """Run every measurement once against one broker and print figures and ratios."""
    parser = argparse.ArgumentParser(prog="python -m msgbus.bench.kafka", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("MSGBUS_KAFKA_URL"))
    parser.add_argument("--messages", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--impl",
        choices=("apache", "tansu"),
        default="apache",
        help="which broker to start when no --url is given (default: Apache Kafka)",
    )
    parser.add_argument(
        "--api",
        choices=("sync", "aio"),
        default="sync",
        help="sync: msgbus next to kafka-python; aio: msgbus.aio next to aiokafka",
    )
    parser.add_argument(
        "--driver",
        choices=("kafka-python", "confluent", "both"),
        default="kafka-python",
        help="which Kafka driver's rows (msgbus and the raw client) to run",
    )
    args = parser.parse_args(argv)
    if args.driver != "kafka-python":
        FILL_OPTIONS["driver"] = "confluent"

    broker = None
    url = args.url
    if url is None:
        from msgbus.testing.brokers import KAFKA_IMPLS

        broker = KAFKA_IMPLS[args.impl]().start()
        url = broker.url
        description = broker.description
    else:
        description = f"the broker at {url} (given by URL; check which product it is)"
    latencies: dict[str, list[float]] = {}
    try:
        print(f"broker: {description}")
        if args.api == "aio":
            from msgbus.bench.kafka_aio import run as run_aio

            print(
                f"{args.messages:,} messages of ~200 bytes JSON, acks=all, {PARTITIONS} "
                f"partitions, {args.repeats} alternating runs (median, min-max)\n"
            )
            run_aio(url, args.messages, args.repeats)
            return
        print(
            f"{args.messages:,} messages of ~200 bytes JSON, acks=all, {PARTITIONS} partitions, "
            f"producers' batch_size {BATCH_SIZE:,}, {args.repeats} alternating runs "
            f"(median, min-max); drivers: {args.driver}\n"
        )
        measurements = _measurements(args.driver)
        results: dict[str, list[Result]] = {key: [] for _, key, _ in measurements}
        for _ in range(args.repeats):
            for _, key, measure in measurements:
                results[key].append(measure(url, args.messages))
        if args.driver in ("confluent", "both"):
            from msgbus.bench import kafka_confluent as ck

            latencies["raw confluent-kafka"] = ck.raw_latency(url, args.rate, args.seconds)
            latencies["msgbus on confluent"] = msgbus_latency(
                url, args.rate, args.seconds, {**OPTIONS, "driver": "confluent"}
            )
        if args.driver in ("kafka-python", "both"):
            latencies["raw kafka-python"] = raw_latency(url, args.rate, args.seconds)
            latencies["msgbus on kafka-python"] = msgbus_latency(url, args.rate, args.seconds)
    finally:
        if broker is not None:
            broker.close()
    _report(args, measurements, results, latencies)


def _report(
    args: argparse.Namespace,
    measurements: list[tuple[str, str, Callable[[str, int], Result]]],
    results: dict[str, list[Result]],
    latencies: dict[str, list[float]],
) -> None:
    ok = {True: "ok", False: "MISSED"}
    for label, key, _ in measurements:
        print(f"{label:42s} {_row(results[key])}")
    print(f"\nlatency at {args.rate:,.0f} msg/s for {args.seconds:g}s:")
    p99 = {}
    for name, values in latencies.items():
        p99[name] = _percentile(values, 0.99)
        print(
            f"  {name:24s} p50 {_percentile(values, 0.5):7.2f} ms  p99 {p99[name]:7.2f} ms"
            f"  ({len(values):,} samples)"
        )
    print()

    def ratio(label: str, a: str, b: str, target: str = "", passed: bool | None = None) -> None:
        value = _rate(results[a]) / _rate(results[b])
        goal = f" (target {target}: {ok[bool(passed if passed is not None else True)]})"
        print(f"{label} {value:.2f}{goal if target else ''}")

    if "cp" in results:
        mcp, mcb, mcc = _rate(results["mcp"]), _rate(results["mcb"]), _rate(results["mcc"])
        print(
            f"msgbus on confluent publishes {mcp:,.0f} msg/s "
            f"(target >= 150,000: {ok[mcp >= 150_000]})"
        )
        print(
            f"msgbus on confluent consumes {mcc:,.0f} msg/s "
            f"(target >= 100,000: {ok[mcc >= 100_000]})"
        )
        ratio("produce msgbus/raw (confluent)", "mcp", "cp")
        ratio("produce msgbus/(raw + same headers) (confluent)", "mcp", "ch")
        ratio(
            "produce publish_many/(raw + same headers) (confluent)",
            "mcb",
            "ch",
            ">= 0.5",
            mcb / _rate(results["ch"]) >= 0.5,
        )
        ratio("consume msgbus/raw (confluent)", "mcc", "cc")
        cp99, mp99 = p99["raw confluent-kafka"], p99["msgbus on confluent"]
        print(
            f"p99 msgbus/raw (confluent) {mp99 / cp99:.2f} "
            f"(target <= 1.1: {ok[mp99 <= 1.1 * cp99]})"
        )
    if "rp" in results:
        ratio("produce msgbus/raw (kafka-python)", "mp", "rp")
        ratio("produce msgbus/(raw + same headers) (kafka-python)", "mp", "rh")
        ratio("produce msgbus/(raw + headers + Future) (kafka-python)", "mp", "rf")
        ratio("consume msgbus/raw (kafka-python)", "mc", "rc")
        rp99, mp99 = p99["raw kafka-python"], p99["msgbus on kafka-python"]
        print(
            f"p99 msgbus/raw (kafka-python) {mp99 / rp99:.2f} "
            f"(target <= 1.1: {ok[mp99 <= 1.1 * rp99]})"
        )
    if "cp" in results and "rp" in results:
        four = _rate(results["mcp"]) >= 4 * _rate(results["mp"])
        ratio("produce msgbus on confluent / msgbus on kafka-python", "mcp", "mp", ">= 4", four)
        ratio("consume msgbus on confluent / msgbus on kafka-python", "mcc", "mc")


if __name__ == "__main__":
    main()
