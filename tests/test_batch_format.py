"""The batch file format: version 2 is written, versions 1 and 2 are read.

Version-1 files come from the frozen v1 writer (bench/micro/batch_format.py) and
from tests/data/batch_v1.tqb, written by the version-1 code itself.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import sqlite3
import subprocess
from array import array
from pathlib import Path

import pytest
from _workers import dead_owner, queue_files

import turbo_queue
from bench.micro import batch_format as v1
from turbo_queue import _batch, _naming
from turbo_queue._errors import BatchFormatError, Closed, Empty

DATA = Path(__file__).parent / "data"
V1_FILE_ITEMS = [
    {"seq": 0, "v1": True, "msg": "one by one 0"}, {"seq": 1, "v1": True, "msg": "one by one 1"},
    {"seq": 2, "v1": True, "msg": "one by one 2"}, {"seq": 3, "v1": True, "msg": "put_many 3"},
    {"seq": 4, "v1": True, "msg": "put_many 4"}, {"seq": 5, "v1": True, "msg": "put_many 5"},
    "tail", b"bytes", None,
]


def run(items) -> tuple[int, bytes, bytes]:
    """A record of items put one by one."""
    enc = [pickle.dumps(x, pickle.HIGHEST_PROTOCOL) for x in items]
    return (0, _batch.lengths_bytes(array("Q", map(len, enc))), b"".join(enc))


def records_for(items) -> list:
    """Items as a batch's records: a run, a put_many list, a run."""
    third = max(1, len(items) // 3)
    return [run(items[:third]), (1, None, pickle.dumps(items[third:2 * third])), run(items[2 * third:])]


def batch_v1(items, owner: str = "x-1-0-00000000") -> bytes:
    return v1.encode_v1(records_for(items), len(items), "pickle", owner, 0)


def batch_v2(items, owner: str = "x-1-0-00000000") -> bytes:
    return _batch.encode_batch(records_for(items), len(items), "pickle", owner, 0)


def header(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 4], "big")


def put_ready(folder: Path, seq: int, data: bytes, count: int) -> str:
    """Drop a ready batch file, named so batches are claimed in ``seq`` order."""
    name = _naming.BatchName(_naming.READY, 10**18 + seq, seq, count, dead_owner(pid=1)).name()
    (folder / name).write_bytes(data)
    return name


def drain(q: turbo_queue.Queue) -> list[list]:
    batches = []
    with q.consumer() as c:
        while True:
            try:
                batches.append(c.get_batch(timeout=0))
            except (Empty, Closed):
                return batches


def test_producers_write_version_2():
    data = batch_v2(["a", "b", "c"])
    assert turbo_queue.FORMAT_VERSION == 2
    assert header(data, 60) == 2  # user_version
    assert header(data, 68) == _batch.APPLICATION_ID
    assert header(batch_v1(["a", "b", "c"]), 60) == 1  # the fixture really writes version 1


def test_committed_v1_file_is_read():
    path = DATA / "batch_v1.tqb"
    data = path.read_bytes()
    assert header(data, 60) == 1
    assert turbo_queue.read_batch(path) == V1_FILE_ITEMS
    meta, _records = _batch.decode_batch(data, str(path))
    assert meta == {"serializer": "pickle", "count": 9, "owner": "v1-host:4242:fixture",
                    "created_ns": 1764662400000000000}


def test_mixed_folder_drains_in_order_through_a_consumer(qpath):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    expected = []
    for seq in range(1, 9):
        items = [f"b{seq}-{i}" for i in range(seq * 3)]
        # Old and new files alternate, so one consumer reads v1, v2, v1, ...
        data = batch_v1(items) if seq % 2 else batch_v2(items)
        put_ready(qpath, seq, data, len(items))
        expected.append(items)
    put_ready(qpath, 9, (DATA / "batch_v1.tqb").read_bytes(), len(V1_FILE_ITEMS))
    expected.append(V1_FILE_ITEMS)
    with q.producer() as p:  # and this build's producer seals the newest batch
        p.put_many(["new-0", "new-1"])
    expected.append(["new-0", "new-1"])
    assert drain(q) == expected
    assert queue_files(qpath) == []
    assert not (qpath / "aside").exists() or os.listdir(qpath / "aside") == []


@pytest.mark.parametrize("how", ["get", "iterate", "get_batch"])
def test_folder_of_every_layout_drains_in_order_item_by_item(qpath, how):
    """v1 files, v2 files of runs, and what this build's producers write in
    each capture mode (one list per run at seal; item runs at put; put_many
    lists between them), all in one folder, read by one consumer per item."""
    q = turbo_queue.Queue(qpath, batch_size=4, max_batch_age=None)
    expected = []
    for seq in (1, 2):
        items = [f"old{seq}-{i}" for i in range(5)]
        put_ready(qpath, seq, batch_v1(items) if seq == 1 else batch_v2(items), len(items))
        expected += items
    put_ready(qpath, 3, (DATA / "batch_v1.tqb").read_bytes(), len(V1_FILE_ITEMS))
    expected += V1_FILE_ITEMS
    for capture in ("seal", "put"):
        q_capture = turbo_queue.Queue(qpath, batch_size=4, max_batch_age=None, capture=capture)
        with q_capture.producer() as p:
            items = [{"capture": capture, "i": i} for i in range(11)]
            p.put(items[0])
            p.put_many(items[1:3])  # a list record between runs, in one batch
            for item in items[3:]:
                p.put(item)  # full batches of one run each, and a partial one sealed at close
        expected += items
    got = []
    with q.consumer() as c:
        if how == "iterate":
            q.close()
            got = list(c)
        elif how == "get":
            while True:
                try:
                    got.append(c.get(timeout=0))
                except Empty:
                    break
        else:
            while True:
                try:
                    got += c.get_batch(timeout=0)
                except Empty:
                    break
    assert got == expected
    assert queue_files(qpath) == []
    assert not (qpath / "aside").exists() or os.listdir(qpath / "aside") == []


def test_one_consumer_alternating_versions_reads_each_file_right():
    """v1 and v2 files share a schema cookie but not root pages: a reader that
    reused one connection's cached statements for both read the wrong pages."""
    for k in range(4):
        for make in (batch_v1, batch_v2):
            items = [f"{make.__name__}-{k}-{i}" for i in range(5 + k)]
            meta, records = _batch.decode_batch(make(items), "x")
            assert meta["count"] == len(items)
            assert _batch.decode_items(records, pickle.loads, pickle.loads) == items


def test_unknown_version_is_set_aside_with_its_version_named(qpath, caplog):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    con = sqlite3.connect(":memory:")
    con.deserialize(batch_v2(["from", "the", "future"]))
    con.execute("PRAGMA user_version=3")  # a valid SQLite file of a format this build does not know
    v3 = con.serialize()
    con.close()
    put_ready(qpath, 1, batch_v1(["old"]), 1)
    bad = put_ready(qpath, 2, v3, 3)
    put_ready(qpath, 3, batch_v2(["new"]), 1)
    with caplog.at_level(logging.ERROR, logger="turbo_queue"):
        assert drain(q) == [["old"], ["new"]]
    aside = os.listdir(qpath / "aside")
    assert len(aside) == 1 and aside[0].startswith(bad + ".format-v3.")
    assert (qpath / "aside" / aside[0]).read_bytes() == v3  # moved whole, never deleted
    assert any("version 3" in r.getMessage() for r in caplog.records)
    with pytest.raises(BatchFormatError) as info:
        turbo_queue.read_batch(qpath / "aside" / aside[0])
    assert info.value.reason == "format-v3"
    assert "format version 3" in str(info.value) and "1, 2" in str(info.value)


def test_v2_file_opens_with_plain_sql_and_shows_the_items_bytes(tmp_path):
    items = [{"n": i, "text": "x" * i} for i in range(12)]
    path = tmp_path / "batch.tqb"
    path.write_bytes(batch_v2(items, owner="host:1:0:abc"))
    # What a user does in the sqlite3 shell, through the sqlite3 module: no turbo_queue code.
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("PRAGMA user_version").fetchone() == (2,)
        assert con.execute("PRAGMA application_id").fetchone() == (_batch.APPLICATION_ID,)
        assert con.execute("PRAGMA auto_vacuum").fetchone() == (0,)
        assert dict(con.execute("SELECT key, value FROM meta")) == {
            "serializer": "pickle", "count": 12, "owner": "host:1:0:abc", "created_ns": 0}
        rows = con.execute("SELECT many, lengths, data FROM records ORDER BY id").fetchall()
        first = pickle.dumps(items[0], pickle.HIGHEST_PROTOCOL)
        # The first item's bytes, cut out in SQL from the first run.
        assert con.execute("SELECT substr(data, 1, ?) FROM records ORDER BY id LIMIT 1",
                           (len(first),)).fetchone() == (first,)
    finally:
        con.close()
    assert [r[0] for r in rows] == [0, 1, 0]
    got = []
    for many, lengths, data in rows:
        if many:
            got += pickle.loads(data)
            continue
        sizes = array("Q")
        sizes.frombytes(lengths)  # little-endian uint64 per item
        offset = 0
        for n in sizes:
            got.append(pickle.loads(data[offset:offset + n]))
            offset += n
    assert got == items


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3 shell on this machine")
def test_v2_file_opens_in_the_sqlite3_shell(tmp_path):
    path = tmp_path / "batch.tqb"
    path.write_bytes(batch_v2([b"raw-bytes"]))
    out = subprocess.run(["sqlite3", "-readonly", str(path), "PRAGMA integrity_check; SELECT value FROM meta "
                          "WHERE key='count'; SELECT hex(data) FROM records ORDER BY id;"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out[:2] == ["ok", "1"]
    assert pickle.dumps(b"raw-bytes", pickle.HIGHEST_PROTOCOL).hex().upper() in out[2:]


def _corruptions(good: bytes) -> dict[str, bytes]:
    page_size = int.from_bytes(good[16:18], "big")
    return {
        "empty": b"",
        "header only": good[:100],
        "half": good[: len(good) // 2],
        "last page missing": good[:-page_size],
        "one byte short": good[:-1],
        "padded": good + b"\0" * page_size,
        "last page zeroed": good[:-page_size] + b"\0" * page_size,
        "records page zeroed": good[:2 * page_size] + b"\0" * page_size + good[3 * page_size:],
        "page size garbled": good[:16] + b"\x00\x03" + good[18:],
    }


@pytest.mark.parametrize("kind", sorted(_corruptions(b"\0" * 100)))
def test_corrupt_or_truncated_v2_file_is_a_batch_format_error(tmp_path, kind):
    items = [f"item-{i}" * 40 for i in range(200)]  # several pages of records
    good = batch_v2(items)
    data = _corruptions(good)[kind]
    assert data != good
    path = tmp_path / "bad.tqb"
    path.write_bytes(data)
    with pytest.raises(BatchFormatError) as info:
        turbo_queue.read_batch(path)
    assert info.value.path == str(path)
    if kind in ("last page missing", "one byte short", "padded"):
        assert "truncated or padded" in str(info.value)


def test_corrupt_v2_file_in_a_queue_is_set_aside_and_the_rest_delivered(qpath):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    good = batch_v2([f"lost-{i}" * 40 for i in range(200)])
    put_ready(qpath, 1, batch_v2(["first"]), 1)
    bad = put_ready(qpath, 2, good[: len(good) // 2], 200)
    put_ready(qpath, 3, batch_v1(["third"]), 1)
    assert drain(q) == [["first"], ["third"]]
    aside = os.listdir(qpath / "aside")
    assert len(aside) == 1 and aside[0].startswith(bad + ".")


def test_page_size_follows_the_data_and_the_file_stays_close_to_its_payload():
    item = pickle.dumps({"k": "v" * 140}, pickle.HIGHEST_PROTOCOL)
    sizes = {}
    for n in (1, 100, 1000, 10000):
        records = [run([{"k": "v" * 140}] * n)]
        data = _batch.encode_batch(records, n, "pickle", "o", 0)
        sizes[n] = int.from_bytes(data[16:18], "big")
        payload = n * (len(item) + 8)
        assert data == _batch.encode_batch(records, n, "pickle", "o", 0)  # no state carried between batches
        if n >= 100:
            # Version 1 carried +15% at 1000 items and +100% at 100.
            assert len(data) <= payload * (1.08 if n >= 1000 else 1.25), (n, len(data), payload)
    assert sizes[1] == 1024 and sizes[100] == 1024
    assert sizes[1] < sizes[1000] < sizes[10000]


def test_a_small_batch_after_a_large_one_carries_none_of_its_pages():
    large = _batch.encode_batch([run(["x" * 200] * 2000)], 2000, "pickle", "o", 0)
    small = _batch.encode_batch([run(["y"])], 1, "pickle", "o", 0)
    assert len(small) < 8192 < len(large)


def test_pickled_run_whose_lengths_do_not_add_up_is_an_error():
    many, lengths, data = run(["a", "b", "c"])
    with pytest.raises(ValueError, match="do not add up"):
        _batch.decode_items([(many, lengths, data + pickle.dumps("extra"))], pickle.loads, pickle.loads)
    with pytest.raises(Exception):  # noqa: B017 - a pickle cut short: whatever pickle raises
        _batch.decode_items([(many, lengths, data[:-3])], pickle.loads, pickle.loads)
    # The same checks on the generic path (a serializer other than pickle).
    with pytest.raises(ValueError, match="do not add up"):
        _batch.decode_items([(many, lengths, data + b"x")], lambda b: pickle.loads(bytes(b)), None)


def test_pickled_items_decode_to_independent_objects():
    """Loaded back to back from one stream, items must still not share objects."""
    shared = {"k": [1, 2]}
    many, lengths, data = run([shared, shared, [shared]])
    a, b, c = _batch.decode_items([(many, lengths, data)], pickle.loads, pickle.loads)
    assert a == b == shared and c == [shared]
    a["k"].append(3)
    assert b == {"k": [1, 2]} and c == [{"k": [1, 2]}]


def test_read_file_returns_the_whole_file_whatever_fstat_said(tmp_path, monkeypatch):
    # read_file asks for the size fstat gives and one byte more; a file
    # that is longer or shorter than that (changed between the two calls)
    # is read to its end, as open().read() would.
    path = tmp_path / "f.tqb"
    data = os.urandom(200_000)
    path.write_bytes(data)
    assert _batch.read_file(str(path)) == data
    (tmp_path / "empty").write_bytes(b"")
    assert _batch.read_file(str(tmp_path / "empty")) == b""
    real_fstat = os.fstat
    for wrong in (10, len(data) - 1, len(data) + 5000):
        def fstat(fd, wrong=wrong):
            st = real_fstat(fd)
            return os.stat_result((*st[:6], wrong, *st[7:]))
        monkeypatch.setattr(os, "fstat", fstat)
        assert _batch.read_file(str(path)) == data, wrong
    monkeypatch.setattr(os, "fstat", real_fstat)
    with pytest.raises(IsADirectoryError):  # the consumer sets such a claimed name aside
        _batch.read_file(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        _batch.read_file(str(tmp_path / "gone"))
