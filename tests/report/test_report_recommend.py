"""The recommendation on synthetic result sets whose right answer is known."""

from __future__ import annotations

import math

import pytest
from report_synth import (
    Backend,
    batched_mpq,
    linear_turbo,
    saturating_mpq,
    usl_eps,
    write_result_set,
)

from bench.analysing.axes import scenarios
from bench.analysing.curves import curve, fit_curves
from bench.analysing.loading import aggregate, load_result_set
from bench.analysing.recommend import recommend


def _rec(path, scenario_index=-1, **kw):
    rs = load_result_set(path)
    cells = aggregate(rs.runs)
    s = scenarios(cells)[scenario_index]
    return recommend(cells, rs.runs, s, rs.cores, **kw), cells, rs


def test_linear_backend_uses_every_measured_count(standard_set):
    rec, _, _ = _rec(standard_set)
    assert rec.ok, rec.refusals
    assert rec.consumers == 8 == rec.consumers_measured  # max measured, = cores
    assert rec.bounded_by in ("measured range", "cores")
    # batch 1000 is the fastest and its p99 (~13 ms) fits the 100 ms budget
    assert rec.batch_size == 1000
    assert rec.budget_cost == ""


def test_linear_backend_is_bounded_by_cores(tmp_path):
    d = write_result_set(tmp_path, consumers=(1, 2, 4, 8, 16), cores=4)
    rec, _, _ = _rec(d)
    assert rec.ok
    # 4 cores, 1 producer: 3 consumers beside it (producers count against the cores)
    assert rec.consumers == 3
    assert rec.bounded_by == "cores"
    assert any("counts the 1 producer" in n for n in rec.notes)


def test_efficiency_is_exact_for_a_linear_curve(standard_set):
    _, cells, _ = _rec(standard_set)
    c = curve(cells, "turbo", 100)
    assert c["efficiency"].to_numpy() == pytest.approx(1.0, abs=0.05)
    m = curve(cells, "mpq", 1)
    # USL lam=15000, sigma=0.05, kappa=0.02 at N=8: 1 / (1 + 0.35 + 1.12) = 0.405
    assert m.set_index("consumers").loc[8, "efficiency"] == pytest.approx(0.405, abs=0.03)


def test_saturating_backend_fitted_peak_within_15_percent(standard_set):
    rs = load_result_set(standard_set)
    s = scenarios(aggregate(rs.runs))[0]
    fit = fit_curves(rs.runs, s)[("mpq", 1)]
    true_peak = math.sqrt((1 - 0.05) / 0.02)  # 6.89
    assert fit.peak_n == pytest.approx(true_peak, rel=0.15)
    assert fit.n_points == 5 and not any("not well determined" in w for w in fit.warnings)


def test_saturating_turbo_count_is_lowered_to_its_peak(tmp_path):
    sigma, kappa = 0.05, 0.95 / 36  # N* = 6 exactly
    turbo = Backend("turbo", (100,), lambda n, b: usl_eps(10_000, sigma, kappa)(n))
    d = write_result_set(
        tmp_path, [turbo, saturating_mpq()], consumers=(1, 2, 3, 4, 6, 8, 12, 16), cores=16
    )
    # A lenient threshold lets efficiency allow 8; the peak at 6 must win.
    rec, _, rs = _rec(d, efficiency_threshold=0.3)
    assert rec.ok, rec.refusals
    assert rec.consumers == 6
    assert rec.bounded_by == "N*"
    peak = rec.per_batch.set_index("batch_size").loc[100, "peak_n"]
    assert peak == pytest.approx(6.0, rel=0.15)
    # At the default 80% the efficiency rule binds first: eff(2)=0.91, eff(3)=0.79.
    rec80, _, _ = _rec(d)
    assert rec80.consumers == 2 and rec80.bounded_by == "efficiency"


def test_latency_budget_rules_out_the_largest_batch(standard_set):
    # p99 at 8 consumers: b=1000 ~ 13 ms, b=100 ~ 2 ms, b=10 ~ 0.9 ms.
    rec, _, _ = _rec(standard_set, latency_budget_ms=10)
    assert rec.ok, rec.refusals
    assert rec.batch_size == 100
    assert rec.turbo_p99_ms <= 10
    at = rec.at_count.set_index("batch_size")
    assert not at.loc[1000, "fits_budget"]
    assert "rules out batch size(s) 1000" in rec.budget_cost


def test_smallest_batch_within_five_percent_wins(tmp_path):
    # b=100 and b=1000 within 2% of each other: the smaller one is recommended.
    turbo = linear_turbo(batch_sizes=(10, 100, 1000))
    turbo.eps = lambda n, b: 10_000 * n * {10: 0.5, 100: 0.99, 1000: 1.0}[b]
    d = write_result_set(tmp_path, [turbo, saturating_mpq()], consumers=(1, 2, 4, 8))
    rec, _, _ = _rec(d)
    assert rec.batch_size == 100


def test_ratio_against_mpq_with_spread(standard_set):
    rec, cells, _ = _rec(standard_set)
    by = {c.backend: c for c in rec.comparisons}
    assert set(by) == {"mpq", "mpq-batch"}
    mpq = by["mpq"]
    t = cells[
        (cells["backend"] == "turbo") & (cells["consumers"] == 8) & (cells["batch_size"] == 1000)
    ].iloc[0]
    m = cells[(cells["backend"] == "mpq") & (cells["consumers"] == 8)].iloc[0]
    assert mpq.ratio == pytest.approx(t["events_per_s"] / m["events_per_s"])
    assert mpq.ratio_lo == pytest.approx(t["events_per_s_min"] / m["events_per_s_max"])
    assert mpq.ratio_lo <= mpq.ratio <= mpq.ratio_hi
    # true ratio at N=8: 20000*8*1000/1020 vs 15000*8*0.405 -> ~3.2x
    assert 2.8 < mpq.ratio < 3.6
    assert "multiprocessing.Queue" in rec.comparison_line()


def test_too_few_points_refuses(tmp_path):
    d = write_result_set(tmp_path, consumers=(4,))
    rec, _, _ = _rec(d)
    assert not rec.ok
    assert any("too few points" in r for r in rec.refusals)
    assert rec.headline().startswith("No recommendation")


def test_two_or_three_counts_recommend_with_a_warning(tmp_path):
    d = write_result_set(tmp_path, consumers=(1, 2, 4))
    rec, _, _ = _rec(d)
    assert rec.ok
    assert any("underdetermined" in w for w in rec.warnings)


def test_noisy_data_refuses(tmp_path):
    noisy = linear_turbo(noise=0.3)
    d = write_result_set(tmp_path, [noisy, saturating_mpq()], consumers=(1, 2, 4, 8), seed=3)
    rec, _, _ = _rec(d)
    assert not rec.ok
    assert any("too noisy" in r for r in rec.refusals)


def test_failed_base_cell_refuses_and_failed_middle_cell_stops_the_count(tmp_path):
    d = write_result_set(
        tmp_path,
        [linear_turbo(batch_sizes=(100,)), batched_mpq()],
        consumers=(1, 2, 4, 8),
        failed=lambda c: c["backend"] == "turbo" and c["consumers"] == 1,
    )
    rec, _, _ = _rec(d)
    assert not rec.ok
    assert any("smallest consumer count" in r for r in rec.refusals)

    d2 = write_result_set(
        tmp_path / "b",
        [linear_turbo(batch_sizes=(100,)), batched_mpq()],
        consumers=(1, 2, 4, 8),
        failed=lambda c: c["backend"] == "turbo" and c["consumers"] == 4,
    )
    rec2, _, _ = _rec(d2)
    assert rec2.ok
    assert rec2.consumers == 2  # a failed cell ends the run of counts
    assert any("failed at 4 consumers" in n for n in rec2.notes)


def test_missing_one_consumer_uses_smallest_as_base(tmp_path):
    d = write_result_set(tmp_path, consumers=(2, 4, 8))
    rec, _, _ = _rec(d)
    assert rec.ok and rec.base_n == 2
    assert any("1 consumer was not measured" in n for n in rec.notes)


def test_no_batch_meets_an_impossible_budget(standard_set):
    rec, _, _ = _rec(standard_set, latency_budget_ms=0.01)
    assert not rec.ok
    assert any("budget" in r for r in rec.refusals)
    assert rec.consumers == 8  # the scaling answer is still stated


def test_recommendation_per_work_us(tmp_path):
    # Heavier work scales further for mpq; turbo is linear in both.
    d = write_result_set(tmp_path, consumers=(1, 2, 4), work_us=(10.0, 200.0))
    rs = load_result_set(d)
    cells = aggregate(rs.runs)
    scn = scenarios(cells)
    assert [s["work_us"] for s in scn] == [10, 200]
    recs = [recommend(cells, rs.runs, s, rs.cores) for s in scn]
    assert all(r.ok for r in recs)
    assert "W=10 us" in recs[0].headline() and "W=200 us" in recs[1].headline()


def test_cores_below_every_measured_count(tmp_path):
    # 3 cores, 1 producer, counts measured from 4: recommend 2, say the evidence is from 4.
    d = write_result_set(tmp_path, consumers=(4, 8, 16), cores=3)
    rec, _, _ = _rec(d)
    assert rec.ok
    assert (rec.consumers, rec.consumers_measured, rec.bounded_by) == (2, 4, "cores")
    assert "2 was not measured; at 4 consumers" in rec.headline()
