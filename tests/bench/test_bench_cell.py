"""One cell, for real: measurements, failures, timeouts and reaping.

Run with::

    python -m pytest tests/bench/test_bench_cell.py

The failing backends below are real backends with one deliberate defect
each (a consumer that hangs, one that crashes, a producer that drops
events); they are registered for a single test and run in real processes
under fork, so the defect happens in a child exactly as a buggy queue's
would.
"""

from __future__ import annotations

import threading
import time

import pytest

from bench.measuring.backends import BACKENDS
from bench.measuring.backends.mpq_batch import MPQueueBatchBackend, _BatchConsumer, _BatchProducer
from bench.measuring.cell import Cell, CellRun, leaked_children, run_cell
from bench.measuring.work import calibrate
from bench.schema import COLUMNS


@pytest.fixture(scope="module")
def calibration():
    return calibrate((0.0, 20.0), ("busy",), (300,), target_s=0.01)


def _run(tmp_path, **kw):
    defaults = dict(warmup=0.2, duration=0.5, max_buffered_events=2000, timeout=30.0)
    defaults.update(kw)
    return CellRun(workdir=str(tmp_path / "work"), **defaults)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_cell_measures_every_column(name, tmp_path, calibration):
    ok, reason = BACKENDS[name].available()
    if not ok:
        pytest.skip(reason)
    batch = 50 if BACKENDS[name].batched else 1
    cell = Cell(name, "fork", 1, 2, batch, 20.0, "busy", 300)
    row, description = run_cell(cell, _run(tmp_path), calibration, repeat=1)
    assert row["status"] == "ok", row["error"]
    assert set(row) == set(COLUMNS)
    assert row["cell_id"] == f"{name}-fork-p1-c2-b{batch}-w20-busy-e300"
    assert row["repeat"] == 1
    assert row["lost"] == 0 and row["duplicated"] == 0
    assert row["events"] > 0 and row["events_total"] >= row["events"]
    assert row["events_per_s"] == pytest.approx(row["events"] / row["window_s"])
    assert row["consumer_eps_min"] <= row["consumer_eps_max"]
    assert 0 < row["fairness"] <= 1.0 + 1e-9
    assert 0 <= row["cpu_busy_pct"] <= 100
    assert row["consumer_user_s"] > 0
    assert row["latency_samples"] > 0
    assert 0 <= row["latency_p50_ms"] <= row["latency_p99_ms"] <= row["latency_max_ms"]
    assert row["peak_rss_mb"] > 1
    # 20 us per event on at most all cores of the window.
    assert 0 < row["useful_work_fraction"] <= 1.0
    assert description["settings"]["batch_size"] == batch
    assert leaked_children() == []
    assert not any((tmp_path / "work").iterdir()), "the cell's work directory was left behind"


@pytest.mark.timeout(60)
def test_spawn_start_method(tmp_path, calibration):
    cell = Cell("mpq-batch", "spawn", 1, 1, 100, 0.0, "busy", 300)
    row, _ = run_cell(cell, _run(tmp_path), calibration)
    assert row["status"] == "ok", row["error"]
    assert row["lost"] == 0
    assert leaked_children() == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workload", ["parse", "regex", "hash"])
def test_named_workloads(workload, tmp_path):
    cal = calibrate((), (workload,), (300,), target_s=0.01)
    cell = Cell("mpq-batch", "fork", 1, 1, 100, 0.0, workload, 300)
    row, _ = run_cell(cell, _run(tmp_path), cal)
    assert row["status"] == "ok", row["error"]
    assert row["work_cpu_us_per_event"] == pytest.approx(cal["measured_us"][f"{workload}:e300"])


# -- deliberately broken backends -------------------------------------------


class _HangingConsumer(_BatchConsumer):
    def batches(self):
        # A real hang: the process blocks forever and must be killed.
        threading.Event().wait()
        yield from ()


class HangingBackend(MPQueueBatchBackend):
    name = "test-hang"

    def consumer(self, index):
        return _HangingConsumer(self.q)


class _CrashingConsumer(_BatchConsumer):
    def batches(self):
        for n, batch in enumerate(super().batches()):
            if n == 3:
                raise RuntimeError("consumer blew up on purpose")
            yield batch


class CrashingBackend(MPQueueBatchBackend):
    name = "test-crash"

    def consumer(self, index):
        return _CrashingConsumer(self.q)


class _LossyProducer(_BatchProducer):
    def __init__(self, q, batch_size):
        super().__init__(q, batch_size)
        self._n = 0

    def put(self, event):
        self._n += 1
        if self._n % 1000 == 0:
            return  # drop it: the delivery check must notice
        super().put(event)


class LossyBackend(MPQueueBatchBackend):
    name = "test-lossy"

    def producer(self, index):
        return _LossyProducer(self.q, self.settings.batch_size)


@pytest.mark.timeout(60)
def test_a_hung_cell_is_timed_out_killed_and_recorded(tmp_path, calibration, monkeypatch):
    monkeypatch.setitem(BACKENDS, "test-hang", HangingBackend)
    cell = Cell("test-hang", "fork", 1, 2, 10, 0.0, "busy", 300)
    run = _run(tmp_path, warmup=0.1, duration=0.3, timeout=3.0)
    t0 = time.monotonic()
    row, _ = run_cell(cell, run, calibration)
    elapsed = time.monotonic() - t0
    assert row["status"] == "timeout"
    assert "timed out after 3s" in row["error"]
    assert elapsed < 3.0 + 10, "reaping took too long"
    assert leaked_children() == [], "the hung processes were not reaped"


@pytest.mark.timeout(60)
def test_a_crashing_consumer_fails_the_cell_with_its_error(tmp_path, calibration, monkeypatch):
    monkeypatch.setitem(BACKENDS, "test-crash", CrashingBackend)
    cell = Cell("test-crash", "fork", 1, 1, 10, 0.0, "busy", 300)
    row, _ = run_cell(cell, _run(tmp_path), calibration)
    assert row["status"] == "failed", row
    assert "consumer 0 failed: RuntimeError: consumer blew up on purpose" in row["error"], row
    assert leaked_children() == []


@pytest.mark.timeout(60)
def test_lost_events_fail_the_cell(tmp_path, calibration, monkeypatch):
    monkeypatch.setitem(BACKENDS, "test-lossy", LossyBackend)
    cell = Cell("test-lossy", "fork", 1, 1, 100, 0.0, "busy", 300)
    row, _ = run_cell(cell, _run(tmp_path), calibration)
    assert row["status"] == "failed"
    assert "delivery check failed" in row["error"]
    assert row["lost"] > 0
    assert leaked_children() == []


def test_unavailable_backend_is_a_failed_row_not_an_exception(tmp_path, calibration, monkeypatch):
    class Missing(MPQueueBatchBackend):
        name = "test-missing"

        @classmethod
        def available(cls):
            return False, "not installed"

    monkeypatch.setitem(BACKENDS, "test-missing", Missing)
    row, _ = run_cell(
        Cell("test-missing", "fork", 1, 1, 10, 0.0, "busy", 300), _run(tmp_path), calibration
    )
    assert row["status"] == "failed"
    assert "not installed" in row["error"]


@pytest.mark.timeout(60)
def test_work_that_gets_slower_mid_cell_is_marked_invalid(tmp_path, calibration, monkeypatch):
    from bench.measuring.work import TEST_WORK_SCALE_ENV

    # The consumer's work doubles after its first in-cell burst.
    monkeypatch.setenv(TEST_WORK_SCALE_ENV, "2")
    cell = Cell("mpq-batch", "fork", 1, 1, 100, 20.0, "busy", 300)
    row, _ = run_cell(cell, _run(tmp_path), calibration)
    assert row["status"] == "ok", row["error"]
    assert row["valid"] is False
    assert "work drift" in row["invalid_reason"]
    assert row["work_drift_pct"] > 10
    assert row["bottleneck"] in ("producers", "consumers", "queue", "machine")
    assert isinstance(row["usable_cores"], int) and row["usable_cores"] >= 1
