"""The sweep: config validation, planning, a tiny real sweep, resume, CLI.

Run with::

    python -m pytest tests/bench/test_bench_sweep.py

The end-to-end tests run real (tiny) sweeps: one or two cells with a 0.3 s
window, so the whole file takes seconds.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.measuring.backends import BACKENDS
from bench.measuring.cell import leaked_children
from bench.measuring.plan import (
    DEFAULT_SWEEP,
    SWEEPS_DIR,
    SweepConfigError,
    build_config,
    estimate_seconds,
    load_sweep_file,
    plan_cells,
    repeat_order,
)
from bench.results import RunsWriter, read_runs
from bench.schema import COLUMNS, META_KEYS, SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--backends", "mpq-batch",
    "--producers", "1",
    "--consumers", "1",
    "--batch-sizes", "100",
    "--work-us", "0",
    "--warmup", "0.2",
    "--duration", "0.3",
    "--no-progress",
]  # fmt: skip


# -- config ------------------------------------------------------------------


def test_shipped_sweeps_are_valid():
    for path in sorted(SWEEPS_DIR.glob("*.toml")):
        cfg = build_config(load_sweep_file(path), cores=2, source=str(path))
        assert plan_cells(cfg)


def test_quick_sweep_fits_in_three_minutes_on_two_cores():
    cfg = build_config(load_sweep_file(DEFAULT_SWEEP), cores=2)
    runs = len(plan_cells(cfg)) * cfg.repeat
    # Every run takes at least its warm-up and window, whatever the estimate
    # says; leave a third of the three minutes for start-up and drain.
    assert runs * (cfg.warmup + cfg.duration) <= 120
    assert set(cfg.backends) <= set(BACKENDS)


def test_the_estimate_counts_every_run_the_sweep_will_make():
    raw = {"backends": ["turbo", "mpq"], "consumers": [1, 2], "batch_sizes": [10, 100],
           "warmup": 0.5, "duration": 1.0, "repeat": 2}
    closed = build_config(raw, cores=2)
    with_open = build_config(dict(raw, rate_fractions=[0.5], rates=[1000]), cores=2)
    for cfg in (closed, with_open):
        runs = len(plan_cells(cfg)) * cfg.repeat
        assert estimate_seconds(cfg, len(plan_cells(cfg))) >= runs * (cfg.warmup + cfg.duration)
    # Open-loop cells take as long as closed ones: the estimate grows with them.
    assert len(plan_cells(with_open)) == 3 * len(plan_cells(closed))


def test_full_sweep_scales_with_the_machine():
    raw = load_sweep_file(SWEEPS_DIR / "full.toml")
    assert build_config(raw, cores=2).consumers == [1, 2, 4]
    big = build_config(raw, cores=64)
    assert max(big.consumers) == 128 and 32 in big.consumers
    assert big.batch_sizes == [1, 10, 100, 1000, 10000]
    assert big.work_us == [0, 10, 50, 200]


def test_unbatched_backends_and_named_workloads_are_deduplicated():
    raw = {
        "backends": ["mpq", "mpq-batch"],
        "batch_sizes": [10, 100],
        "work_us": [0, 50],
        "workloads": ["busy", "hash"],
    }
    ids = [c.cell_id for c in plan_cells(build_config(raw, cores=2))]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if i.startswith("mpq-fork")] == [
        "mpq-fork-p1-c1-b1-w0-busy-e300",
        "mpq-fork-p1-c1-b1-w50-busy-e300",
        "mpq-fork-p1-c1-b1-w0-hash-e300",
    ]
    assert sum(1 for i in ids if i.startswith("mpq-batch") and "-hash-" in i) == 2


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"backends": ["mpq"], "consumers": [0]}, "consumers"),
        ({"backends": ["mpq"], "producers": [-1]}, "producers"),
        ({"backends": ["mpq"], "batch_sizes": []}, "batch_sizes"),
        ({"backends": []}, "backends"),
        ({"backends": ["mpq"], "work_us": [-5]}, "work_us"),
        ({"backends": ["mpq"], "repeat": 0}, "repeat"),
        ({"backends": ["mpq"], "duration": 0}, "duration"),
        ({"backends": ["mpq"], "event_bytes": [0]}, "event_bytes"),
        ({"backends": ["mpq"], "workloads": ["sleep"]}, "workloads"),
        ({"backends": ["mpq"], "start_methods": ["thread"]}, "start_methods"),
        ({"backends": ["mpq"], "consumers": ["lots"]}, "consumers"),
        ({"backends": ["mpq"], "warmup": 1, "duration": 1, "cell_timeout": 2}, "cell_timeout"),
        ({"backends": ["mpq"], "calibrate": "sometimes"}, "calibrate"),
    ],
)
def test_bad_values_name_their_key(raw, key):
    with pytest.raises(SweepConfigError) as info:
        build_config(raw, cores=2)
    assert str(info.value).startswith(key)


def test_unknown_backend_error_lists_known_ones():
    with pytest.raises(SweepConfigError) as info:
        build_config({"backends": ["mpq", "kafkaesque"]}, cores=2)
    for name in BACKENDS:
        assert name in str(info.value)


def test_missing_optional_backend_is_skipped_with_a_warning(monkeypatch):
    class NotInstalled(BACKENDS["faster-fifo"]):
        @classmethod
        def available(cls):
            return False, "faster-fifo is not installed; pip install faster-fifo"

    monkeypatch.setitem(BACKENDS, "faster-fifo", NotInstalled)
    warnings = []
    cfg = build_config({"backends": ["mpq", "faster-fifo"]}, cores=2, warn=warnings.append)
    assert cfg.backends == ["mpq"]
    assert "faster-fifo" in cfg.skipped_backends
    assert warnings and "skipping backend faster-fifo" in warnings[0]


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(SweepConfigError, match="cannot read sweep file"):
        load_sweep_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("backends = [mpq\n")
    with pytest.raises(SweepConfigError, match="not valid TOML"):
        load_sweep_file(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text('backends = ["mpq"]\nconsumer = [1]\n')
    with pytest.raises(SweepConfigError, match="unknown key 'consumer'"):
        load_sweep_file(typo)


def test_count_expressions():
    cfg = build_config(
        {"backends": ["mpq"], "consumers": [1, "cores/2", "cores", "2*cores", "cores*3"]}, cores=8
    )
    assert cfg.consumers == [1, 4, 8, 16, 24]
    cfg = build_config(
        {"backends": ["mpq"], "consumers": [1, 64, "2*cores"], "consumers_max": "2*cores"}, cores=2
    )
    assert cfg.consumers == [1, 4]


# -- results files -------------------------------------------------------------


def test_runs_writer_drops_a_half_written_line(tmp_path):
    row = {k: "" for k in COLUMNS}
    row.update(cell_id="a", repeat=0, status="ok")
    with RunsWriter(tmp_path) as w:
        w.append(row)
    with open(tmp_path / "runs.csv", "a") as f:
        f.write("b,1,half-a-li")  # the sweep died mid-write
    assert [r["cell_id"] for r in read_runs(tmp_path)] == ["a"]
    with RunsWriter(tmp_path) as w:
        w.append(dict(row, cell_id="c"))
    assert [r["cell_id"] for r in read_runs(tmp_path)] == ["a", "c"]


# -- end to end ----------------------------------------------------------------


def _check_result_dir(out: Path, expected_rows: int) -> list[dict]:
    with open(out / "runs.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        body = list(reader)
    assert header == list(COLUMNS)
    assert len(body) == expected_rows
    rows = read_runs(out)
    assert all(r["schema_version"] == str(SCHEMA_VERSION) for r in rows)
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert all(r["lost"] == "0" and r["duplicated"] == "0" for r in rows)
    meta = json.loads((out / "meta.json").read_text())
    assert set(META_KEYS) <= set(meta)
    assert meta["finished_utc"] is not None
    assert meta["cpu_count_logical"] >= 1
    assert meta["calibration"]["iterations_per_us"] > 0
    assert meta["pyperf"].get("perf_version")
    bench = json.loads((out / "bench.json").read_text())
    assert len(bench["benchmarks"]) == len({r["cell_id"] for r in rows if r["load"] == "closed"})
    assert not (out / ".work").exists()
    return rows


@pytest.mark.timeout(90)
def test_tiny_sweep_end_to_end_and_pyperf_compare(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["sweep", *TINY, "--repeat", "2", "--out", str(a)]) == 0
    rows = _check_result_dir(a, expected_rows=2)
    assert [int(r["repeat"]) for r in rows] == [0, 1]
    assert leaked_children() == []
    # The CPU's speed was sampled before the first cell, for the report.
    speed = json.loads((a / "meta.json").read_text())["machine_speed"]
    assert speed["samples"] >= 5 and speed["ns_per_iteration"]["median"] > 0
    assert main(["sweep", *TINY, "--repeat", "1", "--out", str(b)]) == 0
    _check_result_dir(b, expected_rows=1)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyperf",
            "compare_to",
            str(a / "bench.json"),
            str(b / "bench.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # pyperf read our values: the means it prints are the mean seconds per
    # event (1 / events_per_s) of each set's repeats, to its 3 digits.
    printed = re.search(r"\[\S*a/bench.json\] ([\d.]+) (\w+).*-> \[\S*b/bench.json\] ([\d.]+) (\w+)",
                        out.stdout)
    assert printed, out.stdout
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "sec": 1.0}
    for value, suffix, rows_ in ((printed[1], printed[2], rows), (printed[3], printed[4], read_runs(b))):
        mean = sum(1 / float(r["events_per_s"]) for r in rows_) / len(rows_)
        assert float(value) * unit[suffix] == pytest.approx(mean, rel=0.01)


@pytest.mark.timeout(90)
def test_interrupted_sweep_resumes_without_redoing_cells(tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable, "-m", "bench", "sweep", *TINY,
        "--backends", "mpq-batch,mpq", "--repeat", "2", "--out", str(out),
    ]  # fmt: skip
    # The sweep gets SIGINT's default action whatever this process inherited:
    # a shell runs a background job (`python3 dev.py test &`) with SIGINT
    # ignored, the child inherits that across exec, Python then installs no
    # KeyboardInterrupt handler, and the interrupt below would do nothing.
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # Interrupt once the first row is on disk (a condition, polled).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = out / "runs.csv"
            if runs.exists() and runs.read_text().count("\n") >= 2:
                break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        else:
            pytest.fail("the sweep wrote no row in 60 s")
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, log
    assert "--resume" in log
    before = read_runs(out)
    assert 1 <= len(before) < 4
    assert json.loads((out / "meta.json").read_text())["finished_utc"] is None

    assert main(["sweep", "--resume", str(out), "--no-progress"]) == 0
    rows = _check_result_dir(out, expected_rows=4)
    keys = [(r["cell_id"], r["repeat"]) for r in rows]
    assert len(set(keys)) == 4, "a cell ran twice"
    assert rows[: len(before)] == before, "finished rows were redone or rewritten"
    assert leaked_children() == []


def test_resume_refuses_new_axes(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path), "--consumers", "4"]) == 2
    assert "--consumers" in capsys.readouterr().err


# -- CLI -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sweep", "--backends", "nope"], "known backends: turbo, turbo-many, mpq, mpq-batch, faster-fifo"),
        (["sweep", "--consumers", "0"], "consumers: must be positive"),
        (["sweep", "--repeat", "0"], "repeat: must be positive"),
        (["sweep", "--sweep", "/nonexistent/sweep.toml"], "cannot read sweep file"),
    ],
)
def test_cli_bad_input_exits_2_with_a_clear_message(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_cli_rejects_an_empty_axis(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--batch-sizes", ""])
    assert info.value.code == 2
    assert "--batch-sizes" in capsys.readouterr().err


def test_cli_existing_results_need_resume(tmp_path, capsys):
    (tmp_path / "runs.csv").write_text("x\n")
    assert main(["sweep", *TINY, "--out", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_cli_delegates_and_reports_missing_modules(monkeypatch, capsys):
    from bench import cli

    monkeypatch.setitem(cli.DELEGATED, "chaos", ("bench.no_such_module", "x"))
    assert main(["chaos", "--anything"]) == 2
    assert "not available" in capsys.readouterr().err


def test_cli_delegates_argv_untouched(monkeypatch, tmp_path):
    module = tmp_path / "bench_fake_report.py"
    module.write_text("seen = []\ndef main(argv):\n    seen.append(argv)\n    return 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from bench import cli

    monkeypatch.setitem(cli.DELEGATED, "report", ("bench_fake_report", "x"))
    assert main(["report", "some/dir", "--flag"]) == 7
    import bench_fake_report

    assert bench_fake_report.seen == [["some/dir", "--flag"]]


def test_cli_backends_and_calibrate(capsys):
    assert main(["backends"]) == 0
    listing = capsys.readouterr().out
    for name in BACKENDS:
        assert name in listing
    assert main(["calibrate", "--work-us", "0,5"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["iterations_per_us"] > 0 and "busy:5" in cal["measured_us"]
    assert cal["cpu_count_logical"] == os.cpu_count()
    assert main(["calibrate", "--watch", "0.3"]) == 0
    watch = json.loads(capsys.readouterr().out)
    q = watch["ns_per_iteration"]
    assert watch["samples"] >= 3 and 0 < q["min"] <= q["p10"] <= q["median"] <= q["p90"] <= q["max"]
    assert main(["calibrate", "--watch", "0"]) == 2
    assert "--watch" in capsys.readouterr().err


def test_the_speed_summary_counts_the_samples_of_another_speed():
    from bench.measuring.work import speed_summary

    # A machine that runs at one of two speeds, as the 2-core VM does.
    two = speed_summary([11.0] * 3 + [19.0] * 7)
    assert two["ns_per_iteration"]["median"] == 19.0 and two["ns_per_iteration"]["p10"] == 11.0
    assert two["share_off_median_by_10pct"] == 0.3 and two["max_over_min"] == 19.0 / 11.0
    assert speed_summary([10.0, 10.5, 9.8])["share_off_median_by_10pct"] == 0.0


def test_auto_buffer_bound_follows_the_cell():
    from bench.measuring.cell import buffer_bound

    cfg = build_config({"backends": ["turbo", "mpq"], "consumers": [1, 2], "batch_sizes": [10, 1000],
                        "max_buffered_events": "auto"}, cores=2)
    assert cfg.max_buffered_events == "auto"
    bounds = {(c.backend, c.consumers, c.batch_size): buffer_bound(cfg.max_buffered_events, c)
              for c in plan_cells(cfg)}
    # Two messages per consumer, at least 64 events each, for every backend alike.
    assert bounds[("turbo", 2, 1000)] == 4000
    assert bounds[("turbo", 1, 10)] == 128
    assert bounds[("mpq", 2, 1)] == 256
    assert buffer_bound(5000, next(iter(plan_cells(cfg)))) == 5000
    with pytest.raises(SweepConfigError, match="^max_buffered_events"):
        build_config({"backends": ["mpq"], "max_buffered_events": "lots"}, cores=2)


def test_sweep_scenario_flag_routes_kafka_and_refuses_unknown(monkeypatch):
    from bench import cli

    seen = {}
    monkeypatch.setattr(cli, "delegate", lambda command, argv: seen.setdefault(command, argv) and 0)
    assert cli.main(["sweep", "--scenario", "kafka", "--consumers", "2", "--events", "100"]) == 0
    assert seen["kafka"] == ["--consumers", "2", "--events", "100"]
    assert cli._pop_scenario(["sweep", "--scenario=queue", "--repeat", "1"]) == ("queue", ["sweep", "--repeat", "1"])
    with pytest.raises(SystemExit, match="known scenarios: queue, kafka"):
        cli.main(["sweep", "--scenario", "redis"])


def test_read_runs_accepts_a_scenario_s_trailing_columns(tmp_path):
    header = [*COLUMNS, "scenario", "consumer_lag"]
    row = {k: "" for k in header}
    row.update(cell_id="kafka-turbo", repeat="0", scenario="kafka")
    with open(tmp_path / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerow(row)
    rows = read_runs(tmp_path)
    assert rows[0]["scenario"] == "kafka"
    # A file whose columns are not the schema's (prefix either way) is refused.
    with open(tmp_path / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["repeat", "cell_id"])
        w.writeheader()
        w.writerow({"repeat": "0", "cell_id": "x"})
    with pytest.raises(ValueError, match="columns do not match"):
        read_runs(tmp_path)


# -- open-loop cells and --pin ---------------------------------------------------


def test_open_loop_cells_are_planned_after_their_closed_twin():
    cfg = build_config({"backends": ["turbo", "mpq"], "batch_sizes": [10, 1000],
                        "rates": [2000], "rate_fractions": [0.5, 0.25],
                        "open_loop_batch_sizes": [1000]}, cores=2)
    ids = [c.cell_id for c in plan_cells(cfg)]
    # Closed cells keep the ids they always had; open ones add their load.
    assert "turbo-fork-p1-c1-b10-w0-busy-e300" in ids
    assert not any(i.startswith("turbo-fork-p1-c1-b10-") and i.endswith(("rate2000", "0.5"))
                   for i in ids), "batch 10 is not in open_loop_batch_sizes"
    for suffix in ("-rate2000", "-frac0.25", "-frac0.5"):
        assert f"turbo-fork-p1-c1-b1000-w0-busy-e300{suffix}" in ids
        assert f"mpq-fork-p1-c1-b1-w0-busy-e300{suffix}" in ids  # unbatched: any batch size
    assert len(ids) == len(set(ids))
    only_turbo = build_config({"backends": ["turbo", "mpq"], "rates": [2000],
                               "open_loop_backends": ["turbo"]}, cores=2)
    assert [c.cell_id for c in plan_cells(only_turbo) if c.open_loop] == [
        "turbo-fork-p1-c1-b1000-w0-busy-e300-rate2000"]
    # A file's open-loop part narrowed away by --backends: a warning; asked
    # for on the command line: an error naming the key to set.
    raw = {"backends": ["turbo"], "rates": [2000], "open_loop_backends": ["turbo"]}
    warnings: list = []
    cfg = build_config(raw, {"backends": ["mpq"]}, cores=2, warn=warnings.append)
    assert not any(c.open_loop for c in plan_cells(cfg)) and "no open-loop cells" in warnings[0]
    with pytest.raises(SweepConfigError, match="^open_loop_backends"):
        build_config(raw, {"backends": ["mpq"], "rates": [500]}, cores=2)


def test_a_repeat_runs_each_load_s_batch_sizes_back_to_back_in_an_order_drawn_for_it():
    # The report sets batch sizes side by side at one load (auto against the
    # best fixed size): those cells run together, closed-loop ones first,
    # and no batch size (nor consumer count) always runs first or last.
    cfg = build_config({"backends": ["turbo", "mpq-batch"], "batch_sizes": [100, 1000, "auto"],
                        "consumers": [1, 2], "rates": [2000], "rate_fractions": [0.5]}, cores=2)
    cells = plan_cells(cfg)
    firsts, lasts = set(), set()
    for seed in range(30):
        order = repeat_order(cells, cfg.backends, random.Random(seed))
        assert sorted(c.cell_id for c in order) == sorted(c.cell_id for c in cells)
        place = {c.cell_id: i for i, c in enumerate(order)}
        blocks = [(c.consumers, c.load) for c in order]
        starts = [b for i, b in enumerate(blocks) if i == 0 or blocks[i - 1] != b]
        assert len(starts) == len(set(starts)) == 2 * 3, starts  # each (consumers, load) in one run
        for c in order:
            if c.open_loop:  # after its closed-loop twin
                assert place[c.cell_id.rsplit("-", 1)[0]] < place[c.cell_id]
        for block in set(starts):
            sizes = [c.batch_size for c in order if (c.consumers, c.load) == block]
            runs = [b for i, b in enumerate(sizes) if i == 0 or sizes[i - 1] != b]
            assert len(runs) == len(set(runs)), sizes  # a batch size's backends back to back
        firsts.add((order[0].batch_size, order[0].consumers))
        lasts.add((order[-1].batch_size, order[-1].consumers))
    assert {b for b, _c in firsts} == {b for b, _c in lasts} == {100, 1000, "auto"}
    assert {c for _b, c in firsts} == {c for _b, c in lasts} == {1, 2}  # no setting always last


def _fake_run_cell(eps_by_id, calls):
    """A run_cell that measures nothing: closed cells get eps_by_id's events/s
    (None: the cell fails), open ones echo their offered rate."""
    from bench.measuring.cell import empty_row

    def fake(cell, run, calibration, repeat=0, offered_rate=None):
        calls.append((cell.cell_id, repeat, offered_rate))
        row = empty_row(cell, repeat, "2026-01-01T00:00:00+00:00", run)
        row["load"] = cell.load
        eps = eps_by_id.get(cell.cell_id, 1000.0) if not cell.open_loop else offered_rate
        if eps is None:
            row.update(status="failed", error="consumer 0 failed: boom")
        else:
            row.update(status="ok", events_per_s=eps, offered_rate=offered_rate or "", valid=True)
            if cell.open_loop:
                # A carried open-loop cell is limited by its offered rate, by design.
                row.update(bottleneck="producers", saturated=False)
        return row, {}

    return fake


def test_fraction_cells_take_the_median_of_their_twin_so_far_and_fail_with_it(tmp_path, monkeypatch):
    from bench.measuring import sweep

    ok_id, bad_id = "mpq-batch-fork-p1-c1-b100-w0-busy-e300", "mpq-batch-fork-p1-c2-b100-w0-busy-e300"
    measured = iter([1000.0, 3000.0, 8000.0])
    eps = {bad_id: None}
    calls: list = []
    fake = _fake_run_cell(eps, calls)

    def varying(cell, run, calibration, repeat=0, offered_rate=None):
        if cell.cell_id == ok_id:
            eps[ok_id] = next(measured)
        return fake(cell, run, calibration, repeat, offered_rate)

    monkeypatch.setattr(sweep, "run_cell", varying)
    monkeypatch.setattr(sweep, "calibrate", lambda *a, **k: {"iterations_per_us": 1.0})
    monkeypatch.setattr(sweep.res, "write_pyperf", lambda *a, **k: None)
    cfg = build_config({"backends": ["mpq-batch"], "consumers": [1, 2], "batch_sizes": [100],
                        "rate_fractions": [0.5], "repeat": 3}, cores=2)
    outcome = sweep.run_sweep(cfg, tmp_path / "out", progress=False, say=lambda m: None)
    assert outcome.failed == 6  # the failing closed cell and its fraction cell, 3 repeats each
    offered = [rate for cid, _, rate in calls if cid == ok_id + "-frac0.5"]
    # Repeat r: half the median of the twin's repeats 0..r (its own run first).
    assert offered == [500.0, 1000.0, 1500.0]
    order = [cid for cid, r, _ in calls if r == 0]
    assert order.index(ok_id + "-frac0.5") > order.index(ok_id)
    rows = read_runs(tmp_path / "out")
    bad_frac = [r for r in rows if r["cell_id"] == bad_id + "-frac0.5"]
    assert len(bad_frac) == 3 and all(r["status"] == "failed" for r in bad_frac)
    assert all("consumer 0 failed: boom" in r["error"] and bad_id in r["error"] for r in bad_frac)
    # Not run at all: a fraction of a failed measurement is no rate.
    assert not any(cid == bad_id + "-frac0.5" for cid, _, _ in calls)


def test_a_resumed_sweep_resolves_fractions_from_the_rows_on_disk(tmp_path, monkeypatch):
    from bench.measuring.schedule import RateResolver

    rows = [{"cell_id": "x", "load": "closed", "status": "ok", "events_per_s": "4000"},
            {"cell_id": "x", "load": "closed", "status": "ok", "events_per_s": "2000"},
            {"cell_id": "x", "load": "frac:0.5", "status": "ok", "events_per_s": "10"},
            {"cell_id": "y", "load": "closed", "status": "timeout", "events_per_s": "",
             "error": "timed out after 60s"}]
    resolver = RateResolver(rows)
    assert resolver.resolve("frac:0.5", "x") == (1500.0, "")
    assert resolver.resolve("rate:700", "y") == (700.0, "")
    rate, why = resolver.resolve("frac:0.5", "y")
    assert rate is None and "timed out after 60s" in why
    assert "has not run yet" in resolver.resolve("frac:0.5", "z")[1]


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"backends": ["mpq"], "rates": [0]}, "rates"),
        ({"backends": ["mpq"], "rates": ["fast"]}, "rates"),
        ({"backends": ["mpq"], "rate_fractions": [-0.5]}, "rate_fractions"),
        ({"backends": ["mpq"], "rate_fractions": []}, "rate_fractions"),
        ({"backends": ["mpq"], "open_loop_batch_sizes": [100]}, "open_loop_batch_sizes"),
        ({"backends": ["mpq"], "rates": [10], "open_loop_backends": ["kafka"]}, "open_loop_backends"),
        ({"backends": ["mpq"], "pin": "yes"}, "pin"),
    ],
)
def test_bad_open_loop_values_name_their_key(raw, key):
    with pytest.raises(SweepConfigError) as info:
        build_config(raw, cores=2)
    assert str(info.value).startswith(key)


def test_cli_open_loop_and_pin_flags_and_the_reproduce_command_round_trip():
    from bench.cli import _sweep_config, build_parser
    from bench.presenting.machine import reproduce_command

    args = build_parser().parse_args(["sweep", "--backends", "turbo", "--rate", "2000,500",
                                      "--rate-fractions", "0.25", "--pin", "--calibrate", "once"])
    cfg = _sweep_config(args, warn=lambda m: None)
    assert cfg.rates == [500.0, 2000.0] and cfg.rate_fractions == [0.25] and cfg.pin is True
    assert cfg.calibrate == "once"
    cmd, _ = reproduce_command({"sweep": cfg.to_dict()})
    again = _sweep_config(build_parser().parse_args(cmd.split()[3:]), warn=lambda m: None)
    assert (again.rates, again.rate_fractions, again.pin) == (cfg.rates, cfg.rate_fractions, True)
    assert again.calibrate == "once"
    assert _sweep_config(build_parser().parse_args(["sweep"]), warn=lambda m: None).calibrate == "round"
    assert [c.cell_id for c in plan_cells(again)] == [c.cell_id for c in plan_cells(cfg)]
    off = build_parser().parse_args(["sweep", "--pin", "false"])
    assert off.pin is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sweep", "--pin", "maybe"])


@pytest.mark.timeout(90)
def test_tiny_open_loop_sweep_end_to_end(tmp_path):
    out = tmp_path / "open"
    # quick.toml (the base of TINY) gives turbo open-loop cells only.
    assert main(["sweep", *TINY, "--rate", "2000", "--open-loop-backends", "mpq-batch", "--pin",
                 "--repeat", "1", "--out", str(out)]) == 0
    rows = _check_result_dir(out, expected_rows=2)
    closed, rate = rows
    assert closed["load"] == "closed" and closed["offered_rate"] == ""
    assert rate["cell_id"] == closed["cell_id"] + "-rate2000"
    assert float(rate["offered_rate"]) == 2000 and rate["saturated"] == "False"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["pin"] is True and meta["sweep"]["rates"] == [2000.0]
    assert {r["pinned"] for r in rows} <= {"True", "False"}
    # bench.json holds the closed-loop cell only (an offered rate is no speed):
    # _check_result_dir counted its benchmarks against the closed cells.


def test_extra_repeats_go_to_closed_loop_cells_only(tmp_path, monkeypatch):
    from bench.measuring import sweep

    calls: list = []
    closed = "mpq-batch-fork-p1-c1-b100-w0-busy-e300"
    eps: dict = {}
    fake = _fake_run_cell(eps, calls)
    noisy = iter([1000.0, 3000.0, 1000.0, 3000.0])

    def varying(cell, run, calibration, repeat=0, offered_rate=None):
        # The closed cell's repeats spread far past the noise threshold.
        if not cell.open_loop:
            eps[closed] = next(noisy)
        return fake(cell, run, calibration, repeat, offered_rate)

    monkeypatch.setattr(sweep, "run_cell", varying)
    monkeypatch.setattr(sweep, "calibrate", lambda *a, **k: {"iterations_per_us": 1.0})
    monkeypatch.setattr(sweep.res, "write_pyperf", lambda *a, **k: None)
    cfg = build_config({"backends": ["mpq-batch"], "batch_sizes": [100], "rates": [1000],
                        "repeat": 2, "max_repeats": 3}, cores=2)
    sweep.run_sweep(cfg, tmp_path / "out", progress=False, say=lambda m: None)
    runs = {}
    for cid, _, _ in calls:
        runs[cid] = runs.get(cid, 0) + 1
    # An open-loop cell's events/s is its offered rate: its spread says
    # nothing, so it keeps its planned repeats.
    assert runs == {closed: 3, closed + "-rate1000": 2}


def _numbered_calibrations(monkeypatch, sweep):
    """Patch the sweep's calibrate: the n-th call returns a calibration marked n."""
    made: list[int] = []

    def numbered(*a, **k):
        made.append(len(made))
        return {"iterations_per_us": 1.0, "n": made[-1], "measured_us": {}}

    monkeypatch.setattr(sweep, "calibrate", numbered)
    return made


@pytest.mark.parametrize("mode", ["round", "once"])
def test_every_round_runs_and_is_checked_against_its_own_calibration(tmp_path, monkeypatch, mode):
    from bench.measuring import sweep

    made = _numbered_calibrations(monkeypatch, sweep)
    seen: list = []
    fake = _fake_run_cell({}, [])

    def recording(cell, run, calibration, repeat=0, offered_rate=None):
        seen.append((repeat, calibration["n"]))
        return fake(cell, run, calibration, repeat, offered_rate)

    monkeypatch.setattr(sweep, "run_cell", recording)
    monkeypatch.setattr(sweep.res, "write_pyperf", lambda *a, **k: None)
    cfg = build_config({"backends": ["mpq-batch", "mpq"], "batch_sizes": [100], "repeat": 3,
                        "calibrate": mode}, cores=2)
    sweep.run_sweep(cfg, tmp_path / "out", progress=False, say=lambda m: None)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert len(seen) == 6  # 2 cells x 3 repeats
    if mode == "round":
        # Round r ran calibration r (round 0: the one made at the start),
        # every cell of a round the same one.
        assert sorted(set(seen)) == [(0, 0), (1, 1), (2, 2)]
        assert made == [0, 1, 2]
        assert {r: c["n"] for r, c in meta["calibrations"].items()} == {"1": 1, "2": 2}
    else:
        assert {n for _, n in seen} == {0} and made == [0]
        assert meta["calibrations"] == {}
    assert meta["calibration"]["n"] == 0 and meta["sweep"]["calibrate"] == mode


def test_a_resumed_round_keeps_the_calibration_it_started_with(tmp_path, monkeypatch):
    from bench.measuring import sweep

    made = _numbered_calibrations(monkeypatch, sweep)
    seen: list = []
    fake = _fake_run_cell({}, [])
    interrupt = {"at": (1, 1)}  # the second cell of round 1

    def stopping(cell, run, calibration, repeat=0, offered_rate=None):
        at_round = [r for r, _ in seen].count(repeat)
        if interrupt["at"] == (repeat, at_round):
            interrupt["at"] = None
            raise KeyboardInterrupt
        seen.append((repeat, calibration["n"]))
        return fake(cell, run, calibration, repeat, offered_rate)

    monkeypatch.setattr(sweep, "run_cell", stopping)
    monkeypatch.setattr(sweep.res, "write_pyperf", lambda *a, **k: None)
    cfg = build_config({"backends": ["mpq-batch", "mpq"], "batch_sizes": [100], "repeat": 3}, cores=2)
    out = tmp_path / "out"
    outcome = sweep.run_sweep(cfg, out, progress=False, say=lambda m: None)
    assert outcome.interrupted and seen == [(0, 0), (0, 0), (1, 1)]
    sweep.run_sweep(None, out, resume=True, progress=False, say=lambda m: None)
    # Round 1's last cell ran the loop its round began with, not a new one;
    # round 2, not begun before the interruption, calibrated as it started.
    assert seen == [(0, 0), (0, 0), (1, 1), (1, 1), (2, 2), (2, 2)]
    assert made == [0, 1, 2]
    rows = read_runs(out)
    assert sorted((r["cell_id"], int(r["repeat"])) for r in rows) == sorted(
        {(r["cell_id"], int(r["repeat"])) for r in rows})
    assert len(rows) == 6
