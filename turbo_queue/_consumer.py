"""The consumer: claims a ready batch by renaming it, reads it, deletes it to ack.

Claiming is one ``rename`` from the ready name to a claimed name that embeds
this consumer's owner token.  Of several consumers renaming the same file,
exactly one succeeds; the others get ``FileNotFoundError`` and move on.  To
keep many consumers from all racing for the same oldest file, a consumer
that loses a race picks at random among the next few oldest
(``STAMPEDE_WINDOW``) instead of the next in line.

Delivery is at-least-once: a batch is deleted (acked) only after the caller
is done with it, that is when it asks for more, leaves the ``batch()``
block cleanly, calls :meth:`Consumer.ack` or closes the consumer.  If the
consumer process dies first, its claimed file is returned to ready by the
recovery that idle consumers run (at most every ``recover_interval``
seconds), and another consumer gets the batch again.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import _naming as naming
from ._batch import decode_batch, decode_items, read_file
from ._errors import BatchFormatError, Closed, Empty, TurboQueueError
from ._recovery import recover, set_aside
from ._wait import FolderWaiter

if TYPE_CHECKING:
    from ._queue import Queue

__all__ = ["Consumer"]

log = logging.getLogger("turbo_queue")

#: On a lost claim race, pick among this many of the oldest remaining batches.
STAMPEDE_WINDOW = 8


class Consumer:
    """Gets items from a queue.  Make one per process (or thread) with :meth:`Queue.consumer`."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._dir = str(queue.path)
        ser = queue._serializer
        self._loads = ser.loads
        self._loads_many = getattr(ser, "loads_many", None)
        self._pid = os.getpid()
        self._owner = naming.make_owner()
        self._waiter = FolderWaiter(self._dir, wake_on=(naming.READY, naming.CLOSED_MARKER))
        self._candidates: list[str] = []  # ready names from the last listing, oldest first
        self._held: str | None = None  # claimed file name of the batch handed out
        self._held_ready: str | None = None
        self._items: list[Any] = []
        self._pos = 0
        self._last_recover = 0.0
        self._closed = False
        self.batches = 0
        self.items_delivered = 0

    # -- public API -------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """One item, as ``queue.Queue.get``: waits up to ``timeout`` seconds (None: for ever).

        :class:`Empty` on timeout, or at once with ``block=False`` when no
        sealed batch is ready (``timeout`` is then ignored); :class:`Closed`
        once the queue is closed and drained.
        """
        if self._pos < len(self._items):
            if timeout is not None:
                self._deadline(timeout)  # a bad timeout is refused whether or not get would wait
            item = self._items[self._pos]
            self._pos += 1
            return item
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
        except BaseException:
            self.release()
            raise
        self.ack()

    def ack(self) -> None:
        """Delete the batch handed out so far: it will not be delivered again."""
        self._check_process()
        if self._held is None:
            return
        name, self._held, self._held_ready = self._held, None, None
        self._items, self._pos = [], 0
        try:
            os.unlink(os.path.join(self._dir, name))
        except FileNotFoundError:
            # Only a recovery that wrongly judged this process dead could have
            # moved it; the batch will then be delivered again (at-least-once).
            log.warning("turbo_queue: claimed batch %s vanished before its ack", name)

    def release(self) -> None:
        """Return the held batch to ready, unacked, in its original place in line."""
        self._check_process()
        if self._held is None:
            return
        name, ready = self._held, self._held_ready
        self._held, self._held_ready, self._items, self._pos = None, None, [], 0
        # The released batch is older than the cached candidates: list again
        # so that it is the next one out (its place in line), not skipped.
        self._candidates = []
        try:
            os.rename(os.path.join(self._dir, name), os.path.join(self._dir, ready))
        except FileNotFoundError:
            log.warning("turbo_queue: claimed batch %s vanished before its release", name)

    def __iter__(self) -> Iterator[Any]:
        """Every item until the queue is closed and drained."""
        while True:
            try:
                yield self.get()
            except Closed:
                return

    def close(self) -> None:
        """Ack a fully handed-out batch, release a partly handed-out one.  Idempotent."""
        if self._closed:
            return
        if self._pid != os.getpid():
            self._closed = True
            return
        try:
            # Before marking it closed: ack() and release() refuse a closed consumer.
            if self._held is not None:
                if self._pos >= len(self._items):
                    self.ack()
                else:
                    self.release()
        finally:
            self._closed = True
            self._waiter.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._held is not None and self._pos < len(self._items):
            self.release()
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

    def _next_batch(self, deadline: float | None) -> list[Any]:
        self._check_process()
        while True:
            items = self._claim_and_read()
            if items is not None:
                self._waiter.reset()
                return items
            # Nothing ready.  Idle time is when recovery is cheap to afford.
            now = time.monotonic()
            if now - self._last_recover >= self._queue.recover_interval:
                self._last_recover = now
                if recover(self._dir):
                    continue
            if self._queue.is_closed() and self._drained():
                raise Closed("the queue is closed and drained", self._dir)
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty("no sealed batch to claim", self._dir)
            self._waiter.wait(deadline)

    def _drained(self) -> bool:
        """Closed queues end once no batch is ready, loading or claimed anywhere.

        Waiting for other consumers' claimed batches too matters: one of them
        may still release its batch (an exception in ``batch()``), and then
        someone must be left to take it.  Dead owners' files are recovered
        first, so a crashed process cannot hold the end of stream back.
        """
        if recover(self._dir):
            return False
        self._last_recover = time.monotonic()
        for name in os.listdir(self._dir):
            if name.endswith(naming.SUFFIX) and name[:2] in (naming.READY, naming.LOADING, naming.CLAIMED):
                return False
        return True

    def _list_ready(self) -> list[str]:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            raise FileNotFoundError(2, "queue folder is gone", self._dir) from None
        ready = [n for n in names if naming.is_ready_name(n)]
        ready.sort()
        return ready

    def _claim_and_read(self) -> list[Any] | None:
        """Claim the oldest ready batch we can win and return its items, or None if none is ready."""
        lost_race = False
        listings = 0
        while True:
            if not self._candidates:
                if listings == 2:
                    return None
                self._candidates = self._list_ready()
                listings += 1
                if not self._candidates:
                    return None
            cands = self._candidates
            # First try the oldest; after a lost race, a random one of the
            # oldest few, so that racing consumers spread out.
            index = random.randrange(min(STAMPEDE_WINDOW, len(cands))) if lost_race else 0
            ready = cands.pop(index)
            claimed = naming.claimed_name(self._owner, ready)
            try:
                os.rename(os.path.join(self._dir, ready), os.path.join(self._dir, claimed))
            except FileNotFoundError:
                lost_race = True  # another consumer claimed it first
                continue
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:
                    raise
                # A stray r_*.tqb whose name is too long to claim: no producer
                # makes such names; left there it would be retried for ever.
                set_aside(self._dir, ready, "name-too-long")
                continue
            items = self._read_claimed(claimed, ready)
            if items is None:
                continue  # unreadable, set aside: try the next one
            self._held, self._held_ready = claimed, ready
            self.batches += 1
            self.items_delivered += len(items)
            return items

    def _read_claimed(self, claimed: str, ready: str) -> list[Any] | None:
        path = os.path.join(self._dir, claimed)
        try:
            meta, records = decode_batch(read_file(path), path)
            items = decode_items(records, self._loads, self._loads_many)
            if meta.get("count") != len(items):
                raise BatchFormatError(
                    f"batch says {meta.get('count')} items but holds {len(items)}", path, "count-mismatch")
        except BatchFormatError as exc:
            set_aside(self._dir, claimed, exc.reason, original=ready)
            log.error("turbo_queue: %s", exc)
            return None
        except (IsADirectoryError, PermissionError) as exc:
            set_aside(self._dir, claimed, type(exc).__name__, original=ready)
            return None
        except FileNotFoundError:
            if os.path.lexists(path):
                # A dangling symbolic link: nothing behind the name, but left
                # claimed it would hold the end of the stream back for ever.
                set_aside(self._dir, claimed, "dangling-link", original=ready)
            return None
        except Exception as exc:  # the serializer could not load an item
            set_aside(self._dir, claimed, "undecodable", original=ready)
            log.error("turbo_queue: cannot decode items of %s: %r", path, exc)
            return None
        if not items:
            os.unlink(path)
            return None
        return items
