"""bench verify: the neighbours it measures, its verdict, and one real run.

Run with::

    python -m pytest tests/bench/test_bench_verify.py

The verdict tests work on hand-made frames; the end-to-end test re-measures a
hand-made result set's recommendation with real (tiny) cells.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.__main__ import main
from bench.analysing import verify as v
from bench.analysing.axes import scenarios
from bench.analysing.loading import aggregate, find_result_dirs, load_result_set
from bench.analysing.recommend import recommend_all
from bench.measuring.cell import leaked_children

sys.path.insert(0, str(Path(__file__).parent))
from _handmade_set import scaling_set, turbo_row, write_set  # noqa: E402

SCENARIO = {"start_method": "fork", "producers": 1, "work_us": 20.0, "workload": "busy",
            "event_bytes": 300, "load": "closed"}


def _frame(values: dict[tuple[int, int], list], invalid: dict | None = None) -> pd.DataFrame:
    """runs as the analysis loads them: (batch, consumers) -> events/s of each repeat."""
    rows = []
    for (b, c), eps in values.items():
        for r, e in enumerate(eps):
            bad = (invalid or {}).get((b, c), set())
            rows.append({"backend": "turbo", "start_method": "fork", "producers": 1,
                         "producers_setting": "1", "work_us": 20.0, "workload": "busy",
                         "event_bytes": 300, "load": "closed", "batch_size": b,
                         "consumers": c, "repeat": r, "status": "ok", "events_per_s": e,
                         "usable": r not in bad})
    return pd.DataFrame(rows)


def _candidates(*roles):
    cands = {"recommended": (100, 2), "batch-down": (10, 2), "batch-up": (1000, 2),
             "consumers-down": (100, 1), "consumers-up": (100, 3)}
    return [{"backend": "turbo", "batch_size": cands[r][0], "consumers": cands[r][1], "role": r}
            for r in roles]


def _outcome(frame, *roles, threshold=v.THRESHOLD):
    plan = [{"scenario": SCENARIO, "recommended": {"backend": "turbo", "batch_size": 100,
                                                    "consumers": 2},
             "candidates": _candidates(*roles)}]
    return v.outcomes(frame, plan, threshold)[0]


# -- neighbours ---------------------------------------------------------------


def test_neighbours_are_the_next_batch_sizes_and_one_consumer_either_side():
    cands, skipped = v.neighbours(100, 2, [10, 100, 1000, 10000], cap=3)
    assert cands == [("recommended", 100, 2), ("batch-down", 10, 2), ("batch-up", 1000, 2),
                     ("consumers-down", 100, 1), ("consumers-up", 100, 3)]
    assert skipped == []


def test_neighbours_stop_at_the_edges_and_the_cores():
    cands, skipped = v.neighbours(10, 1, [10, 100], cap=1)
    assert [r for r, _, _ in cands] == ["recommended", "batch-up"]
    assert {r for r, _ in skipped} == {"batch-down", "consumers-down", "consumers-up"}
    # The core cap counts the producers, as the recommendation's does.
    assert v.consumer_cap(4, 1) == 3
    assert v.consumer_cap(4, "auto") == 3
    assert v.consumer_cap(2, 2) == 1


# -- the verdict ----------------------------------------------------------------


def test_verdict_passes_within_the_threshold_of_the_best_neighbour():
    frame = _frame({(100, 2): [96, 97, 95], (10, 2): [60, 61, 62], (1000, 2): [100, 99, 101]})
    out = _outcome(frame, "recommended", "batch-down", "batch-up")
    assert out["passed"] is True
    assert out["best"] == {"batch_size": 1000, "consumers": 2, "events_per_s_median": 100.0}
    assert out["ratio"] == pytest.approx(0.96)
    rec = out["candidates"][0]
    assert rec["role"] == "recommended"
    assert (rec["events_per_s_median"], rec["events_per_s_min"], rec["events_per_s_max"]) == (
        96, 95, 97)
    assert rec["repeats"] == rec["valid_repeats"] == 3


def test_verdict_fails_when_a_neighbour_is_clearly_faster():
    frame = _frame({(100, 2): [90, 91, 89], (100, 3): [100, 101, 99]})
    out = _outcome(frame, "recommended", "consumers-up")
    assert out["passed"] is False
    assert out["ratio"] == pytest.approx(0.90)
    assert "3 consumers" in out["reason"]
    assert v.exit_code([out]) == 1


def test_invalid_repeats_do_not_count():
    # The neighbour's fast repeat is invalid: without it the recommendation is the best.
    frame = _frame({(100, 2): [100, 100, 100], (10, 2): [500, 90, 91]}, invalid={(10, 2): {0}})
    out = _outcome(frame, "recommended", "batch-down")
    assert out["passed"] is True and out["ratio"] == 1.0
    down = out["candidates"][1]
    assert down["valid_repeats"] == 2 and down["repeats"] == 3
    assert down["events_per_s_max"] == 91


def test_undecided_without_valid_repeats_of_the_recommendation_or_of_any_neighbour():
    frame = _frame({(100, 2): [100, 100], (10, 2): [90, 90]}, invalid={(100, 2): {0, 1}})
    out = _outcome(frame, "recommended", "batch-down")
    assert out["passed"] is None and out["ratio"] is None
    assert "recommended configuration has no valid repeat" in out["reason"]
    frame = _frame({(100, 2): [100, 100], (10, 2): [90, 90]}, invalid={(10, 2): {0, 1}})
    out = _outcome(frame, "recommended", "batch-down")
    assert out["passed"] is None and "no neighbour" in out["reason"]
    # A neighbour never measured at all is undecided too, and not a pass.
    out = _outcome(_frame({(100, 2): [100, 100]}), "recommended", "batch-up")
    assert out["passed"] is None
    assert v.exit_code([out]) == 1


def test_verify_json_has_the_agreed_shape_and_no_nan():
    frame = _frame({(100, 2): [100, 100], (10, 2): [90, 90]})
    outs = [_outcome(frame, "recommended", "batch-down", "batch-up")]  # batch-up unmeasured
    doc = v.document("src", "verify", "python -m bench verify src", 0.95, 2, outs, "now")
    text = json.dumps(doc, allow_nan=False)  # NaN would make it invalid JSON
    back = json.loads(text)
    assert set(back) >= {"schema_version", "verified_utc", "source", "run_dir", "command",
                         "threshold", "cores", "outcomes"}
    o = back["outcomes"][0]
    assert set(o) >= {"scenario", "recommended", "candidates", "best", "ratio", "passed",
                      "reason"}
    assert o["scenario"] == SCENARIO
    up = o["candidates"][2]
    assert up["role"] == "batch-up" and up["events_per_s_median"] is None
    assert up["valid_repeats"] == 0


# -- from a result set ------------------------------------------------------------


def test_targets_follow_the_sets_recommendation(tmp_path):
    rs = load_result_set(scaling_set(tmp_path / "set"))
    cells = aggregate(rs.runs)
    recs = recommend_all(cells, rs.runs, scenarios(cells), rs.cores)
    assert recs[0].ok and (recs[0].batch_size, recs[0].consumers) == (100, 1)
    plan = v.targets(recs, cells, usable_cores=4)
    assert len(plan) == 1
    t = plan[0]
    assert t["scenario"]["producers"] == 1 and t["scenario"]["work_us"] == 20
    assert [(c["role"], c["batch_size"], c["consumers"]) for c in t["candidates"]] == [
        ("recommended", 100, 1), ("batch-down", 10, 1), ("batch-up", 1000, 1),
        ("consumers-up", 100, 2)]
    # On 2 cores one producer leaves room for 1 consumer: no consumers-up.
    plan = v.targets(recs, cells, usable_cores=2)
    assert "consumers-up" not in [c["role"] for c in plan[0]["candidates"]]


def test_verify_config_runs_only_the_candidates_with_the_sets_settings(tmp_path):
    from bench.measuring.plan import named_cells, plan_cells

    rs = load_result_set(scaling_set(tmp_path / "set", duration=0.25))
    cells = aggregate(rs.runs)
    plan = v.targets(recommend_all(cells, rs.runs, scenarios(cells), rs.cores), cells, 4)
    cfg = v.verify_config(rs.meta["sweep"], plan, repeat=2, max_repeats=None, time_budget=None)
    assert (cfg.warmup, cfg.duration, cfg.cell_timeout) == (0.1, 0.25, 30)
    assert cfg.producers == [1] and cfg.work_us == [20.0]
    ids = sorted(c.cell_id for c in named_cells(cfg, plan_cells(cfg)))
    assert ids == sorted([
        "turbo-fork-p1-c1-b100-w20-busy-e300", "turbo-fork-p1-c1-b10-w20-busy-e300",
        "turbo-fork-p1-c1-b1000-w20-busy-e300", "turbo-fork-p1-c2-b100-w20-busy-e300"])
    assert len(plan_cells(cfg)) == 6  # the grid has 2 cells no candidate asked for


def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    # One consumer count only: nothing is recommended, so nothing to verify.
    rows = [turbo_row(1, 100, 1000.0 + r, r, work_us=20.0) for r in range(3)]
    d = write_set(tmp_path / "thin", rows)
    assert main(["verify", str(d)]) == 2
    err = capsys.readouterr().err
    assert "no recommendation to verify" in err and "too few points" in err
    assert not (d / "verify").exists()


@pytest.mark.timeout(240)
def test_verify_end_to_end_on_a_hand_made_set(tmp_path, capsys):
    d = scaling_set(tmp_path / "20260101T000000Z-handmade", duration=0.3)
    code = main(["verify", str(d), "--repeat", "1", "--max-repeats", "2", "--no-progress"])
    out = capsys.readouterr().out
    doc = json.loads((d / "verify.json").read_text())
    assert doc["source"] == d.name and doc["run_dir"] == "verify" and doc["threshold"] == 0.95
    (o,) = doc["outcomes"]
    assert o["recommended"] == {"backend": "turbo", "batch_size": 100, "consumers": 1}
    roles = [c["role"] for c in o["candidates"]]
    assert roles[0] == "recommended" and {"batch-down", "batch-up"} <= set(roles)
    # Exit status and verdict agree, whatever this loaded machine measured.
    assert code == (0 if o["passed"] is True else 1)
    assert ("PASS" if o["passed"] else "FAIL" if o["passed"] is False else "UNDECIDED") in out
    for c in o["candidates"]:
        assert 1 <= c["repeats"] <= 2 and 0 <= c["valid_repeats"] <= c["repeats"]
        if c["valid_repeats"]:
            assert c["events_per_s_min"] <= c["events_per_s_median"] <= c["events_per_s_max"]
    if o["passed"] is not None:
        assert math.isclose(o["ratio"], o["candidates"][0]["events_per_s_median"]
                            / o["best"]["events_per_s_median"])
    # The fresh run is a result set of its own, of the candidates' cells only ...
    fresh = load_result_set(d / "verify")
    measured = set(zip(fresh.runs["batch_size"], fresh.runs["consumers"]))
    assert measured == {(c["batch_size"], c["consumers"]) for c in o["candidates"]}
    assert set(fresh.runs["work_us"]) == {20.0} and set(fresh.runs["producers"]) == {1}
    # ... which is not taken for a top-level result set beside its source.
    assert find_result_dirs(tmp_path) == [d]
    assert leaked_children() == []
    # A finished verify run is not overwritten.
    assert main(["verify", str(d)]) == 2
    assert "already holds a finished verify run" in capsys.readouterr().err


def test_an_auto_producers_scenario_is_verified_with_auto_producers():
    scenario = {**SCENARIO, "producers": "auto"}
    frame = _frame({(100, 2): [100, 100], (100, 3): [104, 104]})
    # auto sized 1 producer at 2 consumers and 2 at 3: both cells are the scenario's.
    frame["producers_setting"] = "auto"
    frame.loc[frame["consumers"] == 3, "producers"] = 2
    plan = [{"scenario": scenario, "recommended": {"backend": "turbo", "batch_size": 100,
                                                    "consumers": 2},
             "candidates": _candidates("recommended", "consumers-up")}]
    (out,) = v.outcomes(frame, plan)
    assert [c["valid_repeats"] for c in out["candidates"]] == [2, 2]
    assert out["passed"] is True and out["ratio"] == pytest.approx(100 / 104)
    # The same rows under a fixed count are not this scenario's.
    (fixed,) = v.outcomes(frame, [{**plan[0], "scenario": SCENARIO}])
    assert fixed["passed"] is None
    cfg = v.verify_config({"warmup": 0.1, "duration": 0.2}, plan, repeat=1, max_repeats=None,
                          time_budget=None)
    assert cfg.producers == ["auto"]
    assert {c["producers_setting"] for c in cfg.only_cells} == {"auto"}


def test_flagged_repeats_are_shown_as_measured_but_never_decide():
    # Every repeat of the recommendation is flagged, and its flagged figures
    # are far below the neighbour's: still UNDECIDED, never FAIL (nor PASS),
    # while the figures say what was measured.
    frame = _frame({(100, 2): [40, 50, 60], (10, 2): [90, 90, 95]}, invalid={(100, 2): {0, 1, 2}})
    out = _outcome(frame, "recommended", "batch-down")
    assert out["passed"] is None and out["ratio"] is None
    rec = out["candidates"][0]
    assert rec["valid_repeats"] == 0 and math.isnan(rec["events_per_s_median"])
    assert (rec["ok_repeats"], rec["ok_events_per_s_median"]) == (3, 50)
    assert (rec["ok_events_per_s_min"], rec["ok_events_per_s_max"]) == (40, 60)
    doc = v.document("src", "verify", "python -m bench verify src", 0.95, 2, [out], "now")
    text = v.summary(doc)
    assert "UNDECIDED" in text
    assert "every ok repeat, flagged ones included: 50 ev/s (40-60), not used by the verdict" in text
    # A candidate whose repeats are all valid gets no second figure.
    assert text.count("flagged ones included") == 1


def _with_p99(frame: pd.DataFrame, p99: dict[tuple[int, int], float]) -> pd.DataFrame:
    frame["latency_p99_ms"] = [p99[(b, c)] for b, c in zip(frame["batch_size"], frame["consumers"])]
    return frame


def test_a_neighbour_over_the_latency_budget_is_no_rival():
    # batch 100 was recommended within a 100 ms budget; batch 1000 moves 16%
    # more but its p99 is 890 ms: on events/s alone the check fails.
    values = {(100, 2): [3_400, 3_500, 3_450], (1000, 2): [4_000, 4_050, 3_980]}
    p99 = {(100, 2): 60.0, (1000, 2): 890.0}
    plan = [{"scenario": SCENARIO,
             "recommended": {"backend": "turbo", "batch_size": 100, "consumers": 2},
             "candidates": _candidates("recommended", "batch-up")}]
    without = v.outcomes(_with_p99(_frame(values), p99), plan)[0]
    assert without["passed"] is False  # no budget known: batch 1000 is a rival
    within = v.outcomes(_with_p99(_frame(values), p99),
                        [{**plan[0], "latency_budget_ms": 100.0}])[0]
    assert within["passed"] is None and within["latency_budget_ms"] == 100.0
    assert "no neighbour inside the budget" in within["reason"]
    assert "over the 100 ms p99 budget, so no rival: batch 1000 x 2 (p99 890 ms)" in within["reason"]
    up = within["candidates"][1]
    assert up["over_budget"] is True and up["p99_ms_median"] == 890.0
    # With a rival inside the budget the verdict is on events/s against it alone.
    values[(10, 2)] = [3_300, 3_350, 3_320]
    p99[(10, 2)] = 20.0
    three = [{**plan[0], "latency_budget_ms": 100.0,
              "candidates": _candidates("recommended", "batch-down", "batch-up")}]
    out = v.outcomes(_with_p99(_frame(values), p99), three)[0]
    assert out["passed"] is True and out["best"]["batch_size"] == 100
    assert "batch 1000 x 2" in out["reason"]
    # The recommended one's own p99 over the budget is said, not judged.
    p99[(100, 2)] = 104.0
    out = v.outcomes(_with_p99(_frame(values), p99), three)[0]
    assert out["passed"] is True and "own p99 was 104 ms, over the 100 ms budget" in out["reason"]
    text = v.summary(v.document("src", "verify", "cmd", 0.95, 2, [out], "now"))
    assert "p99 890.0 ms (over the budget)" in text


def test_one_valid_repeat_of_several_cannot_decide():
    # The recommendation looks 10% slower, but on one valid repeat of three.
    frame = _frame({(100, 2): [90, 100, 100], (10, 2): [100, 100, 100]},
                   invalid={(100, 2): {1, 2}})
    out = _outcome(frame, "recommended", "batch-down")
    assert out["passed"] is None and "1 valid repeat of 3" in out["reason"]
    # The same for a neighbour: it is no rival on one repeat.
    frame = _frame({(100, 2): [90, 90, 90], (10, 2): [100, 100, 100]},
                   invalid={(10, 2): {1, 2}})
    out = _outcome(frame, "recommended", "batch-down")
    assert out["passed"] is None and "no neighbour has 2 valid repeats" in out["reason"]
    # A --repeat 1 run has one repeat to give: that one counts.
    out = _outcome(_frame({(100, 2): [90], (10, 2): [100]}), "recommended", "batch-down")
    assert out["passed"] is False and out["ratio"] == pytest.approx(0.9)
