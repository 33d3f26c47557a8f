"""Each broker's plain Python client doing the benchmark's work, for comparison with msgbus.

The same JSON bodies, the same topology idea (a topic, a consumer group per subscriber
group), the same durability as msgbus at each profile, one acknowledgement per message:

Each is a best-practice use of its client, never a handicapped one, so that where msgbus is
slower the difference is msgbus's:

- Kafka, confluent-kafka (driver ``confluent``, :mod:`.kafka_confluent`): ``produce`` with
  delivery reports served on a thread; ``consume`` in batches with one async commit per
  batch. Kafka, kafka-python (driver ``kafka-python``, :mod:`.kafka`):
  ``KafkaProducer(acks="all")`` with future callbacks; a ``KafkaConsumer`` group member on a
  poll thread, ``commit_async`` after each poll batch. Topics are created by :func:`prepare`
  with the workload's partitions and replication factor.
- RabbitMQ, pika: publishing on a ``SelectConnection`` I/O thread with pipelined publisher
  confirms (a blocking channel waits a round trip per message); one durable topic exchange
  ``bench.raw``, a queue ``<topic>.<group>`` bound by routing key = topic (quorum for
  ``queue_type=quorum``), persistent messages unless ``persistent=False``. Consuming on a
  ``SelectConnection``, the handler on its I/O thread, with ``basic_qos(prefetch)`` and
  batched acknowledgements
  (``basic_ack(multiple=True)`` once per read batch, at the latest every quarter prefetch).
- ActiveMQ, stomp.py (STOMP 1.2): SEND to ``/topic/VirtualTopic.<topic>`` with a receipt
  each, receipts windowed by the caller (STOMP has no cumulative receipt); consuming
  ``/queue/Consumer.<group>.VirtualTopic.<topic>`` with ``ack:client-individual``, an ACK
  per message sent at once (ActiveMQ dispatches later to a consumer that holds ACKs back),
  and ``activemq.prefetchSize``.

One module per broker holds every piece of that broker's plain client the benchmarks use:
:mod:`.kafka` and :mod:`.kafka_confluent`, :mod:`.rabbitmq` (also the raw pika
measurements of ``python -m msgbus.bench.rabbitmq``; :mod:`.rabbitmq_aio` its aio-pika
ones) and :mod:`.activemq` (also those of ``python -m msgbus.bench.activemq``);
:mod:`.common` what they share. Only the module of the client in use is imported, when
first needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from msgbus.bench.interface import Handler, Receiver, Sender

__all__ = ["open_receiver", "open_sender", "prepare"]


def prepare(kind: str, url: str, options: dict[str, Any], topics: Sequence[str]) -> None:
    """Create what the raw clients need before consumers join (Kafka: the topics with
    ``options["partitions"]`` and ``options["replication_factor"]`` (default 1); others:
    nothing, their consumers declare)."""
    if kind != "kafka":
        return
    from msgbus.bench.raw.kafka import create_topics

    replication = int(options.get("replication_factor") or 1)
    create_topics(url, topics, int(options.get("partitions", 3)), replication)


def open_sender(kind: str, url: str, options: dict[str, Any], driver: str = "") -> Sender:
    """A raw :class:`~msgbus.bench.interface.Sender` for ``kind`` (ValueError if none);
    ``driver`` picks the Kafka client (``confluent``; otherwise kafka-python)."""
    if kind == "kafka" and driver == "confluent":
        from msgbus.bench.raw.kafka_confluent import ConfluentSender

        return ConfluentSender(url)
    if kind == "kafka":
        from msgbus.bench.raw.kafka import KafkaSender

        return KafkaSender(url)
    if kind == "rabbitmq":
        from msgbus.bench.raw.rabbitmq import PikaSender

        return PikaSender(url, bool(options.get("persistent", True)))
    if kind == "activemq":
        from msgbus.bench.raw.activemq import StompSender

        return StompSender(url, bool(options.get("persistent", True)))
    raise ValueError(f"no raw client for {kind!r}")


def open_receiver(
    kind: str,
    url: str,
    options: dict[str, Any],
    topics: Sequence[str],
    group: str,
    handler: Handler,
    *,
    prefetch: int,
    driver: str = "",
) -> Receiver:
    """A raw :class:`~msgbus.bench.interface.Receiver` for ``kind`` (ValueError if none);
    ``driver`` as for :func:`open_sender`."""
    if kind == "kafka" and driver == "confluent":
        from msgbus.bench.raw.kafka_confluent import ConfluentReceiver

        return ConfluentReceiver(url, topics, group, handler)
    if kind == "kafka":
        from msgbus.bench.raw.kafka import KafkaReceiver

        return KafkaReceiver(url, topics, group, handler)
    if kind == "rabbitmq":
        from msgbus.bench.raw.rabbitmq import PikaReceiver

        quorum = options.get("queue_type") == "quorum"
        return PikaReceiver(url, topics, group, handler, prefetch, quorum)
    if kind == "activemq":
        from msgbus.bench.raw.activemq import StompReceiver

        return StompReceiver(url, topics, group, handler, prefetch)
    raise ValueError(f"no raw client for {kind!r}")
