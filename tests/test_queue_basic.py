"""One-process behaviour of Queue, Producer and Consumer."""

from __future__ import annotations

import fractions
import os
import pickle
import stat
import threading
import time
import types
import warnings
from collections import Counter

import pytest
from _workers import Rot13Serializer, queue_files

import turbo_queue
from turbo_queue import _naming, _producer
from turbo_queue._errors import BatchFormatError, Closed, Empty, Full, TurboQueueError


def drain(q, timeout=0.0):
    """Every item ready now, in delivery order (stops at Empty or Closed)."""
    got = []
    with q.consumer() as c:
        while True:
            try:
                got.extend(c.get_batch(timeout=timeout))
            except (Empty, Closed):
                return got


def folder_states(path):
    names = os.listdir(path)
    return {s: sum(n.startswith(s) and n.endswith(".tqb") for n in names) for s in ("l_", "r_", "c_")}


# -- folder set-up ---------------------------------------------------------------


def test_folder_is_created_private(qpath):
    q = turbo_queue.Queue(qpath)
    assert q.path == qpath
    assert qpath.is_dir()
    assert stat.S_IMODE(os.stat(qpath).st_mode) == 0o700


def test_nested_folder_is_created(tmp_path):
    q = turbo_queue.Queue(tmp_path / "a" / "b" / "q")
    assert q.path.is_dir()
    assert stat.S_IMODE(os.stat(q.path).st_mode) == 0o700


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    q = turbo_queue.Queue("rel")
    assert q.path.is_absolute() and q.path == tmp_path / "rel"


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_shared_folder_refused_with_pickle(qpath, mode):
    qpath.mkdir()
    os.chmod(qpath, mode)
    with pytest.raises(PermissionError) as info:
        turbo_queue.Queue(qpath)
    assert str(qpath) in str(info.value)
    assert "allow_shared" in str(info.value)
    with pytest.warns(UserWarning, match="writable by other users"):
        q = turbo_queue.Queue(qpath, allow_shared=True)
    with q.producer() as p:
        p.put("ok")
    assert drain(q) == ["ok"]


@pytest.mark.parametrize("serializer", ["json", "raw"])
def test_shared_folder_warns_with_safe_serializers(qpath, serializer):
    qpath.mkdir()
    os.chmod(qpath, 0o775)
    with pytest.warns(UserWarning, match=str(qpath)):
        turbo_queue.Queue(qpath, serializer=serializer)


def test_private_folder_does_not_warn(qpath):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        turbo_queue.Queue(qpath)
        turbo_queue.Queue(qpath, serializer="json")


# -- serializers -----------------------------------------------------------------


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __hash__(self):
        return hash((self.x, self.y))


PICKLE_ITEMS = [
    None, True, 0, -1, 2**100, 1.5, float("inf"), complex(1, 2), "", "héllo wörld ✓ 🐍", "\ud800 lone surrogate",
    b"", b"\x00\xff\x00binary", bytearray(b"ba"), (1, "a"), [1, [2, [3]]], {"k": {1, 2}}, frozenset({3}),
    fractions.Fraction(1, 3), Point(1, 2), {"big": b"x" * 300_000},
]
JSON_ITEMS = [None, True, 0, -5, 1.25, "", "héllo ✓ 🐍 \u0000 nul", [1, "a", None], {"a": {"b": [1, 2]}},
              "x" * 200_000]
RAW_ITEMS = [b"", b"\x00\x01\xff" * 10, "", "unicode ✓ 🐍", "\ud800\udfff surrogates", b"b" * 100_000, "s"]
ROT13_ITEMS = ["hello", "", "ÄÖ ✓", "abc" * 1000]


@pytest.mark.parametrize("serializer, items", [
    ("pickle", PICKLE_ITEMS), ("json", JSON_ITEMS), ("raw", RAW_ITEMS), (Rot13Serializer(), ROT13_ITEMS),
], ids=["pickle", "json", "raw", "custom"])
@pytest.mark.parametrize("how", ["put", "put_many", "mixed"])
def test_every_serializer_round_trips(qpath, serializer, items, how):
    q = turbo_queue.Queue(qpath, batch_size=4, serializer=serializer, max_batch_age=None)
    with q.producer() as p:
        if how == "put":
            for item in items:
                p.put(item)
        elif how == "put_many":
            p.put_many(items)
        else:
            p.put(items[0])
            p.put_many(items[1:5])
            for item in items[5:7]:
                p.put(item)
            p.put_many(iter(items[7:]))  # any iterable
    got = drain(q)
    assert len(got) == len(items)
    for a, b in zip(got, items):
        if isinstance(b, bytearray):
            assert a == b
        elif isinstance(b, float) and b != b:
            assert a != a
        else:
            assert a == b and type(a) is type(b), (a, b)


def test_raw_keeps_bytes_and_str_apart(qpath):
    q = turbo_queue.Queue(qpath, serializer="raw", batch_size=10)
    with q.producer() as p:
        p.put("s")
        p.put(b"s")
        p.put(memoryview(b"mv"))
    got = drain(q)
    assert got == ["s", b"s", b"mv"]
    assert [type(x) for x in got] == [str, bytes, bytes]


@pytest.mark.parametrize("serializer", ["pickle", "json"])
@pytest.mark.parametrize("how", ["put", "put_many"])
def test_mutate_and_reput_delivers_each_version(qpath, serializer, how):
    # capture="put" (and put_many whatever the capture): encoded at the call.
    # The default, capture="seal", is tested in tests/test_put_capture.py.
    q = turbo_queue.Queue(qpath, batch_size=10, serializer=serializer, capture="put")
    d = {"n": 1, "seen": [1]}
    with q.producer() as p:
        if how == "put":
            p.put(d)
            d["n"] = 2
            d["seen"].append(2)
            p.put(d)
        else:
            p.put_many([d])
            d["n"] = 2
            d["seen"].append(2)
            p.put_many([d, d])
        d["n"] = 3
        d["seen"].append(3)
    got = drain(q)
    first = {"n": 1, "seen": [1]}
    second = {"n": 2, "seen": [1, 2]}
    assert got == ([first, second] if how == "put" else [first, second, second])


# -- ordering ----------------------------------------------------------------------


def test_one_producer_one_consumer_keep_put_order(qpath):
    q = turbo_queue.Queue(qpath, batch_size=7, max_batch_age=None)
    with q.producer() as p:
        for i in range(100):
            p.put(i)
        p.put_many(range(100, 230))
        for i in range(230, 250):
            p.put(i)
        assert p.sealed_batches >= 30
    with q.consumer() as c:
        got = [c.get(timeout=0) for _ in range(250)]
        with pytest.raises(Empty):
            c.get(timeout=0)
    assert got == list(range(250))


def test_interleaved_producers_keep_their_own_order(qpath):
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=None)
    with q.producer() as a, q.producer() as b:
        for i in range(60):
            a.put(("a", i))
            b.put(("b", i))
            if i % 7 == 0:
                b.flush()
    got = drain(q)
    assert Counter(got) == Counter([("a", i) for i in range(60)] + [("b", i) for i in range(60)])
    for who in "ab":
        assert [i for w, i in got if w == who] == list(range(60))


def test_order_survives_the_clock_going_backwards(qpath, monkeypatch):
    real_time = _producer.time
    state = {"now": real_time.time_ns()}

    def time_ns():
        state["now"] -= 1_000_000_000  # every reading one second before the previous one
        return state["now"]

    fake = types.SimpleNamespace(**{k: getattr(real_time, k) for k in dir(real_time) if not k.startswith("__")})
    fake.time_ns = time_ns
    monkeypatch.setattr(_producer, "time", fake)
    if hasattr(_producer, "time_ns"):
        monkeypatch.setattr(_producer, "time_ns", time_ns)
    q = turbo_queue.Queue(qpath, batch_size=5, max_batch_age=None)
    with q.producer() as p:
        for i in range(40):
            p.put(i)
        p.put_many(range(40, 63))
    assert state["now"] < real_time.time_ns() - 5e9, "the fake clock was not used"
    names = queue_files(qpath)
    assert len(names) == 13
    seq = [_naming.parse_batch_name(n).seq for n in names]
    assert seq == sorted(seq)
    assert drain(q) == list(range(63))


# -- close, drain, reopen --------------------------------------------------------------


def test_close_drain_and_reopen(qpath):
    q = turbo_queue.Queue(qpath, batch_size=10)
    with q.producer() as p:
        p.put_many(range(25))
    q.close()
    assert q.is_closed()
    assert q.stats()["closed"] is True
    with pytest.raises(Closed) as info:
        with q.producer() as p2:
            p2.put("late")
    assert info.value.path == str(qpath)
    # Another Queue object on the same path (another application) sees it too.
    other = turbo_queue.Queue(qpath, batch_size=10)
    assert other.is_closed()
    with pytest.raises(Closed):
        other.producer().put_many(["late"])
    with q.consumer() as c:
        assert list(c) == list(range(25))  # iteration ends at the end of stream
        with pytest.raises(Closed):
            c.get(timeout=5)
        with pytest.raises(Closed):
            c.get_batch(timeout=5)
        with pytest.raises(Closed):
            c.get(timeout=None)  # closed and drained: no wait, even without a timeout
    q.reopen()
    assert not q.is_closed() and not other.is_closed()
    with q.producer() as p:
        p.put("again")
    assert drain(q) == ["again"]


def test_reopen_by_another_application_reopens_everywhere(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1)
    other = turbo_queue.Queue(qpath, batch_size=1)
    q.close()
    assert q.is_closed() and other.is_closed()
    other.reopen()
    assert not q.is_closed()
    with q.producer() as p:
        p.put("after reopen")
    assert drain(other) == ["after reopen"]


def test_producer_with_empty_batch_refuses_puts_after_close(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2)
    p = q.producer()
    p.put_many([1, 2])  # a full batch: sealed, nothing pending
    assert p.pending == 0
    q.close()
    with pytest.raises(Closed):
        p.put(3)
    with pytest.raises(Closed):
        p.put_many([3])
    p.close()
    with q.consumer() as c:
        assert list(c) == [1, 2]


def test_put_on_closed_producer(qpath):
    q = turbo_queue.Queue(qpath)
    p = q.producer()
    p.close()
    p.close()  # idempotent
    with pytest.raises(TurboQueueError):
        p.put(1)


def test_consumer_iteration_waits_for_other_consumers_claimed_batch(qpath):
    """A closed queue is not drained while another consumer may still release a batch."""
    q = turbo_queue.Queue(qpath, batch_size=2, recover_interval=0.05)
    with q.producer() as p:
        p.put_many([1, 2])
    q.close()
    holder = q.consumer()
    assert holder.get_batch(timeout=0) == [1, 2]
    with q.consumer() as c:
        with pytest.raises(Empty):
            c.get(timeout=0.1)  # not Closed: the held batch may come back
        holder.release()
        assert list(c) == [1, 2]
    holder.close()


# -- consumer acking ---------------------------------------------------------------------


def test_batch_context_exception_releases_and_redelivers_first(qpath):
    q = turbo_queue.Queue(qpath, batch_size=3)
    with q.producer() as p:
        p.put_many(range(9))
    with q.consumer() as c:
        with pytest.raises(RuntimeError):
            with c.batch(timeout=0) as items:
                assert items == [0, 1, 2]
                raise RuntimeError("boom")
        assert folder_states(qpath) == {"l_": 0, "r_": 3, "c_": 0}
        # Released to the same place in line: it is the next batch out.
        with c.batch(timeout=0) as items:
            assert items == [0, 1, 2]
        assert folder_states(qpath) == {"l_": 0, "r_": 2, "c_": 0}  # acked on clean exit
        assert c.get_batch(timeout=0) == [3, 4, 5]
        assert c.get_batch(timeout=0) == [6, 7, 8]


def test_batch_context_release_is_seen_by_other_consumer(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2)
    with q.producer() as p:
        p.put_many(range(4))
    a, b = q.consumer(), q.consumer()
    with pytest.raises(ValueError):
        with a.batch(timeout=0):
            raise ValueError
    assert b.get_batch(timeout=0) == [0, 1]
    assert a.get_batch(timeout=0) == [2, 3]
    a.close()
    b.close()
    assert folder_states(qpath) == {"l_": 0, "r_": 0, "c_": 0}


def test_get_batch_is_acked_at_next_call_and_on_close(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2)
    with q.producer() as p:
        p.put_many(range(6))
    c = q.consumer()
    assert c.get_batch(timeout=0) == [0, 1]
    assert folder_states(qpath) == {"l_": 0, "r_": 2, "c_": 1}
    assert c.get_batch(timeout=0) == [2, 3]
    assert folder_states(qpath) == {"l_": 0, "r_": 1, "c_": 1}
    c.ack()
    assert folder_states(qpath) == {"l_": 0, "r_": 1, "c_": 0}
    c.ack()  # nothing held: no-op
    assert c.get_batch(timeout=0) == [4, 5]
    c.close()
    assert folder_states(qpath) == {"l_": 0, "r_": 0, "c_": 0}
    assert drain(q) == []


def test_get_partial_then_close_releases_the_batch(qpath):
    q = turbo_queue.Queue(qpath, batch_size=5)
    with q.producer() as p:
        p.put_many(range(5))
    c = q.consumer()
    assert c.get(timeout=0) == 0
    assert c.get(timeout=0) == 1
    c.close()
    c.close()  # idempotent
    assert folder_states(qpath) == {"l_": 0, "r_": 1, "c_": 0}
    assert drain(q) == [0, 1, 2, 3, 4]


def test_get_whole_batch_then_close_acks_it(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2)
    with q.producer() as p:
        p.put_many(range(2))
    with q.consumer() as c:
        assert [c.get(timeout=0), c.get(timeout=0)] == [0, 1]
    assert folder_states(qpath) == {"l_": 0, "r_": 0, "c_": 0}


def test_exception_in_consumer_block_releases_partial_batch(qpath):
    q = turbo_queue.Queue(qpath, batch_size=3)
    with q.producer() as p:
        p.put_many(range(3))
    with pytest.raises(KeyError):
        with q.consumer() as c:
            c.get(timeout=0)
            raise KeyError
    assert drain(q) == [0, 1, 2]


def test_get_batch_after_partial_get_returns_the_rest(qpath):
    q = turbo_queue.Queue(qpath, batch_size=4)
    with q.producer() as p:
        p.put_many(range(8))
    with q.consumer() as c:
        assert c.get(timeout=0) == 0
        assert c.get_batch(timeout=0) == [1, 2, 3]
        assert c.get_batch(timeout=0) == [4, 5, 6, 7]


def test_closed_consumer_refuses_gets(qpath):
    q = turbo_queue.Queue(qpath)
    c = q.consumer()
    c.close()
    with pytest.raises(TurboQueueError):
        c.get(timeout=0)


def test_empty_after_timeout(qpath):
    q = turbo_queue.Queue(qpath)
    with q.consumer() as c:
        t0 = time.monotonic()
        with pytest.raises(Empty) as info:
            c.get(timeout=0.2)
        assert time.monotonic() - t0 >= 0.19
        assert info.value.path == str(qpath)
        with pytest.raises(Empty):
            c.get_batch(timeout=0)


def test_get_waits_for_a_batch_sealed_later(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2)
    started = threading.Event()

    def produce():
        started.wait(10)
        with q.producer() as p:
            p.put_many(["x", "y"])

    t = threading.Thread(target=produce)
    t.start()
    try:
        with q.consumer() as c:
            started.set()
            assert c.get(timeout=20) == "x"
    finally:
        t.join(20)
    assert not t.is_alive()


# -- time flush ---------------------------------------------------------------------------


def test_idle_producer_is_flushed_by_age(qpath):
    age = 0.2
    q = turbo_queue.Queue(qpath, batch_size=1000, max_batch_age=age)
    p = q.producer()
    p.put("a")
    p.put_many(["b", "c"])
    assert p.pending == 3 and p.sealed_batches == 0
    with q.consumer() as c:
        t0 = time.monotonic()
        assert c.get(timeout=age * 10) == "a"  # no further producer call: the thread sealed it
        waited = time.monotonic() - t0
        assert [c.get(timeout=0), c.get(timeout=0)] == ["b", "c"]
    assert p.sealed_batches == 1 and p.pending == 0
    assert waited < age * 10
    p.close()


def test_no_age_flush_when_disabled(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1000, max_batch_age=None)
    p = q.producer()
    p.put("a")
    with q.consumer() as c:
        with pytest.raises(Empty):
            c.get(timeout=0.3)
        p.flush()
        assert c.get(timeout=0) == "a"
    p.close()


def test_close_seals_pending_and_stops_flush_thread(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1000, max_batch_age=0.05)
    p = q.producer()
    p.put(1)
    p.close()
    assert p.pending == 0 and p.sealed_batches == 1
    flushers = [t for t in threading.enumerate() if t.name.startswith("turbo_queue-flush")]
    assert not [t for t in flushers if p._owner.nonce in t.name]
    assert drain(q) == [1]


def test_flush_with_nothing_pending_is_a_no_op(qpath):
    q = turbo_queue.Queue(qpath)
    with q.producer() as p:
        p.flush()
        p.flush(timeout=0)
    assert queue_files(qpath) == []


# -- backpressure ------------------------------------------------------------------------


def test_full_when_max_ready_batches_wait(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2, max_ready=2, max_batch_age=None)
    p = q.producer()
    accepted = []
    with pytest.raises(Full) as info:
        for i in range(20):
            p.put(i, timeout=0.05)
            accepted.append(i)
    refused = len(accepted)
    assert info.value.path == str(qpath)
    assert q.stats()["ready"]["batches"] == 2
    # At most one more full batch is held in memory beyond max_ready.
    assert 4 <= len(accepted) <= 6
    with pytest.raises(Full):
        p.put_many(["never"], timeout=0)
    if p.pending:
        with pytest.raises(Full):
            p.flush(timeout=0)
    # Make room: everything accepted is delivered, the refused items are not.
    got = []
    with q.consumer() as c:
        got.extend(c.get_batch(timeout=0))
        p.flush(timeout=5)
        p.close(timeout=5)
        while True:
            try:
                got.extend(c.get_batch(timeout=0))
            except Empty:
                break
    assert got == accepted
    assert refused not in got and "never" not in got


def test_blocked_put_resumes_when_a_consumer_takes_a_batch(qpath):
    q = turbo_queue.Queue(qpath, batch_size=1, max_ready=2, max_batch_age=None)
    p = q.producer()
    p.put("a")
    p.put("b")
    p.put("c")  # full batch, kept in memory: no room to seal it
    assert q.stats()["ready"]["batches"] == 2
    done = threading.Event()
    errors = []

    def blocked_put():
        try:
            p.put("d", timeout=30)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        done.set()

    t = threading.Thread(target=blocked_put)
    t.start()
    try:
        assert not done.wait(0.2), "put did not block although max_ready batches wait"
        with q.consumer() as c:
            assert c.get_batch(timeout=0) == ["a"]
            assert done.wait(20), "put did not resume after a batch was taken"
            assert not errors
            got = ["a"]
            got.extend(c.get_batch(timeout=0))
            got.extend(c.get_batch(timeout=0))
            p.close(timeout=10)  # seals "d" now that there is room
            got.extend(c.get_batch(timeout=0))
            with pytest.raises(Empty):
                c.get_batch(timeout=0)
    finally:
        t.join(20)
    assert got == ["a", "b", "c", "d"]


# -- threads ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_threads_exact_delivery(qpath):
    """Producers and consumers in threads of one process (each with its own object)."""
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=0.01, recover_interval=0.05)
    n_prod, n_cons, per = 4, 3, 300
    results = [[] for _ in range(n_cons)]
    errors = []

    def produce(k):
        try:
            with q.producer() as p:
                for i in range(per):
                    if i % 50 == 0:
                        p.put_many([(k, i + j) for j in range(10)])
                    elif i % 50 < 10:
                        continue
                    else:
                        p.put((k, i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def consume(k):
        try:
            with q.consumer() as c:
                results[k].extend(c)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    consumers = [threading.Thread(target=consume, args=(k,)) for k in range(n_cons)]
    producers = [threading.Thread(target=produce, args=(k,)) for k in range(n_prod)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(40)
    q.close()
    for t in consumers:
        t.join(40)
    assert not any(t.is_alive() for t in producers + consumers)
    assert not errors, errors
    got = Counter(x for r in results for x in r)
    assert got == Counter((k, i) for k in range(n_prod) for i in range(per))
    assert q.stats()["aside"] == 0


# -- pickling ---------------------------------------------------------------------------


@pytest.mark.parametrize("serializer", ["pickle", "json", "raw", Rot13Serializer()])
def test_queue_pickles(qpath, serializer):
    q = turbo_queue.Queue(qpath, batch_size=7, max_ready=3, max_batch_age=0.5, serializer=serializer,
                          durable=True, recover_interval=0.25)
    q2 = pickle.loads(pickle.dumps(q))
    assert q2.path == q.path
    assert (q2.batch_size, q2.max_ready, q2.max_batch_age, q2.durable, q2.recover_interval) == (7, 3, 0.5, True, 0.25)
    assert repr(q2) == repr(q)
    with q.producer() as p:
        p.put("v")
    assert drain(q2) == ["v"]


def test_producer_and_consumer_do_not_pickle(qpath):
    q = turbo_queue.Queue(qpath)
    with q.producer() as p, q.consumer() as c:
        with pytest.raises(TypeError, match="queue.producer"):
            pickle.dumps(p)
        with pytest.raises(TypeError, match="queue.consumer"):
            pickle.dumps(c)


@pytest.mark.parametrize("exc", [
    TurboQueueError("msg", "/some/path"), TurboQueueError("no path"), Full("full", "/q"), Empty("empty", "/q"),
    Closed("closed", "/q"), BatchFormatError("bad", "/q/r_x.tqb", reason="format-v99"),
])
def test_exceptions_pickle(exc):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert back.message == exc.message and back.path == exc.path
    assert back.args == exc.args
    if isinstance(exc, BatchFormatError):
        assert back.reason == exc.reason
    if exc.path:
        assert exc.path in str(exc)


def test_exception_hierarchy():
    for cls in (Full, Empty, Closed, BatchFormatError):
        assert issubclass(cls, TurboQueueError)
    assert issubclass(TurboQueueError, Exception)
    assert turbo_queue.Full is Full and turbo_queue.Closed is Closed


# -- stats and recover ------------------------------------------------------------------


def test_stats_counts_states(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2)
    p = q.producer()
    p.put_many(range(5))  # two sealed, one pending
    c = q.consumer()
    c.get_batch(timeout=0)
    s = q.stats()
    assert s["ready"] == {"batches": 1, "events": 2}
    assert s["claimed"] == {"batches": 1, "events": 2}
    assert s["loading"] == {"batches": 0, "events": 0}
    assert s["closed"] is False and s["aside"] == 0
    assert s["oldest_ready_age_s"] is not None and s["oldest_ready_age_s"] >= 0
    c.close()
    p.close()
    assert q.stats()["ready"] == {"batches": 2, "events": 3}
    assert not q.recover()  # nothing dead: nothing to do


def test_durable_round_trip(qpath):
    q = turbo_queue.Queue(qpath, batch_size=3, durable=True)
    with q.producer() as p:
        p.put_many(range(7))
    q.close()
    assert (qpath / "CLOSED").exists()
    with q.consumer() as c:
        assert list(c) == list(range(7))


@pytest.mark.parametrize("max_batch_age", [None, 0.05])
def test_producer_dropped_without_close_seals_its_items(qpath, max_batch_age):
    q = turbo_queue.Queue(qpath, batch_size=100, max_batch_age=max_batch_age)
    q.producer().put("one-liner")  # the Producer is garbage at once
    p = q.producer()
    p.put_many(["dropped", "later"])
    del p
    with q.consumer() as c:
        assert c.get_batch(timeout=2) == ["one-liner"]
        assert c.get_batch(timeout=2) == ["dropped", "later"]
