"""Bad arguments, unencodable items, unusable paths and files that are not batches."""

from __future__ import annotations

import os
import pickle
import sqlite3
from collections import Counter

import pytest
from _workers import batch_bytes, dead_owner, drain, queue_files, write_batch_file

import turbo_queue
from turbo_queue import _naming
from turbo_queue._errors import BatchFormatError, Closed, Empty

# -- arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, name", [
    ({"batch_size": 0}, "batch_size"), ({"batch_size": -3}, "batch_size"), ({"batch_size": 1.5}, "batch_size"),
    ({"batch_size": "10"}, "batch_size"), ({"batch_size": True}, "batch_size"), ({"batch_size": None}, "batch_size"),
    ({"max_ready": 0}, "max_ready"), ({"max_ready": -1}, "max_ready"), ({"max_ready": 2.0}, "max_ready"),
    ({"max_batch_age": 0}, "max_batch_age"), ({"max_batch_age": -1.0}, "max_batch_age"),
    ({"max_batch_age": "1"}, "max_batch_age"), ({"max_batch_age": float("nan")}, "max_batch_age"),
    ({"recover_interval": 0}, "recover_interval"),
    ({"serializer": "yaml"}, "serializer"), ({"serializer": 42}, "serializer"), ({"serializer": object()}, "serializer"),
    ({"capture": "later"}, "capture"), ({"capture": None}, "capture"),
])
def test_bad_queue_arguments(qpath, kwargs, name):
    with pytest.raises(ValueError, match=name):
        turbo_queue.Queue(qpath, **kwargs)
    assert not qpath.exists()  # nothing created for a refused queue


def test_unknown_serializer_lists_the_known_ones(qpath):
    with pytest.raises(ValueError) as info:
        turbo_queue.Queue(qpath, serializer="yaml")
    for known in ("pickle", "json", "raw"):
        assert known in str(info.value)


@pytest.mark.parametrize("timeout", [-1, -0.001, float("-inf"), float("nan")])
def test_negative_timeouts(qpath, timeout):
    q = turbo_queue.Queue(qpath, batch_size=2)
    with q.producer() as p, q.consumer() as c:
        with pytest.raises(ValueError, match="timeout"):
            p.put(1, timeout=timeout)
        with pytest.raises(ValueError, match="timeout"):
            p.put_many([1], timeout=timeout)
        with pytest.raises(ValueError, match="timeout"):
            p.flush(timeout=timeout)
        with pytest.raises(ValueError, match="timeout"):
            c.get(timeout=timeout)
        with pytest.raises(ValueError, match="timeout"):
            c.get_batch(timeout=timeout)
        with pytest.raises(ValueError, match="timeout"):
            with c.batch(timeout=timeout):
                pass
        assert p.pending == 0
        # Checked even when a get would not need to wait.
        p.put_many([1, 2, 3])
        assert c.get(timeout=0) == 1
        with pytest.raises(ValueError, match="timeout"):
            c.get(timeout=timeout)
        with pytest.raises(ValueError, match="timeout"):
            c.get_batch(timeout=timeout)
        assert c.get(timeout=0) == 2
    assert drain(q) == [3]


# -- items the serializer cannot encode ------------------------------------------------------


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("no pickling me")


@pytest.mark.parametrize("serializer, good, bad, typename", [
    ("pickle", ["a", 1], lambda: None, "function"),
    ("pickle", ["a", 1], Unpicklable(), "Unpicklable"),
    ("json", ["a", 1], {1, 2}, "set"),
    ("json", ["a", 1], b"bytes", "bytes"),
    ("json", ["a", 1], object(), "object"),
    ("raw", ["a", b"b"], 5, "int"),
    ("raw", ["a", b"b"], None, "NoneType"),
    ("raw", ["a", b"b"], ["list"], "list"),
])
def test_unencodable_item(qpath, serializer, good, bad, typename):
    # Encoded at put: the refusal comes from the put itself.  The default
    # capture="seal" reports it at seal: tests/test_put_capture.py.
    q = turbo_queue.Queue(qpath, batch_size=100, serializer=serializer, capture="put")
    p = q.producer()
    p.put(good[0])
    with pytest.raises(TypeError, match=typename):
        p.put(bad)
    assert p.pending == 1
    with pytest.raises(TypeError, match=typename):
        p.put_many([good[1], bad, good[1]])
    assert p.pending == 1  # nothing of the refused chunk is queued
    # Still usable:
    p.put(good[1])
    p.put_many(good)
    p.flush()
    assert p.pending == 0
    assert len(queue_files(qpath)) == 1
    # The sealed batch holds exactly the good items.
    assert turbo_queue.read_batch(qpath / queue_files(qpath)[0], serializer) == [good[0], good[1], *good]
    p.close()
    assert drain(q) == [good[0], good[1], *good]


def test_unencodable_item_in_a_later_chunk_keeps_earlier_batches(qpath):
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=None)
    with q.producer() as p:
        with pytest.raises(TypeError, match="function"):
            p.put_many([1, 2, 3, 4, lambda: 0, 6])
        # The first chunk (a full batch) was sealed; the second one was refused whole.
        assert p.pending == 0
        p.put("after")
    assert drain(q) == [1, 2, 3, "after"]


class BadCustom:
    """dumps returns str, not bytes: a broken custom serializer."""

    def dumps(self, obj):
        return str(obj)

    def loads(self, data):
        return data


def test_custom_serializer_not_returning_bytes(qpath):
    q = turbo_queue.Queue(qpath, serializer=BadCustom())
    p = q.producer()
    with pytest.raises(TypeError, match="bytes"):
        p.put(1)
    with pytest.raises(TypeError, match="bytes"):
        p.put_many([1])
    assert p.pending == 0
    p.close()  # nothing broken is left to seal


# -- paths that cannot be used -----------------------------------------------------------


def test_path_under_a_regular_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    path = f / "q"
    with pytest.raises(OSError) as info:
        turbo_queue.Queue(path)
    assert isinstance(info.value, NotADirectoryError)
    assert str(path) in str(info.value)


def test_path_is_a_regular_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OSError) as info:
        turbo_queue.Queue(f)
    assert str(f) in str(info.value)
    assert f.read_text() == "x"


@pytest.mark.parametrize("path", ["/proc/self", "/proc/self/turbo_queue_test", "/proc/1/fdinfo"])
def test_path_that_cannot_be_written(path):
    # /proc refuses new files even to root.
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    with pytest.raises(OSError) as info:
        turbo_queue.Queue(path)
    assert path in str(info.value)


# -- files named like batches that are not readable batches -------------------------------


def _version_99(items) -> bytes:
    con = sqlite3.connect(":memory:")
    con.deserialize(batch_bytes(items))
    con.execute("PRAGMA user_version=99")
    data = con.serialize()
    con.close()
    return data


def _foreign_sqlite() -> bytes:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    data = con.serialize()
    con.close()
    return data


def _truncated(items) -> bytes:
    data = batch_bytes(items)
    return data[: len(data) // 2]


BAD_FILES = {
    "garbage": lambda: os.urandom(3000),
    "zero-byte": lambda: b"",
    "text": lambda: b"hello, not a batch\n" * 10,
    "truncated": lambda: _truncated([("big", i, "x" * 500) for i in range(40)]),
    "header-only": lambda: batch_bytes(["x"])[:100],
    "foreign-sqlite": _foreign_sqlite,
    "format-v99": lambda: _version_99(["from", "the", "future"]),
}


def _undecodable() -> bytes:
    from array import array

    from turbo_queue import _batch

    data = b"\x80\x05not a pickle"
    return _batch.encode_batch([(0, _batch.lengths_bytes(array("Q", [len(data)])), data)], 1, "pickle",
                               "x-1-0-00000000", 0)


def test_undecodable_item_is_not_set_aside_but_raised_and_dead_lettered_at_max_deliveries(qpath):
    """A good batch whose item cannot be loaded is a fault of the consumer side, not of the file:
    it goes back to ready (counted) and BatchReadError names it; with max_deliveries it ends in dead/."""
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None, max_deliveries=2)
    bad = write_batch_file(qpath, _naming.READY, ["?"], dead_owner(pid=1), seal_ns=1, data=_undecodable())
    with q.producer() as p:
        p.put_many(range(4))
    with q.consumer() as c:
        with pytest.raises(turbo_queue.BatchReadError) as info:
            c.get(timeout=0)
        assert isinstance(info.value.__cause__, pickle.UnpicklingError)
        assert info.value.path == str(qpath / bad.replace(".tqb", "_d1.tqb"))
        assert "back in ready" in str(info.value)
        with pytest.raises(turbo_queue.BatchReadError, match="dead"):
            c.get(timeout=0)  # the second delivery without an ack reaches max_deliveries=2
        assert [c.get(timeout=0) for _ in range(4)] == [0, 1, 2, 3]  # the consumer stays usable
    assert not (qpath / "aside").exists()
    assert q.stats()["dead"] == {"batches": 1, "events": 1}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_unreadable_ready_file_is_set_aside(qpath, kind):
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None)
    owner = dead_owner(pid=1)  # pid 1 is alive: only the name matters for ready files
    data = BAD_FILES[kind]()
    # Named older than the good batches, so consumers meet it first.
    bad = write_batch_file(qpath, _naming.READY, ["?"], owner, seal_ns=1, data=data)
    with q.producer() as p:
        p.put_many(range(6))
    assert drain(q) == list(range(6))
    aside = os.listdir(qpath / "aside")
    assert len(aside) == 1 and aside[0].startswith(bad + ".")
    assert (qpath / "aside" / aside[0]).read_bytes() == data  # moved whole, never deleted
    assert queue_files(qpath) == []
    assert q.stats()["aside"] == 1
    if kind == "format-v99":
        assert ".format-v99." in aside[0]
        with pytest.raises(BatchFormatError) as info:
            turbo_queue.read_batch(qpath / "aside" / aside[0])
        assert info.value.reason == "format-v99"
        assert "99" in str(info.value)


def test_many_bad_files_and_good_batches(qpath):
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=None)
    owner = dead_owner(pid=1)
    bad = []
    for k, make in enumerate(BAD_FILES.values()):
        bad.append(write_batch_file(qpath, _naming.READY, ["?"], owner, seal_ns=10 + k * 10**9, seq=k,
                                    data=make()))
    (qpath / "r_garbage.tqb").write_bytes(b"junk")
    (qpath / "r_dir.tqb").mkdir()
    with q.producer() as p:
        p.put_many(range(9))
        for i in range(9, 20):
            p.put(i)
    q.close()
    got = []
    with q.consumer() as c1, q.consumer() as c2:
        while True:
            try:
                got.extend(c1.get_batch(timeout=0))
                got.extend(c2.get_batch(timeout=0))
            except (Empty, Closed):
                break
        got.extend(c1)
    assert Counter(got) == Counter(range(20))
    aside = os.listdir(qpath / "aside")
    assert len(aside) == len(bad) + 2
    for name in bad + ["r_garbage.tqb", "r_dir.tqb"]:
        assert any(a.startswith(name + ".") for a in aside), name


def test_long_stray_name_does_not_stop_consumers(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2)
    stray = "r_" + "x" * 240 + ".tqb"  # a legal file name, too long to claim under a longer name
    (qpath / stray).write_bytes(b"junk")
    with q.producer() as p:
        p.put_many([1, 2])
    q.close()
    with q.consumer() as c:
        assert list(c) == [1, 2]
    assert not (qpath / stray).exists()
    assert len(os.listdir(qpath / "aside")) == 1


def test_read_batch_rejects_files_that_are_not_batches(tmp_path):
    for kind, make in BAD_FILES.items():
        f = tmp_path / kind
        f.write_bytes(make())
        with pytest.raises(BatchFormatError) as info:
            turbo_queue.read_batch(f)
        assert str(f) in str(info.value), kind
    good = tmp_path / "good"
    good.write_bytes(batch_bytes([1, "two", None]))
    assert turbo_queue.read_batch(good) == [1, "two", None]


def test_unreadable_loading_file_of_dead_producer_set_aside(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2)
    owner = dead_owner()
    name = write_batch_file(qpath, _naming.LOADING, ["a", "b"], owner, data=os.urandom(100))
    report = q.recover()
    assert report.set_aside and report.set_aside[0][0] == name
    assert not report.sealed
    assert queue_files(qpath) == []
    assert len(os.listdir(qpath / "aside")) == 1


@pytest.mark.parametrize("name", ["l_junk.tqb", "c_junk.tqb", "c_vm-1-0-00000000__x.tqb"])
def test_badly_named_loading_and_claimed_files_set_aside_by_recovery(qpath, name):
    q = turbo_queue.Queue(qpath)
    (qpath / name).write_bytes(b"junk")
    report = q.recover()
    assert [n for n, _ in report.set_aside] == [name]
    assert (qpath / "aside").is_dir() and len(os.listdir(qpath / "aside")) == 1


def test_unrelated_files_are_left_alone(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1)
    for name in ("notes.txt", "r_x.tmp", "l_x", ".hidden"):
        (qpath / name).write_text("mine")
    with q.producer() as p:
        p.put(1)
    q.close()
    assert drain(q) == [1]
    assert not q.recover()
    for name in ("notes.txt", "r_x.tmp", "l_x", ".hidden"):
        assert (qpath / name).read_text() == "mine"
    assert q.stats()["other_files"] == 4


def test_read_batch_never_lets_the_file_choose_its_serializer(qpath):
    # A batch written with pickle must not be loaded by a caller who asked for
    # json just because the file says "pickle" (that would run its code).
    q = turbo_queue.Queue(qpath, batch_size=10)
    with q.producer() as p:
        p.put({"a": 1})
    name = queue_files(qpath)[0]
    with pytest.raises(turbo_queue.BatchFormatError, match="'pickle' serializer, not 'json'"):
        turbo_queue.read_batch(qpath / name, serializer="json")
    assert turbo_queue.read_batch(qpath / name) == [{"a": 1}]
