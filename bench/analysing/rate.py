"""The recommendation for a stated rate and latency budget.

``python -m bench report DIR --expected-rate 5000 --latency-budget 50ms``
asks: which turbo batch size and consumer count carry 5,000 events/s with a
p99 end-to-end latency within 50 ms, at the least CPU?  Per scenario:

1. **Open-loop evidence first.**  For each (batch size, consumers) the
   open-loop cell at the lowest offered rate at or above the expected one
   (within 5% below counts as "at") must have carried its rate (achieved >=
   95% of offered, or less only within its window's count: not saturated) and kept its p99 within the budget.  A cell measured at
   a *higher* rate filled its batches faster than the expected rate will:
   the p99 is raised by the extra fill time, ``min(B P / R, max_batch_age)``
   minus the same at the cell's rate, before it is held against the budget.
2. **Closed-loop capacity otherwise, said plainly.**  A configuration with
   no open-loop cell at or above the rate is supported by a closed-loop cell
   whose slowest repeat moved at least ``R / MAX_UTILISATION`` events/s
   (queueing latency grows without bound as the load nears the capacity);
   its latency at R was not measured, so only the batch fill time at R is
   held against the budget.
3. **Least CPU.**  Among the supported configurations the one whose CPU per
   event (producers + consumers, measured in its cell) times the expected
   rate is the smallest, in cores; ties go to fewer consumers, then the
   smaller batch.

Invalid or flagged cells (see :mod:`bench.analysing.loading`), noisy ones
and repeated ones left with fewer than 2 valid repeats are never evidence.
When nothing supports the rate the answer is a refusal naming why: nothing
carried the rate (and the most that was), or what carried it missed the
budget (and the lowest p99 seen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from bench.analysing.axes import SCENARIO_KEYS, batch_rank, plain, scenario_label, select
from bench.analysing.loading import DEFAULT_NOISE_THRESHOLD, too_few_valid
from bench.analysing.openloop import fill_time_s

TURBO = "turbo"
#: An open-loop cell offered this little below the expected rate still counts as "at" it.
RATE_TOLERANCE = 0.05
#: Closed-loop capacity must exceed the expected rate by this headroom.
MAX_UTILISATION = 0.8

EVIDENCE_AT = "open loop at the rate"
EVIDENCE_ABOVE = "open loop above the rate"
EVIDENCE_CLOSED = "closed-loop capacity"


@dataclass
class RateCandidate:
    batch_size: object
    consumers: int
    evidence: str
    cell_id: str
    producers: int = 1  # the cell's own (sized per cell under --producers auto)
    offered_rate: float = math.nan
    achieved: float = math.nan
    p99_ms: float = math.nan  # measured in the cell (NaN for closed-loop evidence at R)
    p99_at_rate_ms: float = math.nan  # p99 held against the budget
    fill_ms: float = math.nan  # batch fill bound at the expected rate
    cpu_us_per_event: float = math.nan
    cores: float = math.nan  # CPU per event x expected rate
    carries: bool = False  # the cell shows the rate can be carried (latency aside)
    supported: bool = False
    reason: str = ""  # why not supported (empty when supported)


@dataclass
class RateRecommendation:
    scenario: dict
    expected_rate: float
    budget_ms: float
    max_batch_age_s: float
    choice: RateCandidate | None = None
    candidates: list[RateCandidate] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.choice is not None and not self.refusals

    @property
    def label(self) -> str:
        return scenario_label(self.scenario)

    def headline(self) -> str:
        r, b = self.expected_rate, self.budget_ms
        if not self.ok:
            return (f"No configuration carries {r:,.0f} events/s within a p99 of {b:g} ms for "
                    f"{self.label}: {'; '.join(self.refusals)}.")
        c = self.choice
        lat = (f"p99 {c.p99_at_rate_ms:.1f} ms" if math.isfinite(c.p99_at_rate_ms)
               else f"p99 not measured at this rate; batch fill {c.fill_ms:.1f} ms")
        return (
            f"For {r:,.0f} events/s within a p99 of {b:g} ms ({self.label}): run **{c.consumers} "
            f"consumer process{'es' if c.consumers != 1 else ''}** (beside {c.producers} producer"
            f"{'s' if c.producers != 1 else ''}) with **batch_size={c.batch_size}**"
            + (f", about {c.cores:.2f} cores of CPU ({c.cpu_us_per_event:.1f} us per event); "
               if math.isfinite(c.cores) else " (its CPU was not recorded); ")
            + f"{lat}; evidence: {c.evidence} (`{c.cell_id}`)."
        )


def recommend_rate(
    closed: pd.DataFrame,
    open_cells: pd.DataFrame,
    scenario: dict,
    expected_rate: float,
    budget_ms: float,
    max_batch_age_s: float,
    *,
    noise_threshold: float = DEFAULT_NOISE_THRESHOLD,
) -> RateRecommendation:
    """Apply the rules in the module docstring to one scenario."""
    if not (expected_rate > 0 and math.isfinite(expected_rate)):
        raise ValueError(f"expected rate must be a positive number of events/s, got {expected_rate!r}")
    rec = RateRecommendation(scenario, float(expected_rate), float(budget_ms), max_batch_age_s)
    keys = {k: scenario[k] for k in SCENARIO_KEYS}
    ol = select(open_cells, **keys) if not open_cells.empty else open_cells
    ol = ol[ol["backend"] == TURBO] if not ol.empty else ol
    cl = select(closed, **keys)
    cl = cl[cl["backend"] == TURBO]
    if ol.empty and cl.empty:
        rec.refusals.append("turbo was not measured in this scenario")
        return rec
    bad = [c for c in _unusable(ol, noise_threshold) + _unusable(cl, noise_threshold)]
    if bad:
        rec.notes.append("not used as evidence (failed, invalid, flagged, too noisy or fewer "
                         "than 2 valid repeats): "
                         + ", ".join(bad))
    ol = _usable(ol, noise_threshold)
    cl = _usable(cl, noise_threshold)
    configs = sorted({(plain(r.batch_size), int(r.consumers)) for df in (ol, cl)
                      for r in df.itertuples()}, key=lambda k: (batch_rank(k[0]), k[1]))
    for b, n in configs:
        cand = _open_candidate(ol, b, n, rec)
        if cand is None:
            cand = _closed_candidate(cl, b, n, rec)
        if cand is not None:
            rec.candidates.append(cand)
    ok = [c for c in rec.candidates if c.supported]
    if not ok:
        rec.refusals.append(_why_none(rec, ol, cl))
        return rec
    open_ok = [c for c in ok if c.evidence != EVIDENCE_CLOSED]
    pool = open_ok or ok
    # A cell without CPU times cannot be costed: it comes after every costed one.
    rec.choice = min(pool, key=lambda c: (not math.isfinite(c.cores),
                                          c.cores if math.isfinite(c.cores) else 0.0,
                                          c.consumers, batch_rank(c.batch_size)))
    if not open_ok:
        rec.notes.append(
            f"no open-loop cell carried {rec.expected_rate:,.0f} events/s within the budget: this "
            "answer rests on closed-loop capacity only; its latency at that rate was not measured "
            f"(only the batch fill time, {rec.choice.fill_ms:.1f} ms, is held against the budget). "
            f"Measure it with an open-loop run at --rate {rec.expected_rate:g}"
        )
    elif len(ok) > len(open_ok):
        rec.notes.append("configurations supported by closed-loop capacity only were not chosen: "
                         "open-loop evidence at the rate comes first")
    if rec.choice.evidence == EVIDENCE_ABOVE:
        rec.notes.append(
            f"measured at {rec.choice.offered_rate:,.0f} events/s, above the expected rate: its p99 "
            f"is raised by the longer batch fill at {rec.expected_rate:,.0f} events/s"
        )
    return rec


def _unusable(df: pd.DataFrame, noise: float) -> list[str]:
    if df.empty:
        return []
    return list(df.loc[~_usable_mask(df, noise), "cell_id"])


def _usable_mask(df: pd.DataFrame, noise: float) -> pd.Series:
    excluded = df["excluded"].fillna(False).astype(bool) if "excluded" in df else False
    noisy = df["spread"].fillna(0) > noise
    # A repeated cell left with one usable repeat has no spread to judge (the
    # rule the capacity recommendation applies too): on the 2-core VM, whose
    # CPU speed swings 1.6x, the rate answer rested on 1 valid repeat of 5
    # before this (test_rate_answer_never_rests_on_one_valid_repeat).
    thin = False
    if "n_measured" in df and "n_runs" in df:
        thin = too_few_valid(df["n_runs"].fillna(0), df["n_measured"].fillna(0))
    return ~df["failed"] & ~excluded & ~noisy & ~thin & df["events_per_s"].notna()


def _usable(df: pd.DataFrame, noise: float) -> pd.DataFrame:
    return df if df.empty else df[_usable_mask(df, noise)]


def _fill_ms(rec, b, producers, rate=None) -> float:
    """Batch fill bound in ms at ``rate`` (default: the expected one) over the cell's producers.

    The producers are the cell's own: with ``--producers auto`` each cell sized its own count.
    """
    return fill_time_s(TURBO, b, producers, rate or rec.expected_rate, rec.max_batch_age_s) * 1e3


def _open_candidate(ol, b, n, rec) -> RateCandidate | None:
    if ol.empty:
        return None
    g = ol[(ol["batch_size"] == b) & (ol["consumers"] == n)]
    g = g[g["offered_rate"] >= (1 - RATE_TOLERANCE) * rec.expected_rate]
    if g.empty:
        return None
    r = g.sort_values("offered_rate").iloc[0]
    producers = r["producers"]
    fill_ms = _fill_ms(rec, b, producers)
    at = r["offered_rate"] <= (1 + RATE_TOLERANCE) * rec.expected_rate
    cand = RateCandidate(
        batch_size=b, consumers=n, evidence=EVIDENCE_AT if at else EVIDENCE_ABOVE,
        cell_id=str(r["cell_id"]), producers=int(producers), offered_rate=float(r["offered_rate"]),
        achieved=float(r["events_per_s"]), p99_ms=float(r["latency_p99_ms"]), fill_ms=fill_ms,
        cpu_us_per_event=float(r["cpu_us_per_event"]),
    )
    extra = 0.0 if at else max(0.0, fill_ms - _fill_ms(rec, b, producers, cand.offered_rate))
    cand.p99_at_rate_ms = cand.p99_ms + extra
    cand.cores = cand.cpu_us_per_event * rec.expected_rate / 1e6
    # The loader's saturated: the harness's own rule, count error included.
    cand.carries = not bool(r["saturated"])
    if not cand.carries:
        cand.reason = (f"did not carry {cand.offered_rate:,.0f} events/s offered "
                       f"(achieved {cand.achieved:,.0f})")
    elif not math.isfinite(cand.p99_at_rate_ms):
        cand.reason = "p99 latency not measured"
    elif cand.p99_at_rate_ms > rec.budget_ms:
        cand.reason = f"p99 {cand.p99_at_rate_ms:.1f} ms > {rec.budget_ms:g} ms budget"
        if extra:
            cand.reason += f" ({cand.p99_ms:.1f} ms measured + {extra:.1f} ms longer batch fill)"
    else:
        cand.supported = True
    return cand


def _closed_candidate(cl, b, n, rec) -> RateCandidate | None:
    g = cl[(cl["batch_size"] == b) & (cl["consumers"] == n)]
    if g.empty:
        return None
    r = g.iloc[0]
    fill_ms = _fill_ms(rec, b, r["producers"])
    cap = float(r["events_per_s_min"])
    cand = RateCandidate(
        batch_size=b, consumers=n, evidence=EVIDENCE_CLOSED, cell_id=str(r["cell_id"]),
        producers=int(r["producers"]),
        achieved=float(r["events_per_s"]), fill_ms=fill_ms, p99_at_rate_ms=math.nan,
        cpu_us_per_event=float(r["cpu_us_per_event"]),
    )
    cand.cores = cand.cpu_us_per_event * rec.expected_rate / 1e6
    need = rec.expected_rate / MAX_UTILISATION
    cand.carries = cap >= need
    if not cand.carries:
        cand.reason = (f"closed-loop capacity {cap:,.0f} events/s (slowest repeat) < {need:,.0f} "
                       f"(the rate at {MAX_UTILISATION:.0%} utilisation)")
    elif fill_ms > rec.budget_ms:
        cand.reason = f"batch fill at the rate {fill_ms:.1f} ms > {rec.budget_ms:g} ms budget"
    else:
        cand.supported = True
    return cand


def _why_none(rec: RateRecommendation, ol: pd.DataFrame, cl: pd.DataFrame) -> str:
    r, b = rec.expected_rate, rec.budget_ms
    if not rec.candidates:
        return "no usable turbo cell in this scenario"
    carried = [c for c in rec.candidates if c.carries]
    if not carried:
        most = max([0.0, *ol.get("events_per_s", []), *cl.get("events_per_s_min", [])])
        return (f"no turbo cell carried {r:,.0f} events/s: the most any usable cell moved was "
                f"{most:,.0f} events/s" + (f" (closed-loop capacity must reach {r / MAX_UTILISATION:,.0f})"
                                           if not cl.empty else ""))
    lat = [c for c in carried if math.isfinite(c.p99_at_rate_ms)]
    if lat:
        best = min(lat, key=lambda c: c.p99_at_rate_ms)
        return (f"turbo carried {r:,.0f} events/s but never within the {b:g} ms p99 budget: the lowest "
                f"p99 at or above that rate was {best.p99_at_rate_ms:.1f} ms (batch {best.batch_size}, "
                f"{best.consumers} consumer{'s' if best.consumers != 1 else ''}, `{best.cell_id}`)")
    best = min(carried, key=lambda c: c.fill_ms)
    return (f"only closed-loop cells carry {r:,.0f} events/s, and at that rate even batch "
            f"{best.batch_size} takes {best.fill_ms:.1f} ms to fill, past the {b:g} ms budget")
