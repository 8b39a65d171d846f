"""One cell of the sweep: P producers -> queue -> C consumers, measured.

Reproduce one cell (it is a sweep with one point)::

    python -m bench sweep --backends turbo --producers 1 --consumers 2 \\
        --batch-sizes 1000 --work-us 50 --repeat 1 --out /tmp/one-cell

and the same cell offered 2,000 events/s beside it (open loop)::

    python -m bench sweep --backends turbo --producers 1 --consumers 2 \
        --batch-sizes 1000 --work-us 50 --rate 2000 --repeat 1 --out /tmp/open-cell

Timeline of a cell (all times from the shared clock, see bench.measuring.events)::

    start processes -> all ready -> t0 -> warm-up -> [ measure window ] -> producers stop
                                                                         -> end of stream
                                                                         -> drain -> check

* Every child signals ``ready`` once set up (imports done, queue opened, work
  function built); the parent then publishes ``t0`` and sets ``start``, so
  start-up cost (large under spawn) never leaks into the measurements.
* Closed loop (``load = "closed"``): producers run flat out from ``t0``
  until the window ends; the queue's own bound (``max_buffered_events``)
  applies backpressure.  Open loop (``rate:R``, ``frac:f``): producers put
  each event at its scheduled time from ``t0`` on (bench.measuring.schedule);
  the same bound applies, and a producer it blocks falls behind its
  schedule, which the latency (measured from the scheduled time) shows.
* Consumers count their events and sample latency inside the window
  (bench.measuring.children: every event when the work costs >= 1 us, else
  every ``SPARSE_CHECK``-th): end to end (scheduled -> processed, work
  included), queue wait (scheduled -> batch received) and schedule lag
  (scheduled -> created: how late the producer was).
* The parent samples every child at both window edges (bench.measuring.sampling);
  the same code for every backend.  With ``--pin`` each child runs on a
  core of its own (bench.measuring.pinning).
* After the window: producers flush and exit, the backend ends the stream,
  consumers drain and exit, each child leaves a result file; the parent
  checks delivery (every sequence number exactly once) and computes the row.

Everything runs under one hard deadline; on expiry, or any failure, every
process the cell started is killed and reaped, and the row records why.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from multiprocessing.connection import wait as wait_for
from typing import Any

import psutil

from bench.measuring import machine, pinning, validity
from bench.measuring.backends import BackendSettings, get_backend
from bench.measuring.backends.base import is_auto, nominal_batch
from bench.measuring.children import SPARSE_CHECK, child_main
from bench.measuring.events import EventFactory, clock_ns

# The process management and the sampling live in their own modules; their
# names stay importable from here for the scenarios that use them.
from bench.measuring.processes import (  # noqa: F401
    _describe_exit,
    _read_result,
    _write_result,
    leaked_children,
    reap_processes,
    report_child,
)
from bench.measuring.sampling import sample, sample_delta, window_figures  # noqa: F401
from bench.measuring.schedule import load_id_suffix, parse_load, producer_rates
from bench.measuring.work import work_cost_us
from bench.schema import COLUMNS, LOAD_CLOSED, SCHEMA_VERSION

#: How often a blocked parent wakes to look for children that died.
_POLL_S = 0.25


@dataclass(frozen=True)
class Cell:
    """One point of the grid (the CELL_KEYS of the schema)."""

    backend: str
    start_method: str
    producers: int
    consumers: int
    #: Events per batch, or "auto" (bench.measuring.backends.base.AUTO_BATCH).
    batch_size: int | str
    work_us: float
    workload: str
    event_bytes: int
    #: "closed", "rate:R" or "frac:f" (bench.measuring.schedule).
    load: str = LOAD_CLOSED

    @property
    def cell_id(self) -> str:
        # Closed-loop cells keep the ids they had before open-loop cells
        # existed, so old result sets and --resume still match them.
        return (
            f"{self.backend}-{self.start_method}-p{self.producers}-c{self.consumers}"
            f"-b{self.batch_size}-w{self.work_us:g}-{self.workload}-e{self.event_bytes}"
            f"{load_id_suffix(self.load)}"
        )

    @property
    def open_loop(self) -> bool:
        return self.load != LOAD_CLOSED

    def closed_twin(self) -> Cell:
        """The same cell in closed loop (what a ``frac:f`` cell's rate comes from)."""
        return replace(self, load=LOAD_CLOSED)

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
    #: Each process on a core of its own where there are enough (bench.measuring.pinning).
    pin: bool = False


def buffer_bound(setting: int | str, cell) -> int:
    """Events the queue of ``cell`` may buffer.

    Producers run flat out, so end-to-end latency is mostly the time the
    buffered backlog takes to drain: with a fixed bound (say 10,000 events)
    every latency is ``10,000 / throughput`` whatever the batch size, and
    the batch-size trade-off disappears (in open loop the bound matters
    only once consumers fall behind: then it blocks the producers, whose
    events run late).  ``"auto"`` bounds the backlog at
    two messages per consumer (at least 64 events each, so that unbatched
    backends are not starved): enough to keep every consumer busy, small
    enough that latency shows what batching itself costs.  The same rule
    applies to every backend.
    """
    if setting == "auto":
        return 2 * cell.consumers * max(nominal_batch(cell.batch_size), 64)
    return int(setting)


# --------------------------------------------------------------------------
class CellFailed(Exception):
    def __init__(self, status: str, error: str):
        super().__init__(error)
        self.status = status
        self.error = error


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


def empty_row(cell: Cell, repeat: int, started_utc: str, run: CellRun) -> dict:
    """A row of ``cell`` with nothing measured yet (every column present)."""
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
        pinned=False,
    )
    return row


def failed_row(cell: Cell, run: CellRun, repeat: int, error: str) -> dict:
    """The row of a cell that could not be run at all (``status = "failed"``)."""
    row = empty_row(cell, repeat, datetime.now(UTC).isoformat(timespec="seconds"), run)
    row.update(status="failed", error=error)
    return row


def run_cell(cell: Cell, run: CellRun, calibration: dict, repeat: int = 0,
             offered_rate: float | None = None) -> tuple[dict, dict]:
    """Run one cell once; return (runs.csv row, backend description).

    ``offered_rate`` (events/s in total) is required for a ``frac:f`` cell,
    whose rate the sweep resolves from its closed-loop twin
    (bench.measuring.schedule.RateResolver); a ``rate:R`` cell is offered R.

    Never raises for a failing cell: the row's ``status`` is ``failed`` or
    ``timeout`` and ``error`` says why.  Raises only for a harness bug or
    KeyboardInterrupt, after reaping the cell's processes either way.
    """
    started_utc = datetime.now(UTC).isoformat(timespec="seconds")
    row = empty_row(cell, repeat, started_utc, run)
    kind, value = parse_load(cell.load)
    if kind == "rate":
        offered_rate = value
    if cell.open_loop:
        if not offered_rate or offered_rate <= 0:
            row.update(status="failed", error=f"{cell.load}: no offered rate to run it at")
            return row, {}
        row["offered_rate"] = offered_rate
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
    age = backend.max_batch_age_s()
    row["max_batch_age_s"] = age if age is not None else ""
    pins = pinning.plan(cell.producers, cell.consumers) if run.pin else pinning.PinPlan()
    if run.pin:
        description["pinning"] = pins.reason or {f"{r}-{i}": c for (r, i), c in pins.children.items()}
    processes: list = []
    try:
        with pinning.ParentPinned(pins.parent):
            measured = _run_processes(cell, run, calibration, backend, ctx, workdir, processes,
                                      offered_rate if cell.open_loop else None, pins)
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


def _run_processes(cell, run, calibration, backend, ctx, workdir, processes, offered_rate,
                   pins) -> dict:
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
        # Open loop: events/s of each producer; None: flat out.
        "rates": producer_rates(offered_rate, cell.producers) if offered_rate else None,
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
            args=(role, i, backend, spec, ready, start, t0, path, pins.core_of(role, i)),
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
    before = sample(procs)
    before["late_ns"] = max(0, before["at_ns"] - win_start)
    wait_until(win_end, "during the measure window")
    after = sample(procs)
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
    return _measurements(cell, results, before, after, window_s, cost, offered_rate, pins,
                         backend.max_batch_age_s())


def _percentiles(prefix: str, values_ms) -> dict:
    """``{prefix}_p50_ms``, ``_p90_ms``, ``_p99_ms``, ``_max_ms`` of ``values_ms`` (nothing if empty)."""
    import numpy as np

    if not values_ms.size:
        return {}
    out = {f"{prefix}_p{q}_ms": float(np.percentile(values_ms, q)) for q in (50, 90, 99)}
    out[f"{prefix}_max_ms"] = float(values_ms.max())
    return out


def _measurements(cell, results, before, after, window_s, cost, offered_rate, pins,
                  max_batch_age) -> dict:
    import numpy as np

    consumers = {i: r for (role, i), r in results.items() if role == "consumer"}
    producers = {i: r for (role, i), r in results.items() if role == "producer"}
    produced = {i: r["produced"] for i, r in producers.items()}
    lost, duplicated, unexpected = _delivery_check(consumers, produced)
    events_total = sum(r["consumed"] for r in consumers.values())
    events = sum(r["window_events"] for r in consumers.values())
    batches_total = sum(r.get("batches", 0) for r in consumers.values())

    def samples_ms(key: str):
        return np.concatenate(
            [np.frombuffer(r.get(key, b""), dtype=np.int64) for r in consumers.values()]
        ) / 1e6

    eps = [consumers[i]["window_events"] / window_s for i in sorted(consumers)]
    calibrated = cost if cost is not None else float(cell.work_us)
    bursts = [b for r in consumers.values() for b in r.get("work_bursts_us", [])]
    # Overhead and useful work both use the cost measured inside the cell.
    work_per_event = sum(bursts) / len(bursts) if bursts else calibrated
    row = window_figures(
        before, after, window_s, events, eps,
        producers=("producer",), consumers=("consumer",),
        work_per_event=work_per_event,
        useful_us=work_per_event,
        latency_ms=samples_ms("latency_ns"),
        peak_rss_bytes=max(r["max_rss_bytes"] for r in results.values()),
        producer_pacing_s=sum(r.get("pacing_s", 0.0) for r in producers.values()),
    )
    row["work_cpu_us_per_event"] = calibrated
    row.update(_percentiles("queue_wait", samples_ms("queue_wait_ns")))
    drift = validity.drift_pct(bursts, calibrated)
    n_procs = len(consumers) + len(producers)
    cpu_s = sum(row[k] for k in ("producer_user_s", "producer_sys_s", "consumer_user_s",
                                 "consumer_sys_s")) - row["producer_pacing_s"]
    skew_s = sum(s.get("took_ns", 0) + s.get("late_ns", 0) for s in (before, after)) / 1e9
    err = validity.overhead_error_us(events=events, processes=n_procs,
                                     tick_s=machine.clock_tick_s(), cpu_s=cpu_s,
                                     window_s=window_s, sample_skew_s=skew_s, burst_costs=bursts)
    steal = row["steal_pct"] if row["steal_pct"] != "" else None
    reasons = validity.invalid_reasons(
        drift=drift, calibrated=calibrated,
        overhead=row["overhead_us_per_event"] if events else None,
        overhead_err=err, steal=steal)
    row["load"] = cell.load
    if offered_rate:
        mean_batch = events_total / batches_total if batches_total else None
        row.update(_open_loop_figures(cell, row, offered_rate, window_s, max_batch_age, mean_batch,
                                      samples_ms("schedule_lag_ns"),
                                      sum(r.get("backlog", 0) for r in producers.values())))
        reasons += validity.open_loop_reasons(
            saturated=row["saturated"], bottleneck=row["bottleneck"],
            producer_cpu_pct=row["producer_cpu_pct"], offered_rate=offered_rate,
            events_per_s=row["events_per_s"])
    row.update(work_us_measured=work_per_event,
               work_drift_pct=drift if drift is not None else "",
               overhead_err_us=err, valid=not reasons, invalid_reason="; ".join(reasons),
               polling_fallback=any(r.get("polling_fallback") for r in consumers.values()),
               producers_setting=str(cell.producers),
               # Pinned only when every child confirmed the core it was given.
               pinned=pins.pinned and all(r.get("pinned_core") is not None
                                          for r in results.values()))
    row.update(events_total=events_total, lost=lost, duplicated=duplicated,
               mean_batch_size=events_total / batches_total if batches_total else "")
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


def _open_loop_figures(cell, row, offered_rate, window_s, max_batch_age, mean_batch, lag_ms,
                       backlog) -> dict:
    """The open-loop columns: offered vs achieved, saturation, how late producers were."""
    per_producer = offered_rate / cell.producers
    # Events a consumer gets at once: a full batch, or what one producer
    # puts in max_batch_age when the age seals partial batches sooner.  An
    # ``auto`` batch has no size of its own: the batches the consumers got.
    delivered = float(mean_batch or 1.0) if is_auto(cell.batch_size) else float(cell.batch_size)
    if max_batch_age:
        delivered = max(1.0, min(delivered, per_producer * max_batch_age))
    count_err = validity.rate_count_error(delivered, per_producer, window_s)
    achieved = row["events_per_s"]
    saturated = validity.saturated(offered_rate, achieved, count_err)
    out = {
        "offered_rate": offered_rate,
        "achieved_rate_ratio": achieved / offered_rate,
        "achieved_rate_err": count_err,
        "saturated": saturated,
        "producer_backlog": backlog,
        "bottleneck": validity.bottleneck(
            producer_cpu_pct=row["producer_cpu_pct"], consumer_cpu_pct=row["consumer_cpu_pct"],
            machine_busy_pct=row["cpu_busy_pct"], offered_rate=offered_rate,
            events_per_s=achieved, saturated=saturated),
    }
    lag = _percentiles("schedule_lag", lag_ms)
    out.update({k: v for k, v in lag.items() if k in ("schedule_lag_p50_ms", "schedule_lag_p99_ms")})
    return out
