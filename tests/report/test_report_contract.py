"""The report reads what the sweep's own writer (bench/results.py) writes.

The synthetic rows are pushed through bench.results' RunsWriter, write_pyperf
and write_meta, so a change in how the harness formats runs.csv, meta.json
or bench.json that the reader cannot follow fails here.  Skipped when the
harness module is absent.
"""

from __future__ import annotations

import csv

import pytest
from report_synth import write_result_set

from bench.analysing.axes import scenarios
from bench.analysing.compare import compare_sets
from bench.analysing.loading import COLUMN_KINDS, aggregate, load_result_set
from bench.analysing.recommend import recommend
from bench.presenting.machine import reproduce_command

results = pytest.importorskip("bench.results")


def _rewrite(src, dst, meta_extra=None):
    import json

    dst.mkdir(parents=True)
    rows = []
    with open(src / "runs.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            for k, kind in COLUMN_KINDS.items():
                if k not in r:
                    continue
                if kind == "float" and r[k] != "":
                    r[k] = float(r[k])
                elif kind == "int" and r[k] != "":
                    r[k] = int(float(r[k]))
            rows.append(r)
    with results.RunsWriter(dst) as w:
        for r in rows:
            w.append(r)
    meta = json.loads((src / "meta.json").read_text())
    meta["sweep"].pop("command", None)
    meta.update(meta_extra or {})
    results.write_meta(dst, meta)
    results.write_pyperf(dst, rows, meta)
    return dst


def test_harness_written_set_reads_back(tmp_path):
    src = write_result_set(
        tmp_path / "src",
        consumers=(1, 2, 4),
        failed=lambda c: c["backend"] == "mpq" and c["consumers"] == 4,
    )
    dst = _rewrite(src, tmp_path / "dst")
    rs = load_result_set(dst)
    cells = aggregate(rs.runs)
    assert len(cells) == aggregate(load_result_set(src).runs).shape[0]
    assert cells["failed"].sum() == 1
    s = scenarios(cells)[-1]
    rec = recommend(cells, rs.runs, s, rs.cores)
    assert rec.ok and rec.consumers == 4
    # bench.json from the harness is matched cell by cell, pyperf's test applies
    rows = compare_sets(rs, load_result_set(src))
    ok = [r for r in rows if r.status == "ok"]
    assert ok and all(r.test == "pyperf t-test" for r in ok)
    assert all(abs(r.ratio - 1) < 1e-6 for r in ok)


def test_reproduce_command_from_harness_sweep_config():
    meta = {
        "sweep": {
            "backends": ["turbo", "mpq"],
            "consumers": [1, 2, 4],
            "work_us": [0.0, 50.0],
            "repeat": 3,
            "cell_timeout": None,
            "name": "quick",
            "description": "all backends",
            "skipped_backends": {"faster-fifo": "not installed"},
        }
    }
    cmd, exact = reproduce_command(meta)
    assert not exact
    assert (
        cmd
        == "python -m bench sweep --backends turbo,mpq --consumers 1,2,4 --work-us 0,50 --repeat 3"
    )
    assert reproduce_command({"sweep": {"command": "python -m bench sweep --x 1"}}) == (
        "python -m bench sweep --x 1",
        True,
    )
