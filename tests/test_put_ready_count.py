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
from turbo_queue._errors import Empty, Full


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


# -- consumers: the next ready names from the same kind of watch ------------------------------


def test_a_consumer_keeping_up_takes_new_batches_without_listing(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p, q.consumer() as c:
        if not c._waiter.poll():
            pytest.skip("no inotify here: every look lists, as before")
        c._arrivals.relist_after = float("inf")
        got = []
        for i in range(30):
            p.put(i)
            got += c.get_batch(timeout=0)
        assert got == list(range(30))
        assert c._arrivals.listings <= 2  # the first look (and at most one after its race)


def test_a_released_batch_is_next_again(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p, q.consumer() as c:
        for i in range(3):
            p.put(i)
        assert c.get_batch(timeout=0) == [0]
        c.release()
        assert c.get_batch(timeout=0) == [0]  # back in its place, not after the others
        assert c.get_batch(timeout=0) == [1]
        p.put(3)
        assert c.get_batch(timeout=0) == [2]
        assert c.get_batch(timeout=0) == [3]


def test_batches_claimed_by_another_consumer_are_not_handed_out_twice(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p, q.consumer() as a, q.consumer() as b:
        got = []
        for i in range(10):
            p.put(2 * i)
            p.put(2 * i + 1)
            got += a.get_batch(timeout=0) + b.get_batch(timeout=0)
        assert sorted(got) == list(range(20))


def test_a_batch_that_arrived_without_a_rename_is_found_by_the_next_listing(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p, q.consumer() as c:
        if not c._waiter.poll():
            pytest.skip("no inotify here: every look lists")
        c._arrivals.relist_after = float("inf")
        p.put("renamed")
        assert c.get_batch(timeout=0) == ["renamed"]
        c.ack()
        p.put("copied")
        name = next(n for n in queue_files(qpath) if n.startswith(_naming.READY))
        parsed = _naming.parse_batch_name(name)
        # Moved in under another ready name by a copy, not a rename: no event
        # for it (as for a batch renamed on another host of a network file system).
        copy = _naming.BatchName(_naming.READY, parsed.seal_ns + 1, parsed.seq, parsed.count, parsed.owner).name()
        (qpath / copy).write_bytes((qpath / name).read_bytes())
        (qpath / name).unlink()
        with pytest.raises(Empty):
            c.get_batch(timeout=0)  # the events alone do not show it
        c._arrivals.relist_after = 0.0  # as once RELIST_AFTER has passed
        assert c.get_batch(timeout=0) == ["copied"]


def test_claimed_batches_are_counted_and_tell_whether_a_consumer_is_idle(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p, q.consumer() as c:
        if not watching(p):
            pytest.skip("no inotify here")
        p._ready.relist_after = float("inf")
        for i in range(3):
            p.put(i)
        assert p._ready.idle_consumer()  # no claim seen: nothing says a consumer is busy
        c.get_batch(timeout=0)  # holds one claimed batch
        p._ready.count(1000)
        assert held(p) == 1 and not p._ready.idle_consumer()
        c.ack()
        p._ready.count(1000)
        assert held(p) == 0 and p._ready.idle_consumer()
        c.get_batch(timeout=0)
        c.release()  # back to ready: no longer claimed
        p._ready.count(1000)
        assert held(p) == 0 and p._ready.idle_consumer()
        # A listing (the timer's, or near the limit) counts the claimed names too.
        c.get_batch(timeout=0)
        p._ready.relist_after = 0.0
        p._ready.count(1000)
        assert held(p) == 1 and not p._ready.idle_consumer()


def held(p) -> int:
    """Claimed batches the producer's count sees held now."""
    return sum(p._ready._holding.values())


def test_a_second_consumer_is_known_from_its_first_claim(qpath, monkeypatch):
    # Two consumers that never work at the same time: counted as the most
    # claims seen at once they were one, and the producer saw that one busy
    # while the other idled (ReadyCount.consumers).
    from turbo_queue._folder import ReadyCount

    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p, q.consumer() as c1, q.consumer() as c2:
        if not watching(p):
            pytest.skip("no inotify here")
        p._ready.relist_after = float("inf")
        for i in range(4):
            p.put(i)
        c1.get_batch(timeout=0)
        p._ready.count(1000)
        assert p._ready.consumers() == 1 and not p._ready.idle_consumer()
        c1.ack()
        c2.get_batch(timeout=0)
        p._ready.count(1000)
        # c2 works, c1 waits: one of the two known consumers is idle.
        assert p._ready.consumers() == 2 and held(p) == 1 and p._ready.idle_consumer()
        c1.get_batch(timeout=0)
        p._ready.count(1000)
        assert held(p) == 2 and not p._ready.idle_consumer()
        # Forgotten CONSUMER_KEPT seconds after its last claim or ack, but
        # never while it holds a claim.
        c2.ack()
        p._ready.count(1000)
        monkeypatch.setattr(ReadyCount, "CONSUMER_KEPT", 0.0)
        p._ready._pruned_at = float("-inf")
        assert p._ready.consumers() == 1 and not p._ready.idle_consumer()  # c1, holding
        c1.ack()
        p._ready.count(1000)
        p._ready._pruned_at = float("-inf")
        assert p._ready.consumers() == 0 and p._ready.idle_consumer()  # nothing says any is busy


@pytest.fixture
def no_early_seals(monkeypatch):
    """An auto producer's background thread seals nothing: ticks, the CLOSED look and LINGER an hour away."""
    from turbo_queue import _producer
    from turbo_queue._sizing import AutoBatchSize

    monkeypatch.setattr(_producer, "AUTO_TICK", 3600.0)
    monkeypatch.setattr(_producer, "CLOSED_CHECK_INTERVAL", 3600.0)
    monkeypatch.setattr(AutoBatchSize, "LINGER", 3600.0)


def test_an_auto_producer_with_two_busy_consumers_seals_at_the_size(qpath, no_early_seals):
    # The events past the size go to the next consumer to free up: the batch
    # is sealed at the size, not filled on while both are busy.
    q = turbo_queue.Queue(qpath, batch_size="auto", max_batch_age=None)
    with q.producer() as p, q.consumer() as c1, q.consumer() as c2:
        if not watching(p):
            pytest.skip("no inotify here")
        for item in ("a", "b"):
            p.put(item)
            p.flush()
        assert sorted(c1.get_batch(timeout=30) + c2.get_batch(timeout=30)) == ["a", "b"]  # both busy
        size = p.batch_size  # the two quick seals may have grown it: it changes only at a seal
        for i in range(size + 50):
            p.put(i)
        assert p._ready.consumers() == 2 and not p._ready.idle_consumer()
        assert p.sealed_batches == 3 and p.pending == 50
        ready = [_naming.parse_batch_name(n) for n in queue_files(qpath) if n.startswith(_naming.READY)]
        assert [b.count for b in ready] == [size]


def test_an_auto_producer_with_its_one_consumer_busy_seals_at_the_size_and_holds_it(qpath, no_early_seals,
                                                                                    monkeypatch):
    # Sealed at the size, the batch is ready when the consumer acks, which
    # takes it at once; filled on until that ack, every batch waited for the
    # seal that the ack set off (turbo_queue/_sizing.py, "its one consumer
    # busy").  And the one ready batch that waits for the busy consumer does
    # not shrink the size: with the rule for several consumers it would
    # shrink a step every PATIENCE seals.
    from turbo_queue._sizing import AutoBatchSize

    monkeypatch.setattr(AutoBatchSize, "BUSY", float("inf"))  # the busy producer's bound stays out
    q = turbo_queue.Queue(qpath, batch_size="auto", max_batch_age=None)
    with q.producer() as p, q.consumer() as c:
        if not watching(p):
            pytest.skip("no inotify here")
        p.put("first")
        p.flush()
        assert c.get_batch(timeout=30) == ["first"]  # claimed, not acked: the consumer is busy
        size = p.batch_size
        sizes = []
        for round_ in range(2 * AutoBatchSize.PATIENCE + 1):
            for i in range(size):
                p.put((round_, i))
            assert p._ready.consumers() == 1 and not p._ready.idle_consumer()
            assert p.pending == 0  # sealed at the size while the consumer works
            sizes.append(p.batch_size)
            c.ack()
            assert c.get_batch(timeout=0) == [(round_, i) for i in range(size)]  # ready at the ack
        assert sizes == [size] * len(sizes)
