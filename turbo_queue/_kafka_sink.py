"""Queue -> Kafka: :class:`KafkaSink` acks a batch once Kafka confirmed all of it (see :mod:`turbo_queue.kafka`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import confluent_kafka

from ._errors import Closed, Empty
from ._kafka_run import log, stop_requested
from ._kafka_source import KafkaRecord
from ._queue import Queue


class DeliveryFailed(Exception):
    """The Kafka producer reported a final delivery error for a message of a batch.

    Raised inside the sink's ``batch()`` block, so that the batch returns to
    ready; :meth:`KafkaSink.run` logs it and tries the batch again.
    """


class _Delivery:
    """Delivery reports of one batch."""

    __slots__ = ("delivered", "failed", "first_error")

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.first_error = None

    def __call__(self, err, msg) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err


_PRODUCE_KEYS = ("topic", "value", "key", "partition", "timestamp", "headers")


class KafkaSink:
    """Queue -> Kafka producer, acking a batch only once Kafka confirmed all of it.

    :param queue: the queue to drain.
    :param config: a confluent-kafka producer config (``bootstrap.servers``
        at least; ``enable.idempotence``, ``acks``, ``message.timeout.ms``,
        ``retries``... are librdkafka's to apply).
    :param topic: the topic every item goes to; None to take it from each item
        (``KafkaRecord.topic`` or a dict's ``"topic"``).
    :param batch_timeout: seconds to wait for a batch before checking ``stop``.
    :param flush_timeout: seconds to wait for a batch's delivery reports; None
        (default) waits until librdkafka has a final report for each message
        (it gives one within ``message.timeout.ms``).
    :param retry_backoff: seconds to wait after a failed batch before the next try.
    :param on_batch: called with the items of each batch once it is
        delivered, before its ack (for metrics).

    Items may be :class:`KafkaRecord` (key, value, headers and timestamp are
    produced), ``bytes``/``str`` (the value), or a dict of ``produce()``
    arguments (``value``, ``key``, ``headers``, ``timestamp``, ``partition``,
    ``topic``).
    """

    def __init__(self, queue: Queue, config: Mapping[str, Any], topic: str | None = None, *,
                 batch_timeout: float = 1.0, flush_timeout: float | None = None,
                 retry_backoff: float = 1.0, on_batch: Callable[[list], None] | None = None) -> None:
        self.queue = queue
        self.topic = topic
        self.batch_timeout = batch_timeout
        self.flush_timeout = flush_timeout
        self.retry_backoff = retry_backoff
        self._on_batch = on_batch
        self._producer = confluent_kafka.Producer(dict(config))
        self._consumer = queue.consumer()
        self._stop = threading.Event()
        self._closed = False
        #: Counters: batches and messages delivered, batches that failed
        #: (returned to ready), and the last delivery error seen.
        self.stats = {"batches": 0, "messages": 0, "failed_batches": 0, "last_error": None}

    @property
    def producer(self):
        """The ``confluent_kafka.Producer`` (for metrics)."""
        return self._producer

    def stop(self) -> None:
        """Ask ``run()`` to finish after the batch in hand (safe from a signal handler)."""
        self._stop.set()

    def run(self, stop: Any = None) -> None:
        """Deliver batches until the queue is closed and drained, or stopped; then close."""
        try:
            while not self._stop.is_set() and not stop_requested(stop):
                try:
                    self.step()
                except Closed:
                    break
                except DeliveryFailed as exc:
                    log.error("turbo_queue.kafka: %s; the batch is back in the queue, retrying in %g s",
                              exc, self.retry_backoff)
                    self._stop.wait(self.retry_backoff)
        finally:
            self.close()

    def step(self, timeout: float | None = None) -> int:
        """Deliver one batch; returns its size (0 if none came within the timeout).

        Raises :class:`DeliveryFailed` (the batch is then back in ready) and
        :class:`turbo_queue.Closed` (queue closed and drained).
        """
        try:
            with self._consumer.batch(timeout=self.batch_timeout if timeout is None else timeout) as items:
                self._deliver(items)
        except Empty:
            return 0
        except DeliveryFailed:
            self.stats["failed_batches"] += 1
            raise
        self.stats["batches"] += 1
        self.stats["messages"] += len(items)
        return len(items)

    def close(self) -> None:
        """Release any batch in hand (never acked unconfirmed), wait for in-flight messages."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close()
        finally:
            self._producer.flush(5.0)

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------

    def _deliver(self, items: list) -> None:
        # Runs inside the batch() block: returning acks the batch, raising
        # releases it.  So every message must be confirmed before we return.
        report = _Delivery()
        producer = self._producer
        produce = producer.produce
        args = self._produce_args
        for item in items:
            kwargs = args(item)
            while True:
                try:
                    produce(on_delivery=report, **kwargs)
                    break
                except BufferError:
                    # librdkafka's local queue is full: serve delivery reports
                    # until there is room (queue.buffering.max.messages).
                    producer.poll(0.05)
        deadline = None if self.flush_timeout is None else time.monotonic() + self.flush_timeout
        n = len(items)
        while report.delivered + report.failed < n:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                raise DeliveryFailed(f"{n - report.delivered - report.failed} of {n} message(s) "
                                     f"unconfirmed after {self.flush_timeout:g} s")
            producer.flush(left)
        if report.failed:
            self.stats["last_error"] = str(report.first_error)
            raise DeliveryFailed(f"{report.failed} of {n} message(s) failed delivery: {report.first_error}")
        if self._on_batch is not None:
            self._on_batch(items)

    def _produce_args(self, item: Any) -> dict:
        if isinstance(item, KafkaRecord):
            kwargs = {"value": item.value, "key": item.key}
            if item.headers:
                kwargs["headers"] = item.headers
            if item.timestamp is not None:
                kwargs["timestamp"] = item.timestamp
            topic = self.topic or item.topic
        elif isinstance(item, (bytes, str)) or item is None:
            kwargs = {"value": item}
            topic = self.topic
        elif isinstance(item, Mapping):
            kwargs = {k: item[k] for k in _PRODUCE_KEYS if k in item and item[k] is not None}
            topic = self.topic or kwargs.pop("topic", None)
            kwargs.pop("topic", None)
        else:
            raise TypeError(f"the Kafka sink cannot produce an item of type {type(item).__name__}; "
                            "use a KafkaRecord, bytes/str or a dict of produce() arguments")
        if not topic:
            raise ValueError("no topic: make the sink with topic=... or give each item a topic")
        kwargs["topic"] = topic
        return kwargs
