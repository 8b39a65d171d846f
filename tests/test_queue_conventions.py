"""The ``queue.Queue`` conventions, from CPython's Lib/test/test_queue.py, run on a producer/consumer pair.

The cases are CPython's (``basic_queue_test``, ``queue_join_test``,
``test_nowait``, ``test_negative_timeout_raises_exception`` and the
SimpleQueue thread runs with blocking, non-blocking and timed gets), adapted
to a queue whose unit of capacity is a sealed batch: with ``batch_size=1``
and ``max_ready=QUEUE_SIZE`` the queue is "full" when ``QUEUE_SIZE`` sealed
batches wait, and a producer may also hold the one full batch it could not
seal yet.  ``task_done`` has no counterpart: a consumer acks a batch when it
asks for the next one, so ``join`` waits for acks.

Where CPython gives the blocked call a head start with a sleep, the trigger
thread here waits until the blocked thread is seen inside ``FolderWaiter.wait``
(its stack, from ``sys._current_frames``): the call provably blocked.
"""

from __future__ import annotations

import os
import pickle
import queue
import random
import sys
import threading
import time
from collections import defaultdict

import pytest

import turbo_queue
from turbo_queue import Closed, Empty, Full, Producer, TurboQueueError

QUEUE_SIZE = 5

needs_put_nowait = pytest.mark.skipif(
    not hasattr(Producer, "put_nowait"),
    reason="Producer.put(item, block, timeout) / put_nowait come with the producer branch of issue 9")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pair(qpath):
    """A queue of QUEUE_SIZE one-item batches, with one producer and one consumer."""
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=QUEUE_SIZE, max_batch_age=None)
    p, c = q.producer(), q.consumer()
    yield q, p, c
    try:
        p.close(timeout=1)
    except Full:
        pass  # a test that left the queue full
    c.close()


# -- blocking helpers (CPython's BlockingTestMixin, without the sleep) -------------------


def _in_folder_wait(ident: int) -> bool:
    frame = sys._current_frames().get(ident)
    while frame is not None:
        if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("_wait.py"):
            return True
        frame = frame.f_back
    return False


class _Trigger(threading.Thread):
    """Runs ``fn(*args)`` once the thread ``ident`` is blocked in the folder waiter."""

    def __init__(self, ident: int, fn, args) -> None:
        super().__init__(daemon=True)
        self.ident_blocked, self.fn, self.args = ident, fn, args
        self.started = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 20
            while not _in_folder_wait(self.ident_blocked):
                if time.monotonic() > deadline:
                    raise AssertionError("the blocking call never waited")
                time.sleep(0.001)  # polling a condition, not standing in for one
            self.started.set()
            self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - reported by do_blocking_test
            self.error = exc


def do_blocking_test(block_func, block_args, trigger_func, trigger_args):
    trigger = _Trigger(threading.get_ident(), trigger_func, trigger_args)
    trigger.start()
    try:
        result = block_func(*block_args)
        assert trigger.started.is_set(), f"blocking function {block_func!r} appeared not to block"
        return result
    finally:
        trigger.join(20)
        assert not trigger.is_alive(), "trigger function did not return"
        assert trigger.error is None, trigger.error


def fill(p, q) -> int:
    """put until Full (timeout 0.01): the number of items accepted."""
    accepted = 0
    while True:
        try:
            p.put(("fill", accepted), timeout=0.01)
        except Full:
            return accepted
        accepted += 1
        assert accepted <= 10 * QUEUE_SIZE, "put never became Full"


# -- the exceptions are the standard library's -------------------------------------------


@pytest.mark.parametrize("cls, std", [(Empty, queue.Empty), (Full, queue.Full)])
def test_empty_and_full_are_the_standard_librarys(cls, std):
    assert issubclass(cls, std) and issubclass(cls, TurboQueueError)
    exc = cls("message", "/some/queue")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and back.args == exc.args and back.path == "/some/queue"
    assert isinstance(back, std) and str(back) == str(exc)


def test_except_queue_empty_catches_get_nowait(pair):
    q, p, c = pair
    with pytest.raises(queue.Empty) as info:
        c.get_nowait()
    assert isinstance(info.value, Empty) and info.value.path == str(q.path)


def test_except_queue_full_catches_a_timed_out_put(pair):
    q, p, c = pair
    fill(p, q)
    with pytest.raises(queue.Full) as info:
        p.put("one too many", timeout=0)
    assert isinstance(info.value, Full) and info.value.path == str(q.path)


# -- basic_queue_test --------------------------------------------------------------------


def _basic_get_side(q, p, c) -> None:
    assert q.qsize() == 0 and q.empty()
    for x in (111, 333, 222):
        p.put(x)
    assert q.qsize() == 3 and not q.empty()
    assert [c.get(), c.get(), c.get()] == [111, 333, 222], "FIFO from one producer"
    assert q.qsize() == 1, "the batch handed out is claimed until acked"
    c.ack()
    assert q.qsize() == 0
    for i in range(QUEUE_SIZE - 1):
        p.put(i)
        assert q.qsize() == i + 1, "qsize counts sealed, unacked events"
    p.put(2 * QUEUE_SIZE)
    assert q.qsize() == QUEUE_SIZE and not q.empty()
    # Empty it: a batch handed out is claimed, and counts until it is acked.
    for i in range(QUEUE_SIZE):
        c.get()
        assert q.qsize() == QUEUE_SIZE - i
    with pytest.raises(Empty):
        c.get(block=False)
    assert q.qsize() == 0 and q.empty(), "the get that found nothing acked the last batch"
    with pytest.raises(Empty):
        c.get(False)
    with pytest.raises(Empty):
        c.get(timeout=0.01)
    with pytest.raises(Empty):
        c.get(True, 0.01)
    # A blocking get, and one with a (long) timeout, positional as queue.Queue takes it.
    assert do_blocking_test(c.get, (), p.put, ("empty",)) == "empty"
    assert do_blocking_test(c.get, (True, 10), p.put, ("empty2",)) == "empty2"
    with pytest.raises(Empty):
        c.get_nowait()


def test_basic_get_side(pair):
    """Done twice to make sure the same pair is reusable (as CPython does)."""
    q, p, c = pair
    _basic_get_side(q, p, c)
    _basic_get_side(q, p, c)


def test_get_block_false_ignores_timeout(pair):
    q, p, c = pair
    t0 = time.monotonic()
    with pytest.raises(Empty):
        c.get(False, 30)
    assert time.monotonic() - t0 < 10, "get(block=False) waited for its timeout"
    p.put("x")
    assert c.get(False, 30) == "x"


def test_keyword_timeout_keeps_working(pair):
    q, p, c = pair
    p.put("a")
    assert c.get(timeout=5) == "a"
    with pytest.raises(Empty):
        c.get(timeout=0)


def test_blocking_put_resumes_when_a_batch_is_taken(pair):
    q, p, c = pair
    accepted = fill(p, q)
    # Full means max_ready sealed batches wait; the producer may hold one more it could not seal.
    assert QUEUE_SIZE <= accepted <= QUEUE_SIZE + 1
    assert q.qsize() == QUEUE_SIZE
    do_blocking_test(p.put, ("full",), c.get, ())
    do_blocking_test(p.put, ("full2",), c.get, ())
    got = []
    for final in (False, True):
        while True:
            try:
                got.append(c.get_nowait())
            except Empty:
                break
        if not final:
            p.close(timeout=10)  # room now: what the producer still holds is sealed
    # The two gets that unblocked the puts took the two oldest; nothing lost, nothing twice.
    assert got == [("fill", i) for i in range(2, accepted)] + ["full", "full2"]


@needs_put_nowait
def test_basic_put_side(pair):
    q, p, c = pair
    for _ in range(2):
        for i in range(QUEUE_SIZE):
            p.put(i, True, 10)
        assert q.qsize() == QUEUE_SIZE
        with pytest.raises(Full):
            while True:  # at most the one batch the producer may hold
                p.put("full", block=False)
        with pytest.raises(Full):
            p.put("full", False, 30)  # block=False ignores the timeout
        with pytest.raises(Full):
            p.put("full", timeout=0.01)
        with pytest.raises(Full):
            p.put("full", True, 0.01)
        do_blocking_test(p.put, ("full", True, 10), c.get, ())
        do_blocking_test(p.put, ("full",), c.get, ())
        for final in (False, True):
            while True:
                try:
                    c.get_nowait()
                except Empty:
                    break
            if not final:
                p.flush(timeout=10)  # room now: what the producer holds is sealed
        assert q.empty() and p.pending == 0


# -- test_nowait, test_negative_timeout_raises_exception ---------------------------------


def test_get_nowait(pair):
    q, p, c = pair
    for i in range(QUEUE_SIZE):
        p.put(i)
    assert [c.get_nowait() for _ in range(QUEUE_SIZE)] == list(range(QUEUE_SIZE))
    with pytest.raises(Empty):
        c.get_nowait()


@needs_put_nowait
def test_nowait(pair):
    q, p, c = pair
    for _ in range(QUEUE_SIZE):
        p.put_nowait(1)
    with pytest.raises(Full):
        while True:  # at most the one batch the producer may hold
            p.put_nowait(1)
    got = 0
    while True:
        try:
            c.get_nowait()
        except Empty:
            break
        got += 1
    assert QUEUE_SIZE <= got <= QUEUE_SIZE + 1
    with pytest.raises(Empty):
        c.get_nowait()


def test_negative_timeout_raises_exception(pair):
    q, p, c = pair
    with pytest.raises(ValueError):
        p.put(1, timeout=-1)
    with pytest.raises(ValueError):
        c.get(1, timeout=-1)
    with pytest.raises(ValueError):
        c.get(True, -1)
    with pytest.raises(ValueError):
        q.join(timeout=-1)


# -- queue_join_test ---------------------------------------------------------------------


def test_queue_join(qpath):
    """Two consumer threads sum what they get; join() returns only once everything put is acked."""
    q = turbo_queue.Queue(qpath, batch_size=10, max_batch_age=None)
    cum = [0]
    lock = threading.Lock()
    errors = []

    def worker():
        try:
            with q.consumer() as c:
                while True:
                    x = c.get(timeout=30)
                    if x < 0:
                        return
                    with lock:
                        cum[0] += x
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    p = q.producer()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(2):  # join twice, as CPython does
        cum[0] = 0
        for i in range(105):  # the last 5 stay in the producer until join flushes them
            p.put(i)
        assert p.pending == 5
        assert q.join(timeout=30) is True
        assert p.pending == 0, "join did not flush this process's producer"
        assert cum[0] == sum(range(105)), "q.join() did not block until every batch was acked"
        assert q.qsize() == 0 and q.empty()
    for _ in range(2):
        p.put(-1)
        p.flush()  # one sentinel per batch: one for each worker
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    assert q.join(timeout=30) is True
    p.close()


def test_join_times_out_while_batches_wait(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None)
    with q.producer() as p:
        p.put_many([1, 2, 3])
        t0 = time.monotonic()
        assert q.join(timeout=0.2) is False
        assert time.monotonic() - t0 < 10
        assert p.pending == 0, "join flushes first, even when it then times out"
    assert q.qsize() == 3
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == [1, 2]
        # A claimed batch is not acked yet: join still waits for it.
        assert q.qsize() == 3 and q.join(timeout=0) is False
        assert c.get_batch(timeout=0) == [3]
    assert q.join(timeout=0) is True and q.empty()


def test_join_on_an_empty_queue_returns_at_once(qpath):
    q = turbo_queue.Queue(qpath)
    assert q.join() is True and q.join(timeout=0) is True


def test_join_ignores_producers_of_other_queues(tmp_path):
    q1 = turbo_queue.Queue(tmp_path / "one", max_batch_age=None)
    q2 = turbo_queue.Queue(tmp_path / "two", max_batch_age=None)
    p2 = q2.producer()
    p2.put("elsewhere")
    assert q1.join(timeout=1) is True
    assert p2.pending == 1
    p2.close()


def test_join_wakes_when_the_last_batch_is_acked(qpath):
    """join waits in the folder waiter and is woken by the ack (an unlink), not by polling."""
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p, q.consumer() as c:
        p.put("x")
        assert c.get_batch(timeout=0) == ["x"]
        done = []
        trigger = _Trigger(threading.get_ident(), lambda: (c.ack(), done.append(time.monotonic())), ())
        trigger.start()
        assert q.join(timeout=30) is True
        assert trigger.started.is_set() and done
        trigger.join(10)


# -- several threads (CPython's SimpleQueue runs) ----------------------------------------


def _consume(c, results):
    for x in c:
        results.append(x)


def _consume_nonblock(c, results):
    while True:
        try:
            results.append(c.get(block=False))
        except Empty:
            time.sleep(1e-4)  # the polling style under test: get_nowait in a loop
        except Closed:
            return


def _consume_timeout(c, results):
    while True:
        try:
            results.append(c.get(timeout=1e-3))
        except Empty:
            pass
        except Closed:
            return


@pytest.mark.parametrize("consume", [_consume, _consume_nonblock, _consume_timeout],
                         ids=["blocking", "nonblocking", "timeout"])
@pytest.mark.parametrize("n_threads", [1, 4])
def test_threads(qpath, consume, n_threads):
    """n feeder threads and n consumer threads, each with its own producer or consumer object;
    end of stream is q.close().  Every item arrives once, each producer's items in order per consumer."""
    q = turbo_queue.Queue(qpath, batch_size=7, max_ready=4, max_batch_age=0.05)
    per = 600
    results = [[] for _ in range(n_threads)]
    errors = []
    rnd = random.Random(42)
    pauses = [[rnd.random() > 0.9 for _ in range(per)] for _ in range(n_threads)]

    def guarded(f, *args):
        try:
            f(*args)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def feed(k):
        with q.producer() as p:
            for i in range(per):
                p.put((k, i))
                if pauses[k][i]:
                    time.sleep(rnd.random() * 1e-3)  # uneven feeding, as CPython's feed

    def consume_into(k):
        with q.consumer() as c:
            consume(c, results[k])

    feeders = [threading.Thread(target=guarded, args=(feed, k), daemon=True) for k in range(n_threads)]
    consumers = [threading.Thread(target=guarded, args=(consume_into, k), daemon=True) for k in range(n_threads)]
    for t in consumers + feeders:
        t.start()
    for t in feeders:
        t.join(40)
    q.close()
    for t in consumers:
        t.join(40)
    assert not any(t.is_alive() for t in feeders + consumers), "threads hung"
    assert not errors, errors
    got = sorted(x for r in results for x in r)
    assert got == sorted((k, i) for k in range(n_threads) for i in range(per))
    if n_threads == 1:  # FIFO from one producer (several consumers only claim roughly oldest first)
        assert results[0] == [(0, i) for i in range(per)]


def test_one_consumer_sees_each_producers_items_in_order(qpath):
    q = turbo_queue.Queue(qpath, batch_size=5, max_ready=6, max_batch_age=0.02)
    n_feeders, per = 4, 400
    errors = []

    def feed(k):
        try:
            with q.producer() as p:
                for i in range(per):
                    p.put((k, i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    feeders = [threading.Thread(target=feed, args=(k,), daemon=True) for k in range(n_feeders)]
    for t in feeders:
        t.start()
    got = []
    with q.consumer() as c:
        while len(got) < n_feeders * per:
            got.append(c.get(timeout=30))
    for t in feeders:
        t.join(30)
    assert not errors, errors
    seen = defaultdict(list)
    for k, i in got:
        seen[k].append(i)
    assert seen == {k: list(range(per)) for k in range(n_feeders)}


def test_fifo_one_producer_one_consumer(qpath):
    q = turbo_queue.Queue(qpath, batch_size=13, max_ready=3, max_batch_age=0.02)
    n = 2000
    got = []

    def feed():
        with q.producer() as p:
            for i in range(n):
                p.put(i)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    with q.consumer() as c:
        while len(got) < n:
            got.append(c.get(timeout=30))
    t.join(30)
    assert not t.is_alive()
    assert got == list(range(n))
    assert q.join(timeout=10) is True


def test_qsize_counts_events_not_batches(qpath):
    q = turbo_queue.Queue(qpath, batch_size=4, max_batch_age=None)
    with q.producer() as p:
        p.put_many(range(10))  # 4 + 4 sealed, 2 pending: not counted until sealed
        assert q.qsize() == 8
    assert q.qsize() == 10
    os.makedirs(q.path / "aside", exist_ok=True)
    with q.consumer() as c:
        c.get_batch(timeout=0)
        assert q.qsize() == 10  # claimed, not acked
        c.get_batch(timeout=0)
        assert q.qsize() == 6
