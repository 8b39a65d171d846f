"""Batch file format: version 1 against version 2, encode, decode and size.

Reproduce with::

    python -m bench.micro.batch_format            # timeit table: CPU us per batch, file size vs payload
    python -m bench.micro.batch_format --putget   # bench.micro.speed_putget with each format, side by side (pyperf)
    python -m bench.micro.batch_format --putget --fast

Cases: 1000 pickled ~160-byte items in one run (items put one by one), in ten
runs of 100 (put one by one between put_many calls), as one put_many list,
and a batch of 100 items in one run.  Each figure is the least CPU time
(``time.process_time``, so other processes on a shared machine do not count)
of several repeats, cyclic GC on.

Version 1 is frozen here (``encode_v1``, ``decode_v1``, ``decode_items_v1``:
the code turbo_queue wrote and read it with) for this comparison and for the
tests, which need real version-1 files next to version-2 ones.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sqlite3
import sys
import threading
import time
import timeit
from array import array
from functools import partial
from typing import Any

from turbo_queue import _batch

# -- version 1, frozen ---------------------------------------------------------

V1_SCHEMA = (
    "PRAGMA auto_vacuum=FULL;"
    f"PRAGMA application_id={_batch.APPLICATION_ID};"
    "PRAGMA user_version=1;"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
    "CREATE TABLE records(id INTEGER PRIMARY KEY, many INTEGER NOT NULL, lengths BLOB, data BLOB NOT NULL);"
)


class _Conn(threading.local):
    def __init__(self, schema: str | None) -> None:
        self.pid, self.con, self.schema = -1, None, schema

    def get(self) -> sqlite3.Connection:
        if self.pid != os.getpid() or self.con is None:
            self.con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            if self.schema:
                self.con.executescript(self.schema)
            self.pid = os.getpid()
        return self.con


_v1_writer = _Conn(V1_SCHEMA)
_v1_reader = _Conn(None)


def encode_v1(records, count: int, serializer: str, owner: str, created_ns: int) -> bytes:
    """A version-1 batch file, byte for byte as turbo_queue wrote them."""
    con = _v1_writer.get()
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


def decode_v1(data: bytes, path: str) -> tuple[dict[str, Any], list]:
    """The version-1 reader (v1 files only; errors simplified to BatchFormatError)."""
    if not data.startswith(b"SQLite format 3\x00"):
        raise _batch.BatchFormatError("not a SQLite file", path)
    con = _v1_reader.get()
    try:
        con.deserialize(data)
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if app_id != _batch.APPLICATION_ID or version != 1:
            raise _batch.BatchFormatError(f"not a version-1 batch ({app_id}, {version})", path)
        meta = dict(con.execute("SELECT key, value FROM meta"))
        records = con.execute("SELECT many, lengths, data FROM records ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:
        raise _batch.BatchFormatError(f"corrupt batch file: {exc}", path) from exc
    return meta, records


def decode_items_v1(records, loads, loads_many) -> list[Any]:
    items: list[Any] = []
    for many, lengths, data in records:
        if many:
            items.extend(loads_many(data))
            continue
        offset = 0
        for n in _batch.array_from(lengths):
            end = offset + n
            items.append(loads(data[offset:end]))
            offset = end
        if offset != len(data):
            raise ValueError("record lengths do not add up to its data")
    return items


# -- the timeit table ------------------------------------------------------------

def make_item(i: int) -> dict:
    """About 160 bytes pickled."""
    return {"seq": i, "host": f"web-{i % 64:02d}", "level": "INFO",
            "msg": f"user {i * 7919 % 100000} bought {i % 7 + 1} items", "path": f"/api/v1/orders/{i}",
            "trace": f"{i * 2654435761 % 2**64:016x}", "status": 200}


def run_record(encoded: list[bytes]) -> tuple[int, bytes, bytes]:
    return (0, _batch.lengths_bytes(array("Q", map(len, encoded))), b"".join(encoded))


def cases() -> dict[str, list]:
    items = [make_item(i) for i in range(1000)]
    enc = [pickle.dumps(x, pickle.HIGHEST_PROTOCOL) for x in items]
    return {
        "1000 items, 1 run": [run_record(enc)],
        "1000 items, 10 runs": [run_record(enc[s:s + 100]) for s in range(0, 1000, 100)],
        "1000 items, put_many": [(1, None, pickle.dumps(items, pickle.HIGHEST_PROTOCOL))],
        "100 items, 1 run": [run_record(enc[:100])],
    }


def _cpu_us(fn, number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=time.process_time)) / number * 1e6


FORMATS = {
    1: (encode_v1, decode_v1, decode_items_v1),
    2: (_batch.encode_batch, _batch.decode_batch, _batch.decode_items),
}


def table(rounds: int = 3) -> None:
    best: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):  # rounds interleave the formats, so drift hits both alike
        for name, records in cases().items():
            count = sum(len(r[1]) // 8 if not r[0] else 1000 for r in records)
            payload = sum(len(r[2]) + len(r[1] or b"") for r in records)
            number = 200 if count >= 1000 else 1000
            for version, (enc, dec, items) in FORMATS.items():
                data = enc(records, count, "pickle", "host:123:0:abcdef", 0)
                _meta, recs = dec(data, "x")
                e = _cpu_us(partial(enc, records, count, "pickle", "host:123:0:abcdef", 0), number)
                d = _cpu_us(partial(dec, data, "x"), number)
                i = _cpu_us(partial(items, recs, pickle.loads, pickle.loads), max(20, number // 10))
                prev = best.get((name, version), [float("inf")] * 3)
                best[name, version] = [min(prev[0], e), min(prev[1], d), min(prev[2], i),
                                       len(data) / payload - 1]
    print(f"{'case':<22} {'ver':>3} {'encode':>8} {'decode':>8} {'items':>8} {'size':>7}   (CPU us per batch)")
    for (name, version), (e, d, i, size) in best.items():
        print(f"{name:<22} {version:>3} {e:8.1f} {d:8.1f} {i:8.1f} {size * 100:+6.1f}%")


# -- speed_putget with either format ------------------------------------------------

def putget() -> None:
    """bench.micro.speed_putget's put+get pairs, version 1 and version 2 files in one pyperf run."""
    import pyperf

    from bench.micro import speed_putget as sp
    from turbo_queue import _consumer, _producer

    def with_format(version: int, batch: int, many: bool):
        enc, dec, items = FORMATS[version]
        saved = _producer.encode_batch, _consumer.decode_batch, _consumer.decode_items

        def bench(loops: int) -> float:
            # The pair is forked from here, so both children use this format.
            _producer.encode_batch, _consumer.decode_batch, _consumer.decode_items = enc, dec, items
            try:
                return sp.bench_turbo(loops, batch, many)
            finally:
                _producer.encode_batch, _consumer.decode_batch, _consumer.decode_items = saved
        return bench

    def add_args(cmd, args):
        cmd.append("--putget")

    runner = pyperf.Runner(processes=6, values=3, warmups=1, min_time=0.2, add_cmdline_args=add_args,
                           program_args=("-m", "bench.micro.batch_format"))
    runner.argparser.add_argument("--putget", action="store_true")
    results = []
    for batch in (100, 1000):
        results.append(runner.bench_time_func(f"mpq-batch-{batch}", sp.bench_mpq_batch, batch))
        for version in (1, 2):
            results.append(runner.bench_time_func(f"turbo-put-v{version}-{batch}", with_format(version, batch, False)))
            results.append(runner.bench_time_func(f"turbo-put_many-v{version}-{batch}",
                                                  with_format(version, batch, True)))
    if runner.args.worker or any(r is None for r in results):
        return
    sp.print_ratios(pyperf.BenchmarkSuite(results))


def main() -> None:
    if "--putget" in sys.argv:
        putget()
        return
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    table()


if __name__ == "__main__":
    main()
