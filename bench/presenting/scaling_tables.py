"""The report's evidence tables per scenario: the scaling-law fit, the measured cells, the rules.

Each function writes one table (with its heading or lead sentence) into a
:class:`bench.presenting.doc.Doc`; the report calls them per scenario.
"""

from __future__ import annotations

import math

from bench.analysing.axes import SCALING_AXIS, batch_rank
from bench.analysing.curves import curve
from bench.analysing.recommend import (
    DEFAULT_WITHIN,
    TURBO,
    Recommendation,
    backend_name,
    is_batched,
)
from bench.presenting import plots

fmt = plots.fmt_float


def usl_fit_table(doc, sc, fits) -> None:
    """The USL fit per curve: a sigma or kappa not told apart from 0 is shown (and drawn) as 0."""
    doc.h(3, "Scaling-law fit (Universal Scalability Law)")
    doc.p(
        "X(N) = lambda N / (1 + sigma (N-1) + kappa N (N-1)), bounded least squares over every ok "
        "repeat; +- is one standard error. N* = sqrt((1-sigma)/kappa) is where the model peaks; "
        "the ceiling is X(N*) (or lambda/sigma when kappa = 0). A sigma or kappa within 2 standard errors of 0 counts as 0 (no peak or ceiling seen in the data). **These are model values**, "
        "most of all past the largest N measured."
    )
    rows = []
    for (b, bs), f in sorted(fits.items(), key=lambda kv: (kv[0][0] != TURBO, kv[0][0],
                                                           batch_rank(kv[0][1]))):
        label = f"{backend_name(b)} b={bs}" if is_batched(sc, b) else backend_name(b)
        if not f.ok:
            rows.append([label, "-", "-", "-", "-", "-", "-", f.n_points, "; ".join(f.warnings)])
            continue
        rows.append(
            [
                label,
                f"{f.lam:,.0f} +- {fmt(f.lam_err, 2)}",
                f"{f.sigma:.4f} +- {fmt(f.sigma_err, 2)}",
                f"{f.kappa:.2e} +- {fmt(f.kappa_err, 2)}"
                if f.kappa_resolved
                else f"0 (not resolved: {f.kappa:.1e} +- {fmt(f.kappa_err, 2)})",
                (
                    f"{f.peak_n:.1f} +- {fmt(f.peak_n_err, 2)}"
                    if math.isfinite(f.peak_n)
                    else "none seen (kappa ~ 0)"
                ),
                f"{f.ceiling:,.0f}" if math.isfinite(f.ceiling) else "unbounded",
                fmt(f.r2, 4),
                f.n_points,
                "; ".join(f.warnings) or "",
            ]
        )
    doc.table(
        [
            "curve",
            "lambda (events/s)",
            "sigma",
            "kappa",
            "N*",
            "ceiling (events/s)",
            "R2",
            "counts",
            "warnings",
        ],
        rows,
    )


def measured_cells_table(doc, sc, fits) -> None:
    """Every cell of the scenario with its median [min-max] and its efficiency as the rules read it."""
    doc.h(3, "Measured cells")
    rows = []
    for b, bs in sorted(
        {(r.backend, r.batch_size) for r in sc.itertuples()}, key=lambda k: (k[0] != TURBO, k[0], batch_rank(k[1]))
    ):
        c = curve(sc, b, bs)
        # Efficiency as the recommendation reads it: excluded cells are no
        # base and get none, the base is the fitted lambda where resolved.
        ce = curve(sc.assign(failed=sc["failed"] | sc["excluded"]), b, bs, fits.get((b, bs)))
        ce = ce.set_index("cell_id")
        for r in c.itertuples():
            if r.failed:
                rows.append(
                    [
                        backend_name(b),
                        bs,
                        getattr(r, SCALING_AXIS),
                        "FAILED",
                        "-",
                        "-",
                        "-",
                        f"0/{r.n_runs}",
                    ]
                )
                continue
            rows.append(
                [
                    backend_name(b),
                    bs,
                    getattr(r, SCALING_AXIS),
                    f"{r.events_per_s:,.0f} [{r.events_per_s_min:,.0f}-{r.events_per_s_max:,.0f}]",
                    _efficiency_text(ce.loc[r.cell_id], r),
                    fmt(r.latency_p99_ms, 3),
                    fmt(r.cpu_busy_pct, 3),
                    f"{r.n_ok}/{r.n_runs}",
                ]
            )
    doc.table(
        [
            "backend",
            "batch",
            "consumers",
            "events/s median [min-max]",
            "efficiency",
            "p99 ms",
            "busy %",
            "ok repeats",
        ],
        rows,
    )


def _efficiency_text(e, r) -> str:
    """The measured-cells table's efficiency: flagged above 1, 'excluded' when not counted."""
    if bool(r.excluded):
        return "excluded" + (" (producer-bound)" if bool(r.producer_bound) else "")
    text = fmt(e["efficiency"], 3)
    if bool(e["superlinear"]):
        text += f" **above 1** ({fmt(e['efficiency_vs_base'], 3)} vs smallest count)"
    return text


def recommendation_tables(doc, rec: Recommendation):
    if rec.refusals:
        doc.ul([f"Why no recommendation: {r}" for r in rec.refusals])
    for note in rec.notes:
        doc.p(f"Note: {note}.")
    if rec.per_batch is not None and not rec.per_batch.empty:
        doc.p("Process-count rule per turbo batch size:")
        rows = []
        for r in rec.per_batch.itertuples():
            rows.append(
                [
                    r.batch_size,
                    r.efficiency_base or fmt(r.base_n),
                    fmt(r.efficiency_count),
                    fmt(r.peak_n, 3),
                    fmt(r.count),
                    r.bounded_by or "-",
                    fmt(r.measured),
                    f"{r.eps:,.0f}" if math.isfinite(r.eps) else "-",
                    fmt(r.p99_ms, 3),
                    "yes" if r.fits_budget else "no",
                ]
            )
        doc.table(
            [
                "batch",
                "efficiency base",
                "efficiency allows",
                "USL N*",
                "count",
                "bounded by",
                "measured at",
                "events/s",
                "p99 ms",
                "fits budget",
            ],
            rows,
        )
    if rec.at_count is not None and not rec.at_count.empty:
        doc.p(f"Batch-size rule at {rec.consumers_measured} consumers:")
        rows = []
        for r in rec.at_count.itertuples():
            rows.append(
                [
                    r.batch_size,
                    "FAILED"
                    if r.failed
                    else f"{r.events_per_s:,.0f}"
                    + (" (failed at a smaller count)" if r.failed_upto else ""),
                    fmt(r.latency_p99_ms, 3),
                    "yes" if r.fits_budget else "no",
                    "yes" if r.within else "no",
                    "**recommended**" if r.batch_size == rec.batch_size else "",
                ]
            )
        doc.table(
            [
                "batch",
                "events/s",
                "p99 ms",
                "fits budget",
                f"within {DEFAULT_WITHIN:.0%} of best",
                "",
            ],
            rows,
        )
