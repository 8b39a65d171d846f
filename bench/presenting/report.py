"""``python -m bench report RESULTS_DIR``: curves, a scaling-law fit and a plain recommendation.

Reads only the files of one result set (runs.csv, meta.json; see
bench/schema.py), so any old set can be re-reported.  Writes into ``--out``
(default ``RESULTS_DIR/report``):

* ``report.md`` with PNG plots beside it, and ``report.html`` (the same
  content with the PNGs embedded as base64, so the one file can be mailed);
* ``cells.csv`` (median/min/max of every metric per cell), ``usl_fits.csv``
  and ``recommendation.json`` (the answer in machine-readable form).

The recommendation comes first, stated plainly, per scenario (one value of
work_us, producers, workload, event size and start method), with the evidence
after it.  When the data cannot support an answer the report says why
instead of guessing.  Exit status: 0 when the report was written, 2 when the
result set cannot be read (the message names the file).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.analysing.loading import (
    DEFAULT_NOISE_THRESHOLD,
    SCALING_AXIS,
    SCENARIO_KEYS,
    ResultSet,
    ResultSetError,
    aggregate,
    excluded_runs,
    failed_runs,
    load_result_set,
    scenario_label,
    scenario_slug,
    scenarios,
    select,
)
from bench.analysing.recommend import (
    DEFAULT_EFFICIENCY_THRESHOLD,
    DEFAULT_LATENCY_BUDGET_MS,
    DEFAULT_WITHIN,
    TURBO,
    Recommendation,
    backend_name,
    curve,
    fit_curves,
    is_batched,
    recommend,
)
from bench.analysing.usl import MIN_POINTS
from bench.presenting import plots
from bench.schema import SWEEP_AXES, SWEEP_SCALARS

fmt = plots.fmt_float


# --------------------------------------------------------------------------- document model
# The report is built once as a list of blocks and rendered twice (Markdown and
# HTML), so the two can never disagree.


@dataclass
class Doc:
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def ul(self, items: list[str]):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, headers: list[str], rows: list[list]):
        self.blocks.append(("table", headers, [[str(c) for c in r] for r in rows]))

    def img(self, path: Path, alt: str):
        self.blocks.append(("img", path, alt))

    def code(self, text: str):
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append("#" * b[1] + " " + b[2])
            elif kind == "p":
                out.append(b[1])
            elif kind == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif kind == "table":
                head, rows = b[1], b[2]
                lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{b[2]}]({b[1].name})")
            elif kind == "code":
                out.append("```\n" + b[1] + "\n```")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                body.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{_inline(h)}</th>" for h in b[1])
                rows = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in b[2]
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(b[2])}</figcaption></figure>"
                )
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(b[1])}</code></pre>")
        return (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;"
    "line-height:1.45;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:90%}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:85%;color:#555}"
    "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}code{font-size:90%}"
)


def _inline(text: str) -> str:
    """The little Markdown the report uses inline (**bold**, `code`) as HTML."""
    t = html.escape(str(text))
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


# --------------------------------------------------------------------------- building


@dataclass
class Report:
    out_dir: Path
    markdown_path: Path
    html_path: Path | None
    recommendations: list[Recommendation]
    images: list[Path]


#: meta["sweep"] keys that ``python -m bench sweep`` takes as flags (the grid
#: axes and the scalar settings), in the order the command prints them.
SWEEP_FLAGS = SWEEP_AXES + SWEEP_SCALARS


def reproduce_command(meta: dict) -> tuple[str, bool]:
    """(command, exact): the sweep's own command line, or one rebuilt from its config.

    The rebuilt one passes every axis explicitly (after count expressions like
    "cores" were resolved on the original machine), so it reruns the same grid.
    """
    sweep = meta.get("sweep") or {}
    cmd = sweep.get("command")
    if isinstance(cmd, list):
        cmd = shlex.join(map(str, cmd))
    if cmd:
        return str(cmd), True
    parts = ["python -m bench sweep"]
    for key in SWEEP_FLAGS:
        value = sweep.get(key)
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(_flag_value(v) for v in value)
        else:
            value = _flag_value(value)
        parts.append(f"--{key.replace('_', '-')} {shlex.quote(value)}")
    return " ".join(parts), False


def _flag_value(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def build_report(
    result_dir,
    out_dir=None,
    *,
    latency_budget_ms: float = DEFAULT_LATENCY_BUDGET_MS,
    efficiency_threshold: float = DEFAULT_EFFICIENCY_THRESHOLD,
    noise_threshold: float = DEFAULT_NOISE_THRESHOLD,
    html_report: bool = True,
) -> Report:
    """Write the report of one result set; raises ResultSetError on unreadable input."""
    rs = load_result_set(result_dir)
    out = Path(out_dir) if out_dir else rs.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    cells = aggregate(rs.runs)
    cores = rs.cores
    scns = scenarios(cells)
    fails = failed_runs(rs.runs)

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
    _recommendation_section(doc, recs, efficiency_threshold, latency_budget_ms, noise_threshold)
    _warnings_section(doc, rs, cells, fails, scns, recs, fits_by_scn)
    _machine_section(doc, rs, cores)

    images: list[Path] = []
    for s, rec, fits in zip(scns, recs, fits_by_scn):
        images += _scenario_section(
            doc, out, cells, s, rec, fits, cores, efficiency_threshold, latency_budget_ms
        )
    _failed_section(doc, fails)
    _excluded_section(doc, rs.runs)
    _method_section(doc, efficiency_threshold, latency_budget_ms, noise_threshold)

    md_path = out / "report.md"
    md_path.write_text(doc.markdown())
    html_path = None
    if html_report:
        html_path = out / "report.html"
        html_path.write_text(doc.html(title))
    cells.to_csv(out / "cells.csv", index=False)
    _write_fits(out / "usl_fits.csv", scns, fits_by_scn)
    (out / "recommendation.json").write_text(
        json.dumps([_rec_json(r) for r in recs], indent=2, default=_jsonable)
    )
    return Report(out, md_path, html_path, recs, images)


def _recommendation_section(doc, recs, thr, budget, noise):
    doc.h(2, "Recommendation")
    if not recs:
        doc.p("No scenario with data: nothing to recommend.")
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
        f"{rec.reference_batch}; efficiency relative to {plots.fmt_float(rec.base_n)} consumer"
        f"{'s' if rec.base_n != 1 else ''})."
    )


def _warnings_section(doc, rs: ResultSet, cells, fails, scns, recs, fits_by_scn):
    items = list(rs.warnings)
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


def _machine_section(doc, rs: ResultSet, cores):
    meta = rs.meta
    doc.h(2, "Machine and sweep")
    mem = meta.get("memory_total_bytes")
    rows = [
        ["result set", f"`{rs.path}`"],
        ["host", meta.get("hostname", "?")],
        ["CPU model", meta.get("cpu_model", "?")],
        ["logical cores seen", cores if cores else "unknown"],
        ["physical cores", meta.get("cpu_count_physical", "?")],
        ["memory", f"{mem / 2**30:.1f} GiB" if isinstance(mem, (int, float)) else "?"],
        ["platform", meta.get("platform", "?")],
        ["python", meta.get("python", "?")],
        ["git commit", f"`{meta.get('git_commit') or 'unknown'}`"],
        ["started (UTC)", meta.get("started_utc", "?")],
        [
            "finished (UTC)",
            meta.get("finished_utc") or "? (not recorded: the sweep may have stopped early)",
        ],
        ["schema version", meta.get("schema_version", "?")],
        ["cells / rows", f"{rs.runs['cell_id'].nunique()} / {len(rs.runs)}"],
    ]
    doc.table(["", ""], rows)
    doc.p(
        f"This machine has {cores if cores else 'an unknown number of'} logical cores. Throughput at "
        "more consumers than cores, and every dashed scaling-law curve past the largest measured "
        "count, is a **model** (the Universal Scalability Law fitted to the measured points), not "
        "a measurement: a 2-core laptop cannot show 40-core behaviour."
    )
    cmd, exact = reproduce_command(meta)
    doc.p(
        "Reproduce the sweep with"
        + ("" if exact else " (every axis spelled out from meta.json's sweep config)")
        + ":"
    )
    doc.code(cmd)
    if meta.get("sweep"):
        doc.p("Sweep configuration as run:")
        doc.code(json.dumps(meta["sweep"], indent=2, sort_keys=True, default=str))


def _scenario_section(doc, out, cells, s, rec, fits, cores, thr, budget) -> list[Path]:
    slug = scenario_slug(s)
    sc = select(cells, **s)
    images = []

    def save(fig, name, alt):
        path = out / f"{slug}-{name}.png"
        plots.save(fig, path)
        doc.img(path, alt)
        images.append(path)

    doc.h(2, f"Scenario: {scenario_label(s)}")
    doc.p(rec.headline())
    _recommendation_tables(doc, rec)

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
        plots.plot_efficiency(cells, s, thr, cores), "efficiency", "scaling efficiency vs consumers"
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

    doc.h(3, "Scaling-law fit (Universal Scalability Law)")
    doc.p(
        "X(N) = lambda N / (1 + sigma (N-1) + kappa N (N-1)), bounded least squares over every ok "
        "repeat; +- is one standard error. N* = sqrt((1-sigma)/kappa) is where the model peaks; "
        "the ceiling is X(N*) (or lambda/sigma when kappa = 0). A sigma or kappa within 2 standard errors of 0 counts as 0 (no peak or ceiling seen in the data). **These are model values**, "
        "most of all past the largest N measured."
    )
    rows = []
    for (b, bs), f in sorted(fits.items(), key=lambda kv: (kv[0][0] != TURBO, kv[0][0], kv[0][1])):
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

    doc.h(3, "Measured cells")
    rows = []
    for b, bs in sorted(
        {(r.backend, r.batch_size) for r in sc.itertuples()}, key=lambda k: (k[0] != TURBO, k)
    ):
        c = curve(sc, b, bs)
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
                    fmt(r.efficiency, 3),
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
    return images


def _recommendation_tables(doc, rec: Recommendation):
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
                    fmt(r.base_n),
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
                "base N",
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


def _failed_section(doc, fails: pd.DataFrame):
    doc.h(2, "Failed cells")
    if fails.empty:
        doc.p("None: every repeat of every cell finished ok.")
        return
    doc.p("These repeats did not finish ok. They are excluded from medians, fits and plots.")
    rows = [
        [f"`{r.cell_id}`", r.repeat, r.status, (r.error or "").replace("\n", " ")[:200]]
        for r in fails.itertuples()
    ]
    doc.table(["cell", "repeat", "status", "error"], rows)


def _excluded_section(doc, runs: pd.DataFrame):
    """Rows kept out of fits, efficiencies and the recommendation, and why.

    Rows of a set written before the harness checked validity (schema v1)
    are marked "flagged (made before validity checks)": the reasons are what
    the checks would have found, judged from the columns such a set has.
    """
    doc.h(2, "Invalid and flagged cells")
    ex = excluded_runs(runs)
    before = bool(runs.loc[runs["status"] == "ok", "made_before_checks"].any())
    if before:
        doc.p(
            "This result set was made before the harness checked each cell's validity. The "
            "rows below are **flagged (made before validity checks)**: the reasons are what those "
            "checks would flag, judged from the CPU times, overhead and calibration it recorded."
        )
    if ex.empty:
        doc.p("None: every ok repeat passed the validity checks and no producer-bound cell was seen.")
        return
    doc.p(
        f"{len(ex)} ok repeat(s) in {ex['cell_id'].nunique()} cell(s) are listed here and left out "
        "of fits, efficiencies and the recommendation."
    )
    rows = [
        [
            f"`{r.cell_id}`",
            r.repeat,
            "flagged (made before validity checks)" if r.made_before_checks else "invalid",
            (r.exclude_reason or "").replace("\n", " ")[:300],
        ]
        for r in ex.itertuples()
    ]
    doc.table(["cell", "repeat", "state", "reason"], rows)


def _method_section(doc, thr, budget, noise):
    doc.h(2, "Method")
    doc.ul(
        [
            "Each cell is run several times (repeats interleaved across cells); a point is the "
            "median of its ok repeats, error bars span min to max.",
            "Scaling efficiency(N) = X(N) / (N x X(n0)/n0) with n0 the smallest consumer count "
            "measured (normally 1), same backend, batch size and work.",
            "CPU split: busy = whole-machine busy %; useful = useful_work_fraction x 100 (events x "
            "work_us over cores x window); queue overhead = busy - useful; idle = 100 - busy.",
            f"Process count: the largest count whose efficiency stays >= {thr:.0%} (a failed cell "
            f"ends the run), lowered to N* of the fit when smaller (fits with >= {MIN_POINTS} counts), "
            "bounded by the logical cores.",
            f"Batch size: smallest batch within {DEFAULT_WITHIN:.0%} of the best batch at that count "
            f"among those with p99 <= {budget:g} ms.",
            f"Noise: a cell with (max-min)/median of events/s above {noise:.0%} is too noisy to recommend from.",
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
        )
    except ResultSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
