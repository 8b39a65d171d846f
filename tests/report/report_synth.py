"""Generate schema-valid synthetic result sets whose right answer is known.

The report and compare tests (and the notebook tests) need result sets where
the correct recommendation, the true USL parameters and the failed cells are
known in advance.  This module builds ``runs.csv``, ``meta.json`` and a
pyperf ``bench.json`` from a model of each backend: throughput as a function
of (consumers, batch size, work), p99 latency, overhead and context switches.

Noise is multiplicative, Gaussian and seeded, so every set is reproducible.
Failed repeats are written the way a harness might (status failed, zeros in
the metrics) so that a reader that plotted them would visibly draw zeros.

Usable as a script too: ``python tests/report/report_synth.py OUT_DIR``
writes the default set (handy for trying the report by hand).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyperf

from bench.schema import COLUMNS, SCHEMA_VERSION


def usl_eps(lam: float, sigma: float = 0.0, kappa: float = 0.0) -> Callable[[int], float]:
    """Throughput at n consumers from the Universal Scalability Law."""
    return lambda n: lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


@dataclass
class Backend:
    """A backend model.

    ``eps(n, batch)`` is the true median events/s at n consumers;
    ``p99_ms(n, batch, eps)`` the p99 latency.  ``noise`` is the relative
    standard deviation of events/s between repeats.
    """

    name: str
    batch_sizes: Sequence[int]
    eps: Callable[[int, int], float]
    p99_ms: Callable[[int, int, float], float] = field(
        default=lambda n, b, eps: 0.5 + 2000.0 * b / eps
    )
    overhead_us: float = 3.0
    #: Extra queue CPU per event that a batch amortises: overhead_us + this / batch.
    overhead_per_batch_us: float = 0.0
    ctx_per_event: Callable[[int, int], float] = field(default=lambda n, b: 0.02 * n / b)
    noise: float = 0.01
    #: batch size "auto" in open loop: consumers see batches of about this
    #: many events, and an event waits this long for its batch's seal.
    auto_batch: int = 20
    auto_fill_ms: float = 2.0


AUTO = "auto"


def _per_batch(bk: Backend, b) -> int:
    """Events per batch of ``bk`` at batch size ``b`` (``auto``: its modelled size)."""
    return bk.auto_batch if b == AUTO else b


def auto_turbo(lam: float = 20_000.0, auto_share: float = 1.0, auto_p99_ms: float | None = None,
               batch_sizes=(100, 1000, AUTO), **kw) -> Backend:
    """:func:`linear_turbo` with batch size "auto" among its sizes.

    auto's closed-loop events/s is ``auto_share`` of the largest fixed size's
    (the best); its closed-loop p99 is ``auto_p99_ms`` (default: the best
    fixed size's model).  In open loop it seals within ``auto_fill_ms``
    while consumers wait (see :func:`open_loop_point`).
    """
    top = max(b for b in batch_sizes if b != AUTO)
    fixed = lambda n, b: lam * n * b / (b + 20)  # noqa: E731

    def eps(n, b):
        return auto_share * fixed(n, top) if b == AUTO else fixed(n, b)

    def p99(n, b, e):
        if b == AUTO:
            return auto_p99_ms if auto_p99_ms is not None else 0.5 + 2000.0 * top / e
        return 0.5 + 2000.0 * b / e

    return Backend("turbo", batch_sizes, eps, p99_ms=p99,
                   ctx_per_event=lambda n, b: 0.02 * n / _per_batch_size(b, top), **kw)


def _per_batch_size(b, top: int) -> int:
    return top if b == AUTO else b


def linear_turbo(lam: float = 20_000.0, batch_sizes=(10, 100, 1000), **kw) -> Backend:
    """A perfectly linear turbo: throughput grows with batch size, saturating (b / (b + 20))."""
    return Backend("turbo", batch_sizes, lambda n, b: lam * n * b / (b + 20), **kw)


def saturating_mpq(
    lam: float = 15_000.0, sigma: float = 0.05, kappa: float = 0.02, **kw
) -> Backend:
    """multiprocessing.Queue following the USL: N* = sqrt((1 - sigma) / kappa)."""
    f = usl_eps(lam, sigma, kappa)
    return Backend(
        "mpq",
        (1,),
        lambda n, b: f(n),
        ctx_per_event=lambda n, b: 0.5 + 0.2 * n,
        overhead_us=8.0,
        **kw,
    )


def batched_mpq(
    lam: float = 18_000.0, sigma: float = 0.1, kappa: float = 0.0, batch_sizes=(100,), **kw
) -> Backend:
    f = usl_eps(lam, sigma, kappa)
    return Backend("mpq-batch", batch_sizes, lambda n, b: f(n) * b / (b + 10), **kw)


def cell_id(backend, start, p, c, b, w, workload, e) -> str:
    return f"{backend}-{start}-p{p}-c{c}-b{b}-w{_num(w)}-{workload}-e{e}"


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def write_result_set(
    root: str | Path,
    backends: Sequence[Backend] | None = None,
    *,
    name: str | None = None,
    consumers: Sequence[int] = (1, 2, 4, 8),
    producers: Sequence[int] = (1,),
    work_us: Sequence[float] = (50.0,),
    workload: str = "busy",
    event_bytes: int = 300,
    start_method: str = "fork",
    repeats: int = 3,
    cores: int = 8,
    host: str = "synthhost",
    seed: int = 0,
    failed: Callable[[dict], bool] | None = None,
    schema_version: int = SCHEMA_VERSION,
    with_command: bool = True,
    bench_json: bool = True,
    started: datetime | None = None,
    open_loop: Sequence[str] = (),
    open_loop_consumers: Sequence[int] | None = None,
    max_batch_age: float | None = None,
) -> Path:
    """Write a result set under ``root`` and return its folder.

    ``failed(cell)`` gets a dict with the cell's axes and ``repeat`` and
    returns True to make that repeat fail.  ``open_loop`` adds open-loop
    cells at those loads (``"rate:5000"``, ``"frac:0.5"``) for every backend
    and batch size at ``open_loop_consumers`` (default: every count), their
    latency from :func:`open_loop_point`; ``max_batch_age`` (seconds) is
    written into meta.json's sweep when given.
    """
    if backends is None:
        backends = [linear_turbo(), saturating_mpq(), batched_mpq()]
    started = started or datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    name = name or f"{started:%Y%m%dT%H%M%SZ}-{host}"
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    t = started
    window = 5.0
    grid = [
        (bk, p, c, b, w)
        for w in work_us
        for p in producers
        for bk in backends
        for b in bk.batch_sizes
        for c in consumers
    ]
    for r in range(repeats):  # interleaved, as the real sweep runs them
        for bk, p, c, b, w in grid:
            cid = cell_id(bk.name, start_method, p, c, b, w, workload, event_bytes)
            axes = dict(
                backend=bk.name,
                start_method=start_method,
                producers=p,
                consumers=c,
                batch_size=b,
                work_us=float(w),
                workload=workload,
                event_bytes=event_bytes,
            )
            t += timedelta(seconds=7)
            fail = bool(failed and failed({**axes, "repeat": r}))
            eps = bk.eps(c, b) * (1 + bk.noise * rng.standard_normal())
            eps = max(eps, 1.0)
            row = dict.fromkeys(COLUMNS, "")
            row.update(axes)
            row.update(
                schema_version=schema_version,
                cell_id=cid,
                repeat=r,
                started_utc=t.isoformat(),
                warmup_s=1.0,
                cpu_count=cores,
            )
            if fail:
                # What a crashed cell may look like: zeros everywhere.
                row.update(
                    status="failed",
                    error="synthetic failure: consumer exited with code 1",
                    window_s=0.0,
                    **{k: 0 for k in _METRICS},
                )
                rows.append(row)
                continue
            useful = eps * w / (cores * 1e6)
            busy = min(100.0, eps * (w + bk.overhead_us) / (cores * 1e6) * 100)
            per_core = [min(100.0, busy * (1 + 0.02 * i)) for i in range(cores)]
            p99 = bk.p99_ms(c, b, eps)
            ctx = bk.ctx_per_event(c, b)
            row.update(
                status="ok",
                error="",
                window_s=window,
                events=int(eps * window),
                events_total=int(eps * (window + 2)),
                events_per_s=eps,
                consumer_eps_min=eps / c * 0.97,
                consumer_eps_max=eps / c * 1.03,
                fairness=0.999,
                cpu_busy_pct=busy,
                cpu_busy_pct_max_core=max(per_core),
                cpu_busy_per_core=json.dumps([round(v, 1) for v in per_core]),
                producer_user_s=eps * window * 1.5e-6 * 0.8,
                producer_sys_s=eps * window * 1.5e-6 * 0.2,
                consumer_user_s=eps * window * (w + bk.overhead_us - 1.5) * 1e-6 * 0.9,
                consumer_sys_s=eps * window * (w + bk.overhead_us - 1.5) * 1e-6 * 0.1,
                work_cpu_us_per_event=w,
                overhead_us_per_event=bk.overhead_us,
                useful_work_fraction=useful,
                ctx_voluntary_per_event=ctx * 0.8,
                ctx_involuntary_per_event=ctx * 0.2,
                latency_p50_ms=p99 / 3,
                latency_p90_ms=p99 / 1.5,
                latency_p99_ms=p99,
                latency_max_ms=p99 * 1.5,
                latency_samples=1000,
                peak_rss_mb=40.0 + _per_batch(bk, b) / 100,
                disk_bytes_written=int(eps * window * 350) if bk.name == "turbo" else -1,
                lost=0,
                duplicated=0,
            )
            rows.append(row)
    # Open-loop rows draw from their own generator so that adding them leaves
    # the closed-loop numbers of a set exactly as they were.
    orng = np.random.default_rng(seed + 1)
    age = 1.0 if max_batch_age is None else max_batch_age
    ol_counts = consumers if open_loop_consumers is None else open_loop_consumers
    for r in range(repeats if open_loop else 0):
        for bk, p, c, b, w in grid:
            if c not in ol_counts:
                continue
            for load in open_loop:
                t += timedelta(seconds=7)
                rows.append(
                    _open_loop_row(bk, start_method, p, c, b, w, workload, event_bytes, load, r,
                                   cores, window, age, orng, t, schema_version)
                )
    with open(out / "runs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        for row in rows:
            w.writerow({k: _fmt(v) for k, v in row.items()})
    sweep = {
        "backends": [b.name for b in backends],
        "producers": list(producers),
        "consumers": list(consumers),
        "batch_sizes": sorted({b for bk in backends for b in bk.batch_sizes},
                              key=lambda b: (b == AUTO, 0 if b == AUTO else b)),
        "work_us": list(work_us),
        "workloads": [workload],
        "event_bytes": [event_bytes],
        "start_methods": [start_method],
        "repeats": repeats,
        "window_s": window,
    }
    if open_loop:
        sweep["loads"] = list(open_loop)
    if max_batch_age is not None:
        sweep["max_batch_age"] = max_batch_age
    if with_command:
        sweep["command"] = (
            "python -m bench sweep --consumers "
            + ",".join(map(str, consumers))
            + f" --repeats {repeats}"
        )
    meta = {
        "schema_version": schema_version,
        "hostname": host,
        "cpu_model": "Synthetic CPU @ 3.0GHz",
        "cpu_count_logical": cores,
        "cpu_count_physical": max(1, cores // 2),
        "memory_total_bytes": 16 * 2**30,
        "platform": "Linux-synthetic-x86_64",
        "python": "3.11.0",
        "packages": {"pyperf": pyperf.__version__},
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "sweep": sweep,
        "calibration": {"iterations_per_us": 100.0, "measured_us_per_call": 1.0},
        "started_utc": started.isoformat(),
        "finished_utc": t.isoformat(),
        "pyperf": {},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    if bench_json:
        _write_bench_json(out / "bench.json", rows)
    return out


#: Idle CPU of one waiting consumer (its wake-ups), in cores: what an extra
#: consumer costs at a rate it is not needed for.
IDLE_CORES_PER_CONSUMER = 0.02
PRODUCER_US_PER_EVENT = 1.5


def open_loop_point(bk: Backend, consumers: int, batch: int, work_us: float, producers: int,
                    offered: float, window_s: float, max_batch_age: float) -> dict:
    """The open-loop model: achieved rate, queue wait and end-to-end latency (ms), CPU per event.

    Producer-side batching (turbo, turbo-many, mpq-batch) makes an event
    wait for its batch to fill: B x producers / offered seconds, capped by
    max_batch_age for turbo.  Queueing adds an M/D/1-like wait that grows as
    the offered rate nears the capacity; past it the backlog grows over the
    window (a saturated point).  End to end adds the work of the batch ahead
    of the event in its consumer.
    """
    cap = bk.eps(consumers, batch)
    per_batch = _per_batch(bk, batch) if bk.name in ("turbo", "turbo-many", "mpq-batch") else 1
    fill = per_batch * producers / offered if per_batch > 1 else 0.0
    if bk.name in ("turbo", "turbo-many"):
        fill = min(fill, max_batch_age)
    if batch == AUTO:
        # Sealed as soon as the consumers wait, whatever the rate.
        fill = bk.auto_fill_ms / 1e3
    achieved = min(offered, cap)
    rho = min(offered / cap, 0.99)
    wq = rho / (2 * (1 - rho)) * per_batch / cap
    qw50 = 0.5 * fill + wq + 1e-4
    qw99 = 0.99 * fill + 4.6 * wq + 2e-4
    if offered > cap:
        backlog = window_s * (1 - cap / offered)
        qw50, qw99 = qw50 + backlog / 2, qw99 + backlog
    busy = per_batch * work_us * 1e-6
    overhead = bk.overhead_us + bk.overhead_per_batch_us / per_batch
    idle_us = IDLE_CORES_PER_CONSUMER * consumers * 1e6 / achieved
    return dict(
        achieved=achieved,
        queue_wait_p50_ms=qw50 * 1e3,
        queue_wait_p99_ms=qw99 * 1e3,
        latency_p50_ms=(qw50 + busy / 2) * 1e3,
        latency_p99_ms=(qw99 + busy) * 1e3,
        consumer_us_per_event=work_us + overhead + idle_us,
    )


def _open_loop_row(bk, start_method, p, c, b, w, workload, event_bytes, load, r, cores, window,
                   age, rng, t, schema_version) -> dict:
    kind, _, value = load.partition(":")
    cap = bk.eps(c, b)
    offered = float(value) if kind == "rate" else float(value) * cap
    pt = open_loop_point(bk, c, b, w, p, offered, window, age)
    noise = 1 + bk.noise * rng.standard_normal()
    eps = pt["achieved"] * (1 + 0.2 * (noise - 1))
    lat = {k: pt[k] * noise for k in ("queue_wait_p50_ms", "queue_wait_p99_ms",
                                      "latency_p50_ms", "latency_p99_ms")}
    events = int(eps * window)
    cons_s = events * pt["consumer_us_per_event"] * 1e-6
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        backend=bk.name, start_method=start_method, producers=p, consumers=c, batch_size=b,
        work_us=float(w), workload=workload, event_bytes=event_bytes,
        schema_version=schema_version, repeat=r, started_utc=t.isoformat(), warmup_s=1.0,
        cpu_count=cores, status="ok", error="", window_s=window, events=events,
        events_total=int(eps * (window + 2)), events_per_s=eps, load=load, offered_rate=offered,
        cell_id=cell_id(bk.name, start_method, p, c, b, w, workload, event_bytes)
        + "-" + load.replace(":", ""),
        consumer_eps_min=eps / c * 0.97, consumer_eps_max=eps / c * 1.03, fairness=0.999,
        cpu_busy_pct=min(100.0, (cons_s / window + eps * 1.5e-6) / cores * 100),
        producer_user_s=events * PRODUCER_US_PER_EVENT * 1e-6 * 0.8,
        producer_sys_s=events * PRODUCER_US_PER_EVENT * 1e-6 * 0.2,
        consumer_user_s=cons_s * 0.9, consumer_sys_s=cons_s * 0.1,
        work_cpu_us_per_event=w, overhead_us_per_event=pt["consumer_us_per_event"] + 1.5 - w,
        useful_work_fraction=eps * w / (cores * 1e6),
        latency_p90_ms=lat["latency_p99_ms"] / 1.3, latency_max_ms=lat["latency_p99_ms"] * 1.5,
        queue_wait_p90_ms=lat["queue_wait_p99_ms"] / 1.3,
        queue_wait_max_ms=lat["queue_wait_p99_ms"] * 1.5, latency_samples=1000,
        lost=0, duplicated=0, **lat,
    )
    return row


_METRICS = (
    "events",
    "events_total",
    "events_per_s",
    "consumer_eps_min",
    "consumer_eps_max",
    "fairness",
    "cpu_busy_pct",
    "cpu_busy_pct_max_core",
    "useful_work_fraction",
    "latency_p99_ms",
    "ctx_voluntary_per_event",
    "ctx_involuntary_per_event",
)


def _fmt(v):
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return v


def _write_bench_json(path: Path, rows: list[dict]) -> None:
    """pyperf suite: one benchmark per cell named by cell_id, one run per ok repeat.

    Values are seconds per event (pyperf's natural unit is time), so lower is
    better, as pyperf's compare_to assumes.
    """
    by_cell: dict[str, list[float]] = {}
    for row in rows:
        if row["status"] == "ok":
            by_cell.setdefault(row["cell_id"], []).append(1.0 / float(row["events_per_s"]))
    benches = []
    for cid, values in by_cell.items():
        runs = [
            pyperf.Run([v], metadata={"name": cid, "unit": "second"}, collect_metadata=False)
            for v in values
        ]
        benches.append(pyperf.Benchmark(runs))
    if benches:  # pyperf refuses an empty suite; a set with no ok cell has no bench.json
        pyperf.BenchmarkSuite(benches).dump(str(path), replace=True)


if __name__ == "__main__":
    print(write_result_set(sys.argv[1] if len(sys.argv) > 1 else "."))
