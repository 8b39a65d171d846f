"""The naming protocol: file names are the whole state machine of a queue.

A queue is a folder.  Every batch is one SQLite file whose *name* says which
state it is in and who owns it; a state change is one ``os.rename`` inside
the folder, which POSIX makes atomic: exactly one of several processes racing
to rename the same file wins, the others get ``FileNotFoundError``.  No
process ever locks another.

Grammar (``seal_ns`` zero-padded to 20 digits, ``seq`` to 12, so that the
names of ready batches sort by seal time, then by the producer's sequence)::

    owner    := hostns "-" pid "-" start "-" nonce
    hostns   := host ".." ns   |   host        (the second: "ns unknown", written by earlier
                                               versions or where /proc gives no namespace;
                                               earlier versions read the first as a foreign
                                               host name and leave its files alone)
                host:  the host name, every character outside [A-Za-z0-9.-] replaced by "-"
                       and ".." by "-." (so ".." only ever marks ns); at most 54 characters
                       before ns, which keeps hostns within the 64 of a host name
                ns:    8 hex digits, a hash of the kernel's boot id and the inode of this
                       process's PID namespace: a pid means this process only where ns is
                       the reader's own (see Owner.is_alive)
                pid:   decimal process id
                start: process start time in clock ticks since boot, hex ("0" if unknown);
                       guards the liveness check against a reused pid
                nonce: 8 hex digits, unique per Producer/Consumer object
    body     := seal_ns "_" seq "_" count "_" owner [ "_d" deliveries ] ".tqb"
                deliveries: how many deliveries of this batch ended without an ack
                (released, owner died, lease lapsed); absent means 0, so names
                written before the field existed parse unchanged
    loading  := "l_" body          being written by the producer that owner names
    ready    := "r_" body          sealed and visible; any consumer may claim it
    claimed  := "c_" owner "__" ready
                                   owned by the consumer that owner names; the ready
                                   name is kept whole so a release can rebuild it
    dead     := "dead/d_" body     delivered max_deliveries times without an ack:
                                   never delivered again, never deleted; beside it
                                   "dead/d_" body ".err" holds the last error (text)
    (acked)                        the claimed file is deleted

Control files: ``CLOSED`` (end of stream, see :meth:`Queue.close`).
Set-aside files live in the sub-folder ``aside/`` as ``<original name>.<reason>.<ns>``
and are never deleted by turbo_queue.  Dead batches live in ``dead/`` so that
the listing consumers make on every claim never grows with them.

Transitions and who makes them::

    loading --seal (producer)---------------> ready
    ready   --claim (consumer)--------------> claimed
    claimed --ack (consumer)----------------> deleted
    claimed --release (consumer, on error)--> ready      (deliveries + 1; same seal_ns and
                                                          seq: same place in line)
    claimed --recover (anyone; owner dead)--> ready      (deliveries + 1)
    claimed --release/recover/claim---------> dead/      (once deliveries reaches the
                                                          queue's max_deliveries)
    dead    --requeue (q.requeue_dead)------> ready      (deliveries reset to 0)
    loading --recover (anyone; owner dead)--> ready if readable, else aside/
            (an owner whose liveness cannot be checked from here counts as dead once
            its file's lease lapsed: mtime older than lease_timeout, see _lease.py)
    any     --unreadable--------------------> aside/

Every rename of the list above is made in ``_folder.py``; this module is
only the grammar.

Sorting ready names gives seal order at nanosecond resolution; a producer
never repeats or goes back in ``seal_ns`` (it takes ``max(now, last + 1)``),
so one consumer sees each producer's batches in the order they were sealed
even if the wall clock steps back.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from functools import cached_property
from typing import AnyStr

__all__ = [
    "CLOSED_MARKER",
    "SUFFIX",
    "BatchName",
    "ClaimedName",
    "Owner",
    "local_namespace",
    "make_owner",
    "parse_batch_name",
    "parse_claimed_name",
]

SUFFIX = ".tqb"
CLOSED_MARKER = "CLOSED"
ASIDE_DIR = "aside"
DEAD_DIR = "dead"
ERROR_SUFFIX = ".err"
LOADING, READY, CLAIMED, DEAD = "l_", "r_", "c_", "d_"

_HOST_BAD = re.compile(r"[^A-Za-z0-9.-]")
_HOST_DOTS = re.compile(r"\.(?=\.)")  # the first dot of every ".." pair
#: Host characters kept in a token that carries ns: host + ".." + ns is at most 64
#: characters, as long as the longest host alone before, so claimed names (two owners
#: and a ready name) stay within NAME_MAX (255).
_HOST_KEEP = 54
_HOST_NS_RE = re.compile(r"^(?P<host>.*)\.\.(?P<ns>[0-9a-f]{8})$")
_PID_MAX = 2**31 - 1  # pids are C ints; larger digits in a name cannot be a process
_OWNER_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+)-(?P<pid>[0-9]+)-(?P<start>[0-9a-f]+)-(?P<nonce>[0-9a-f]{8})$")
_BODY_RE = re.compile(
    r"(?P<seal_ns>[0-9]{20})_(?P<seq>[0-9]{12})_(?P<count>[0-9]+)_(?P<owner>[A-Za-z0-9.-]+)"
    r"(?:_d(?P<deliveries>[0-9]+))?" + re.escape(SUFFIX) + "$"
)


def sanitize_host(host: str) -> str:
    """Make a host name safe for the grammar (no ``_``, and no ``..``, which marks ns)."""
    return _HOST_DOTS.sub("-", _HOST_BAD.sub("-", host)) or "localhost"


def _process_stat(pid: int) -> tuple[bytes, int]:
    """(state letter, start time in clock ticks since boot) of ``pid``; (b"", 0) where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return b"", 0
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime) overall
    except (IndexError, ValueError):
        return b"", 0


def _process_start(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot, or 0 where /proc is missing."""
    return _process_stat(pid)[1]


@dataclass(frozen=True)
class Owner:
    """Who owns a loading or claimed file: enough to check whether it is alive.

    ``ns`` names the kernel and PID namespace the pid belongs to (see
    :func:`local_namespace`); None for a token without one (written by an
    older version, or on a system without /proc namespaces).  An Owner made
    by hand without ``ns`` names a process of the caller's own namespace.
    """

    host: str
    pid: int
    start: int
    nonce: str
    ns: str | None = field(default_factory=lambda: local_namespace())

    def __str__(self) -> str:
        return self._text

    @cached_property
    def _text(self) -> str:
        # Made once: every batch name and claimed name carries it (a seal
        # formats two names, a claim one).
        host = self.host if self.ns is None else f"{self.host}..{self.ns}"
        return f"{host}-{self.pid}-{self.start:x}-{self.nonce}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        m = _OWNER_RE.match(text)
        if m is None:
            return None
        host, ns = m["host"], None
        folded = _HOST_NS_RE.match(host)
        if folded is not None:
            host, ns = folded["host"], folded["ns"]
        return cls(host, int(m["pid"]), int(m["start"], 16), m["nonce"], ns)

    def is_local(self) -> bool:
        """Same host name and same kernel and PID namespace as this process: its pid means it here."""
        return (self.ns is not None and self.ns == local_namespace()
                and self.host[:_HOST_KEEP] == local_host()[:_HOST_KEEP])

    def is_alive(self) -> bool | None:
        """True/False where liveness can be checked from here; None where it cannot.

        Only a pid of this kernel and PID namespace names a process here: the
        pid of a consumer in another container (even one with this host name)
        is someone else's pid here, or nobody's.  None makes recovery wait for
        the owner's lease (``_lease.py``) instead of guessing.
        """
        if self.ns is None:
            # An old token: its namespace is unknown.  The same host name and a
            # live process with that pid and start time here is this process
            # (an older version's consumer does not renew a lease, so judging
            # it by one would take its batch while it works).  Anything else
            # may be a process of another namespace: unknown.
            if self.host != local_host():
                return None
            if local_namespace() is None:
                return self._pid_alive()  # no PID namespaces here: the pid check is exact
            return True if self._pid_alive() else None
        if not self.is_local():
            return None
        return self._pid_alive()

    def _pid_alive(self) -> bool:
        if not 0 < self.pid <= _PID_MAX:
            return False  # no process has that pid (and os.kill(0, 0) would signal our own group)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by another user
        state, start = _process_stat(self.pid)
        if state in (b"Z", b"X"):
            return False  # killed, not yet reaped by its parent: it will never ack or release
        if self.start and start not in (0, self.start):
            return False  # the pid was reused by a newer process
        return True


_local_host: str | None = None
_UNSET = object()
_local_ns: object = _UNSET


def local_host() -> str:
    global _local_host
    if _local_host is None:
        _local_host = sanitize_host(socket.gethostname())
    return _local_host


def local_namespace() -> str | None:
    """8 hex digits naming this kernel boot and this process's PID namespace; None if unknown.

    The boot id is random per boot and shared by every container of one
    kernel; PID namespace inodes are unique within one kernel.  Together they
    say whether a pid in a token is a pid here.  Cached per process (reset in
    a forked child, which may sit in a new namespace after ``unshare``).
    """
    global _local_ns
    if _local_ns is _UNSET:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                boot = f.read().strip()
            pidns = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            _local_ns = None
        else:
            _local_ns = hashlib.blake2b(boot + b":%d" % pidns, digest_size=4).hexdigest()
    return _local_ns  # type: ignore[return-value]


def _forget_namespace() -> None:
    global _local_ns
    _local_ns = _UNSET


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_namespace)


def make_owner() -> Owner:
    """A fresh owner token for this process (call it in the process that will own files)."""
    pid = os.getpid()
    ns = local_namespace()
    host = local_host() if ns is None else local_host()[:_HOST_KEEP]
    return Owner(host, pid, _process_start(pid), secrets.token_hex(4), ns)


@dataclass(frozen=True)
class BatchName:
    """A parsed loading or ready name."""

    state: str  # LOADING, READY or DEAD
    seal_ns: int
    seq: int
    count: int
    owner: Owner
    #: deliveries that ended without an ack (0 for names without the field)
    deliveries: int = 0

    @property
    def body(self) -> str:
        tail = f"_d{self.deliveries}" if self.deliveries else ""
        return f"{self.seal_ns:020d}_{self.seq:012d}_{self.count}_{self.owner}{tail}{SUFFIX}"

    def name(self, state: str | None = None) -> str:
        return (state or self.state) + self.body

    def with_deliveries(self, deliveries: int) -> BatchName:
        return BatchName(self.state, self.seal_ns, self.seq, self.count, self.owner, deliveries)


@dataclass(frozen=True)
class ClaimedName:
    owner: Owner
    ready_name: str  # the exact name to release it to


def parse_batch_name(name: str) -> BatchName | None:
    """Parse a loading, ready or dead name; None if ``name`` does not follow the grammar."""
    state = name[:2]
    if state not in (LOADING, READY, DEAD):
        return None
    m = _BODY_RE.match(name, 2)
    if m is None:
        return None
    owner = Owner.parse(m["owner"])
    if owner is None:
        return None
    return BatchName(state, int(m["seal_ns"]), int(m["seq"]), int(m["count"]), owner,
                     int(m["deliveries"] or 0))


def parse_claimed_name(name: str) -> ClaimedName | None:
    """Parse a claimed name; None if it does not follow the grammar.

    The embedded ready name is returned even when it is not itself
    well-formed (a stray ``r_*.tqb`` file that a consumer claimed), so a
    release or a recovery can always put the file back where it came from.
    """
    if not name.startswith(CLAIMED):
        return None
    owner_text, sep, ready = name[2:].partition("__")
    if not sep or not ready.startswith(READY) or not ready.endswith(SUFFIX):
        return None
    owner = Owner.parse(owner_text)
    if owner is None:
        return None
    return ClaimedName(owner, ready)


def claimed_owner_text(name: AnyStr) -> AnyStr:
    """The owner text of a claimed name (``c_<owner>__r_...``), cut out without a parse.

    For counting claims by owner from every rename event and listing
    (_folder.ReadyCount): str from a listing, bytes from the watch.  A name
    that does not follow the grammar gives some text, never an error; it
    only ever names one more consumer.
    """
    sep = b"__" if isinstance(name, bytes) else "__"
    start = len(CLAIMED)
    return name[start:name.find(sep, start)]


def claimed_name(owner: Owner, ready_name: str) -> str:
    return f"{CLAIMED}{owner}__{ready_name}"


def is_ready_name(name: str) -> bool:
    """Cheap test used on every listing: looks like a ready batch (grammar checked on read)."""
    return name.startswith(READY) and name.endswith(SUFFIX)
