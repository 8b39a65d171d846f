"""The queue folder: the one owner of its names and of every change between them.

``_naming`` is the grammar; this module makes the transitions (each one
``rename`` or ``unlink`` inside the folder) and the one scan that sorts the
folder's entries by state.  Producers, consumers, recovery, ``stats()`` and
drain detection all go through it, so a transition is written, commented and
raced once.

A :class:`Folder` holds only its path: it opens nothing, keeps no
per-process state, and can be shared by every object of a process and
carried across ``fork``.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field

from . import _naming as naming

__all__ = ["Folder", "Scan"]

log = logging.getLogger("turbo_queue")


@dataclass
class Scan:
    """One listing of the folder, its entries sorted by state (names only: nothing is parsed or opened)."""

    loading: list[str] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)  # sorted: oldest first
    claimed: list[str] = field(default_factory=list)
    #: names that are not turbo_queue's (left alone), the control files excluded
    other: list[str] = field(default_factory=list)
    closed: bool = False

    @property
    def in_flight(self) -> int:
        """Batches that may still be delivered: loading, ready or claimed."""
        return len(self.loading) + len(self.ready) + len(self.claimed)


class Folder:
    """The names of one queue folder and the transitions between them."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"Folder({self.path!r})"

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- scans ------------------------------------------------------------

    def listdir(self) -> list[str]:
        try:
            return os.listdir(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(2, "queue folder is gone", self.path) from None

    def scan(self) -> Scan:
        """Sort one listing of the folder by state (the scan stats, recovery and drain detection share)."""
        scan = Scan()
        for name in self.listdir():
            prefix = name[:2]
            if name.endswith(naming.SUFFIX) and prefix in (naming.READY, naming.LOADING, naming.CLAIMED):
                if prefix == naming.READY:
                    scan.ready.append(name)
                elif prefix == naming.LOADING:
                    scan.loading.append(name)
                else:
                    scan.claimed.append(name)
            elif name == naming.CLOSED_MARKER:
                scan.closed = True
            elif name not in (naming.ASIDE_DIR,):
                scan.other.append(name)
        scan.ready.sort()
        return scan

    def list_ready(self) -> list[str]:
        """Ready names, oldest first (the consumer's hot listing: no parsing)."""
        ready = [n for n in self.listdir() if naming.is_ready_name(n)]
        ready.sort()
        return ready

    def count_ready(self) -> int:
        """Sealed batches waiting (the producer's backpressure count)."""
        return sum(1 for n in self.listdir() if naming.is_ready_name(n))

    def aside_count(self) -> int:
        try:
            return len(os.listdir(self.join(naming.ASIDE_DIR)))
        except FileNotFoundError:
            return 0

    # -- transitions ------------------------------------------------------

    def publish(self, loading_path: str, ready_path: str) -> None:
        """loading -> ready: the atomic step that makes a batch visible to consumers, whole."""
        os.rename(loading_path, ready_path)

    def claim(self, ready: str, owner: naming.Owner) -> str:
        """ready -> claimed by ``owner``.  FileNotFoundError when another consumer won the rename."""
        claimed = naming.claimed_name(owner, ready)
        # Of several consumers renaming the same file, exactly one succeeds.
        os.rename(self.join(ready), self.join(claimed))
        return claimed

    def release(self, claimed: str, ready: str) -> bool:
        """claimed -> ready (same ready name: same place in line).  False if the file is gone."""
        try:
            os.rename(self.join(claimed), self.join(ready))
        except FileNotFoundError:
            return False
        return True

    def ack(self, claimed: str) -> bool:
        """claimed -> deleted.  False if the file is gone."""
        try:
            os.unlink(self.join(claimed))
        except FileNotFoundError:
            return False
        return True

    def set_aside(self, name: str, reason: str, original: str | None = None) -> str | None:
        """Move ``name`` into ``aside/`` (never deleting it).  Returns the new path, or None if gone."""
        aside = self.join(naming.ASIDE_DIR)
        try:
            os.mkdir(aside, 0o700)
        except FileExistsError:
            pass
        safe_reason = "".join(c if c.isalnum() or c in "-." else "-" for c in reason)[:40] or "unreadable"
        suffix = f".{safe_reason}.{time.time_ns()}"
        base = original or name
        # Keep the new name within NAME_MAX (255 bytes) even for a long stray name.
        if len(os.fsencode(base + suffix)) > 255:
            base = os.fsdecode(os.fsencode(base)[:255 - len(suffix)])
        target = os.path.join(aside, base + suffix)
        try:
            os.rename(self.join(name), target)
        except FileNotFoundError:
            return None  # another process moved it first
        log.error("turbo_queue: set aside %s (%s) as %s", self.join(name), reason, target)
        return target

    # -- end of stream ----------------------------------------------------

    def is_closed(self) -> bool:
        return os.path.exists(self.join(naming.CLOSED_MARKER))

    def write_closed(self, durable: bool) -> None:
        # Written aside, then renamed into place: waiting consumers watch for
        # renames only (see _wait.py), and a rename wakes them at once.
        tmp = self.join(f".closing-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, str(time.time_ns()).encode())
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(tmp, self.join(naming.CLOSED_MARKER))
        except OSError:
            os.unlink(tmp)
            raise

    def remove_closed(self) -> None:
        try:
            os.unlink(self.join(naming.CLOSED_MARKER))
        except FileNotFoundError:
            pass
