"""Open-loop cells: latency at an offered rate, and what sets it at low rates.

A closed-loop cell runs its producers flat out against the queue's bound, so
its latency is the bound over the throughput (Little's law).  An open-loop
cell (``load`` ``rate:R`` or ``frac:f``) schedules events at ``offered_rate``
events/s in total and measures each from its scheduled time, so its latency
is what a pipeline fed at that rate sees.  This module aggregates those
cells and explains their queue wait where batching sets it:

a producer that batches (turbo, turbo-many, mpq-batch) holds an event until
its batch is full, and at R events/s over P producers a batch of B fills in
``B x P / R`` seconds.  turbo seals a partial batch once it is
``max_batch_age`` old, so its wait is bounded by ``min(B x P / R,
max_batch_age)``: the oldest event of a batch waits about that long (the
p99), a median one about half.  At low rates that bound, not the queue, is
the latency.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.analysing.axes import SCENARIO_KEYS, batch_rank, batch_sort_key, is_auto, plain, select
from bench.analysing.loading import aggregate

#: Backends whose producer groups events into batches before the consumer can
#: see any of them: an event waits for its batch to fill.
PRODUCER_BATCHED = frozenset({"turbo", "turbo-many", "mpq-batch"})
#: Backends that seal a partial batch once it is max_batch_age old.
AGE_BOUNDED = frozenset({"turbo", "turbo-many"})
#: turbo_queue.Queue's default max_batch_age (seconds), used when meta.json
#: does not record the one the sweep ran with.
LIBRARY_MAX_BATCH_AGE_S = 1.0
#: How soon turbo's batch_size="auto" seals the open batch while no batch is
#: ready (its background thread's tick, turbo_queue._producer.AUTO_TICK).
AUTO_SEAL_S = 0.005

#: A measured p99 queue wait at least this share of which the batching bound
#: explains is "set by batching".
BATCHING_SHARE = 0.5


def open_loop_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregated open-loop cells (median/min/max over ok repeats), empty when there are none.

    ``saturated`` is True when a repeat did not carry its offered rate
    (achieved < 95% of offered, and by more than its window's count can
    tell: bench.measuring.validity.saturated): past the knee, where latency grows with the
    length of the window and is not a steady-state figure.
    """
    open_rows = runs[runs["load"] != "closed"]
    if open_rows.empty:
        return aggregate(open_rows, closed_only=False)
    cells = aggregate(open_rows, closed_only=False)
    return cells.sort_values([*SCENARIO_KEYS, "backend", "batch_size", "consumers",
                              "events_per_s"], key=batch_sort_key).reset_index(drop=True)


def max_batch_age(meta: dict, backend: str = "turbo") -> tuple[float, str]:
    """(seconds, where it came from): the max_batch_age the sweep ran turbo with.

    Looked up in meta.json's sweep settings (``max_batch_age`` or
    ``max_batch_age_s``, also per backend under ``backend_settings``), then in
    the backend settings recorded per cell (``cells``); otherwise the library
    default of 1 s, said so.
    """
    sweep = (meta or {}).get("sweep") or {}
    for key in ("max_batch_age", "max_batch_age_s"):
        v = sweep.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return float(v), f"meta.json sweep.{key}"
    per_backend = sweep.get("backend_settings") or {}
    if isinstance(per_backend, dict):
        own = per_backend.get(backend) or {}
        for key in ("max_batch_age", "max_batch_age_s"):
            v = own.get(key) if isinstance(own, dict) else None
            if isinstance(v, (int, float)) and v > 0:
                return float(v), f"meta.json sweep.backend_settings.{backend}.{key}"
    for cid, desc in ((meta or {}).get("cells") or {}).items():
        if isinstance(desc, dict) and str(cid).startswith(backend + "-"):
            v = desc.get("max_batch_age_s")
            if isinstance(v, (int, float)) and v > 0:
                return float(v), "meta.json cells (backend settings of each cell)"
    return LIBRARY_MAX_BATCH_AGE_S, "the library default; meta.json does not record it"


def fill_time_s(backend: str, batch_size, producers, rate: float, age_s: float) -> float:
    """Seconds an event can wait for its batch to fill at ``rate`` events/s in total.

    0 for backends whose producer sends events one by one; capped at
    ``age_s`` for turbo.  NaN when the rate is unknown.  turbo's ``auto``
    has no fill time of its own: while its consumers wait for work (the only
    case where a fill time sets the wait) it seals the open batch within
    :data:`AUTO_SEAL_S`, whatever the rate.
    """
    if is_auto(batch_size):
        return min(AUTO_SEAL_S, age_s) if backend in AGE_BOUNDED else math.nan
    if backend not in PRODUCER_BATCHED or not batch_size or batch_size <= 1:
        return 0.0
    if not (isinstance(rate, (int, float)) and rate > 0 and math.isfinite(rate)):
        return math.nan
    fill = float(batch_size) * max(1.0, float(producers)) / float(rate)
    return min(fill, age_s) if backend in AGE_BOUNDED else fill


def batching_table(cells: pd.DataFrame, scenario: dict, age_s: float) -> pd.DataFrame:
    """Per open-loop cell of batching backends: the fill-time bound next to the measured wait.

    Columns: backend, batch_size, consumers, offered_rate, events_per_s,
    rate_per_producer, fill_ms (B / rate per producer, uncapped), bound_ms
    (what batching allows: the fill time, capped by max_batch_age for turbo),
    bound_by ("batch fill" or "max_batch_age"), queue_wait_p50_ms,
    queue_wait_p99_ms, share (bound / measured p99), set_by ("batching" when
    the bound explains at least half of the p99, "queueing" when it does not,
    "not measured" when the cell recorded no queue wait).
    """
    sc = select(cells, **{k: scenario[k] for k in SCENARIO_KEYS})
    # An "auto" cell has no B to divide: the auto section compares it (bench.analysing.auto).
    fixed = sc["batch_size"].map(lambda b: not is_auto(b) and b == b and b > 1).astype(bool)
    sc = sc[sc["backend"].isin(PRODUCER_BATCHED) & fixed & ~sc["failed"]]
    rows = []
    for r in sc.itertuples():
        # The cell's own producers: under --producers auto each cell sized its count.
        p = float(r.producers) if r.producers == r.producers and r.producers > 0 else 1.0
        per_producer = r.offered_rate / p if r.offered_rate == r.offered_rate else math.nan
        fill = r.batch_size / per_producer if per_producer and per_producer > 0 else math.nan
        bound = fill_time_s(r.backend, r.batch_size, p, r.offered_rate, age_s)
        capped = r.backend in AGE_BOUNDED and fill > age_s
        q99 = r.queue_wait_p99_ms
        share = bound * 1e3 / q99 if q99 and q99 == q99 and q99 > 0 else math.nan
        rows.append({
            "backend": r.backend, "batch_size": r.batch_size, "consumers": r.consumers,
            "load": r.load, "offered_rate": r.offered_rate, "events_per_s": r.events_per_s,
            "saturated": bool(r.saturated), "rate_per_producer": per_producer,
            "fill_ms": fill * 1e3, "bound_ms": bound * 1e3,
            "bound_by": "max_batch_age" if capped else "batch fill",
            "queue_wait_p50_ms": r.queue_wait_p50_ms, "queue_wait_p99_ms": q99,
            "latency_p99_ms": r.latency_p99_ms, "share": share,
            "set_by": ("not measured" if share != share
                       else "batching" if share >= BATCHING_SHARE else "queueing"),
        })
    cols = ["backend", "batch_size", "consumers", "load", "offered_rate", "events_per_s",
            "saturated", "rate_per_producer", "fill_ms", "bound_ms", "bound_by",
            "queue_wait_p50_ms", "queue_wait_p99_ms", "latency_p99_ms", "share", "set_by"]
    return pd.DataFrame(rows, columns=cols)


def low_rate_summary(table: pd.DataFrame, backend: str = "turbo") -> list[str]:
    """One sentence per batch size of ``backend`` at its lowest carried rate: what set its wait."""
    out = []
    t = table[(table["backend"] == backend) & ~table["saturated"] & (table["set_by"] != "not measured")]
    for b, g in t.groupby("batch_size", sort=True):
        r = g.sort_values("offered_rate").iloc[0]
        what = ("its max_batch_age" if r["bound_by"] == "max_batch_age"
                else f"the batch fill time {b:g} / {r['rate_per_producer']:,.0f} events/s per producer")
        if r["set_by"] == "batching":
            out.append(
                f"b={b:g} at {r['offered_rate']:,.0f} events/s: queue wait p99 "
                f"{r['queue_wait_p99_ms']:.1f} ms (p50 {r['queue_wait_p50_ms']:.1f} ms), set by "
                f"{what} = {r['bound_ms']:.1f} ms, not by the queue"
            )
        else:
            out.append(
                f"b={b:g} at {r['offered_rate']:,.0f} events/s: queue wait p99 "
                f"{r['queue_wait_p99_ms']:.1f} ms against a batching bound of {r['bound_ms']:.1f} ms "
                f"({what}): most of the wait is queueing"
            )
    return out


def curves(cells: pd.DataFrame, scenario: dict) -> list[tuple[tuple, pd.DataFrame]]:
    """((backend, batch_size, consumers), cells sorted by achieved rate) per open-loop curve."""
    sc = select(cells, **{k: scenario[k] for k in SCENARIO_KEYS})
    sc = sc[~sc["failed"] & sc["events_per_s"].notna()]
    order = {"turbo": 0, "mpq": 1, "mpq-batch": 2}
    keys = sorted({(r.backend, plain(r.batch_size), plain(r.consumers)) for r in sc.itertuples()},
                  key=lambda k: (order.get(k[0], 3), k[0], batch_rank(k[1]), k[2]))
    return [
        (k, select(sc, backend=k[0], batch_size=k[1], consumers=k[2]).sort_values("events_per_s"))
        for k in keys
    ]


def carried(row) -> bool:
    """An aggregated open-loop cell that carried its offered rate in every ok repeat.

    Its ``saturated`` is any repeat's, by the harness's own rule
    (bench.measuring.validity.saturated, read again by the loader): short by
    more than 5% and more than the window's count can tell.  The median
    events/s against a plain 95% line is no second test: it would undo the
    count's allowance.
    """
    return not bool(row["saturated"])
