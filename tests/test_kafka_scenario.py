"""The Kafka pipeline scenario (bench/scenarios/kafka) end to end, against librdkafka's mock cluster.

A short run of both backends: every preloaded event must come out of the
pipeline exactly once (the scenario's own delivery check reads the output
topic back), and the rows must carry the scenario's columns.  The full run is
``python -m bench sweep --scenario kafka``; it skips where confluent-kafka is
missing, like tests/test_kafka.py.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("reap_children")


def _scenario(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``python -m bench.scenarios.kafka ARGS`` in its own session; on timeout its whole process group
    (mock cluster, stages) is SIGKILLed, so nothing outlives the test."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "bench.scenarios.kafka", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the Kafka scenario did not finish in {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_every_event_through_the_pipeline_once_for_each_backend(tmp_path):
    pytest.importorskip("confluent_kafka", reason="the Kafka scenario needs confluent-kafka (the kafka extra)")
    from bench.scenarios.kafka import ALL_COLUMNS

    events = 3000
    out = tmp_path / "kafka"
    res = _scenario(["--backend", "turbo,mpq-batch", "--consumers", "1", "--work-us", "0",
                     "--events", str(events), "--out", str(out)], timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    with open(out / "runs.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(ALL_COLUMNS)
        rows = list(reader)
    assert sorted(r["backend"] for r in rows) == ["mpq-batch", "turbo"]
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["scenario"] == "kafka" and r["kafka_cluster"] == "mock"
        assert int(r["events_preloaded"]) == events
        # Read back from the output topic by the scenario itself: every key once.
        assert int(r["lost"]) == 0 and int(r["duplicated"]) == 0
        assert int(r["output_messages"]) == events
        assert int(r["events_total"]) == events
        # The window covers the middle of the run, not nothing and not all of it.
        assert 0 < int(r["events"]) < events
        assert float(r["events_per_s"]) > 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kafka"]["cluster"] == "mock"
    assert meta["finished_utc"] and meta["elapsed_s"] > 0 and meta["adaptive"] is None


def test_too_many_events_for_the_mock_cluster_is_refused_before_anything_runs(tmp_path):
    pytest.importorskip("confluent_kafka", reason="the Kafka scenario needs confluent-kafka (the kafka extra)")
    from bench.scenarios.kafka import mock_max_events

    too_many = mock_max_events(300) + 1
    out = tmp_path / "kafka"
    res = _scenario(["--events", str(too_many), "--out", str(out)], timeout=60)
    assert res.returncode == 2
    assert f"--events {too_many} is too many for the mock cluster" in res.stderr
    assert not out.exists()
