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
import time
from dataclasses import dataclass, field

from . import _lease
from . import _naming as naming
from ._batch import decode_batch, read_file
from ._errors import BatchFormatError

__all__ = ["RecoveryReport", "recover", "set_aside"]

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
    #: names of those left alone because their lease is live (renewed within lease_timeout)
    leased: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.returned or self.sealed or self.set_aside)

    def as_dict(self) -> dict:
        return {"path": self.path, "returned": list(self.returned), "sealed": list(self.sealed),
                "set_aside": [list(x) for x in self.set_aside], "remote": self.remote,
                "leased": list(self.leased)}

    def __str__(self) -> str:
        parts = [f"returned {len(self.returned)} claimed batch(es) of dead consumers to ready",
                 f"sealed {len(self.sealed)} loading batch(es) of dead producers",
                 f"set aside {len(self.set_aside)} unreadable file(s)"]
        if self.leased:
            parts.append(f"left {len(self.leased)} file(s) alone whose owners cannot be checked from here "
                         "and whose lease is live")
        return f"{self.path}: " + "; ".join(parts)


def set_aside(folder: str, name: str, reason: str, original: str | None = None) -> str | None:
    """Move ``name`` into ``aside/`` (never deleting it).  Returns the new path, or None if gone."""
    aside = os.path.join(folder, naming.ASIDE_DIR)
    try:
        os.mkdir(aside, 0o700)
    except FileExistsError:
        pass
    safe_reason = "".join(c if c.isalnum() or c in "-." else "-" for c in reason)[:40] or "unreadable"
    suffix = f".{safe_reason}.{time.time_ns()}"
    base = original or name
    # Keep the new name within NAME_MAX (255 bytes) even for a long stray name.
    base = os.fsdecode(os.fsencode(base)[:255 - len(suffix)]) if len(os.fsencode(base + suffix)) > 255 else base
    target = os.path.join(aside, base + suffix)
    try:
        os.rename(os.path.join(folder, name), target)
    except FileNotFoundError:
        return None  # another process moved it first
    log.error("turbo_queue: set aside %s (%s) as %s", os.path.join(folder, name), reason, target)
    return target


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


def recover(folder: str, lease_timeout: float = _lease.DEFAULT_LEASE_TIMEOUT) -> RecoveryReport:
    """Run one recovery pass over ``folder``.  Safe to run concurrently with anything.

    ``lease_timeout``: seconds after its last renewal that a file of an owner
    that cannot be checked from here is recovered.
    """
    report = RecoveryReport(folder)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return report
    for name in names:
        if name.startswith(naming.CLAIMED):
            claimed = naming.parse_claimed_name(name)
            if claimed is None:
                if name.endswith(naming.SUFFIX) and set_aside(folder, name, "bad-name"):
                    report.set_aside.append((name, "bad-name"))
                continue
            alive = claimed.owner.is_alive()
            if alive is None:  # [lease] cannot be checked from here: the lease decides
                report.remote += 1
                alive = not _lease.lease_lapsed(os.path.join(folder, name), lease_timeout)
                if alive:
                    report.leased.append(name)
                else:
                    log.warning("turbo_queue: lease of %s lapsed (%s cannot be checked from here)",
                                name, claimed.owner)
            if not alive:
                try:
                    # Same ready name as before the claim: the batch keeps its place in line.
                    os.rename(os.path.join(folder, name), os.path.join(folder, claimed.ready_name))
                except FileNotFoundError:
                    continue  # its owner acked it just before dying, or another recovery won
                log.warning("turbo_queue: returned %s of dead consumer %s to ready",
                            claimed.ready_name, claimed.owner)
                report.returned.append(claimed.ready_name)
        elif name.startswith(naming.LOADING):
            parsed = naming.parse_batch_name(name)
            if parsed is None:
                if name.endswith(naming.SUFFIX) and set_aside(folder, name, "bad-name"):
                    report.set_aside.append((name, "bad-name"))
                continue
            alive = parsed.owner.is_alive()
            if alive is None:  # [lease] cannot be checked from here: the lease decides
                report.remote += 1
                alive = not _lease.lease_lapsed(os.path.join(folder, name), lease_timeout)
                if alive:
                    report.leased.append(name)
                else:
                    log.warning("turbo_queue: lease of %s lapsed (%s cannot be checked from here)",
                                name, parsed.owner)
            if alive:
                continue
            path = os.path.join(folder, name)
            reason = _check_loading(path, parsed.count)
            if reason is None:
                ready = parsed.name(naming.READY)
                try:
                    os.rename(path, os.path.join(folder, ready))
                except FileNotFoundError:
                    continue
                log.warning("turbo_queue: sealed %s left by dead producer %s", ready, parsed.owner)
                report.sealed.append(ready)
            elif set_aside(folder, name, reason):
                report.set_aside.append((name, reason))
    return report
