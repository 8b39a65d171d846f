"""`python -m bench compare A B`: ratios, significance, exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from report_synth import batched_mpq, linear_turbo, saturating_mpq, write_result_set

from bench.analysing.compare import compare_sets, geometric_mean_ratio, main
from bench.analysing.loading import load_result_set

REPO = Path(__file__).resolve().parents[2]
CONSUMERS = (1, 2, 4)


def _set(root, turbo_scale=1.0, seed=0, **kw):
    """Two backends; turbo's throughput multiplied by ``turbo_scale``."""
    turbo = linear_turbo(batch_sizes=(100,))
    base = turbo.eps
    turbo.eps = lambda n, b: base(n, b) * turbo_scale
    return write_result_set(
        root, [turbo, saturating_mpq()], consumers=CONSUMERS, repeats=5, seed=seed, **kw
    )


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return _set(tmp_path_factory.mktemp("a"))


def test_identical_sets_pass(baseline, capsys):
    assert main([str(baseline), str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "OK: no significant regression" in out
    assert "pyperf t-test" in out  # bench.json present: pyperf's test is used
    rows = compare_sets(load_result_set(baseline), load_result_set(baseline))
    assert geometric_mean_ratio(rows) == pytest.approx(1.0)
    assert all(r.ratio == pytest.approx(1.0) and not r.significant for r in rows)


def test_regression_past_threshold_fails(baseline, tmp_path, capsys):
    slow = _set(tmp_path, turbo_scale=0.8, seed=1)
    assert main([str(baseline), str(slow), "--out", str(tmp_path / "cmp.md")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "FAIL" in out
    rows = {r.cell_id: r for r in compare_sets(load_result_set(baseline), load_result_set(slow))}
    t = rows["turbo-fork-p1-c2-b100-w50-busy-e300"]
    assert t.ratio == pytest.approx(0.8, abs=0.03) and t.significant
    m = rows["mpq-fork-p1-c2-b1-w50-busy-e300"]
    assert m.ratio == pytest.approx(1.0, abs=0.03)
    assert (tmp_path / "cmp.md").read_text() == out


def test_small_slowdown_within_threshold_passes(baseline, tmp_path):
    slightly = _set(tmp_path, turbo_scale=0.98, seed=2)
    assert main([str(baseline), str(slightly)]) == 0
    # 2% with 1% noise over 5 repeats is significant somewhere: a 1% threshold catches it
    rows = compare_sets(load_result_set(baseline), load_result_set(slightly))
    assert any(r.cell_id.startswith("turbo") and r.significant and r.ratio < 0.99 for r in rows)
    assert main([str(baseline), str(slightly), "--threshold", "0.01"]) == 1


def test_speedup_passes(baseline, tmp_path, capsys):
    fast = _set(tmp_path, turbo_scale=1.5, seed=3)
    assert main([str(baseline), str(fast)]) == 0
    assert "+5" in capsys.readouterr().out  # about +50% on turbo cells
    rows = compare_sets(load_result_set(baseline), load_result_set(fast))
    assert geometric_mean_ratio(rows) > 1.1


def test_newly_failing_cell_fails(baseline, tmp_path, capsys):
    broken = _set(
        tmp_path, seed=4, failed=lambda c: c["backend"] == "turbo" and c["consumers"] == 4
    )
    assert main([str(baseline), str(broken)]) == 1
    assert "new failure" in capsys.readouterr().out


def test_welch_fallback_without_bench_json(baseline, tmp_path, capsys):
    nojson = _set(tmp_path, turbo_scale=0.8, seed=5, bench_json=False)
    assert main([str(baseline), str(nojson)]) == 1
    out = capsys.readouterr().out
    assert "runs.csv Welch t-test" in out


def test_bad_input_exits_2(baseline, tmp_path, capsys):
    assert main([str(baseline), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    v9 = _set(tmp_path / "v9", schema_version=9)
    assert main([str(baseline), str(v9)]) == 2
    err = capsys.readouterr().err
    assert "schema_version 9" in err and str(v9 / "runs.csv") in err
    other = write_result_set(tmp_path / "other", [batched_mpq()], consumers=(3,))
    assert main([str(baseline), str(other)]) == 2
    assert "no cell_id in common" in capsys.readouterr().err
    broken = _set(tmp_path / "bj")
    (broken / "bench.json").write_text(json.dumps({"not": "pyperf"}))
    assert main([str(baseline), str(broken)]) == 2
    assert "bench.json" in capsys.readouterr().err


def test_python_dash_m_bench_compare(baseline):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.analysing.compare", str(baseline), str(baseline)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Geometric mean" in proc.stdout


def test_multiple_testing_correction_changes_a_borderline_verdict():
    from bench.analysing.compare import CellComparison, _correct

    def rows():
        out = [CellComparison("borderline", 100.0, 90.0, 0.9, None, "t", "ok", p_value=0.02)]
        out += [
            CellComparison(f"c{i}", 100.0, 100.0, 1.0, None, "t", "ok", p_value=0.5 + i / 100)
            for i in range(9)
        ]
        return out

    alone = rows()
    _correct(alone, "none", 0.05)
    assert alone[0].significant  # p = 0.02 < 0.05 tested alone ...
    holm = rows()
    _correct(holm, "holm", 0.05)
    assert holm[0].p_adjusted == pytest.approx(0.2)  # ... but one of 10 tests
    assert not holm[0].significant
    bh = rows()
    _correct(bh, "bh", 0.05)
    assert bh[0].p_adjusted == pytest.approx(0.2) and not bh[0].significant


def test_output_names_the_correction(baseline, capsys):
    assert main([str(baseline), str(baseline)]) == 0
    assert "Holm-Bonferroni" in capsys.readouterr().out
    assert main([str(baseline), str(baseline), "--correction", "bh"]) == 0
    assert "Benjamini-Hochberg" in capsys.readouterr().out
