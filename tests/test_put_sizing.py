"""The sealing policy of ``batch_size="auto"`` (turbo_queue/_sizing.py), driven directly.

No timing: the policy is given ready counts, and a simulated consumer with a
fake clock stands for the folder, so every result is deterministic.
"""

from __future__ import annotations

import random

import pytest

import turbo_queue
from turbo_queue._sizing import AutoBatchSize


def simulate(rate, seconds=10.0, per_batch=300e-6, per_event=3e-6, tick=0.005, dt=0.0001,
             max_batch_size=10_000, rate_after=None, fixed=None, waits=None,
             consumers=1, slow=None, busy=0.0, event_waits=None, start=0.0, handoff=0.0):
    """One producer at ``rate`` events/s, ``consumers`` taking ``per_batch + per_event * n`` per batch.

    The producer follows the policy as Producer does: at the size it seals;
    its background tick (every ``tick`` s) seals when ``seal_now`` says so.  The consumers are
    seen as ReadyCount sees them: known from their first claim, busy while
    they hold a batch.  Free consumers race for a ready batch in an order
    drawn at each step (seeded: the same run every time), as waiting
    processes do.  ``fixed``: a fixed batch size instead (sealed at the
    size and by ``max_batch_age``, 1 s, as Producer does).  ``waits``: a
    list that receives (events, seconds its oldest event waited until a
    consumer took the batch) per batch; ``event_waits``: one that receives
    (weight, seconds) for ten events spread over each batch, from the
    event's arrival to its hand-over (the consumer's work on the events
    before it included: what the harness's queue wait measures).
    ``handoff``: seconds from a seal until consumers can take the batch (the
    rename, the consumer's wake on it and its claim; 0.3-0.7 ms on the
    2-core VM for a consumer that waited), hidden when the batch is sealed
    while they are busy.  ``slow``: (period,
    length, factor): for ``length`` s of every ``period`` s the consumers'
    work per event costs ``factor`` times as much (a neighbour on a shared
    machine).  ``busy``: the producer's share of a core, as after_seal
    reads it (0: it only waits for the next event; the harness's open-loop
    producer at tens of thousands of events/s is busy).  ``start``: the
    consumers claim nothing before this time (processes still starting).
    Returns (time, items sealed, size after the seal) per seal.
    """
    policy = AutoBatchSize(max_batch_size=max_batch_size)
    race = random.Random(1)
    t, pending, next_tick = 0.0, 0.0, tick
    # Each consumer's work left on the batch it holds, in seconds at full
    # speed: a slow spell slows the work done during it, not the whole of
    # every batch taken during it (which made big batches pay a spell's
    # factor for their whole length, and favoured small ones).
    left = [0.0] * consumers
    ready: list[tuple[int, float, float]] = []
    seals = []
    first = None  # arrival time of the open batch's oldest event
    known: set[int] = set()  # consumers seen claiming
    order = list(range(consumers))
    for _ in range(int(seconds / dt)):
        t += dt
        arriving = (rate if rate_after is None or t < seconds / 2 else rate_after) * dt
        if int(pending) < 1 <= int(pending + arriving):
            first = t
        pending += arriving
        speed = 1.0 / slow[2] if slow is not None and t % slow[0] < slow[1] else 1.0
        race.shuffle(order)
        for i in order:
            if left[i] > 0.0:
                left[i] = max(0.0, left[i] - dt * speed)
            if left[i] <= 0.0 and ready and t >= start and ready[0][2] + handoff <= t:
                n, oldest, sealed_at = ready.pop(0)
                known.add(i)
                left[i] = per_batch + per_event * n
                if t > seconds / 4:
                    if waits is not None:
                        waits.append((n, t - oldest))
                    if event_waits is not None:
                        # Arrivals spread evenly over the batch's fill; each
                        # handed over after the work on the events before it.
                        for k in ((j + 0.5) * n / 10 for j in range(10)):
                            event_waits.append((n / 10, t + per_event * k / speed
                                                - (oldest + (sealed_at - oldest) * k / n)))
        claimed = sum(1 for work in left if work > 0.0)
        idle = not known or claimed < len(known)
        n = int(pending)
        if fixed is not None:
            seal = n >= fixed or (n >= 1 and first is not None and t - first >= 1.0 - tick)
        else:
            seal = n >= policy.size
            if not seal and t >= next_tick:
                next_tick += tick
                seal = policy.seal_now(n, len(ready), idle, t - first if first is not None else 0.0)
        if seal and n >= 1:
            pending -= n
            ready.append((n, first, t))
            fill_start, first = first, None
            size = fixed or policy.after_seal(n, n * 160, len(ready), t - fill_start, busy=busy, idle=idle, consumers=len(known))
            seals.append((t, n, size))
    return seals


def p99_wait(waits) -> float:
    """The p99 over events of ``waits`` or ``event_waits`` (weighted by their first field)."""
    total = sum(n for n, _w in waits)
    seen = 0
    for n, w in sorted(waits, key=lambda x: x[1]):
        seen += n
        if seen >= 0.99 * total:
            return w
    return float("nan")


# The 2-core VM's cell at 20 us of work with 2 consumers, as simulate sees
# it: about 22 us of consumer CPU per event and 400 us per batch, the
# open-loop producer busy (it spins between events), the consumers' CPU 1.7
# times slower for 50 ms of every 200 (the VM's speed flips about that much
# from one 50 ms sample to the next: `python -m bench calibrate --watch`).
VM_20US_TWO_CONSUMERS = {"per_batch": 400e-6, "per_event": 22e-6, "consumers": 2,
                         "slow": (0.2, 0.05, 1.7), "busy": 1.0}


def test_idle_consumers_get_the_open_batch_at_once():
    policy = AutoBatchSize()
    assert policy.seal_now(pending=5, ready=0)
    assert not policy.seal_now(pending=5, ready=1)  # a batch waits: the consumers have work
    assert not policy.seal_now(pending=0, ready=0)


def test_idle_consumers_shrink_the_size_step_by_step():
    policy = AutoBatchSize(initial=1000)
    sizes = [policy.after_seal(policy.size, policy.size * 100, ready=1, fill_s=0.0, busy=0.0) for _ in range(60)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
    assert sizes[0] == 1000  # one idle seal alone changes nothing (patience)
    assert sizes[1] == 750


def test_backlog_grows_the_size_up_to_max_batch_size():
    policy = AutoBatchSize(max_batch_size=5000, initial=10)
    sizes = [policy.after_seal(policy.size, policy.size * 100, ready=6, fill_s=0.0, busy=0.0) for _ in range(60)]
    assert sizes == sorted(sizes) and sizes[-1] == 5000
    assert max(sizes) <= 5000


def test_max_batch_bytes_bounds_the_size_by_the_bytes_of_the_last_batch():
    policy = AutoBatchSize(max_batch_size=10_000, max_batch_bytes=50_000, initial=10)
    for _ in range(40):
        size = policy.after_seal(policy.size, policy.size * 1000, ready=6, fill_s=0.0, busy=0.0)  # 1000 bytes an item
    assert size == 50


def test_between_idle_and_backlog_the_size_holds():
    policy = AutoBatchSize(initial=300)
    assert [policy.after_seal(300, 30_000, ready=2, fill_s=0.0, busy=0.0) for _ in range(50)] == [300] * 50
    # Alternating conditions never build a streak.
    assert {policy.after_seal(300, 30_000, ready=r, fill_s=0.0, busy=0.0) for r in (1, 6) * 25} == {300}


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
    # A rate past what small batches carry grows them (a backlog at every
    # seal), 100 times what 20,000/s gives.
    jump = simulate(20_000, rate_after=300_000)
    before = [n for t, n, _size in jump if 3.0 < t < 5.0]
    after = [n for t, n, _size in jump if t > 8.0]
    assert max(before) * 10 < min(after)


def test_near_capacity_auto_waits_no_longer_than_batch_100():
    # The 2-core VM's cell at 50 us of work, as the sweeps measured it: about
    # 360 us per batch and 46.7 us per event of consumer CPU, so capacity is
    # 21,400 events/s with big batches.  At 0.9 of that, batch 100 carries
    # the rate (its fill time, 5.2 ms, is its wait) and batch 1000 waits 52
    # ms.  auto sealing whenever no batch was ready made batches of ~80
    # events, the consumer at 98.8% busy, and a p99 wait of 12.1 ms; so did
    # shrinking on one ready batch while its one consumer was busy (11.6
    # ms, batches of ~70).  Holding the size then gives 4.4 ms, batches of
    # ~85.  (With the hand-off gap of the next test, 0.3 ms, it gives 6.2
    # ms against batch 100's 5.5, and filling on until the ack gave 11.7.)
    cost = {"per_batch": 360e-6, "per_event": 46.7e-6, "seconds": 20.0}
    rate = 0.9 / cost["per_event"]
    auto, b100, b1000 = [], [], []
    simulate(rate, waits=auto, **cost)
    simulate(rate, fixed=100, waits=b100, **cost)
    simulate(rate, fixed=1000, waits=b1000, **cost)
    assert p99_wait(auto) <= 1.1 * p99_wait(b100), (p99_wait(auto), p99_wait(b100))
    assert p99_wait(auto) * 5 < p99_wait(b1000)
    # The batches stay above what the consumer needs to keep up at this
    # rate (per_batch / (1/rate - per_event) = 69 events).
    mean = sum(n for n, _w in auto) / len(auto)
    assert mean > 80, mean


@pytest.mark.parametrize("busy", [0.0, 1.0])
def test_one_consumer_near_capacity_with_a_handoff_gap_waits_no_longer_than_batch_100(busy):
    # One consumer spinning 20 us per event (about 21 us of its CPU an event,
    # 100 us a batch) at 40,000 events/s, and 0.3 ms from a seal until a
    # consumer that waited for it has it: what the 2-core VM showed outside
    # the harness.  Filling the open batch on until the busy consumer's ack
    # made every batch wait for that seal, the consumer idle meanwhile, and
    # grew batches to ~145 events: a p99 wait of 5.8 ms against batch 100's
    # 2.8 in this simulation (on the VM, `python -m bench.micro.handoff_pairs
    # OLD NEW --rate 44000`: 12.4 against batch 100's 6.8 ms, then 5.2;
    # results/20261207T134003Z-vm/micro).
    # Sealed at the size, the next batch is ready at the ack.
    cost = {"per_batch": 100e-6, "per_event": 21e-6, "seconds": 10.0, "slow": (0.2, 0.05, 1.1),
            "handoff": 0.0003, "busy": busy}
    auto, b100 = [], []
    simulate(40_000, event_waits=auto, **cost)
    simulate(40_000, fixed=100, event_waits=b100, **cost)
    assert p99_wait(auto) <= 1.1 * p99_wait(b100), (p99_wait(auto), p99_wait(b100))


def test_a_backlog_grows_only_batches_that_fill_faster_than_grow_fill():
    policy = AutoBatchSize(initial=500)
    slow = [policy.after_seal(500, 50_000, ready=6, fill_s=AutoBatchSize.GROW_FILL, busy=0.0) for _ in range(20)]
    assert slow == [500] * 20  # already big enough: the backlog is the consumers' work
    fast = [policy.after_seal(policy.size, 50_000, ready=6, fill_s=AutoBatchSize.GROW_FILL / 10, busy=0.0) for _ in range(4)]
    assert fast == [500, 750, 750, 1125]


def test_a_backlog_after_a_shrink_is_remembered_for_seconds_of_filling_not_for_ever():
    # The size shrinks (the consumers wait for work), and the size it
    # shrank to then leads to a backlog: that size stays the floor for a
    # while (no hunting back to it right away) and is forgotten a step every
    # MEMORY seconds of filling.  Kept for 10,000 seals instead, a floor
    # held batches at 226 for the whole 2 s cell of the harness.
    policy = AutoBatchSize(initial=400)
    for _ in range(4):
        policy.after_seal(policy.size, 160 * policy.size, ready=1, fill_s=0.0005, busy=0.0)
    assert policy.size == 225
    for _ in range(2):
        policy.after_seal(policy.size, 160 * policy.size, ready=4, fill_s=0.0005, busy=0.0)
    assert policy.size == 338
    fill = 0.005
    sizes = [policy.after_seal(policy.size, 160 * policy.size, ready=1, fill_s=fill, busy=0.0) for _ in range(400)]
    assert min(sizes[:int(AutoBatchSize.MEMORY / fill / 2)]) == 226
    assert sizes[-1] <= 100, sizes[-1]


def test_a_start_before_the_consumers_claim_is_not_remembered():
    # Traced in the harness: the open-loop producer's start seals batches of
    # 100 within a ms, before the consumers' first claims, and the backlog
    # grows the size.  The size was never shrunk to, so the backlog sets no
    # floor and the size comes down as soon as the consumers wait for work.
    # Remembered (for MEMORY seconds of filling), it held batches of
    # 300-500 at 60,000 events/s with 2 consumers for most of a 2 s cell,
    # auto's p99 wait 11.9-13.7 times batch 100's.
    policy = AutoBatchSize(initial=100)
    for ready in (2, 3, 4, 3, 4, 4, 4):
        policy.after_seal(policy.size, 160 * policy.size, ready=ready, fill_s=0.0005, busy=0.0)
    assert policy.size > 300
    sizes = [policy.after_seal(policy.size, 160 * policy.size, ready=1, fill_s=0.005, busy=0.0) for _ in range(12)]
    assert sizes[-1] <= 100, sizes
    # The same in the simulation of the harness's cell (2 consumers at 20 us
    # of work, 35,000 events/s, slow spells, the producer busy), the
    # consumers claiming nothing for their first 50 ms: with the start
    # remembered auto's p99 wait was 6.6 ms against batch 100's 3.9.
    cost = {**VM_20US_TWO_CONSUMERS, "seconds": 2.0, "start": 0.05}
    auto, b100 = [], []
    simulate(35_000, event_waits=auto, **cost)
    simulate(35_000, fixed=100, event_waits=b100, **cost)
    assert p99_wait(auto) <= 1.1 * p99_wait(b100), (p99_wait(auto), p99_wait(b100))


def test_two_consumers_near_capacity_on_a_noisy_machine_wait_no_longer_than_batch_1000():
    # The 2-core VM's cell at 20 us of work with 2 consumers (about 22 us of
    # consumer CPU per event, 400 us per batch), at 0.9 of their capacity,
    # the consumers slowed by half for 0.2 s of every second as a busy
    # neighbour slows them there.  Each slow spell leaves a backlog; when
    # every backlog grew the size (no GROW_FILL), batches reached 2,187
    # events and the p99 wait was 67.1 ms against batch 1000's 65.1 ms
    # (63.6 ms with GROW_FILL, batches of at most 987): one consumer idles
    # while the other works through a big batch.  (Until the simulation
    # slowed only the work done during a spell, a batch taken in a spell
    # paid its factor whole, which weighed on big batches: 3,240 events and
    # 80 ms against 66.5 ms then.)  Removing GROW_FILL fails the size bound
    # below; the p99 margin alone is within the 5% asserted.
    cost = {"per_batch": 400e-6, "per_event": 22e-6, "seconds": 20.0, "consumers": 2, "slow": (1.0, 0.2, 1.5)}
    rate = 0.9 * 2 / cost["per_event"]
    auto, b1000 = [], []
    seals = simulate(rate, waits=auto, **cost)
    simulate(rate, fixed=1000, waits=b1000, **cost)
    assert p99_wait(auto) <= 1.05 * p99_wait(b1000), (p99_wait(auto), p99_wait(b1000))
    assert max(size for _t, _n, size in seals) <= AutoBatchSize.GROW * AutoBatchSize.GROW_FILL * rate


@pytest.mark.parametrize("share", [0.5, 0.6])
def test_two_consumers_at_half_their_capacity_wait_no_longer_than_batch_100(share):
    # The 2-core VM's cell at 20 us of work with 2 consumers
    # (VM_20US_TWO_CONSUMERS) and 35,000 events/s offered (about half of
    # what they carry there).  Waits per event, to the hand-over: the
    # harness's queue wait.  When the open batch filled on past its size
    # while both consumers were busy (as it did for one until 2026-12-07) the
    # events past the size waited behind the size's in one consumer while
    # the other freed up: p99 7.6 ms at 0.5 (batch 100: 4.5) and 14.3 at 0.6
    # (batch 100: 11.0), as the harness saw (18-22 against ~4 ms in 3 of 4
    # runs at 35,000/s).
    cost = {**VM_20US_TWO_CONSUMERS, "seconds": 10.0}
    rate = share * 2 / cost["per_event"]
    auto, b100 = [], []
    simulate(rate, event_waits=auto, **cost)
    simulate(rate, fixed=100, event_waits=b100, **cost)
    assert p99_wait(auto) <= 1.1 * p99_wait(b100), (p99_wait(auto), p99_wait(b100))


def simulate_closed(seconds=2.0, put_cost=2e-6, seal_cost=250e-6, per_batch=250e-6, per_event=1e-6,
                    consumers=2, tick=0.005, dt=2e-6, fixed=None):
    """A producer putting flat out, its puts and seals costing CPU; returns events sealed per second.

    Unlike :func:`simulate`, whose producer only waits for events, this one
    is the limit: each put costs ``put_cost`` and each seal ``seal_cost`` of
    its time, during which nothing is put, so its rate falls as its batches
    shrink.  Consumers take ``per_batch + per_event * n`` per batch, as there.
    The producer is busy all the time (``busy=1.0``).
    """
    policy = AutoBatchSize()
    t, pending, next_tick, free_at = 0.0, 0, tick, 0.0
    left = [0.0] * consumers
    ready: list[int] = []
    first = None
    sealed = 0
    known: set[int] = set()
    next_put = 0.0
    for _ in range(int(seconds / dt)):
        t += dt
        for i in range(consumers):
            if left[i] > 0.0:
                left[i] = max(0.0, left[i] - dt)
            if left[i] <= 0.0 and ready:
                known.add(i)
                left[i] = per_batch + per_event * ready.pop(0)
        claimed = sum(1 for work in left if work > 0.0)
        idle = not known or claimed < len(known)
        if t < free_at:
            continue  # sealing
        while next_put <= t:
            if pending == 0:
                first = next_put
            pending += 1
            next_put += put_cost
        if fixed is not None:
            seal = pending >= fixed
        else:
            seal = pending >= policy.size
            if not seal and t >= next_tick:
                next_tick += tick
                seal = policy.seal_now(pending, len(ready), idle, t - first)
        if seal and pending:
            ready.append(pending)
            sealed += pending
            if fixed is None:
                policy.after_seal(pending, pending * 160, len(ready), t - first, busy=1.0, idle=idle,
                                  consumers=len(known))
            pending = 0
            free_at = t + seal_cost
            next_put = max(next_put, free_at)
    return sealed / seconds


def test_a_busy_producer_with_fast_consumers_keeps_batch_1000_s_rate():
    # The 2-core VM's closed-loop cell at 0 us of work with 2 consumers:
    # the consumers take a batch faster than the producer fills one, so they
    # wait for work at every seal.  Shrinking on that alone took the size to
    # a few events, each seal then cost the producer more than its events,
    # and auto carried 0.05 of batch 1000's events/s there (the harness set
    # 20261207T013542Z); so does this simulation without the busy bound (0.05).
    auto, b1000 = simulate_closed(), simulate_closed(fixed=1000)
    assert auto >= 0.95 * b1000, (auto, b1000)


def test_a_busy_producer_grows_quick_batches_and_holds_them_within_the_band():
    fill = AutoBatchSize.MIN_FILL
    policy = AutoBatchSize(initial=100)
    # Consumers waiting (one batch ready), the producer busy: a batch that
    # filled in a tenth of MIN_FILL grows, patience first.
    grown = [policy.after_seal(policy.size, 16_000, ready=1, fill_s=fill / 10, busy=0.9) for _ in range(4)]
    assert grown == [100, 150, 150, 225]
    # From MIN_FILL to MIN_FILL_BAND times it the size holds; from there on, it shrinks.
    band = AutoBatchSize.MIN_FILL_BAND
    held = [policy.after_seal(225, 36_000, ready=1, fill_s=f * fill, busy=0.9) for f in (1.0, 1.2, band * 0.99) * 4]
    assert held == [225] * 12
    assert [policy.after_seal(policy.size, 36_000, ready=1, fill_s=band * fill, busy=0.9) for _ in range(2)] == [225, 168]
    # An idle producer's quick batches shrink, as ever: the growth left no floor.
    idle = [policy.after_seal(policy.size, 16_000, ready=1, fill_s=fill / 10, busy=0.1) for _ in range(30)]
    assert idle == sorted(idle, reverse=True) and idle[-1] == 1
    # Below BUSY the producer counts as idle (its quick batches shrink), at BUSY as busy (they grow).
    for busy, after in ((AutoBatchSize.BUSY - 0.01, [100, 75]), (AutoBatchSize.BUSY, [100, 150])):
        policy = AutoBatchSize(initial=100)
        assert [policy.after_seal(policy.size, 16_000, ready=1, fill_s=fill / 10, busy=busy)
                for _ in range(2)] == after, busy
    # A batch the background thread sealed early for an idle consumer (fewer
    # items than the size) filled quickly because it was sealed early, not
    # because the size fills quickly: it holds the size.
    policy = AutoBatchSize(initial=100)
    assert [policy.after_seal(40, 6_400, ready=1, fill_s=fill / 10, busy=0.9) for _ in range(4)] == [100] * 4


def test_one_busy_consumer_holds_the_size_and_an_idle_one_shrinks_it():
    # One ready batch after a seal: with its one consumer busy, it waits for
    # that consumer as the next batch would, and the size holds.
    held = AutoBatchSize(initial=200)
    assert [held.after_seal(200, 32_000, ready=1, fill_s=0.01, busy=0.0, idle=False, consumers=1)
            for _ in range(6)] == [200] * 6
    # The consumer idle at the seal: it waits for work, and the size shrinks.
    idle = AutoBatchSize(initial=200)
    assert [idle.after_seal(200, 32_000, ready=1, fill_s=0.01, busy=0.0, idle=True, consumers=1)
            for _ in range(4)] == [200, 150, 150, 112]
    # So it was if no batch is left ready: it took this one at once.
    taken = AutoBatchSize(initial=200)
    assert [taken.after_seal(200, 32_000, ready=0, fill_s=0.01, busy=0.0, idle=False, consumers=1)
            for _ in range(2)] == [200, 150]
    # Two or more consumers, all busy: one ready batch shrinks the size as
    # ever (a backlog's growth must come down again; see _sizing.py).
    two = AutoBatchSize(initial=200)
    assert [two.after_seal(200, 32_000, ready=1, fill_s=0.01, busy=0.0, idle=False, consumers=2)
            for _ in range(2)] == [200, 150]
    # Between puts: busy consumers hold the batch back for LINGER seconds at most.
    policy = AutoBatchSize()
    assert not policy.seal_now(5, ready=0, idle=False, waited=AutoBatchSize.LINGER / 2)
    assert policy.seal_now(5, ready=0, idle=False, waited=AutoBatchSize.LINGER)
    assert policy.seal_now(5, ready=0, idle=True, waited=0.0)


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
        policy.seal_now = lambda *args: False
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
