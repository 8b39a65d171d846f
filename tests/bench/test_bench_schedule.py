"""The open-loop schedule: loads, due times, a late producer, rates from closed-loop twins.

Run with::

    python -m pytest tests/bench/test_bench_schedule.py

No processes: the producer loop runs in this process against a list.
"""

from __future__ import annotations

import time

import pytest

from bench.measuring.cell import Cell
from bench.measuring.events import EventFactory
from bench.measuring.schedule import (
    LoadError,
    due_ns,
    frac_load,
    load_id_suffix,
    parse_load,
    produce_on_schedule,
    producer_rates,
    rate_load,
)


def test_loads_round_trip_and_bad_ones_are_refused():
    assert rate_load(2000.0) == "rate:2000" and frac_load(0.25) == "frac:0.25"
    assert parse_load("rate:2000") == ("rate", 2000.0)
    assert parse_load("frac:0.25") == ("frac", 0.25)
    assert parse_load("closed") == ("closed", None)
    for bad in ("open", "rate:", "rate:-5", "frac:0", "frac:nan", "rate:fast", "speed:5"):
        with pytest.raises(LoadError, match="^load: expected"):
            parse_load(bad)


def test_closed_cells_keep_their_ids_and_open_ones_add_their_load():
    closed = Cell("turbo", "fork", 1, 2, 100, 50.0, "busy", 300)
    assert closed.cell_id == "turbo-fork-p1-c2-b100-w50-busy-e300"
    opened = Cell("turbo", "fork", 1, 2, 100, 50.0, "busy", 300, "frac:0.5")
    assert opened.cell_id == closed.cell_id + "-frac0.5" and opened.open_loop
    assert opened.closed_twin() == closed
    assert load_id_suffix("rate:1500.5") == "-rate1500.5"


def test_the_rate_is_split_over_producers_and_due_times_never_drift():
    assert producer_rates(3000, 3) == [1000.0, 1000.0, 1000.0]
    # 3 events/s: 1/3 s is not a whole number of ns; event k is still due
    # at k/3 s to the nanosecond, however far out.
    assert due_ns(10, 3 * 10**6, 3.0) == 10 + 10**15
    assert due_ns(0, 1, 3.0) == 333_333_333


def test_a_late_producer_never_skips_and_its_events_keep_their_scheduled_times():
    sent: list[dict] = []
    make = EventFactory(0, 200).make

    def put(event):
        sent.append(event)
        if len(sent) == 5:
            time.sleep(0.03)  # a put blocked by a full queue, 30 events long at 1,000/s

    start = time.monotonic_ns() + 1_000_000
    out = produce_on_schedule(put, make, rate=1000.0, t_start_ns=start,
                              stop_ns=start + 100_000_000)
    assert out["produced"] == len(sent) >= 95
    # Every slot in order, none skipped, each stamped with its own due time.
    assert [e["seq"] for e in sent] == list(range(len(sent)))
    assert [e["scheduled_ns"] for e in sent] == [start + k * 1_000_000 for k in range(len(sent))]
    # The stall shows as lateness (creation after the slot), not as missing events.
    lateness = [e["created_ns"] - e["scheduled_ns"] for e in sent]
    assert max(lateness) >= 25_000_000
    assert min(lateness) >= 0, "an event was made before it was due"
    assert out["backlog"] == 100 - len(sent)


def test_the_last_microseconds_spin_yields_the_core_at_every_turn(monkeypatch):
    # A spin that kept its core took it from the consumers on a machine
    # with fewer cores than processes (see wait_until); the fake clock
    # advances 1 us a read, so the spin takes 38 turns (after the read that
    # finds 39 us left), each one a yield.
    from bench.measuring import schedule

    now = [0]

    def clock():
        now[0] += 1_000
        return now[0]

    yields = []
    monkeypatch.setattr(schedule.os, "sched_yield", lambda: yields.append(now[0]))
    schedule.wait_until(40_000, clock)  # under SPIN_NS: no sleep, only the spin
    assert now[0] >= 40_000
    assert len(yields) == 38


def test_the_pacing_spin_is_timed_from_the_window_start_only():
    # 20,000 events/s: each 50 us gap is all spin (under SPIN_NS).
    start = time.monotonic_ns() + 1_000_000
    stop = start + 60_000_000
    c0 = time.thread_time()
    out = produce_on_schedule(lambda e: None, EventFactory(0, 100).make, rate=20_000.0,
                              t_start_ns=start, stop_ns=stop, window_start_ns=start + 30_000_000)
    used = time.thread_time() - c0
    assert 0.0 < out["pacing_s"] <= used
    none = produce_on_schedule(lambda e: None, EventFactory(0, 100).make, rate=20_000.0,
                               t_start_ns=time.monotonic_ns(), stop_ns=time.monotonic_ns() + 10_000_000,
                               window_start_ns=time.monotonic_ns() + 10_000_000)
    assert none["pacing_s"] == 0.0


def test_the_pacing_spin_is_left_out_of_the_producers_cpu_and_the_overhead():
    # A producer that used 1 s of CPU in a 1 s window, 0.6 s of it pacing:
    # 40% of its core for the queue, and no bottleneck named "producers".
    import numpy as np
    import psutil

    from bench.measuring import machine
    from bench.measuring.sampling import window_figures

    def at(prod_user, prod_sys, cons_user):
        return {"per_cpu": psutil.cpu_times(percpu=True), "stat": machine.cpu_times_total(), "mhz": None,
                "took_ns": 0, "procs": {
                    "producer:0": {"user": prod_user, "system": prod_sys, "vol": 0, "invol": 0, "written": 0},
                    "consumer:0": {"user": cons_user, "system": 0.0, "vol": 0, "invol": 0, "written": 0}}}

    before, after = at(0.0, 0.0, 0.0), at(0.8, 0.2, 1.0)
    kw = dict(producers=("producer",), consumers=("consumer",), work_per_event=500.0, useful_us=500.0,
              latency_ms=np.array([1.0]), peak_rss_bytes=1e6)
    raw = window_figures(before, after, 1.0, 1000, [1000.0], **kw)
    paced = window_figures(before, after, 1.0, 1000, [1000.0], producer_pacing_s=0.6, **kw)
    assert raw["producer_cpu_pct"] == pytest.approx(100.0) and raw["bottleneck"] == "producers"
    assert paced["producer_cpu_pct"] == pytest.approx(40.0) and paced["bottleneck"] != "producers"
    assert raw["overhead_us_per_event"] == pytest.approx(1500.0)
    assert paced["overhead_us_per_event"] == pytest.approx(900.0)
    # What the processes used stays recorded as it was.
    assert (paced["producer_user_s"], paced["producer_sys_s"], paced["producer_pacing_s"]) == (0.8, 0.2, 0.6)
