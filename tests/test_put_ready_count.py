"""Backpressure counts ready batches from the folder's rename events and lists only near max_ready.

A producer with ``max_ready`` used to list the folder at every seal; it now
keeps the count from its inotify watch (``_folder.ReadyCount``).  These tests
check the count against the folder, that listings become rare far from the
limit, and that the limit itself is still kept exactly by one producer.
"""

from __future__ import annotations

import pytest
from _workers import queue_files

import turbo_queue
from turbo_queue import _naming
from turbo_queue._errors import Full


def ready_files(folder) -> int:
    return sum(1 for n in queue_files(folder) if n.startswith(_naming.READY))


def watching(p) -> bool:
    return p._waiter.poll()


def test_far_from_the_limit_seals_do_not_list_the_folder(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=1000, max_batch_age=None)
    with q.producer() as p:
        if not watching(p):
            pytest.skip("no inotify here: every seal lists, as before")
        p._ready.relist_after = float("inf")  # this test is about the events, not the timer
        for i in range(40):
            p.put(i)
        assert p.sealed_batches == 40
        assert p._ready.listings == 1  # the first seal only
        assert p._ready.count(1000) == ready_files(qpath) == 40


def test_claims_and_acks_by_a_consumer_are_counted(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=1000, max_batch_age=None)
    with q.producer() as p, q.consumer() as c:
        if not watching(p):
            pytest.skip("no inotify here")
        p._ready.relist_after = float("inf")
        for i in range(10):
            p.put(i)
        for _ in range(4):
            c.get_batch(timeout=0)
        c.ack()
        listings = p._ready.listings
        assert p._ready.count(1000) == ready_files(qpath) == 6
        assert p._ready.listings == listings  # from the events alone
        c.get_batch(timeout=0)
        c.release()  # back to ready under a new name: counted again
        assert p._ready.count(1000) == ready_files(qpath) == 6


def test_near_the_limit_the_folder_is_listed_and_the_limit_kept_exactly(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=10, max_batch_age=None)
    with q.producer() as p:
        put = 0
        with pytest.raises(Full):
            while True:
                p.put(put, block=False)
                put += 1
        assert ready_files(qpath) == 10
        assert p.pending == 1  # the item that is waiting for room
        with q.consumer() as c:
            c.get_batch(timeout=0)
            c.ack()
        p.flush(timeout=0)  # one batch of room: the listing near the limit sees it
        assert ready_files(qpath) == 10
        p.close(timeout=0)


def test_a_foreign_seal_is_counted(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=1000, max_batch_age=None)
    with q.producer() as p, q.producer() as other:
        if not watching(p):
            pytest.skip("no inotify here")
        p._ready.relist_after = float("inf")
        p.put("mine")
        for i in range(5):
            other.put(i)
        assert p._ready.count(1000) == ready_files(qpath) == 6
        assert p._ready.listings == 1


def test_an_old_count_is_listed_again(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=1000, max_batch_age=None)
    with q.producer() as p:
        p._ready.relist_after = 0.0  # every count is "old": events of other hosts are not reported
        for i in range(5):
            p.put(i)
        assert p._ready.listings == 5


def test_without_inotify_every_seal_lists(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=1000, max_batch_age=None)
    with q.producer() as p:
        p._waiter._use_inotify = False
        for i in range(5):
            p.put(i)
        assert p._ready.listings == 5
        assert p._ready.count(1000) == ready_files(qpath) == 5
