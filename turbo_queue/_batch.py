"""The batch file: one SQLite database holding the records of one sealed batch.

Layout of format version 2, the one producers write (``PRAGMA application_id``
marks the file as a turbo_queue batch and ``PRAGMA user_version`` holds
:data:`FORMAT_VERSION`)::

    CREATE TABLE meta(key TEXT NOT NULL, value)         -- serializer, count, owner, created_ns
    CREATE TABLE records(id INTEGER PRIMARY KEY,        -- insertion order = put order
                         many INTEGER NOT NULL,         -- 0: items put one by one; 1: one put_many list
                         lengths BLOB,                  -- many=0: little-endian uint64 length of each item
                         data BLOB NOT NULL)            -- many=0: the items' bytes, concatenated;
                                                        -- many=1: the serialized list

with no ``auto_vacuum`` and a page size chosen for the batch's data (see
:func:`_page_size_for`).  Version 1 had the same tables, ``meta.key`` a
PRIMARY KEY (an index b-tree of its own) and ``auto_vacuum=FULL`` (a pointer
map page, and pages moved at every commit); consumers read both versions.

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

import io
import os
import pickle
import sqlite3
import struct
import sys
import threading
from array import array
from typing import Any

from ._errors import BatchFormatError

__all__ = ["FORMAT_VERSION", "read_batch"]

#: The format version producers write.
FORMAT_VERSION = 2
#: The format versions consumers and :func:`read_batch` read.
READ_VERSIONS = (1, 2)
#: "TQB1" as a big-endian int: tells a turbo_queue batch from any other SQLite file.
APPLICATION_ID = 0x54514231
_SQLITE_MAGIC = b"SQLite format 3\x00"
_HEADER_SIZE = 100

# The settings come first: page_size must be set before the first table
# exists.  No auto_vacuum: every batch starts from this empty image (see
# encode_batch), so no freed page is ever carried, and auto_vacuum=FULL was
# the largest single cost of encoding a version-1 batch (its pointer map is
# kept up to date at every insert and pages are moved at commit).
_SCHEMA = (
    "PRAGMA page_size={page_size};"
    "PRAGMA auto_vacuum=NONE;"
    f"PRAGMA application_id={APPLICATION_ID};"
    f"PRAGMA user_version={FORMAT_VERSION};"
    # No PRIMARY KEY on meta.key: it would add an index b-tree (one more
    # page in every file, one more insert per entry) to a table of four rows.
    "CREATE TABLE meta(key TEXT NOT NULL, value);"
    "CREATE TABLE records(id INTEGER PRIMARY KEY, many INTEGER NOT NULL, lengths BLOB, data BLOB NOT NULL);"
)

# Page sizes: a batch gets about _PAGES_PER_BATCH pages of data, within these
# bounds.  Measured (bench/micro/batch_format.py): encode + decode CPU falls as
# pages grow up to about 40 per batch and is flat beyond, while each file
# carries about three nearly empty pages (the schema, meta, the records'
# root) whatever its size, so small batches want small pages: 1 KiB pages
# keep a batch of 100 items of 160 bytes at +14% instead of +52% at 4 KiB.
_MIN_PAGE_SIZE = 1024
_MAX_PAGE_SIZE = 32768
_PAGES_PER_BATCH = 40


def _page_size_for(nbytes: int) -> int:
    """The page size for a batch of ``nbytes`` of record data."""
    page_size = _MIN_PAGE_SIZE
    while page_size < _MAX_PAGE_SIZE and page_size * _PAGES_PER_BATCH < nbytes:
        page_size *= 2
    return page_size


def _empty_image(page_size: int) -> bytes:
    """The bytes of an empty version-2 batch database with that page size."""
    con = sqlite3.connect(":memory:", isolation_level=None)
    try:
        con.executescript(_SCHEMA.format(page_size=page_size))
        return con.serialize()
    finally:
        con.close()


class _PerProcessConnection(threading.local):
    """An in-memory SQLite connection, private to the process and thread that opened it.

    Per thread too: producers and consumers in several threads of one process
    would otherwise interleave their statements on one connection (records of
    one batch in another) and ``deserialize`` under a running query crashes
    the interpreter.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._con: sqlite3.Connection | None = None

    def get(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._pid != pid or self._con is None:
            # After fork the parent's handle must not be used (SQLite forbids
            # carrying an open connection across fork); drop it unclosed.
            self._con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._pid = pid
        return self._con


class _Readers(threading.local):
    """Per process and thread, one reading connection per database layout.

    A prepared statement has the root pages of its tables compiled in, and
    SQLite prepares it again only when the schema cookie (header offset 40)
    of the database it runs on differs from the one it was prepared against.
    Version 1 and version 2 files share the cookie (both made by two CREATE
    TABLEs) but not their root pages, so the ``sqlite3`` module's statement
    cache, run on one connection over a v1 then a v2 file, reads the wrong
    pages ("database disk image is malformed"): hence a connection, and its
    statement cache, per (format version, schema cookie).  Reproduced by
    tests/test_batch_format.py::test_one_consumer_alternating_versions_reads_each_file_right.
    """

    _MAX = 4  # only files written by other software have other cookies

    def __init__(self) -> None:
        self._pid = -1
        self._cons: dict[tuple[int, int], sqlite3.Connection] = {}

    def get(self, key: tuple[int, int]) -> sqlite3.Connection:
        pid = os.getpid()
        if self._pid != pid:
            self._cons = {}  # the parent's handles: dropped unclosed, as above
            self._pid = pid
        con = self._cons.get(key)
        if con is None:
            if len(self._cons) >= self._MAX:
                self._cons.pop(next(iter(self._cons))).close()
            con = self._cons[key] = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        return con


_writer = _PerProcessConnection()
#: The empty database image of each page size, built on first use (bytes: safe to share).
_empty_images: dict[int, bytes] = {}
_readers = _Readers()


def encode_batch(records: list[tuple[int, bytes | None, bytes]], count: int, serializer: str, owner: str,
                 created_ns: int) -> bytes:
    """The bytes of a complete batch file holding ``records`` ((many, lengths, data) rows)."""
    nbytes = 0
    for record in records:
        nbytes += len(record[2])
    page_size = _page_size_for(nbytes)
    image = _empty_images.get(page_size)
    if image is None:
        image = _empty_images[page_size] = _empty_image(page_size)
    con = _writer.get()
    # Each batch starts from a copy of the empty image: cheaper than creating
    # the schema, and unlike emptying the tables of the previous batch it
    # leaves no free page behind (a batch after a larger one would carry the
    # larger one's pages), which is what auto_vacuum was for in version 1.
    con.deserialize(image)
    # One statement for the four meta rows, and execute() for a batch of one
    # record (single puts encoded at seal, one put_many): each statement
    # costs a few microseconds, which counts at small batch sizes.  A batch
    # of one record runs its two statements without BEGIN and COMMIT (two
    # statements fewer): the database is this connection's memory and is
    # read only once both are done, so there is nothing to make atomic.
    one = len(records) == 1
    if not one:
        con.execute("BEGIN")  # one transaction for the executemany below, not one per row
    con.execute("INSERT INTO meta VALUES('serializer',?),('count',?),('owner',?),('created_ns',?)",
                (serializer, count, owner, created_ns))
    if one:
        con.execute("INSERT INTO records(many, lengths, data) VALUES(?,?,?)", records[0])
    else:
        con.executemany("INSERT INTO records(many, lengths, data) VALUES(?,?,?)", records)
        con.execute("COMMIT")
    return con.serialize()


#: The database header's fields a reader judges a file by, big-endian, in
#: one call: page size (offset 16), file change counter (24), page count
#: (28), schema cookie (40), user_version (60), application_id (68),
#: version-valid-for (92).
_HEADER = struct.Struct(">16xH6xII8xI16xI4xI20xI")


def decode_batch(data: bytes, path: str) -> tuple[dict[str, Any], list[tuple[int, bytes]]]:
    """Parse batch-file bytes (format version 1 or 2) into (meta, records); BatchFormatError if it is not one."""
    if len(data) < _HEADER_SIZE or not data.startswith(_SQLITE_MAGIC):
        raise BatchFormatError("not a SQLite file (empty, truncated or foreign)", path)
    # The header is read here rather than with PRAGMA queries: the same
    # answer without two statements per batch, and a file is judged before
    # SQLite touches its pages.
    page_size, changes, pages, cookie, version, app_id, valid_for = _HEADER.unpack_from(data)
    if app_id != APPLICATION_ID:
        raise BatchFormatError(f"SQLite file is not a turbo_queue batch (application_id {app_id})", path)
    if version not in READ_VERSIONS:
        raise BatchFormatError(
            f"batch format version {version} is not supported by this turbo_queue "
            f"(it reads versions {', '.join(map(str, READ_VERSIONS))}); upgrade the consumers", path,
            reason=f"format-v{version}",
        )
    page_size = 65536 if page_size == 1 else page_size
    # The page count is valid when the change counter matches
    # version-valid-for (every file serialize() writes); a file shorter than
    # it says lost its tail, which SQLite would read as zeros.
    if pages and changes == valid_for and len(data) != pages * page_size:
        raise BatchFormatError(
            f"truncated or padded batch file: {len(data)} bytes, its header says {pages} pages of {page_size}", path)
    con = _readers.get((version, cookie))
    try:
        con.deserialize(data)
        meta = dict(con.execute("SELECT key, value FROM meta"))
        records = con.execute("SELECT many, lengths, data FROM records ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:
        raise BatchFormatError(f"corrupt batch file: {exc}", path) from exc
    if meta.get("count") is None:
        raise BatchFormatError("batch has no item count (incomplete write)", path)
    return meta, records


def read_file(path: str) -> bytes:
    """The whole file: open, fstat, one read, close.

    ``open(path, "rb").read()`` makes nine system calls of these four and
    two file objects (an ioctl for a terminal, two seeks, a second fstat,
    a read to see the end), about 3 us more per batch on the 2-core VM
    (bench/micro/batch_cost.py).  A sealed batch never changes, so the size
    fstat gives is the file's; one byte more is asked for, and a file that
    turns out longer or shorter is read to its end, as ``read()`` would.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) == size:
            return data
        chunks = [data]
        while True:
            more = os.read(fd, max(size, 65536))
            if not more:
                return b"".join(chunks)
            chunks.append(more)
    finally:
        os.close(fd)


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
    if len(records) == 1 and records[0][0]:
        # One list (a batch of single puts encoded at seal, or one put_many):
        # one loads call, and its list is the batch's, without a copy.
        items = loads_many(records[0][2])
        if type(items) is list:
            return items
        return list(items)
    items: list[Any] = []
    append, extend = items.append, items.extend
    for many, lengths, data in records:
        if many:
            extend(loads_many(data))
            continue
        sizes = array_from(lengths)
        if loads is pickle.loads:
            # Pickles end with a STOP opcode, so a run of them loads back to
            # back from one stream: no bytes copy of each item, no Unpickler
            # made per item (about 10% of the consumer's CPU for items of
            # 160 bytes; bench/micro/batch_format.py).  BytesIO shares the bytes
            # rather than copying them.  Each item's pickle memoizes from
            # index 0 again, so the memo carried from one load to the next
            # is only ever overwritten, never read.
            stream = io.BytesIO(data)
            load = pickle.Unpickler(stream).load
            for _ in range(len(sizes)):
                append(load())
            if stream.tell() != len(data):
                raise ValueError("record lengths do not add up to its data")
            continue
        offset = 0
        for n in sizes:
            end = offset + n
            # Slicing bytes (a copy) then loading is faster than loading from
            # a memoryview slice for items of a few hundred bytes (measured
            # again for version 2: 830 against 870 us per 1000 items).
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

    For inspection and tooling; reads every format version in
    :data:`READ_VERSIONS` and raises :class:`BatchFormatError` for anything
    that is not a readable batch of one of them.  The caller names
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
