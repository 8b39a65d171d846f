"""One cell of the sweep: P producers -> queue -> C consumers, measured.

Reproduce one cell (it is a sweep with one point)::

    python -m bench sweep --backends turbo --producers 1 --consumers 2 \\
        --batch-sizes 1000 --work-us 50 --repeat 1 --out /tmp/one-cell

Timeline of a cell (all times from the shared clock, see bench.measuring.events)::

    start processes -> all ready -> t0 -> warm-up -> [ measure window ] -> producers stop
                                                                         -> end of stream
                                                                         -> drain -> check

* Every child signals ``ready`` once set up (imports done, queue opened, work
  function built); the parent then publishes ``t0`` and sets ``start``, so
  start-up cost (large under spawn) never leaks into the measurements.
* Producers run flat out from ``t0`` until the window ends; the queue's own
  bound (``max_buffered_events``) applies backpressure.
* Consumers count their events and, at check points, read the clock: the
  count at the first check at or after each window edge gives their events
  inside the window; latency is sampled at check points inside the window
  (every event when the work costs >= 1 us, else every ``SPARSE_CHECK``-th).
* The parent samples every child with psutil at both window edges (CPU
  times, context switches of all threads, bytes written) and the per-core
  busy time of the whole machine; the same code for every backend.
* After the window: producers flush and exit, the backend ends the stream,
  consumers drain and exit, each child leaves a result file; the parent
  checks delivery (every sequence number exactly once) and computes the row.

Everything runs under one hard deadline; on expiry, or any failure, every
process the cell started is killed and reaped, and the row records why.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
import traceback
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing.connection import wait as wait_for
from typing import Any

import psutil

from bench.measuring import machine, validity
from bench.measuring.backends import BackendSettings, get_backend
from bench.measuring.events import EventFactory, clock_ns
from bench.measuring.work import TEST_WORK_SCALE_ENV, burst_cost_us, make_work, work_cost_us
from bench.schema import COLUMNS, LOAD_CLOSED, SCHEMA_VERSION

#: Check the clock every SPARSE_CHECK events when the work per event is
#: cheaper than a clock read would be to ignore; a prime, so that check
#: points drift through batch positions instead of hitting the same one.
SPARSE_CHECK = 37

#: How often a blocked parent wakes to look for children that died.
_POLL_S = 0.25


@dataclass(frozen=True)
class Cell:
    """One point of the grid (the CELL_KEYS of the schema)."""

    backend: str
    start_method: str
    producers: int
    consumers: int
    batch_size: int
    work_us: float
    workload: str
    event_bytes: int

    @property
    def cell_id(self) -> str:
        return (
            f"{self.backend}-{self.start_method}-p{self.producers}-c{self.consumers}"
            f"-b{self.batch_size}-w{self.work_us:g}-{self.workload}-e{self.event_bytes}"
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CellRun:
    """How to run a cell: durations, bounds and where files go."""

    warmup: float
    duration: float
    #: Events the queue may buffer, or "auto" (see :func:`buffer_bound`).
    max_buffered_events: int | str
    #: Hard limit for the whole cell, start-up and drain included.
    timeout: float
    #: Parent directory of the cell's private work directory (turbo's queue
    #: folder and the children's result files live there).
    workdir: str


def buffer_bound(setting: int | str, cell) -> int:
    """Events the queue of ``cell`` may buffer.

    Producers run flat out, so end-to-end latency is mostly the time the
    buffered backlog takes to drain: with a fixed bound (say 10,000 events)
    every latency is ``10,000 / throughput`` whatever the batch size, and
    the batch-size trade-off disappears.  ``"auto"`` bounds the backlog at
    two messages per consumer (at least 64 events each, so that unbatched
    backends are not starved): enough to keep every consumer busy, small
    enough that latency shows what batching itself costs.  The same rule
    applies to every backend.
    """
    if setting == "auto":
        return 2 * cell.consumers * max(cell.batch_size, 64)
    return int(setting)


# --------------------------------------------------------------------------
# Child side
# --------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Have the kernel kill this child if the sweep process dies (Linux).

    Without it a SIGKILLed sweep would leave consumers blocked forever on a
    queue nobody will close.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return


def _max_rss_bytes() -> int:
    """Peak resident set size of this process.

    On Linux VmHWM of /proc/self/status: getrusage's ru_maxrss survives
    exec, so a spawned child would report the RSS of the sweep process it
    was forked from rather than its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return rss if sys.platform == "darwin" else rss * 1024


def _write_result(path: str, result: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _produce(backend, index: int, spec: dict, t0_ns: int) -> dict:
    make = EventFactory(index, spec["event_bytes"]).make
    stop_ns = t0_ns + spec["warmup_ns"] + spec["duration_ns"]
    clock = clock_ns
    i = 0
    with backend.producer(index) as sink:
        put = sink.put
        # Check the clock every 16 events: cheap against making and putting
        # 16 events, and late by at most 16 events at the window's end.
        while clock() < stop_ns:
            for _ in range(16):
                put(make(i))
                i += 1
    return {"produced": i}


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
    seq_append = seqs.append
    lat_append = latency.append
    qwait_append = qwait.append
    n = 0
    next_check = 0
    snap_start = snap_end = -1
    with backend.consumer(index) as source:
        for batch in source.batches():
            # A consumer may have been blocked across a window edge; the
            # arrival of a batch is then the first moment it can tell.  It is
            # also when the batch was handed over: the end of its queue wait.
            now = received = clock()
            if now >= win_start:
                if snap_start < 0:
                    snap_start = n
                if now >= win_end and snap_end < 0:
                    snap_end = n
            for ev in batch:
                if n >= next_check:
                    next_check = n + every
                    now = clock()
                    if now >= win_start:
                        if snap_start < 0:
                            snap_start = n
                        if now < win_end:
                            lat_append(now - ev["created_ns"])
                            qwait_append(received - ev["created_ns"])
                        elif snap_end < 0:
                            snap_end = n
                work(ev)
                seq_append(ev["seq"])
                n += 1
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
        "window_events": snap_end - snap_start,
        "seqs": seqs.tobytes(),
        "latency_ns": latency.tobytes(),
        "queue_wait_ns": qwait.tobytes(),
        "work_bursts_us": bursts,
        "polling_fallback": polling,
    }


def report_child(result_path: str, result: dict, body: Callable[[], dict]) -> None:
    """Run a child process's ``body`` and write ``result`` (updated with what it
    returns, or with the error) to ``result_path`` for the parent; exit 1 on error.

    Shared by the sweep's producers and consumers and the Kafka scenario's
    stages, so that every child reports its peak RSS and its failure alike.
    """
    try:
        result.update(body())
    except BaseException as exc:
        result["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result["traceback"] = traceback.format_exc()
        result["max_rss_bytes"] = _max_rss_bytes()
        _write_result(result_path, result)
        sys.exit(1)
    result["max_rss_bytes"] = _max_rss_bytes()
    _write_result(result_path, result)


def child_main(role, index, backend, spec, ready, start, t0, result_path) -> None:
    """Entry point of every producer and consumer process."""
    _die_with_parent()
    result: dict[str, Any] = {"role": role, "index": index, "pid": os.getpid()}

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


# --------------------------------------------------------------------------
# Parent side: sampling
# --------------------------------------------------------------------------


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


def _sample(procs: dict[str, psutil.Process]) -> dict:
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


def _core_busy_pct(before, after) -> list[float]:
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


# --------------------------------------------------------------------------
# Parent side: running and reaping
# --------------------------------------------------------------------------


class CellFailed(Exception):
    def __init__(self, status: str, error: str):
        super().__init__(error)
        self.status = status
        self.error = error


def mp_helper_pids() -> set[int]:
    """Processes multiprocessing keeps for the sweep's whole life.

    The resource tracker (started by the spawn method) is a child of the
    sweep process but belongs to no cell; leak checks must not count it.
    """
    pids = set()
    try:
        from multiprocessing import resource_tracker

        pid = getattr(resource_tracker._resource_tracker, "_pid", None)
        if pid:
            pids.add(pid)
    except (ImportError, AttributeError):
        pass
    try:
        from multiprocessing import forkserver

        pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
        if pid:
            pids.add(pid)
    except (ImportError, AttributeError):
        pass
    return pids


def leaked_children() -> list[psutil.Process]:
    """Descendants of this process that no cell should have left behind."""
    helpers = mp_helper_pids()
    out = []
    for p in psutil.Process().children(recursive=True):
        if p.pid in helpers:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                # Not running; reaped below by the process that owns it.
                continue
        except psutil.NoSuchProcess:
            continue
        out.append(p)
    return out


def reap_processes(processes: list, grace: float = 2.0) -> None:
    """Terminate, then kill, every process of the cell and its descendants.

    Direct children are reaped with ``Process.join`` (multiprocessing's own
    bookkeeping), descendants they may have started with psutil.
    """
    alive = [p for p in processes if p.is_alive()]
    descendants: list[psutil.Process] = []
    for p in alive:
        try:
            descendants.extend(psutil.Process(p.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    for d in descendants:
        try:
            d.terminate()
        except psutil.NoSuchProcess:
            pass
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + grace
    for p in alive:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in alive:
        if p.is_alive():
            p.kill()
            p.join(grace)
    _, still = psutil.wait_procs(descendants, timeout=grace)
    for d in still:
        try:
            d.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(still, timeout=grace)
    for p in processes:
        p.join(0)  # reap the already-exited ones too
        try:
            p.close()
        except ValueError:
            pass  # still running after SIGKILL + grace: nothing more we can do


def _read_result(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return None


def _describe_exit(role: str, index: int, proc, result: dict | None) -> str:
    if result and result.get("error"):
        return f"{role} {index} failed: {result['error']}"
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"{role} {index} killed by {name}"
    return f"{role} {index} exited with code {code} without a result"


def _delivery_check(results: dict, produced: dict[int, int]) -> tuple[int, int, int]:
    """(lost, duplicated, unexpected) sequence numbers, exactly."""
    import numpy as np

    from bench.measuring.events import SEQ_STRIDE

    chunks = [np.frombuffer(r["seqs"], dtype=np.int64) for r in results.values()]
    seqs = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
    lost = duplicated = 0
    producer_of = seqs // SEQ_STRIDE
    index_of = seqs % SEQ_STRIDE
    accounted = 0
    for p, n in produced.items():
        mine = index_of[(producer_of == p) & (index_of < n)]
        accounted += mine.size
        counts = np.bincount(mine, minlength=n)
        lost += int(np.count_nonzero(counts == 0))
        duplicated += int(np.count_nonzero(counts > 1))
    unexpected = int(seqs.size - accounted)
    return lost, duplicated, unexpected


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
                   work_per_event: float, useful_us: float, latency_ms, peak_rss_bytes: float) -> dict:
    """The runs.csv figures every scenario computes alike from two samples (see :func:`_sample`).

    ``producers``/``consumers``/``others`` are the sample key prefixes of the
    processes in each role: producers' and consumers' CPU get their own
    columns, every listed role counts in the overhead, the context switches
    and the bytes written.  ``latency_ms`` is a numpy array of sampled
    latencies inside the window.  One function, so that the queue sweep and
    the Kafka scenario can never account differently.
    """
    import numpy as np

    cores = _core_busy_pct(before["per_cpu"], after["per_cpu"])
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
    cpu_us = (prod_user + prod_sys + cons_user + cons_sys + other_cpu) * 1e6
    lat = np.asarray(latency_ms, dtype=np.float64)
    n_prod = sum(1 for k in before["procs"] if k.startswith(producers)) or 1
    n_cons = sum(1 for k in before["procs"] if k.startswith(consumers)) or 1
    usable = machine.usable_cores()
    cores_mine = [cores[c] for c in machine.affinity() if c < len(cores)] or cores
    machine_busy = sum(cores_mine) / len(cores_mine) if cores_mine else 0.0
    steal = machine.steal_pct(before.get("stat"), after.get("stat"))
    mhz = [m for m in (before.get("mhz"), after.get("mhz")) if m]
    prod_pct = 100.0 * (prod_user + prod_sys) / (n_prod * window_s) if window_s > 0 else 0.0
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


def empty_row(cell: Cell, repeat: int, started_utc: str, run: CellRun) -> dict:
    row = {k: "" for k in COLUMNS}
    row.update(cell.to_dict())
    row.update(
        schema_version=SCHEMA_VERSION,
        cell_id=cell.cell_id,
        repeat=repeat,
        started_utc=started_utc,
        warmup_s=run.warmup,
        window_s=run.duration,
        cpu_count=psutil.cpu_count(logical=True),
    )
    return row


def run_cell(cell: Cell, run: CellRun, calibration: dict, repeat: int = 0) -> tuple[dict, dict]:
    """Run one cell once; return (runs.csv row, backend description).

    Never raises for a failing cell: the row's ``status`` is ``failed`` or
    ``timeout`` and ``error`` says why.  Raises only for a harness bug or
    KeyboardInterrupt, after reaping the cell's processes either way.
    """
    started_utc = datetime.now(UTC).isoformat(timespec="seconds")
    row = empty_row(cell, repeat, started_utc, run)
    backend_cls = get_backend(cell.backend)
    ok, reason = backend_cls.available()
    if not ok:
        row.update(status="failed", error=f"backend unavailable: {reason}")
        return row, {}

    ctx = multiprocessing.get_context(cell.start_method)
    os.makedirs(run.workdir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"{cell.cell_id}-r{repeat}-", dir=run.workdir)
    sample_event = EventFactory(0, cell.event_bytes).make(0)
    settings = BackendSettings(
        producers=cell.producers,
        consumers=cell.consumers,
        batch_size=cell.batch_size,
        max_buffered_events=buffer_bound(run.max_buffered_events, cell),
        event_bytes=cell.event_bytes,
        event_pickled_bytes=len(pickle.dumps(sample_event, protocol=pickle.HIGHEST_PROTOCOL)),
        workdir=workdir,
    )
    backend = backend_cls(settings)
    recorded = {k: v for k, v in settings.to_dict().items() if k != "workdir"}
    description = {"settings": recorded, **backend.describe()}
    processes: list = []
    try:
        measured = _run_processes(cell, run, calibration, backend, ctx, workdir, processes)
        row.update(measured)
        row["status"] = "ok"
    except CellFailed as failure:
        # A failed delivery check still carries its measurements, which help
        # to diagnose it; they are never reported as a result (status).
        row.update(getattr(failure, "row", {}))
        row.update(status=failure.status, error=failure.error)
    finally:
        reap_processes(processes)
        try:
            backend.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return row, description


def _run_processes(cell, run, calibration, backend, ctx, workdir, processes) -> dict:
    t_begin = time.monotonic()
    hard_deadline = t_begin + run.timeout

    def remaining() -> float:
        return max(0.0, hard_deadline - time.monotonic())

    cost = work_cost_us(cell.workload, cell.work_us, cell.event_bytes, calibration)
    work_is_cheap = cost is None or cost < 1.0
    if cell.workload == "busy" and cell.work_us >= 1.0:
        work_is_cheap = False
    spec = {
        "event_bytes": cell.event_bytes,
        "workload": cell.workload,
        "work_us": cell.work_us,
        "calibration": calibration,
        "warmup_ns": int(run.warmup * 1e9),
        "duration_ns": int(run.duration * 1e9),
        "check_every": SPARSE_CHECK if work_is_cheap else 1,
        "work_cost_us": cost if cost is not None else float(cell.work_us),
        "start_timeout_s": run.timeout,
    }
    try:
        backend.open(ctx)
    except Exception as exc:
        raise CellFailed("failed", f"backend open failed: {exc!r}") from exc

    ready = ctx.Semaphore(0)
    start = ctx.Event()
    t0 = ctx.RawValue("q", 0)
    results_dir = os.path.join(workdir, "results")
    os.makedirs(results_dir)
    roles = [("consumer", i) for i in range(cell.consumers)]
    roles += [("producer", i) for i in range(cell.producers)]
    paths = {}
    by_role: dict[tuple[str, int], Any] = {}
    for role, i in roles:
        path = os.path.join(results_dir, f"{role}-{i}.pickle")
        paths[(role, i)] = path
        p = ctx.Process(
            target=child_main,
            args=(role, i, backend, spec, ready, start, t0, path),
            name=f"bench-{role}-{i}",
            daemon=True,
        )
        try:
            p.start()
        except Exception as exc:
            raise CellFailed("failed", f"cannot start {role} {i}: {exc!r}") from exc
        processes.append(p)
        by_role[(role, i)] = p

    def fail_on_early_exit(phase: str) -> None:
        for (role, i), p in by_role.items():
            if p.exitcode is not None and (role == "consumer" or p.exitcode != 0):
                raise CellFailed(
                    "failed",
                    f"{_describe_exit(role, i, p, _read_result(paths[(role, i)]))} ({phase})",
                )

    # 1. Wait until every child is set up.
    for _ in roles:
        while not ready.acquire(timeout=min(_POLL_S, remaining())):
            fail_on_early_exit("during start-up")
            if remaining() <= 0:
                raise CellFailed("timeout", f"timed out after {run.timeout:g}s during start-up")

    try:
        procs = {f"{role}-{i}": psutil.Process(p.pid) for (role, i), p in by_role.items()}
    except psutil.NoSuchProcess:
        fail_on_early_exit("right after start-up")
        raise CellFailed("failed", "a child vanished right after start-up") from None
    sentinels = [p.sentinel for p in processes]

    def wait_until(deadline_ns: int, phase: str) -> None:
        # A timed wait on the children's sentinels: it returns early only
        # if a child exits, which before the window's end means failure.
        while True:
            left = (deadline_ns - clock_ns()) / 1e9
            if left <= 0:
                return
            ready_sentinels = wait_for(sentinels, timeout=left)
            if ready_sentinels:
                if clock_ns() >= deadline_ns:
                    return  # producers stop at the window's end: not early
                # The sentinel closes a moment before the exit status is
                # set; join so that exitcode (and the error) is known.
                for p in processes:
                    if p.sentinel in ready_sentinels:
                        p.join(_POLL_S * 4)
                fail_on_early_exit(phase)
                # A producer that ended cleanly early would make the window
                # lie about steady state; treat it as a failure too.
                for (role, i), p in by_role.items():
                    if p.exitcode is not None:
                        raise CellFailed(
                            "failed", f"{role} {i} ended before the window closed ({phase})"
                        )

    # 2. Go.
    t0_ns = clock_ns()
    t0.value = t0_ns
    start.set()
    win_start = t0_ns + spec["warmup_ns"]
    win_end = win_start + spec["duration_ns"]
    wait_until(win_start, "during warm-up")
    before = _sample(procs)
    before["late_ns"] = max(0, before["at_ns"] - win_start)
    wait_until(win_end, "during the measure window")
    after = _sample(procs)
    after["late_ns"] = max(0, after["at_ns"] - win_end)
    window_s = (win_end - win_start) / 1e9

    def wait_exit(role: str, waiting_for: str) -> None:
        # Wait for every process of ``role`` to exit, but watch all of them:
        # a consumer that crashes while producers flush would otherwise
        # show up as producers timing out on a full queue.
        while True:
            for (r, i), p in by_role.items():
                code = p.exitcode
                if code is None:
                    continue
                # Any crash fails the cell, and so does a consumer that ends
                # before the stream does (producers still running).
                if code != 0 or (r == "consumer" and role == "producer"):
                    what = _describe_exit(r, i, p, _read_result(paths[(r, i)]))
                    raise CellFailed("failed", f"{what} (while waiting for {waiting_for})")
            group = [p for (r, _), p in by_role.items() if r == role and p.exitcode is None]
            if not group:
                return
            if remaining() <= 0:
                raise CellFailed(
                    "timeout",
                    f"timed out after {run.timeout:g}s waiting for {waiting_for} "
                    f"({len(group)} of {sum(1 for r, _ in by_role if r == role)} still running)",
                )
            # Only the running ones: an exited child's sentinel stays ready
            # and would turn this wait into a spin.
            wait_for([p.sentinel for p in group], timeout=min(_POLL_S, remaining()))

    # 3. Producers stop by themselves at win_end; wait for them to flush.
    wait_exit("producer", "producers to finish")

    # 4. End of stream, then let the consumers drain.
    try:
        backend.end_of_stream(remaining())
    except TimeoutError as exc:
        raise CellFailed("timeout", f"end of stream: {exc}") from exc
    except Exception as exc:
        raise CellFailed("failed", f"end of stream failed: {exc!r}") from exc
    wait_exit("consumer", "consumers to drain")

    results = {key: _read_result(path) for key, path in paths.items()}
    for (role, i), r in results.items():
        if r is None or "error" in r:
            raise CellFailed("failed", _describe_exit(role, i, by_role[(role, i)], r))
    return _measurements(cell, results, before, after, window_s, cost)


def _measurements(cell, results, before, after, window_s, cost) -> dict:
    import numpy as np

    consumers = {i: r for (role, i), r in results.items() if role == "consumer"}
    producers = {i: r for (role, i), r in results.items() if role == "producer"}
    produced = {i: r["produced"] for i, r in producers.items()}
    lost, duplicated, unexpected = _delivery_check(consumers, produced)
    events_total = sum(r["consumed"] for r in consumers.values())
    events = sum(r["window_events"] for r in consumers.values())

    eps = [consumers[i]["window_events"] / window_s for i in sorted(consumers)]
    lat_ns = np.concatenate(
        [np.frombuffer(r["latency_ns"], dtype=np.int64) for r in consumers.values()]
    )
    calibrated = cost if cost is not None else float(cell.work_us)
    bursts = [b for r in consumers.values() for b in r.get("work_bursts_us", [])]
    # Overhead and useful work both use the cost measured inside the cell.
    work_per_event = sum(bursts) / len(bursts) if bursts else calibrated
    row = window_figures(
        before, after, window_s, events, eps,
        producers=("producer",), consumers=("consumer",),
        work_per_event=work_per_event,
        useful_us=work_per_event,
        latency_ms=lat_ns / 1e6,
        peak_rss_bytes=max(r["max_rss_bytes"] for r in results.values()),
    )
    row["work_cpu_us_per_event"] = calibrated
    qw = np.concatenate(
        [np.frombuffer(r.get("queue_wait_ns", b""), dtype=np.int64) for r in consumers.values()]
    ) / 1e6
    if qw.size:
        row.update(queue_wait_p50_ms=float(np.percentile(qw, 50)),
                   queue_wait_p90_ms=float(np.percentile(qw, 90)),
                   queue_wait_p99_ms=float(np.percentile(qw, 99)),
                   queue_wait_max_ms=float(qw.max()))
    drift = validity.drift_pct(bursts, calibrated)
    n_procs = len(consumers) + len(producers)
    cpu_s = sum(row[k] for k in ("producer_user_s", "producer_sys_s", "consumer_user_s",
                                 "consumer_sys_s"))
    skew_s = sum(s.get("took_ns", 0) + s.get("late_ns", 0) for s in (before, after)) / 1e9
    err = validity.overhead_error_us(events=events, processes=n_procs,
                                     tick_s=machine.clock_tick_s(), cpu_s=cpu_s,
                                     window_s=window_s, sample_skew_s=skew_s, burst_costs=bursts)
    steal = row["steal_pct"] if row["steal_pct"] != "" else None
    reasons = validity.invalid_reasons(
        drift=drift, calibrated=calibrated,
        overhead=row["overhead_us_per_event"] if events else None,
        overhead_err=err, steal=steal)
    row.update(work_us_measured=work_per_event,
               work_drift_pct=drift if drift is not None else "",
               overhead_err_us=err, valid=not reasons, invalid_reason="; ".join(reasons),
               polling_fallback=any(r.get("polling_fallback") for r in consumers.values()),
               producers_setting=str(cell.producers))
    row.update(events_total=events_total, lost=lost, duplicated=duplicated)
    problems = []
    if lost or duplicated or unexpected:
        problems.append(
            f"delivery check failed: {lost} lost, {duplicated} duplicated, "
            f"{unexpected} unexpected sequence numbers "
            f"({sum(produced.values())} produced, {events_total} consumed)"
        )
    elif events == 0:
        problems.append("no events consumed inside the measure window (window too short?)")
    if problems:
        # Keep the measurements for diagnosis, but never as a result.
        failure = CellFailed("failed", "; ".join(problems))
        failure.row = row
        raise failure
    return row
