"""Leases: how a file is kept from a recovery that cannot check its owner.

Recovery returns a claimed or loading file to ready when its owner is dead.
Where the owner runs in this kernel and PID namespace, "dead" is an exact
check of its pid and start time (:meth:`Owner.is_alive`).  Anywhere else
(another host sharing the folder, another container, an ``unshare -p``
sandbox, a token of an older version) a pid means nothing here, so the file
itself carries the proof of life: its **mtime**.

* A consumer touches the ready file just before renaming it to its claimed
  name (a rename keeps the mtime, which may be the seal time of a batch
  that waited long in line), and from then on a background thread, one per
  process, touches every claimed file this process holds every
  ``lease_timeout / 4`` seconds until it is acked or released.  So a live
  consumer keeps its claim however long its batch takes.
* A producer's loading file lives from its ``write`` to its ``rename``:
  milliseconds after the last write, which set its mtime.  It is not
  renewed; its fresh mtime is its lease.
* Recovery treats an owner it cannot check as dead once the file's mtime is
  more than ``lease_timeout`` seconds old (:func:`lease_lapsed`).

Renewing at a quarter of the lease lets three renewals go missing (a stalled
process, a slow file server), or the clocks of the renewing host, the file
server and the recovering host differ by up to three quarters of the lease,
before a live claim looks lapsed.  A recovery that reads a lapsed mtime and
renames the file races with a renewal landing in between; it takes a claim
that was silent for a whole lease, and delivery stays at-least-once (the
owner's ack then finds the file gone and logs it).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

__all__ = ["DEFAULT_LEASE_TIMEOUT", "RENEW_FRACTION", "drop", "held", "hold", "lease_lapsed", "touch"]

log = logging.getLogger("turbo_queue")

#: Seconds without renewal after which a file of an owner that cannot be checked is recovered.
DEFAULT_LEASE_TIMEOUT = 120.0
#: Held files are renewed every ``lease_timeout * RENEW_FRACTION`` seconds.
RENEW_FRACTION = 0.25


def touch(path: str) -> OSError | None:
    """Set ``path``'s mtime to now (the file server's now, on NFS); the error if that failed.

    A vanished file is no error: it was acked, released or claimed by another
    process meanwhile, and there is nothing to renew.
    """
    try:
        os.utime(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc
    return None


def lease_lapsed(path: str, lease_timeout: float) -> bool:
    """True if ``path`` was last renewed (modified) more than ``lease_timeout`` seconds ago."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        try:
            mtime = os.lstat(path).st_mtime  # a dangling or looping link: its own age
        except OSError:
            return False  # gone: nothing left to recover
    return time.time() - mtime > lease_timeout


class _Renewer:
    """The held files of this process and the thread that renews them."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.held: dict[str, float] = {}  # path -> lease_timeout it is held under
        self.thread: threading.Thread | None = None
        #: Seconds the thread sleeps between renewals now (inf: not started).
        self.interval = math.inf


_renewer = _Renewer()


def hold(path: str, lease_timeout: float) -> None:
    """Renew ``path`` in the background until :func:`drop` (call it right after the claim)."""
    if not lease_timeout < math.inf:
        return  # a lease that never lapses needs no renewal
    r = _renewer
    with r.cond:
        r.held[path] = lease_timeout
        if r.thread is None:
            r.thread = threading.Thread(target=_renew_loop, args=(r,), name="turbo_queue-lease", daemon=True)
            r.thread.start()
        elif lease_timeout * RENEW_FRACTION < r.interval:
            # The thread sleeps for a longer lease's interval: wake it.  Not
            # otherwise: the thread keeps its cadence while idle too, so a
            # claim made between two renewals is renewed within one interval,
            # and a consumer's claim of every batch wakes no thread (a wake
            # cost ~0.25 ms per batch, as much as reading the batch).
            r.cond.notify()


def drop(path: str) -> None:
    """Stop renewing ``path`` (call it before the ack's unlink or the release's rename)."""
    r = _renewer
    with r.cond:
        r.held.pop(path, None)


def held() -> dict[str, float]:
    """The files this process renews now, with their lease timeouts."""
    r = _renewer
    with r.cond:
        return dict(r.held)


def _renew_loop(r: _Renewer) -> None:
    while True:
        with r.cond:
            # Idle (nothing held) the thread keeps the last cadence: one wake
            # per interval (30 s by default) costs nothing, and spares a
            # notify per claim.
            if r.held:
                r.interval = min(r.held.values()) * RENEW_FRACTION
            # inf until a claim was held: sleep until hold() notifies.
            r.cond.wait(None if r.interval == math.inf else min(r.interval, threading.TIMEOUT_MAX))
            paths = list(r.held)
        # Outside the lock: a claim or ack never waits for a slow file server.
        # A path dropped meanwhile is at worst touched once more, which keeps
        # nothing (an acked file is gone, a released one is fresh in line).
        for path in paths:
            error = touch(path)
            if error is not None:
                # The claim stays ours as far as this process knows; only a
                # recovery that cannot check us may take it, after the lease.
                log.warning("turbo_queue: cannot renew the lease of %s: %s", path, error)


def _after_fork_in_child() -> None:
    # The child holds none of the parent's claims (its Consumer objects refuse
    # to work after fork), and the parent's thread and a lock it may have held
    # at fork time do not exist here: start afresh.
    global _renewer
    _renewer = _Renewer()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
