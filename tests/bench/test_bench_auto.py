"""Batch size "auto" (turbo's batch_size="auto") in the harness: config, planning, a real sweep.

Run with::

    python -m pytest tests/bench/test_bench_auto.py

The end-to-end test runs a real tiny sweep: one closed-loop and one
open-loop auto cell with a short window.
"""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main
from bench.measuring.backends import BackendSettings
from bench.measuring.backends.turbo import TurboBackend
from bench.measuring.cell import Cell, buffer_bound, leaked_children
from bench.measuring.plan import SweepConfigError, build_config, plan_cells
from bench.results import read_runs


def _settings(batch, consumers=1, events=200):
    return BackendSettings(producers=1, consumers=consumers, batch_size=batch,
                           max_buffered_events=events, event_bytes=300, event_pickled_bytes=350,
                           workdir="/nonexistent")


def test_cli_and_toml_take_auto_as_a_batch_size():
    from bench.cli import _sweep_config, build_parser
    from bench.presenting.machine import reproduce_command

    args = build_parser().parse_args(["sweep", "--backends", "turbo", "--batch-sizes", "auto,1000,100",
                                      "--rate-fractions", "0.5", "--open-loop-batch-sizes", "auto"])
    cfg = _sweep_config(args, warn=lambda m: None)
    assert cfg.batch_sizes == [100, 1000, "auto"]
    assert cfg.open_loop_batch_sizes == ["auto"]
    ids = [c.cell_id for c in plan_cells(cfg)]
    # Only the auto cells got open-loop twins; their ids spell the size.
    closed = [c.cell_id for c in plan_cells(cfg) if not c.open_loop]
    auto_closed = [i for i in closed if "-bauto-" in i]
    assert auto_closed and len(auto_closed) < len(closed)
    assert [i for i in ids if "frac" in i] == [i + "-frac0.5" for i in auto_closed]
    cmd, _ = reproduce_command({"sweep": cfg.to_dict()})
    again = _sweep_config(build_parser().parse_args(cmd.split()[3:]), warn=lambda m: None)
    assert [c.cell_id for c in plan_cells(again)] == ids
    toml = build_config({"backends": ["turbo"], "batch_sizes": [100, "auto"]}, cores=2)
    assert toml.batch_sizes == [100, "auto"]


def test_backends_without_an_adaptive_size_skip_auto_with_a_note():
    notes = []
    # turbo-many's lists are made by the caller at the caller's size: no auto there either.
    cfg = build_config({"backends": ["turbo", "turbo-many", "mpq-batch", "mpq"], "batch_sizes": [100, "auto"]},
                       cores=2, warn=notes.append)
    cells = plan_cells(cfg)
    auto = [c for c in cells if c.batch_size == "auto"]
    assert [c.backend for c in auto] == ["turbo"]
    assert {c.backend for c in cells} == {"turbo", "turbo-many", "mpq-batch", "mpq"}
    assert any("auto" in n and "mpq-batch" in n and "turbo-many" in n for n in notes), notes
    with pytest.raises(SweepConfigError, match="batch_sizes"):
        build_config({"backends": ["mpq-batch"], "batch_sizes": ["auto"]}, cores=2)
    with pytest.raises(SweepConfigError, match="batch_sizes"):
        build_config({"backends": ["turbo"], "batch_sizes": ["automatic"]}, cores=2)


def test_an_auto_cell_leaves_turbo_room_to_see_a_backlog():
    from turbo_queue._sizing import AutoBatchSize

    # The harness's "auto" buffer (2 messages per consumer) would give one
    # consumer max_ready 2, and the policy grows only at GROW_AT ready batches.
    cell = Cell("turbo", "fork", 1, 1, "auto", 50.0, "busy", 300)
    events = buffer_bound("auto", cell)
    assert TurboBackend(_settings("auto", events=events)).max_ready() >= AutoBatchSize.GROW_AT + 1
    # A fixed size keeps its bound in batches, as before.
    fixed = Cell("turbo", "fork", 1, 1, 1000, 50.0, "busy", 300)
    assert TurboBackend(_settings(1000, events=buffer_bound("auto", fixed))).max_ready() == 2


@pytest.mark.timeout(120)
def test_tiny_auto_sweep_closed_and_open_loop_end_to_end(tmp_path):
    out = tmp_path / "auto"
    assert main(["sweep", "--backends", "turbo", "--producers", "1", "--consumers", "1",
                 "--batch-sizes", "auto", "--work-us", "50", "--warmup", "0.3", "--duration", "0.5",
                 "--rate", "2000", "--repeat", "1", "--cell-timeout", "30", "--no-progress",
                 "--out", str(out)]) == 0
    assert leaked_children() == []
    rows = read_runs(out)
    assert len(rows) == 2
    closed, rate = rows
    assert all(r["status"] == "ok" and r["lost"] == "0" and r["duplicated"] == "0" for r in rows)
    assert closed["batch_size"] == rate["batch_size"] == "auto"
    assert closed["cell_id"] == "turbo-fork-p1-c1-bauto-w50-busy-e300"
    assert rate["cell_id"] == closed["cell_id"] + "-rate2000" and rate["load"] == "rate:2000"
    for r in rows:
        mean = float(r["mean_batch_size"])
        assert 1 <= mean <= float(r["events_total"])
    # Flat out against one consumer doing 50 us per event the ready batches
    # pile up, so auto grows past the size it starts at (100).
    assert float(closed["mean_batch_size"]) > 100
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sweep"]["batch_sizes"] == ["auto"]
    # The report reads the set (auto is its own curve; no fixed size to compare with).
    from bench.presenting.report import build_report

    rep = build_report(out, tmp_path / "report", html_report=False)
    assert rep.markdown_path.exists()


def test_verify_holds_auto_against_the_set_s_smallest_and_largest_fixed_sizes():
    from bench.analysing import verify as v

    cands, skipped = v.neighbours("auto", 2, [100, 1000, "auto"], cap=3)
    assert cands[0] == ("recommended", "auto", 2) and not skipped
    roles = {r: (b, c) for r, b, c in cands}
    assert roles["batch-down"] == (100, 2) and roles["batch-up"] == (1000, 2)
    assert roles["consumers-down"] == ("auto", 1) and roles["consumers-up"] == ("auto", 3)
    # A fixed recommendation's batch neighbours are fixed sizes only.
    cands, _ = v.neighbours(100, 1, [100, 1000, "auto"], cap=1)
    assert [b for _, b, _ in cands] == [100, 1000]
    _, skipped = v.neighbours("auto", 1, [1000, "auto"], cap=1)
    assert [r for r, _ in skipped] == ["batch-up", "consumers-down", "consumers-up"]
