"""The Kafka pipeline as a benchmark scenario.

Reproduce one run (needs ``pip install "turbo-queue-ng[kafka]"``)::

    python -m bench.scenarios.kafka --consumers 2 --work-us 50 --events 20000 --out results/kafka-mock
    python -m bench.scenarios.kafka --backend turbo,mpq-batch --consumers 1,2 --repeat 3
    python -m bench.scenarios.kafka --bootstrap-servers broker1:9092 ...     # a real cluster

The pipeline our users run, one machine's share of it::

    input topic -> S source processes -> queue A -> C worker processes -> queue B -> sink process -> output topic

``--backend turbo``: the connectors of :mod:`turbo_queue.kafka`
(:class:`~turbo_queue.kafka.KafkaSource` committing only sealed offsets,
:func:`~turbo_queue.kafka.run_worker`, :class:`~turbo_queue.kafka.KafkaSink`
acking only confirmed batches).  ``--backend mpq-batch``: the same stages
around two ``multiprocessing.Queue`` carrying lists of ``batch_size`` records
(the hand-batched baseline; offsets are stored once a list is handed to the
queue, so it is not crash-safe: a throughput reference only).

Timeline of a run:

1. Without ``--bootstrap-servers`` a helper process starts librdkafka's
   built-in mock cluster (``test.mock.num.brokers=1``, loopback only) and
   lives for the whole run; every stage connects to it.  **The mock's figures
   are not a broker's**: it keeps messages in memory in that one process,
   without replication or disk, and its CPU shows up as ``broker_*`` columns.
   Its topics have 4 partitions (it cannot create topics, it auto-creates
   them with 4), so ``--partitions`` applies to real clusters only, and it
   keeps at most 5 MiB per partition, deleting older messages: runs of more
   than :func:`mock_max_events` events (about 45,000 of 300 bytes) are refused
   rather than silently losing unread input.  A run whose input topic lost
   messages to retention (any cluster) fails with that reason.
2. A preload process writes ``--events`` events (bench.measuring.events, JSON values,
   key = the event's ``seq``) to a fresh input topic.
3. The stages start, each signals ready, then all start at once.  Workers run
   the calibrated per-event work of bench.measuring.work on the decoded event.
4. The window: from the moment the sink has delivered ``--window-from`` of
   the events (default 10 %) to the moment it has delivered
   ``--window-to`` (90 %), so group join and start-up are excluded, and so is
   the tail.  The parent samples every process with psutil at both edges and
   reads the group's consumer lag (committed offsets vs high watermarks of
   the input topic) at the end edge.
5. Then the sources stop (seal, commit, leave), queue A is closed, workers
   drain, queue B is closed, the sink drains, and the parent reads the
   output topic back: every input key must be there (``lost``; ``duplicated``
   counts keys seen more than once).

Latency: ``latency_*`` is from the input message's Kafka timestamp to the
sink's delivery confirmation.  The topic is preloaded, so this includes the
time a message waited in the topic backlog (it grows through the run, like
the lag); ``pipeline_latency_*`` is from the source's poll to the sink's
confirmation, the time spent in this machine's pipeline.

Output: ``runs.csv`` with the columns of :data:`bench.schema.COLUMNS` in order,
then :data:`KAFKA_COLUMNS` appended, and ``meta.json`` (whose ``kafka`` key says
whether the mock cluster or a real one was used).  Schema columns map as:
``producers`` = source processes, ``consumers`` = worker processes,
``producer_*_s`` = sources' CPU, ``consumer_*_s`` = workers' CPU, and
``overhead_us_per_event`` counts sources, workers and sink (not the broker).
"""


from bench.scenarios.kafka.cli import append_rows, build_parser, kafka_meta, main
from bench.scenarios.kafka.run import run_kafka_cell
from bench.scenarios.kafka.settings import (
    ALL_COLUMNS,
    BACKENDS,
    KAFKA_COLUMNS,
    cell_id,
    mock_max_events,
)

__all__ = [
    "ALL_COLUMNS",
    "BACKENDS",
    "KAFKA_COLUMNS",
    "append_rows",
    "build_parser",
    "cell_id",
    "kafka_meta",
    "main",
    "mock_max_events",
    "run_kafka_cell",
]
