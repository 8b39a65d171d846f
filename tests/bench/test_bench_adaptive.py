"""Adaptive repeats and ``--producers auto``: the rules, and tiny real sweeps.

Run with::

    python -m pytest tests/bench/test_bench_adaptive.py

The end-to-end tests run sweeps of one or two cells with a 0.3 s window.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.__main__ import main
from bench.analysing.axes import scenarios, select
from bench.analysing.loading import aggregate, load_result_set
from bench.measuring import adaptive, supply
from bench.measuring.cell import leaked_children
from bench.measuring.plan import (
    SWEEPS_DIR,
    SweepConfig,
    SweepConfigError,
    build_config,
    load_sweep_file,
    plan_cells,
    producers_setting,
)
from bench.results import read_runs

sys.path.insert(0, str(Path(__file__).parent))
from _handmade_set import turbo_row, write_set  # noqa: E402

TINY = [
    "--backends", "mpq-batch",
    "--consumers", "1",
    "--batch-sizes", "100",
    "--work-us", "0",
    "--warmup", "0.2",
    "--duration", "0.3",
    "--no-progress",
]  # fmt: skip


def _row(cid, r, eps, status="ok", valid="True"):
    return {"cell_id": cid, "repeat": str(r), "status": status, "valid": valid,
            "events_per_s": str(eps)}


# -- the rule -------------------------------------------------------------------


def test_a_cell_needs_more_repeats_when_noisy_or_short_of_valid_ones():
    quiet = [_row("a", 0, 100), _row("a", 1, 110), _row("a", 2, 105)]
    noisy = [_row("b", 0, 100), _row("b", 1, 140)]
    short = [_row("c", 0, 100), _row("c", 1, 900, valid="False"), _row("c", 2, 0, "failed", "")]
    rows = quiet + noisy + short
    need = adaptive.needing_more(["a", "b", "c", "d"], rows, threshold=0.25)
    assert set(need) == {"b", "c", "d"}
    assert "spread 33%" in need["b"]  # (140 - 100) / median 120
    assert "1 valid repeat" in need["c"]
    assert adaptive.spread([100, 110, 105]) == pytest.approx(10 / 105)


def test_next_round_gives_the_next_repeat_index_up_to_max_repeats():
    rows = [_row("b", 0, 100), _row("b", 1, 140), _row("c", 0, 100), _row("c", 3, 200)]
    run, capped = adaptive.next_round(["b", "c"], rows, threshold=0.25, max_repeats=3)
    # Repeats are counted by rows run; the next index follows the highest one
    # (c's repeats 1 and 2 are not on record, say lost to an interrupted write).
    assert run == {"b": 2, "c": 4} and capped == {}
    run, capped = adaptive.next_round(["b", "c"], rows, threshold=0.25, max_repeats=2)
    assert run == {} and set(capped) == {"b", "c"}


def test_the_reports_verdict_on_a_row_overrides_the_harnesss(tmp_path):
    # The harness called repeat 1 valid; the reader finds its overhead negative
    # beyond its error, so the report would not use it: it does not count.
    rows = [turbo_row(1, 100, 1000.0, 0, work_us=20.0), turbo_row(1, 100, 1010.0, 1, work_us=20.0)]
    rows[1].update(overhead_us_per_event=-50.0)
    d = write_set(tmp_path / "set", rows)
    marked = adaptive.with_usable(read_runs(d), d / "runs.csv")
    assert [r["usable"] for r in marked] == [True, False]
    assert "1 valid repeat" in adaptive.needing_more([rows[0]["cell_id"]], marked, 0.25)[
        rows[0]["cell_id"]]


def test_max_repeats_and_time_budget_are_validated():
    raw = {"backends": ["mpq-batch"], "repeat": 3}
    assert build_config({**raw, "max_repeats": 6}).max_repeats == 6
    # At or below repeat it adds none (a --repeat 8 over a file's 6).
    assert build_config({**raw, "max_repeats": 2}).max_repeats == 3
    assert build_config(raw).max_repeats is None
    for bad, key in (({"max_repeats": 0}, "max_repeats"), ({"time_budget": -1}, "time_budget"),
                     ({"max_repeats": "six"}, "max_repeats")):
        with pytest.raises(SweepConfigError, match=key):
            build_config({**raw, **bad})


# -- producers auto -------------------------------------------------------------


def _supply(rate=100_000.0, overhead=5.0, cores=16):
    return {"margin": 1.5, "usable_cores": cores, "work_cost_us": {"busy:45": 45.0},
            "probes": {"turbo/b100/e300": {"status": "ok", "supply_per_producer": rate,
                                           "consumer_overhead_us": overhead}}}


def test_auto_producers_supply_the_consumers_demand_with_margin_within_the_cores():
    s = _supply()
    # 4 consumers x 1e6 / (45 + 5) us = 80k events/s; x 1.5 = 120k: 2 producers of 100k.
    assert supply.producers_for(s, "turbo", 100, 300, 4, 45.0) == 2
    assert supply.producers_for(s, "turbo", 100, 300, 1, 45.0) == 1
    # No work: demand 4 x 200k x 1.5 = 1.2M events/s -> 12, within 16 - 4 cores.
    assert supply.producers_for(s, "turbo", 100, 300, 4, 0.0) == 12
    assert supply.producers_for(s, "turbo", 100, 300, 8, 0.0) == 8  # capped at 16 - 8
    assert supply.producers_for(s, "turbo", 100, 300, 16, 0.0) == 1  # at least 1
    # A backend whose probe failed gets one producer.
    s["probes"]["turbo/b100/e300"]["status"] = "failed"
    assert supply.producers_for(s, "turbo", 100, 300, 4, 45.0) == 1


def test_auto_cells_plan_the_same_ids_again_and_after_a_resume():
    cfg = build_config({"backends": ["turbo"], "producers": ["auto", 1], "consumers": [1, 4, 8],
                        "batch_sizes": [100], "work_us": [45, 0]}, cores=16)
    assert cfg.producers == ["auto", 1]
    cfg.supply = _supply()
    cells = plan_cells(cfg)
    # What the counts must be (see the previous test), cell by cell.
    expect = {(1, 0.0): 3, (4, 0.0): 12, (8, 0.0): 8, (1, 45.0): 1, (4, 45.0): 2, (8, 45.0): 3}
    got = {(c.consumers, c.work_us): c.producers for c in cells
           if producers_setting(cfg, c) == "auto"}
    assert got == expect
    # A fixed count plans its own cells; one that auto also chose (1 producer
    # for 1 consumer at 45 us) is one cell, auto's.
    fixed = {(c.consumers, c.work_us) for c in cells if producers_setting(cfg, c) == "1"}
    assert fixed == {(1, 0.0), (4, 0.0), (8, 0.0), (4, 45.0), (8, 45.0)}
    assert len(cells) == 11
    # --resume rebuilds the config from meta.json: the same cells, the same ids.
    again = SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert [c.cell_id for c in plan_cells(again)] == [c.cell_id for c in cells]


def test_shipped_sweeps_default_to_auto_producers_and_adaptive_repeats():
    for path in sorted(SWEEPS_DIR.glob("*.toml")):
        cfg = build_config(load_sweep_file(path), cores=2, source=str(path))
        assert cfg.producers == ["auto"], path
        assert cfg.max_repeats and cfg.max_repeats > cfg.repeat, path
    quick = build_config(load_sweep_file(SWEEPS_DIR / "quick.toml"), cores=2)
    assert quick.time_budget and quick.time_budget <= 180


def test_an_auto_scenario_groups_cells_whose_producer_counts_differ(tmp_path):
    rows = []
    for r in range(2):
        rows += [turbo_row(1, 100, 1000.0, r, producers=3, setting="auto"),
                 turbo_row(2, 100, 2000.0, r, producers=2, setting="auto"),
                 turbo_row(1, 100, 900.0, r, producers=1)]
    rs = load_result_set(write_set(tmp_path / "set", rows, cores=8))
    cells = aggregate(rs.runs)
    scns = scenarios(cells)
    assert sorted(str(s["producers"]) for s in scns) == ["1", "auto"]
    auto = next(s for s in scns if s["producers"] == "auto")
    assert sorted(select(cells, **auto)["consumers"]) == [1, 2]
    fixed = next(s for s in scns if s["producers"] == 1)
    assert list(select(cells, **fixed)["producers"]) == [1]


# -- real sweeps ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_cell_short_of_valid_repeats_gets_more_within_max_repeats(tmp_path):
    out = tmp_path / "run"
    assert main(["sweep", *TINY, "--producers", "1", "--repeat", "1", "--max-repeats", "2",
                 "--out", str(out)]) == 0
    rows = read_runs(out)
    # One planned repeat is never 2 valid ones: the rule asks for a second.
    assert [int(r["repeat"]) for r in rows] == [0, 1]
    meta = json.loads((out / "meta.json").read_text())
    cid = rows[0]["cell_id"]
    assert meta["adaptive"]["extra_repeats"] == {cid: 1}
    assert meta["adaptive"]["budget_ran_out"] is False
    assert meta["finished_utc"] and meta["elapsed_s"] > 0
    assert leaked_children() == []


@pytest.mark.timeout(120)
def test_extra_repeats_stop_at_the_time_budget_and_say_which_cells_stay_noisy(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sweep", *TINY, "--producers", "1", "--repeat", "1", "--max-repeats", "5",
                 "--time-budget", "0.5", "--out", str(out)]) == 0
    assert len(read_runs(out)) == 1
    meta = json.loads((out / "meta.json").read_text())
    cid = read_runs(out)[0]["cell_id"]
    assert meta["adaptive"]["budget_ran_out"] is True
    assert meta["adaptive"]["extra_repeats"] == {}
    assert "valid repeat" in meta["adaptive"]["still_noisy"][cid]
    assert "still noisy when the time budget ran out" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_resume_continues_the_extra_repeats_from_runs_csv(tmp_path):
    out = tmp_path / "run"
    assert main(["sweep", *TINY, "--producers", "1", "--repeat", "1", "--out", str(out)]) == 0
    before = read_runs(out)
    assert len(before) == 1
    # As if interrupted after the planned repeats of a sweep with max_repeats = 2.
    meta = json.loads((out / "meta.json").read_text())
    meta["sweep"]["max_repeats"] = 2
    meta["finished_utc"] = None
    (out / "meta.json").write_text(json.dumps(meta))
    assert main(["sweep", "--resume", str(out), "--no-progress"]) == 0
    rows = read_runs(out)
    assert rows[:1] == before
    assert [int(r["repeat"]) for r in rows] == [0, 1]
    assert json.loads((out / "meta.json").read_text())["adaptive"]["extra_repeats"] == {
        before[0]["cell_id"]: 1}


@pytest.mark.timeout(120)
def test_auto_producers_probe_once_and_rows_record_the_setting(tmp_path):
    out = tmp_path / "run"
    assert main(["sweep", *TINY, "--producers", "auto", "--consumers", "1,2", "--repeat", "1",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    probes = meta["sweep"]["supply"]["probes"]
    assert list(probes) == ["mpq-batch/b100/e300"]  # one per backend, batch and event size
    p = probes["mpq-batch/b100/e300"]
    assert p["status"] == "ok" and p["supply_per_producer"] > 0 and p["consumer_overhead_us"] > 0
    rows = read_runs(out)
    assert len(rows) == 2
    cores = meta["sweep"]["supply"]["usable_cores"]
    for r in rows:
        assert r["producers_setting"] == "auto"
        n = int(r["producers"])
        assert 1 <= n <= max(1, cores - int(r["consumers"]))
        assert r["cell_id"].split("-")[3] == f"p{n}"
    assert sorted(pd.read_csv(out / "runs.csv")["consumers"]) == [1, 2]
    assert leaked_children() == []
