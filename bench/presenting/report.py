"""``python -m bench report RESULTS_DIR``: curves, a scaling-law fit and a plain recommendation.

Reads only the files of one result set (runs.csv, meta.json; see
bench/schema.py), so any old set can be re-reported.  Writes into ``--out``
(default ``RESULTS_DIR/report``):

* ``report.md`` with PNG plots beside it, and ``report.html`` (the same
  content with the PNGs embedded as base64, so the one file can be mailed);
* ``cells.csv`` (median/min/max of every metric per closed-loop cell),
  ``open_loop_cells.csv`` (the same for open-loop cells, when there are any), ``usl_fits.csv``,
  ``auto_comparison.csv`` and ``peers.csv`` (turbo against each peer, cell by cell: see
  bench.analysing.peers) and ``recommendation.json`` (the answer in machine-readable form).

The recommendation comes first, stated plainly, per scenario (one value of
work_us, producers, workload, event size and start method), with the evidence
after it.  When the data cannot support an answer the report says why
instead of guessing.  Exit status: 0 when the report was written, 2 when the
result set cannot be read (the message names the file).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.analysing.auto import compare_auto
from bench.analysing.axes import (
    SCALING_AXIS,
    SCENARIO_KEYS,
    scenario_label,
    scenario_slug,
    scenarios,
    select,
)
from bench.analysing.curves import fit_curves
from bench.analysing.loading import (
    DEFAULT_NOISE_THRESHOLD,
    ResultSet,
    ResultSetError,
    aggregate,
    failed_runs,
    load_result_set,
)
from bench.analysing.openloop import max_batch_age, open_loop_cells
from bench.analysing.peers import compare_peers
from bench.analysing.rate import RateRecommendation, recommend_rate
from bench.analysing.recommend import (
    DEFAULT_EFFICIENCY_THRESHOLD,
    DEFAULT_LATENCY_BUDGET_MS,
    DEFAULT_WITHIN,
    TURBO,
    Recommendation,
    backend_name,
    is_batched,
    recommend,
)
from bench.analysing.usl import MIN_POINTS
from bench.presenting import auto as auto_part
from bench.presenting import peers as peers_part
from bench.presenting import plots
from bench.presenting.doc import Doc
from bench.presenting.exclusions import excluded_section, failed_section
from bench.presenting.heldout import heldout_section
from bench.presenting.latency import latency_section, rate_json, rate_lines, rate_table
from bench.presenting.machine import machine_section, speed_warning
from bench.presenting.scaling_tables import (
    measured_cells_table,
    recommendation_tables,
    usl_fit_table,
)

fmt = plots.fmt_float


# --------------------------------------------------------------------------- building


@dataclass
class Report:
    out_dir: Path
    markdown_path: Path
    html_path: Path | None
    recommendations: list[Recommendation]
    images: list[Path]
    rate_recommendations: list[RateRecommendation] = field(default_factory=list)


def build_report(
    result_dir,
    out_dir=None,
    *,
    latency_budget_ms: float = DEFAULT_LATENCY_BUDGET_MS,
    efficiency_threshold: float = DEFAULT_EFFICIENCY_THRESHOLD,
    noise_threshold: float = DEFAULT_NOISE_THRESHOLD,
    html_report: bool = True,
    expected_rate: float | None = None,
) -> Report:
    """Write the report of one result set; raises ResultSetError on unreadable input.

    With ``expected_rate`` (events/s) the recommendation leads with the
    configuration that carries that rate within ``latency_budget_ms`` p99 at
    the least CPU (:mod:`bench.analysing.rate`); the closed-loop capacity
    recommendation follows it.
    """
    rs = load_result_set(result_dir)
    out = Path(out_dir) if out_dir else rs.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    cells = aggregate(rs.runs)
    open_cells = open_loop_cells(rs.runs)
    age = max_batch_age(rs.meta)
    cores = rs.cores
    scns = scenarios(pd.concat([cells, open_cells]) if not open_cells.empty else cells)
    fails = failed_runs(rs.runs)
    rate_recs = [
        recommend_rate(cells, open_cells, s, expected_rate, latency_budget_ms, age[0],
                       noise_threshold=noise_threshold)
        for s in scns
    ] if expected_rate else []

    recs: list[Recommendation] = []
    fits_by_scn = []
    for s in scns:
        fits = fit_curves(rs.runs, s)
        fits_by_scn.append(fits)
        recs.append(
            recommend(
                cells,
                rs.runs,
                s,
                cores,
                efficiency_threshold=efficiency_threshold,
                latency_budget_ms=latency_budget_ms,
                noise_threshold=noise_threshold,
                fits=fits,
            )
        )

    doc = Doc()
    title = f"turbo_queue benchmark report: {rs.name}"
    doc.h(1, title)
    meta = rs.meta
    doc.p(
        f"Host **{meta.get('hostname', '?')}**, {meta.get('cpu_model', 'unknown CPU')}, "
        f"**{cores if cores else 'unknown'} logical cores**; sweep {meta.get('started_utc', '?')} "
        f"to {meta.get('finished_utc') or '?'}; commit `{meta.get('git_commit') or 'unknown'}`"
        + (" (with uncommitted changes)" if meta.get("git_dirty") else "")
        + "."
    )
    kafka = meta.get("kafka")
    if isinstance(kafka, dict):
        # The Kafka pipeline scenario (bench.scenarios.kafka): say which cluster
        # carried it, because the mock cluster's figures are not a broker's.
        doc.p(f"**Kafka pipeline scenario, {kafka.get('cluster', 'unknown')} cluster**: {kafka.get('note', '')}")
    _recommendation_section(doc, recs, efficiency_threshold, latency_budget_ms, noise_threshold,
                            rate_recs)
    auto_cmp = [(s, compare_auto(rs.runs, s)) for s in scns]
    auto_part.auto_section(doc, auto_cmp)
    heldout_section(doc, rs.path, rs.name)
    _warnings_section(doc, rs, cells, fails, scns, recs, fits_by_scn)
    machine_section(doc, rs, cores)

    images: list[Path] = []
    for i, (s, rec, fits) in enumerate(zip(scns, recs, fits_by_scn)):
        images += _scenario_section(
            doc, out, cells, s, rec, fits, cores, efficiency_threshold, latency_budget_ms,
            open_cells=open_cells, age=age, expected_rate=expected_rate,
            rate_rec=rate_recs[i] if rate_recs else None,
        )
    peer_cmp = [(s, compare_peers(rs.runs, s)) for s in scns]
    peers_part.peers_section(doc, peer_cmp)
    failed_section(doc, fails)
    excluded_section(doc, rs.runs)
    _method_section(doc, efficiency_threshold, latency_budget_ms, noise_threshold)

    md_path = out / "report.md"
    md_path.write_text(doc.markdown())
    html_path = None
    if html_report:
        html_path = out / "report.html"
        html_path.write_text(doc.html(title))
    cells.to_csv(out / "cells.csv", index=False)
    if not open_cells.empty:
        open_cells.to_csv(out / "open_loop_cells.csv", index=False)
    _write_fits(out / "usl_fits.csv", scns, fits_by_scn)
    auto_part.write_csv(out / "auto_comparison.csv", auto_cmp)
    peers_part.write_csv(out / "peers.csv", peer_cmp)
    (out / "recommendation.json").write_text(
        json.dumps(
            [
                {**_rec_json(r), **({"rate": rate_json(rate_recs[i])} if rate_recs else {})}
                for i, r in enumerate(recs)
            ],
            indent=2,
            default=_jsonable,
        )
    )
    return Report(out, md_path, html_path, recs, images, rate_recs)


def _recommendation_section(doc, recs, thr, budget, noise, rate_recs=()):
    doc.h(2, "Recommendation")
    if not recs:
        doc.p("No scenario with data: nothing to recommend.")
    if rate_recs:
        doc.p(
            f"**For the stated rate** ({rate_recs[0].expected_rate:,.0f} events/s, p99 budget "
            f"{budget:g} ms): the batch size and consumer count that carry it within the budget at "
            "the least CPU. Open-loop cells at or above the rate are the evidence; closed-loop "
            "capacity only where none was measured, and then said so."
        )
        for rr in rate_recs:
            doc.p(rr.headline())
            doc.ul(rate_lines(rr))
        doc.p("**Capacity (closed loop, producers flat out)**: the most events/s per the rules below.")
    for rec in recs:
        items = []
        if rec.ok:
            items.append(rec.comparison_line())
            items.append(_why_count(rec, thr))
            items.append(
                f"Batch size: the smallest whose throughput at {rec.consumers_measured} consumers is "
                f"within {DEFAULT_WITHIN:.0%} of the best batch meeting the {budget:g} ms p99 budget."
            )
            if rec.budget_cost:
                items.append(rec.budget_cost[0].upper() + rec.budget_cost[1:] + ".")
        items += [f"Caution: {w}." for w in rec.warnings]
        items += [f"Note: {n}." for n in rec.notes]
        doc.p(rec.headline())
        doc.ul(items)
    if len(recs) > 1:
        doc.p(
            "The sweep covered several scenarios (per-event work, producers, workload, event size or "
            "start method); each has its own answer above. Pick the one closest to your pipeline; "
            "for the heaviest per-event work measured see the last W listed."
        )
    doc.p(
        f"Ratios are ratios of medians over repeats; the range is min(turbo)/max(other) to "
        f"max(turbo)/min(other), the widest the repeats allow. A cell whose events/s spread "
        f"(max-min)/median exceeds {noise:.0%} is treated as too noisy to recommend from."
    )


def _why_count(rec: Recommendation, thr: float) -> str:
    reason = {
        "efficiency": f"the largest count whose scaling efficiency stays at or above {thr:.0%}",
        "measured range": (
            f"efficiency stays at or above {thr:.0%} up to the largest count measured; more "
            "consumers were not measured, so they may scale further"
        ),
        "N*": "the peak N* of the fitted scaling law (adding consumers beyond it lowers throughput)",
        "cores": "the machine's logical cores (efficiency and N* would allow more)",
    }.get(rec.bounded_by, rec.bounded_by)
    if rec.bounded_by == "measured range" and rec.cores and rec.consumers >= rec.cores:
        reason = (
            f"the largest count measured, which is also the machine's {rec.cores} logical cores; "
            f"efficiency stays at or above {thr:.0%} up to it"
        )
    return (
        f"Process count: {rec.consumers} = {reason} (from the curve of turbo batch "
        f"{rec.reference_batch}; efficiency relative to {rec.efficiency_base})."
    )


def _warnings_section(doc, rs: ResultSet, cells, fails, scns, recs, fits_by_scn):
    items = list(rs.warnings)
    unsteady = speed_warning(rs.meta.get("machine_speed"))
    if unsteady:
        items.append(unsteady)
    if not fails.empty:
        cells_failed = cells[cells["failed"]]
        items.append(
            f"{len(fails)} repeat(s) did not finish ok; {len(cells_failed)} cell(s) have no ok repeat "
            "at all. They are listed under Failed cells and left out of every plot (never drawn as zero)."
        )
    if len(scns) > 1:
        varying = [k for k in SCENARIO_KEYS if cells[k].nunique() > 1]
        items.append(
            f"{len(scns)} scenarios (differing in {', '.join(varying)}): plots and recommendations "
            "are per scenario."
        )
    for s, fits in zip(scns, fits_by_scn):
        sc = select(cells, **s)
        thin = sorted(
            f"{backend_name(b)} b={bs}" if is_batched(sc, b) else backend_name(b)
            for (b, bs), f in fits.items()
            if f.n_points < MIN_POINTS
        )
        if thin:
            items.append(
                f"{scenario_label(s)}: fewer than {MIN_POINTS} consumer counts measured for "
                f"{', '.join(thin)}; their scaling-law fits are underdetermined."
            )
    if items:
        doc.h(2, "Warnings")
        doc.ul(items)


def _scenario_section(doc, out, cells, s, rec, fits, cores, thr, budget, *, open_cells=None,
                      age=(1.0, ""), expected_rate=None, rate_rec=None) -> list[Path]:
    slug = scenario_slug(s)
    sc = select(cells, **s)
    images = []

    def save(fig, name, alt):
        path = out / f"{slug}-{name}.png"
        plots.save(fig, path)
        doc.img(path, alt)
        images.append(path)

    def open_loop_part():
        if open_cells is not None:
            latency_section(doc, save, open_cells, s, age, budget, expected_rate)
        if rate_rec is not None:
            doc.h(3, f"Configuration for {rate_rec.expected_rate:,.0f} events/s")
            doc.p(rate_rec.headline())
            rate_table(doc, rate_rec)

    doc.h(2, f"Scenario: {scenario_label(s)}")
    doc.p(rec.headline())
    recommendation_tables(doc, rec)
    if sc.empty:
        doc.p("No closed-loop cell in this scenario: no scaling curves, only open-loop latency.")
        open_loop_part()
        return images

    doc.h(3, "1. Scaling")
    save(
        plots.plot_scaling(cells, s, cores, fits),
        "scaling",
        "events/s vs consumers, each backend at its best batch size; dashed: USL model",
    )
    if (sc["backend"] == TURBO).any() and sc.loc[
        sc["backend"] == TURBO, "batch_size"
    ].nunique() > 1:
        save(
            plots.plot_scaling(
                cells,
                s,
                cores,
                fits,
                curves=plots.turbo_curves(sc),
                title=f"turbo_queue per batch size: {scenario_label(s)}",
            ),
            "scaling-turbo-batches",
            "turbo_queue events/s vs consumers per batch size; dashed: USL model",
        )
    doc.h(3, "2. Scaling efficiency")
    save(
        plots.plot_efficiency(cells, s, thr, cores, fits=fits), "efficiency",
        "scaling efficiency vs consumers (against the fitted lambda where resolved)"
    )
    doc.h(3, "3. CPU saturation")
    save(
        plots.plot_saturation(cells, s),
        "saturation",
        "machine CPU: useful work, queue overhead and idle vs consumers",
    )
    doc.h(3, "4. Batch-size trade-off (turbo_queue)")
    n = rec.consumers_measured
    if n is None:
        t = sc[(sc["backend"] == TURBO) & ~sc["failed"]]
        n = int(t[SCALING_AXIS].max()) if not t.empty else None
        if n is not None:
            doc.p(f"No recommended count; shown at the largest count measured ok ({n}).")
    if n is not None:
        save(
            plots.plot_batch_tradeoff(cells, s, n, budget, rec.batch_size),
            "batch-tradeoff",
            f"turbo_queue throughput and p99 latency vs batch size at {n} consumers",
        )
    else:
        doc.p("turbo_queue has no ok cell in this scenario: no trade-off to show.")
    doc.h(3, "5. Context switches per event")
    save(
        plots.plot_ctx_switches(cells, s, cores),
        "ctx-switches",
        "context switches per event vs consumers",
    )

    open_loop_part()
    usl_fit_table(doc, sc, fits)
    measured_cells_table(doc, sc, fits)
    return images


def _method_section(doc, thr, budget, noise):
    doc.h(2, "Method")
    doc.ul(
        [
            "Each cell is run several times (repeats interleaved across cells); a point is the "
            "median of its ok repeats, error bars span min to max.",
            "Scaling efficiency(N) = X(N) / (N x lambda), same backend, batch size and work. "
            "lambda is the scaling-law fit's single-process rate when the fit resolves it (more "
            "counts than its 3 parameters, lambda's error <= 10%); otherwise the smallest count's "
            "cell, unless a larger count ran faster per process (then that rate, a lower bound of "
            "lambda). An efficiency above 1 is flagged: the base was too low (a slow base cell or "
            "CPU speed changed), never evidence of better-than-linear scaling.",
            "CPU split: busy = whole-machine busy %; useful = useful_work_fraction x 100 (events x "
            "work_us over cores x window); queue overhead = busy - useful; idle = 100 - busy.",
            f"Process count: the largest count whose efficiency stays >= {thr:.0%} (a failed cell "
            f"ends the run), lowered to N* of the fit when smaller (fits with >= {MIN_POINTS} counts), "
            "bounded by the logical cores.",
            f"Batch size: smallest batch within {DEFAULT_WITHIN:.0%} of the best batch at that count "
            f"among those with p99 <= {budget:g} ms.",
            f"Noise: a cell with (max-min)/median of events/s above {noise:.0%} is too noisy to recommend from.",
            "Open loop (load rate:R or frac:f): events scheduled at the offered rate and timed from "
            "their scheduled time; a cell is saturated when it achieved < 95% of what was offered, by more than its window's event count can tell (achieved_rate_err). "
            "Batch fill time = B / (offered rate per producer), capped by max_batch_age for turbo.",
            "For a stated rate (`--expected-rate R --latency-budget D`): per turbo batch size and "
            "consumer count, the open-loop cell at the lowest rate >= R must carry it with p99 <= D "
            "(raised by the longer batch fill when it was measured above R); without one, a "
            "closed-loop cell whose slowest repeat reached R / 0.8 is evidence of capacity only. "
            "The choice is the least CPU (producer + consumer CPU per event x R).",
            "Held-out check: `python -m bench verify DIR` re-measures the recommendation and its "
            "neighbours in a fresh run (verify.json); the report only reads it.",
            "Compare two result sets with `python -m bench compare A B`.",
        ]
    )


def _write_fits(path: Path, scns, fits_by_scn):
    rows = []
    for s, fits in zip(scns, fits_by_scn):
        for (b, bs), f in fits.items():
            rows.append({**s, "backend": b, "batch_size": bs, **f.as_dict()})
    pd.DataFrame(rows).to_csv(path, index=False)


def _rec_json(rec: Recommendation) -> dict:
    return {
        "scenario": rec.scenario,
        "ok": rec.ok,
        "consumers": rec.consumers,
        "consumers_measured": rec.consumers_measured,
        "batch_size": rec.batch_size,
        "reference_batch": rec.reference_batch,
        "bounded_by": rec.bounded_by,
        "events_per_s": rec.turbo_eps,
        "latency_p99_ms": rec.turbo_p99_ms,
        "efficiency_threshold": rec.efficiency_threshold,
        "latency_budget_ms": rec.latency_budget_ms,
        "comparisons": [
            {
                "backend": c.backend,
                "batch_size": c.batch_size,
                "ratio": c.ratio,
                "ratio_lo": c.ratio_lo,
                "ratio_hi": c.ratio_hi,
                "note": c.note,
            }
            for c in rec.comparisons
        ],
        "headline": rec.headline(),
        "refusals": rec.refusals,
        "warnings": rec.warnings,
        "notes": rec.notes,
    }


def _jsonable(v):
    if hasattr(v, "item"):
        return v.item()
    return str(v)


# --------------------------------------------------------------------------- CLI


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_duration_ms(text: str) -> float:
    """'50ms' -> 50.0, '0.05s' -> 50.0, '500us' -> 0.5, '50' -> 50.0 (ms)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|ms|s)?\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive duration such as 50ms, 0.05s or 500us, got {text!r}"
        )
    return float(m.group(1)) * _UNITS_MS[m.group(2) or "ms"]


def parse_rate(text: str) -> float:
    """'5000' -> 5000.0 events/s; anything but a positive finite number is refused."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected a positive rate in events/s such as 5000, got {text!r}"
        )
    return value


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Report a benchmark result set: scaling curves, USL fit and a recommendation.",
    )
    p.add_argument(
        "results_dir", metavar="RESULTS_DIR", help="a results/<timestamp>-<host>/ folder"
    )
    p.add_argument(
        "--latency-budget-ms",
        type=float,
        default=DEFAULT_LATENCY_BUDGET_MS,
        help="p99 latency a recommended batch size must meet (default: %(default)s)",
    )
    p.add_argument(
        "--latency-budget",
        type=parse_duration_ms,
        dest="latency_budget_ms",
        metavar="DURATION",
        help="the same budget with a unit: 50ms, 0.05s, 500us (a bare number is ms)",
    )
    p.add_argument(
        "--efficiency-threshold",
        type=float,
        default=DEFAULT_EFFICIENCY_THRESHOLD,
        help="lowest scaling efficiency for the process count (default: %(default)s)",
    )
    p.add_argument(
        "--noise-threshold",
        type=float,
        default=DEFAULT_NOISE_THRESHOLD,
        help="largest (max-min)/median events/s spread to recommend from (default: %(default)s)",
    )
    p.add_argument(
        "--expected-rate",
        type=parse_rate,
        default=None,
        metavar="EVENTS_PER_S",
        help="recommend the batch size and consumers that carry this many events/s (in total) "
        "within the p99 latency budget at the least CPU",
    )
    p.add_argument("--out", default=None, help="output folder (default: RESULTS_DIR/report)")
    p.add_argument("--no-html", action="store_true", help="skip report.html")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if not 0 < args.efficiency_threshold <= 1:
        print("error: --efficiency-threshold must be in (0, 1]", file=sys.stderr)
        return 2
    try:
        rep = build_report(
            args.results_dir,
            args.out,
            latency_budget_ms=args.latency_budget_ms,
            efficiency_threshold=args.efficiency_threshold,
            noise_threshold=args.noise_threshold,
            html_report=not args.no_html,
            expected_rate=args.expected_rate,
        )
    except ResultSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for rr in rep.rate_recommendations:
        print(re.sub(r"\*\*(.+?)\*\*", r"\1", rr.headline()))
    for rec in rep.recommendations:
        print(re.sub(r"\*\*(.+?)\*\*", r"\1", rec.headline()))
        if rec.ok:
            print("  " + rec.comparison_line())
    print(f"report: {rep.markdown_path}")
    if rep.html_path:
        print(f"html:   {rep.html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
