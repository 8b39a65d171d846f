"""Open-loop cells in the report: latency-vs-throughput curves, batch fill time, the rate answer.

The sets are synthetic (report_synth.open_loop_point): turbo at batch 10,
100 and 1000 behind one producer, so at 5,000 events/s a batch of 100
fills in 20 ms and one of 1000 in 200 ms; at 500 events/s batch 1000
would take 2 s and is sealed by max_batch_age instead.
"""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from report_synth import linear_turbo, saturating_mpq, write_result_set

from bench.analysing.axes import scenarios
from bench.analysing.loading import aggregate, load_result_set
from bench.analysing.openloop import batching_table, max_batch_age, open_loop_cells
from bench.analysing.rate import EVIDENCE_ABOVE, EVIDENCE_CLOSED, recommend_rate
from bench.presenting.latency import plot_latency_vs_throughput
from bench.presenting.report import build_report, main

LOADS = ("rate:500", "rate:1000", "rate:5000", "rate:20000")


def _turbo():
    # Smaller batches cost more queue CPU per event: the least-CPU rule has a trade-off.
    return linear_turbo(batch_sizes=(10, 100, 1000), overhead_per_batch_us=200.0)


@pytest.fixture(scope="module")
def ol_set(tmp_path_factory):
    return write_result_set(
        tmp_path_factory.mktemp("ol"), [_turbo(), saturating_mpq()], consumers=(1, 2, 4),
        cores=8, open_loop=LOADS, open_loop_consumers=(1, 2),
    )


def _loaded(d):
    rs = load_result_set(d)
    cells = aggregate(rs.runs)
    ol = open_loop_cells(rs.runs)
    return rs, cells, ol, scenarios(cells)[0]


def test_open_loop_rows_are_kept_apart_and_saturation_is_marked(ol_set):
    # What the harness writes for a carried open-loop cell: bottleneck
    # "producers" (the schedule is the limit by design).  That is no
    # producer-bound point and must not be excluded.
    runs = pd.read_csv(ol_set / "runs.csv", keep_default_na=False)
    runs.loc[runs["load"] != "", "bottleneck"] = "producers"
    runs.to_csv(ol_set / "runs.csv", index=False)
    rs, cells, ol, _ = _loaded(ol_set)
    open_rows = rs.runs[rs.runs["load"] != "closed"]
    assert not open_rows["producer_bound"].any() and open_rows["usable"].all()
    assert (cells["load"] == "closed").all()  # the scaling cells stay closed loop
    assert set(ol["load"]) == set(LOADS)
    sat = ol.set_index(["batch_size", "consumers", "load"])["saturated"]
    # capacity of b=100 at 1 consumer is 20000 x 100/120 = 16.7k: 20k is not carried
    assert sat[(100, 1, "rate:20000")] and not sat[(100, 1, "rate:5000")]
    assert not sat[(100, 2, "rate:20000")]  # 2 consumers: 33k capacity


def test_latency_curves_per_backend_and_batch(ol_set):
    _, _, ol, s = _loaded(ol_set)
    fig = plot_latency_vs_throughput(ol, s, budget_ms=50, expected_rate=5000)
    e2e, qw = fig.axes[:2]
    assert e2e.get_yscale() == "log" and qw.get_yscale() == "log"
    labels = [h.get_label() for h in e2e.get_lines() if not h.get_label().startswith("_")]
    assert "turbo_queue b=100, 1 consumer" in labels and "multiprocessing.Queue, 2 consumers" in labels
    line = next(h for h in e2e.get_lines() if h.get_label() == "turbo_queue b=100, 1 consumer")
    cell = ol[(ol["backend"] == "turbo") & (ol["batch_size"] == 100) & (ol["consumers"] == 1)]
    cell = cell.sort_values("events_per_s")
    x, y = line.get_xydata().T
    assert np.allclose(x, cell["events_per_s"]) and np.allclose(y, cell["latency_p99_ms"])
    # the queue-wait panel draws the same curve (same place in its lines) from the queue wait
    qline = qw.get_lines()[e2e.get_lines().index(line)]
    assert np.allclose(qline.get_ydata(), cell["queue_wait_p99_ms"])
    # one ring per saturated cell in each panel (the legend proxy has no points)
    rings = [c for c in e2e.collections if len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in rings) == int(ol["saturated"].sum())
    plt.close(fig)


def test_fill_time_and_max_batch_age_explain_low_rate_latency(ol_set, tmp_path):
    rs, _, ol, s = _loaded(ol_set)
    assert max_batch_age(rs.meta) == (1.0, "the library default; meta.json does not record it")
    t = batching_table(ol, s, 1.0).set_index(["backend", "batch_size", "consumers", "load"])
    r = t.loc[("turbo", 100, 1, "rate:1000")]
    assert r["fill_ms"] == pytest.approx(100.0, rel=0.01)  # 100 events / 1000 per s
    assert r["bound_by"] == "batch fill" and r["set_by"] == "batching"
    assert r["queue_wait_p99_ms"] == pytest.approx(100.0, rel=0.1)
    low = t.loc[("turbo", 1000, 1, "rate:500")]
    assert low["fill_ms"] == pytest.approx(2000.0, rel=0.01)
    assert low["bound_ms"] == pytest.approx(1000.0) and low["bound_by"] == "max_batch_age"
    md = build_report(ol_set, tmp_path / "r", html_report=False).markdown_path.read_text()
    sec = md[md.index("### 6. Latency vs throughput"):md.index("### Scaling-law fit")]
    assert "max_batch_age here: **1 s** (the library default" in sec
    assert "B=1000 at 500 events/s" in sec and "set by its max_batch_age = 1000.0 ms" in sec
    assert "latency-throughput.png" in sec


def test_max_batch_age_is_read_from_meta(tmp_path):
    d = write_result_set(tmp_path, [_turbo()], consumers=(1, 2), open_loop=("rate:500",),
                         max_batch_age=0.25)
    rs, _, ol, s = _loaded(d)
    age, source = max_batch_age(rs.meta)
    assert age == 0.25 and "meta.json" in source
    t = batching_table(ol, s, age).set_index(["batch_size", "consumers"])
    assert t.loc[(1000, 1), "bound_ms"] == pytest.approx(250.0)
    assert t.loc[(1000, 1), "queue_wait_p99_ms"] == pytest.approx(250.0, rel=0.1)


def test_rate_answer_is_the_batch_that_meets_the_budget_at_least_cpu(ol_set):
    _, cells, ol, s = _loaded(ol_set)
    rec = recommend_rate(cells, ol, s, 5000, 50, 1.0)
    assert rec.ok, rec.refusals
    # b=100 fills in 20 ms (p99 ~31 ms); b=1000 in 200 ms; b=10 meets it at more CPU per event
    assert (rec.choice.batch_size, rec.choice.consumers) == (100, 1)
    assert rec.choice.evidence == "open loop at the rate"
    by = {(c.batch_size, c.consumers, c.evidence): c for c in rec.candidates}
    big = by[(1000, 1, "open loop at the rate")]
    assert not big.supported and "> 50 ms budget" in big.reason and big.p99_at_rate_ms > 200
    small = by[(10, 1, "open loop at the rate")]
    assert small.supported and small.cores > rec.choice.cores
    assert rec.choice.cores == pytest.approx(rec.choice.cpu_us_per_event * 5000 / 1e6)
    assert "batch_size=100" in rec.headline() and "`turbo-fork-p1-c1-b100" in rec.headline()


def test_rate_refusals_say_why(ol_set):
    _, cells, ol, s = _loaded(ol_set)
    tight = recommend_rate(cells, ol, s, 5000, 1.0, 1.0)
    assert not tight.ok
    why = tight.refusals[0]
    assert "never within the 1 ms p99 budget" in why and "lowest p99" in why
    assert "No configuration carries 5,000 events/s" in tight.headline()
    fast = recommend_rate(cells, ol, s, 500_000, 50, 1.0)
    assert not fast.ok and "no turbo cell carried 500,000 events/s" in fast.refusals[0]
    assert "the most any usable cell moved was" in fast.refusals[0]


def test_rate_from_a_higher_rate_adds_the_longer_fill(tmp_path):
    # Only measured at 20,000/s: at 5,000/s a batch of 100 takes 15 ms longer to fill.
    d = write_result_set(tmp_path, [_turbo()], consumers=(1, 2), open_loop=("rate:20000",),
                         open_loop_consumers=(2,))
    _, cells, ol, s = _loaded(d)
    rec = recommend_rate(cells, ol, s, 5000, 200, 1.0)
    c = next(c for c in rec.candidates if c.evidence == EVIDENCE_ABOVE and c.batch_size == 100)
    assert c.p99_at_rate_ms == pytest.approx(c.p99_ms + (20.0 - 5.0))


def test_closed_loop_capacity_only_is_said_plainly(tmp_path):
    d = write_result_set(tmp_path, [_turbo(), saturating_mpq()], consumers=(1, 2, 4))
    _, cells, ol, s = _loaded(d)
    assert ol.empty
    rec = recommend_rate(cells, ol, s, 5000, 50, 1.0)
    assert rec.ok and rec.choice.evidence == EVIDENCE_CLOSED
    # batch 1000 fills in 200 ms at 5,000/s: never chosen for a 50 ms budget
    assert rec.choice.batch_size != 1000
    assert any("closed-loop capacity only" in n and "latency at that rate was not measured" in n
               for n in rec.notes)


def test_report_cli_expected_rate(ol_set, tmp_path, capsys):
    out = tmp_path / "r"
    assert main([str(ol_set), "--out", str(out), "--no-html", "--expected-rate", "5000",
                 "--latency-budget", "50ms"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("For 5,000 events/s within a p99 of 50 ms")
    md = (out / "report.md").read_text()
    rec_sec = md[md.index("## Recommendation"):md.index("## Held-out check")]
    assert rec_sec.index("**For the stated rate**") < rec_sec.index("**Capacity (closed loop")
    assert "### Configuration for 5,000 events/s" in md
    data = json.loads((out / "recommendation.json").read_text())
    assert data[0]["rate"]["batch_size"] == 100 and data[0]["rate"]["ok"]
    # without --expected-rate the throughput recommendation stays alone
    assert main([str(ol_set), "--out", str(tmp_path / "plain"), "--no-html"]) == 0
    plain = (tmp_path / "plain" / "report.md").read_text()
    assert "For the stated rate" not in plain and "Configuration for" not in plain
    assert "rate" not in json.loads((tmp_path / "plain" / "recommendation.json").read_text())[0]
    with pytest.raises(SystemExit):
        main([str(ol_set), "--expected-rate", "fast"])


def test_run_takes_the_rate_flags_and_passes_them_on():
    from bench.cli import _report_flags, build_parser

    args = build_parser().parse_args(["run", "--expected-rate", "5000", "--latency-budget", "50ms"])
    assert _report_flags(args) == ["--expected-rate", "5000", "--latency-budget", "50ms"]
    assert _report_flags(build_parser().parse_args(["run"])) == []
    with pytest.raises(SystemExit):  # refused before any sweep runs
        build_parser().parse_args(["run", "--latency-budget", "soon"])


def test_a_set_of_open_loop_cells_only_still_reports(tmp_path):
    d = write_result_set(tmp_path, [_turbo()], consumers=(1, 2), open_loop=("rate:1000", "rate:5000"))
    runs = pd.read_csv(d / "runs.csv", keep_default_na=False)
    runs[runs["load"] != ""].to_csv(d / "runs.csv", index=False)
    rep = build_report(d, tmp_path / "r", html_report=False, expected_rate=5000, latency_budget_ms=50)
    assert rep.rate_recommendations[0].ok
    assert "no closed-loop cell" in rep.recommendations[0].refusals[0]
    md = rep.markdown_path.read_text()
    assert "### 6. Latency vs throughput" in md and "### 1. Scaling" not in md
    assert (tmp_path / "r" / "open_loop_cells.csv").is_file()


def test_auto_producers_fill_time_uses_each_cells_producers(tmp_path):
    # --producers auto: the scenario is "auto", the count is each cell's own (2 here)
    d = write_result_set(tmp_path, [_turbo()], consumers=(1, 2), producers=(2,),
                         open_loop=("rate:1000", "rate:5000"))
    runs = pd.read_csv(d / "runs.csv", keep_default_na=False)
    runs["producers_setting"] = "auto"
    runs.to_csv(d / "runs.csv", index=False)
    rs, cells, ol, s = _loaded(d)
    assert s["producers"] == "auto"
    t = batching_table(ol, s, 1.0).set_index(["batch_size", "consumers", "load"])
    assert t.loc[(100, 1, "rate:1000"), "fill_ms"] == pytest.approx(200.0)  # 100 / (1000 / 2)
    rec = recommend_rate(cells, ol, s, 5000, 50, 1.0)
    assert rec.ok and rec.choice.producers == 2 and "beside 2 producers" in rec.headline()
    assert rec.choice.fill_ms == pytest.approx(rec.choice.batch_size * 2 / 5000 * 1e3)


def test_rate_answer_never_rests_on_one_valid_repeat(tmp_path):
    # Every turbo cell has three ok repeats; two of each drift (their
    # consumers used less CPU than the work asked for), so each cell's
    # medians rest on one repeat whose noise nobody can judge.
    d = write_result_set(tmp_path, [_turbo(), saturating_mpq()], consumers=(1, 2),
                         open_loop=("rate:5000",), open_loop_consumers=(1,))
    _, cells, ol, s = _loaded(d)
    assert recommend_rate(cells, ol, s, 5000, 50, 1.0).ok  # the control: usable as written
    runs = pd.read_csv(d / "runs.csv", keep_default_na=False)
    bad = (runs["backend"] == "turbo") & (runs["repeat"] >= 1)
    runs.loc[bad, "overhead_us_per_event"] = -20.0
    runs.loc[bad, "consumer_user_s"] = runs.loc[bad, "events"] * 30e-6
    runs.to_csv(d / "runs.csv", index=False)
    _, cells, ol, s = _loaded(d)
    assert (cells[cells["backend"] == "turbo"]["n_measured"] == 1).all()
    rec = recommend_rate(cells, ol, s, 5000, 50, 1.0)
    assert not rec.ok and not rec.candidates
    assert any("fewer than 2 valid repeats" in n and "turbo-fork-p1-c1-b100" in n
               for n in rec.notes), rec.notes


def test_a_shortfall_within_the_window_s_count_is_no_saturation(tmp_path):
    # The reader takes the harness's own rule (bench.measuring.validity.
    # saturated): short by more than 5% *and* by more than the count of a
    # window can tell.  Batch 1000 at 500 events/s delivers a batch or two in
    # a window: 20% short with a count good to 30% is no shortfall; 20% short
    # with one good to 2% is.
    from bench.analysing.openloop import carried

    d = write_result_set(tmp_path, [_turbo()], consumers=(1, 2), cores=8, open_loop=("rate:500",),
                         open_loop_consumers=(1,))
    runs = pd.read_csv(d / "runs.csv", keep_default_na=False)
    at = (runs["load"] == "rate:500") & (runs["consumers"] == 1)
    for batch, err in ((1000, 0.30), (100, 0.02)):
        rows = at & (runs["batch_size"].astype(str) == str(batch))
        assert rows.sum() >= 1
        runs.loc[rows, "events_per_s"] = 0.8 * 500
        runs["achieved_rate_err"] = runs["achieved_rate_err"].astype(object)
        runs.loc[rows, "achieved_rate_err"] = str(err)
        runs.loc[rows, "saturated"] = "False" if err > 0.2 else "True"  # as the harness wrote them
    runs.to_csv(d / "runs.csv", index=False)
    rs, _cells, ol, _ = _loaded(d)
    sat = ol.set_index(["batch_size", "consumers", "load"])["saturated"]
    assert not sat[(1000, 1, "rate:500")] and sat[(100, 1, "rate:500")]
    by = ol.set_index(["batch_size", "consumers", "load"])
    assert carried(by.loc[(1000, 1, "rate:500")]) and not carried(by.loc[(100, 1, "rate:500")])
