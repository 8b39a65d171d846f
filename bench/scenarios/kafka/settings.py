"""The Kafka scenario's columns, limits of librdkafka's mock cluster, and cell ids."""

from __future__ import annotations

from bench.schema import COLUMNS

#: Columns appended after bench.schema.COLUMNS in this scenario's runs.csv.
KAFKA_COLUMNS = {
    "scenario": "str: 'kafka' (the Kafka pipeline scenario)",
    "kafka_cluster": "str: 'mock' (librdkafka's built-in mock cluster: not a broker's figures) or 'real'",
    "partitions": "int: partitions of the input topic",
    "events_preloaded": "int: events written to the input topic before the run",
    "output_messages": "int: messages found on the output topic (more than events_preloaded: duplicates)",
    "consumer_lag": "int: input messages not yet committed by the source group at the window's end "
                    "(sum over partitions of high watermark - committed offset)",
    "sink_user_s": "float: user CPU seconds of the sink process inside the window",
    "sink_sys_s": "float: system CPU seconds of the sink process inside the window",
    "broker_user_s": "float: user CPU seconds of the mock cluster's process inside the window (empty: real)",
    "broker_sys_s": "float: system CPU seconds of the mock cluster's process inside the window (empty: real)",
    "pipeline_latency_p50_ms": "float: source poll -> sink delivery confirmed, median (window)",
    "pipeline_latency_p99_ms": "float: source poll -> sink delivery confirmed, 99th percentile (window)",
    "source_pauses": "int: times the sources paused their partitions for backpressure (turbo only)",
}

ALL_COLUMNS = [*COLUMNS, *KAFKA_COLUMNS]

BACKENDS = ("turbo", "mpq-batch")

#: Header the source adds to each record: the clock_ns of its poll.
POLL_HEADER = "bench-poll-ns"

#: How often the parent checks progress (it mostly sleeps).
TICK_S = 0.002

#: librdkafka's mock cluster keeps at most this many bytes per partition
#: (rdkafka_mock.c: max_size 5 MiB, max_cnt 100000 message sets) and deletes
#: the oldest data beyond it, so a preloaded topic larger than that loses
#: messages before the source reads them.  Runs that would come near it are
#: refused up front.
MOCK_PARTITION_BYTES = 5 * 1024 * 1024
MOCK_PARTITIONS = 4
#: Bytes a record costs in the mock's log beyond its JSON value (key, record
#: and batch headers, and the poll-time header the output copy carries).
_RECORD_OVERHEAD = 120

#: A run whose sink delivers nothing new for this long has failed.
STALL_S = 60.0


def mock_max_events(event_bytes: int) -> int:
    """The most events a run against the mock cluster may use (90 % of its per-partition cap)."""
    return int(0.9 * MOCK_PARTITION_BYTES * MOCK_PARTITIONS / (event_bytes + _RECORD_OVERHEAD))


def kafka_available() -> tuple[bool, str]:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False, 'confluent-kafka is not installed: pip install "turbo-queue-ng[kafka]"'
    return True, ""


def cell_id(backend: str, start_method: str, sources: int, consumers: int, batch_size: int,
            work_us: float, workload: str, event_bytes: int) -> str:
    return (f"kafka-{backend}-{start_method}-s{sources}-c{consumers}-b{batch_size}"
            f"-w{work_us:g}-{workload}-e{event_bytes}")


