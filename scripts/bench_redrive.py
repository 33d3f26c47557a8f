"""What confirming each removal costs a redrive: ``msgbus dlq redrive`` throughput per window.

Usage: ``python scripts/bench_redrive.py rabbitmq|kafka|activemq [N]`` (run outside the
repository's folder or with msgbus installed). Starts the broker with the test harness (or
takes ``MSGBUS_<KIND>_URL``), fills a dead-letter store with N (200) messages, redrives it
with removals not confirmed (as before this existed), confirmed one at a time (``window=1``,
the default: at most one duplicate after a crash) and every 50 (``window=50``), twice each,
and prints messages per second (the read's closing idle second excluded).
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import msgbus
import msgbus.dlq
from msgbus.deadletters import STORE_GROUP, dead_letter_topic
from msgbus.testing.brokers import broker_from_env_or_start

IDLE = 1.0


def run(url: str, options: dict[str, Any], count: int, window: int | None) -> str:
    topic = f"rb.{uuid.uuid4().hex[:8]}"
    with msgbus.connect(url, **options) as bus:
        backend = bus.backend
        backend.ensure_group(dead_letter_topic(topic), STORE_GROUP)
        backend.ensure_group(topic, "sink")
        headers = {"msgbus-dlq-topic": topic}
        sent = [
            backend.publish(dead_letter_topic(topic), b'{"n":1}', key=str(n), headers=headers)
            for n in range(count)
        ]
        for future in sent:
            future.result(60)
        subscribe = backend.subscribe

        def unconfirmed(*args: Any, **kwargs: Any) -> Any:
            sub = subscribe(*args, **kwargs)
            sub.confirm_settled = lambda timeout: False  # type: ignore[method-assign]
            return sub

        if window is None:
            backend.subscribe = unconfirmed  # type: ignore[method-assign]
        start = time.monotonic()
        report = msgbus.dlq.redrive(bus, topic, idle=IDLE, window=window or 1)
        took = time.monotonic() - start - IDLE
    done = len(report.redriven)
    return f"window={window or 'unconfirmed'}: {done} in {took:.2f}s = {done / took:.0f} msg/s"


def main() -> None:
    kind = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    broker = broker_from_env_or_start(kind)
    options = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000} if kind == "kafka" else {}
    try:
        run(broker.url, options, 10, 1)  # warm-up: topics, group coordinator
        for window in (None, 1, 50, None, 1, 50):
            print(kind, run(broker.url, options, count, window), flush=True)
    finally:
        broker.close()


if __name__ == "__main__":
    main()
