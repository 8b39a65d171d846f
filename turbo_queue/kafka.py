"""Kafka in, Kafka out: source and sink connectors around turbo_queue.

Install with ``pip install "turbo-queue-ng[kafka]"`` (it adds confluent-kafka).
``import turbo_queue`` never needs it; only this module does.

The pipeline::

    topic --KafkaSource--> queue A --run_worker(fn) x C--> queue B --KafkaSink--> topic

Every stage is at-least-once, and every hand-off happens in the order that
keeps it so:

* :class:`KafkaSource` (a Kafka consumer in a consumer group) puts each
  message into queue A as a :class:`KafkaRecord` and commits a partition's
  offset only once every message up to it is in a **sealed** batch.  A source
  that dies loses at most the items it had not sealed yet, and those were
  never committed: the next owner of the partition reads them again.
* :func:`run_worker` takes a batch from queue A, applies ``fn`` to each item,
  puts the results into queue B and seals them, and only then acks the input
  batch.  A worker that dies before the ack has its input batch delivered
  again (duplicates in queue B, never a loss).
* :class:`KafkaSink` takes a batch from queue B, produces every item, waits
  until the Kafka producer has a delivery report for each, and only then acks
  the batch.  If any message finally failed (after librdkafka's own retries),
  the batch goes back to ready and the error is logged; nothing is dropped.

Backpressure flows upstream: when queue A holds ``max_ready`` sealed batches,
the source pauses its partitions (and keeps polling, so it stays in the
group) instead of buffering; it buffers at most one batch being filled plus
one poll's worth of messages.

Configuration is plain confluent-kafka config dicts; nothing of Kafka's is
re-implemented here (retries, timeouts, idempotence: librdkafka's settings).
See docs/kafka.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import confluent_kafka  # noqa: F401  (the stages' modules import it too; this says what is missing)
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "turbo_queue.kafka needs confluent-kafka, an optional extra: "
        'pip install "turbo-queue-ng[kafka]"'
    ) from _exc

# The stages live in private modules by concept (the source, the sink, what
# they share); this module is their one public surface, and the import above
# is what a user without the extra meets first.
from ._errors import Closed, Empty
from ._kafka_run import log, pause, stop_requested
from ._kafka_sink import DeliveryFailed, KafkaSink
from ._kafka_source import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    KafkaRecord,
    KafkaSource,
)
from ._queue import Queue

__all__ = [
    "TIMESTAMP_CREATE_TIME",
    "TIMESTAMP_LOG_APPEND_TIME",
    "TIMESTAMP_NOT_AVAILABLE",
    "DeliveryFailed",
    "KafkaRecord",
    "KafkaSink",
    "KafkaSource",
    "run_worker",
]


def run_worker(in_queue: Queue, out_queue: Queue, fn: Callable[[Any], Any], *, stop: Any = None,
               batch_timeout: float = 1.0, many: bool = False, retry_backoff: float = 1.0) -> int:
    """Apply ``fn`` to every item of ``in_queue`` and put the results into ``out_queue``.

    ``fn(item)`` returns the result to put, or None to drop the item; with
    ``many=True``, ``fn(items)`` takes a whole batch and returns a list.
    Runs until ``in_queue`` is closed and drained, or ``stop`` (an Event, or a
    callable returning true) is set; returns the number of input items done.

    Each input batch is acked only after its results are sealed in
    ``out_queue``: a worker that dies mid-batch has the batch delivered again
    (its results may then be queued twice: at-least-once, never lost).

    A batch whose ``fn`` raises (or that cannot be read here) goes back to
    ready and is logged; the worker waits ``retry_backoff`` seconds and goes
    on, so one poison batch never takes workers down.  Give ``in_queue`` a
    ``max_deliveries`` to have such a batch moved to ``dead/`` after that
    many tries instead of retried for ever.
    """
    done = 0
    with in_queue.consumer() as consumer, out_queue.producer() as producer:
        while not stop_requested(stop):
            try:
                with consumer.batch(timeout=batch_timeout) as items:
                    if many:
                        results = [r for r in fn(items) if r is not None]
                    else:
                        results = [r for r in map(fn, items) if r is not None]
                    if results:
                        producer.put_many(results)
                    # Seal before the block ends: the ack (on leaving the
                    # block) must come after the results are safe in out_queue.
                    producer.flush()
            except Empty:
                continue
            except Closed:
                break
            except Exception as exc:
                # batch() released it (counted toward max_deliveries): not
                # acked, not lost, and this worker stays up for the next one.
                log.error("turbo_queue.kafka: worker could not process a batch of %s: %r; it is back in the "
                          "queue, going on in %g s", in_queue.path, exc, retry_backoff)
                pause(stop, retry_backoff)
                continue
            done += len(items)
    return done
