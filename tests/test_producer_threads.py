"""put's hot path takes no lock: items racing with a seal or a close land exactly once, or are refused.

The hot path (an item neither first nor last of its batch) appends to the
open run without the producer's lock (turbo_queue/_producer.py, ``put``).
A seal by another thread (the age flush, another thread's put, a flush)
or a close may run between its test and its append.  The deterministic
tests put the other thread's call exactly there, through a run whose
``append`` makes it first; the threaded ones let the interpreter switch
threads as often as it can and check the books: every item whose put
returned is delivered once, every item whose put raised is not.
"""

from __future__ import annotations

import sys
import threading

import pytest
from _workers import drain

import turbo_queue
from turbo_queue._errors import Closed, TurboQueueError

pytestmark = [pytest.mark.usefixtures("reap_children"), pytest.mark.timeout(60)]


class _CallBeforeAppend(list):
    """A run whose append of ``trigger`` first makes ``call()``: another thread's seal or close, landing
    between put's test and its append (the only window the lock no longer closes)."""

    def __init__(self, items, trigger, call):
        super().__init__(items)
        self.trigger, self.call = trigger, call

    def append(self, item):
        if item == self.trigger:
            self.call()
        super().append(item)


def _race(producer: turbo_queue.Producer, trigger: str, call) -> None:
    # The run is never rebound while the producer lives (see _end_run_locked),
    # so replacing it once here is what put's hot path then appends to.
    producer._run = _CallBeforeAppend(producer._run, trigger, call)


def _holding_a_and_b(qpath) -> tuple[turbo_queue.Queue, turbo_queue.Producer]:
    """A producer whose open batch holds "a" and "b" (so the next put takes the hot path)."""
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    p = q.producer()
    p.put("a")
    p.put("b")
    return q, p


def test_an_item_appended_after_a_close_sealed_the_run_is_refused_not_stranded(qpath):
    q, p = _holding_a_and_b(qpath)
    _race(p, "racer", p.close)
    with pytest.raises(TurboQueueError, match="closed Producer"):
        p.put("racer")
    # The close sealed what was put before it; the racer is neither queued nor left behind.
    assert p.pending == 0
    assert drain(q) == ["a", "b"]


class _AppendAfterDrain(list):
    """A run whose append of ``trigger`` says it has begun, waits for ``drained``, appends, says so."""

    def __init__(self, items, trigger):
        super().__init__(items)
        self.trigger = trigger
        self.entered, self.drained, self.appended = threading.Event(), threading.Event(), threading.Event()

    def append(self, item):
        if item != self.trigger:
            return super().append(item)
        self.entered.set()
        assert self.drained.wait(10)
        super().append(item)
        self.appended.set()


def test_an_item_appended_during_the_last_seal_of_a_close_is_refused_not_stranded(qpath, monkeypatch):
    # The racer passes put's test before close's seal takes the run and
    # appends after it, before close returns: close must have halted before
    # that seal for put to see it.
    q, p = _holding_a_and_b(qpath)
    p._run = run = _AppendAfterDrain(p._run, "racer")
    outcome = []

    def racer():
        try:
            p.put("racer")
            outcome.append("queued")
        except TurboQueueError as exc:
            outcome.append(exc)

    publish = type(p._folder).publish

    def publish_then_race(folder, loading, ready):
        publish(folder, loading, ready)  # the run was taken before this (_end_run_locked)
        run.drained.set()
        assert run.appended.wait(10)

    monkeypatch.setattr(type(p._folder), "publish", publish_then_race)
    racing = threading.Thread(target=racer)
    racing.start()
    assert run.entered.wait(10)
    p.close()
    racing.join(10)
    assert not racing.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], TurboQueueError), outcome
    assert p.pending == 0
    assert drain(q) == ["a", "b"]


def test_an_item_appended_while_another_thread_seals_goes_to_the_next_batch(qpath):
    q, p = _holding_a_and_b(qpath)
    _race(p, "racer", p.flush)
    p.put("racer")
    p.put("c")
    assert p.pending == 2
    p.close()
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == ["a", "b"]
        assert c.get_batch(timeout=0) == ["racer", "c"]


def test_a_close_that_fails_halts_only_while_it_runs(qpath):
    # close halts before its seal (so a racing append is seen); when the seal
    # fails the producer is open again and the hot path takes puts as before.
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=1, max_batch_age=None)
    p = q.producer()
    p.put("sealed")
    p.put("pending")
    with pytest.raises(turbo_queue.Full):
        p.close(timeout=0)
    assert not p._halted and p.pending == 1
    drain(q)
    p.close()
    assert drain(q) == ["pending"]


def _put_from_threads(p, threads: int, per_thread: int, results: list, barrier: threading.Barrier) -> list:
    def body(t: int) -> None:
        accepted = []
        barrier.wait()
        for i in range(per_thread):
            item = (t, i)
            try:
                p.put(item)
            except (TurboQueueError, Closed):
                break
            accepted.append(item)
        results[t] = accepted

    workers = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    return workers


@pytest.fixture
def switch_often():
    """Let the interpreter switch threads between almost any two bytecodes."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("switch_often")
def test_threads_and_the_age_flush_putting_at_once_deliver_every_item_once(qpath):
    q = turbo_queue.Queue(qpath, batch_size=37, max_batch_age=0.004)
    p = q.producer()
    threads, per_thread = 4, 3000
    results: list = [None] * threads
    barrier = threading.Barrier(threads)
    workers = _put_from_threads(p, threads, per_thread, results, barrier)
    for w in workers:
        w.join(30)
        assert not w.is_alive()
    p.close()
    got = drain(q)
    assert len(got) == len(set(got)) == threads * per_thread
    assert sorted(got) == sorted(item for accepted in results for item in accepted)
    # Each thread's items in its own order (batches are delivered in seal order here: one consumer).
    for t in range(threads):
        assert [item for item in got if item[0] == t] == results[t]


@pytest.mark.usefixtures("switch_often")
def test_a_close_racing_with_threads_that_put_loses_no_accepted_item_and_queues_no_refused_one(qpath):
    q = turbo_queue.Queue(qpath, batch_size=50, max_batch_age=None)
    p = q.producer()
    threads, per_thread = 4, 50_000
    results: list = [None] * threads
    barrier = threading.Barrier(threads + 1)
    workers = _put_from_threads(p, threads, per_thread, results, barrier)
    barrier.wait()
    while p.sealed_batches < 20:  # close in the middle of the puts
        pass
    p.close()
    for w in workers:
        w.join(30)
        assert not w.is_alive()
    accepted = [item for items in results for item in items]
    assert len(accepted) < threads * per_thread  # the close came before the end
    got = drain(q)
    assert sorted(got) == sorted(accepted)
    assert p.pending == 0


@pytest.mark.usefixtures("switch_often")
def test_put_and_put_many_from_threads_beside_the_age_flush_deliver_every_item_once(qpath):
    # put_many ends the open run into a record under the lock while other
    # threads append to the run without it: nothing may be lost or doubled.
    q = turbo_queue.Queue(qpath, batch_size=64, max_batch_age=0.004)
    p = q.producer()
    threads, per_thread = 4, 2000
    barrier = threading.Barrier(threads)

    def body(t: int) -> None:
        barrier.wait()
        items = [(t, i) for i in range(per_thread)]
        if t % 2:
            for start in range(0, per_thread, 7):
                p.put_many(items[start:start + 7])
        else:
            for item in items:
                p.put(item)

    workers = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert not w.is_alive()
    p.close()
    got = drain(q)
    assert len(got) == len(set(got)) == threads * per_thread
    for t in range(threads):
        assert [item for item in got if item[0] == t] == [(t, i) for i in range(per_thread)]
