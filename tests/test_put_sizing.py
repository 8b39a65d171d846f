"""The sealing policy of ``batch_size="auto"`` (turbo_queue/_sizing.py), driven directly.

No timing: the policy is given ready counts, and a simulated consumer with a
fake clock stands for the folder, so every result is deterministic.
"""

from __future__ import annotations

import pytest

import turbo_queue
from turbo_queue._sizing import AutoBatchSize


def simulate(rate, seconds=10.0, per_batch=300e-6, per_event=3e-6, tick=0.005, dt=0.0001,
             max_batch_size=10_000, rate_after=None):
    """One producer at ``rate`` events/s, one consumer taking ``per_batch + per_event * n`` per batch.

    The producer seals when it holds the policy's size, or when its
    background tick (every ``tick`` s) sees no batch waiting.  Returns
    (time, items sealed, size after the seal) per seal.
    """
    policy = AutoBatchSize(max_batch_size=max_batch_size)
    t, pending, next_tick, busy_until = 0.0, 0.0, tick, 0.0
    ready: list[int] = []
    seals = []
    for _ in range(int(seconds / dt)):
        t += dt
        pending += (rate if rate_after is None or t < seconds / 2 else rate_after) * dt
        if t >= busy_until and ready:
            busy_until = t + per_batch + per_event * ready.pop(0)
        seal = int(pending) >= policy.size
        if not seal and t >= next_tick:
            next_tick += tick
            seal = policy.seal_now(int(pending), len(ready))
        if seal and int(pending) >= 1:
            n = int(pending)
            pending -= n
            ready.append(n)
            policy.after_seal(n, n * 160, len(ready))
            seals.append((t, n, policy.size))
    return seals


def test_idle_consumers_get_the_open_batch_at_once():
    policy = AutoBatchSize()
    assert policy.seal_now(pending=5, ready=0)
    assert not policy.seal_now(pending=5, ready=1)  # a batch waits: the consumers have work
    assert not policy.seal_now(pending=0, ready=0)


def test_idle_consumers_shrink_the_size_step_by_step():
    policy = AutoBatchSize(initial=1000)
    sizes = [policy.after_seal(policy.size, policy.size * 100, ready=1) for _ in range(60)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    assert sizes[0] == 1000  # one idle seal alone changes nothing (patience)
    assert sizes[1] == 750


def test_backlog_grows_the_size_up_to_max_batch_size():
    policy = AutoBatchSize(max_batch_size=5000, initial=10)
    sizes = [policy.after_seal(policy.size, policy.size * 100, ready=6) for _ in range(60)]
    assert sizes == sorted(sizes) and sizes[-1] == 5000
    assert max(sizes) <= 5000


def test_max_batch_bytes_bounds_the_size_by_the_bytes_of_the_last_batch():
    policy = AutoBatchSize(max_batch_size=10_000, max_batch_bytes=50_000, initial=10)
    for _ in range(40):
        size = policy.after_seal(policy.size, policy.size * 1000, ready=6)  # 1000 bytes an item
    assert size == 50


def test_between_idle_and_backlog_the_size_holds():
    policy = AutoBatchSize(initial=300)
    assert [policy.after_seal(300, 30_000, ready=2) for _ in range(50)] == [300] * 50
    # Alternating conditions never build a streak.
    assert {policy.after_seal(300, 30_000, ready=r) for r in (1, 6) * 25} == {300}


@pytest.mark.parametrize("rate", [20_000, 100_000, 200_000])
def test_a_steady_rate_gives_a_stable_size(rate):
    seals = simulate(rate)
    late = [size for t, _n, size in seals if t > 5.0]
    changes = sum(1 for a, b in zip(late, late[1:]) if a != b)
    assert len(late) > 1000
    assert changes <= len(late) // 500, (changes, len(late), min(late), max(late))


def test_a_low_rate_seals_each_event_at_once_and_a_high_rate_grows_the_batches():
    low = simulate(1_000, seconds=2.0)
    # Consumers wait: from the start no batch waits to fill (at most a tick's
    # worth of events, sealed by the background thread), and once the size
    # has shrunk each event is sealed as it comes.
    assert max(n for _t, n, _size in low) <= 1_000 * 0.005 + 1
    assert {n for t, n, _size in low if t > 1.0} == {1}
    jump = simulate(20_000, rate_after=300_000)
    before = [size for t, _n, size in jump if 3.0 < t < 5.0]
    after = [size for t, _n, size in jump if t > 8.0]
    assert max(before) * 10 < min(after)


@pytest.mark.parametrize("kwargs, name", [
    ({"max_batch_size": 0}, "max_batch_size"), ({"max_batch_size": 1.5}, "max_batch_size"),
    ({"max_batch_bytes": 0}, "max_batch_bytes"), ({"max_batch_bytes": "1k"}, "max_batch_bytes"),
    ({"min_batch_size": 0}, "min_batch_size"), ({"min_batch_size": 20, "max_batch_size": 10}, "min_batch_size"),
])
def test_bad_policy_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AutoBatchSize(**kwargs)


# -- the policy in a producer ----------------------------------------------------------------


def test_auto_queue_seals_at_the_policy_size_and_follows_it(qpath):
    q = turbo_queue.Queue(qpath, batch_size="auto", max_batch_size=1000, max_batch_age=None)
    assert q.batch_size == "auto"
    with q.producer() as p:
        policy = p._sizing
        # This test is about the size: the idle-consumer rule (tested below)
        # must not seal early from the background thread meanwhile.
        policy.seal_now = lambda pending, ready: False
        assert p.batch_size == policy.size == 100
        for i in range(100):
            p.put(i)
        assert p.sealed_batches == 1  # sealed at the policy's size
        # No consumer takes anything: batches pile up and the size grows.
        for i in range(2000):
            p.put(i)
        assert policy.size > 100 and p.batch_size == policy.size


def test_auto_queue_pickles_and_refuses_bad_sizes(qpath):
    import pickle

    q = turbo_queue.Queue(qpath, batch_size="auto", max_batch_size=500, max_batch_bytes=10**6)
    again = pickle.loads(pickle.dumps(q))
    assert (again.batch_size, again.max_batch_size, again.max_batch_bytes) == ("auto", 500, 10**6)
    with pytest.raises(ValueError, match="batch_size"):
        turbo_queue.Queue(qpath, batch_size="big")
    with pytest.raises(ValueError, match="max_batch_size"):
        turbo_queue.Queue(qpath, batch_size="auto", max_batch_size=0)


def test_auto_queue_hands_a_waiting_consumer_the_open_batch_without_a_flush(qpath):
    # No max_batch_age and a size of 100: only the idle-consumer rule can seal these three.
    q = turbo_queue.Queue(qpath, batch_size="auto", max_batch_age=None)
    with q.producer() as p, q.consumer() as c:
        for i in range(3):
            p.put(i)
        assert c.get_batch(timeout=30) == [0, 1, 2]
        assert p.pending == 0 and p.sealed_batches == 1


def test_auto_queue_delivers_everything_in_order_to_a_live_consumer(qpath):
    import threading

    q = turbo_queue.Queue(qpath, batch_size="auto", max_batch_size=2000, max_ready=8)
    got: list[int] = []
    errors: list[BaseException] = []

    def consume():
        try:
            with q.consumer() as c:
                got.extend(c)  # until closed and drained
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        with q.producer() as p:
            for i in range(20_000):
                p.put(i)
            sealed = p.sealed_batches
    finally:
        q.close()
        thread.join(60)
    assert not thread.is_alive() and not errors
    assert got == list(range(20_000))
    assert 10 <= sealed  # sealed as it went, not in one batch at close
