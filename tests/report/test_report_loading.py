"""Loading, validation and aggregation of result sets."""

from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest
from report_synth import write_result_set

from bench.analysing.axes import scenarios
from bench.analysing.loading import (
    ResultSetError,
    aggregate,
    default_result_dir,
    failed_runs,
    find_result_dirs,
    load_result_set,
)


def test_missing_dir_and_missing_runs_csv(tmp_path):
    with pytest.raises(ResultSetError, match="not a directory"):
        load_result_set(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultSetError, match=r"runs\.csv"):
        load_result_set(tmp_path / "empty")


def test_empty_and_header_only_runs_csv(tmp_path):
    d = write_result_set(tmp_path, consumers=(1, 2))
    csv = d / "runs.csv"
    header = csv.read_text().splitlines()[0]
    csv.write_text(header + "\n")
    with pytest.raises(ResultSetError, match=r"runs\.csv.*no result rows"):
        load_result_set(d)
    csv.write_text("")
    with pytest.raises(ResultSetError, match=r"runs\.csv.*empty"):
        load_result_set(d)


def test_unknown_schema_version_names_the_file(tmp_path):
    d = write_result_set(tmp_path, schema_version=99, consumers=(1, 2))
    with pytest.raises(ResultSetError, match=r"runs\.csv: schema_version 99"):
        load_result_set(d)


def test_meta_schema_mismatch_names_meta(tmp_path):
    d = write_result_set(tmp_path, consumers=(1, 2))
    meta = json.loads((d / "meta.json").read_text())
    meta["schema_version"] = 7
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ResultSetError, match=r"meta\.json: schema_version 7"):
        load_result_set(d)


def test_missing_meta_is_tolerated_with_cores_from_runs(tmp_path):
    d = write_result_set(tmp_path, consumers=(1, 2), cores=6)
    (d / "meta.json").unlink()
    rs = load_result_set(d)
    assert rs.cores == 6
    assert any("meta.json" in w for w in rs.warnings)


def test_aggregate_median_min_max(tmp_path):
    d = write_result_set(tmp_path, consumers=(1, 2), repeats=5)
    rs = load_result_set(d)
    cells = aggregate(rs.runs)
    one = cells.iloc[0]
    vals = rs.runs.loc[rs.runs["cell_id"] == one["cell_id"], "events_per_s"]
    assert one["events_per_s"] == pytest.approx(vals.median())
    assert one["events_per_s_min"] == pytest.approx(vals.min())
    assert one["events_per_s_max"] == pytest.approx(vals.max())
    assert one["n_ok"] == one["n_runs"] == 5
    assert one["spread"] == pytest.approx((vals.max() - vals.min()) / vals.median())


def test_failed_repeats_are_not_averaged_in(tmp_path):
    # c=2 of turbo b=100: repeat 0 fails (zeros in runs.csv), the others are ok;
    # c=4 of turbo b=100: every repeat fails.
    def failed(cell):
        return (
            cell["backend"] == "turbo"
            and cell["batch_size"] == 100
            and (cell["consumers"] == 4 or (cell["consumers"] == 2 and cell["repeat"] == 0))
        )

    d = write_result_set(tmp_path, consumers=(1, 2, 4), failed=failed)
    rs = load_result_set(d)
    cells = aggregate(rs.runs).set_index("cell_id")
    part = cells.loc["turbo-fork-p1-c2-b100-w50-busy-e300"]
    assert (part["n_ok"], part["n_runs"], bool(part["failed"])) == (2, 3, False)
    assert part["events_per_s_min"] > 0  # the zero row is not in the min
    dead = cells.loc["turbo-fork-p1-c4-b100-w50-busy-e300"]
    assert bool(dead["failed"]) and dead["n_ok"] == 0
    assert math.isnan(dead["events_per_s"])  # NaN, never 0
    assert "failed x3" in dead["status_summary"]
    assert "synthetic failure" in dead["error"]
    fr = failed_runs(rs.runs)
    assert set(fr["cell_id"]) == {
        "turbo-fork-p1-c2-b100-w50-busy-e300",
        "turbo-fork-p1-c4-b100-w50-busy-e300",
    }
    assert len(fr) == 4


def test_scenarios_cover_work_and_producers(tmp_path):
    d = write_result_set(tmp_path, consumers=(1, 2), work_us=(10.0, 50.0), producers=(1, 2))
    cells = aggregate(load_result_set(d).runs)
    scn = scenarios(cells)
    assert [(s["work_us"], s["producers"]) for s in scn] == [(10, 1), (10, 2), (50, 1), (50, 2)]


def test_default_result_dir_env_and_newest(tmp_path, monkeypatch):
    root = tmp_path / "results"
    old = write_result_set(root, name="20240101T000000Z-a", consumers=(1, 2))
    new = write_result_set(root, name="20250101T000000Z-b", consumers=(1, 2))
    (root / "20260101T000000Z-no-runs").mkdir()  # no runs.csv: not a result set
    monkeypatch.delenv("TQ_RESULTS_DIR", raising=False)
    assert find_result_dirs(root) == [old, new]
    assert default_result_dir(root) == new
    monkeypatch.setenv("TQ_RESULTS_DIR", str(old))
    assert default_result_dir(root) == old
    monkeypatch.delenv("TQ_RESULTS_DIR")
    with pytest.raises(ResultSetError, match="no result set"):
        default_result_dir(tmp_path / "elsewhere")


def test_string_columns_survive_empty_values(tmp_path):
    d = write_result_set(tmp_path, consumers=(1, 2))
    rs = load_result_set(d)
    assert (rs.runs["error"] == "").all()
    assert pd.api.types.is_numeric_dtype(rs.runs["events_per_s"])
    assert os.path.basename(rs.path) == rs.name
