"""The producer: buffers items, seals them into a batch file, makes it visible.

Hot path (``put``): append the item to an in-memory run, as it is.  With
``capture="seal"`` (the default) the run is serialized at seal with one
``dumps_many`` call for the whole list, as ``multiprocessing.Queue``'s feeder
thread pickles what was put: a list pickled in one call shares its repeated
keys and strings and costs about half as much to dump and to load as the
same items pickled one by one.  What is sent is the object's state at seal.
With ``capture="put"`` each item is serialized when ``put`` accepts it, so a
caller may mutate the object afterwards.  No system call happens per item (a
syscall costs about as much as the rest of ``put``, so not even
``os.getpid()``: a fork marks the parent's producers instead, see
:func:`_after_fork_in_child`); the folder is touched once per batch, at seal:

1. build the batch database in memory and write it to a *loading* name
   (``l_...``) that only this producer uses (``O_EXCL``);
2. ``fsync`` it when ``durable``;
3. ``rename`` it to its *ready* name (``r_...``): the atomic step that makes
   the batch visible to consumers whole or not at all;
4. ``fsync`` the folder when ``durable``, so the rename survives power loss.

A producer that dies between 1 and 3 leaves a loading file that
:meth:`Queue.recover` seals if it is complete or sets aside if not.  Items
still in the in-memory buffer when a producer process dies are lost: they
were never sealed.  ``max_batch_age`` bounds that window in time and
``batch_size`` in count.

A background thread seals a partial batch once it is ``max_batch_age`` old,
so an idle producer's last items are not stranded.  Sealing takes the
producer's lock; ``put``'s hot path (an item neither first nor last of its
batch) takes none: it appends to a run that a seal empties in place, so an
item racing with a seal lands in that batch or the next (see ``put``).  The
same thread looks for the ``CLOSED`` marker every
:data:`CLOSED_CHECK_INTERVAL` seconds while a batch is open and raises a
flag that ``put`` already tests (the attribute it tests for a closed
producer), so ``put`` raises :class:`Closed` within a second of
``Queue.close()`` by any process, without a system call per item.

A producer never drops what it accepted without saying so: a ``flush`` or
``close`` that fails (``Full``, ``OSError``) leaves the items buffered and
the producer open, so the call can be retried; a producer garbage-collected
or still open at interpreter exit whose items cannot be sealed logs an ERROR
on the ``turbo_queue`` logger with the count and the reason.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from array import array
from collections.abc import Iterable
from typing import Any

from . import _naming as naming
from ._batch import encode_batch, lengths_bytes, write_file
from ._capture import CAPTURES, dropped_error, encode_error, encode_runs, first_unencodable
from ._errors import Closed, Full, TurboQueueError
from ._folder import Folder, ReadyCount
from ._sizing import AutoBatchSize
from ._wait import READY_COUNT_EVENTS, FolderWaiter

__all__ = ["Producer"]

log = logging.getLogger("turbo_queue")

_live_producers: weakref.WeakSet[Producer] = weakref.WeakSet()

#: Seconds between two looks for the CLOSED marker while a batch is open: a
#: put raises Closed at most this long (plus scheduling) after a foreign close.
CLOSED_CHECK_INTERVAL = 0.25
#: How long the exit hook waits for room (max_ready) to seal a producer's items.
EXIT_TIMEOUT = 5.0
#: How often the background thread of a batch_size="auto" producer looks for idle consumers.
AUTO_TICK = 0.005
#: The limit ReadyCount is asked about when there is none (max_ready None): never near.
_NO_LIMIT = 1 << 62


class Producer:
    """Puts items into a queue.  Make one per process (or thread) with :meth:`Queue.producer`."""

    def __init__(self, folder: Folder, serializer: Any, *, batch_size: int, max_ready: int | None,
                 max_batch_age: float | None, durable: bool, file_mode: int = 0o600,
                 capture: str = "seal", sizing: AutoBatchSize | None = None) -> None:
        # What the producer needs, handed over by Queue.producer(): it never
        # reads the Queue's private state (one owner per concept).
        self._folder = folder
        self._dir = folder.path
        self._serializer = serializer
        self._dumps = self._serializer.dumps
        #: batch_size="auto": the policy that sets _batch_size after each seal (see _sizing.py).
        self._sizing = sizing
        self._batch_size = sizing.size if sizing is not None else batch_size
        self._max_ready = max_ready
        self._max_batch_age = max_batch_age
        self._durable = durable
        if capture not in CAPTURES:
            raise ValueError(f"capture: must be one of {', '.join(map(repr, CAPTURES))}, got {capture!r}")
        self.capture = capture
        # Deferred encoding only where it pays: a serializer that encodes a
        # list in one call.  The others (raw, custom) encode item by item
        # anyway, so they encode at put and keep put's semantics.
        self._defer = capture == "seal" and bool(getattr(serializer, "many", False))
        self._dumps_many = getattr(serializer, "dumps_many", None)
        self._pid = os.getpid()
        #: Set in a forked child (see _after_fork_in_child): these objects are the parent's.
        self._forked = False
        self._owner = naming.make_owner()
        self._owner_text = str(self._owner)
        self._seq = 0
        self._last_seal_ns = 0
        self._lock = threading.Lock()
        #: Batch files get the folder's group access (see Queue._open_folder).
        self._file_mode = file_mode
        # A claim makes room (max_ready); CLOSED ends a put blocked on room.
        # The same watch keeps the count of ready batches (ReadyCount), so
        # backpressure lists the folder only near the limit, not at every seal.
        self._waiter = FolderWaiter(self._dir, wake_on=(naming.CLAIMED, naming.CLOSED_MARKER),
                                    events=READY_COUNT_EVENTS)
        self._ready = ReadyCount(folder, self._waiter)
        # The batch being filled: finished records, (many, lengths, data), and
        # in deferred mode (None, first index, objects) runs encoded at seal,
        # plus the current run of single puts (objects, or their bytes).
        self._records: list[tuple[Any, Any, Any]] = []
        # The run is never rebound, only emptied in place (_end_run_locked):
        # put's hot path appends to it without the lock (see put).
        self._run: list[Any] = []
        #: Items of the open batch in _records (the rest are in _run; _count is both).
        self._recorded = 0
        #: Items dropped at seal because they could not be encoded (positions count them).
        self._dropped_items = 0
        #: The TypeError of items dropped by a seal that no call has raised yet.
        self._dropped_error: TypeError | None = None
        self._first_put = 0.0  # monotonic time of the oldest unsealed item
        # batch_size="auto": when the previous seal was sized, in wall and process CPU time.
        self._sized_at, self._sized_cpu = time.monotonic(), time.process_time()
        self._closed = False
        # True once put must stop and find out why: this producer is closed,
        # or the background thread saw the CLOSED marker (a hint that put
        # confirms with one stat; see _check_halted).  One attribute, so put
        # tests it where it tested _closed alone.
        self._halted = False
        #: put's hot path takes items while the count is below this (see put).
        self._fast_limit = 0
        self._halt(False)
        self._loss_reported = -1  # pending count already logged as lost (no second log)
        self._flusher: threading.Thread | None = None
        self._closed_checked = 0.0  # monotonic time of the background thread's last look for CLOSED
        self._stop_flusher = threading.Event()
        #: Wakes the background thread before its tick (close).
        self._wake_flusher = threading.Event()
        self.sealed_batches = 0
        self.sealed_items = 0
        _live_producers.add(self)

    # -- public API -------------------------------------------------------

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add one item, as ``queue.Queue.put`` does.

        Blocks while ``max_ready`` sealed batches are waiting and this item
        needs a new batch: for ever if ``block`` is true and ``timeout`` is
        None, at most ``timeout`` seconds otherwise; with ``block`` false it
        does not wait at all.  Raises :class:`Full` when there is no room in
        time (the item is then not queued), :class:`Closed` once the queue is
        closed by any process on the path (within
        :data:`CLOSED_CHECK_INTERVAL` seconds, also while blocked).

        With ``capture="seal"`` (the default) the item is kept as it is and
        serialized when its batch is sealed: mutating it before then changes
        what is sent.  An item that cannot be encoded is found at that seal:
        it is dropped, the other items of its batch are sealed, and the call
        that sealed the batch (this ``put`` when it filled the batch, a
        ``flush``, ``close``, ``put_many``, or the next call after a seal by
        the age-flush thread) raises ``TypeError`` naming its type and
        position; ``exc.queued`` says whether that call's own item was queued
        (1) or not (0).  With ``capture="put"`` the item is serialized here
        and ``TypeError`` means this item was refused (nothing partial is
        queued, the producer stays usable).

        Threads may share a producer: the hot path takes no lock (see the
        comment below), so a batch may hold up to one item per racing
        thread over the batch size; nothing is lost or queued twice.
        """
        # The hot path, for an item neither first nor last of its batch: one
        # append, no lock, no system call and, by default, no serialization
        # (each extra Python call or test here costs ~5% of a put; the lock
        # this path took before cost ~40% of it).  _fast_limit is 0 whenever
        # this path must not be taken (capture="put", halted: closed, forked,
        # items dropped at seal).  Without the lock, a seal by another thread
        # (the background thread's age flush, a put in another thread) may
        # run between the test and the append; the append is one operation
        # on a list that a seal empties in place and never replaces, so the
        # item lands in the batch being sealed or in the next one, never in
        # neither.  A close() halts before its last seal, so an item appended
        # after that seal is seen here and taken back (_halted_after_append;
        # tests/test_producer_threads.py).
        run = self._run
        if 0 < len(run) < self._fast_limit and block and timeout is None:
            run.append(item)
            if self._halted:
                self._halted_after_append(item, block, timeout)
            return
        self._put(item, block, timeout)

    def _halted_after_append(self, item: Any, block: bool, timeout: float | None) -> None:
        """The hot path appended ``item``, then saw the producer halted (a close, a drop, CLOSED, a fork).

        If a seal already took the item, it is queued and put returns; if it
        is still in the run, it is taken out and put starts again on the
        path that finds out why puts stop (and raises, or queues it when the
        halt was a stale hint).
        """
        with self._lock:
            run = self._run
            for i in range(len(run) - 1, -1, -1):
                if run[i] is item:
                    del run[i]
                    break
            else:
                return
        self._put(item, block, timeout)

    def _put(self, item: Any, block: bool, timeout: float | None) -> None:
        """put() for every other case: a first or last item, a timeout, capture="put", halted."""
        deadline = None if timeout is None and block else self._put_deadline(block, timeout)
        if not self._defer:
            try:
                item = self._dumps(item)
            except Exception as exc:
                raise encode_error(item, self._serializer.name, exc) from exc
        with self._lock:
            if self._halted:
                # Closed, forked, or items dropped at a background seal.
                self._check_halted()
            count = self._count
            if count >= self._batch_size:
                self._seal_locked(deadline, for_put=True)
                if self._dropped_error is not None:
                    self._raise_dropped(queued=0)
                count = 0
            if count == 0:
                self._start_batch_locked()
            self._run.append(item)
            count = self._count
            if count >= self._batch_size:
                # Seal a full batch at once if there is room; if max_ready is
                # reached, leave it full and let the next put wait for room.
                try:
                    self._seal_locked(deadline, wait=False)
                except OSError:
                    # This item is queued (buffered); raising here would make a
                    # caller that retries the put queue it twice.  The next
                    # put, flush or close retries the seal and raises.
                    pass
                if self._dropped_error is not None:
                    self._raise_dropped(queued=1)

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``: :class:`Full` at once if the item needs room there is not."""
        self.put(item, False)

    def put_many(self, items: Iterable[Any], timeout: float | None = None) -> None:
        """Add many items, serialized together in chunks (cheaper per item than ``put``).

        Items are split across batches at ``batch_size``.  Either every item
        is queued or an exception is raised (:class:`Full`, ``TypeError``,
        :class:`Closed`, ``OSError`` alike) whose ``queued`` attribute is the
        number of leading items that were queued: ``items[:exc.queued]`` are
        in the queue, the rest are not, so a retry passes
        ``items[exc.queued:]`` and nothing is queued twice.  If the
        serializer cannot encode a chunk, ``TypeError`` names the first item
        it cannot encode and no item of that chunk is queued.
        """
        pos = 0
        try:
            deadline = self._deadline(timeout)
            if self._forked:
                raise self._forked_error()
            items = items if isinstance(items, list) else list(items)
            ser = self._serializer
            while pos < len(items):
                with self._lock:
                    self._check_usable()
                    if self._halted:
                        self._check_halted()
                    if self._count >= self._batch_size:
                        self._seal_locked(deadline, for_put=True)
                        if self._dropped_error is not None:
                            self._raise_dropped(queued=pos)
                    if self._count == 0:
                        self._start_batch_locked()
                    take = min(self._batch_size - self._count, len(items) - pos)
                    chunk = items[pos:pos + take]
                    if ser.many:
                        try:
                            data = ser.dumps_many(chunk)
                        except Exception as exc:
                            raise encode_error(first_unencodable(chunk, ser.dumps), ser.name, exc) from exc
                        self._end_run_locked()
                        self._records.append((1, None, data))
                        self._recorded += take
                        self._set_fast_limit()
                    else:
                        encoded = []
                        for item in chunk:
                            try:
                                encoded.append(self._dumps(item))
                            except Exception as exc:
                                raise encode_error(item, ser.name, exc) from exc
                        self._run.extend(encoded)
                    pos += take
                    if self._count >= self._batch_size:
                        try:
                            self._seal_locked(deadline, wait=False)
                        except OSError:
                            pass  # as in put: these items are queued; the next call raises
                        if self._dropped_error is not None:
                            self._raise_dropped(queued=pos)
        except BaseException as exc:
            # How many leading items are in: the caller's retry must not
            # queue them twice (test_put_many_says_how_many_it_queued).
            try:
                exc.queued = pos
            except AttributeError:  # an exception type without __dict__
                pass
            raise

    def flush(self, timeout: float | None = None) -> None:
        """Seal the current partial batch now (no-op when nothing is pending).

        On :class:`Full` or ``OSError`` the items stay buffered: call it again.
        """
        deadline = self._deadline(timeout)
        if self._forked:
            raise self._forked_error()
        self._acquire(deadline)
        try:
            if self._count:
                self._seal_locked(deadline)
            if self._dropped_error is not None:
                self._raise_dropped(queued=0)
        finally:
            self._lock.release()

    def close(self, timeout: float | None = None) -> None:
        """Seal what is pending and stop the age-flush thread.  Idempotent.

        If sealing fails (:class:`Full` after ``timeout``, an ``OSError`` such
        as a full disk) the exception propagates and the producer stays open
        with its items, as if close had not been called: fix the cause and
        call ``close()`` again.  Items it accepted are never dropped silently:
        items dropped at a seal because they could not be encoded (see
        :meth:`put`) make ``close`` raise their ``TypeError`` once the rest is
        sealed and the producer is closed.
        """
        if self._closed or self._forked:
            self._closed = True
            self._halt()
            return
        deadline = self._deadline(timeout)
        self._acquire(deadline)
        try:
            if self._closed:
                return
            # Sealing and marking closed under one hold of the lock: a put
            # from another thread lands before (and is sealed) or after (and
            # is refused), never in between.  Halted before the seal: put's
            # hot path appends without the lock and looks at the halt after
            # its append, so an item appended after this seal's drain is
            # taken back there, not left unsealed in a closed producer.
            halted = self._halted
            self._halt()
            try:
                if self._count:
                    self._seal_locked(deadline)
            except BaseException:
                # As if close had not been called (a drop at this seal still halts).
                self._halt(halted or self._dropped_error is not None)
                raise
            self._closed = True
        finally:
            self._lock.release()
        self._stop_flusher.set()
        self._wake_flusher.set()
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join()
        self._waiter.close()
        if self._dropped_error is not None:
            self._raise_dropped(queued=0)

    @property
    def batch_size(self) -> int:
        """The size at which the open batch is sealed (it follows the policy with ``batch_size="auto"``)."""
        return self._batch_size

    @property
    def _count(self) -> int:
        """Items in the open batch (read under the lock, or as a hint)."""
        return self._recorded + len(self._run)

    @property
    def pending(self) -> int:
        """Items accepted but not yet sealed (lost if this process dies now)."""
        return self._count

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A producer dropped without close() (``queue.producer().put(x)``)
        # must not lose what it buffers without a word: seal it, without
        # waiting for room, and say so if that fails.  Never in a forked
        # child: those items are the parent's.
        try:
            count = self._count
            if (not count and self._dropped_error is None) or self._closed or self._forked:
                return
        except AttributeError:  # __init__ did not finish
            return
        try:
            self.close(timeout=0)
        except Exception as exc:
            self._report_loss(count, "was garbage-collected without close()", exc)

    def __repr__(self) -> str:
        return f"<turbo_queue.Producer {self._owner_text} on {self._dir!r} pending={self._count}>"

    def __reduce__(self):
        raise TypeError("a Producer belongs to one process; pass the Queue and call queue.producer() there")

    # -- internals --------------------------------------------------------

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        if timeout is None:
            return None
        if not timeout >= 0:  # also refuses NaN, which would never time out
            raise ValueError(f"timeout: must be a non-negative number, got {timeout!r}")
        return time.monotonic() + timeout

    def _put_deadline(self, block: bool, timeout: float | None) -> float:
        if not block:
            if timeout is not None:
                self._deadline(timeout)  # a bad timeout is refused whether or not it is used
            return time.monotonic()  # no waiting: Full at once if there is no room
        return self._deadline(timeout)

    def _acquire(self, deadline: float | None) -> None:
        """Take the lock within the deadline of a flush or close.

        A put of another thread holds it while it waits for room: the exit
        hook's close(timeout) must end (and report) rather than hang on it.
        """
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            raise Full("another thread's put holds this producer while it waits for room (max_ready)",
                       self._dir)

    def _check_halted(self) -> None:
        """Raise why puts stop, or clear a stale hint (the queue was reopened)."""
        if self._forked:
            raise self._forked_error()
        if self._closed:
            raise TurboQueueError("put on a closed Producer", self._dir)
        if self._dropped_error is not None:
            self._raise_dropped(queued=0)
        # The marker decides, as in Queue.is_closed: the background thread's
        # flag only says it was there at its last look.
        if self._folder.is_closed():
            raise Closed("the queue is closed; no more puts", self._dir)
        self._halt(False)

    def _halt(self, halted: bool = True) -> None:
        """Make put stop and find out why (closed, forked, dropped items), or let it run again."""
        self._halted = halted
        self._set_fast_limit()

    def _set_fast_limit(self) -> None:
        """The count below which put's hot path appends: one short of the size, less what is in records."""
        self._fast_limit = 0 if self._halted or not self._defer else self._batch_size - 1 - self._recorded

    def _raise_dropped(self, queued: int) -> None:
        """Raise the TypeError of items a seal dropped (once: the next call is clean)."""
        exc, self._dropped_error = self._dropped_error, None
        exc.queued = queued
        raise exc

    def _report_loss(self, count: int, how: str, exc: BaseException) -> None:
        if getattr(exc, "dropped", None) and isinstance(exc, TypeError):
            # Not a failed seal: the batch was sealed without the items it could not encode.
            log.error("turbo_queue producer on %s %s and dropped %d item%s it could not encode: %s",
                      self._dir, how, exc.dropped, "" if exc.dropped == 1 else "s", exc)
            return
        if self._loss_reported == self._count:
            return  # the exit hook said it already; __del__ at teardown must not repeat it
        self._loss_reported = self._count
        log.error("turbo_queue producer on %s %s and could not seal its %d pending item%s; they are "
                  "lost: %s: %s", self._dir, how, count, "" if count == 1 else "s", type(exc).__name__, exc)

    def _forked_error(self) -> TurboQueueError:
        return TurboQueueError(
            "this Producer was made in another process (before fork); call queue.producer() in this one",
            self._dir,
        )

    def _check_usable(self) -> None:
        if self._forked:
            raise self._forked_error()
        if self._closed:
            raise TurboQueueError("put on a closed Producer", self._dir)

    def _start_batch_locked(self) -> None:
        # One closed-check per batch here (it costs a syscall); within a
        # batch the background thread looks every CLOSED_CHECK_INTERVAL.  A
        # put racing with close() may still seal one more batch; consumers
        # drain ready batches until none is left, and stats() shows any stragglers.
        if self._folder.is_closed():
            raise Closed("the queue is closed; no more puts", self._dir)
        self._first_put = time.monotonic()
        if self._flusher is None:
            self._start_flusher()

    def _end_run_locked(self) -> None:
        if self._run:
            # Emptied in place, never replaced: put's hot path may hold the
            # list and append between the copy and the del; that item stays
            # in the run, for the next record or batch.
            run = self._run[:]
            del self._run[:len(run)]
            if self._defer:
                # Objects: encoded at seal; the run remembers where it starts
                # in the batch, to name the position of an item it cannot encode.
                self._records.append((None, self._recorded, run))
            else:
                self._records.append((0, lengths_bytes(array("Q", map(len, run))), b"".join(run)))
            self._recorded += len(run)
            self._set_fast_limit()

    def _encode_deferred_locked(self) -> None:
        """Serialize the batch's runs of objects (see _capture.encode_runs); drop what cannot be encoded.

        The records are replaced by their bytes before the batch is written,
        so a seal retried after an OSError writes what the first one encoded.
        """
        records, bad = encode_runs(self._records, self._dumps_many, self._dumps)
        self._records = records
        if not bad:
            return
        kept = self._recorded - len(bad)
        error = dropped_error(bad, self.sealed_items + self._dropped_items, kept, self._serializer.name)
        if self._dropped_error is not None:
            # An earlier drop nobody raised yet (a background seal): keep the first, count both.
            error = self._dropped_error
            error.dropped += len(bad)
        self._dropped_error = error
        self._dropped_items += len(bad)
        self._recorded = kept
        # The next put stops to raise it, even when a background seal dropped them.
        self._halt()

    def _seal_locked(self, deadline: float | None, wait: bool = True, for_put: bool = False) -> bool:
        """Seal the pending batch.  Returns False if ``wait`` is false and there is no room.

        ``for_put``: a put waits for room to seal the previous batch; it
        raises Closed if the queue is closed meanwhile (flush and close do
        not: consumers drain a closed queue, so room comes).
        """
        if not self._wait_for_room(deadline, wait, for_put):
            return False
        # From here the batch is _records alone: a put of another thread may
        # append to the run meanwhile (see put), for the next batch.
        self._end_run_locked()
        if self._defer:
            self._encode_deferred_locked()
            if not self._recorded:
                self._records = []  # every item was dropped: nothing to write
                return True
        count = self._recorded
        seal_ns = max(time.time_ns(), self._last_seal_ns + 1)
        self._seq += 1
        body = naming.BatchName(naming.LOADING, seal_ns, self._seq, count, self._owner).body
        loading = self._folder.join(naming.LOADING + body)
        ready = self._folder.join(naming.READY + body)
        data = encode_batch(self._records, count, self._serializer.name, self._owner_text, seal_ns)
        durable = self._durable
        try:
            write_file(loading, data, durable, self._file_mode)
        except OSError as exc:
            # Disk full, folder gone or read-only: the items stay buffered, so
            # the caller can free space and call flush() again.
            self._seq -= 1
            raise type(exc)(exc.errno, f"cannot write batch: {exc.strerror}", loading) from exc
        # The atomic step: from here the batch exists for consumers, whole.
        try:
            self._folder.publish(loading, ready)
        except OSError as exc:
            # The items stay buffered for a retry, so the loading copy must
            # go: left behind, recovery would seal it once this process is
            # gone, and the retried batch would be delivered twice.
            try:
                os.unlink(loading)
            except OSError:
                pass
            self._seq -= 1
            raise type(exc)(exc.errno, f"cannot seal batch: {exc.strerror}", ready) from exc
        if durable:
            _fsync_dir(self._dir)
        self._last_seal_ns = seal_ns
        self.sealed_batches += 1
        self.sealed_items += count
        if self._sizing is not None:
            self._resize_locked(sum(len(record[2]) for record in self._records))
        self._records = []
        self._recorded = 0
        self._set_fast_limit()
        if self._run:
            # Put by another thread during this seal: the next batch's first
            # items, which started it without _start_batch_locked.  One that
            # lands after this test keeps the old time, so its batch is at
            # worst sealed early by the age flush.
            self._first_put = time.monotonic()
        return True

    def _ready_now(self) -> int:
        return self._ready.count(self._max_ready or _NO_LIMIT)

    def _resize_locked(self, nbytes: int) -> None:
        """batch_size="auto": the next batch's size, from the ready count after this seal.

        The process's CPU time since the previous seal tells a busy producer
        from an idle one (AutoBatchSize.BUSY): one clock read per seal.
        """
        now, cpu = time.monotonic(), time.process_time()
        wall = now - self._sized_at
        busy = (cpu - self._sized_cpu) / wall if wall > 0 else 0.0
        self._sized_at, self._sized_cpu = now, cpu
        self._batch_size = self._sizing.after_seal(self._recorded, nbytes, self._ready_now(),
                                                   now - self._first_put, busy, idle=self._ready.idle_consumer(),
                                                   consumers=self._ready.consumers())

    def _wait_for_room(self, deadline: float | None, wait: bool, for_put: bool = False) -> bool:
        max_ready = self._max_ready
        if max_ready is None:
            return True
        # Never per item; per batch, the count kept from the folder's rename
        # events, listed only near the limit (see ReadyCount).
        while self._ready.count(max_ready) >= max_ready:
            if not wait:
                return False
            if for_put and self._folder.is_closed():
                # The waiter wakes on the CLOSED rename: a blocked put ends
                # as soon as any process closes the queue (test_blocked_put_many_ends_at_close).
                raise Closed("the queue was closed while this put waited for room", self._dir)
            if deadline is not None and time.monotonic() >= deadline:
                raise Full(f"{max_ready} sealed batches are waiting (max_ready); put timed out", self._dir)
            self._waiter.wait(deadline)
        self._waiter.reset()
        return True

    def _start_flusher(self) -> None:
        thread = threading.Thread(target=_flush_loop, args=(weakref.ref(self), self._stop_flusher,
                                                            self._wake_flusher),
                                  name=f"turbo_queue-flush-{self._owner.nonce}", daemon=True)
        self._flusher = thread
        thread.start()

    def _tick(self, interval: float) -> None:
        """One wake of the background thread: look for CLOSED, seal an old partial batch."""
        if self._closed or self._forked:
            return
        # Only while a batch is open: a put that starts one looks itself.
        # At most every CLOSED_CHECK_INTERVAL: an "auto" producer ticks faster.
        now = time.monotonic()
        if self._count and not self._halted and now - self._closed_checked >= CLOSED_CHECK_INTERVAL - interval / 2:
            self._closed_checked = now
            if self._folder.is_closed():
                self._halt()
        age = self._max_batch_age
        if age is None and self._sizing is None:
            return
        with self._lock:
            if self._closed or not self._count:
                return
            if self._sizing is not None and not self._halted:
                # An idle consumer (no batch ready, fewer claimed than
                # consumers seen busy) gets the open batch now; busy ones
                # let it fill to the size, a free one's next tick or LINGER
                # (see _sizing.py).
                try:
                    if self._sizing.seal_now(self._count, self._ready_now(), self._ready.idle_consumer(),
                                             time.monotonic() - self._first_put):
                        self._seal_locked(None, wait=False)
                        return
                except OSError:
                    return  # as below: the next put or flush reports it
            if age is None:
                return
            # The thread wakes every `interval` (at most age/4), so sealing
            # at age - interval keeps every batch's oldest item under
            # max_batch_age when it is sealed.
            if time.monotonic() - self._first_put >= age - interval:
                try:
                    self._seal_locked(None, wait=False)
                except OSError:
                    pass  # disk trouble: the next put or flush reports it to the caller


def _tick_interval(max_batch_age: float | None) -> float:
    if max_batch_age is None:
        return CLOSED_CHECK_INTERVAL
    return max(min(max_batch_age / 4, CLOSED_CHECK_INTERVAL), 0.001)


def _flush_loop(ref: weakref.ref[Producer], stop: threading.Event, wake: threading.Event) -> None:
    """The producer's background thread: age flush, the look for CLOSED, batch_size="auto"'s seals."""
    while True:
        producer = ref()
        if producer is None:
            return
        interval = _tick_interval(producer._max_batch_age)
        if producer._sizing is not None:
            interval = min(interval, AUTO_TICK)
        del producer
        wake.wait(interval)
        wake.clear()
        if stop.is_set():
            return
        producer = ref()
        if producer is None:
            return
        producer._tick(interval)
        del producer


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close_all_at_exit() -> None:
    """Seal what live producers still hold when the interpreter exits normally.

    Waits up to EXIT_TIMEOUT seconds for room per producer; what still cannot
    be sealed is logged as an ERROR with its count and the reason.
    """
    for producer in list(_live_producers):
        try:
            count = producer._count
            if producer._closed or producer._forked:
                continue
            producer.close(timeout=EXIT_TIMEOUT)
        except BaseException as exc:  # noqa: BLE001 - an interrupted exit is reported too
            producer._report_loss(count, "was still open at interpreter exit", exc)


def _after_fork_in_child() -> None:
    # The child has no thread but this one: a lock held by one of the
    # parent's threads (a put, the flusher) would stay held for ever, and the
    # flusher Thread object describes a thread that does not exist here.
    # These producers belong to the parent (they refuse use here, told by
    # _forked, which put tests through _halted: no os.getpid() per put); the
    # exit hook must leave them alone too.
    for producer in list(_live_producers):
        producer._forked = True
        producer._halt()
        producer._lock = threading.Lock()
        producer._flusher = None
        producer._stop_flusher = threading.Event()
        producer._wake_flusher = threading.Event()
    _live_producers.clear()


import atexit  # noqa: E402

atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
