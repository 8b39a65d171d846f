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
import stat
import time
from dataclasses import dataclass, field

from . import _lease
from . import _naming as naming
from ._wait import ARRIVED, LEFT, LOST, FolderWaiter, iter_events

__all__ = ["Folder", "ReadyArrivals", "ReadyCount", "Scan", "held_here"]

log = logging.getLogger("turbo_queue")

#: Claimed names that a live Consumer of *this* process holds.  A claimed file
#: whose owner is this very process but which is not in here is held by nobody
#: (its Consumer was dropped, or interrupted between claim and hand-over), so
#: recovery returns it instead of waiting on it for as long as the process
#: lives (tests/test_consumer_faults.py::test_claim_nobody_holds_is_recovered).
#: A name is added *before* the claiming rename and removed after the ack or
#: release, so no recovery in another thread can see the file unregistered.
_held: set[str] = set()


def held_here() -> set[str]:
    return _held


def _after_fork_in_child() -> None:
    # The child holds none of its parent's claims (their owner is the parent).
    _held.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)

#: The longest last-error text kept beside a dead batch.
MAX_ERROR_CHARS = 4000


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

    __slots__ = ("_prefix", "lease_timeout", "path")

    def __init__(self, path: str, lease_timeout: float = _lease.DEFAULT_LEASE_TIMEOUT) -> None:
        self.path = path
        # The folder's path with its separator: join() is one concatenation
        # (os.path.join costs about half a microsecond, ten times a batch).
        self._prefix = os.path.join(path, "")
        #: How long a claim made here stays valid unrenewed for a process that cannot check
        #: this one's pid (see _lease.py): this process renews its claims well within it.
        self.lease_timeout = lease_timeout

    def __repr__(self) -> str:
        return f"Folder({self.path!r})"

    def join(self, name: str) -> str:
        """The path of ``name``, a name in this folder (never an absolute path)."""
        return self._prefix + name

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
            elif name not in (naming.ASIDE_DIR, naming.DEAD_DIR):
                scan.other.append(name)
        scan.ready.sort()
        return scan

    def unacked(self) -> tuple[int, int]:
        """(batches, events) sealed and not yet acked: ready plus claimed, from one scan."""
        scan = self.scan()
        events = 0
        for name in scan.ready:
            parsed = naming.parse_batch_name(name)
            events += parsed.count if parsed is not None else 0
        for name in scan.claimed:
            claimed = naming.parse_claimed_name(name)
            parsed = naming.parse_batch_name(claimed.ready_name) if claimed else None
            events += parsed.count if parsed is not None else 0
        return len(scan.ready) + len(scan.claimed), events

    def list_ready(self) -> list[str]:
        """Ready names, oldest first (the consumer's hot listing: no parsing)."""
        ready = [n for n in self.listdir() if naming.is_ready_name(n)]
        ready.sort()
        return ready

    def dead_path(self, name: str = "") -> str:
        return os.path.join(self.path, naming.DEAD_DIR, name) if name else os.path.join(self.path, naming.DEAD_DIR)

    def list_dead(self) -> list[str]:
        """Dead batch names (in ``dead/``), oldest first."""
        try:
            names = os.listdir(self.dead_path())
        except FileNotFoundError:
            return []
        dead = [n for n in names if n.startswith(naming.DEAD) and n.endswith(naming.SUFFIX)]
        dead.sort()
        return dead

    def list_aside(self) -> list[str]:
        try:
            return sorted(os.listdir(self.join(naming.ASIDE_DIR)))
        except FileNotFoundError:
            return []

    def dead_stats(self) -> dict[str, int]:
        events = 0
        names = self.list_dead()
        for name in names:
            parsed = naming.parse_batch_name(name)
            events += parsed.count if parsed else 0
        return {"batches": len(names), "events": events}

    def last_error(self, dead_name: str) -> str | None:
        """The last error stored beside a dead batch, or None."""
        try:
            with open(self.dead_path(dead_name + naming.ERROR_SUFFIX), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return None

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
        """ready -> claimed by ``owner``.  FileNotFoundError when another consumer won the rename.

        The claimed name is registered as held by this process before the
        rename (see ``_held``); the caller unregisters it with :meth:`ack`,
        :meth:`release` or :meth:`dead_letter`.
        """
        claimed = naming.claimed_name(owner, ready)
        _held.add(claimed)
        # The rename keeps the mtime (maybe the seal time, long past): renew it
        # first, so that a recovery which cannot check this process's pid
        # (another container or host) never sees the fresh claim as lapsed
        # (tests/test_lease.py).
        ready_path, claimed_path = self._prefix + ready, self._prefix + claimed
        _lease.touch(ready_path)
        try:
            # Of several consumers renaming the same file, exactly one succeeds.
            os.rename(ready_path, claimed_path)
        except BaseException:
            _held.discard(claimed)
            raise
        _lease.hold(claimed_path, self.lease_timeout)
        return claimed

    def release(self, claimed: str, ready: str, *, count: bool = True, max_deliveries: int | None = None,
                error: str | None = None) -> str | None:
        """claimed -> ready, or -> dead once the delivery count reaches ``max_deliveries``.

        ``count``: this delivery ended without an ack (an exception, a
        dropped or dead consumer), so the count in the name goes up by one.
        A batch that was never handed over (a local fault while reading it, an
        interrupt between claim and hand-over) goes back under its old name.
        Either way seal_ns and seq are kept: same place in line.  Returns the
        new name (``dead/...`` when dead-lettered), or None if the file is gone.
        """
        try:
            parsed = naming.parse_batch_name(ready)
            target = ready
            if count and parsed is not None:
                parsed = parsed.with_deliveries(parsed.deliveries + 1)
                if max_deliveries is not None and parsed.deliveries >= max_deliveries:
                    return self.dead_letter(claimed, parsed, error)
                target = parsed.name(naming.READY)
            try:
                os.rename(self.join(claimed), self.join(target))
            except FileNotFoundError:
                return None
            return target
        finally:
            _held.discard(claimed)
            _lease.drop(self.join(claimed))

    def ack(self, claimed: str) -> bool:
        """claimed -> deleted.  False if the file is gone."""
        path = self._prefix + claimed
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        finally:
            _held.discard(claimed)
            _lease.drop(path)
        return True

    def dead_letter(self, claimed: str, parsed: naming.BatchName, error: str | None) -> str | None:
        """claimed -> ``dead/d_<body>``, its last error written beside it first.

        The error file comes first so that a dead batch is never seen without
        its reason; a crash between the two leaves only a stray ``.err``
        (ignored, and removed by the next :meth:`requeue_dead`).
        """
        try:
            dead_dir = self._subfolder(naming.DEAD_DIR)
            dead = parsed.name(naming.DEAD)
            text = (error or "no error recorded")[:MAX_ERROR_CHARS]
            tmp = os.path.join(dead_dir, f".err-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(text + "\n")
                os.rename(tmp, os.path.join(dead_dir, dead + naming.ERROR_SUFFIX))
            except OSError as exc:
                # The batch matters more than its error text: dead-letter it anyway.
                log.error("turbo_queue: cannot store the last error of %s: %s", dead, exc)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            try:
                os.rename(self.join(claimed), os.path.join(dead_dir, dead))
            except FileNotFoundError:
                return None
            log.warning("turbo_queue: dead-lettered %s after %d deliveries without an ack; last error: %s",
                        os.path.join(dead_dir, dead), parsed.deliveries, text)
            return os.path.join(naming.DEAD_DIR, dead)
        finally:
            _held.discard(claimed)
            _lease.drop(self.join(claimed))

    def requeue_dead(self) -> int:
        """dead -> ready with the delivery count reset; returns how many batches were returned."""
        returned = 0
        dead_dir = self.dead_path()
        for name in self.list_dead():
            parsed = naming.parse_batch_name(name)
            if parsed is None:
                continue
            ready = parsed.with_deliveries(0).name(naming.READY)
            try:
                # Same seal_ns and seq: it goes back to its old place in line.
                os.rename(os.path.join(dead_dir, name), self.join(ready))
            except FileNotFoundError:
                continue  # another requeue took it
            returned += 1
            log.warning("turbo_queue: requeued dead batch %s as %s", name, ready)
            try:
                os.unlink(os.path.join(dead_dir, name + naming.ERROR_SUFFIX))
            except FileNotFoundError:
                pass
        # Error files left by a crash between writing one and dead-lettering
        # its batch.  Only old ones: a young one may belong to a dead-letter
        # another process is making right now (error file first, then batch).
        try:
            names = set(os.listdir(dead_dir))
        except FileNotFoundError:
            return returned
        old = time.time() - 60
        for name in names:
            if name.endswith(naming.ERROR_SUFFIX) and name[:-len(naming.ERROR_SUFFIX)] not in names:
                try:
                    if os.stat(os.path.join(dead_dir, name)).st_mtime < old:
                        os.unlink(os.path.join(dead_dir, name))
                except FileNotFoundError:
                    pass
        return returned

    def _subfolder(self, name: str) -> str:
        """``aside/`` or ``dead/``, made on first use with the folder's group access.

        In a group folder (2770, see docs/security.md) whichever user makes
        the sub-folder first owns it; with mode 0700 the other users of the
        group could then never set a file aside or dead-letter a batch.  So it
        takes the folder's group bits and setgid, never others' access, and
        chmod follows mkdir because mkdir's mode is cut by the umask
        (tests/test_shared_folder.py).
        """
        path = self.join(name)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return path
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
            if mode & 0o070:
                os.chmod(path, 0o700 | (mode & (0o070 | stat.S_ISGID)))
        except OSError as exc:
            log.warning("turbo_queue: cannot give %s the queue folder's group access: %s", path, exc)
        return path

    def set_aside(self, name: str, reason: str, original: str | None = None) -> str | None:
        """Move ``name`` into ``aside/`` (never deleting it).  Returns the new path, or None if gone."""
        aside = self._subfolder(naming.ASIDE_DIR)
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


_READY_B, _CLAIMED_B, _SUFFIX_B = naming.READY.encode(), naming.CLAIMED.encode(), naming.SUFFIX.encode()


class ReadyCount:
    """The number of ready batches, kept from the folder's rename events: a producer's backpressure count.

    Listing a folder costs a system call and a pass over every name, at every
    seal; the count moves only when a ready name arrives (a seal, a release,
    a recovery, a requeue) or leaves (a claim, a set-aside, a removal), and
    the producer's watch (``FolderWaiter``, inotify) reports exactly those.
    So the folder is listed once to start, and again only when the count
    nears the limit (the answer then decides whether to block, so it is
    made from the folder itself), when events were lost (queue overflow),
    or when the last listing is older than :attr:`RELIST_AFTER` seconds
    (events of other hosts on a network file system are not reported).
    Without inotify every call lists, as before.

    Events that land while the folder is being listed may be counted twice
    (once in the listing, once as an event): a seal then reads one too many
    (safe: it lists), a claim one too few, which the next listing (near the
    limit or within RELIST_AFTER) corrects; ``max_ready`` is a bound that
    racing producers may already pass by one each.

    The same events keep the claimed batches by their owner (a claim renames
    a ready name to a claimed one that names the consumer, an ack deletes
    it, a release or recovery renames it back): which consumers exist and
    which of them are busy, for ``batch_size="auto"``, which hands an idle
    consumer the open batch at once and lets it fill while its one consumer
    is busy (:meth:`idle_consumer`, :meth:`consumers`).
    """

    #: List when the count is within this many batches of the limit.
    NEAR = 2
    #: List at least this often (seconds) while counting from events.
    RELIST_AFTER = 1.0
    #: A consumer is known for this many seconds after its last claim or ack
    #: (and while it holds a claim): one that left the queue stops counting
    #: as idle then.  Long, because forgetting a live one is the dearer
    #: mistake: see :meth:`idle_consumer`.
    CONSUMER_KEPT = 10.0

    __slots__ = ("_count", "_folder", "_holding", "_listed_at", "_pruned_at", "_seen", "_valid", "_waiter",
                 "listings", "relist_after")

    def __init__(self, folder: Folder, waiter: FolderWaiter) -> None:
        self._folder = folder
        self._waiter = waiter
        self._count = 0
        #: Claimed batches held now, by the owner text of their claimed names.
        self._holding: dict[bytes, int] = {}
        #: Every consumer known, by owner text: when its last claim or ack was seen.
        self._seen: dict[bytes, float] = {}
        self._pruned_at = 0.0
        self._valid = False
        self._listed_at = 0.0
        #: Listings made (for tests and diagnostics).
        self.listings = 0
        self.relist_after = self.RELIST_AFTER
        waiter.listener = self._apply

    def _apply(self, buf: bytes) -> None:
        count, holding, seen, now = self._count, self._holding, self._seen, None
        for mask, name in iter_events(buf):
            if mask & LOST:
                self._valid = False
            elif name.endswith(_SUFFIX_B):
                if name.startswith(_READY_B):
                    if mask & ARRIVED:
                        count += 1
                    elif mask & LEFT:
                        count -= 1
                elif name.startswith(_CLAIMED_B):
                    owner = naming.claimed_owner_text(name)
                    if mask & ARRIVED:
                        holding[owner] = holding.get(owner, 0) + 1
                    elif mask & LEFT:
                        # Counted twice or missed around a listing (see
                        # above): never below 0.
                        if holding.get(owner, 0) > 1:
                            holding[owner] -= 1
                        else:
                            holding.pop(owner, None)
                    if now is None:
                        now = time.monotonic()  # once per read of the watch, not per event
                    seen[owner] = now
        self._count = count

    def count(self, limit: int) -> int:
        """Ready batches now: from the events when far below ``limit``, from a listing otherwise."""
        watching = self._waiter.poll()
        now = time.monotonic()
        if (not watching or not self._valid or self._count + self.NEAR >= limit
                or now - self._listed_at >= self.relist_after):
            scan = self._folder.scan()
            self._count = len(scan.ready)
            holding: dict[bytes, int] = {}
            for name in scan.claimed:
                owner = naming.claimed_owner_text(name).encode()
                holding[owner] = holding.get(owner, 0) + 1
                self._seen[owner] = now
            self._holding = holding
            self.listings += 1
            self._valid = watching
            self._listed_at = now
        return self._count

    def consumers(self) -> int:
        """The consumers known (fresh after :meth:`count`): those holding a claim or seen within CONSUMER_KEPT.

        Counted by the owner their claimed names carry, so a consumer is
        known from its first claim, whether or not it was ever busy at the
        same time as the others.  Counting the most claims seen at once
        instead left a consumer that only ever worked while the others
        waited unknown: at a moderate rate with 2 consumers the producer
        then saw its one known consumer busy and let the open batch fill
        while the other idled (``test_a_second_consumer_is_known_from_its_first_claim``).
        """
        now = time.monotonic()
        if now - self._pruned_at >= 1.0:
            self._pruned_at = now
            holding, kept = self._holding, now - self.CONSUMER_KEPT
            for owner in [o for o, at in self._seen.items() if at < kept and o not in holding]:
                del self._seen[owner]
        return len(self._seen)

    def idle_consumer(self) -> bool:
        """Whether some consumer is idle, as far as claims tell (fresh after :meth:`count`).

        A consumer holds a claimed batch while it works, so fewer consumers
        holding one than consumers known (:meth:`consumers`) means one of
        them has none; with no claim ever seen nothing says any is busy.
        One that never claimed is not known, and the caller bounds how long
        it lets a batch fill for that case (AutoBatchSize.LINGER).  A
        consumer that left counts as idle for CONSUMER_KEPT seconds (the
        producer then seals sooner than it needs to); a live one forgotten
        would be the dearer mistake, its work left to the others while the
        batch fills.  The claims of a consumer that died count until
        recovery returns them.
        """
        known = self.consumers()
        return known == 0 or len(self._holding) < known


class ReadyArrivals:
    """A consumer's next ready names, from its watch's events instead of a listing at every batch.

    Listing the folder is a system call and a pass over every name (about as
    much CPU as reading a batch of 100 small items, measured on a 2-core VM
    on ext4); a consumer that waits for each batch listed once per batch.
    The watch already reports every ready name that arrives (a seal, a
    release, a recovery, a requeue) and, with ``ARRIVAL_EVENTS``, every one
    that leaves (a claim by any consumer, a set-aside), so the set of names
    arrived and not left since the last listing is what a listing would add.
    :meth:`ready` hands that set out, oldest first, while it can be trusted:
    the folder is listed again when events were lost (overflow), after
    :meth:`forget` (a released batch must be next in line, and candidates
    dropped with it must not be missed), without inotify, and at least every
    :attr:`RELIST_AFTER` seconds (renames made on another host of a network
    file system are not reported, and nothing may wait for ever).
    """

    RELIST_AFTER = 1.0

    __slots__ = ("_folder", "_listed_at", "_names", "_valid", "_waiter", "listings", "relist_after")

    def __init__(self, folder: Folder, waiter: FolderWaiter) -> None:
        self._folder = folder
        self._waiter = waiter
        self._names: set[bytes] = set()
        self._valid = False
        self._listed_at = 0.0
        #: Listings made (for tests and diagnostics).
        self.listings = 0
        self.relist_after = self.RELIST_AFTER
        waiter.listener = self._apply

    def _apply(self, buf: bytes) -> None:
        names = self._names
        for mask, name in iter_events(buf):
            if mask & LOST:
                self._valid = False
            elif name.startswith(_READY_B) and name.endswith(_SUFFIX_B):
                if mask & ARRIVED:
                    names.add(name)
                else:
                    names.discard(name)

    def forget(self) -> None:
        """The next :meth:`ready` lists the folder."""
        self._valid = False

    def ready(self) -> list[str]:
        """Ready names, oldest first: those arrived since the last call when they can be trusted, else a listing."""
        watching = self._waiter.poll()
        now = time.monotonic()
        if watching and self._valid and now - self._listed_at < self.relist_after:
            names = sorted(map(os.fsdecode, self._names))
            self._names.clear()
            return names
        # Names arriving between the poll and the listing may come back as
        # arrivals too: still ready unless claimed, and a claim removes them.
        self._names.clear()
        names = self._folder.list_ready()
        self.listings += 1
        self._valid = watching
        self._listed_at = now
        return names
