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

from bench.measuring import pinning
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
    # The window's count cannot exceed what the consumers' work allows: each
    # event costs at least its measured work on one of C cores (10% slack
    # for the clock edges).  Counting the whole cell instead of the window,
    # or a window longer than it says, breaks this.
    assert row["events_per_s"] <= cell.consumers * 1e6 / row["work_us_measured"] * 1.1
    assert row["consumer_eps_min"] <= row["consumer_eps_max"]
    assert 0 < row["fairness"] <= 1.0 + 1e-9
    assert 0 <= row["cpu_busy_pct"] <= 100
    assert row["consumer_user_s"] > 0
    assert row["latency_samples"] > 0
    assert 0 <= row["latency_p50_ms"] <= row["latency_p99_ms"] <= row["latency_max_ms"]
    assert row["peak_rss_mb"] > 1
    # Two independent measurements agree: the consumers' CPU time (psutil)
    # covers the work the counted events needed (the timed bursts).
    consumer_cpu_us = (row["consumer_user_s"] + row["consumer_sys_s"]) * 1e6
    assert consumer_cpu_us >= 0.8 * row["events"] * row["work_us_measured"]
    assert row["load"] == "closed" and row["offered_rate"] == "" and row["saturated"] == ""
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


# -- latency and open loop ----------------------------------------------------


@pytest.mark.timeout(60)
def test_closed_loop_latency_includes_the_work(tmp_path, calibration):
    # One event per message and 2 ms of work: an event's end-to-end latency
    # ends after its own work, so it is at least its queue wait plus the
    # work, event by event, and so percentile by percentile.  Half the work:
    # on a loaded machine the busy loop's wall time varies around its mean;
    # stamped before the work, the difference would be a few microseconds.
    cal = calibrate((2000.0,), ("busy",), (300,), target_s=0.01)
    cell = Cell("mpq", "fork", 1, 1, 1, 2000.0, "busy", 300)
    row, _ = run_cell(cell, _run(tmp_path, warmup=0.2, duration=0.6), cal)
    assert row["status"] == "ok", row["error"]
    work_ms = 0.5 * row["work_us_measured"] / 1000
    assert row["latency_p50_ms"] >= row["queue_wait_p50_ms"] + work_ms
    assert row["latency_p99_ms"] >= row["queue_wait_p99_ms"] + work_ms


def _open_run(tmp_path, duration=2.0):
    return _run(tmp_path, warmup=0.5, duration=duration, max_buffered_events="auto")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name, batch", [("turbo", 10), ("mpq", 1)])
def test_an_open_loop_cell_honours_its_offered_rate(name, batch, tmp_path, calibration):
    # 2,000 events/s for 2 s: a rate a loaded 2-core machine carries easily.
    cell = Cell(name, "fork", 1, 1, batch, 0.0, "busy", 300, "rate:2000")
    row, _ = run_cell(cell, _open_run(tmp_path), calibration)
    assert row["status"] == "ok", row["error"]
    assert row["cell_id"] == f"{name}-fork-p1-c1-b{batch}-w0-busy-e300-rate2000"
    assert row["load"] == "rate:2000" and row["offered_rate"] == 2000
    assert 0.95 <= row["achieved_rate_ratio"] <= 1.05, row["events_per_s"]
    assert row["saturated"] is False
    # The producers kept to the schedule: nothing owed at the end, and the
    # median event was made within a few ms of its slot.
    assert row["producer_backlog"] <= 2
    assert row["schedule_lag_p50_ms"] < 5
    assert row["bottleneck"] == "producers"  # the offered rate was the limit, by design
    assert leaked_children() == []


@pytest.mark.timeout(90)
def test_at_a_fixed_low_rate_queue_wait_falls_with_the_batch_size(tmp_path, calibration):
    # At 2,000 events/s a 1000-event batch takes 0.5 s to fill (less than
    # turbo's max_batch_age of 1 s), a 10-event one 5 ms: the fill time
    # sets the wait, about half of it for the median event.
    rows = {}
    for batch in (10, 1000):
        cell = Cell("turbo", "fork", 1, 1, batch, 0.0, "busy", 300, "rate:2000")
        rows[batch], _ = run_cell(cell, _open_run(tmp_path), calibration)
        assert rows[batch]["status"] == "ok", rows[batch]["error"]
        assert rows[batch]["max_batch_age_s"] == 1.0
    big, small = rows[1000]["queue_wait_p50_ms"], rows[10]["queue_wait_p50_ms"]
    assert big > 10 * small, (big, small)
    half_fill_ms = 1000 / 2000 / 2 * 1000
    assert 0.5 * half_fill_ms <= big <= 2 * half_fill_ms + 50
    for row in rows.values():
        assert row["latency_p50_ms"] >= row["queue_wait_p50_ms"]


@pytest.mark.timeout(60)
def test_a_saturated_open_loop_cell_is_marked_and_its_latency_shows_it(tmp_path):
    # One consumer doing 1 ms per event carries at most 1,000 events/s;
    # offered 4,000, the queue's bound fills and blocks the producer, whose
    # events then run late.  Latency is measured from the scheduled time,
    # so the lateness is in it (a stalled producer does not hide it).
    cal = calibrate((1000.0,), ("busy",), (300,), target_s=0.01)
    cell = Cell("mpq-batch", "fork", 1, 1, 10, 1000.0, "busy", 300, "rate:4000")
    row, _ = run_cell(cell, _open_run(tmp_path, duration=1.5), cal)
    assert row["status"] == "ok", row["error"]
    assert row["saturated"] is True
    assert row["achieved_rate_ratio"] < 0.5
    assert row["producer_backlog"] > 1000
    assert row["schedule_lag_p99_ms"] > 100
    assert row["latency_p99_ms"] >= row["schedule_lag_p99_ms"]
    # Saturation by the consumers is a measurement, not a fault of the cell.
    assert "offered rate not offered" not in row["invalid_reason"]
    assert row["bottleneck"] != "producers"


@pytest.mark.timeout(60)
def test_an_open_loop_cell_without_a_rate_fails_with_the_reason(tmp_path, calibration):
    cell = Cell("mpq", "fork", 1, 1, 1, 0.0, "busy", 300, "frac:0.5")
    row, _ = run_cell(cell, _open_run(tmp_path), calibration)
    assert row["status"] == "failed"
    assert "frac:0.5: no offered rate" in row["error"]


# -- pinning ------------------------------------------------------------------


def test_pinning_plan_gives_each_process_its_own_core_or_says_why_not():
    plan = pinning.plan(producers=1, consumers=2, cores=[4, 5, 6, 7], usable=4)
    assert plan.pinned
    assert sorted(plan.children.values()) == [4, 5, 6]  # one core each, none shared
    assert plan.core_of("producer", 0) == 6 and plan.parent == (7,)
    tight = pinning.plan(producers=1, consumers=2, cores=[0, 1], usable=2)
    assert not tight.pinned and "3 producers and consumers, 2 usable cores" in tight.reason
    # A cgroup quota below the affinity counts: 4 cores listed, 2 usable.
    assert not pinning.plan(producers=1, consumers=2, cores=[0, 1, 2, 3], usable=2).pinned


@pytest.mark.timeout(60)
def test_a_pinned_cell_runs_each_child_on_its_own_core(tmp_path, calibration):
    cores = pinning.plan(1, 1)
    if not cores.pinned:
        pytest.skip(cores.reason)
    cell = Cell("mpq-batch", "fork", 1, 1, 100, 0.0, "busy", 300)
    run = CellRun(workdir=str(tmp_path / "work"), warmup=0.2, duration=0.4,
                  max_buffered_events=2000, timeout=30.0, pin=True)
    row, description = run_cell(cell, run, calibration)
    assert row["status"] == "ok", row["error"]
    assert row["pinned"] is True
    assert len(set(description["pinning"].values())) == 2
    # Asked for more processes than there are cores, nothing is pinned.
    many = Cell("mpq-batch", "fork", 1, len(cores.children) + 8, 100, 0.0, "busy", 300)
    row, description = run_cell(many, run, calibration)
    assert row["status"] == "ok", row["error"]
    assert row["pinned"] is False and "not pinned" in description["pinning"]
    assert leaked_children() == []
