"""Turn aggregated cells into the two numbers a user came for: processes and batch size.

Rules (issue 4), applied per scenario (one combination of
:data:`bench.analysing.axes.SCENARIO_KEYS`, so per ``work_us``):

* **Process count** (consumers; producers are fixed by the scenario): for each
  turbo batch size, the largest consumer count N such that scaling efficiency
  ``X(N) / (N * lambda)`` stays at or above the threshold at N and at every
  smaller measured count (a failed cell ends the run of counts), where lambda
  is the USL fit's single-process rate when the fit resolves it and the
  best-supported single-consumer estimate otherwise (see
  :func:`bench.analysing.curves.per_process_rate`; an efficiency above 1 is flagged in the notes,
  since one slow base cell would otherwise inflate every count); lowered to
  floor(N*) of that curve's USL fit when N* is smaller (only when at least
  :data:`bench.analysing.usl.MIN_POINTS` counts were measured, since N* of a thinner fit
  is not trustworthy); and bounded by the machine's logical cores.  The batch
  size whose curve gives the most throughput at its own such N (among those
  meeting the latency budget there) sets the recommended count.
* **Batch size**: at that count, the smallest batch size whose median
  throughput is within ``within`` (5%) of the best batch that meets the p99
  latency budget, and which meets the budget itself.
* **Comparison**: turbo at that point against every other backend at the same
  consumer count (the batched ones at the same batch size when measured, else
  at their best there), as a ratio of medians with a min-max range
  ``min(turbo)/max(other) .. max(turbo)/min(other)`` over repeats.

When the data cannot carry a rule (fewer than 2 counts, failed base cells,
noisy cells, no batch within the budget) the recommendation says so in
``refusals`` instead of guessing.  Cells the recommendation rests on whose
events/s spread ``(max - min) / median`` exceeds the noise threshold make it
refuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from bench.analysing.axes import (
    AUTO_PRODUCERS,
    SCALING_AXIS,
    SCENARIO_KEYS,
    batch_rank,
    batch_sort_key,
    is_auto,
    number_text,
    plain,
    scenario_label,
    select,
)
from bench.analysing.curves import curve, fit_curves, superlinear_note
from bench.analysing.loading import DEFAULT_NOISE_THRESHOLD, too_few_valid
from bench.analysing.usl import MIN_POINTS, USLFit

TURBO = "turbo"
DEFAULT_EFFICIENCY_THRESHOLD = 0.8
DEFAULT_LATENCY_BUDGET_MS = 100.0
#: "within 5% of the best" for the batch-size rule.
DEFAULT_WITHIN = 0.05

BACKEND_NAMES = {
    "turbo": "turbo_queue",
    "turbo-many": "turbo_queue (put_many)",
    "mpq": "multiprocessing.Queue",
    "mpq-batch": "batched multiprocessing.Queue",
    "faster-fifo": "faster-fifo",
}


def backend_name(backend: str) -> str:
    return BACKEND_NAMES.get(backend, backend)


def is_batched(cells: pd.DataFrame, backend: str) -> bool:
    """A backend is batched when it was measured at more than one batch size or a size > 1."""
    sizes = cells.loc[cells["backend"] == backend, "batch_size"].dropna().unique()
    return len(sizes) > 1 or any(is_auto(s) or s > 1 for s in sizes)


# --------------------------------------------------------------------------- recommendation


@dataclass
class Comparison:
    backend: str
    batch_size: object
    ratio: float = math.nan
    ratio_lo: float = math.nan
    ratio_hi: float = math.nan
    turbo_eps: float = math.nan
    other_eps: float = math.nan
    note: str = ""
    noisy: bool = False

    @property
    def available(self) -> bool:
        return math.isfinite(self.ratio)

    def sentence(self) -> str:
        who = backend_name(self.backend)
        if self.batch_size not in (None, 1):
            who += f" (batch {self.batch_size})"
        if not self.available:
            return f"vs {who}: {self.note or 'not measured at this point'}"
        text = f"{self.ratio:.2f}x {who} (range {self.ratio_lo:.2f}x-{self.ratio_hi:.2f}x over repeats)"
        if self.note:
            text += f" [{self.note}]"
        return text


@dataclass
class Recommendation:
    scenario: dict
    efficiency_threshold: float
    latency_budget_ms: float
    noise_threshold: float
    cores: int | None
    consumers: int | None = None  # recommended consumer processes
    consumers_measured: int | None = None  # measured count the evidence comes from
    batch_size: object = None
    reference_batch: object = None  # batch whose curve set the count
    bounded_by: str = ""  # "efficiency", "N*", "cores" or "measured range"
    turbo_eps: float = math.nan
    turbo_eps_min: float = math.nan
    turbo_eps_max: float = math.nan
    turbo_p99_ms: float = math.nan
    base_n: float = math.nan
    efficiency_base: str = ""  # what efficiency was measured against (see per_process_rate)
    comparisons: list[Comparison] = field(default_factory=list)
    per_batch: pd.DataFrame | None = None  # count rule per batch size
    at_count: pd.DataFrame | None = None  # batch rule table at the count
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    budget_cost: str = ""

    @property
    def ok(self) -> bool:
        return not self.refusals and self.consumers is not None and self.batch_size is not None

    @property
    def label(self) -> str:
        return scenario_label(self.scenario)

    def headline(self) -> str:
        """The answer in one plain sentence (or why there is none)."""
        if not self.ok:
            why = "; ".join(self.refusals) or "no turbo data"
            partial = ""
            if self.consumers is not None:
                partial = f" (the scaling data alone points to {self.consumers} consumers)"
            return f"No recommendation for {self.label}: {why}{partial}."
        p = self.scenario["producers"]
        text = (
            f"For {self.label}: run **{self.consumers} consumer process"
            f"{'es' if self.consumers != 1 else ''}** (beside {number_text(p)} producer"
            f"{'s' if p != 1 else ''}) with **batch_size={self.batch_size}**"
        )
        p99 = (
            f" (p99 latency {self.turbo_p99_ms:.1f} ms)" if math.isfinite(self.turbo_p99_ms) else ""
        )
        if self.consumers_measured == self.consumers:
            text += f"; turbo_queue then moves {self.turbo_eps:,.0f} events/s{p99}."
        else:
            text += (
                f". {self.consumers} was not measured; at {self.consumers_measured} consumers, the "
                f"nearest count measured, turbo_queue moved {self.turbo_eps:,.0f} events/s{p99}."
            )
        return text

    def comparison_line(self) -> str:
        if not self.comparisons:
            return "No other backend was measured in this scenario: no comparison."
        n = self.consumers_measured
        have = [c.sentence() for c in self.comparisons if c.available]
        missing = [c for c in self.comparisons if not c.available]
        text = ""
        if have:
            text = (
                f"At {n} consumers, batch {self.batch_size}: turbo_queue = " + "; ".join(have) + "."
            )
        if missing:
            text += (
                (" " if text else "")
                + "No comparison with "
                + "; ".join(
                    f"{backend_name(c.backend)} ({c.note or 'not measured'})" for c in missing
                )
                + "."
            )
        return text


def _auto_or(choice, eligible: pd.DataFrame, at: pd.DataFrame, rec: Recommendation):
    """``auto``'s row where it beats the fixed ``choice``, else ``choice``, with a note why.

    ``auto`` has no size to rank by, so it is chosen only when it dominates:
    at least the chosen fixed size's median events/s *and* a p99 latency no
    higher (within the latency budget, being eligible).
    """
    if is_auto(choice["batch_size"]):
        return choice
    auto = eligible[eligible["batch_size"].map(is_auto).astype(bool)]
    if auto.empty:
        if at["batch_size"].map(is_auto).any():
            rec.notes.append("batch size auto was measured but is not eligible here (failed, or "
                             "past the p99 budget): a fixed size is recommended")
        return choice
    a = auto.iloc[0]
    fixed = f"batch {number_text(plain(choice['batch_size']))}"
    eps_ok = a["events_per_s"] >= choice["events_per_s"]
    p99_ok = not (a["latency_p99_ms"] > choice["latency_p99_ms"])  # NaN: not held against it
    if eps_ok and p99_ok:
        rec.notes.append(
            f"batch size auto wins: {a['events_per_s']:,.0f} events/s against {fixed}'s "
            f"{choice['events_per_s']:,.0f}, p99 {a['latency_p99_ms']:.1f} ms against "
            f"{choice['latency_p99_ms']:.1f} ms")
        return a
    why = []
    if not eps_ok:
        why.append(f"{a['events_per_s']:,.0f} events/s < {choice['events_per_s']:,.0f}")
    if not p99_ok:
        why.append(f"p99 {a['latency_p99_ms']:.1f} ms > {choice['latency_p99_ms']:.1f} ms")
    rec.notes.append(f"batch size auto does not beat {fixed} here ({'; '.join(why)}): the fixed "
                     "size is recommended")
    return choice


def _noisy(row, threshold) -> bool:
    s = row.get("spread", math.nan)
    return bool(isinstance(s, float) and math.isfinite(s) and s > threshold)


def _thin(row) -> bool:
    """Repeated, but resting on fewer than 2 usable repeats: its noise cannot be judged."""
    n_runs = row.get("n_runs", 0)
    return bool(too_few_valid(n_runs, row.get("n_measured", n_runs)))


def _fits_budget(p99, budget) -> bool:
    # An unmeasured latency does not rule a batch out; the report says it is unknown.
    return not (isinstance(p99, float) and math.isfinite(p99)) or p99 <= budget


def recommend(
    cells: pd.DataFrame,
    runs: pd.DataFrame,
    scenario: dict,
    cores: int | None,
    *,
    efficiency_threshold: float = DEFAULT_EFFICIENCY_THRESHOLD,
    latency_budget_ms: float = DEFAULT_LATENCY_BUDGET_MS,
    noise_threshold: float = DEFAULT_NOISE_THRESHOLD,
    within: float = DEFAULT_WITHIN,
    fits: dict | None = None,
) -> Recommendation:
    """Apply the rules in the module docstring to one scenario."""
    rec = Recommendation(
        scenario=scenario,
        efficiency_threshold=efficiency_threshold,
        latency_budget_ms=latency_budget_ms,
        noise_threshold=noise_threshold,
        cores=cores,
    )
    sc = select(cells, **{k: scenario[k] for k in SCENARIO_KEYS})
    if "excluded" in sc:
        # A cell whose every repeat is invalid or producer-bound carries no
        # evidence about the queue: the rules treat it like a failed cell.
        excl = sc[sc["excluded"] & (sc["backend"] == TURBO)]
        if not excl.empty:
            rec.notes.append(
                "not recommended from (invalid, flagged or producer-bound): "
                + ", ".join(excl["cell_id"])
            )
        sc = sc.assign(failed=sc["failed"] | sc["excluded"])
    turbo = sc[sc["backend"] == TURBO]
    if turbo.empty:
        rec.refusals.append("turbo has no closed-loop cell in this scenario (producers flat out)")
        return rec
    if fits is None:
        fits = fit_curves(runs, scenario)
    if cores:
        # The producers run on the same cores as the consumers: the cap on
        # consumers is what is left beside them.
        producers = scenario.get("producers") or 0
        if producers == AUTO_PRODUCERS:
            # Sized per cell, each within the cores its consumers leave: the
            # fewest of them is what the largest consumer count runs beside.
            producers = sc.loc[sc["backend"] == TURBO, "producers"].min()
            producers = int(producers) if producers == producers else 1
        producers = int(producers)
        cores = max(1, int(cores) - producers)
        rec.notes.append(
            f"the core cap counts the {producers} producer(s) too: at most {cores} consumers "
            f"beside them on {cores + producers} cores"
        )
    ok_counts = sorted(turbo.loc[~turbo["failed"], SCALING_AXIS].unique())
    if len(ok_counts) < 2:
        rec.refusals.append(
            f"too few points: turbo has ok results at {len(ok_counts)} consumer count(s) "
            f"({', '.join(number_text(plain(n)) for n in ok_counts) or 'none'}); at least 2 are needed"
        )
        return rec
    if len(ok_counts) < MIN_POINTS:
        rec.warnings.append(
            f"only {len(ok_counts)} consumer counts measured (< {MIN_POINTS}): the scaling-law "
            "fit is underdetermined and its N* is not used to bound the count"
        )
    if cores is None:
        rec.warnings.append(
            "the machine's core count is unknown: the count is not bounded by cores"
        )
    if turbo["n_ok"].max() < 2:
        rec.warnings.append("one repeat per cell: the noise of these numbers cannot be judged")

    rows = []
    for b in sorted(turbo["batch_size"].unique(), key=batch_rank):
        b = plain(b)
        rows.append(
            _count_for_batch(
                curve(sc, TURBO, b, fits.get((TURBO, b))),
                fits.get((TURBO, b)),
                cores,
                efficiency_threshold,
                latency_budget_ms,
            )
        )
    per_batch = pd.DataFrame(rows)
    rec.per_batch = per_batch
    usable = per_batch[per_batch["count"].notna()]
    if usable.empty:
        rec.refusals.append(
            "no turbo batch size has an ok result at its smallest consumer count, so no "
            "efficiency can be computed"
        )
        return rec
    candidates = usable[usable["fits_budget"]]
    if candidates.empty:
        # Still say what the scaling alone gives; refuse the batch size.
        top = usable.sort_values("eps", ascending=False).iloc[0]
        rec.consumers = int(top["count"])
        rec.refusals.append(
            f"no turbo batch size meets the p99 latency budget of {latency_budget_ms:g} ms "
            "at its recommended count"
        )
        return rec
    ref = candidates.sort_values(["eps", "batch_size"], ascending=[False, True],
                                 key=batch_sort_key).iloc[0]
    rec.reference_batch = plain(ref["batch_size"])
    rec.consumers = int(ref["count"])
    rec.consumers_measured = int(ref["measured"])
    rec.bounded_by = ref["bounded_by"]
    rec.base_n = float(ref["base_n"])
    rec.efficiency_base = str(ref["efficiency_base"])
    measured_counts = turbo.loc[~turbo["failed"], SCALING_AXIS]
    if not (measured_counts == 1).any():
        rec.notes.append(
            f"1 consumer was not measured: efficiency is relative to {rec.efficiency_base}"
            + (f" (X({number_text(rec.base_n)}) / {number_text(rec.base_n)} per process)"
               if math.isfinite(rec.base_n) and rec.base_n != 1 else "")
        )
    for note in per_batch["note"]:
        if note:
            rec.notes.append(note)
    for note in per_batch["superlinear"]:
        if note:
            rec.notes.append(note)

    # Batch size at the measured count.
    n = rec.consumers_measured
    at = turbo[(turbo[SCALING_AXIS] == n)].copy().sort_values("batch_size", key=batch_sort_key)
    at["fits_budget"] = [_fits_budget(v, latency_budget_ms) for v in at["latency_p99_ms"]]
    # A batch size that failed at this count or at a smaller one is not one to
    # run: its fast cell here does not make it trustworthy.
    failed_upto = turbo[turbo["failed"] & (turbo[SCALING_AXIS] <= n)]
    unreliable = sorted({plain(b) for b in failed_upto["batch_size"]}, key=batch_rank)
    at["failed_upto"] = at["batch_size"].isin(unreliable)
    okat = at[~at["failed"] & ~at["failed_upto"]]
    eligible = okat[okat["fits_budget"]]
    if unreliable:
        rec.notes.append(
            f"batch size(s) {', '.join(number_text(b) for b in unreliable)} failed at or below "
            f"{n} consumers and are not considered for the batch size"
        )
    best_eps = eligible["events_per_s"].max()
    at["within"] = at["events_per_s"] >= (1 - within) * best_eps
    rec.at_count = at
    # Sorted by size with "auto" last: the smallest fixed size within reach.
    choice = eligible[eligible["events_per_s"] >= (1 - within) * best_eps].iloc[0]
    choice = _auto_or(choice, eligible, at, rec)
    rec.batch_size = plain(choice["batch_size"])
    rec.turbo_eps = float(choice["events_per_s"])
    rec.turbo_eps_min = float(choice["events_per_s_min"])
    rec.turbo_eps_max = float(choice["events_per_s_max"])
    rec.turbo_p99_ms = float(choice["latency_p99_ms"])
    if choice["latency_p99_ms"] != choice["latency_p99_ms"]:  # NaN
        rec.warnings.append(f"p99 latency was not measured for batch {rec.batch_size}")
    ruled_out = okat[~okat["fits_budget"] & (okat["events_per_s"] > choice["events_per_s"])]
    if not ruled_out.empty:
        fastest = ruled_out.sort_values("events_per_s").iloc[-1]
        gain = fastest["events_per_s"] / choice["events_per_s"] - 1
        rec.budget_cost = (
            f"the {latency_budget_ms:g} ms p99 budget rules out batch size(s) "
            f"{', '.join(number_text(plain(b)) for b in ruled_out['batch_size'])}; the fastest of them "
            f"(batch {number_text(plain(fastest['batch_size']))}, p99 {fastest['latency_p99_ms']:.1f} ms) "
            f"would move {gain:.1%} more events/s"
        )

    # Noise on the cells the answer rests on: the chosen cell, the best cell it
    # was judged against, and the efficiency runs of both batch sizes.
    rest = [choice, eligible.sort_values("events_per_s").iloc[-1]]
    for b in {rec.batch_size, rec.reference_batch}:
        cb = curve(sc, TURBO, b, fits.get((TURBO, b)))
        rest.extend(r for _, r in cb[(cb[SCALING_AXIS] <= n) & ~cb["failed"]].iterrows())
    partial = sorted({r["cell_id"] for r in rest if 0 < r["n_ok"] < r["n_runs"]})
    if partial:
        rec.warnings.append(
            f"some repeats of {', '.join(partial)} failed; the numbers rest on the ok repeats only"
        )
    thin = sorted({f"{r['cell_id']} ({int(r['n_measured'])} of {int(r['n_runs'])})"
                   for r in rest if _thin(r)})
    if thin:
        rec.refusals.append(
            "rests on fewer than 2 valid repeats: " + ", ".join(thin)
            + "; rerun with more repeats (--max-repeats) or on a quieter machine"
        )
    noisy = sorted({r["cell_id"] for r in rest if _noisy(r, noise_threshold)})
    if noisy:
        rec.refusals.append(
            f"too noisy: events/s spread (max-min)/median exceeds {noise_threshold:.0%} in "
            f"{', '.join(noisy)}; rerun with more repeats or on a quieter machine"
        )

    # One-line comparison against every other backend at the same count.
    # multiprocessing.Queue first: it is the comparison a user came for.
    order = {"mpq": 0, "mpq-batch": 1}
    others = sorted(
        (b for b in sc["backend"].unique() if b != TURBO), key=lambda b: (order.get(b, 2), b)
    )
    for other in others:
        rec.comparisons.append(_compare_at(sc, other, n, rec, noise_threshold))
    return rec


def _count_for_batch(c: pd.DataFrame, fit: USLFit | None, cores, threshold, budget) -> dict:
    """The count rule for one turbo batch size (one row of ``Recommendation.per_batch``)."""
    b = plain(c["batch_size"].iloc[0])
    row = {
        "batch_size": b,
        "base_n": math.nan,
        "efficiency_count": math.nan,
        "peak_n": fit.peak_n if fit is not None and fit.ok else math.nan,
        "count": math.nan,
        "measured": math.nan,
        "bounded_by": "",
        "eps": math.nan,
        "p99_ms": math.nan,
        "fits_budget": False,
        "note": "",
        "efficiency_base": "",
        "superlinear": "",
    }
    if c.empty or c.iloc[0]["failed"]:
        if not c.empty:
            row["note"] = (
                f"turbo batch {b}: the smallest count ({number_text(plain(c.iloc[0][SCALING_AXIS]))}) "
                "failed, so this batch size has no efficiency base"
            )
        return row
    row["base_n"] = float(c.iloc[0]["base_n"])
    row["efficiency_base"] = c.iloc[0]["efficiency_base"]
    row["superlinear"] = superlinear_note(c, f"turbo batch {b}")
    # The smallest count is always allowed: against the fitted lambda a slow
    # base cell may fall below the threshold, and that says the cell was
    # slow, not that one consumer is too many.
    n_eff = plain(c.iloc[0][SCALING_AXIS])
    for _, r in c.iloc[1:].iterrows():
        if r["failed"]:
            row["note"] = (
                f"turbo batch {b} failed at {number_text(plain(r[SCALING_AXIS]))} consumers: counts from "
                "there on are not recommended from this batch size"
            )
            break
        if r["efficiency"] >= threshold:
            n_eff = plain(r[SCALING_AXIS])
        else:
            break
    row["efficiency_count"] = n_eff
    count, bounded = n_eff, "efficiency"
    if n_eff == c.loc[~c["failed"], SCALING_AXIS].max():
        bounded = "measured range"
    use_peak = (
        fit is not None and fit.ok and fit.n_points >= MIN_POINTS and math.isfinite(fit.peak_n)
    )
    if use_peak and math.floor(fit.peak_n) < count:
        count, bounded = max(1, math.floor(fit.peak_n)), "N*"
    if cores and count > cores:
        count, bounded = cores, "cores"
    measured = c.loc[~c["failed"] & (c[SCALING_AXIS] <= count), SCALING_AXIS].max()
    if not measured == measured:  # NaN: the count lies below every measured one
        measured = c.loc[~c["failed"], SCALING_AXIS].min()
    at = c[c[SCALING_AXIS] == measured].iloc[0]
    row.update(
        count=int(count),
        measured=int(measured),
        bounded_by=bounded,
        eps=float(at["events_per_s"]),
        p99_ms=float(at["latency_p99_ms"]),
        fits_budget=_fits_budget(float(at["latency_p99_ms"]), budget),
    )
    return row


def _compare_at(sc: pd.DataFrame, other: str, n, rec: Recommendation, noise: float) -> Comparison:
    o = sc[(sc["backend"] == other) & (sc[SCALING_AXIS] == n)]
    batched = is_batched(sc, other)
    cmp = Comparison(backend=other, batch_size=None)
    if o.empty:
        cmp.note = f"not measured at {n} consumers"
        return cmp
    okc = o[~o["failed"]]
    if okc.empty:
        if "excluded" in o and bool(o["excluded"].iloc[0]):
            cmp.note = f"not comparable at {n} consumers: {o['exclude_reason'].iloc[0].split(';')[0]}"
        else:
            cmp.note = f"failed at {n} consumers: {o['status_summary'].iloc[0]}"
        return cmp
    same = okc[okc["batch_size"] == rec.batch_size]
    if batched and not same.empty:
        row = same.iloc[0]
    else:
        row = okc.sort_values("events_per_s").iloc[-1]
        if batched:
            cmp.note = "at its best batch size here"
    cmp.batch_size = plain(row["batch_size"]) if batched else None
    cmp.turbo_eps, cmp.other_eps = rec.turbo_eps, float(row["events_per_s"])
    cmp.ratio = rec.turbo_eps / cmp.other_eps
    cmp.ratio_lo = rec.turbo_eps_min / float(row["events_per_s_max"])
    cmp.ratio_hi = rec.turbo_eps_max / float(row["events_per_s_min"])
    if _noisy(row, noise):
        cmp.noisy = True
        cmp.note = (cmp.note + "; " if cmp.note else "") + (
            f"too noisy to state: its spread is {row['spread']:.0%}"
        )
    elif _thin(row):
        cmp.noisy = True
        cmp.note = (cmp.note + "; " if cmp.note else "") + (
            f"too few valid repeats to state ({int(row['n_measured'])} of {int(row['n_runs'])})"
        )
    return cmp


def recommend_all(cells, runs, scenarios, cores, **kw) -> list[Recommendation]:
    """One recommendation per scenario (see :func:`recommend`)."""
    return [recommend(cells, runs, s, cores, **kw) for s in scenarios]
