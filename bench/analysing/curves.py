"""One scaling curve per (backend, batch size) of a scenario: its efficiency and its scaling-law fit.

Efficiency is ``X(N) / (N * lambda)``: events/s at N consumers over N times
one consumer's rate.  lambda is the USL fit's when the fit resolves it, else
the best-supported single-consumer estimate (:func:`per_process_rate`), and
an efficiency above :data:`SUPERLINEAR` is named, since no count can beat N
times the one-process rate.  The recommendation (:mod:`bench.analysing.recommend`)
and the plots read their curves here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.analysing.axes import SCALING_AXIS, batch_rank, number_text, plain, select
from bench.analysing.loading import usable_runs
from bench.analysing.usl import USLFit, fit_usl

#: An efficiency this far above 1 is flagged: no process count can beat N
#: times the single-process rate, so the base it is measured against is
#: too low (a slow base cell, or the CPU ran faster in the other cells).
SUPERLINEAR = 1.05


def per_process_rate(okc: pd.DataFrame, fit: USLFit | None) -> tuple[float, str, float]:
    """(events/s of one consumer, where it comes from, the count it was measured at or NaN).

    The fitted lambda when the fit resolves it (more counts than parameters,
    a tight error): it rests on every point, not on one base cell.  Otherwise
    the best-supported single-consumer estimate: the smallest count's cell,
    unless a larger count ran faster per process (by more than
    :data:`SUPERLINEAR`), which under the scaling law bounds lambda from
    below: then that largest per-process rate.
    """
    if fit is not None and fit.lambda_resolved:
        return float(fit.lam), "the fitted lambda", math.nan
    base = okc.iloc[0]
    base_n = float(base[SCALING_AXIS])
    base_rate = float(base["events_per_s"]) / base_n
    per = okc["events_per_s"] / okc[SCALING_AXIS]
    top = float(per.max())
    if top > SUPERLINEAR * base_rate:
        at = float(okc.loc[per.idxmax(), SCALING_AXIS])
        return top, (
            f"the largest per-process rate measured (at {number_text(plain(at))} consumers: the "
            f"{number_text(plain(base_n))}-consumer cell ran slower per process)"
        ), at
    return base_rate, f"the {number_text(plain(base_n))}-consumer cell", base_n


def curve(cells: pd.DataFrame, backend: str, batch_size, fit: USLFit | None = None) -> pd.DataFrame:
    """One scaling curve (cells of one scenario, backend and batch size), with efficiency.

    Adds ``efficiency`` (and ``efficiency_min``/``_max`` from the min/max of
    repeats) against the single-process rate of :func:`per_process_rate`
    (``per_process``, described by ``efficiency_base``; ``base_n`` is the
    count it was measured at, NaN for the fitted lambda), ``efficiency_vs_base``
    (against the smallest count's cell, as the rate a reader may assume) and
    ``superlinear`` (either efficiency above :data:`SUPERLINEAR`).  Failed
    cells stay in the frame with NaN metrics so callers can list them;
    plotting code drops them.
    """
    c = select(cells, backend=backend, batch_size=batch_size).sort_values(SCALING_AXIS).copy()
    okc = c[~c["failed"]]
    if okc.empty:
        c["base_n"] = c["per_process"] = np.nan
        c["efficiency_base"] = ""
        c["efficiency"] = c["efficiency_min"] = c["efficiency_max"] = np.nan
        c["efficiency_vs_base"] = np.nan
        c["superlinear"] = False
        return c
    per_proc, source, base_n = per_process_rate(okc, fit)
    base = okc.iloc[0]
    c["base_n"] = base_n
    c["per_process"] = per_proc
    c["efficiency_base"] = source
    denom = c[SCALING_AXIS] * per_proc
    c["efficiency"] = c["events_per_s"] / denom
    c["efficiency_min"] = c["events_per_s_min"] / denom
    c["efficiency_max"] = c["events_per_s_max"] / denom
    c["efficiency_vs_base"] = c["events_per_s"] / (
        c[SCALING_AXIS] * base["events_per_s"] / base[SCALING_AXIS]
    )
    c["superlinear"] = (c["efficiency"] > SUPERLINEAR) | (c["efficiency_vs_base"] > SUPERLINEAR)
    return c


def superlinear_note(c: pd.DataFrame, label: str) -> str:
    """A note naming the counts of a curve whose efficiency is above 1, or ''."""
    okc = c[~c["failed"]]
    if okc.empty:
        return ""
    base_n = number_text(plain(okc.iloc[0][SCALING_AXIS]))
    vs_base = okc[okc["efficiency_vs_base"] > SUPERLINEAR]
    vs_rate = okc[okc["efficiency"] > SUPERLINEAR]

    def counts(df, col):
        return ", ".join(f"{number_text(plain(r[SCALING_AXIS]))} ({r[col]:.2f})" for _, r in df.iterrows())

    parts = []
    if not vs_base.empty:
        parts.append(f"against the {base_n}-consumer cell at {counts(vs_base, 'efficiency_vs_base')} consumers")
    if not vs_rate.empty:
        parts.append(f"against {okc['efficiency_base'].iloc[0]} at {counts(vs_rate, 'efficiency')} consumers")
    if not parts:
        return ""
    return (
        f"{label}: efficiency above 1 {'; '.join(parts)}. No count can beat N x the one-process "
        "rate, so the base was slow or the CPU speed changed between cells; the efficiency rule "
        f"uses {okc['efficiency_base'].iloc[0]}"
    )


def best_batch(cells: pd.DataFrame, backend: str):
    """The batch size of ``backend`` with the highest median throughput at any count.

    Ties go to the smaller batch (lower latency for the same throughput).
    None when the backend has no ok cell.
    """
    c = cells[(cells["backend"] == backend) & ~cells["failed"]]
    if c.empty:
        return None
    peak = c.groupby("batch_size")["events_per_s"].max()
    # "auto" ranks after every fixed size: a tie goes to a fixed one.
    return plain(min(peak[peak >= peak.max()].index, key=batch_rank))


def fit_curves(runs: pd.DataFrame, scenario: dict) -> dict[tuple[str, object], USLFit]:
    """USL fit per (backend, batch_size) of one scenario, on every ok repeat."""
    # Invalid, retro-flagged and producer-bound rows are never fitted.
    okr = usable_runs(select(runs, **scenario))
    fits = {}
    for (backend, batch), g in okr.groupby(["backend", "batch_size"], sort=True):
        fits[(backend, plain(batch))] = fit_usl(g[SCALING_AXIS], g["events_per_s"])
    return fits
