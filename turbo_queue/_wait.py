"""Waiting for the folder to change without busy-looping.

Idle consumers (no ready batch) and blocked producers (``max_ready`` batches
waiting) sleep here.  On Linux an inotify watch on the queue folder wakes
them as soon as a file is renamed into the folder, and only for the names
that matter to them: a consumer for a new ready batch (``r_*``) or the
``CLOSED`` marker, a producer for a claim (``c_*``: one batch fewer waits).
Every state change of the protocol is a rename, so the watch asks the kernel
for renames only (``IN_MOVED_TO``); with many consumers on small batches,
waking on every write, create and delete costs a context switch each, for
nothing.  Elsewhere, or
when inotify is unavailable (out of watches, a file system that does not
report events, as on some network mounts), they sleep with an adaptive
back-off that starts at 1 ms and doubles to 50 ms.  Even with inotify the
wait is capped, because inotify can miss events made on another host
sharing a network file system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import struct
import sys
import time
import weakref
from collections.abc import Callable, Iterator

__all__ = ["FolderWaiter", "iter_events"]

_IN_CLOEXEC = 0o2000000
_IN_NONBLOCK = 0o4000
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_DELETE = 0x40, 0x80, 0x200
_IN_Q_OVERFLOW, _IN_IGNORED = 0x4000, 0x8000
#: What ``Queue.join`` waits for: a batch leaving the folder's names (an ack
#: is an unlink, a claim, release or set-aside a rename away from a name).
LEAVE_EVENTS = _IN_MOVED_FROM | _IN_DELETE
#: What a producer watches to keep its count of ready batches (``_folder.ReadyCount``):
#: names arriving (a seal, a release, a recovery) and leaving (a claim, a removal).
READY_COUNT_EVENTS = _IN_MOVED_TO | _IN_MOVED_FROM | _IN_DELETE
#: What a consumer watches: ready names arriving and leaving (``_folder.ReadyArrivals``);
#: not deletions, which only acks make (of claimed names).
ARRIVAL_EVENTS = _IN_MOVED_TO | _IN_MOVED_FROM
#: Masks an event listener sees (``FolderWaiter.listener``).
ARRIVED, LEFT, LOST = _IN_MOVED_TO, _IN_MOVED_FROM | _IN_DELETE, _IN_Q_OVERFLOW | _IN_IGNORED
#: struct inotify_event: wd, mask, cookie, len, then ``len`` bytes of name.
_EVENT = struct.Struct("iIII")
#: Bytes asked for per read of the inotify descriptor, and the most one event takes (its name NUL-terminated).
_READ_SIZE = 65536
_MAX_EVENT = _EVENT.size + 255 + 1

_libc = None

#: Every waiter of this process, so a forked child can close the descriptors it inherited.
_waiters: weakref.WeakSet[FolderWaiter] = weakref.WeakSet()


def _inotify_libc():
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            _libc = False
        else:
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                lib.inotify_init1.argtypes = [ctypes.c_int]
                lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
                _libc = lib
            except (OSError, AttributeError):
                _libc = False
    return _libc


class FolderWaiter:
    """Sleep until something changes in ``path``, or a deadline passes.

    One per producer or consumer object; its inotify descriptor belongs to the
    process that made it.  A forked child closes its copy at once (see
    :func:`_after_fork_in_child`) and makes its own when it first waits.
    """

    MIN_SLEEP = 0.001
    MAX_SLEEP = 0.05
    #: Longest sleep even when inotify is watching (see module docstring).
    INOTIFY_CAP = 0.25

    def __init__(self, path: str, wake_on: tuple[str, ...] | None = None, use_inotify: bool = True,
                 events: int = _IN_MOVED_TO) -> None:
        self.path = path
        #: The inotify mask watched (renames into the folder, unless told otherwise).
        self._events = events
        #: Name prefixes whose arrival ends a wait (None: any rename).
        self._wake_on = tuple(p.encode() for p in wake_on) if wake_on else None
        self._use_inotify = use_inotify
        self._fd = -1
        self._pid = -1
        self._backoff = self.MIN_SLEEP
        #: Called with every buffer of events read (``iter_events`` parses
        #: it), whether or not they end a wait: ReadyCount counts from them.
        self.listener: Callable[[bytes], None] | None = None
        _waiters.add(self)

    def _inotify_fd(self) -> int:
        pid = os.getpid()
        if self._pid != pid:
            self._fd, self._pid = -1, pid  # not ours (closed at fork, see _after_fork_in_child)
            lib = _inotify_libc() if self._use_inotify else False
            if lib:
                fd = lib.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
                if fd >= 0:
                    if lib.inotify_add_watch(fd, os.fsencode(self.path), self._events) >= 0:
                        self._fd = fd
                    else:
                        os.close(fd)
        return self._fd

    def poll(self) -> bool:
        """Read the events pending now, without waiting (for the listener); False without inotify."""
        fd = self._inotify_fd()
        if fd < 0:
            return False
        self._drain(fd)
        return True

    def reset(self) -> None:
        """Something was found: the next idle spell starts with a short sleep."""
        self._backoff = self.MIN_SLEEP

    def wait(self, deadline: float | None) -> None:
        """Sleep until the folder changes, the back-off step ends, or ``deadline`` (monotonic)."""
        fd = self._inotify_fd()
        if fd >= 0:
            step = self.INOTIFY_CAP
        else:
            step = self._backoff
            self._backoff = min(self._backoff * 2, self.MAX_SLEEP)
        if deadline is not None:
            step = min(step, max(0.0, deadline - time.monotonic()))
        if fd < 0:
            if step > 0:
                time.sleep(step)
            return
        end = time.monotonic() + step
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
            # Renames of names this waiter does not care about (another
            # consumer's claim, for a consumer) are read and dropped here
            # without listing the folder.
            if not ready or self._drain(fd) or time.monotonic() >= end:
                return

    def _drain(self, fd: int) -> bool:
        """Read the pending events; True if one of them matters to this waiter."""
        relevant = False
        try:
            while True:
                buf = os.read(fd, _READ_SIZE)
                if not buf:
                    break
                if self.listener is not None:
                    self.listener(buf)
                relevant = relevant or self._matters(buf)
                if len(buf) <= _READ_SIZE - _MAX_EVENT:
                    # A read returns every pending event that fits: room for
                    # one more left means none was pending.  Reading again
                    # only to be told so (EAGAIN, an exception) cost a system
                    # call per poll, at every seal and every claim.
                    break
        except OSError:  # BlockingIOError: nothing pending
            pass
        return relevant

    def _matters(self, buf: bytes) -> bool:
        if self._wake_on is None:
            return True
        # A name leaving (watched for a ReadyCount) never ends a wait: only
        # the arrival of a name this waiter wakes on does.
        arrivals = self._events & ~_IN_MOVED_TO
        for mask, name in iter_events(buf):
            # A lost event (queue overflow) or a vanished folder (the watch
            # is dropped): wake, let the caller look for itself.
            if mask & (_IN_Q_OVERFLOW | _IN_IGNORED):
                return True
            if (not arrivals or mask & _IN_MOVED_TO) and name.startswith(self._wake_on):
                return True
        return False

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd, self._pid = -1, -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass




def iter_events(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(mask, name) of each inotify event in ``buf``, as read from the descriptor."""
    offset, size, end = 0, _EVENT.size, len(buf)
    unpack = _EVENT.unpack_from
    while offset + size <= end:
        _wd, mask, _cookie, length = unpack(buf, offset)
        start = offset + size
        offset = start + length
        yield mask, buf[start:offset].rstrip(b"\0")


def _after_fork_in_child() -> None:
    # An inherited inotify descriptor is the parent's watch: reading it would
    # steal the parent's events, and each open one counts against the
    # per-user limit on inotify instances (128 by default), past which
    # waiting silently falls back to polling.  Closing the child's copy leaves
    # the parent's untouched (test_fork_child_owns_no_inherited_inotify_descriptor).
    for waiter in list(_waiters):
        fd, waiter._fd, waiter._pid = waiter._fd, -1, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
