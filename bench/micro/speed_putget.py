"""CPU per event of put+get, turbo_queue against a batched multiprocessing.Queue.

Reproduce with::

    python -m bench.micro.speed_putget -o results/speed_putget.json
    python -m bench.micro.speed_putget --fast        # a quicker, noisier run

One producer process makes ~300-byte log-record dicts and puts them; one
consumer process gets them.  The value recorded for each benchmark is the CPU
time (user + system, both processes, every thread, making the event and
serializing it included) divided by the number of events, so lower is
better and the figures are comparable across backends.  Variants:

* ``mpq-batch-B``: ``multiprocessing.Queue`` carrying lists of B events (the
  fair batched baseline: what a careful user of the standard library does);
* ``turbo-put-B``: ``turbo_queue`` with ``batch_size=B``, one ``put`` per event
  (the default ``capture="seal"``: each batch serialized with one call at seal);
* ``turbo-put-iter-B``: the same, and the consumer takes one event at a time
  (``for event in consumer``) instead of whole batches;
* ``turbo-put_many-B``: the same queue, events handed over in lists of B with
  ``put_many`` (serialized together, like the batched baseline);
* ``turbo-put-capture_put-B`` (only with ``--capture-put``): one ``put`` per
  event with ``capture="put"`` (each event serialized when accepted);
* ``floor-files-B``: no queue at all, the bare file steps of one batch of B
  events in one process: make the events, pickle the list in one call,
  create and write a file, rename it twice (seal, claim), read it back,
  unpickle, unlink.  What any design with one file per batch pays at the
  least on this file system (no SQLite, no waiting, no wake-up: the
  baseline pays its pipe's wake-ups, this floor none), so a turbo variant
  cannot beat ``floor-files`` and a goal below it is out of reach of the
  design here, not of the code;
* ``floor-sqlite-B``: ``floor-files`` with the pickled list carried in a
  SQLite database, as the design asks of every batch: an empty one-table
  image deserialized, one INSERT, serialize, and on the way back deserialize
  and one SELECT (the ``sqlite3`` module alone, no turbo_queue code).  The
  least a design with one SQLite file per batch pays here, before claims,
  leases, waiting and crash safety.

Consumers take whole batches (``get_batch`` / one list per ``get``) unless
the name says ``iter``.  Cyclic
GC stays on, as users run.  At the end the script prints each turbo variant's
CPU per event as a ratio to ``mpq-batch`` at the same B: the median of the
per-value ratios with their min-max (values are paired by position, each
pair measured in the same pyperf worker order).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

import pyperf

EVENTS_PER_LOOP = 1


def make_event(i: int) -> dict:
    """A ~300-byte (as JSON) log record, 10 fields, different per event."""
    return {
        "ts": time.time(),
        "seq": i,
        "host": f"web-{i % 64:02d}.eu-west-1.internal",
        "level": "INFO" if i % 10 else "WARN",
        "service": "checkout",
        "msg": f"user {i * 7919 % 100000} completed purchase of {i % 7 + 1} items",
        "latency_ms": (i % 1000) / 7.0,
        "status": 200 if i % 50 else 503,
        "path": f"/api/v1/orders/{i}",
        "trace_id": f"{i * 2654435761 % 2**64:016x}",
    }


# -- producer/consumer bodies: each returns its own CPU seconds -------------

def _mpq_producer(q, n, batch, out):
    t0 = time.process_time()
    buf = []
    for i in range(n):
        buf.append(make_event(i))
        if len(buf) == batch:
            q.put(buf)
            buf = []
    if buf:
        q.put(buf)
    q.put(None)
    q.close()
    q.join_thread()  # the feeder thread's pickling is part of the cost
    out.send(time.process_time() - t0)


def _mpq_consumer(q, n, out):
    t0 = time.process_time()
    got = 0
    while True:
        items = q.get()
        if items is None:
            break
        got += len(items)
    assert got == n, (got, n)
    out.send(time.process_time() - t0)


def _turbo_producer(path, n, batch, many, capture, out):
    import turbo_queue

    t0 = time.process_time()
    q = turbo_queue.Queue(path, batch_size=batch, capture=capture)
    with q.producer() as p:
        if many:
            buf = []
            for i in range(n):
                buf.append(make_event(i))
                if len(buf) == batch:
                    p.put_many(buf)
                    buf = []
            if buf:
                p.put_many(buf)
        else:
            put = p.put
            for i in range(n):
                put(make_event(i))
    q.close()
    out.send(time.process_time() - t0)


def _turbo_consumer(path, n, batch, per_event, out):
    import turbo_queue

    t0 = time.process_time()
    q = turbo_queue.Queue(path, batch_size=batch)
    got = 0
    with q.consumer() as c:
        if per_event:
            for _event in c:
                got += 1
        else:
            while True:
                try:
                    got += len(c.get_batch())
                except turbo_queue.Closed:
                    break
    assert got == n, (got, n)
    out.send(time.process_time() - t0)


def _run_pair(target_p, args_p, target_c, args_c) -> float:
    ctx = mp.get_context("fork")
    rp, wp = ctx.Pipe(False)
    rc, wc = ctx.Pipe(False)
    procs = [ctx.Process(target=target_p, args=(*args_p, wp)), ctx.Process(target=target_c, args=(*args_c, wc))]
    for p in procs:
        p.start()
    try:
        cpu = rp.recv() + rc.recv()
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
    for p in procs:
        if p.exitcode != 0:
            raise RuntimeError(f"{p.name} exited with {p.exitcode}")
    return cpu


def bench_mpq_batch(loops: int, batch: int) -> float:
    q = mp.get_context("fork").Queue()
    return _run_pair(_mpq_producer, (q, loops, batch), _mpq_consumer, (q, loops))


#: Where the queue folders go (``--queue-dir``; None: the system's temporary folder).
QUEUE_DIR = None


def bench_turbo(loops: int, batch: int, many: bool, per_event: bool = False, capture: str = "seal") -> float:
    tmp = tempfile.mkdtemp(prefix="tq-speed-", dir=QUEUE_DIR)
    try:
        path = os.path.join(tmp, "q")
        return _run_pair(_turbo_producer, (path, loops, batch, many, capture),
                         _turbo_consumer, (path, loops, batch, per_event))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _SQLiteImage:
    """``floor-sqlite``'s SQLite steps: the pickled list in and out of a one-table database image."""

    def __init__(self) -> None:
        con = sqlite3.connect(":memory:", isolation_level=None)
        con.execute("CREATE TABLE batch(data BLOB NOT NULL)")
        self.empty = con.serialize()
        con.close()
        # One connection to build images and one to read them, as a producer
        # and a consumer process would each have.
        self.writer = sqlite3.connect(":memory:", isolation_level=None)
        self.reader = sqlite3.connect(":memory:", isolation_level=None)

    def encode(self, data: bytes) -> bytes:
        self.writer.deserialize(self.empty)
        self.writer.execute("INSERT INTO batch VALUES(?)", (data,))
        return self.writer.serialize()

    def decode(self, image: bytes) -> bytes:
        self.reader.deserialize(image)
        return self.reader.execute("SELECT data FROM batch").fetchone()[0]


def floor_round_trip(folder: str, seq: int, events: list, image: _SQLiteImage | None = None) -> list:
    """One batch's bare file steps in ``folder``; returns the events read back.

    Pickle the list in one call, create and write a file, rename it twice
    (seal, claim), read it back, unpickle, unlink: the floor of one file per
    batch (this module's ``floor-files``, and ``bench.micro.batch_cost``'s).
    With ``image`` the pickle travels inside a SQLite database (``floor-sqlite``).
    """
    data = pickle.dumps(events, protocol=pickle.HIGHEST_PROTOCOL)
    if image is not None:
        data = image.encode(data)
    loading, ready, claimed = (os.path.join(folder, f"{state}_{seq}") for state in "lrc")
    fd = os.open(loading, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(loading, ready)
    os.rename(ready, claimed)
    with open(claimed, "rb") as f:
        data = f.read()
    if image is not None:
        data = image.decode(data)
    got = pickle.loads(data)
    os.unlink(claimed)
    return got


def bench_floor_files(loops: int, batch: int, sqlite: bool = False) -> float:
    """CPU per ``loops`` events of the bare file steps, one batch of ``batch`` at a time (see the module doc)."""
    tmp = tempfile.mkdtemp(prefix="tq-floor-", dir=QUEUE_DIR)
    image = _SQLiteImage() if sqlite else None
    try:
        t0 = time.process_time()
        done = seq = 0
        while done < loops:
            n = min(batch, loops - done)
            got = floor_round_trip(tmp, seq, [make_event(done + i) for i in range(n)], image)
            assert len(got) == n
            done += n
            seq += 1
        return time.process_time() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_ratios(suite: pyperf.BenchmarkSuite) -> None:
    by_name = {b.get_name(): b for b in suite.get_benchmarks()}
    print("\nCPU per event, ratio to mpq-batch at the same batch size "
          "(median of paired values, min-max):")
    for name, bench in sorted(by_name.items()):
        if not name.startswith(("turbo-", "floor-")):
            continue
        batch = name.rsplit("-", 1)[1]
        base = by_name.get(f"mpq-batch-{batch}")
        if base is None:
            continue
        a, b = bench.get_values(), base.get_values()
        ratios = [x / y for x, y in zip(a, b)]
        print(f"  {name:<22} {statistics.median(a) * 1e6:6.2f} us vs {statistics.median(b) * 1e6:6.2f} us"
              f"  ratio {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


def main() -> None:
    def add_cmdline_args(cmd, args):
        if args.capture_put:
            cmd.append("--capture-put")
        if args.queue_dir:
            cmd.extend(["--queue-dir", args.queue_dir])

    runner = pyperf.Runner(processes=6, values=3, warmups=1, min_time=0.2, add_cmdline_args=add_cmdline_args)
    runner.argparser.add_argument("--capture-put", action="store_true",
                                  help="also run per-event put with capture='put' (serialized at put)")
    runner.argparser.add_argument("--queue-dir", default=None,
                                  help="folder for the queue folders (default: the temporary folder); "
                                       "/dev/shm shows what the file system costs")
    runner.metadata["description"] = "CPU seconds (producer + consumer) per event; lower is better"
    runner.metadata["event_bytes_json"] = 300
    global QUEUE_DIR
    runner.parse_args()
    QUEUE_DIR = runner.args.queue_dir
    runner.metadata["queue_dir"] = QUEUE_DIR or tempfile.gettempdir()
    batches = (100, 1000)
    results = []
    # Interleave the variants per batch size so drift in the machine hits all alike.
    for batch in batches:
        results.append(runner.bench_time_func(f"mpq-batch-{batch}", bench_mpq_batch, batch))
        results.append(runner.bench_time_func(f"turbo-put-{batch}", bench_turbo, batch, False))
        results.append(runner.bench_time_func(f"turbo-put-iter-{batch}", bench_turbo, batch, False, True))
        results.append(runner.bench_time_func(f"turbo-put_many-{batch}", bench_turbo, batch, True))
        if runner.args.capture_put:
            results.append(runner.bench_time_func(f"turbo-put-capture_put-{batch}", bench_turbo, batch, False,
                                                  False, "put"))
        results.append(runner.bench_time_func(f"floor-files-{batch}", bench_floor_files, batch))
        results.append(runner.bench_time_func(f"floor-sqlite-{batch}", bench_floor_files, batch, True))
    if runner.args.worker or any(r is None for r in results):
        return
    print_ratios(pyperf.BenchmarkSuite(results))


if __name__ == "__main__":
    sys.exit(main())
