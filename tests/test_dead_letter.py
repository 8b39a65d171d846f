"""Poison batches: the delivery count in the name, the dead/ state, requeue, peek, run_worker."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
from array import array

import _load_workers as lw
import _workers as w
import pytest

import turbo_queue
from turbo_queue import _batch, _naming

pytestmark = [pytest.mark.usefixtures("reap_children"), pytest.mark.timeout(60)]

CTX = multiprocessing.get_context("forkserver")
POISON = "poison"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "turbo_queue", *map(str, args)], capture_output=True, text=True,
                          timeout=30, env=w.app_env(), cwd=w.REPO)


def poisoned_queue(qpath, max_deliveries=3) -> turbo_queue.Queue:
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=None, max_deliveries=max_deliveries,
                          recover_interval=100)
    with q.producer() as p:
        p.put_many(range(6))
        p.put_many([6, POISON, 8])
        p.put_many(range(9, 15))
    return q


def handle_all(q: turbo_queue.Queue) -> tuple[list, int]:
    """Consume until drained, raising on the poison item; returns (items handled, failures)."""
    done, failures = [], 0
    with q.consumer() as c:
        while True:
            try:
                with c.batch(timeout=0) as items:
                    if POISON in items:
                        raise ValueError(f"cannot handle {POISON!r}")
                    done.extend(items)
            except ValueError:
                failures += 1
            except (turbo_queue.Empty, turbo_queue.Closed):
                return done, failures


def test_names_without_a_delivery_count_parse_as_zero():
    owner = _naming.make_owner()
    old = f"r_{10**18:020d}_{1:012d}_5_{owner}.tqb"
    parsed = _naming.parse_batch_name(old)
    assert parsed.deliveries == 0 and parsed.name() == old  # written back unchanged
    counted = parsed.with_deliveries(4)
    assert counted.name() == old.replace(".tqb", "_d4.tqb")
    assert _naming.parse_batch_name(counted.name()) == counted
    assert sorted([counted.name(), old]) == sorted([old, counted.name()])  # seal order decides, not the count
    assert _naming.parse_claimed_name(_naming.claimed_name(owner, counted.name())).ready_name == counted.name()


def test_poison_batch_is_dead_lettered_while_the_rest_flows_then_requeued(qpath, caplog):
    q = poisoned_queue(qpath)
    with caplog.at_level(logging.WARNING, logger="turbo_queue"):
        done, failures = handle_all(q)
    assert sorted(done) == [i for i in range(15) if i not in (6, 7, 8)]  # each once, the rest flowed
    assert failures == 3  # max_deliveries tries, then never delivered again
    assert w.queue_files(qpath) == []
    [dead] = [n for n in os.listdir(qpath / "dead") if n.endswith(".tqb")]
    assert dead.startswith("d_") and dead.endswith("_d3.tqb")
    assert (qpath / "dead" / (dead + ".err")).read_text().strip() == "ValueError: cannot handle 'poison'"
    assert q.stats()["dead"] == {"batches": 1, "events": 3}
    warnings = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert dead in warnings[0].getMessage() and "cannot handle 'poison'" in warnings[0].getMessage()
    assert turbo_queue.read_batch(qpath / "dead" / dead) == [6, POISON, 8]
    # Fixed the handler: requeue, count reset, delivered again.
    assert q.requeue_dead() == 1
    assert os.listdir(qpath / "dead") == []
    [ready] = w.queue_files(qpath)
    assert _naming.parse_batch_name(ready).deliveries == 0
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == [6, POISON, 8]
    assert q.stats()["dead"] == {"batches": 0, "events": 0}


def test_unlimited_deliveries_by_default(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None)
    with q.producer() as p:
        p.put_many([POISON, 1])
    with q.consumer() as c:
        for _ in range(12):
            with pytest.raises(ValueError), c.batch(timeout=0):
                raise ValueError
    [ready] = w.queue_files(qpath)
    assert ready.endswith("_d12.tqb") and not (qpath / "dead").exists()


def test_count_survives_consumer_deaths_and_recovery(qpath):
    """A batch that kills its consumer every time (counted by recovery, in the name) is dead after
    max_deliveries, even when the recoveries are made by a process that does not know the setting."""
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None, max_deliveries=2, recover_interval=100)
    with q.producer() as p:
        p.put_many([POISON, 1, 2, 3])
    for k in range(2):
        marker = qpath.parent / f"m{k}"
        proc = CTX.Process(target=lw.claim_report_hang, args=(q, str(marker)), daemon=True)
        proc.start()
        got = w.wait_for(lambda marker=marker: marker.exists() and w.read_result(marker), what="claim")
        assert got["items"] == [POISON, 1]
        proc.kill()
        proc.join(10)
        proc = run_cli("recover", qpath)  # no max_deliveries there: only counts
        assert proc.returncode == 0, proc.stderr
    assert w.queue_files(qpath)[0].endswith("_d2.tqb")
    with q.consumer() as c:  # this one has the setting: dead-letters it at the claim
        assert c.get_batch(timeout=0) == [2, 3]
    assert q.stats()["dead"] == {"batches": 1, "events": 2}
    [err] = [n for n in os.listdir(qpath / "dead") if n.endswith(".err")]
    assert "delivered 2 times" in (qpath / "dead" / err).read_text()


def test_cli_status_peek_and_requeue(qpath):
    q = poisoned_queue(qpath, max_deliveries=1)
    handle_all(q)
    with q.producer() as p:
        p.put_many(["a", "b", "c"])
    proc = run_cli("status", qpath)
    assert proc.returncode == 0, proc.stderr
    assert [line.split() for line in proc.stdout.splitlines() if line.startswith("dead")] == [["dead", "1", "3"]]
    proc = run_cli("status", qpath, "--json")
    assert json.loads(proc.stdout)["dead"] == {"batches": 1, "events": 3}

    before = sorted(os.listdir(qpath)), sorted(os.listdir(qpath / "dead"))
    proc = run_cli("peek", qpath, "--state", "dead", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["state"] == "dead" and info["deliveries"] == 1 and info["events"] == 3
    assert info["last_error"] == "ValueError: cannot handle 'poison'"
    assert [x["item"] for x in info["items"]] == [6, POISON, 8]
    assert info["meta"]["serializer"] == "pickle" and info["meta"]["count"] == 3
    proc = run_cli("peek", qpath, info["name"], "-n", "1")  # by name, found in dead/, text output
    assert proc.returncode == 0, proc.stderr
    assert "last error  ValueError: cannot handle 'poison'" in proc.stdout
    assert "[0] 6" in proc.stdout and "[1]" not in proc.stdout
    proc = run_cli("peek", qpath, "--json")  # the oldest ready batch
    assert [x["item"] for x in json.loads(proc.stdout)["items"]] == ["a", "b", "c"]
    assert (sorted(os.listdir(qpath)), sorted(os.listdir(qpath / "dead"))) == before  # nothing changed
    assert run_cli("peek", qpath, "no-such-batch.tqb").returncode == 1

    proc = run_cli("requeue", qpath)
    assert proc.returncode == 0, proc.stderr
    assert "returned 1 dead batch" in proc.stdout
    assert q.stats()["dead"]["batches"] == 0 and q.stats()["ready"]["batches"] == 2


def test_peek_shows_the_item_that_cannot_be_loaded(qpath):
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None, serializer="json")
    with q.producer() as p:
        p.put_many([{"ok": 1}, {"ok": 2}])
    name = w.queue_files(qpath)[0]
    encoded = [b"\xff not json", b"[1]"]
    data = _batch.encode_batch([(0, _batch.lengths_bytes(array("Q", map(len, encoded))), b"".join(encoded))],
                               2, "json", "x-1-0-00000000", 0)
    bad = w.write_batch_file(qpath, _naming.READY, ["?", "?"], w.dead_owner(pid=1), seal_ns=1, data=data)
    proc = run_cli("peek", qpath, bad, "--serializer", "json", "--json")
    info = json.loads(proc.stdout)
    assert "error" in info["items"][0] and info["items"][1] == {"item": [1]}
    assert name in os.listdir(qpath) and bad in os.listdir(qpath)


def test_run_worker_survives_a_poison_batch(tmp_path):
    pytest.importorskip("confluent_kafka")
    from turbo_queue.kafka import run_worker

    a = turbo_queue.Queue(tmp_path / "a", batch_size=3, max_batch_age=None, max_deliveries=2)
    b = turbo_queue.Queue(tmp_path / "b", batch_size=100, max_batch_age=None)
    with a.producer() as p:
        p.put_many([1, 2, 3, 4, POISON, 6, 7, 8, 9])
    a.close()

    def double(x):
        if x == POISON:
            raise ValueError("poison")
        return 2 * x

    done = run_worker(a, b, double, retry_backoff=0.01, batch_timeout=0.1)
    assert done == 6
    assert a.stats()["dead"] == {"batches": 1, "events": 3}
    b.close()
    with b.consumer() as c:
        assert sorted(c) == [2, 4, 6, 14, 16, 18]


def test_a_clean_close_part_way_through_a_batch_is_not_counted(qpath):
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=None, max_deliveries=1)
    with q.producer() as p:
        p.put_many(range(3))
    name = w.queue_files(qpath)[0]
    with q.consumer() as c:
        assert c.get(timeout=0) == 0
    assert w.queue_files(qpath) == [name]  # back whole, under its own name, not dead
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == [0, 1, 2]
