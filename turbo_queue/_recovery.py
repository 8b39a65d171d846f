"""Recovery: return the batches of dead owners to ready, set unreadable files aside.

Any process may run recovery at any time, and several may run it at once:
every change it makes is a rename of a file whose owner is dead, and a
rename that another process already made fails with ``FileNotFoundError``,
which is skipped.  So two recoveries can never both return the same batch
(which would deliver it twice), and no batch is removed (set-aside files are
renamed into ``aside/``, never deleted).  The test
``tests/test_queue_faults.py::test_concurrent_recover_no_duplicates``
reproduces that race.

Liveness is known exactly for owners in this kernel and PID namespace (pid
exists and its start time matches the one in the name).  A file whose owner
cannot be checked from here (another host sharing the folder, another
container or PID namespace, a token of an older version) counts as
``remote``; it is recovered once its lease lapsed (its mtime is older than
``lease_timeout``, see ``_lease.py``) and left alone while the lease is live.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from . import _lease
from . import _naming as naming
from ._batch import decode_batch, read_file
from ._errors import BatchFormatError
from ._folder import Folder, held_here

__all__ = ["RecoveryReport", "pacer", "recover"]

log = logging.getLogger("turbo_queue")


@dataclass
class RecoveryReport:
    """What one recovery did.  ``bool(report)`` is true if it changed anything."""

    path: str
    #: claimed batches of dead consumers put back to ready (their ready names)
    returned: list[str] = field(default_factory=list)
    #: loading batches of dead producers that were complete, now ready
    sealed: list[str] = field(default_factory=list)
    #: (original name, reason) of files moved to aside/
    set_aside: list[tuple[str, str]] = field(default_factory=list)
    #: loading/claimed files whose owner cannot be checked from here (another host,
    #: PID namespace or kernel, or an old token), whether recovered or left alone
    remote: int = 0
    #: claimed batches of dead consumers that reached max_deliveries (their dead/ names)
    dead: list[str] = field(default_factory=list)
    #: names of those left alone because their lease is live (renewed within lease_timeout)
    leased: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.returned or self.sealed or self.set_aside or self.dead)

    def as_dict(self) -> dict:
        return {"path": self.path, "returned": list(self.returned), "sealed": list(self.sealed),
                "set_aside": [list(x) for x in self.set_aside], "remote": self.remote,
                "dead": list(self.dead), "leased": list(self.leased)}

    def __str__(self) -> str:
        parts = [f"returned {len(self.returned)} claimed batch(es) of dead consumers to ready",
                 f"sealed {len(self.sealed)} loading batch(es) of dead producers",
                 f"set aside {len(self.set_aside)} unreadable file(s)"]
        if self.dead:
            parts.append(f"dead-lettered {len(self.dead)} batch(es) that reached max_deliveries")
        if self.leased:
            parts.append(f"left {len(self.leased)} file(s) alone whose owners cannot be checked from here "
                         "and whose lease is live")
        return f"{self.path}: " + "; ".join(parts)


def _check_loading(path: str, count: int) -> str | None:
    """None if the loading file is a complete batch of ``count`` items, else the reason."""
    try:
        meta, _records = decode_batch(read_file(path), path)
    except BatchFormatError as exc:
        return exc.reason
    except OSError as exc:
        return f"unreadable-{exc.errno}"
    if meta.get("count") != count:
        return "count-mismatch"
    return None


def _lease_alive(folder: Folder, name: str, owner: naming.Owner, lease_timeout: float,
                 report: RecoveryReport) -> bool:
    """Whether the file ``name`` of an owner that cannot be checked from here still holds its lease."""
    report.remote += 1
    if not _lease.lease_lapsed(folder.join(name), lease_timeout):
        report.leased.append(name)
        return True
    log.warning("turbo_queue: lease of %s lapsed (%s cannot be checked from here)", name, owner)
    return False


def _is_this_process(owner: naming.Owner) -> bool:
    me = _this_owner()
    return (owner.pid == me.pid and owner.start == me.start and owner.host == me.host
            and owner.ns == naming.local_namespace())


_me: naming.Owner | None = None


def _this_owner() -> naming.Owner:
    global _me
    if _me is None or _me.pid != os.getpid():
        _me = naming.make_owner()
    return _me


def recover(folder: str | Folder, max_deliveries: int | None = None,
            lease_timeout: float = _lease.DEFAULT_LEASE_TIMEOUT) -> RecoveryReport:
    """Run one recovery pass over ``folder``.  Safe to run concurrently with anything.

    A returned batch counts one delivery that ended without an ack; with
    ``max_deliveries`` it goes to ``dead/`` once the count reaches it (without
    it, the next consumer that has the setting dead-letters it at its claim).
    ``lease_timeout``: seconds after its last renewal that a file of an owner
    that cannot be checked from here is recovered.
    """
    if not isinstance(folder, Folder):
        folder = Folder(folder)
    report = RecoveryReport(folder.path)
    try:
        scan = folder.scan()
    except FileNotFoundError:
        return report
    for name in scan.claimed:
        claimed = naming.parse_claimed_name(name)
        if claimed is None:
            if folder.set_aside(name, "bad-name"):
                report.set_aside.append((name, "bad-name"))
            continue
        if _is_this_process(claimed.owner):
            # Our own claim: held only while a live Consumer of ours has it
            # registered; otherwise nobody will ever ack or release it.
            alive = name in held_here()
        else:
            alive = claimed.owner.is_alive()
        if alive is None:
            # [lease] The owner lives where its liveness cannot be checked
            # from here (another host, PID namespace or kernel): the lease decides.
            alive = _lease_alive(folder, name, claimed.owner, lease_timeout, report)
        if not alive:
            # Same seal_ns and seq as before the claim: the batch keeps its place in line.
            moved = folder.release(name, claimed.ready_name, max_deliveries=max_deliveries,
                                   error=f"its consumer {claimed.owner} died (or dropped it) before an ack")
            if moved is None:
                continue  # its owner acked it just before dying, or another recovery won
            if moved.startswith(naming.DEAD_DIR):
                report.dead.append(moved)
                continue
            log.warning("turbo_queue: returned %s of dead consumer %s to ready as %s",
                        claimed.ready_name, claimed.owner, moved)
            report.returned.append(moved)
    for name in scan.loading:
        parsed = naming.parse_batch_name(name)
        if parsed is None:
            if folder.set_aside(name, "bad-name"):
                report.set_aside.append((name, "bad-name"))
            continue
        alive = parsed.owner.is_alive()
        if alive is None:  # [lease] as for claims above
            alive = _lease_alive(folder, name, parsed.owner, lease_timeout, report)
        if alive:
            continue
        path = folder.join(name)
        reason = _check_loading(path, parsed.count)
        if reason is None:
            ready = parsed.name(naming.READY)
            try:
                folder.publish(path, folder.join(ready))
            except FileNotFoundError:
                continue
            log.warning("turbo_queue: sealed %s left by dead producer %s", ready, parsed.owner)
            report.sealed.append(ready)
        elif folder.set_aside(name, reason):
            report.set_aside.append((name, reason))
    return report


class _Pacer:
    """One recovery scan per folder per ``recover_interval`` for the whole process.

    Every consumer of a process asks it before each claim; the check is a
    clock read and a dict lookup, and only the first consumer past the
    interval scans (the others go on claiming), so recovery keeps pace with
    time whether the consumers are idle or all busy, and never costs a scan
    per claim.  Reset in a forked child (its clock starts over).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def reset(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at fork
        self._last = {}

    def due(self, path: str, interval: float) -> bool:
        last = self._last.get(path)
        return last is None or time.monotonic() - last >= interval

    def maybe_recover(self, folder: Folder, interval: float, max_deliveries: int | None = None,
                      force: bool = False,
                      lease_timeout: float = _lease.DEFAULT_LEASE_TIMEOUT) -> RecoveryReport | None:
        """Run recovery if ``interval`` passed since this process last did (or ``force``); else None."""
        if not force and not self.due(folder.path, interval):
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another thread of this process is scanning right now
        try:
            if not force and not self.due(folder.path, interval):
                return None
            self._last[folder.path] = time.monotonic()
            return recover(folder, max_deliveries, lease_timeout)
        finally:
            self._lock.release()


pacer = _Pacer()
os.register_at_fork(after_in_child=pacer.reset)
