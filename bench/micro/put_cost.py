"""What one ``put`` costs on its hot path, against the batched baseline's append.

Reproduce with::

    python -m bench.micro.put_cost -o put_cost.json
    python -m bench.micro.put_cost --fast

Three variants, each timed per item over runs of 1,000 puts of one small
dict (the item is made beforehand: only the handing over is timed):

* ``list-append``: ``buf.append(event)``, what ``bench.micro.speed_putget``'s
  ``mpq-batch`` producer does per event before it puts the list;
* ``list-producer``: the harness's ``ListProducer.put`` (a method call, the
  append and the test for a full list), what the harness's ``mpq-batch``,
  ``faster-fifo`` and ``turbo-many`` producers do per event;
* ``turbo-put``: ``turbo_queue.Producer.put`` on an open batch that never
  fills (``batch_size`` far above the run), so no seal is timed: the path
  every item but the first and last of a batch takes;
* ``turbo-put-sealing-B``: ``put`` of B distinct ~300-byte log records
  (``speed_putget``'s events, made beforehand) into a queue with
  ``batch_size=B``, the B-th put sealing the batch (serializing, SQLite,
  writing and renaming the file): the producer's whole CPU per item, less
  making the event.  The sealed file is removed untimed (no consumer).

To hold one checkout against another, run each with its tree first on the
path, in the workers too (pyperf's workers run this file as a script, so
without it they import the installed package)::

    PYTHONPATH=OLD_TREE python -m bench.micro.put_cost --inherit-environ PYTHONPATH -o old.json
    PYTHONPATH=. python -m bench.micro.put_cost --inherit-environ PYTHONPATH -o new.json
    python -m pyperf compare_to old.json new.json --table
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import pyperf

RUN = 1_000


def bench_list_append(loops: int) -> float:
    event = {"seq": 1, "msg": "x"}
    total = 0.0
    for _ in range(loops):
        buf: list = []
        append = buf.append
        t0 = time.perf_counter()
        for _ in range(RUN):
            append(event)
        total += time.perf_counter() - t0
    return total


def bench_list_producer(loops: int) -> float:
    from bench.measuring.backends.base import ListProducer

    class _Keep(ListProducer):
        def send(self, events: list) -> None:  # never reached: the size is above the run
            raise AssertionError

    event = {"seq": 1, "msg": "x"}
    total = 0.0
    for _ in range(loops):
        put = _Keep(RUN * 10).put
        t0 = time.perf_counter()
        for _ in range(RUN):
            put(event)
        total += time.perf_counter() - t0
    return total


def bench_turbo_put(loops: int) -> float:
    import turbo_queue

    event = {"seq": 1, "msg": "x"}
    tmp = tempfile.mkdtemp(prefix="tq-putcost-")
    try:
        q = turbo_queue.Queue(f"{tmp}/q", batch_size=10 ** 9, max_batch_age=None)
        p = q.producer()
        put = p.put
        put(event)  # the first item of a batch takes the longer path (a stat, the clock)
        total = 0.0
        for _ in range(loops):
            t0 = time.perf_counter()
            for _ in range(RUN):
                put(event)
            total += time.perf_counter() - t0
            if p.pending >= 100 * RUN:
                p.flush()  # untimed: keeps the open batch (and its memory) bounded
                put(event)
        p.close()
        return total
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_turbo_put_sealing(loops: int, batch: int) -> float:
    import turbo_queue
    from bench.micro.speed_putget import make_event
    from turbo_queue import _naming

    events = [make_event(i) for i in range(batch)]
    tmp = tempfile.mkdtemp(prefix="tq-putcost-")
    try:
        path = f"{tmp}/q"
        q = turbo_queue.Queue(path, batch_size=batch, max_batch_age=None)
        p = q.producer()
        put = p.put
        total = 0.0
        for _ in range(loops):
            t0 = time.perf_counter()
            for event in events:
                put(event)
            total += time.perf_counter() - t0
            for entry in os.scandir(path):  # untimed: no consumer, so the folder is kept small by hand
                if entry.name.startswith(_naming.READY):
                    os.unlink(entry.path)
        p.close()
        return total
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = "seconds per item put (turbo-put-sealing-B: its share of the seal included)"
    runner.bench_time_func("list-append", bench_list_append, inner_loops=RUN)
    runner.bench_time_func("list-producer", bench_list_producer, inner_loops=RUN)
    runner.bench_time_func("turbo-put", bench_turbo_put, inner_loops=RUN)
    for batch in (100, 1000):
        runner.bench_time_func(f"turbo-put-sealing-{batch}", bench_turbo_put_sealing, batch, inner_loops=batch)


if __name__ == "__main__":
    sys.exit(main())
