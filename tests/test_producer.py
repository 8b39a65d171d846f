"""Producers keep what they accepted: failed close/flush, loss reports, Closed, put_many counts, fork.

Each test names a promise of the README's "Using the queue" table and
"Delivery guarantees" section, and fails when the behaviour it names is
removed.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest
from _workers import drain

import turbo_queue
from turbo_queue import _producer
from turbo_queue._errors import Closed, Empty, Full, TurboQueueError

pytestmark = pytest.mark.usefixtures("reap_children")

REPO = Path(__file__).resolve().parent.parent


def full_queue(qpath, **kw) -> tuple[turbo_queue.Queue, turbo_queue.Producer]:
    """A queue with max_ready=1 reached and one item pending in its producer."""
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=1, max_batch_age=None, **kw)
    p = q.producer()
    p.put("sealed")
    p.put("pending")  # a full batch that has no room to be sealed
    assert p.pending == 1 and q.stats()["ready"]["batches"] == 1
    return q, p


# -- close and flush keep the items when they fail ------------------------------------


def test_close_that_hits_full_keeps_the_producer_open_and_a_retry_retries(qpath):
    q, p = full_queue(qpath)
    with pytest.raises(Full):
        p.close(timeout=0)
    assert p.pending == 1
    with pytest.raises(Full):
        p.close(timeout=0)  # a retry retries: it does not return as if closed
    assert p.pending == 1
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == ["sealed"]
        c.ack()
        p.put("after a failed close", timeout=10)  # still open: seals "pending", takes a new item
        assert p.pending == 1
        assert c.get_batch(timeout=5) == ["pending"]
        c.ack()
        p.close(timeout=10)
        assert p.pending == 0
        p.close()  # idempotent once it succeeded
    with pytest.raises(TurboQueueError, match="closed Producer"):
        p.put("x")
    assert drain(q) == ["after a failed close"]


@pytest.mark.parametrize("failing", [["close"], ["flush", "close"]])
def test_close_after_enospc_keeps_items_and_a_retry_seals_them(qpath, monkeypatch, failing):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    p = q.producer()
    p.put_many(["a", "b"])
    real_write = _producer.write_file
    failures = []

    def write_fails_at_first(path, data, durable, *args):
        if len(failures) < len(failing):
            failures.append(path)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_write(path, data, durable, *args)

    monkeypatch.setattr(_producer, "write_file", write_fails_at_first)
    for call in failing:
        with pytest.raises(OSError) as info:
            getattr(p, call)()
        assert info.value.errno == errno.ENOSPC
        assert p.pending == 2
    p.put("c")  # the producer is still open
    p.close()  # the retry seals
    assert len(failures) == len(failing) and p.pending == 0
    assert drain(q) == ["a", "b", "c"]
    assert not list(qpath.glob("l_*"))  # no loading copy left behind by the failed seals


# -- losses are reported, never silent -----------------------------------------------


def test_producer_collected_with_items_it_cannot_seal_logs_an_error(qpath, caplog):
    caplog.set_level(logging.ERROR, logger="turbo_queue")
    other = turbo_queue.Queue(qpath.parent / "other", batch_size=100, max_batch_age=None)
    other.producer().put_many([1, 2])  # collected at once; it can seal: no report
    gc.collect()
    assert drain(other) == [1, 2]
    assert not caplog.records
    q, p = full_queue(qpath)
    del p
    gc.collect()
    errors = [r for r in caplog.records if r.name == "turbo_queue" and r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text
    message = errors[0].getMessage()
    assert "1 pending item" in message and "garbage-collected" in message
    assert "Full" in message and str(qpath) in message


def test_items_that_cannot_be_sealed_at_exit_are_logged(qpath):
    # Two producers open at exit: one seals, the other's folder vanished
    # first, so the exit hook cannot seal its items and says so, once.
    other = qpath.parent / "other"
    script = textwrap.dedent(f"""
        import shutil, turbo_queue
        q = turbo_queue.Queue({str(qpath)!r}, batch_size=100, max_batch_age=None)
        p = q.producer()
        p.put_many([1, 2, 3])
        fine = turbo_queue.Queue({str(other)!r}, batch_size=100, max_batch_age=None).producer()
        fine.put_many([4, 5])
        shutil.rmtree({str(qpath)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "3 pending items" in proc.stderr and "interpreter exit" in proc.stderr, proc.stderr
    assert "FileNotFoundError" in proc.stderr and str(qpath) in proc.stderr
    assert proc.stderr.count("could not seal") == 1, proc.stderr  # not again from __del__ at teardown
    assert drain(turbo_queue.Queue(other)) == [4, 5]


# -- put raises Closed within a second of any close ------------------------------------


def _close_in_another_process(qpath) -> None:
    subprocess.run([sys.executable, "-c", f"import turbo_queue; turbo_queue.Queue({str(qpath)!r}).close()"],
                   cwd=REPO, check=True, timeout=60)


@pytest.mark.parametrize("closer", ["another Queue object", "another process"])
def test_put_raises_closed_within_a_second_of_a_foreign_close(qpath, closer):
    # A batch far larger than what the loop puts: the per-batch check alone
    # would never see the marker here.
    q = turbo_queue.Queue(qpath, batch_size=10_000_000, max_batch_age=None)
    p = q.producer()
    p.put(-1)
    if closer == "another process":
        _close_in_another_process(qpath)
    else:
        turbo_queue.Queue(qpath).close()
    closed_at = time.monotonic()
    accepted = [-1]
    with pytest.raises(Closed):
        for i in range(1_000_000):
            if time.monotonic() - closed_at > 30:
                break  # upper bound only: the assertion below says how late it was
            p.put(i)
            accepted.append(i)
            time.sleep(0.001)  # a producer that puts about a thousand items a second
    late = time.monotonic() - closed_at
    assert late < 1.0, f"put kept accepting items {late:.2f} s after close()"
    p.close()  # what it accepted before is sealed, not lost
    assert drain(q) == accepted


def test_put_after_reopen_is_accepted_again(qpath):
    q = turbo_queue.Queue(qpath, batch_size=10_000_000, max_batch_age=None)
    p = q.producer()
    p.put(0)
    other = turbo_queue.Queue(qpath)
    other.close()
    deadline = time.monotonic() + 30  # upper bound only
    with pytest.raises(Closed):
        while time.monotonic() < deadline:
            p.put(1)  # accepted until the producer sees the marker
            time.sleep(0.001)
    other.reopen()
    p.put(2)  # at once: the marker decides, not what the producer saw before
    p.close()
    got = drain(q)
    assert got[0] == 0 and got[-1] == 2 and set(got) == {0, 1, 2}


def test_close_with_a_timeout_ends_while_another_threads_put_waits_for_room(qpath):
    q, p = full_queue(qpath)
    result = {}

    def blocked_put():
        try:
            p.put("third", timeout=30)  # holds the producer while it waits for room
        except BaseException as exc:  # noqa: BLE001
            result["exc"] = exc

    t = threading.Thread(target=blocked_put)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while not p._lock.locked() and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(Full, match="another thread"):
            p.close(timeout=0.2)
        assert t.is_alive(), "close waited for the other thread's put to end"
        assert p.pending == 1
    finally:
        with q.consumer() as c:
            got = c.get_batch(timeout=0)  # room: the blocked put seals "pending" and buffers "third"
            c.ack()
            t.join(30)
            got += c.get_batch(timeout=5)
            c.ack()
            p.close(timeout=10)
            got += c.get_batch(timeout=5)
    assert "exc" not in result
    assert got == ["sealed", "pending", "third"]


def test_blocked_put_many_ends_at_close_and_says_how_many_it_queued(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2, max_ready=1, max_batch_age=None)
    p = q.producer()
    result = {}

    def put_them():
        try:
            p.put_many(list(range(10)), timeout=20)
        except BaseException as exc:  # noqa: BLE001
            result["exc"] = exc

    t = threading.Thread(target=put_them)
    t.start()
    # The first batch is sealed and the second full one waits for room.
    deadline = time.monotonic() + 20
    while not (q.stats()["ready"]["batches"] == 1 and p.pending == 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    turbo_queue.Queue(qpath).close()
    t.join(20)
    assert not t.is_alive()
    exc = result.get("exc")
    assert isinstance(exc, Closed), exc
    assert exc.queued == 4
    with q.consumer() as c:
        got = c.get_batch(timeout=0)
        c.ack()
        p.close(timeout=10)
        got += c.get_batch(timeout=5)
    assert got == [0, 1, 2, 3]


# -- put_many: all or a count ------------------------------------------------------


def test_put_many_full_says_how_many_it_queued(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2, max_ready=1, max_batch_age=None)
    p = q.producer()
    items = list(range(10))
    with pytest.raises(Full) as info:
        p.put_many(items, timeout=0)
    queued = info.value.queued
    assert queued == 4  # one sealed batch, one full batch buffered
    got = []
    rest = items[queued:]
    with q.consumer() as c:
        # The retry loop a caller writes: each retry passes what was not
        # queued, so nothing is queued twice and nothing is skipped.
        while True:
            got += c.get_batch(timeout=0)
            c.ack()
            try:
                p.put_many(rest, timeout=0)
                break
            except Full as exc:
                rest = rest[exc.queued:]
        while True:
            try:
                got += c.get_batch(timeout=0)
                c.ack()
            except Empty:
                break
            p.flush(timeout=5)  # room again: seal what the last put_many buffered
        p.close(timeout=0)
    assert got == items


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_put_many_type_error_says_how_many_it_queued(qpath, serializer):
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=None, serializer=serializer)
    p = q.producer()
    with pytest.raises(TypeError, match="function") as info:
        p.put_many([1, 2, 3, 4, lambda: 0, 6])
    assert info.value.queued == 3  # the first chunk; none of the refused one
    p.close()
    assert drain(q) == [1, 2, 3]


def test_put_many_closed_says_how_many_it_queued(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None)
    p = q.producer()
    q.close()
    with pytest.raises(Closed) as info:
        p.put_many([1, 2, 3])
    assert info.value.queued == 0
    p.close()
    with pytest.raises(TurboQueueError) as info:
        p.put_many([1])
    assert info.value.queued == 0


def test_put_many_queued_count_survives_pickling(qpath):
    import pickle

    q = turbo_queue.Queue(qpath, batch_size=2, max_ready=1, max_batch_age=None)
    with pytest.raises(Full) as info:
        q.producer().put_many(range(10), timeout=0)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is Full and again.queued == info.value.queued == 4 and again.path == str(qpath)


# -- put(block, timeout), put_nowait ------------------------------------------------


def test_put_nowait_and_block_false_raise_full_at_once(qpath):
    q, p = full_queue(qpath)
    with pytest.raises(Full):
        p.put_nowait("no room")
    with pytest.raises(Full):
        p.put("no room either", block=False, timeout=30)  # timeout is ignored when not blocking
    with pytest.raises(Full):
        p.put("nor here", False)
    assert p.pending == 1
    with pytest.raises(ValueError, match="timeout"):
        p.put("bad", True, -1)
    with pytest.raises(Full):
        p.put("timed", True, 0.05)
    with pytest.raises(Full):
        p.put("timed", timeout=0.05)  # the keyword call keeps working
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == ["sealed"]
        c.ack()
        p.put_nowait("room now")  # seals "pending"; "room now" waits in memory
        c.get_batch(timeout=5)
        c.ack()
        p.close(timeout=5)
    assert drain(q) == ["room now"]


def test_put_nowait_with_room_never_waits(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None)
    with q.producer() as p:
        for i in range(5):
            p.put_nowait(i)
    assert drain(q) == list(range(5))


# -- fork hygiene --------------------------------------------------------------------


def _inotify_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                fds.add(int(name))
        except OSError:
            pass  # the descriptor listdir itself used
    return fds


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/fd"),
                    reason="needs fork() and /proc/self/fd (Linux)")
def test_fork_child_owns_no_inherited_inotify_descriptor(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=1, max_batch_age=0.05)
    p = q.producer()
    p.put("a")
    p.put("b")  # full, waits for room
    with pytest.raises(Full):
        p.put("c", timeout=0.01)  # the producer's waiter opened its watch
    c = q.consumer()
    oc = turbo_queue.Queue(qpath.parent / "other").consumer()
    with pytest.raises(Empty):
        oc.get(timeout=0.01)  # an idle consumer's waiter opened its watch
    parent_fds = _inotify_fds()
    if not parent_fds:
        pytest.skip("inotify is not available here: nothing to inherit")
    # A producer in mid-batch, whose next put would take the hot path (no
    # os.getpid() there: the fork hook marks it).
    q2 = turbo_queue.Queue(qpath.parent / "mid-batch", batch_size=100, max_batch_age=None)
    p2 = q2.producer()
    p2.put(1)
    # A thread of the parent holds the producer's lock while the fork happens.
    held, release = threading.Event(), threading.Event()

    def hold_lock():
        with p._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert held.wait(30)
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        report = {}
        try:
            os.close(r)
            report["inherited_inotify"] = sorted(_inotify_fds())
            report["lock_held"] = p._lock.locked()
            report["flusher"] = p._flusher is not None
            refused = []
            for call in (lambda: p2.put(2), lambda: p2.put_many([2]), lambda: p2.flush(), lambda: p.put("c")):
                try:
                    call()
                    refused.append(False)
                except turbo_queue.TurboQueueError as exc:
                    refused.append("another process" in str(exc))
            report["parent_producers_refused"] = refused
            # A new producer works in the child (on a Queue without max_ready,
            # so its close does not wait for the parent's consumer).
            with turbo_queue.Queue(qpath, batch_size=1).producer() as mine:
                mine.put("from the child")
            report["ok"] = True
        except BaseException as exc:  # noqa: BLE001
            report["error"] = repr(exc)
        finally:
            os.write(w, json.dumps(report).encode())
            os._exit(0)
    os.close(w)
    try:
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
        release.set()
        holder.join(30)
    report = json.loads(data)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report.get("ok"), report
    assert report["inherited_inotify"] == [], f"child kept the parent's inotify fds {report['inherited_inotify']}"
    assert report["lock_held"] is False and report["flusher"] is False
    assert report["parent_producers_refused"] == [True] * 4
    p2.put(2)  # still the parent's, and still usable here
    p2.close()
    with q2.consumer() as c2:
        assert c2.get_batch(timeout=5) == [1, 2]
    # The parent's producer, consumer and their watches still work.
    # The parent's producer and consumer keep their own watches (other
    # descriptors of the parent may come and go: a collected waiter closes its own).
    now_fds = _inotify_fds()
    for owner in (p, c):
        if owner._waiter._fd in parent_fds:
            assert owner._waiter._fd in now_fds
    got = []

    def take():
        got.extend(c.get_batch(timeout=5))
        c.ack()

    take()  # "a"
    take()  # the child's item
    p.put("after fork", timeout=10)  # seals "b" now that there is room
    take()
    p.close(timeout=10)
    take()
    c.close()
    oc.close()
    assert got == ["a", "from the child", "b", "after fork"]
