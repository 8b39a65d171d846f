"""turbo against its peers, cell by cell (bench.analysing.peers), and the report's section.

The sets are synthetic (report_synth): turbo and the batched
multiprocessing.Queue at batch 100, 1 and 2 consumers, 3 repeats; each test
then writes the events/s, bottleneck and validity it needs into runs.csv,
so the right ratio and verdict are known.
"""

from __future__ import annotations

import pandas as pd
import pytest
from report_synth import batched_mpq, linear_turbo, write_result_set

from bench.analysing.axes import scenarios
from bench.analysing.loading import aggregate, load_result_set
from bench.analysing.peers import (
    MIXED,
    PEER_AHEAD,
    PUT_PATH,
    QUEUE,
    TURBO_AHEAD,
    UNDECIDED,
    compare_peers,
)
from bench.presenting.report import build_report

PEER_EPS = (10_000.0, 14_000.0, 9_000.0)  # per repeat: the machine moves between rounds


@pytest.fixture
def base(tmp_path):
    return write_result_set(tmp_path, [linear_turbo(batch_sizes=(100,)), batched_mpq(batch_sizes=(100,))],
                            consumers=(1, 2), cores=8)


def _edit(path, fn):
    runs = pd.read_csv(path / "runs.csv", keep_default_na=False)
    fn(runs)
    runs.to_csv(path / "runs.csv", index=False)


def _set_eps(runs, consumers, turbo_share):
    """The peer moves PEER_EPS[r] in repeat r, turbo ``turbo_share`` of it."""
    for r, eps in enumerate(PEER_EPS):
        at = (runs["consumers"] == consumers) & (runs["repeat"] == r)
        runs.loc[at & (runs["backend"] == "mpq-batch"), "events_per_s"] = eps
        runs.loc[at & (runs["backend"] == "turbo"), "events_per_s"] = eps * turbo_share


def _compare(path):
    rs = load_result_set(path)
    (s,) = scenarios(aggregate(rs.runs))
    return {c.consumers: c for c in compare_peers(rs.runs, s)}


def test_ratios_pair_the_repeats_and_name_who_is_ahead(base):
    def edit(runs):
        _set_eps(runs, 1, 1.2)
        _set_eps(runs, 2, 0.5)
    _edit(base, edit)
    by_n = _compare(base)
    one, two = by_n[1], by_n[2]
    # Paired by repeat, the ratio is exact although the peer moved 55% between repeats.
    assert one.ratio.median == pytest.approx(1.2) and one.ratio.lo == pytest.approx(1.2)
    assert one.ratio.hi == pytest.approx(1.2) and one.pairs == 3 and one.basis == QUEUE
    assert one.verdict == TURBO_AHEAD and one.within == "yes"
    assert two.ratio.median == pytest.approx(0.5) and two.verdict == PEER_AHEAD and two.within == "no"
    assert one.peer == "mpq-batch" and one.batch_size == 100
    # All 3 pairs on one side: 1 in 8 when the two are alike (a sign test).
    assert one.chance == two.chance == 0.5 ** 3


def test_repeats_that_straddle_decide_nothing(base):
    def edit(runs):
        _set_eps(runs, 1, 1.0)
        at = (runs["consumers"] == 1) & (runs["backend"] == "turbo")
        for r, share in enumerate((0.85, 1.05, 0.95)):
            runs.loc[at & (runs["repeat"] == r), "events_per_s"] = PEER_EPS[r] * share
    _edit(base, edit)
    one = _compare(base)[1]
    assert one.verdict == UNDECIDED and one.within == "undecided"
    assert one.chance != one.chance  # NaN: no "ahead" verdict, no odds
    assert one.ratio.lo == pytest.approx(0.85) and one.ratio.hi == pytest.approx(1.05)


def test_a_flagged_repeat_counts_for_nothing(base):
    def edit(runs):
        _set_eps(runs, 1, 1.2)
        # Repeat 1 of turbo is made the slowest by far, and flagged: it must not count.
        at = (runs["consumers"] == 1) & (runs["backend"] == "turbo")
        runs.loc[at & (runs["repeat"] == 1), "events_per_s"] = 100.0
        runs.loc[at & (runs["repeat"].isin([1, 2])), "valid"] = "False"
        runs.loc[at & (runs["repeat"].isin([1, 2])), "invalid_reason"] = "work drift 30% > 10%"
    _edit(base, edit)
    one = _compare(base)[1]
    assert one.pairs == 1 and one.left_out == 2
    assert "work drift" in one.left_out_reason and "repeat 1" in one.left_out_reason
    # One pair of three is no evidence.
    assert one.verdict.startswith(UNDECIDED) and one.within == ""
    assert one.ratio.median == pytest.approx(1.2)
    assert one.sentence().startswith(UNDECIDED) and "within" not in one.sentence()
    assert "2 pairs left out; first: turbo repeat 1: work drift" in one.sentence()


def test_producer_bound_pairs_compare_the_put_path_per_producer(base):
    def edit(runs):
        _set_eps(runs, 1, 2.0)
        at = runs["consumers"] == 1
        runs.loc[at, "bottleneck"] = "producers"
        # Auto producers gave turbo 2: per producer it carries what the peer's one does.
        runs["producers_setting"] = "auto"
        runs.loc[at & (runs["backend"] == "turbo"), "producers"] = 2
    _edit(base, edit)
    rs = load_result_set(base)
    assert rs.runs.loc[rs.runs["consumers"] == 1, "producer_bound"].all()
    one = _compare(base)[1]
    assert one.basis == PUT_PATH and one.ratio.median == pytest.approx(1.0)
    assert one.turbo_producers == "2" and one.peer_producers == "1"

    # Producer-bound and drifted too: no put-path evidence either.
    def flag(runs):
        at = (runs["consumers"] == 1) & (runs["backend"] == "turbo") & (runs["repeat"] == 0)
        runs.loc[at, "valid"] = "False"
        runs.loc[at, "invalid_reason"] = "work drift 30% > 10%"
    _edit(base, flag)
    one = _compare(base)[1]
    assert one.pairs == 2 and one.left_out == 1 and "work drift" in one.left_out_reason


def test_a_mixed_pair_counts_only_at_the_same_producer_count(base):
    def edit(runs):
        _set_eps(runs, 1, 1.1)
        _set_eps(runs, 2, 1.1)
        runs.loc[runs["backend"] == "turbo", "bottleneck"] = "producers"
        runs["producers_setting"] = "auto"
        runs.loc[(runs["backend"] == "turbo") & (runs["consumers"] == 2), "producers"] = 2
    _edit(base, edit)
    by_n = _compare(base)
    assert by_n[1].basis == MIXED and by_n[1].ratio.median == pytest.approx(1.1)
    assert by_n[2].pairs == 0 and by_n[2].left_out == 3 and "producers" in by_n[2].left_out_reason
    assert by_n[2].verdict == ""


def test_the_report_has_the_section_and_peers_csv(base, tmp_path):
    _edit(base, lambda runs: _set_eps(runs, 1, 1.2))
    rep = build_report(base, out_dir=tmp_path / "rep", html_report=False)
    md = rep.markdown_path.read_text()
    assert "against its peers, cell by cell" in md
    row = next(line for line in md.splitlines()
               if line.startswith("| batched multiprocessing.Queue | 1 | 100 "))
    assert "1.20 (1.20-1.20)" in row and TURBO_AHEAD in row and "| 1 in 8 |" in row
    csv = pd.read_csv(tmp_path / "rep" / "peers.csv")
    assert set(csv["peer"]) == {"mpq-batch"} and set(csv["consumers"]) == {1, 2}
    assert csv.loc[csv["consumers"] == 1, "ratio"].iloc[0] == pytest.approx(1.2)
