"""Sampling the processes of a cell at the window edges, and the figures of the window.

The parent samples every child with psutil at both window edges (CPU times,
context switches of all threads, bytes written) and the per-core busy time
of the whole machine (:func:`sample`); :func:`window_figures` turns two
samples into the runs.csv figures.  One module for every scenario (the
queue sweep, the Kafka pipeline), so that none of them can account
differently::

    python -m pytest tests/bench/test_bench_cell.py -k every_column
"""

from __future__ import annotations

import json
import os

import psutil

from bench.measuring import machine, validity
from bench.measuring.events import clock_ns
from bench.schema import LOAD_CLOSED


def _ctx_switches(proc: psutil.Process) -> tuple[int, int]:
    """Voluntary and involuntary switches of all the process's threads.

    psutil's num_ctx_switches reads /proc/PID/status, which counts the main
    thread only; multiprocessing.Queue does its writes (and blocks) in a
    feeder thread, so on Linux sum over /proc/PID/task/*/status instead.
    """
    task_dir = f"/proc/{proc.pid}/task"
    if os.path.isdir(task_dir):
        vol = invol = 0
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            invol += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that ended between listdir and open
        return vol, invol
    c = proc.num_ctx_switches()
    return c.voluntary, c.involuntary


def _sample_process(proc: psutil.Process) -> dict | None:
    try:
        with proc.oneshot():
            t = proc.cpu_times()
            vol, invol = _ctx_switches(proc)
            try:
                written = proc.io_counters().write_bytes
            except (AttributeError, psutil.AccessDenied, NotImplementedError):
                written = None
        return {"user": t.user, "system": t.system, "vol": vol, "invol": invol, "written": written}
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


def sample(procs: dict[str, psutil.Process]) -> dict:
    t_start = clock_ns()
    out = {
        "per_cpu": psutil.cpu_times(percpu=True),
        "stat": machine.cpu_times_total(),
        "procs": {key: _sample_process(p) for key, p in procs.items()},
    }
    out["took_ns"] = clock_ns() - t_start
    out["at_ns"] = t_start
    out["mhz"] = machine.cpu_mhz()
    return out


def core_busy_pct(before, after) -> list[float]:
    """Busy % per core between two psutil.cpu_times(percpu=True) samples."""
    out = []
    for b, a in zip(before, after):
        db = a._asdict()
        d = {k: db[k] - v for k, v in b._asdict().items()}
        # On Linux guest time is already inside user/nice (as psutil's own
        # cpu_percent assumes), so leave it out of the total.
        total = sum(v for k, v in d.items() if k not in ("guest", "guest_nice"))
        idle = d.get("idle", 0.0) + d.get("iowait", 0.0)
        out.append(100.0 * (total - idle) / total if total > 0 else 0.0)
    return out


def sample_delta(before: dict, after: dict, prefixes: str | tuple[str, ...], field: str) -> float:
    """``field`` (user, system, vol, invol, written) summed over the processes
    whose sample key starts with ``prefixes``, between two samples; a process
    that was gone at either sample counts for nothing."""
    total = 0.0
    for key, b in before["procs"].items():
        a = after["procs"].get(key)
        if key.startswith(prefixes) and a is not None and b is not None and a[field] is not None:
            total += a[field] - b[field]
    return total


def window_figures(before: dict, after: dict, window_s: float, events: int, eps: list[float], *,
                   producers: tuple[str, ...], consumers: tuple[str, ...], others: tuple[str, ...] = (),
                   work_per_event: float, useful_us: float, latency_ms, peak_rss_bytes: float,
                   producer_pacing_s: float = 0.0) -> dict:
    """The runs.csv figures every scenario computes alike from two samples (see :func:`sample`).

    ``producers``/``consumers``/``others`` are the sample key prefixes of the
    processes in each role: producers' and consumers' CPU get their own
    columns, every listed role counts in the overhead, the context switches
    and the bytes written.  ``latency_ms`` is a numpy array of sampled
    latencies inside the window.  One function, so that the queue sweep and
    the Kafka scenario can never account differently.

    ``producer_pacing_s``: CPU the producers spent inside the window waiting
    for their next event to be due (open loop: the pacing spin of
    bench.measuring.schedule).  It is the harness's, not the queue's, so
    ``producer_cpu_pct``, the overhead and the bottleneck leave it out;
    ``producer_user_s``/``producer_sys_s`` stay what the processes used.
    """
    import numpy as np

    cores = core_busy_pct(before["per_cpu"], after["per_cpu"])
    cpu_count = len(cores)
    roles = producers + consumers + others

    def delta(prefixes: tuple[str, ...], field: str) -> float:
        return sample_delta(before, after, prefixes, field)

    prod_user, prod_sys = delta(producers, "user"), delta(producers, "system")
    cons_user, cons_sys = delta(consumers, "user"), delta(consumers, "system")
    other_cpu = delta(others, "user") + delta(others, "system") if others else 0.0
    vol, invol = delta(roles, "vol"), delta(roles, "invol")
    written_known = all(
        s is not None and s["written"] is not None
        for sample in (before, after)
        for key, s in sample["procs"].items()
        if key.startswith(roles)
    )
    sq = sum(x * x for x in eps)
    # Never below 0: the processes' CPU is read at clock-tick resolution.
    prod_cpu = max(0.0, prod_user + prod_sys - producer_pacing_s)
    cpu_us = (prod_cpu + cons_user + cons_sys + other_cpu) * 1e6
    lat = np.asarray(latency_ms, dtype=np.float64)
    n_prod = sum(1 for k in before["procs"] if k.startswith(producers)) or 1
    n_cons = sum(1 for k in before["procs"] if k.startswith(consumers)) or 1
    usable = machine.usable_cores()
    cores_mine = [cores[c] for c in machine.affinity() if c < len(cores)] or cores
    machine_busy = sum(cores_mine) / len(cores_mine) if cores_mine else 0.0
    steal = machine.steal_pct(before.get("stat"), after.get("stat"))
    mhz = [m for m in (before.get("mhz"), after.get("mhz")) if m]
    prod_pct = 100.0 * prod_cpu / (n_prod * window_s) if window_s > 0 else 0.0
    cons_pct = 100.0 * (cons_user + cons_sys) / (n_cons * window_s) if window_s > 0 else 0.0
    overhead = (cpu_us / events - work_per_event) if events else ""
    # Sample skew: each sample's own duration plus how late it started
    # after its window edge (edges passed in by the caller, else only the
    # durations count).
    skew_s = sum(s.get("took_ns", 0) + s.get("late_ns", 0) for s in (before, after)) / 1e9
    overhead_err = validity.overhead_error_us(
        events=events, processes=n_prod + n_cons + (1 if others else 0),
        tick_s=machine.clock_tick_s(), cpu_s=cpu_us / 1e6, window_s=window_s,
        sample_skew_s=skew_s, burst_costs=[],
    )
    reasons = validity.invalid_reasons(drift=None, calibrated=None,
                                       overhead=overhead if events else None,
                                       overhead_err=overhead_err, steal=steal)
    return {
        "load": LOAD_CLOSED,
        "offered_rate": "",
        "queue_wait_p50_ms": "",
        "queue_wait_p90_ms": "",
        "queue_wait_p99_ms": "",
        "queue_wait_max_ms": "",
        "work_us_measured": work_per_event,
        "work_drift_pct": "",
        "overhead_err_us": overhead_err,
        "steal_pct": steal if steal is not None else "",
        "cpu_mhz": sum(mhz) / len(mhz) if mhz else "",
        "usable_cores": usable,
        "producer_cpu_pct": prod_pct,
        "consumer_cpu_pct": cons_pct,
        "bottleneck": validity.bottleneck(producer_cpu_pct=prod_pct, consumer_cpu_pct=cons_pct,
                                          machine_busy_pct=machine_busy),
        "valid": not reasons,
        "invalid_reason": "; ".join(reasons),
        "polling_fallback": False,
        "pinned": False,
        "producers_setting": str(n_prod),
        "window_s": window_s,
        "events": events,
        "events_per_s": events / window_s if window_s > 0 else 0.0,
        "consumer_eps_min": min(eps),
        "consumer_eps_max": max(eps),
        # Jain's index: 1 when every consumer moved the same number of events.
        "fairness": (sum(eps) ** 2) / (len(eps) * sq) if sq > 0 else 0.0,
        "cpu_count": cpu_count,
        "cpu_busy_pct": sum(cores) / cpu_count if cpu_count else 0.0,
        "cpu_busy_pct_max_core": max(cores) if cores else 0.0,
        "cpu_busy_per_core": json.dumps([round(c, 1) for c in cores]),
        "producer_user_s": prod_user,
        "producer_sys_s": prod_sys,
        "producer_pacing_s": producer_pacing_s,
        "consumer_user_s": cons_user,
        "consumer_sys_s": cons_sys,
        "work_cpu_us_per_event": work_per_event,
        "overhead_us_per_event": overhead,
        "useful_work_fraction": (events * useful_us / (cpu_count * window_s * 1e6)
                                 if window_s > 0 and cpu_count else 0.0),
        "ctx_voluntary_per_event": vol / events if events else "",
        "ctx_involuntary_per_event": invol / events if events else "",
        "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else "",
        "latency_p90_ms": float(np.percentile(lat, 90)) if lat.size else "",
        "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else "",
        "latency_max_ms": float(lat.max()) if lat.size else "",
        "latency_samples": int(lat.size),
        "peak_rss_mb": peak_rss_bytes / 2**20,
        "disk_bytes_written": int(delta(roles, "written")) if written_known else -1,
    }
