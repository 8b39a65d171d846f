"""When ``put`` captures an item (``Queue(..., capture="seal" | "put")``), and items that cannot be encoded.

With ``capture="seal"`` (the default) a producer keeps the objects it is given
and serializes each run of them with one call when the batch is sealed; with
``capture="put"`` it serializes each item in ``put``.  These tests pin what a
consumer receives in each mode, so a change of either is a failing test, and
what happens to an item that cannot be encoded and to its neighbours.
"""

from __future__ import annotations

import gc
import logging

import pytest
from _workers import drain, queue_files

import turbo_queue
from turbo_queue._errors import TurboQueueError


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("no pickling me")


BAD = {"pickle": Unpicklable, "json": set}


# -- what is sent --------------------------------------------------------------------


def test_default_capture_is_seal(qpath):
    q = turbo_queue.Queue(qpath)
    assert q.capture == "seal" and q.producer().capture == "seal"
    again = __import__("pickle").loads(__import__("pickle").dumps(turbo_queue.Queue(qpath, capture="put")))
    assert again.capture == "put"


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_seal_capture_sends_the_state_at_seal(qpath, serializer):
    # No capture argument: the default must stay the documented one.
    q = turbo_queue.Queue(qpath, batch_size=10, max_batch_age=None, serializer=serializer)
    d = {"n": 1, "seen": [1]}
    with q.producer() as p:
        p.put(d)
        d["n"] = 2
        d["seen"].append(2)
        p.put(d)
        d["n"] = 3
        d["seen"].append(3)
        p.flush()  # the state now is what is sent, for both puts
        d["n"] = 4  # after the seal: not sent
    got = drain(q)
    assert got == [{"n": 3, "seen": [1, 2, 3]}] * 2
    if serializer == "pickle":
        # One pickled list: the same object put twice arrives as one object.
        assert got[0] is got[1]


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_put_capture_sends_the_state_at_put(qpath, serializer):
    q = turbo_queue.Queue(qpath, batch_size=10, max_batch_age=None, serializer=serializer, capture="put")
    d = {"n": 1, "seen": [1]}
    with q.producer() as p:
        p.put(d)
        d["n"] = 2
        d["seen"].append(2)
        p.put(d)
        d["n"] = 3
    got = drain(q)
    assert got == [{"n": 1, "seen": [1]}, {"n": 2, "seen": [1, 2]}]
    assert got[0] is not got[1]


def test_put_many_encodes_at_the_call_whatever_the_capture(qpath):
    q = turbo_queue.Queue(qpath, batch_size=10, max_batch_age=None)
    d = {"n": 1}
    with q.producer() as p:
        p.put_many([d])
        d["n"] = 2
    assert drain(q) == [{"n": 1}]


def test_raw_serializer_encodes_at_put_even_with_seal_capture(qpath):
    q = turbo_queue.Queue(qpath, batch_size=10, serializer="raw")
    buf = bytearray(b"before")
    with q.producer() as p:
        p.put(buf)
        buf[:] = b"after!"
        with pytest.raises(TypeError, match="int"):
            p.put(5)  # refused by the put itself: raw encodes item by item
        assert p.pending == 1
    assert drain(q) == [b"before"]


def test_puts_and_put_many_keep_their_order_in_one_batch(qpath):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    with q.producer() as p:
        p.put(0)
        p.put(1)
        p.put_many([2, 3, 4])
        p.put(5)
        p.put_many([6])
        p.put_many([7])
        p.put(8)
    assert len(queue_files(qpath)) == 1
    assert drain(q) == list(range(9))


# -- items that cannot be encoded, found at seal ---------------------------------------------


@pytest.mark.parametrize("serializer", ["pickle", "json"])
def test_put_that_seals_raises_for_an_earlier_item_and_its_neighbours_are_delivered(qpath, serializer):
    q = turbo_queue.Queue(qpath, batch_size=5, max_batch_age=None, serializer=serializer)
    bad = BAD[serializer]()
    p = q.producer()
    p.put("a")
    p.put(bad)  # accepted: it is encoded only at seal
    p.put("b")
    p.put("c")
    with pytest.raises(TypeError, match=type(bad).__name__) as info:
        p.put("d")  # fills the batch and seals it
    exc = info.value
    assert "item 1 of its batch" in str(exc) and "4 other items sealed" in str(exc)
    assert exc.position == 1 and exc.dropped == 1
    assert exc.queued == 1  # this put's own item is in: a retry would queue it twice
    assert p.pending == 0 and p.sealed_items == 4
    # Still usable, and the error is not raised twice.
    p.put("e")
    p.close()
    assert drain(q) == ["a", "b", "c", "d", "e"]


def test_position_counts_every_item_put_to_the_producer(qpath):
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=None)
    p = q.producer()
    for i in range(3):
        p.put(i)  # sealed: positions 0-2
    p.put(3)
    p.put(Unpicklable())
    with pytest.raises(TypeError, match="Unpicklable") as info:
        p.put(5)
    assert info.value.position == 4 and "item 1 of its batch (item 4 put to this producer" in str(info.value)
    p.put(Unpicklable())  # item 6: 0-2 and 3, 5 sealed, 4 dropped
    p.put(7)
    with pytest.raises(TypeError, match="Unpicklable") as info:
        p.put(8)  # fills the batch
    assert info.value.position == 6 and "item 0 of its batch" in str(info.value)
    p.close()
    assert drain(q) == [0, 1, 2, 3, 5, 7, 8]


def test_flush_reports_the_dropped_item_and_seals_the_rest(qpath):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    p = q.producer()
    p.put("a")
    p.put(lambda: 0)
    p.put_many(["b", "c"])  # an encoded record between runs of objects
    p.put("d")
    with pytest.raises(TypeError, match="function") as info:
        p.flush()
    assert info.value.queued == 0 and info.value.dropped == 1 and info.value.position == 1
    assert p.pending == 0
    p.flush()  # reported once
    p.close()
    assert drain(q) == ["a", "b", "c", "d"]


def test_several_bad_items_are_counted_and_the_first_named(qpath):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    p = q.producer()
    p.put(1)
    p.put(Unpicklable())
    p.put(2)
    p.put(lambda: 0)
    with pytest.raises(TypeError, match="Unpicklable.*1 more item") as info:
        p.flush()
    assert info.value.dropped == 2 and info.value.position == 1
    p.close()
    assert drain(q) == [1, 2]


def test_a_batch_of_only_bad_items_writes_nothing(qpath):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    p = q.producer()
    p.put(lambda: 0)
    with pytest.raises(TypeError, match="function"):
        p.flush()
    assert queue_files(qpath) == [] and p.pending == 0
    p.close()


def test_close_seals_the_rest_closes_and_raises(qpath):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    p = q.producer()
    p.put("a")
    p.put(Unpicklable())
    with pytest.raises(TypeError, match="Unpicklable"):
        p.close()
    with pytest.raises(TurboQueueError, match="closed"):
        p.put("after close")
    p.close()  # idempotent, nothing more to report
    assert drain(q) == ["a"]


def test_a_background_seal_is_reported_by_the_next_call(qpath):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=0.05)
    p = q.producer()
    p.put("a")
    p.put(Unpicklable())
    with q.consumer() as c:
        # The age-flush thread seals the batch; the consumer waits for it (inotify, no sleep).
        assert c.get_batch(timeout=10) == ["a"]
        c.ack()
    with pytest.raises(TypeError, match="Unpicklable") as info:
        p.put("refused")  # the next call reports it, before taking its own item
    assert info.value.queued == 0 and p.pending == 0
    p.put("b")
    p.close()
    assert drain(q) == ["b"]


def test_dropped_items_of_a_producer_collected_without_close_are_logged(qpath, caplog):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=None)
    p = q.producer()
    p.put("a")
    p.put(Unpicklable())
    with caplog.at_level(logging.ERROR, logger="turbo_queue"):
        del p
        gc.collect()
    assert any("dropped 1 item it could not encode" in r.getMessage() for r in caplog.records)
    assert drain(q) == ["a"]
