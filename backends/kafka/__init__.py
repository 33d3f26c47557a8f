"""Apache Kafka (the reference broker), and Kafka-protocol brokers such as tansu, through one
of two drivers: kafka-python (>= 3.0, the default; ``pip install "msgbus[kafka]"``) or
confluent-kafka, librdkafka's Python binding (``driver=confluent``;
``pip install "msgbus[kafka-confluent]"``). Both hold the same contract below, with the same
options, and put the same records on the wire: a message published through one driver is
read unchanged by the other and by plain clients.

Layout: what both drivers share is ``common.py`` (the backend class: option parsing, publish
checks, topic rules, where a new group starts), ``options.py`` (options and their mapping to
each library's settings, header and key mapping) and ``subscription.py`` (receive buffer,
window, offset and rebalance bookkeeping), built on the toolkit (:mod:`msgbus.backendkit`);
``kafka_python.py`` and ``confluent.py`` (with ``confluent_consumer.py`` and
``confluent_errors.py``) hold the calls into their library. A driver's package is imported
only when a backend with that driver is created.

Features
    - ``consumer_groups``: msgbus group G on topic T is the Kafka consumer group ``G:T`` (see
      ``group_id_template``); its members share the topic's partitions.
    - ``per_key_order``: the key is the Kafka record key, so one key lives in one partition
      and reaches one member at a time, in publish order. Around a rebalance or a crash a
      message may be delivered again (at-least-once). Different partitions (so different
      keys) have no order between them.
    - ``persistent``: a publish resolves only on the acknowledgement of every in-sync replica
      (``acks=all``). Whether that survives a broker restart is the broker's business:
      Apache Kafka writes a log; tansu with ``memory://`` storage loses everything.
    - ``requeue``: ``nack(requeue=True)`` hands the record out again from this member's buffer,
      marked redelivered; its offset stays uncommitted until it is acknowledged, so a crash
      redelivers it to another member.
    - ``replay`` (``from_beginning``), ``cross_process``; no native dead-lettering (the bus
      publishes to ``<topic>.dlq``); ``max_message_bytes`` is the option of that name.

    Publishing: one idempotent, batching producer per backend; the future resolves on the
    broker's acknowledgement (kafka-python: the producer's callback on its sender thread;
    confluent: the delivery report, served by a poll thread of the backend that runs all the
    time, so no publish waits for a ``flush``). Topics are created on first use (publish or
    subscribe) with ``partitions`` partitions, or must exist (``auto_create=false``).

    Consuming: every subscription owns a consumer driven by one thread at a time: its own
    consumer thread, or a bus worker that is idle and polls it directly, so a record reaches
    its handler on the thread that fetched it (the driver's consumer is not thread-safe, and
    must keep polling to take part in rebalances; when every worker is busy the consumer
    thread polls).
    Offsets are committed for settled deliveries only, up to the first unsettled one of each
    partition. On a rebalance this member stops handing out records of the partitions it
    loses, waits up to ``revoke_timeout_ms`` for their in-flight deliveries, commits, and
    lets them go (kafka-python: its asynchronous rebalance listener; confluent: ``on_revoke``,
    ``on_lost``, ``on_assign``). A new group starts at the end of each partition: ListOffsets,
    verified against a Fetch high watermark until the broker has shown it answers ListOffsets right
    (Apache Kafka does, tansu does not; see ``docs/kafka.md``), committed at once, so a
    message published after ``subscribe`` returns reaches the group. Before joining, the
    backend waits (bounded) until the topic's partitions have leaders and the member's own
    metadata lists them, so a topic created a moment ago works too. A private subscription
    (``group=None``) uses no consumer group: one member owns every partition the topic has
    when it subscribes, starting at the end, and commits nothing.

URL form
    ``kafka://host[:port][,host[:port]...][?option=value&...]``; the port defaults to 9092.
    ``kafka://user:password@host:9092`` authenticates with SASL (``security_protocol`` then
    defaults to ``sasl_plaintext``, the mechanism to ``plain``). The password is never logged,
    shown in a repr or put in an error message.

Options (URL query or keyword; keywords win)
    - ``driver``: kafka-python, confluent ("kafka-python"). Missing package:
      ``BackendNotInstalled`` naming the extra to install.
    - ``client_id`` (str, "msgbus").
    - ``security_protocol``: plaintext, ssl, sasl_plaintext, sasl_ssl (default plaintext, or
      sasl_plaintext with a user in the URL); ``sasl_mechanism``: plain, scram-sha-256,
      scram-sha-512 ("plain"); ``username`` / ``password`` (normally from the URL);
      ``ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile`` (PEM file paths);
      ``ssl_check_hostname`` (true).
    - ``compression``: none, gzip, snappy, lz4, zstd ("none"; all but gzip need their Python
      package, for producers and consumers alike).
    - ``auto_offset_reset``: latest, earliest: where a new group starts ("latest").
    - ``session_timeout_ms`` (6000), ``heartbeat_interval_ms`` (1000): short, so a dead member
      is noticed quickly (a tansu group join takes about 3 s whatever they are).
    - ``fetch_max_wait_ms`` (10): tansu's fetch long-poll always waits this long.
    - ``linger_ms`` (0), ``batch_size`` (262144): producer batching; records sent while a
      request is in flight are batched anyway. Below 256 KiB a burst queues a second batch
      per partition, and kafka-python then wakes its sender thread on every record (see
      docs/kafka.md).
    - ``partitions`` (3), ``replication_factor`` (min(3, brokers in the
      cluster)): for topics this backend creates;
      ``auto_create`` (true): create topics on first use, else raise ``TopicNotFound``.
    - ``max_message_bytes`` (4 MiB): larger bodies raise ``MessageTooLarge`` at once; created
      topics get a matching ``max.message.bytes``.
    - ``idempotent`` (true): idempotent producer where the broker supports it.
    - ``request_timeout_ms`` (15000); ``connect_timeout`` (seconds, as on every backend) or
      its alias ``connect_timeout_ms`` (10000): an unreachable broker raises
      ``BrokerUnavailable`` after this long; ``delivery_timeout_ms`` (120000, as Kafka's own
      producer): the producer retries with backoff until then, after which the publish
      future fails with ``BrokerUnavailable``.
    - ``revoke_timeout_ms`` (5000): how long a rebalance waits for in-flight deliveries of a
      partition this member loses; ``subscribe_timeout_ms`` (60000): bound on joining.
    - ``group_id_template`` ("{group}:{topic}"): the Kafka group id of a msgbus group on a
      topic. "{group}" maps groups one to one, but then a group subscribed to several topics
      is one Kafka group, and a member joining on any of them stops consumption on all
      while the group rebalances.
"""

from .common import KafkaBackend, KafkaOptions, driver_class

__all__ = ["KafkaBackend", "KafkaOptions", "driver_class"]
