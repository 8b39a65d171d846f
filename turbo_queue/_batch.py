"""The batch file: one SQLite database holding the records of one sealed batch.

Layout (``PRAGMA application_id`` marks the file as a turbo_queue batch and
``PRAGMA user_version`` holds :data:`FORMAT_VERSION`)::

    CREATE TABLE meta(key TEXT PRIMARY KEY, value)      -- serializer, count, owner, created_ns
    CREATE TABLE records(id INTEGER PRIMARY KEY,        -- insertion order = put order
                         many INTEGER NOT NULL,         -- 0: items put one by one; 1: one put_many list
                         lengths BLOB,                  -- many=0: little-endian uint64 length of each item
                         data BLOB NOT NULL)            -- many=0: the items' bytes, concatenated;
                                                        -- many=1: the serialized list

A record holds a *run* of items rather than one item: SQLite costs about a
microsecond per row inserted from Python, as much as the rest of ``put``,
while one row per run costs the same whatever the batch size.

A producer builds the database in memory and writes it out whole
(``Connection.serialize``), and a consumer reads the whole file and opens it
in memory (``Connection.deserialize``).  Both are plain SQLite files that
the ``sqlite3`` shell opens; building them in memory costs a fraction of
creating a database on disk, which matters at small batch sizes.

The in-memory connections are per process and per thread: opened lazily and
reopened when ``os.getpid()`` changes, so a producer or consumer made before
``fork`` never shares a SQLite handle with its child, and threads never share one.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from array import array
from typing import Any

from ._errors import BatchFormatError

__all__ = ["FORMAT_VERSION", "read_batch"]

FORMAT_VERSION = 1
#: "TQB1" as a big-endian int: tells a turbo_queue batch from any other SQLite file.
APPLICATION_ID = 0x54514231
_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = (
    # auto_vacuum=FULL gives freed pages back at each commit, so a batch
    # image never carries the pages of a larger earlier batch.
    "PRAGMA auto_vacuum=FULL;"
    f"PRAGMA application_id={APPLICATION_ID};"
    f"PRAGMA user_version={FORMAT_VERSION};"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
    "CREATE TABLE records(id INTEGER PRIMARY KEY, many INTEGER NOT NULL, lengths BLOB, data BLOB NOT NULL);"
)


class _PerProcessConnection(threading.local):
    """An in-memory SQLite connection, private to the process and thread that opened it.

    Per thread too: producers and consumers in several threads of one process
    would otherwise interleave their statements on one connection (records of
    one batch in another) and ``deserialize`` under a running query crashes
    the interpreter.
    """

    def __init__(self, schema: str | None = None) -> None:
        self._pid = -1
        self._con: sqlite3.Connection | None = None
        self._schema = schema

    def get(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._pid != pid or self._con is None:
            # After fork the parent's handle must not be used (SQLite forbids
            # carrying an open connection across fork); drop it unclosed.
            con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            if self._schema:
                con.executescript(self._schema)
            self._con, self._pid = con, pid
        return self._con


_writer = _PerProcessConnection(_SCHEMA)
_reader = _PerProcessConnection()


def encode_batch(records: list[tuple[int, bytes | None, bytes]], count: int, serializer: str, owner: str,
                 created_ns: int) -> bytes:
    """The bytes of a complete batch file holding ``records`` ((many, lengths, data) rows)."""
    con = _writer.get()
    # One database per process and thread, emptied and refilled for each
    # batch: cheaper than creating a schema every time.
    con.execute("BEGIN")
    con.execute("DELETE FROM meta")
    con.execute("DELETE FROM records")
    con.executemany(
        "INSERT INTO meta VALUES(?,?)",
        (("serializer", serializer), ("count", count), ("owner", owner), ("created_ns", created_ns)),
    )
    con.executemany("INSERT INTO records(many, lengths, data) VALUES(?,?,?)", records)
    con.execute("COMMIT")
    return con.serialize()


def decode_batch(data: bytes, path: str) -> tuple[dict[str, Any], list[tuple[int, bytes]]]:
    """Parse batch-file bytes into (meta, records); BatchFormatError if it is not one."""
    if not data.startswith(_SQLITE_MAGIC):
        raise BatchFormatError("not a SQLite file (empty, truncated or foreign)", path)
    con = _reader.get()
    try:
        con.deserialize(data)
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise BatchFormatError(f"SQLite file is not a turbo_queue batch (application_id {app_id})", path)
        if version != FORMAT_VERSION:
            raise BatchFormatError(
                f"batch format version {version} is not supported by this turbo_queue "
                f"(it reads version {FORMAT_VERSION}); upgrade the consumers", path,
                reason=f"format-v{version}",
            )
        meta = dict(con.execute("SELECT key, value FROM meta"))
        records = con.execute("SELECT many, lengths, data FROM records ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:
        raise BatchFormatError(f"corrupt batch file: {exc}", path) from exc
    if meta.get("count") is None:
        raise BatchFormatError("batch has no item count (incomplete write)", path)
    return meta, records


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write_file(path: str, data: bytes, durable: bool, mode: int = 0o600) -> None:
    """Write a new file (never overwriting: O_EXCL) with ``mode``, fsync'd when ``durable``.

    ``mode`` comes from the queue folder (``Queue._open_folder``): 0600, or
    0640/0660 in a folder shared by a group.  It is set exactly, whatever
    the umask: a producer running with umask 077 in a 2770 folder must still
    make batches the group's consumers can read.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        if mode & 0o077:
            os.fchmod(fd, mode)  # one call per batch, only in shared folders
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        # A half-written file must not be mistaken for a batch later.
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    os.close(fd)


def decode_items(records, loads, loads_many) -> list[Any]:
    """Turn records into the list of items, in put order."""
    items: list[Any] = []
    append, extend = items.append, items.extend
    for many, lengths, data in records:
        if many:
            extend(loads_many(data))
            continue
        offset = 0
        for n in array_from(lengths):
            end = offset + n
            # Slicing bytes (a copy) then loading is faster than loading from
            # a memoryview slice for items of a few hundred bytes.
            append(loads(data[offset:end]))
            offset = end
        if offset != len(data):
            raise ValueError("record lengths do not add up to its data")
    return items


def array_from(lengths: bytes) -> array:
    a = array("Q")
    a.frombytes(lengths)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def lengths_bytes(lengths: array) -> bytes:
    if sys.byteorder != "little":
        lengths = array("Q", lengths)
        lengths.byteswap()
    return lengths.tobytes()


def read_batch(path: str | os.PathLike[str], serializer: Any = "pickle") -> list[Any]:
    """Read the items of one batch file (any state) without changing it.

    For inspection and tooling; raises :class:`BatchFormatError` for anything
    that is not a readable batch of this format version.  The caller names
    the serializer, as a Queue does: the file's own ``serializer`` entry is
    written by whoever wrote the file, so it is never allowed to choose
    pickle for a caller who asked for json.
    """
    from ._serializers import get_serializer

    path = os.fspath(path)
    meta, records = decode_batch(read_file(path), path)
    ser = get_serializer(serializer)
    written = meta.get("serializer")
    if isinstance(serializer, str) and written != ser.name:
        raise BatchFormatError(
            f"batch was written with the {written!r} serializer, not {ser.name!r}", path, "serializer-mismatch")
    try:
        return decode_items(records, ser.loads, getattr(ser, "loads_many", None))
    except Exception as exc:
        raise BatchFormatError(f"cannot decode items: {exc!r}", path) from exc
