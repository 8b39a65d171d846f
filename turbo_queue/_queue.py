"""The Queue: a folder, its settings, and the factory for producers and consumers.

A ``Queue`` object holds no open files and no per-process state, so it can be
made before ``fork``, pickled to ``spawn``-ed children, or made separately by
another application on the same path: all of them see the same queue.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
import warnings
from pathlib import Path
from typing import Any

from . import _naming as naming
from ._capture import CAPTURES
from ._consumer import Consumer
from ._errors import Full
from ._folder import Folder
from ._lease import DEFAULT_LEASE_TIMEOUT
from ._producer import Producer
from ._recovery import RecoveryReport, recover
from ._serializers import get_serializer
from ._sizing import AutoBatchSize

__all__ = ["Queue"]


def _positive_int(name: str, value: Any, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return value


def _positive_number(name: str, value: Any, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: must be a positive number{' or None' if allow_none else ''}, got {value!r}")
    return float(value)


class Queue:
    """A multi-process, multi-application queue stored in the folder ``path``.

    :param path: the queue folder; created with mode 0700 if missing.
    :param batch_size: items per sealed batch (the unit of claiming and acking), or
        ``"auto"``: each producer seals early while consumers wait for work (no
        batch ready) and grows its batches while ready batches pile up, up to
        ``max_batch_size`` items and ``max_batch_bytes`` (see ``_sizing.py``);
        ``max_batch_age`` stays the hard bound.
    :param max_ready: block ``put`` while this many sealed batches wait (None: unbounded).
    :param max_batch_age: seconds after which a partial batch is sealed even if its
        producer makes no further call (None: only when full or flushed).
    :param serializer: ``"pickle"`` (any object; **never load pickles written by
        someone you do not trust**), ``"json"``, ``"raw"`` (bytes/str), or an object
        with ``dumps``/``loads``.
    :param durable: fsync each batch and the folder at seal, so sealed batches
        survive power loss (not only process crashes).
    :param recover_interval: how often the consumers of a process run recovery
        (one scan per interval for the whole process, busy or idle, and one when
        a consumer starts): a dead consumer's batch is back in ready within
        about this many seconds.
    :param max_deliveries: deliveries of a batch that may end without an ack
        (released on an exception, its consumer died or dropped it) before the
        batch moves to ``dead/``: never delivered again, never deleted, counted
        in ``stats()["dead"]``, back with :meth:`requeue_dead`.  None: unlimited.
    :param allow_shared: open a folder that other users can write even with the
        pickle serializer (refused by default: writing there means running code
        in every consumer).
    :param lease_timeout: seconds after which a claimed or loading file whose owner
        cannot be checked from here (another host, container or PID namespace) is
        taken for abandoned and recovered.  Live consumers renew their claims every
        ``lease_timeout / 4``; owners in this PID namespace are checked by pid at
        once, whatever the lease.  ``float("inf")``: never recover such files.
    :param capture: when ``put`` serializes an item.  ``"seal"`` (the default,
        the fast path): the object is kept and its batch serialized with one
        call at seal, as ``multiprocessing.Queue`` pickles in its feeder
        thread, so **mutating an object after ``put`` and before its batch is
        sealed changes what is sent**, and an item that cannot be encoded is
        reported by the call that seals its batch.  ``"put"``: each item is
        serialized when ``put`` accepts it (what ``put`` accepted is what the
        consumer gets; ``TypeError`` from that ``put``), at about twice the
        CPU per event.  Serializers that encode item by item (``"raw"``,
        custom objects) always encode at ``put``; ``put_many`` always encodes
        at the call.
    """

    def __init__(self, path: str | os.PathLike[str], batch_size: int = 1000, max_ready: int | None = None,
                 max_batch_age: float | None = 1.0, serializer: Any = "pickle", durable: bool = False,
                 *, recover_interval: float = 1.0, allow_shared: bool = False,
                 max_deliveries: int | None = None, lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
                 capture: str = "seal", max_batch_size: int | None = None,
                 max_batch_bytes: int | None = None) -> None:
        if batch_size == "auto":
            self.batch_size: int | str = "auto"
            self.max_batch_size = _positive_int("max_batch_size", 10_000 if max_batch_size is None else max_batch_size)
            self.max_batch_bytes = _positive_int("max_batch_bytes", max_batch_bytes, allow_none=True)
        else:
            if isinstance(batch_size, str):
                raise ValueError(f"batch_size: must be a positive integer or 'auto', got {batch_size!r}")
            self.batch_size = _positive_int("batch_size", batch_size)
            if max_batch_size is not None or max_batch_bytes is not None:
                raise ValueError("max_batch_size and max_batch_bytes bound batch_size='auto'; "
                                 f"batch_size={batch_size!r} is fixed")
            self.max_batch_size = self.max_batch_bytes = None
        self.max_ready = _positive_int("max_ready", max_ready, allow_none=True)
        self.max_batch_age = _positive_number("max_batch_age", max_batch_age, allow_none=True)
        self.recover_interval = _positive_number("recover_interval", recover_interval)
        self.max_deliveries = _positive_int("max_deliveries", max_deliveries, allow_none=True)
        self.lease_timeout = _positive_number("lease_timeout", lease_timeout)
        if capture not in CAPTURES:
            raise ValueError(f"capture: must be one of {', '.join(map(repr, CAPTURES))}, got {capture!r}")
        self.capture = capture
        self._serializer = get_serializer(serializer)
        self._serializer_spec = serializer
        self.durable = bool(durable)
        self.allow_shared = bool(allow_shared)
        self._path = Path(os.fspath(path)).absolute()
        self._folder = Folder(str(self._path), self.lease_timeout)
        self._closed_here = False
        self._open_folder()

    # -- set-up -----------------------------------------------------------

    def _open_folder(self) -> None:
        path = str(self._path)
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot create queue folder: {exc.strerror}", path) from None
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(20, "queue path is not a folder", path)
        # Batch files take the folder's group access (read, write), never
        # others': a 2770 group folder gets 0660 batches its other users can
        # consume; a private folder gets 0600 (docs/security.md).
        self._file_mode = 0o600 | (stat.S_IMODE(st.st_mode) & 0o060)
        # A folder owned by another user (not root) is writable by that user
        # whatever its mode: the same risk as a group- or world-writable one.
        foreign = hasattr(os, "geteuid") and st.st_uid not in (os.geteuid(), 0)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or foreign:
            who = (f"owned by another user (uid {st.st_uid})" if foreign
                   else f"writable by other users (mode {stat.S_IMODE(st.st_mode):o})")
            message = f"queue folder {path} is {who}: anyone who can write there can inject items"
            if self._serializer.name == "pickle" and not self.allow_shared:
                raise PermissionError(1, message + "; with the pickle serializer that means running code in "
                                      "every consumer. Use serializer='json' or 'raw', tighten the mode "
                                      "(chmod 700), or pass allow_shared=True", path)
            warnings.warn(message, stacklevel=3)
        # Prove we can create and remove files here now, not at the first seal:
        # a bad path is reported where the queue is made, naming the path.
        try:
            _check_writable(path)
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write in queue folder: {exc.strerror}", path) from None

    def __reduce__(self):
        kwargs = dict(batch_size=self.batch_size, max_ready=self.max_ready, max_batch_age=self.max_batch_age,
                      serializer=self._serializer_spec, durable=self.durable,
                      recover_interval=self.recover_interval, allow_shared=self.allow_shared,
                      max_deliveries=self.max_deliveries, lease_timeout=self.lease_timeout,
                      capture=self.capture, max_batch_size=self.max_batch_size,
                      max_batch_bytes=self.max_batch_bytes)
        return (_rebuild, (str(self._path), kwargs))

    def __repr__(self) -> str:
        return (f"turbo_queue.Queue({str(self._path)!r}, batch_size={self.batch_size!r}, max_ready={self.max_ready}, "
                f"max_batch_age={self.max_batch_age}, serializer={self._serializer.name!r}, durable={self.durable})")

    # -- public API -------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def producer(self) -> Producer:
        """A new producer for this process (use it as a context manager)."""
        auto = self.batch_size == "auto"
        sizing = AutoBatchSize(self.max_batch_size, self.max_batch_bytes) if auto else None
        return Producer(self._folder, self._serializer, batch_size=0 if auto else self.batch_size,
                        max_ready=self.max_ready, max_batch_age=self.max_batch_age, durable=self.durable,
                        file_mode=self._file_mode, capture=self.capture, sizing=sizing)

    def consumer(self) -> Consumer:
        """A new consumer for this process (use it as a context manager)."""
        return Consumer(self._folder, self._serializer, recover_interval=self.recover_interval,
                        max_deliveries=self.max_deliveries)

    def close(self) -> None:
        """Mark the end of the stream for every process on this path.

        Every producer's ``put`` raises :class:`Closed` within a second from
        then on (each producer looks for the marker in the background, not
        per item); consumers drain what is sealed and then end.  Call it once all producers have closed (or
        flushed): a producer still holding a partial batch may seal it after
        consumers have ended, and it then waits in the folder (``stats()``
        shows it) until the queue is reopened and drained.
        """
        self._folder.write_closed(self.durable)
        # Only once the marker exists: a close that failed (read-only or
        # vanished folder) must not leave this object refusing puts alone.
        self._closed_here = True

    def reopen(self) -> None:
        """Undo :meth:`close` so the folder can carry a new stream."""
        self._closed_here = False
        self._folder.remove_closed()

    def is_closed(self) -> bool:
        # The marker alone decides, for every Queue object on the path alike:
        # a reopen() by another process or application must reopen this one too.
        return self._folder.is_closed()

    def recover(self) -> RecoveryReport:
        """Return batches of dead owners to ready and set unreadable files aside.

        A returned batch counts one delivery without an ack; one that reaches
        ``max_deliveries`` goes to ``dead/`` instead.
        """
        return recover(self._folder, self.max_deliveries, self.lease_timeout)

    def requeue_dead(self) -> int:
        """Return every dead batch to ready with its delivery count reset; returns how many."""
        return self._folder.requeue_dead()

    def stats(self) -> dict[str, Any]:
        """Batches and events per state, from one listing of the folder (no file is opened)."""
        return folder_stats(self._folder)

    # -- the queue.Queue conventions --------------------------------------
    # qsize/empty/join as code written for queue.Queue or multiprocessing.Queue
    # expects them, over the folder: what is sealed and not yet acked.

    def qsize(self) -> int:
        """Events sealed and not yet acked (ready + claimed), from one listing of the folder.

        Like ``queue.Queue.qsize`` it is a snapshot: other processes may
        change it at once.  Items buffered in producers (not sealed) and
        batches in the dead-letter or set-aside states are not counted.
        """
        return self._folder.unacked()[1]

    def empty(self) -> bool:
        """True if no sealed batch waits to be claimed or acked (``qsize() == 0``)."""
        return self._folder.unacked()[0] == 0

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every sealed batch has been acked; True, or False if ``timeout`` passed first.

        First flushes the producers of this process on this path (their
        partial batches would otherwise never be waited for), then waits for
        no ready or claimed batch to remain.  Batches of other processes'
        producers count once they are sealed.  A claimed batch of a dead
        consumer holds ``join`` until a live consumer's recovery returns it
        and it is consumed.
        """
        from ._producer import _live_producers
        from ._wait import LEAVE_EVENTS, FolderWaiter

        if timeout is not None and not timeout >= 0:  # also refuses NaN, which would never time out
            raise ValueError(f"timeout: must be a non-negative number, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        folder = str(self._path)
        pid = os.getpid()
        for producer in list(_live_producers):
            # Only this process's producers of this path: a forked child's
            # copies belong to the parent, and other paths are other queues.
            if producer._dir != folder or producer._pid != pid or producer._closed or not producer.pending:
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                producer.flush(remaining)
            except Full:
                return False  # no room before the deadline: the batch cannot even be sealed
        # Wake when a batch leaves a name (ack = unlink, claim/release/set
        # aside = rename away): only then can the count reach zero.
        waiter = FolderWaiter(folder, events=LEAVE_EVENTS)
        try:
            while self._folder.unacked()[0]:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                waiter.wait(deadline)
            return True
        finally:
            waiter.close()


def _check_writable(path: str) -> None:
    """Create and remove a file in the folder ``path``; OSError if that cannot be done."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        # An unnamed file (Linux): a process killed here leaves no stray probe behind.
        try:
            os.close(os.open(path, tmpfile | os.O_WRONLY, 0o600))
            return
        except OSError as exc:
            # EISDIR from kernels without O_TMPFILE, EOPNOTSUPP from file systems without it.
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    probe = os.path.join(path, f".probe-{os.getpid()}-{secrets.token_hex(4)}")
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.unlink(probe)


def _rebuild(path: str, kwargs: dict) -> Queue:
    return Queue(path, **kwargs)


def folder_stats(folder: str | Folder) -> dict[str, Any]:
    """The numbers behind ``Queue.stats()`` and ``python -m turbo_queue status``."""
    if not isinstance(folder, Folder):
        folder = Folder(folder)
    now = time.time_ns()
    scan = folder.scan()
    states = {}
    oldest = None
    for state, names in (("loading", scan.loading), ("ready", scan.ready), ("claimed", scan.claimed)):
        events = 0
        for name in names:
            if state == "claimed":
                claimed = naming.parse_claimed_name(name)
                parsed = naming.parse_batch_name(claimed.ready_name) if claimed else None
            else:
                parsed = naming.parse_batch_name(name)
            if parsed is not None:
                events += parsed.count
                if state == "ready" and (oldest is None or parsed.seal_ns < oldest):
                    oldest = parsed.seal_ns
        states[state] = {"batches": len(names), "events": events}
    return {
        "path": folder.path,
        "closed": scan.closed,
        **states,
        "dead": folder.dead_stats(),
        "aside": folder.aside_count(),
        "other_files": len(scan.other),
        "oldest_ready_age_s": None if oldest is None else max(0.0, (now - oldest) / 1e9),
    }
