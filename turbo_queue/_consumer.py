"""The consumer: claims a ready batch by renaming it, reads it, deletes it to ack.

Claiming is one ``rename`` from the ready name to a claimed name that embeds
this consumer's owner token.  Of several consumers renaming the same file,
exactly one succeeds; the others get ``FileNotFoundError`` and move on.  To
keep many consumers from all racing for the same oldest file, a consumer
that loses a race picks at random among the next few oldest
(``STAMPEDE_WINDOW``) instead of the next in line.

Delivery is at-least-once: a batch is deleted (acked) only after the caller
is done with it, that is when it asks for more, leaves the ``batch()`` or
``with queue.consumer()`` block cleanly, calls :meth:`Consumer.ack` or
closes the consumer.  An exception leaving either block returns the batch
in hand to ready, even when its last item was handed out; so does a
Consumer dropped without ``close()`` (its finalizer).  If the consumer
process dies first, its claimed file is returned to ready by the recovery
that the consumers of every process run, paced by time (one scan per
``recover_interval`` per process, busy or idle, and one at start), and
another consumer gets the batch again.  Each such return counts one
delivery in the batch's name; at ``max_deliveries`` it goes to ``dead/``.

Only a file that is not a batch is set aside.  A good batch this consumer
cannot read (a local OSError, MemoryError, an item it cannot load) goes
back to ready and the caller gets :class:`BatchReadError`.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _naming as naming
from ._batch import decode_batch, decode_items, read_file
from ._errors import BatchFormatError, BatchReadError, Closed, Empty, TurboQueueError
from ._folder import Folder, ReadyArrivals
from ._recovery import pacer, recover
from ._wait import ARRIVAL_EVENTS, FolderWaiter

__all__ = ["Consumer"]

log = logging.getLogger("turbo_queue")

#: Errors of a claiming rename that are about the folder, not one batch: raised as they are.
_FOLDER_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)

#: On a lost claim race, pick among this many of the oldest remaining batches.
STAMPEDE_WINDOW = 8


class _Hold:
    """The claim a consumer holds, kept apart from the Consumer so its finalizer can release it."""

    __slots__ = ("claimed", "folder", "max_deliveries", "pid", "ready")

    def __init__(self, folder: Folder, max_deliveries: int | None) -> None:
        self.folder = folder
        self.max_deliveries = max_deliveries
        self.pid = os.getpid()
        self.claimed: str | None = None
        self.ready: str | None = None


def _release_dropped(hold: _Hold) -> None:
    """Finalizer of a Consumer collected (or left at interpreter exit) while holding a batch."""
    if hold.claimed is None or hold.pid != os.getpid():
        return  # nothing held, or a forked child: the claim is its parent's
    claimed, ready, hold.claimed, hold.ready = hold.claimed, hold.ready, None, None
    try:
        moved = hold.folder.release(claimed, ready, max_deliveries=hold.max_deliveries,
                                    error="its consumer was dropped without close() before an ack")
    except OSError as exc:
        log.error("turbo_queue: cannot release %s of a dropped consumer: %s (recovery will)", claimed, exc)
        return
    log.warning("turbo_queue: consumer dropped without close(); returned %s as %s", ready, moved)


class Consumer:
    """Gets items from a queue.  Make one per process (or thread) with :meth:`Queue.consumer`."""

    def __init__(self, folder: Folder, serializer: Any, *, recover_interval: float,
                 max_deliveries: int | None = None) -> None:
        self._folder = folder
        self._dir = folder.path
        self._recover_interval = recover_interval
        self._max_deliveries = max_deliveries
        self._loads = serializer.loads
        self._loads_many = getattr(serializer, "loads_many", None)
        self._pid = os.getpid()
        self._owner = naming.make_owner()
        self._waiter = FolderWaiter(self._dir, wake_on=(naming.READY, naming.CLOSED_MARKER), events=ARRIVAL_EVENTS)
        # The same watch names the batches that became ready: no listing per batch.
        self._arrivals = ReadyArrivals(folder, self._waiter)
        self._candidates: list[str] = []  # ready names from the last look, oldest first
        self._hold = _Hold(folder, max_deliveries)
        self._items: list[Any] = []
        self._pos = 0
        #: The claimed name whose last handed-out item a ``for`` loop left
        #: unconfirmed (the loop ended by an exception or a break: which, the
        #: generator cannot tell), so close() releases it instead of acking.
        self._unconfirmed: str | None = None
        self._closed = False
        self.batches = 0
        self.items_delivered = 0
        # Released if the Consumer is collected or the interpreter exits
        # without close(): nothing stays claimed while this process lives on.
        self._finalizer = weakref.finalize(self, _release_dropped, self._hold)
        # A consumer recovers when it starts (shared with the process's other
        # consumers: at most one scan per recover_interval).
        self._pace_recovery()

    @property
    def _held(self) -> str | None:
        return self._hold.claimed

    @property
    def _held_ready(self) -> str | None:
        return self._hold.ready

    # -- public API -------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """One item, as ``queue.Queue.get``: waits up to ``timeout`` seconds (None: for ever).

        :class:`Empty` on timeout, or at once with ``block=False`` when no
        sealed batch is ready (``timeout`` is then ignored); :class:`Closed`
        once the queue is closed and drained.

        Asking for an item confirms that the previous one was handled: the
        batch is acked once all its items were handed out *and* the caller
        asks for more (or acks, or closes).  :class:`BatchReadError` if a
        batch could not be read here (it is back in ready).
        """
        self._unconfirmed = None  # asking for more: what was handed out is handled
        pos, items = self._pos, self._items
        if pos < len(items):
            if timeout is not None:
                self._deadline(timeout)  # a bad timeout is refused whether or not get would wait
            self._pos = pos + 1
            return items[pos]
        # block=False: one look at the folder (a deadline that has already
        # passed), never a wait, as queue.Queue.get(block=False).
        deadline = self._deadline(timeout if block else 0.0)
        self.ack()
        self._items = self._next_batch(deadline)
        self._pos = 1
        return self._items[0]

    def get_nowait(self) -> Any:
        """``get(block=False)``: an item if one is ready now, else :class:`Empty` at once."""
        return self.get(False)

    def get_batch(self, timeout: float | None = None) -> list[Any]:
        """The items of one whole sealed batch, in put order.

        The batch is acked when this consumer next asks for items, calls
        :meth:`ack`, or closes; if the process dies before that, the batch is
        delivered again to another consumer.
        """
        deadline = self._deadline(timeout)
        self._unconfirmed = None
        if self._held is not None and self._pos < len(self._items):
            # The rest of a batch partly handed out by get(): finish it first.
            items = self._items[self._pos:]
            self._pos = len(self._items)
            return items
        self.ack()
        items = self._next_batch(deadline)
        self._items, self._pos = items, len(items)
        return items

    @contextmanager
    def batch(self, timeout: float | None = None) -> Iterator[list[Any]]:
        """``with consumer.batch() as items:`` acked on clean exit, returned to ready on exception."""
        items = self.get_batch(timeout)
        try:
            yield items
        except BaseException as exc:
            self._release(exc)
            raise
        self.ack()

    def ack(self) -> None:
        """Delete the batch handed out so far: it will not be delivered again."""
        self._check_process()
        name = self._hold.claimed
        if name is None:
            return
        self._drop_hold()
        if not self._folder.ack(name):
            # Only a recovery that wrongly judged this process dead could have
            # moved it; the batch will then be delivered again (at-least-once).
            log.warning("turbo_queue: claimed batch %s vanished before its ack", name)

    def release(self) -> None:
        """Return the held batch to ready, unacked, in its original place in line.

        It counts as one delivery without an ack (see ``max_deliveries``).
        """
        self._check_process()
        self._release(None)

    def __iter__(self) -> Iterator[Any]:
        """Every item until the queue is closed and drained.

        An item is handled once the loop asks for the next one.  A loop left
        by an exception (or a ``break``: the iterator cannot tell them apart)
        leaves its last item unconfirmed: ``close()`` then releases the batch
        rather than acking it; asking for more confirms it.
        """
        while True:
            # The batch in hand is handed out here, without a get() call per
            # item; state is read afresh each time, so a get(), ack() or
            # release() made inside the loop is seen.
            self._unconfirmed = None
            pos, items = self._pos, self._items
            if pos < len(items):
                self._pos = pos + 1
                item = items[pos]
            else:
                try:
                    item = self.get()
                except Closed:
                    return
            try:
                yield item
            except GeneratorExit:
                self._unconfirmed = self._hold.claimed
                raise

    def close(self) -> None:
        """Ack a fully handed-out batch, release a partly handed-out one (not counted).  Idempotent."""
        if self._closed:
            return
        if self._pid != os.getpid():
            self._closed = True
            self._finalizer.detach()
            return
        try:
            # Before marking it closed: ack() and release() refuse a closed consumer.
            if self._held is not None:
                if self._unconfirmed == self._held:
                    self._release(None)  # maybe an exception left the loop: counted
                elif self._pos >= len(self._items):
                    self.ack()
                else:
                    # A clean stop part way through: the items not handed out
                    # go back, and no failure is counted against the batch.
                    self._release(None, count=False)
        finally:
            self._closed = True
            self._waiter.close()
            if self._hold.claimed is None:
                self._finalizer.detach()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # An exception leaving the block: whatever batch is in hand was not
        # fully handled, even if its last item was handed out (the handler
        # may have raised on it), so it goes back to ready, never acked.
        if exc_type is not None and self._held is not None and self._pid == os.getpid() and not self._closed:
            self._release(exc)
        elif exc_type is None:
            # Left cleanly (a ``break`` included): what was handed out was handled.
            self._unconfirmed = None
        self.close()

    def __repr__(self) -> str:
        return f"<turbo_queue.Consumer {self._owner} on {self._dir!r} holding={self._held_ready}>"

    def __reduce__(self):
        raise TypeError("a Consumer belongs to one process; pass the Queue and call queue.consumer() there")

    # -- internals --------------------------------------------------------

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        if timeout is None:
            return None
        if not timeout >= 0:  # also refuses NaN, which would never time out
            raise ValueError(f"timeout: must be a non-negative number, got {timeout!r}")
        return time.monotonic() + timeout

    def _check_process(self) -> None:
        if self._pid != os.getpid():
            raise TurboQueueError(
                "this Consumer was made in another process (before fork); call queue.consumer() in this one",
                self._dir)
        if self._closed:
            raise TurboQueueError("this Consumer is closed", self._dir)

    def _drop_hold(self) -> None:
        self._hold.claimed = self._hold.ready = None
        self._items, self._pos = [], 0
        self._unconfirmed = None

    def _release(self, exc: BaseException | None, count: bool = True) -> None:
        """Return the held batch (counted as a delivery without an ack; dead at max_deliveries)."""
        name, ready = self._hold.claimed, self._hold.ready
        if name is None:
            return
        self._drop_hold()
        # The released batch is older than the cached candidates: list again
        # so that it is the next one out (its place in line), not skipped.
        self._forget_candidates()
        error = "released without an ack" if exc is None else f"{type(exc).__name__}: {exc}"
        moved = self._folder.release(name, ready, count=count, max_deliveries=self._max_deliveries, error=error)
        if moved is None:
            log.warning("turbo_queue: claimed batch %s vanished before its release", name)

    def _forget_candidates(self) -> None:
        """Drop the candidates; the next look lists the folder (their place in line matters)."""
        self._candidates = []
        self._arrivals.forget()

    def _pace_recovery(self, force: bool = False) -> bool:
        try:
            report = pacer.maybe_recover(self._folder, self._recover_interval, self._max_deliveries, force,
                                         self._folder.lease_timeout)
        except OSError as exc:
            # Recovery is housekeeping: a failing scan must not stop claiming.
            log.warning("turbo_queue: recovery of %s failed: %s", self._dir, exc)
            return False
        return bool(report)

    def _next_batch(self, deadline: float | None) -> list[Any]:
        self._check_process()
        while True:
            # Paced by time, busy or idle: one scan per recover_interval for
            # the whole process (tests/test_recovery_load.py).
            if self._pace_recovery():
                self._forget_candidates()
            items = self._claim_and_read()
            if items is not None:
                self._waiter.reset()
                return items
            if self._folder.is_closed() and self._drained():
                raise Closed("the queue is closed and drained", self._dir)
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty("no sealed batch to claim", self._dir)
            self._waiter.wait(deadline)

    def _drained(self) -> bool:
        """Closed queues end once no batch is ready, loading or claimed anywhere.

        Waiting for other consumers' claimed batches too matters: one of them
        may still release its batch (an exception in ``batch()``), and then
        someone must be left to take it.  Dead owners' files are recovered
        first, so a crashed process cannot hold the end of stream back, and
        a claim of this process that no Consumer holds is recovered too.
        """
        if recover(self._folder, self._max_deliveries, self._folder.lease_timeout):
            return False
        return self._folder.scan().in_flight == 0

    def _claim_and_read(self) -> list[Any] | None:
        """Claim the oldest ready batch we can win and return its items, or None if none is ready."""
        lost_race = False
        listings = 0
        while True:
            if not self._candidates:
                if listings == 2:
                    return None
                self._candidates = self._arrivals.ready()
                listings += 1
                if not self._candidates:
                    return None
            cands = self._candidates
            # First try the oldest; after a lost race, a random one of the
            # oldest few, so that racing consumers spread out.
            index = random.randrange(min(STAMPEDE_WINDOW, len(cands))) if lost_race else 0
            ready = cands.pop(index)
            try:
                claimed = self._folder.claim(ready, self._owner)
            except FileNotFoundError:
                lost_race = True  # another consumer claimed it first
                continue
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    # A stray r_*.tqb whose name is too long to claim: no producer
                    # makes such names; left there it would be retried for ever.
                    self._folder.set_aside(ready, "name-too-long")
                    continue
                # The rename failed, so the batch is still ready, in its place.
                self._forget_candidates()
                if exc.errno in _FOLDER_ERRNOS:
                    # The folder itself refuses changes (read-only, permissions):
                    # the same OSError, naming the path, that producers raise.
                    raise
                raise BatchReadError(f"cannot claim batch: {exc}", self._folder.join(ready)) from exc
            try:
                items = self._read_claimed(claimed, ready)
            except BatchReadError:
                raise  # already back in ready (or dead)
            except BaseException:
                # Interrupted (KeyboardInterrupt, SystemExit...) between claim
                # and hand-over: never handed over, so not a delivery; back
                # under its old name (tests/test_consumer_faults.py).
                self._folder.release(claimed, ready, count=False)
                self._forget_candidates()
                raise
            if items is None:
                continue  # unreadable, set aside (or empty, acked): try the next one
            self._hold.claimed, self._hold.ready = claimed, ready
            self.batches += 1
            self.items_delivered += len(items)
            return items

    def _local_fault(self, claimed: str, ready: str, exc: BaseException, what: str, count: bool) -> BatchReadError:
        """Return a good batch that this consumer could not read to ready; the error to raise."""
        self._forget_candidates()
        moved = self._folder.release(claimed, ready, count=count, max_deliveries=self._max_deliveries,
                                     error=f"{what}: {type(exc).__name__}: {exc}")
        if moved is not None and moved.startswith(naming.DEAD_DIR):
            return BatchReadError(f"{what}: {exc!r}; it reached max_deliveries and is now dead",
                                  self._folder.join(moved))
        return BatchReadError(f"{what}: {exc!r}; the batch is back in ready",
                              self._folder.join(moved or ready))

    def _read_claimed(self, claimed: str, ready: str) -> list[Any] | None:
        """The items of a claimed batch; None if it was set aside (not a batch) or empty.

        Only a file that is not a batch is set aside.  Anything local to this
        consumer (an OSError such as EMFILE or EIO, MemoryError, an item its
        serializer cannot load here) returns the batch to ready and raises
        :class:`BatchReadError`: moving good batches aside would empty the
        queue into ``aside/`` one after another.
        """
        path = self._folder.join(claimed)
        # The name is parsed only where its delivery count matters (a regex
        # and an owner parse per batch: as much as a system call).
        parsed = naming.parse_batch_name(ready) if self._max_deliveries is not None else None
        if (parsed is not None
                and parsed.deliveries >= self._max_deliveries):
            # Counted up by a recovery or a consumer without the setting.
            self._folder.dead_letter(claimed, parsed, f"delivered {parsed.deliveries} times without an ack "
                                     "(its consumers died, dropped or released it)")
            return None
        try:
            data = read_file(path)
        except IsADirectoryError as exc:
            self._folder.set_aside(claimed, type(exc).__name__, original=ready)
            return None
        except FileNotFoundError as exc:
            if os.path.lexists(path):
                # A dangling symbolic link: nothing behind the name, but left
                # claimed it would hold the end of the stream back for ever.
                self._folder.set_aside(claimed, "dangling-link", original=ready)
                return None
            raise self._local_fault(claimed, ready, exc, "cannot read batch", count=False) from exc
        except (OSError, MemoryError) as exc:
            raise self._local_fault(claimed, ready, exc, "cannot read batch", count=False) from exc
        try:
            meta, records = decode_batch(data, path)
            del data
        except BatchFormatError as exc:
            self._folder.set_aside(claimed, exc.reason, original=ready)
            log.error("turbo_queue: %s", exc)
            return None
        except MemoryError as exc:
            raise self._local_fault(claimed, ready, exc, "cannot open batch", count=False) from exc
        try:
            items = decode_items(records, self._loads, self._loads_many)
        except MemoryError as exc:
            raise self._local_fault(claimed, ready, exc, "cannot decode items", count=False) from exc
        except Exception as exc:
            # The serializer could not load an item here (a missing module, a
            # renamed class...): the batch is good, so it goes back to ready.
            # It counts as a delivery: an item that no consumer can ever load
            # ends in dead/ with max_deliveries instead of coming back for ever.
            raise self._local_fault(claimed, ready, exc, "cannot decode items", count=True) from exc
        if meta.get("count") != len(items):
            exc = BatchFormatError(f"batch says {meta.get('count')} items but holds {len(items)}", path,
                                   "count-mismatch")
            self._folder.set_aside(claimed, exc.reason, original=ready)
            log.error("turbo_queue: %s", exc)
            return None
        if not items:
            self._folder.ack(claimed)
            return None
        return items
