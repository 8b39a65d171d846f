"""The consumer's per-event CPU work, calibrated once per run.

Reproduce the calibration with::

    python -m bench calibrate --work-us 0,10,50,200

Workloads (the ``workload`` axis):

``busy``
    A pure-Python loop that spends ``work_us`` microseconds of CPU per event.
    It stands in for "whatever your pipeline does with a record" and is what
    makes the sweep meaningful: with real work per event, a queue that costs
    less CPU per event leaves more of the machine to the work.  The iteration count
    for each ``work_us`` of the sweep is calibrated once per run in the parent
    (:func:`calibrate`: start from ``iterations_per_us`` of a long loop, then
    refine against the measured cost of the call itself) and handed to every
    consumer, so every backend runs exactly the same loop.  ``work_us = 0`` calls a function
    that returns at once, so the consumer's code path stays identical.

``parse``
    ``json.loads(json.dumps(event))``: re-encode and parse the record, as a
    JSON-lines transform stage does.
``regex``
    A compiled key=value extraction regex over the record's message, as a
    log-parsing stage does.
``hash``
    SHA-256 of the message payload, as a dedup or sharding stage does.

For the named workloads (parse, regex, hash) ``work_us`` does not apply: the
transform runs once per event and costs what it costs; the sweep records
``work_us = 0`` for them and :func:`calibrate` measures their cost per event
(``work_cpu_us_per_event`` in runs.csv).
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections.abc import Callable

from bench.measuring.events import EventFactory

WORKLOADS = ("busy", "parse", "regex", "hash")

#: A busy setting's refined iteration count is accepted when its measured
#: cost lands within this fraction of the setting (see :func:`calibrate`).
CALIBRATION_TOLERANCE = 0.03
CALIBRATION_ATTEMPTS = 6

_KV = re.compile(r"(\w+)=([^\s,]+)")


def _busy_loop(n: int) -> None:
    # The measured unit of work.  Deliberately trivial bytecode so its cost
    # per iteration is stable across runs and backends.
    for _ in range(n):
        pass


def _nothing(event) -> None:
    return None


def _parse(event) -> None:
    json.loads(json.dumps(event))


def _regex(event) -> None:
    _KV.findall(event["msg"])


def _hash(event) -> None:
    hashlib.sha256(event["msg"].encode()).digest()


def busy_iterations(work_us: float, calibration: dict) -> int:
    """Loop iterations that make one ``busy`` call cost ``work_us``."""
    if work_us <= 0:
        return 0
    refined = calibration.get("busy_iterations", {}).get(f"{work_us:g}")
    if refined is not None:
        return refined
    net = work_us - calibration["call_overhead_us"]
    return max(1, round(net * calibration["iterations_per_us"]))


def make_work(workload: str, work_us: float, calibration: dict) -> Callable[[dict], None]:
    """The function a consumer calls once per event."""
    if workload == "busy":
        n = busy_iterations(work_us, calibration)
        if n == 0:
            return _nothing
        loop = _busy_loop

        def busy(event, _n=n, _loop=loop) -> None:
            _loop(_n)

        return busy
    if workload == "parse":
        return _parse
    if workload == "regex":
        return _regex
    if workload == "hash":
        return _hash
    raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")


def _time_calls(fn: Callable[[dict], None], event: dict, calls: int, trials: int) -> float:
    """Median microseconds per call over ``trials`` runs of ``calls`` calls."""
    # The thread's CPU clock, like the consumers' in-cell bursts
    # (burst_cost_us): the calibration and the check must measure alike.
    per_call = []
    for _ in range(trials):
        t0 = time.thread_time_ns()
        for _ in range(calls):
            fn(event)
        per_call.append((time.thread_time_ns() - t0) / 1e3 / calls)
    return statistics.median(per_call)


def calibrate(
    work_us: tuple[float, ...] = (),
    workloads: tuple[str, ...] = ("busy",),
    event_bytes: tuple[int, ...] = (300,),
    target_s: float = 0.05,
) -> dict:
    """Measure the busy loop and the cost of each work setting.

    ``iterations_per_us`` is the best of several timings of a long loop (the
    least disturbed one: calibration must not inherit noise from whatever
    else the machine is doing).  The cost of each setting is then measured
    with the calibrated loop and recorded, so runs.csv can report the work's
    real cost per event next to its nominal ``work_us``.
    """
    n = 200_000
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        _busy_loop(n)
        best = min(best, time.perf_counter() - t0)
    iterations_per_us = n / (best * 1e6)

    event = EventFactory(0, 300).make(0)
    call_overhead_us = _time_calls(lambda ev: _busy_loop(0), event, 20_000, 5)
    cal = {
        "iterations_per_us": iterations_per_us,
        "call_overhead_us": call_overhead_us,
        "timer": "time.thread_time_ns (per-setting costs); time.perf_counter (loop speed)",
        "measured_us": {},
    }
    cal["busy_iterations"] = {}
    cal["attempts"] = {}
    for w in sorted(set(work_us)):
        calls = max(20, int(target_s * 1e6 / max(w, 0.5)))
        if w > 0:
            # A long loop's speed does not predict a short call's cost
            # exactly (call overhead, loop set-up, caches), so refine the
            # iteration count against the measured cost of the call itself.
            # On a VM the CPU's speed can change by half from one moment to
            # the next (seen on the 2-core reference machine: the same
            # iteration count measured 110 us during calibration and 182 us
            # in every cell after it), so a refinement is accepted only when
            # the cost measured after it lands within CALIBRATION_TOLERANCE of
            # the setting; otherwise it is redone, and the closest attempt
            # kept.  A bad moment must not become the reference every cell
            # is checked against.
            best = None
            for attempt in range(1, CALIBRATION_ATTEMPTS + 1):
                cal["attempts"][f"{w:g}"] = attempt
                n = busy_iterations(w, cal) if best is None else best[1]
                for _ in range(3):
                    cost = _time_calls(lambda ev, _n=n: _busy_loop(_n), event, calls, 3)
                    n = max(1, round(n * w / cost))
                cost = _time_calls(lambda ev, _n=n: _busy_loop(_n), event, calls, 5)
                if best is None or abs(cost - w) < abs(best[0] - w):
                    best = (cost, n)
                if abs(cost - w) <= CALIBRATION_TOLERANCE * w:
                    break
            cal["busy_iterations"][f"{w:g}"] = best[1]
            # The cost measured when the count was accepted is the reference:
            # timing it once more would draw a second moment of the machine.
            cal["measured_us"][_cost_key("busy", w, 0)] = best[0]
            continue
        fn = make_work("busy", w, cal)
        cal["measured_us"][_cost_key("busy", w, 0)] = _time_calls(fn, event, calls, 5)
    # The named transforms' cost depends on the record size, so they are
    # measured once per event size of the sweep.
    for name in sorted(set(workloads) - {"busy"}):
        fn = make_work(name, 0, cal)
        for size in sorted(set(event_bytes)):
            sized = EventFactory(0, size).make(0)
            cost = _time_calls(fn, sized, 1000, 3)
            calls = max(20, int(target_s * 1e6 / max(cost, 0.5)))
            cal["measured_us"][_cost_key(name, 0, size)] = _time_calls(fn, sized, calls, 5)
    return cal


def _cost_key(workload: str, work_us: float, event_bytes: int) -> str:
    if workload == "busy":
        return f"busy:{work_us:g}"
    return f"{workload}:e{event_bytes}"


def work_cost_us(
    workload: str, work_us: float, event_bytes: int, calibration: dict
) -> float | None:
    """The calibrated cost of one work call, or None when it was not measured."""
    return calibration.get("measured_us", {}).get(_cost_key(workload, work_us, event_bytes))


def speed_trace(seconds: float, sample_s: float = 0.005, gap_s: float = 0.05) -> list[float]:
    """The busy loop's CPU cost, ns per iteration, sampled every ``gap_s`` for ``seconds``.

    Each sample runs the loop for about ``sample_s`` of CPU and times it with
    the thread's CPU clock; between samples the thread sleeps, as a consumer
    waiting for work does.  How steady the machine is, before trusting any
    sweep on it: on the 2-core VM consecutive samples alternated between
    about 11 and 19 ns per iteration (``python -m bench calibrate --watch 15``).
    """
    n = 50_000
    t0 = time.thread_time_ns()
    _busy_loop(n)
    per_iter = max(time.thread_time_ns() - t0, 1) / n
    n = max(1000, int(sample_s * 1e9 / per_iter))
    out = []
    end = time.monotonic() + seconds
    while True:
        t0 = time.thread_time_ns()
        _busy_loop(n)
        out.append((time.thread_time_ns() - t0) / n)
        if time.monotonic() + gap_s >= end:
            return out
        time.sleep(gap_s)


def speed_summary(samples: list[float]) -> dict:
    """Quantiles of a :func:`speed_trace` and the share of samples more than 10% from its median."""
    ordered = sorted(samples)

    def q(f: float) -> float:
        return ordered[min(len(ordered) - 1, int(f * len(ordered)))]

    median = statistics.median(ordered)
    return {
        "samples": len(ordered),
        "ns_per_iteration": {"min": ordered[0], "p10": q(0.1), "median": median, "p90": q(0.9),
                             "max": ordered[-1]},
        "max_over_min": ordered[-1] / ordered[0],
        "share_off_median_by_10pct": sum(abs(x - median) > 0.1 * median for x in ordered) / len(ordered),
    }


#: Test-only hook: a consumer multiplies its busy work by this factor after
#: its first in-cell burst, so that a test can make the work's cost change
#: mid-cell and check that the cell is marked invalid (work drift).
TEST_WORK_SCALE_ENV = "TURBO_BENCH_TEST_WORK_SCALE"


def burst_cost_us(fn: Callable[[dict], None], event: dict, expected_us: float | None,
                  target_us: float = 2000.0, trials: int = 5) -> float:
    """CPU microseconds per call of ``fn``: the median of ``trials`` timed runs.

    Timed with the thread's CPU clock, so a consumer preempted by the other
    processes of the cell (or of the machine) still measures what the work
    costs on its core, which is what the per-event CPU accounting compares
    against.  Each trial lasts about ``target_us``.
    """
    calls = max(1, int(target_us / max(expected_us or 0.0, 0.05)))
    clock = time.thread_time_ns
    per_call = []
    for _ in range(trials):
        t0 = clock()
        for _ in range(calls):
            fn(event)
        per_call.append((clock() - t0) / 1e3 / calls)
    return statistics.median(per_call)
