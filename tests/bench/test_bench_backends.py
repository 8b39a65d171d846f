"""The backend contract suite: every registered backend, real processes.

Run with::

    python -m pytest tests/bench/test_bench_backends.py

Each backend must deliver every event exactly once from P producers to C
consumers, end every consumer once the stream ends (also when nothing was
sent), let the parent release it twice, and leave no process behind.  The
driver below uses only the contract in bench/measuring/backends/base.py, so a new
backend gets these checks by being added to ``BACKENDS``.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from collections import Counter

import pytest

from bench.measuring.backends import BACKENDS, BackendSettings, UnknownBackend, get_backend
from bench.measuring.cell import leaked_children, reap_processes
from bench.measuring.events import EventFactory

ALL = list(BACKENDS)


def _available_or_skip(name: str) -> type:
    cls = BACKENDS[name]
    ok, reason = cls.available()
    if not ok:
        pytest.skip(f"{name} unavailable here: {reason}")
    return cls


def _producer(backend, index: int, count: int, event_bytes: int) -> None:
    make = EventFactory(index, event_bytes).make
    with backend.producer(index) as sink:
        for i in range(count):
            sink.put(make(i))


def _consumer(backend, index: int, out_path: str) -> None:
    seqs = []
    batches = 0
    with backend.consumer(index) as source:
        for batch in source.batches():
            assert len(batch) > 0, "batches() yielded an empty batch"
            batches += 1
            seqs.extend(ev["seq"] for ev in batch)
    with open(out_path + ".tmp", "wb") as f:
        pickle.dump({"seqs": seqs, "batches": batches}, f)
    os.replace(out_path + ".tmp", out_path)


def _drive(name, tmp_path, *, start_method, producers, consumers, per_producer, batch_size):
    """Run one P -> queue -> C pipeline through the contract; return what arrived."""
    cls = _available_or_skip(name)
    ctx = multiprocessing.get_context(start_method)
    batch = batch_size if cls.batched else 1
    event_bytes = 200
    settings = BackendSettings(
        producers=producers,
        consumers=consumers,
        batch_size=batch,
        max_buffered_events=64,  # small: producers must block and resume
        event_bytes=event_bytes,
        event_pickled_bytes=len(pickle.dumps(EventFactory(0, event_bytes).make(0))),
        workdir=str(tmp_path),
    )
    backend = cls(settings)
    backend.open(ctx)
    procs = []
    outs = [str(tmp_path / f"consumer-{i}.pickle") for i in range(consumers)]
    try:
        for i in range(consumers):
            procs.append(ctx.Process(target=_consumer, args=(backend, i, outs[i]), daemon=True))
        prods = [
            ctx.Process(target=_producer, args=(backend, i, per_producer, event_bytes), daemon=True)
            for i in range(producers)
        ]
        procs.extend(prods)
        for p in procs:
            p.start()
        for p in prods:
            p.join(30)
            assert p.exitcode == 0, f"producer exit code {p.exitcode}"
        backend.end_of_stream(10.0)
        for p in procs[:consumers]:
            p.join(30)
            assert p.exitcode == 0, f"consumer did not end cleanly: exit code {p.exitcode}"
        received = []
        for path in outs:
            with open(path, "rb") as f:
                received.append(pickle.load(f))
    finally:
        reap_processes(procs)
        backend.close()
        backend.close()  # idempotent by contract
    assert leaked_children() == []
    return received


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ALL)
def test_exact_delivery_fork(name, tmp_path):
    per_producer = 1000
    received = _drive(
        name,
        tmp_path,
        start_method="fork",
        producers=2,
        consumers=3,
        per_producer=per_producer,
        batch_size=7,  # does not divide the count: the last batch is partial
    )
    counts = Counter(s for r in received for s in r["seqs"])
    expected = {p * 10**12 + i for p in range(2) for i in range(per_producer)}
    assert set(counts) == expected, "lost or unexpected sequence numbers"
    assert max(counts.values()) == 1, "duplicated sequence numbers"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ALL)
def test_exact_delivery_spawn(name, tmp_path):
    received = _drive(
        name,
        tmp_path,
        start_method="spawn",
        producers=1,
        consumers=2,
        per_producer=300,
        batch_size=50,
    )
    seqs = sorted(s for r in received for s in r["seqs"])
    assert seqs == list(range(300))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ALL)
def test_consumers_end_on_an_empty_stream(name, tmp_path):
    received = _drive(
        name,
        tmp_path,
        start_method="fork",
        producers=1,
        consumers=2,
        per_producer=0,
        batch_size=10,
    )
    assert [r["seqs"] for r in received] == [[], []]


@pytest.mark.parametrize("name", ALL)
def test_metadata_and_availability(name):
    cls = BACKENDS[name]
    assert cls.name == name
    assert isinstance(cls.batched, bool)
    ok, reason = cls.available()
    assert isinstance(ok, bool) and isinstance(reason, str)
    assert ok or reason, "an unavailable backend must say why"


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(UnknownBackend) as info:
        get_backend("rabbit")
    for name in BACKENDS:
        assert name in str(info.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ALL)
def test_end_of_stream_never_hangs_the_parent_and_reaches_late_consumers(name, tmp_path):
    """With no consumer draining a full queue, end_of_stream returns or times out;
    when it returns, the end of the stream was signalled: consumers started only
    afterwards still get every event and then end.  A backend whose
    end_of_stream returns at once without signalling anything fails here."""
    cls = _available_or_skip(name)
    ctx = multiprocessing.get_context("fork")
    consumers = 2
    settings = BackendSettings(
        producers=1,
        consumers=consumers,
        batch_size=1,
        max_buffered_events=4,
        event_bytes=200,
        event_pickled_bytes=len(pickle.dumps(EventFactory(0, 200).make(0))),
        workdir=str(tmp_path),
    )
    backend = cls(settings)
    backend.open(ctx)
    prod = ctx.Process(target=_producer, args=(backend, 0, 4, 200), daemon=True)
    procs = [prod]
    outs = [str(tmp_path / f"consumer-{i}.pickle") for i in range(consumers)]
    try:
        prod.start()
        prod.join(20)
        assert prod.exitcode == 0
        t0 = time.monotonic()
        try:
            backend.end_of_stream(0.5)
            signalled = True
        except TimeoutError:
            signalled = False  # the full queue left no room for the signal: allowed
        assert time.monotonic() - t0 < 5
        if signalled:
            for i in range(consumers):
                p = ctx.Process(target=_consumer, args=(backend, i, outs[i]), daemon=True)
                procs.append(p)
                p.start()
            for p in procs[1:]:
                p.join(20)
                assert p.exitcode == 0, "a consumer never learnt that the stream had ended"
            seqs = []
            for path in outs:
                with open(path, "rb") as f:
                    seqs.extend(pickle.load(f)["seqs"])
            assert sorted(seqs) == [0, 1, 2, 3]
    finally:
        reap_processes(procs)
        backend.close()
    assert leaked_children() == []
    if name.startswith("turbo"):
        # turbo's end of stream is a mark in the folder, never blocked by a
        # full queue: it must have been signalled.
        assert signalled


def test_no_process_survives_the_suite():
    # Nothing but multiprocessing's own helper (the spawn resource tracker)
    # may remain once every contract test has run.
    assert leaked_children() == []
