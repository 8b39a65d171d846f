"""Kafka -> queue: :class:`KafkaSource` and the record it queues (see :mod:`turbo_queue.kafka`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ._errors import Closed, Full
from ._kafka_run import log, stop_requested
from ._producer import Producer
from ._queue import Queue

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


def _tp_list(keys: Iterable[tuple[str, int]]) -> list:
    return [TopicPartition(t, p) for t, p in keys]


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
            while not self._stop.is_set() and not stop_requested(stop):
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
