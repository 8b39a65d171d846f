"""What one batch costs, whatever its size: seal, claim, read and ack, in one process.

Reproduce with::

    python -m bench.micro.batch_cost -o batch_cost.json
    python -m bench.micro.batch_cost --fast

A batch's fixed cost (a file made and renamed, a SQLite image built and
read back, a claim, an ack, the watch's events) is paid once per batch: at
``batch_size=100`` it is a large part of the CPU per event, and a
``batch_size="auto"`` queue at a low rate seals batches of a few events, where
it is nearly all of it.  Each variant times one round trip per loop, in one
process, so no wake-up, no waiting and no other process is timed:

* ``turbo-round-trip-B``: ``put`` of B distinct ~300-byte log records (made
  beforehand: the events are not timed) into a queue with ``batch_size=B``,
  the B-th put sealing the batch, then ``get_batch`` on a consumer of the
  same queue (claim, read, decode, unpickle) and its ack (the next
  ``get_batch`` acks the batch before it: the loop's last ack is untimed);
* ``floor-files-B``: the bare file steps of one batch of B events in
  ``bench.micro.speed_putget``'s floor (pickle the list, create and write a
  file, rename it twice, read it back, unpickle, unlink), without making
  the events: what any design with one file per batch pays at the least.

The difference between the two at B=1 is turbo_queue's own cost per batch
(SQLite, names, the watch, the lease, bookkeeping).  To hold one checkout
against another, run each with its tree first on the path, in the workers
too (pyperf's workers run this file as a script)::

    PYTHONPATH=OLD_TREE python -m bench.micro.batch_cost --inherit-environ PYTHONPATH -o old.json
    PYTHONPATH=. python -m bench.micro.batch_cost --inherit-environ PYTHONPATH -o new.json
    python -m pyperf compare_to old.json new.json --table
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import pyperf

BATCHES = (1, 100)


def bench_turbo_round_trip(loops: int, batch: int) -> float:
    import turbo_queue
    from bench.micro.speed_putget import make_event

    events = [make_event(i) for i in range(batch)]
    tmp = tempfile.mkdtemp(prefix="tq-batch-cost-")
    try:
        q = turbo_queue.Queue(os.path.join(tmp, "q"), batch_size=batch, max_batch_age=None)
        with q.producer() as p, q.consumer() as c:
            put, get_batch = p.put, c.get_batch
            t0 = time.perf_counter()
            for _ in range(loops):
                for event in events:
                    put(event)
                got = get_batch(timeout=0)
            elapsed = time.perf_counter() - t0
            if len(got) != batch:
                raise RuntimeError(f"a round trip carried {len(got)} events, not {batch}")
        return elapsed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_floor_files(loops: int, batch: int) -> float:
    from bench.micro.speed_putget import floor_round_trip, make_event

    events = [make_event(i) for i in range(batch)]
    tmp = tempfile.mkdtemp(prefix="tq-batch-floor-")
    try:
        t0 = time.perf_counter()
        for seq in range(loops):
            got = floor_round_trip(tmp, seq, events)
        elapsed = time.perf_counter() - t0
        if len(got) != batch:
            raise RuntimeError(f"the floor carried {len(got)} events, not {batch}")
        return elapsed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    runner = pyperf.Runner(processes=10, values=3, warmups=1)
    runner.metadata["description"] = "seconds per batch: seal, claim, read, ack in one process; lower is better"
    runner.metadata["event_bytes_json"] = 300
    for batch in BATCHES:
        runner.bench_time_func(f"turbo-round-trip-{batch}", bench_turbo_round_trip, batch)
        runner.bench_time_func(f"floor-files-{batch}", bench_floor_files, batch)


if __name__ == "__main__":
    sys.exit(main())
