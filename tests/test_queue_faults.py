"""The fault suite: full disks, hostile files, racing recoveries, vanishing folders, bad clocks.

Each test states what must hold when things go wrong: errors are clear (they
name the path) and come at once (no hang), and no sealed item is lost or
delivered twice.  Tests that need a small or read-only file system mount a
tmpfs (root or CAP_SYS_ADMIN, as on CI) and skip with the reason elsewhere.
Child processes come from the forkserver and are reaped by ``reap_children``.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import shutil
import sqlite3
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import _fault_workers as fw
import pytest
from _workers import drain

import turbo_queue
from turbo_queue import _batch, _naming
from turbo_queue._errors import Closed

pytestmark = pytest.mark.usefixtures("reap_children")

CTX = multiprocessing.get_context("forkserver")


def start(target, *args):
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def join_all(procs, timeout: float = 30.0) -> None:
    for proc in procs:
        proc.join(timeout)
    hung = [proc for proc in procs if proc.exitcode is None]
    for proc in hung:
        proc.kill()
        proc.join(5)
    assert not hung, "child processes hung"
    assert [proc.exitcode for proc in procs] == [0] * len(procs)


def batch_files(folder) -> list[str]:
    """Loading, ready and claimed files (not other programs' files that happen to end in .tqb)."""
    return sorted(n for n in os.listdir(folder)
                  if n.endswith(_naming.SUFFIX) and n[:2] in (_naming.LOADING, _naming.READY, _naming.CLAIMED))


def dead_pid() -> int:
    proc = CTX.Process(target=int)
    proc.start()
    proc.join(10)
    return proc.pid


def dead_owner() -> _naming.Owner:
    return _naming.Owner(_naming.local_host(), dead_pid(), 0, "deadbeef")


def names_path(info: dict, folder) -> bool:
    """The error names a path inside (or equal to) ``folder``, in its text and its attributes."""
    folder = str(folder)
    named = [p for p in (info["filename"], info["filename2"], info["path"]) if p]
    return folder in info["text"] and any(str(p).startswith(folder) for p in named)


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    why = fw.mount_tmpfs(mnt, "1m")
    if why:
        pytest.skip(why)
    try:
        yield mnt
    finally:
        fw.umount(mnt)


# -- disk full ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_disk_full_raises_naming_the_path_and_the_producer_continues(tmpfs):
    q = turbo_queue.Queue(tmpfs / "q", batch_size=4, max_batch_age=None, serializer="raw")
    p = q.producer()
    payload = b"x" * 40_000  # about 160 KB a batch: a 1 MB file system holds a few

    def item(i: int) -> bytes:
        return i.to_bytes(4, "big") + payload

    accepted = 0
    with pytest.raises(OSError) as info:
        for i in range(1000):
            p.put(item(i))
            accepted += 1
    full = info.value
    assert full.errno == errno.ENOSPC
    assert str(q.path) in str(full) and full.filename.startswith(str(q.path))
    # The put that raised did not queue its item: what put accepted is sealed or pending.
    assert p.sealed_items + p.pending == accepted
    sealed_before = p.sealed_items
    assert sealed_before > 0
    with pytest.raises(OSError) as info:
        p.flush()
    assert info.value.errno == errno.ENOSPC and str(q.path) in str(info.value)
    assert not [n for n in os.listdir(q.path) if n.startswith(_naming.LOADING)]  # no torn file left
    # Sealed batches stay readable on the full disk; taking them frees space.
    got = []
    with q.consumer() as c:
        for _ in range(3):
            with c.batch(timeout=5) as items:
                got += items
        # The same producer continues where it stopped.
        p.flush()
        for k in range(12):
            p.put(item(accepted + k))
            if k % 4 == 3:  # keep the disk from filling again: take what was sealed
                with c.batch(timeout=5) as items:
                    got += items
        p.close()
        q.close()
        got += [x for x in c]
    assert [int.from_bytes(x[:4], "big") for x in got] == list(range(accepted + 12))
    assert all(x[4:] == payload for x in got)
    assert batch_files(q.path) == []


# -- hostile files -----------------------------------------------------------------


def _batch_data(items, owner="x-1-0-00000000") -> bytes:
    records = [(1, None, pickle.dumps(list(items)))]
    return _batch.encode_batch(records, len(items), "pickle", owner, 0)


def _with_header(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + value.to_bytes(4, "big") + data[offset + 4:]


def _foreign_sqlite(path: Path) -> bytes:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    con.close()
    data = path.read_bytes()
    path.unlink()
    return data


def _hostile_files(folder: Path, scratch: Path, owner: _naming.Owner) -> dict[str, tuple[bytes, str]]:
    """Drop every kind of bad batch-named file into ``folder`` (each made in ``scratch``, then renamed
    in whole).  Returns name -> (its bytes, b"" for a folder or link; the name it is set aside under)."""
    good = _batch_data(["never", "delivered"])

    def ready(seq: int) -> str:
        return _naming.BatchName(_naming.READY, 10**18 + seq, seq, 2, owner).name()

    files = {
        ready(1): os.urandom(3000),  # garbage with a perfect ready name
        "r_garbage.tqb": b"not even close",  # garbage with a ready-looking name
        ready(2): good[: len(good) // 2],  # a truncated SQLite batch
        ready(3): _with_header(good, 60, 99),  # format version 99 (user_version)
        ready(4): _foreign_sqlite(scratch / "foreign.db"),  # another program's SQLite file
        ready(5): b"",  # zero bytes
        ready(7): _batch.encode_batch([(1, None, pickle.dumps([1, 2]))], 5, "pickle", str(owner), 0),
        _naming.BatchName(_naming.LOADING, 10**18, 8, 2, owner).name(): os.urandom(500),  # dead producer's
        "l_junk.tqb": b"junk",  # loading-looking name off the grammar
        _naming.claimed_name(owner, ready(9)): os.urandom(700),  # claimed by a dead consumer
        "c_junk.tqb": b"junk",
    }
    staged = []
    for k, (name, data) in enumerate(files.items()):
        (scratch / str(k)).write_bytes(data)
        staged.append((scratch / str(k), name))
    (scratch / "dir").mkdir()  # a folder named like a batch, with something in it
    (scratch / "dir" / "inside").write_bytes(b"keep me")
    staged.append((scratch / "dir", "r_dir.tqb"))
    os.symlink(scratch / "no-such-file", scratch / "link")  # a dangling symbolic link
    staged.append((scratch / "link", "r_dangling.tqb"))
    for src, name in staged:
        os.rename(src, folder / name)
    result = {name: (data, name) for name, data in files.items()}
    # Recovery returns it to ready with one delivery counted (the "_d1" field) before it is set aside.
    result[_naming.claimed_name(owner, ready(9))] = (files[_naming.claimed_name(owner, ready(9))],
                                                     ready(9).replace(".tqb", "_d1.tqb"))
    result["r_dir.tqb"] = (b"", "r_dir.tqb")
    result["r_dangling.tqb"] = (b"", "r_dangling.tqb")
    return result


OTHER_PROGRAMS = {"notes.txt": b"mine", ".hidden": b"dot", "r_x.tmp": b"tmp", "l_x": b"no suffix",
                  "batch.tqb": b"no state prefix", "x_1.tqb": b"unknown prefix", "CLOSED.bak": b"backup"}


@pytest.mark.timeout(60)
def test_stray_and_corrupt_files_while_consumers_run(tmp_path):
    """Garbage appears mid-stream; two consumer processes carry on, set every bad batch aside
    (whole, never deleted), deliver every good item exactly once and leave other files alone."""
    folder, scratch = tmp_path / "q", tmp_path / "scratch"
    scratch.mkdir()
    q = turbo_queue.Queue(folder, batch_size=5, max_batch_age=None, recover_interval=0.01)
    go = str(tmp_path / "go")
    outs = [str(tmp_path / f"c{i}.out") for i in range(2)]
    consumers = [start(fw.collect, q, go, out) for out in outs]
    for name, data in OTHER_PROGRAMS.items():
        (folder / name).write_bytes(data)
    (folder / "sub").mkdir()
    (folder / "sub" / "file").write_bytes(b"sub")
    with q.producer() as p:
        p.put_many(range(0, 50))
        Path(go).touch()
        hostile = _hostile_files(folder, scratch, dead_owner())
        p.put_many(range(50, 100))
    q.close()
    join_all(consumers)
    batches = [b for out in outs for b in fw.read_result(out)]
    assert Counter(x for b in batches for x in b) == Counter(range(100))
    assert batch_files(folder) == []
    aside = sorted(os.listdir(folder / "aside"))
    assert len(aside) == len(hostile)
    for name, (data, original) in hostile.items():
        [entry] = [a for a in aside if a.startswith(original + ".")]
        target = folder / "aside" / entry
        if name == "r_dir.tqb":
            assert (target / "inside").read_bytes() == b"keep me"
        elif name == "r_dangling.tqb":
            assert target.is_symlink()
        else:
            assert target.read_bytes() == data, name  # moved whole
    for name, data in OTHER_PROGRAMS.items():
        assert (folder / name).read_bytes() == data
    assert (folder / "sub" / "file").read_bytes() == b"sub"
    stats = q.stats()
    assert stats["aside"] == len(hostile) and stats["other_files"] == len(OTHER_PROGRAMS) + 1


# -- concurrent recovery -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_concurrent_recover_no_duplicates(tmp_path):
    """Four processes run recover() on the same folder at once while two consumers (which recover
    too, every 10 ms when idle) drain it: 200 batches of dead owners (100 claimed, 100 loading)
    are each returned or sealed by exactly one of them, and every item is delivered exactly once."""
    folder = tmp_path / "q"
    q = turbo_queue.Queue(folder, batch_size=3, max_batch_age=None, recover_interval=0.01)
    sealed_out = str(tmp_path / "sealed.out")
    producer = start(fw.seal_batches, q, "dead", 200, sealed_out)
    join_all([producer])
    names = fw.read_result(sealed_out)
    assert len(names) == 200
    consumer = dead_owner()
    for k, name in enumerate(names):  # the files a crashed producer and a crashed consumer leave
        new = (_naming.LOADING + name[2:]) if k % 2 else _naming.claimed_name(consumer, name)
        os.rename(folder / name, folder / new)
    assert not [n for n in os.listdir(folder) if n.startswith(_naming.READY)]
    go = str(tmp_path / "go")
    rec_outs = [str(tmp_path / f"r{i}.out") for i in range(4)]
    col_outs = [str(tmp_path / f"c{i}.out") for i in range(2)]
    recoverers = [start(fw.recoverer, q, go, 5, out) for out in rec_outs]
    collectors = [start(fw.collect, q, go, out) for out in col_outs]
    for out in rec_outs:
        fw.wait_for(lambda out=out: os.path.exists(out + ".ready"), what="a recoverer to start")
    Path(go).touch()
    join_all(recoverers)
    q.close()
    join_all(collectors)
    reports = [fw.read_result(out) for out in rec_outs]
    returned = [n for r in reports for n in r["returned"]]
    sealed = [n for r in reports for n in r["sealed"]]
    assert len(returned) == len(set(returned)) and len(sealed) == len(set(sealed))
    assert not any(r["set_aside"] for r in reports)
    items = [x for out in col_outs for b in fw.read_result(out) for x in b]
    assert Counter(items) == Counter(("dead", i) for i in range(600))  # each exactly once
    assert batch_files(folder) == []
    # A recovery that lost a race may have made aside/ (set_aside makes it before its rename
    # fails), but nothing may be in it: every file was complete.
    assert not (folder / "aside").exists() or os.listdir(folder / "aside") == []


# -- read-only, deleted and locked folders -----------------------------------------


@pytest.mark.timeout(60)
def test_read_only_folder_errors_name_the_path(tmpfs):
    q = turbo_queue.Queue(tmpfs / "q", batch_size=2, max_batch_age=None)
    p, c = q.producer(), q.consumer()
    p.put_many([0, 1, 2, 3, 4])  # two sealed batches, one item pending
    fw.remount(tmpfs, "ro")
    try:
        info = fw.attempt(p.flush)
        assert info["errno"] == errno.EROFS and names_path(info, q.path), info
        info = fw.attempt(lambda: c.get_batch(timeout=5))
        assert info["errno"] == errno.EROFS and names_path(info, q.path), info
        info = fw.attempt(lambda: turbo_queue.Queue(q.path))
        assert info["errno"] == errno.EROFS and str(q.path) in info["text"], info
        info = fw.attempt(q.close)
        assert info["errno"] == errno.EROFS and names_path(info, q.path), info
        assert q.stats()["ready"]["events"] == 4  # reading still works
        assert [turbo_queue.read_batch(q.path / n) for n in batch_files(q.path)] == [[0, 1], [2, 3]]
    finally:
        fw.remount(tmpfs, "rw")
    p.close()  # the pending item is sealed now
    q.close()
    assert sorted(c) == [0, 1, 2, 3, 4]
    c.close()


@pytest.mark.timeout(60)
def test_folder_deleted_while_running(tmp_path):
    """A consumer blocked in get_batch(timeout=None) and a producer blocked in put (max_ready)
    raise FileNotFoundError naming the folder once it is deleted; nothing hangs; a producer
    keeps its pending items and seals them once the folder is back."""
    folders = {"get": tmp_path / "q-get", "put": tmp_path / "q-put"}
    queues = {"get": turbo_queue.Queue(folders["get"], batch_size=2, max_batch_age=None),
              "put": turbo_queue.Queue(folders["put"], batch_size=2, max_ready=2, max_batch_age=None)}
    outs = {k: (str(tmp_path / f"{k}.started"), str(tmp_path / f"{k}.out")) for k in folders}
    procs = [start(fw.blocked_get, queues["get"], *outs["get"]),
             start(fw.blocked_put, queues["put"], *outs["put"])]
    for k in folders:
        fw.wait_for(lambda k=k: os.path.exists(outs[k][0]), what=f"the {k} worker to block")
    q = queues["get"]
    p = q.producer()
    p.put("pending")
    for folder in folders.values():
        shutil.rmtree(folder)
    join_all(procs, timeout=20)
    for k, folder in folders.items():
        info = fw.read_result(outs[k][1])
        assert info is not None and info["errno"] == errno.ENOENT, (k, info)
        assert names_path(info, folder), (k, info)
    folder = folders["get"]
    info = fw.attempt(p.flush)
    assert info["errno"] == errno.ENOENT and names_path(info, folder), info
    assert p.pending == 1  # kept: it can still be sealed if the folder comes back
    info = fw.attempt(q.stats)
    assert info["errno"] == errno.ENOENT and names_path(info, folder), info
    info = fw.attempt(q.close)
    assert info["errno"] == errno.ENOENT and names_path(info, folder), info
    folder.mkdir(mode=0o700)
    p.close()
    assert drain(q) == ["pending"]


@pytest.mark.timeout(60)
def test_permission_changes_name_the_path(tmp_path):
    """chmod under a live producer and consumer: PermissionError naming the path, at once;
    after the mode is restored the same objects carry on.  As root (whom modes do not stop)
    the scenario runs in a child process as user nobody."""
    if os.geteuid() == 0:
        # pytest's tmp_path is private to root: nobody needs a folder it can reach.
        base = tempfile.mkdtemp(prefix="tq-perm-")
        os.chown(base, fw.NOBODY, fw.NOBODY)
    else:
        base = str(tmp_path)
    out = os.path.join(base, "result")
    try:
        proc = start(fw.permission_scenario, base, out)
        join_all([proc])
        r = fw.read_result(out)
    finally:
        if base != str(tmp_path):
            shutil.rmtree(base, ignore_errors=True)
    path = os.path.join(base, "q")
    for step in ("flush_ro", "get_ro", "queue_ro", "get_none", "stats_none"):
        info = r[step]
        assert info is not None and info["type"] == "PermissionError", (step, info)
        assert path in info["text"], (step, info)
    assert r["flush_after"] is None and r["drain"] is None, r
    assert r["got"] == [0, 1, 2]


# -- clocks ------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_producer_clock_set_back_loses_nothing(tmp_path):
    """Three producers: one whose clock is an hour behind, one whose clock jumps back an hour
    after 5 batches, one on time.  Ordering across producers degrades (the one in the past
    jumps the line), each producer's own order holds, and every item arrives exactly once."""
    folder = tmp_path / "q"
    q = turbo_queue.Queue(folder, batch_size=10, max_batch_age=None)
    go = str(tmp_path / "go")
    hour = 3600 * 10**9
    specs = {"behind": (-hour, 0, 0), "jumps": (0, -hour, 5), "ontime": (0, 0, 0)}
    outs = {tag: str(tmp_path / f"{tag}.out") for tag in specs}
    procs = [start(fw.skewed_producer, q, tag, 200, off, jump, after, go, outs[tag])
             for tag, (off, jump, after) in specs.items()]
    Path(go).touch()
    join_all(procs)
    q.close()
    batches = []
    with q.consumer() as c:
        while True:
            try:
                batches.append(c.get_batch(timeout=5))
            except Closed:
                break
    items = [x for b in batches for x in b]
    assert Counter(items) == Counter((tag, i) for tag in specs for i in range(200))
    for tag in specs:
        assert [i for t, i in items if t == tag] == list(range(200)), tag
    assert {t for t, _ in items[:200]} == {"behind"}  # an hour "older": first in line


# -- exceptions inside a batch -----------------------------------------------------


@pytest.mark.timeout(60)
def test_raise_inside_batch_returns_it_to_ready_for_another_process(tmp_path):
    folder = tmp_path / "q"
    q = turbo_queue.Queue(folder, batch_size=3, max_batch_age=None)
    with q.producer() as p:
        p.put_many(range(9))
    before = batch_files(folder)
    out = str(tmp_path / "taken")
    proc = start(fw.raise_inside_batch, q, out)
    join_all([proc])
    assert fw.read_result(out) == [0, 1, 2]
    # Same seal time and sequence: same place in line; one delivery without an ack counted.
    assert batch_files(folder) == [before[0].replace(".tqb", "_d1.tqb"), *before[1:]]
    with q.consumer() as c:
        with pytest.raises(KeyboardInterrupt):  # any BaseException releases too
            with c.batch(timeout=5) as items:
                assert items == [0, 1, 2]
                raise KeyboardInterrupt
        assert batch_files(folder) == [before[0].replace(".tqb", "_d2.tqb"), *before[1:]]
        q.close()
        assert list(c) == list(range(9))


# -- payloads ----------------------------------------------------------------------

UNICODE = ["", "ascii", "h\u00e9llo w\u00f6rld", "\u65e5\u672c\u8a9e", "\U0001f389\U0001f680", "nul\x00in",
           "\u2028\u2029", "rtl \u202e", "e\u0301", "\ufeffbom", "x" * 70_000]
LONE_SURROGATE = "lone \ud800"
BINARY = [b"", bytes(range(256)), b"\x00" * 17, b"\xff\xfe\xfd", os.urandom(4096)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("serializer", ["pickle", "json", "raw"])
def test_large_tiny_unicode_and_binary_items(tmp_path, serializer):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=1000, max_batch_age=None, serializer=serializer)
    big_text = "\u00e9\U0001f389" * 1_500_000  # ~7 MB of UTF-8
    big = [big_text] if serializer == "json" else [os.urandom(6 * 2**20), big_text]
    tiny = [b"", ""] * 10_000 if serializer == "raw" else [0, "", 1] * 10_000
    texts = UNICODE + ([] if serializer == "json" else [LONE_SURROGATE])
    binary = [] if serializer == "json" else BINARY
    expected = []
    with q.producer() as p:
        for x in big:  # several MB each, one batch each
            p.put(x)
            p.flush()
        expected += big
        for x in tiny[:10_000]:
            p.put(x)
        p.put_many(tiny[10_000:])
        expected += tiny
        for x in texts + binary:
            p.put(x)
        p.put_many(texts + binary)
        expected += (texts + binary) * 2
        if serializer == "json":
            # What JSON cannot carry is dropped at seal (capture="seal", the
            # default) and reported by the call that seals; the producer goes on.
            for bad in (LONE_SURROGATE, b"bytes"):
                p.put(bad)
            p.put("after")
            expected.append("after")
            with pytest.raises(TypeError, match="str") as info:
                p.flush()
            assert info.value.dropped == 2
    q.close()
    with q.consumer() as c:
        got = list(c)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert type(a) is type(b) and a == b


# -- security ----------------------------------------------------------------------


class _Payload:
    """A pickle that, when loaded, creates a folder: stands in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.timeout(60)
def test_folder_writers_can_run_code_in_pickle_consumers_not_json_ones(tmp_path):
    """Who can inject what: a file dropped into the folder runs code in a pickle consumer;
    a json consumer cannot load it (BatchReadError: nothing ran, the batch stays in the queue)."""
    for serializer in ("pickle", "json"):
        folder, marker = tmp_path / serializer, tmp_path / f"ran-{serializer}"
        q = turbo_queue.Queue(folder, batch_size=1, serializer=serializer)
        owner = dead_owner()
        name = _naming.BatchName(_naming.READY, 1, 1, 1, owner).name()
        (folder / name).write_bytes(_batch_data([_Payload(str(marker))], str(owner)))
        q.close()
        if serializer == "pickle":
            got = drain(q)
            assert marker.is_dir()  # the injected code ran in the consumer
            assert got == [None]
        else:
            with q.consumer() as c, pytest.raises(turbo_queue.BatchReadError) as info:
                c.get(timeout=0)
            assert isinstance(info.value.__cause__, UnicodeDecodeError)
            assert not marker.exists()
            assert q.stats()["ready"]["batches"] == 1


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_folder_owned_by_another_user_is_refused_with_pickle(tmp_path):
    folder = tmp_path / "q"
    folder.mkdir(mode=0o700)
    os.chown(folder, fw.NOBODY, fw.NOBODY)  # mode 0700, but nobody can write there
    with pytest.raises(PermissionError) as info:
        turbo_queue.Queue(folder)
    assert str(folder) in str(info.value) and "another user" in str(info.value)
    for kwargs in ({"serializer": "json"}, {"allow_shared": True}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            turbo_queue.Queue(folder, **kwargs)
        assert any("another user" in str(w.message) for w in caught), kwargs


def test_failed_seal_rename_leaves_no_loading_copy_and_retries_exactly_once(tmp_path, monkeypatch):
    # If the rename that seals a batch fails, the items stay buffered for a
    # retry; a loading copy left behind would be sealed again by recovery once
    # the producer is gone, delivering the batch twice.
    q = turbo_queue.Queue(tmp_path / "q", batch_size=10, max_batch_age=None)
    real_rename = os.rename
    failures = []

    def flaky_rename(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)).startswith("r_") and not failures:
            failures.append(dst)
            raise OSError(errno.EIO, "injected I/O error")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", flaky_rename)
    p = q.producer()
    p.put_many(list(range(5)))
    with pytest.raises(OSError, match="cannot seal batch") as info:
        p.flush()
    assert info.value.filename and os.path.basename(info.value.filename).startswith("r_")
    assert [n for n in os.listdir(q.path) if n.startswith("l_")] == []
    assert p.pending == 5
    p.flush()  # the retry seals the same items once
    p.close()
    monkeypatch.setattr(os, "rename", real_rename)
    q.recover()
    assert drain(q) == list(range(5))
