"""kill -9 of consumers and producers: nothing sealed is lost, duplicates bounded to one batch."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter

import _workers as w
import pytest

import turbo_queue
from turbo_queue import _naming
from turbo_queue._errors import Closed, Empty

pytestmark = pytest.mark.usefixtures("reap_children")

fork = multiprocessing.get_context("fork")


def drain(q, timeout=0.0):
    got = []
    with q.consumer() as c:
        while True:
            try:
                got.extend(c.get_batch(timeout=timeout))
            except (Empty, Closed):
                return got


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reap_before_recovery", [True, False], ids=["reaped", "zombie"])
def test_consumer_killed_mid_batch(tmp_path, reap_before_recovery):
    """The killed consumer's batch is delivered again by live recovery; nothing else is duplicated.

    ``zombie``: the dead consumer's parent has not reaped it yet (a supervisor
    busy elsewhere); a zombie never acks, so recovery must not wait for the reaping.
    """
    q = turbo_queue.Queue(tmp_path / "q", batch_size=5, max_batch_age=None, recover_interval=0.05)
    ids = list(range(60))
    with q.producer() as p:
        p.put_many(ids)
    marker = tmp_path / "claimed"
    out = tmp_path / "out"
    victim = fork.Process(target=w.claim_and_hang, args=(q, str(marker)))
    survivor = fork.Process(target=w.consume_all, args=(q, str(out)))
    try:
        victim.start()
        w.wait_for(marker.exists, what="the victim to claim a batch")
        claimed = w.read_result(marker)
        assert len(claimed) == 5
        # The survivor is running, drains the rest and idles, before the kill.
        survivor.start()
        q.close()
        w.wait_for(lambda: q.stats()["ready"]["batches"] == 0, what="the survivor to drain the ready batches")
        assert q.stats()["claimed"]["batches"] >= 1
        os.kill(victim.pid, signal.SIGKILL)
        if reap_before_recovery:
            victim.join(10)
        # No restart: the running survivor recovers the batch itself.
        survivor.join(30)
        assert survivor.exitcode == 0
        assert victim.exitcode == -signal.SIGKILL or not reap_before_recovery
    finally:
        w.kill_process(victim)
        w.kill_process(survivor)
    got = w.read_result(out)
    assert Counter(got) == Counter(ids)  # everything, exactly once, to the survivor
    duplicates = Counter(got) + Counter(claimed) - Counter(ids)
    assert duplicates == Counter(claimed)  # duplicated: at most the one killed batch
    assert w.queue_files(q.path) == []


@pytest.mark.timeout(60)
def test_consumer_killed_mid_batch_recovered_by_explicit_recover(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=4, max_batch_age=None)
    with q.producer() as p:
        p.put_many(range(12))
    marker = tmp_path / "claimed"
    victim = fork.Process(target=w.claim_and_hang, args=(q, str(marker)))
    try:
        victim.start()
        w.wait_for(marker.exists, what="the victim to claim a batch")
        assert not q.recover()  # the owner is alive: nothing is taken from it
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
    finally:
        w.kill_process(victim)
    report = q.recover()
    assert len(report.returned) == 1
    assert not q.recover()  # a second pass finds nothing
    assert drain(q) == list(range(12))  # back in its place in line


@pytest.mark.timeout(60)
def test_producer_killed_keeps_sealed_batches(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=5, max_batch_age=None)
    marker = tmp_path / "progress"
    ids = list(range(17))  # three full batches sealed, two items pending in memory
    victim = fork.Process(target=w.produce_then_hang, args=(q, ids, str(marker)))
    try:
        victim.start()
        w.wait_for(marker.exists, what="the producer to put its items")
        assert w.read_result(marker) == {"sealed": 15, "pending": 2}
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
    finally:
        w.kill_process(victim)
    q.close()
    # The sealed batches survive; items only in the dead producer's memory are gone.
    with q.consumer() as c:
        assert list(c) == ids[:15]


@pytest.mark.timeout(60)
def test_producer_killed_between_write_and_rename(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=4, max_batch_age=None, recover_interval=0.05)
    marker = tmp_path / "loading"
    victim = fork.Process(target=w.produce_and_die_before_rename, args=(q, list(range(4)), str(marker)))
    try:
        victim.start()
        w.wait_for(marker.exists, what="the producer to write its loading file")
        loading = w.read_result(marker)
        assert w.queue_files(q.path) == [loading]
        assert not q.recover()  # its producer is alive: left alone
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
    finally:
        w.kill_process(victim)
    q.close()
    # A consumer's own idle recovery seals it: no separate recover() call.
    with q.consumer() as c:
        assert list(c) == [0, 1, 2, 3]
    assert not (q.path / "aside").exists()  # complete: sealed, not set aside


def test_complete_loading_file_of_dead_producer_is_sealed(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=3)
    owner = w.dead_owner()
    name = w.write_batch_file(q.path, _naming.LOADING, ["x", "y", "z"], owner)
    report = q.recover()
    ready = _naming.parse_batch_name(name).name(_naming.READY)
    assert report.sealed == [ready]
    assert w.queue_files(q.path) == [ready]
    assert drain(q) == ["x", "y", "z"]


@pytest.mark.parametrize("how", ["truncated", "count-mismatch", "empty"])
def test_incomplete_loading_file_of_dead_producer_is_set_aside(tmp_path, how):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=3)
    owner = w.dead_owner()
    items = [("x" * 400, i) for i in range(30)]
    data = w.batch_bytes(items, owner=str(owner))
    if how == "truncated":
        data = data[: len(data) // 2]
        name_items = items
    elif how == "count-mismatch":
        name_items = items + ["one more"]  # the name promises more than the file holds
    else:
        data = b""
        name_items = items
    name = w.write_batch_file(q.path, _naming.LOADING, name_items, owner, data=data)
    with q.producer() as p:
        p.put("good")
    q.close()
    with q.consumer() as c:
        assert list(c) == ["good"]  # the consumer's recovery set it aside and carried on
    aside = os.listdir(q.path / "aside")
    assert len(aside) == 1 and aside[0].startswith(name + ".")
    assert (q.path / "aside" / aside[0]).read_bytes() == data  # never deleted


def test_loading_file_of_live_producer_is_left_alone(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=3)
    me = _naming.make_owner()
    name = w.write_batch_file(q.path, _naming.LOADING, ["a"], me, data=b"half-written")
    assert not q.recover()
    assert w.queue_files(q.path) == [name]


def test_remote_owner_files_are_left_alone(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=3)
    remote = _naming.Owner("some-other-host", 1234, 0, "0badf00d")
    name = w.write_batch_file(q.path, _naming.LOADING, ["a"], remote)
    claimed = _naming.claimed_name(remote, _naming.BatchName(_naming.READY, 5, 1, 1, remote).name())
    (q.path / claimed).write_bytes(w.batch_bytes(["b"]))
    report = q.recover()
    assert not report and report.remote == 2
    assert sorted(w.queue_files(q.path)) == sorted([name, claimed])


@pytest.mark.timeout(60)
def test_pid_reused_by_another_process_counts_as_dead(tmp_path):
    """A claimed file names a pid that now belongs to a different (live) process."""
    q = turbo_queue.Queue(tmp_path / "q", batch_size=2)
    with q.producer() as p:
        p.put_many(["a", "b"])
    ready = w.queue_files(q.path)[0]
    me = _naming.make_owner()
    impostor = _naming.Owner(me.host, me.pid, me.start + 12345 if me.start else 0, "12345678")
    if not me.start:
        pytest.skip("no /proc start times here")
    os.rename(q.path / ready, q.path / _naming.claimed_name(impostor, ready))
    # One delivery ended without an ack: counted in the name, same place in line.
    assert q.recover().returned == [ready.replace(".tqb", "_d1.tqb")]
    assert drain(q) == ["a", "b"]
