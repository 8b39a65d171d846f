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

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

try:
    import confluent_kafka
    from confluent_kafka import KafkaError, KafkaException, TopicPartition
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "turbo_queue.kafka needs confluent-kafka, an optional extra: "
        'pip install "turbo-queue-ng[kafka]"'
    ) from _exc

from ._errors import Closed, Empty, Full
from ._producer import Producer
from ._queue import Queue

__all__ = [
    "DeliveryFailed",
    "KafkaRecord",
    "KafkaSink",
    "KafkaSource",
    "run_worker",
]

log = logging.getLogger("turbo_queue.kafka")

#: ``timestamp_type`` values, as confluent_kafka defines them.
TIMESTAMP_NOT_AVAILABLE = confluent_kafka.TIMESTAMP_NOT_AVAILABLE
TIMESTAMP_CREATE_TIME = confluent_kafka.TIMESTAMP_CREATE_TIME
TIMESTAMP_LOG_APPEND_TIME = confluent_kafka.TIMESTAMP_LOG_APPEND_TIME


class KafkaRecord(NamedTuple):
    """One Kafka message as it travels through the queues (pickles; plain values only).

    The source fills every field from the consumed message.  A worker usually
    returns ``record._replace(value=new_value)``; the sink produces ``key``,
    ``value``, ``headers`` and ``timestamp`` to its topic (``topic`` is used
    only by a sink made with ``topic=None``; ``partition`` and ``offset`` say
    where the record came from and are not produced: the output topic's
    partitioner places it by key).
    """

    topic: str | None
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    #: ``[(name, bytes or None), ...]`` in order (names may repeat), or None.
    headers: list | None
    #: Milliseconds since the epoch, or None when the message had none.
    timestamp: int | None
    #: TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME or TIMESTAMP_NOT_AVAILABLE.
    timestamp_type: int = TIMESTAMP_NOT_AVAILABLE

    @classmethod
    def from_message(cls, msg: Any) -> KafkaRecord:
        """The record of a ``confluent_kafka.Message`` (as the source makes it)."""
        ts_type, ts = msg.timestamp()
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                   msg.headers(), None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts, ts_type)


class DeliveryFailed(Exception):
    """The Kafka producer reported a final delivery error for a message of a batch.

    Raised inside the sink's ``batch()`` block, so that the batch returns to
    ready; :meth:`KafkaSink.run` logs it and tries the batch again.
    """


def _stop_requested(stop: Any) -> bool:
    if stop is None:
        return False
    is_set = getattr(stop, "is_set", None)
    return bool(is_set() if is_set is not None else stop())


def _tp_list(keys: Iterable[tuple[str, int]]) -> list:
    return [TopicPartition(t, p) for t, p in keys]


# ---------------------------------------------------------------------------
# Source
# ---------------------------------------------------------------------------


class KafkaSource:
    """Kafka consumer -> queue, committing offsets only up to what is sealed.

    :param queue: the queue to fill (made in this process or passed to it).
    :param topics: topic names to subscribe to (a consumer group subscription:
        run several sources with the same ``group.id`` to share partitions).
    :param config: a confluent-kafka consumer config; needs ``bootstrap.servers``
        and ``group.id``.  ``enable.auto.commit`` and
        ``enable.auto.offset.store`` are forced off (the source commits
        itself); setting either true is a ``ValueError``.
    :param poll_batch: messages asked of ``consume()`` at once; with
        ``queue.batch_size`` it bounds what the source buffers.
    :param poll_timeout: seconds one ``consume()`` waits for messages.
    :param put_timeout: seconds a put waits for room before the source pauses
        its partitions (it keeps trying, paused, until there is room).
    :param commit_interval: seconds between offset commits (0: after every step).
    :param revoke_flush_timeout: on a rebalance, seconds to wait for room to seal
        what is pending before committing; what cannot be sealed in time is
        not committed (its next owner reads it again).
    :param to_item: turns a ``confluent_kafka.Message`` into the queued item
        (default :meth:`KafkaRecord.from_message`).

    ``run()`` loops until :meth:`stop` is called (signal-handler safe) or the
    ``stop`` event passed to it is set, then seals what it holds, commits and
    closes.  ``step()`` does one poll and is what ``run()`` repeats.
    """

    def __init__(self, queue: Queue, topics: str | Iterable[str], config: Mapping[str, Any], *,
                 poll_batch: int = 500, poll_timeout: float = 0.1, put_timeout: float = 0.1,
                 commit_interval: float = 1.0, revoke_flush_timeout: float = 5.0,
                 to_item: Callable[[Any], Any] | None = None) -> None:
        config = dict(config)
        for key in ("enable.auto.commit", "enable.auto.offset.store"):
            if str(config.get(key, False)).lower() not in ("false", "0"):
                raise ValueError(f"{key}: the source commits offsets itself, only once their messages "
                                 f"are sealed in the queue; leave {key} unset or false")
            config[key] = False
        if not config.get("group.id"):
            raise ValueError("group.id: the source needs a consumer group to commit offsets to")
        if poll_batch <= 0:
            raise ValueError(f"poll_batch: must be a positive integer, got {poll_batch!r}")
        self.queue = queue
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.poll_batch = poll_batch
        self.poll_timeout = poll_timeout
        self.put_timeout = put_timeout
        self.commit_interval = commit_interval
        self.revoke_flush_timeout = revoke_flush_timeout
        self._to_item = to_item or KafkaRecord.from_message
        self._producer: Producer = queue.producer()
        self._consumer = confluent_kafka.Consumer(config)
        # Messages consumed but not yet put: (tp, epoch, offset, item), in order.
        self._held: deque = deque()
        # Put bookkeeping.  Items are sealed in put order (one producer, one
        # lock: the age-flush thread seals the whole current batch, never a
        # part of it), so items 0 .. producer.sealed_items - 1 are sealed.
        # Each entry is (end index of a chunk of puts, {tp: (epoch, highest
        # offset)}); a chunk is never split across batches (see _put_held).
        self._puts = 0
        self._chunks: deque = deque()
        # Per partition: assignment epoch (bumped on revoke, so bookkeeping of
        # an earlier ownership is never committed), highest sealed offset of
        # the current epoch, and the offset last committed.
        self._epoch: dict[tuple[str, int], int] = {}
        self._owned: set[tuple[str, int]] = set()
        self._sealed: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._ever_committed: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._last_commit = time.monotonic()
        self._stop = threading.Event()
        self._closing = False
        self._closed = False
        self._interrupted = False
        #: Counters: messages consumed, items put, pauses/resumes for
        #: backpressure, commits made and failed, rebalances seen.
        self.stats = {"messages": 0, "puts": 0, "pauses": 0, "resumes": 0, "commits": 0,
                      "commit_failures": 0, "assigned": 0, "revoked": 0, "lost": 0}
        self._consumer.subscribe(self.topics, on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)

    # -- public API -------------------------------------------------------

    @property
    def consumer(self):
        """The ``confluent_kafka.Consumer`` (for metrics; do not commit through it)."""
        return self._consumer

    @property
    def paused(self) -> bool:
        """True while the source holds its partitions paused for backpressure."""
        return bool(self._paused)

    @property
    def buffered(self) -> int:
        """Items in this process's memory only: consumed but not yet sealed."""
        return len(self._held) + self._producer.pending

    @property
    def sealed_items(self) -> int:
        """Items this source has sealed into the queue so far."""
        return self._producer.sealed_items

    @property
    def committed(self) -> dict[tuple[str, int], int]:
        """The last offset this source committed per (topic, partition): the next one to read."""
        return dict(self._ever_committed)

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe from a signal handler or another thread)."""
        self._stop.set()

    def run(self, stop: Any = None, max_messages: int | None = None) -> None:
        """Poll and put until stopped (or ``max_messages`` consumed), then close."""
        try:
            while not self._stop.is_set() and not _stop_requested(stop):
                if max_messages is not None and self.stats["messages"] >= max_messages and not self._held:
                    break
                self.step()
        except Closed:
            log.info("turbo_queue.kafka: the queue was closed: the source stops")
        finally:
            self.close()

    def step(self) -> int:
        """One round: put what is held, poll for more unless blocked, commit if due.

        Returns the number of items put.
        """
        put = self._put_held()
        if self._held:
            # Blocked on a full queue: partitions are paused.  Poll anyway,
            # without taking messages, so that rebalance callbacks run and the
            # group does not drop this member (max.poll.interval.ms).
            self._keep_alive_paused()
        else:
            msgs = self._consumer.consume(num_messages=self.poll_batch, timeout=self.poll_timeout)
            if msgs:
                self._hold(msgs)
                put += self._put_held()
            elif self._producer.pending >= self._producer.batch_size:
                # A batch that filled up while the queue had no room is sealed
                # by the next put; with no traffic, seal it here once there is
                # room (it could otherwise wait for the age flush, or forever).
                try:
                    self._producer.flush(timeout=0)
                except Full:
                    pass
        if self.commit_interval <= 0 or time.monotonic() - self._last_commit >= self.commit_interval:
            self.commit_sealed()
        return put

    def commit_sealed(self, partitions: Iterable[tuple[str, int]] | None = None) -> list:
        """Commit, synchronously, the offsets whose messages are all sealed.

        Returns the TopicPartitions committed (empty when nothing advanced).
        A failed commit is logged and retried at the next interval: it can
        only delay a commit, never commit too far.
        """
        self._last_commit = time.monotonic()
        self._advance_sealed()
        keys = self._sealed.keys() if partitions is None else [k for k in partitions if k in self._sealed]
        offsets = []
        for key in keys:
            nxt = self._sealed[key] + 1  # Kafka commits the next offset to read
            if nxt > self._committed.get(key, -1):
                offsets.append(TopicPartition(key[0], key[1], nxt))
        if not offsets:
            return []
        try:
            done = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.stats["commit_failures"] += 1
            log.warning("turbo_queue.kafka: offset commit failed (will retry): %s", exc)
            return []
        committed = []
        for tp in done or offsets:
            if tp.error is not None:
                self.stats["commit_failures"] += 1
                log.warning("turbo_queue.kafka: offset commit of %s [%d] failed (will retry): %s",
                            tp.topic, tp.partition, tp.error)
                continue
            self._committed[(tp.topic, tp.partition)] = tp.offset
            self._ever_committed[(tp.topic, tp.partition)] = tp.offset
            committed.append(tp)
        if committed:
            self.stats["commits"] += 1
        return committed

    def close(self) -> None:
        """Seal what is pending, commit it, leave the group.  Idempotent.

        Waits at most ``revoke_flush_timeout`` for room to seal; items that
        cannot be sealed in time are not committed (read again later).
        """
        if self._closed:
            return
        self._closing = True
        try:
            self._seal_pending("at close")
            self.commit_sealed()
        finally:
            self._closed = True
            try:
                self._consumer.close()
            finally:
                try:
                    # Nothing is committed after this point, so sealing what
                    # is left (if there is room now) can only add duplicates.
                    self._producer.close(timeout=0)
                except (Full, Closed):
                    pass

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------

    def _hold(self, msgs: list) -> None:
        to_item = self._to_item
        held = self._held
        epoch = self._epoch
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("turbo_queue.kafka: consumer error: %s", err)
                continue
            key = (msg.topic(), msg.partition())
            held.append((key, epoch.get(key, 0), msg.offset(), to_item(msg)))
        self.stats["messages"] += len(msgs)

    def _put_held(self) -> int:
        """Put held messages until none is left or the queue is full (then pause)."""
        if self._interrupted:
            raise RuntimeError("an earlier put of this KafkaSource was interrupted, so it cannot tell "
                               "which items are sealed any more: close it (offsets committed so far "
                               "are safe) and make a new one")
        held = self._held
        producer = self._producer
        size = producer.batch_size  # the policy's size with batch_size="auto"
        put = 0
        while held:
            # Put at most what fits in the batch being filled, so that one
            # put_many is one chunk: all of it is queued, or none of it (Full).
            # The age-flush thread can only make the batch emptier meanwhile.
            room = size - producer.pending
            if room <= 0:
                room = 1  # a full batch waits for room: this put seals it first
            n = min(room, len(held))
            chunk = [held[i] for i in range(n)]
            # Until the bookkeeping below is done, an exception (other than
            # Full, which queues nothing) leaves it unknown whether the chunk
            # was queued; the flag then stops further puts, because a put
            # after a miscounted one could make a commit run ahead of the seal.
            # Commits of what was recorded stay safe: a miscount can only be
            # at the tail.
            self._interrupted = True
            try:
                producer.put_many([c[3] for c in chunk], timeout=self.put_timeout)
            except Full:
                self._interrupted = False
                self._pause()
                return put
            except Closed:
                self._interrupted = False  # refused before anything was queued
                raise
            for _ in range(n):
                held.popleft()
            top: dict = {}
            for key, ep, offset, _item in chunk:
                top[key] = (ep, offset)  # offsets rise within a partition: the last is the highest
            self._puts += n
            self._chunks.append((self._puts, top))
            self._interrupted = False
            put += n
            self.stats["puts"] += n
        if self._paused:
            self._resume()
        return put

    def _advance_sealed(self) -> None:
        # sealed_items is updated after the batch's rename, so reading it here
        # (possibly stale, never ahead) can only under-count what is sealed.
        sealed = self._producer.sealed_items
        chunks = self._chunks
        epoch = self._epoch
        while chunks and chunks[0][0] <= sealed:
            _, top = chunks.popleft()
            for key, (ep, offset) in top.items():
                if key in self._owned and epoch.get(key, 0) == ep:
                    self._sealed[key] = offset

    def _pause(self) -> None:
        assignment = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        new = assignment - self._paused
        if not new:
            return
        if not self._paused:
            self.stats["pauses"] += 1
            log.info("turbo_queue.kafka: queue full (max_ready): pausing %d partition(s)", len(new))
        self._consumer.pause(_tp_list(new))
        self._paused |= new

    def _resume(self) -> None:
        assignment = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        resume = self._paused & assignment
        self._paused.clear()
        if resume:
            self._consumer.resume(_tp_list(resume))
        self.stats["resumes"] += 1
        log.info("turbo_queue.kafka: room in the queue again: resumed %d partition(s)", len(resume))

    def _keep_alive_paused(self) -> None:
        # Partitions assigned since the pause are not paused yet: pause them
        # first, so that this poll can return at most a message or so of theirs.
        self._pause()
        msgs = self._consumer.consume(num_messages=1, timeout=0)
        if msgs:
            self._hold(msgs)

    def _on_assign(self, consumer, partitions) -> None:
        self.stats["assigned"] += 1
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._owned.add(key)
            self._sealed.pop(key, None)
            self._committed.pop(key, None)

    def _on_revoke(self, consumer, partitions) -> None:
        # Seal what we hold and commit it while we still own the partitions;
        # after this callback another member may own them.
        self.stats["revoked"] += 1
        if not self._closing:
            self._seal_pending("during a rebalance")
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.commit_sealed(keys)
        self._forget(keys)

    def _seal_pending(self, when: str) -> None:
        if self._interrupted:
            return
        try:
            self._producer.flush(timeout=self.revoke_flush_timeout)
        except (Full, Closed) as exc:
            log.warning("turbo_queue.kafka: %s %s: %d unsealed item(s) are not committed; the "
                        "partitions' next reader reads them again", type(exc).__name__.lower(), when,
                        self._producer.pending)

    def _on_lost(self, consumer, partitions) -> None:
        # Ownership is already gone (session timeout): committing now could
        # race the new owner, so only forget.  Items already put stay in the
        # queue (delivered twice at worst).
        self.stats["lost"] += 1
        self._forget([(tp.topic, tp.partition) for tp in partitions])

    def _forget(self, keys: list[tuple[str, int]]) -> None:
        gone = set(keys)
        for key in gone:
            self._owned.discard(key)
            self._epoch[key] = self._epoch.get(key, 0) + 1
            self._sealed.pop(key, None)
            self._committed.pop(key, None)
            self._paused.discard(key)
        if self._held:
            # Not put yet: the partitions' next owner reads them again.
            self._held = deque(h for h in self._held if h[0] not in gone)


# ---------------------------------------------------------------------------
# Worker
# ---------------------------------------------------------------------------


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
        while not _stop_requested(stop):
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
                _pause(stop, retry_backoff)
                continue
            done += len(items)
    return done


def _pause(stop: Any, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    wait = getattr(stop, "wait", None)
    if wait is not None:
        wait(seconds)
        return
    end = time.monotonic() + seconds
    while time.monotonic() < end and not _stop_requested(stop):
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))


# ---------------------------------------------------------------------------
# Sink
# ---------------------------------------------------------------------------


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
            while not self._stop.is_set() and not _stop_requested(stop):
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
