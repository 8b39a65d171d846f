"""The report's open-loop part: latency-versus-throughput curves and the rate recommendation.

The curves are the OpenMessaging Benchmark's view: per scenario, one curve
per (backend, batch size[, consumers]), x = achieved events/s, y = p99
(solid) and p50 (dashed) latency on a log scale, end to end on the left and
queue wait on the right.  Saturated points (achieved < 95% of offered, beyond
what the window's count can tell) are
drawn hollow and red-rimmed: their latency grows with the window and is no
steady state.  Beside the curves a table puts turbo's batch fill time
``B / (rate per producer)`` (capped by ``max_batch_age``) next to the
measured queue wait, which is what sets the latency at low rates.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.analysing.axes import scenario_label
from bench.analysing.openloop import AGE_BOUNDED, batching_table, curves, low_rate_summary
from bench.analysing.rate import EVIDENCE_CLOSED, RateRecommendation
from bench.analysing.recommend import backend_name
from bench.presenting import plots

fmt = plots.fmt_float


def curve_label(key: tuple, many_counts: bool, batched: set) -> str:
    backend, batch, consumers = key
    text = backend_name(backend) + (f" b={batch}" if backend in batched else "")
    if many_counts:
        text += f", {consumers} consumer{'s' if consumers != 1 else ''}"
    return text


def plot_latency_vs_throughput(open_cells: pd.DataFrame, scenario: dict,
                               budget_ms: float | None = None, expected_rate: float | None = None):
    """Two panels (end to end, queue wait): p99 and p50 latency vs achieved events/s, log y."""
    cs = curves(open_cells, scenario)
    fig, axes = plt.subplots(1, 2, figsize=(13.0, 5.0), dpi=plots.DPI, sharey=True)
    many = len({k[2] for k, _ in cs}) > 1
    batched = {k[0] for k, _ in cs if k[1] not in (None, 1)}
    xs_all = []
    for i, (key, c) in enumerate(cs):
        color = f"C{i % 10}"
        label = curve_label(key, many, batched)
        x = c["events_per_s"].to_numpy(float)
        xs_all += list(x)
        sat = c["saturated"].fillna(False).to_numpy(bool)
        for ax, prefix in zip(axes, ("latency", "queue_wait")):
            p99 = c[f"{prefix}_p99_ms"].to_numpy(float)
            p50 = c[f"{prefix}_p50_ms"].to_numpy(float)
            ax.plot(x, p99, color=color, marker="o", label=label if prefix == "latency" else None)
            ax.plot(x, p50, color=color, marker=".", linestyle="--", alpha=0.6)
            if sat.any():
                ax.scatter(x[sat], p99[sat], s=140, facecolors="none", edgecolors="red",
                           linewidths=1.5, zorder=5)
    for ax, what in zip(axes, ("end to end (scheduled -> processed)",
                               "queue wait (scheduled -> handed to a consumer)")):
        if budget_ms:
            ax.axhline(budget_ms, color="k", linestyle=":", linewidth=1,
                       label=f"p99 budget {budget_ms:g} ms")
        if expected_rate:
            ax.axvline(expected_rate, color="0.4", linestyle="-.", linewidth=1,
                       label=f"expected rate {expected_rate:,.0f}/s")
        ax.set_yscale("log")
        positive = [v for v in xs_all if v > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("achieved events/s")
        ax.set_title(what, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("latency, ms (log)")
    if cs:
        axes[0].plot([], [], color="0.3", marker="o", label="solid: p99")
        axes[0].plot([], [], color="0.3", marker=".", linestyle="--", label="dashed: p50")
        axes[0].scatter([], [], s=140, facecolors="none", edgecolors="red", linewidths=1.5,
                        label="saturated (achieved < 95% of offered)")
    handles, labels = axes[0].get_legend_handles_labels()
    # Many curves: the legend goes beside the panels, not over the data.
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(f"Latency vs throughput (open loop): {scenario_label(scenario)}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.79, 1))
    return fig


def latency_section(doc, save, open_cells: pd.DataFrame, scenario: dict, age: tuple[float, str],
                    budget_ms: float | None, expected_rate: float | None) -> None:
    """The scenario's open-loop subsection (nothing when it has no open-loop cell)."""
    if open_cells.empty or not curves(open_cells, scenario):
        return
    doc.h(3, "6. Latency vs throughput (open loop)")
    doc.p(
        "Each point is an open-loop cell: events scheduled at a fixed rate and timed from their "
        "scheduled time, so a producer that fell behind cannot hide the queueing it caused. "
        "Solid: p99, dashed: p50; red rims: saturated cells (achieved < 95% of offered, beyond what "
        "the window's event count can tell), whose "
        "latency grows with the window and is not a steady state."
    )
    save(plot_latency_vs_throughput(open_cells, scenario, budget_ms, expected_rate),
         "latency-throughput", "p99 and p50 latency vs achieved events/s, end to end and queue wait")
    age_s, source = age
    table = batching_table(open_cells, scenario, age_s)
    # The claim is turbo's: its batches are what max_batch_age bounds.
    table = table[table["backend"].isin(AGE_BOUNDED)]
    if table.empty:
        return
    doc.p(
        f"**At low rates turbo_queue's latency is set by batching, not by the queue**: a producer "
        f"holds an event until its batch of B is full, B / (rate per producer) seconds, or until "
        f"the batch is max_batch_age old. max_batch_age here: **{age_s:g} s** ({source}). The "
        "oldest event of a batch waits about the fill time (the p99), a median one about half."
    )
    doc.ul([s[0].upper() + s[1:] + "." for s in low_rate_summary(table)])
    rows = []
    for r in table.itertuples():
        rows.append([
            backend_name(r.backend), r.batch_size, r.consumers, f"{r.offered_rate:,.0f}",
            f"{r.events_per_s:,.0f}" + (" (saturated)" if r.saturated else ""),
            f"{r.rate_per_producer:,.0f}", fmt(r.fill_ms, 3),
            fmt(r.bound_ms, 3) + (" (max_batch_age)" if r.bound_by == "max_batch_age" else ""),
            fmt(r.queue_wait_p50_ms, 3), fmt(r.queue_wait_p99_ms, 3), fmt(r.latency_p99_ms, 3),
            r.set_by,
        ])
    doc.table(["backend", "batch", "consumers", "offered/s", "achieved/s", "per producer/s",
               "fill B/rate ms", "batching bound ms", "queue wait p50 ms", "queue wait p99 ms",
               "end-to-end p99 ms", "set by"], rows)


def rate_lines(rec: RateRecommendation) -> list[str]:
    """The bullet points under a rate recommendation's headline."""
    items = [f"Note: {n}." for n in rec.notes]
    if rec.ok:
        # Alternatives of the same kind of evidence: a closed-loop cell's CPU at
        # full load is not comparable with an open-loop cell's at the rate.
        same = rec.choice.evidence == EVIDENCE_CLOSED
        others = [c for c in rec.candidates if c.supported and c is not rec.choice
                  and (c.evidence == EVIDENCE_CLOSED) == same]
        if others:
            alt = sorted(others, key=lambda c: c.cores)[0]
            items.insert(0, f"Next cheapest: batch {alt.batch_size}, {alt.consumers} consumer(s), "
                            f"{alt.cores:.2f} cores ({alt.evidence}).")
    return items


def rate_table(doc, rec: RateRecommendation) -> None:
    if not rec.candidates:
        return
    doc.p(f"Configurations considered for {rec.expected_rate:,.0f} events/s within {rec.budget_ms:g} ms "
          "p99 (turbo_queue; CPU = producers + consumers per event, times the rate):")
    rows = []
    for c in sorted(rec.candidates,
                    key=lambda c: (c.evidence == EVIDENCE_CLOSED, not c.supported, c.cores)):
        rows.append([
            c.batch_size, c.consumers, c.evidence, f"`{c.cell_id}`",
            f"{c.offered_rate:,.0f}" if math.isfinite(c.offered_rate) else "-",
            f"{c.achieved:,.0f}" if math.isfinite(c.achieved) else "-",
            fmt(c.p99_at_rate_ms, 3), fmt(c.fill_ms, 3), fmt(c.cpu_us_per_event, 3),
            f"{c.cores:.3f}" if math.isfinite(c.cores) else "-",
            "**chosen**" if c is rec.choice else ("yes" if c.supported else f"no: {c.reason}"),
        ])
    doc.table(["batch", "consumers", "evidence", "cell", "offered/s", "achieved/s",
               "p99 at rate ms", "batch fill at rate ms", "CPU us/event", "cores at rate",
               "supports"], rows)


def rate_json(rec: RateRecommendation) -> dict:
    c = rec.choice
    return {
        "expected_rate": rec.expected_rate,
        "latency_budget_ms": rec.budget_ms,
        "max_batch_age_s": rec.max_batch_age_s,
        "ok": rec.ok,
        "batch_size": c.batch_size if c else None,
        "consumers": c.consumers if c else None,
        "evidence": c.evidence if c else None,
        "cell_id": c.cell_id if c else None,
        "cores": _finite(c.cores) if c else None,
        "p99_at_rate_ms": _finite(c.p99_at_rate_ms) if c else None,
        "headline": rec.headline(),
        "refusals": rec.refusals,
        "notes": rec.notes,
    }


def _finite(v):
    return float(v) if isinstance(v, (int, float, np.floating)) and math.isfinite(v) else None
