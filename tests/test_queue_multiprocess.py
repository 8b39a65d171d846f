"""Several processes on one queue: exact delivery, separate applications, fork safety."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from collections import Counter

import _workers as w
import pytest

import turbo_queue
from turbo_queue import _batch
from turbo_queue._errors import Empty, Full

pytestmark = pytest.mark.usefixtures("reap_children")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method, n_prod, n_cons", [("fork", 3, 3), ("spawn", 3, 2)])
def test_exact_delivery_many_producers_many_consumers(tmp_path, method, n_prod, n_cons):
    ctx = multiprocessing.get_context(method)
    q = turbo_queue.Queue(tmp_path / "q", batch_size=7, max_batch_age=0.02, recover_interval=0.05)
    per = 1500
    ids = {k: [(k, i) for i in range(per)] for k in range(n_prod)}
    outs = [tmp_path / f"out{k}" for k in range(n_cons)]
    consumers = [ctx.Process(target=w.consume_all if k % 2 == 0 else w.consume_batches, args=(q, str(outs[k])))
                 for k in range(n_cons)]
    producers = [ctx.Process(target=w.produce, args=(q, ids[k], k % 2 == 1)) for k in range(n_prod)]
    procs = consumers + producers
    try:
        for p in procs:
            p.start()
        for p in producers:
            p.join(60)
            assert p.exitcode == 0
        q.close()
        for p in consumers:
            p.join(60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            w.kill_process(p)
    got = Counter()
    for out in outs:
        got.update(w.read_result(out))
    expected = Counter(x for k in ids for x in ids[k])
    assert got == expected  # nothing lost, nothing duplicated
    stats = q.stats()
    assert stats["ready"]["batches"] == stats["claimed"]["batches"] == stats["loading"]["batches"] == 0
    assert stats["aside"] == 0


@pytest.mark.timeout(60)
def test_two_separate_applications(tmp_path):
    path = tmp_path / "shared-q"
    out = tmp_path / "consumer.json"
    n = 600
    env = w.app_env()
    consumer = subprocess.Popen(w.app_command(w.CONSUMER_APP) + [str(path), str(out)], env=env,
                                stderr=subprocess.PIPE)
    producer = subprocess.Popen(w.app_command(w.PRODUCER_APP) + [str(path), str(n)], env=env,
                                stderr=subprocess.PIPE)
    try:
        _, perr = producer.communicate(timeout=40)
        assert producer.returncode == 0, perr.decode()
        _, cerr = consumer.communicate(timeout=40)
        assert consumer.returncode == 0, cerr.decode()
    finally:
        w.kill_process(producer)
        w.kill_process(consumer)
    got = w.load_json(out)
    assert sorted(got) == list(range(n))
    assert got == list(range(n))  # one producer, one consumer: put order


@pytest.mark.timeout(60)
def test_blocked_put_resumes_when_a_consumer_process_takes_a_batch(tmp_path):
    ctx = multiprocessing.get_context("fork")
    q = turbo_queue.Queue(tmp_path / "q", batch_size=2, max_ready=2, max_batch_age=None)
    out = tmp_path / "taken"
    with q.producer() as p:
        p.put_many(range(6))  # two batches sealed, the third full and held: no room
        assert q.stats()["ready"]["batches"] == 2
        with pytest.raises(Full):
            p.put(6, timeout=0.05)
        taker = ctx.Process(target=w.take_one_batch, args=(q, str(out)))
        taker.start()
        try:
            p.put(6, timeout=30)  # blocks until the other process takes a batch
            taker.join(30)
            assert taker.exitcode == 0
        finally:
            w.kill_process(taker)
        assert w.read_result(out) == [0, 1]
        # Room for the rest once a consumer drains.
        got = []
        with q.consumer() as c:
            got.extend(c.get_batch(timeout=0))
            got.extend(c.get_batch(timeout=0))
            p.flush(timeout=10)
            got.extend(c.get_batch(timeout=0))
    assert got == [2, 3, 4, 5, 6]


# -- fork safety ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_queue_made_before_fork_works_in_children(tmp_path):
    ctx = multiprocessing.get_context("fork")
    q = turbo_queue.Queue(tmp_path / "q", batch_size=3)
    # The parent uses producer, consumer and both SQLite connections first.
    with q.producer() as p:
        p.put("parent")
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == ["parent"]
    # A transaction left open on this thread's connection must not be seen by the child.
    con = _batch._writer.get()
    con.execute("BEGIN")
    try:
        outs = [tmp_path / f"o{k}" for k in range(2)]
        kids = [ctx.Process(target=w.fork_child_roundtrip, args=(q, str(o))) for o in outs]
        try:
            for k in kids:
                k.start()
            for k in kids:
                k.join(30)
                assert k.exitcode == 0
        finally:
            for k in kids:
                w.kill_process(k)
        results = [w.read_result(o) for o in outs]
    finally:
        con.execute("ROLLBACK")
    for status, _got in results:
        assert status == "ok", results
    got = Counter(x for _, g in results for x in g)
    assert [len(g) for _, g in results] == [3, 3]  # each child took one whole batch
    # The parent still works after its children.
    with q.producer() as p:
        p.put("parent again")
    rest = []
    with q.consumer() as c:
        while True:
            try:
                rest.extend(c.get_batch(timeout=0))
            except Empty:
                break
    assert Counter(rest) + got == Counter(["child-a", "child-b", "child-c"] * 2 + ["parent again"])


@pytest.mark.timeout(60)
def test_producer_made_in_parent_raises_in_child(tmp_path):
    ctx = multiprocessing.get_context("fork")
    q = turbo_queue.Queue(tmp_path / "q", batch_size=100, max_batch_age=0.05)
    p = q.producer()
    p.put("pending")  # starts the age-flush thread
    out = tmp_path / "out"
    # Hold the producer's lock while forking, as its flush thread might: the
    # child must raise, not wait for a lock nobody will release.
    with p._lock:
        child = ctx.Process(target=w.use_inherited_producer, args=(p, str(out)))
        child.start()
    try:
        child.join(30)
        assert child.exitcode == 0
    finally:
        w.kill_process(child)
    results = w.read_result(out)
    for name in ("put", "put_many", "flush"):
        assert results[name] is not None, name
        assert results[name][0] == "TurboQueueError", results[name]
        assert "queue.producer()" in results[name][1]
    p.close()
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == ["pending"]  # the parent's items are intact


@pytest.mark.timeout(60)
def test_consumer_made_in_parent_raises_in_child(tmp_path):
    ctx = multiprocessing.get_context("fork")
    q = turbo_queue.Queue(tmp_path / "q", batch_size=2)
    with q.producer() as p:
        p.put_many([1, 2])
    c = q.consumer()
    out = tmp_path / "out"
    child = ctx.Process(target=w.use_inherited_consumer, args=(c, str(out)))
    child.start()
    try:
        child.join(30)
        assert child.exitcode == 0
    finally:
        w.kill_process(child)
    result = w.read_result(out)
    assert result is not None and result[0] == "TurboQueueError"
    assert c.get_batch(timeout=0) == [1, 2]  # the child took nothing
    c.close()


@pytest.mark.timeout(60)
def test_spawned_child_gets_pickled_queue_with_custom_serializer(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    q = turbo_queue.Queue(tmp_path / "q", batch_size=4, serializer=w.Rot13Serializer())
    out = tmp_path / "out"
    ids = [f"item {i}" for i in range(10)]
    producer = ctx.Process(target=w.produce, args=(q, ids, True))
    try:
        producer.start()
        producer.join(30)
        assert producer.exitcode == 0
    finally:
        w.kill_process(producer)
    q.close()
    consumer = ctx.Process(target=w.consume_all, args=(q, str(out)))
    try:
        consumer.start()
        consumer.join(30)
        assert consumer.exitcode == 0
    finally:
        w.kill_process(consumer)
    assert w.read_result(out) == ids


def test_pid_check_is_per_process(tmp_path):
    """The SQLite connection is remade in a forked child (checked without multiprocessing)."""
    con = _batch._writer.get()
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ok = _batch._writer.get() is not con
            data = w.batch_bytes(["in child"])
            ok = ok and _batch.decode_batch(data, "x")[0]["count"] == 1
            os.write(wfd, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        assert os.read(r, 1) == b"1"
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert _batch._writer.get() is con

