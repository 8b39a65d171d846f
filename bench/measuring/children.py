"""The child processes of a cell: producers and consumers, and what they report.

Every producer and consumer process of the queue sweep runs :func:`child_main`
(see bench.measuring.cell for the cell's timeline)::

    python -m pytest tests/bench/test_bench_cell.py -k "open_loop or latency"

* A producer puts events flat out (closed loop) or each at its scheduled
  time (open loop, bench.measuring.schedule) until the window's end.
* A consumer takes batches until the end of the stream and does the work
  of each event.  At check points, right after an event's work, it reads the
  clock: the count at the first check at or after each window edge gives its
  events inside the window, and inside the window it samples latency end to
  end (scheduled -> processed, work included), queue wait (scheduled ->
  batch received) and schedule lag (scheduled -> created).  It times its
  work at its start and after the drain (work drift, bench.measuring.validity).
"""

from __future__ import annotations

import os
import sys
from array import array
from typing import Any

from bench.measuring import pinning
from bench.measuring.events import EventFactory, clock_ns
from bench.measuring.processes import _die_with_parent, _write_result, report_child
from bench.measuring.schedule import produce_on_schedule
from bench.measuring.work import TEST_WORK_SCALE_ENV, burst_cost_us, make_work

#: Check the clock every SPARSE_CHECK events when the work per event is
#: cheaper than a clock read would be to ignore; a prime, so that check
#: points drift through batch positions instead of hitting the same one.
SPARSE_CHECK = 37


def _produce(backend, index: int, spec: dict, t0_ns: int) -> dict:
    make = EventFactory(index, spec["event_bytes"]).make
    stop_ns = t0_ns + spec["warmup_ns"] + spec["duration_ns"]
    rates = spec.get("rates")
    with backend.producer(index) as sink:
        if rates:
            # Open loop: the schedule starts at t0, so the warm-up runs at
            # the offered rate too (bench.measuring.schedule).
            return produce_on_schedule(sink.put, make, rate=rates[index],
                                       t_start_ns=t0_ns, stop_ns=stop_ns,
                                       window_start_ns=t0_ns + spec["warmup_ns"])
        clock = clock_ns
        put = sink.put
        i = 0
        # Check the clock every 16 events: cheap against making and putting
        # 16 events, and late by at most 16 events at the window's end.
        while clock() < stop_ns:
            for _ in range(16):
                put(make(i))
                i += 1
    return {"produced": i, "backlog": 0}


def _consume(backend, index: int, spec: dict, t0_ns: int, work) -> dict:
    # The work's cost, timed here, on this core, at the start (during the
    # warm-up) and again after the drain: the check that the work the cell
    # asked for is the work it got (bench.measuring.validity: work drift).
    probe = EventFactory(0, spec["event_bytes"]).make(0)
    expected = spec.get("work_cost_us")
    bursts = [burst_cost_us(work, probe, expected)]
    scale = os.environ.get(TEST_WORK_SCALE_ENV)
    if scale and spec["workload"] == "busy" and spec["work_us"] > 0:
        work = make_work("busy", spec["work_us"] * float(scale), spec["calibration"])
    win_start = t0_ns + spec["warmup_ns"]
    win_end = win_start + spec["duration_ns"]
    every = spec["check_every"]
    clock = clock_ns
    # The delivery check needs every sequence number: 8 bytes per consumed
    # event (plus 8 per latency sample) of the consumer's RSS, the same for
    # every backend, so peak_rss_mb grows a little with throughput.
    seqs = array("q")
    latency = array("q")
    qwait = array("q")
    lag = array("q")
    seq_append = seqs.append
    lat_append = latency.append
    qwait_append = qwait.append
    lag_append = lag.append
    n = 0
    batches = 0  # what the batch size was in fact (turbo's "auto" picks its own)
    next_check = 0
    snap_start = snap_end = -1
    with backend.consumer(index) as source:
        for batch in source.batches():
            # A consumer may have been blocked across a window edge; the
            # arrival of a batch is then the first moment it can tell.  It is
            # also when the batch was handed over: the end of its queue wait.
            now = received = clock()
            batches += 1
            if now >= win_start:
                if snap_start < 0:
                    snap_start = n
                if now >= win_end and snap_end < 0:
                    snap_end = n
            for ev in batch:
                check = n >= next_check
                work(ev)
                seq_append(ev["seq"])
                n += 1
                if check:
                    # Read after the work: an event is processed, and its
                    # latency ends, only when its work is done.
                    next_check = n - 1 + every
                    now = clock()
                    if now >= win_start:
                        if snap_start < 0:
                            snap_start = n
                        if now < win_end:
                            due = ev["scheduled_ns"]
                            lat_append(now - due)
                            qwait_append(received - due)
                            lag_append(ev["created_ns"] - due)
                        elif snap_end < 0:
                            snap_end = n
        polling = bool(getattr(source, "polling_fallback", lambda: False)())
    bursts.append(burst_cost_us(work, probe, expected))
    # A consumer that got nothing after an edge (starved, or blocked until
    # the end of the stream) did all its work before that edge.
    if snap_start < 0:
        snap_start = n
    if snap_end < 0:
        snap_end = n
    return {
        "consumed": n,
        "batches": batches,
        "window_events": snap_end - snap_start,
        "seqs": seqs.tobytes(),
        "latency_ns": latency.tobytes(),
        "queue_wait_ns": qwait.tobytes(),
        "schedule_lag_ns": lag.tobytes(),
        "work_bursts_us": bursts,
        "polling_fallback": polling,
    }


def child_main(role, index, backend, spec, ready, start, t0, result_path, core=None) -> None:
    """Entry point of every producer and consumer process (``core``: pin to it first)."""
    _die_with_parent()
    result: dict[str, Any] = {"role": role, "index": index, "pid": os.getpid()}
    if core is not None:
        # Before anything else, so that imports and the queue's set-up
        # already run on the core the child will be measured on.
        result["pinned_core"] = core if pinning.pin_self(core) else None

    def body() -> dict:
        work = None
        if role == "consumer":
            work = make_work(spec["workload"], spec["work_us"], spec["calibration"])
        ready.release()
        if not start.wait(spec["start_timeout_s"]):
            # The parent gave up on this cell before starting it.
            result["error"] = "never started"
            _write_result(result_path, result)
            sys.exit(3)
        t0_ns = t0.value
        if role == "producer":
            return _produce(backend, index, spec, t0_ns)
        return _consume(backend, index, spec, t0_ns, work)

    report_child(result_path, result, body)
