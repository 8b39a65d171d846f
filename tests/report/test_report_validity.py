"""Hand-made result sets with the faults issue 11 names: each must be flagged.

The synthetic sets are edited by hand (not drawn from a model the analysis
fits): producers saturated at the top counts, a negative queue overhead,
the work's cost drifting between cells, and a v2 row the harness marked
invalid.  Each must be kept out of the fits and the recommendation and
listed in the report with its reason.
"""

from __future__ import annotations

import pandas as pd
from report_synth import linear_turbo, saturating_mpq, write_result_set

from bench.analysing.axes import scenarios
from bench.analysing.curves import fit_curves
from bench.analysing.loading import aggregate, excluded_runs, load_result_set
from bench.analysing.recommend import recommend
from bench.presenting.report import build_report

CID = "turbo-fork-p1-c{c}-b100-w50-busy-e300"


def _edit(d, fn):
    runs = pd.read_csv(d / "runs.csv", keep_default_na=False)
    fn(runs)
    runs.to_csv(d / "runs.csv", index=False)
    return d


def _base(tmp_path):
    return write_result_set(
        tmp_path, [linear_turbo(batch_sizes=(100,)), saturating_mpq()],
        consumers=(1, 2, 4, 6, 8), cores=16,
    )


def test_producer_bound_cells_are_not_fitted_nor_recommended(tmp_path):
    d = _base(tmp_path)

    def saturate(runs):
        top = (runs["backend"] == "turbo") & (runs["consumers"] >= 6)
        runs.loc[top, "producer_user_s"] = runs.loc[top, "window_s"] * 0.97
        runs.loc[top, "producer_sys_s"] = 0.0

    _edit(d, saturate)
    rs = load_result_set(d)
    ex = excluded_runs(rs.runs)
    assert set(ex["cell_id"]) == {CID.format(c=6), CID.format(c=8)}
    assert ex["exclude_reason"].str.contains("producer-bound").all()
    assert ex["made_before_checks"].all()  # v1 set: flagged, made before the checks
    cells = aggregate(rs.runs)
    s = scenarios(cells)[0]
    fit = fit_curves(rs.runs, s)[("turbo", 100)]
    assert fit.n_points == 3  # 1, 2, 4 only
    rec = recommend(cells, rs.runs, s, rs.cores)
    assert rec.consumers == 4  # not 8: the producer-bound points carry no evidence
    rep = build_report(d, tmp_path / "rep", html_report=False)
    md = rep.markdown_path.read_text()
    sec = md[md.index("## Invalid and flagged cells"):]
    assert "flagged (made before validity checks)" in sec
    assert CID.format(c=8) in sec and "producer-bound" in sec


def test_negative_overhead_and_cheap_work_are_flagged(tmp_path):
    d = _base(tmp_path)

    def cheap(runs):
        one = runs["cell_id"] == CID.format(c=2)
        runs.loc[one, "overhead_us_per_event"] = -20.0
        runs.loc[one, "consumer_user_s"] = runs.loc[one, "events"] * 30e-6

    _edit(d, cheap)
    rs = load_result_set(d)
    ex = excluded_runs(rs.runs)
    assert set(ex["cell_id"]) == {CID.format(c=2)}
    reason = ex["exclude_reason"].iloc[0]
    assert "negative queue overhead" in reason and "below the 50.0 us of work" in reason
    # useful_pct is not clipped: the negative overhead shows in the saturation data
    cells = aggregate(rs.runs).set_index("cell_id")
    assert bool(cells.loc[CID.format(c=2), "excluded"])


def test_v2_invalid_rows_and_drift_beyond_ten_percent(tmp_path):
    d = _base(tmp_path)

    def v2(runs):
        runs["schema_version"] = 2
        runs["valid"] = "True"
        runs["invalid_reason"] = ""
        runs["work_drift_pct"] = 1.0
        runs["bottleneck"] = "consumers"
        bad = runs["cell_id"] == CID.format(c=4)
        runs.loc[bad, "valid"] = "False"
        runs.loc[bad, "invalid_reason"] = "steal time 9% (> 5%)"
        # A writer that recorded the drift without marking the row: the
        # reader applies the 10% threshold itself.
        drift = runs["cell_id"] == CID.format(c=6)
        runs.loc[drift, "work_drift_pct"] = 25.0

    _edit(d, v2)
    rs = load_result_set(d)
    ex = excluded_runs(rs.runs).groupby("cell_id")["exclude_reason"].first()
    assert set(ex.index) == {CID.format(c=4), CID.format(c=6)}
    assert "steal time 9%" in ex[CID.format(c=4)]
    assert "drifted 25%" in ex[CID.format(c=6)]
    assert not rs.runs["made_before_checks"].any()
    rep = build_report(d, tmp_path / "rep", html_report=False)
    sec = rep.markdown_path.read_text().split("## Invalid and flagged cells")[1]
    assert "| invalid |" in sec and "made before validity checks" not in sec


def test_a_cell_left_with_one_valid_repeat_has_no_spread_and_is_not_recommended_from(tmp_path):
    d = _base(tmp_path)

    def one_valid(runs):
        # Three ok repeats of every cell; at 1 consumer two of them drifted,
        # so the medians rest on one repeat whose noise nobody can judge.
        bad = (runs["cell_id"] == CID.format(c=1)) & (runs["repeat"] >= 1)
        runs.loc[bad, "overhead_us_per_event"] = -20.0
        runs.loc[bad, "consumer_user_s"] = runs.loc[bad, "events"] * 30e-6

    _edit(d, one_valid)
    rs = load_result_set(d)
    cells = aggregate(rs.runs).set_index("cell_id")
    base = cells.loc[CID.format(c=1)]
    assert base["n_ok"] == 3 and base["n_measured"] == 1
    assert pd.isna(base["spread"])  # not 0: one repeat has no spread
    assert cells.loc[CID.format(c=2), "n_measured"] == 3
    s = scenarios(aggregate(rs.runs))[0]
    rec = recommend(aggregate(rs.runs), rs.runs, s, rs.cores)
    assert not rec.ok
    assert any("fewer than 2 valid repeats" in r and CID.format(c=1) + " (1 of 3)" in r
               for r in rec.refusals), rec.refusals
