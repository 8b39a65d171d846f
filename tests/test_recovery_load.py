"""Recovery under load: paced by time, shared by the consumers of a process, and run at start.

The queue is never closed here: drain detection (which recovers on its own)
never runs, so only the paced recovery can bring a dead consumer's batch back.
"""

from __future__ import annotations

import multiprocessing
import os
import time

import _load_workers as lw
import _workers as w
import pytest

import turbo_queue
from turbo_queue import _naming, _recovery

pytestmark = [pytest.mark.usefixtures("reap_children"), pytest.mark.timeout(90)]

CTX = multiprocessing.get_context("forkserver")


def start(target, *args):
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def test_dead_consumers_batch_returns_while_every_peer_is_busy(tmp_path):
    interval = 0.5
    q = turbo_queue.Queue(tmp_path / "q", batch_size=1, max_batch_age=None, recover_interval=interval)
    with q.producer() as p:
        p.put_many(range(3000))  # 2 peers x 20 ms per item: a minute of backlog, never run out
    stop = str(tmp_path / "stop")
    peers = []
    try:
        for k in range(2):
            started = tmp_path / f"started{k}"
            peers.append(start(lw.busy_consumer, q, stop, str(started), 0.02))
        for k in range(2):
            w.wait_for(lambda k=k: (tmp_path / f"started{k}").exists(), what="peer started")
        marker = tmp_path / "victim"
        victim = start(lw.claim_report_hang, q, str(marker))
        claimed = w.wait_for(lambda: marker.exists() and w.read_result(marker), what="victim claim")["claimed"]
        victim.kill()
        victim.join(10)
        killed = time.monotonic()
        w.wait_for(lambda: not (q.path / claimed).exists(), timeout=30, what="the victim's batch returned",
                   interval=0.01)
        elapsed = time.monotonic() - killed
        ready_left = q.stats()["ready"]["batches"]
    finally:
        open(stop, "w").close()
        for proc in peers:
            proc.join(30)
            if proc.exitcode is None:
                proc.kill()
                proc.join(5)
    assert ready_left > 100, "the peers ran out of work: this would not show recovery under load"
    assert elapsed <= interval + 1.0, f"returned {elapsed:.2f} s after the kill"
    # Back in line with one delivery counted in its name, never under its old name.
    ready = _naming.parse_claimed_name(claimed).ready_name
    assert ready not in os.listdir(q.path)


def test_a_consumer_recovers_when_it_starts(tmp_path):
    """The dead consumer's (older) batch is the first one out, though a younger one is ready."""
    q = turbo_queue.Queue(tmp_path / "q", batch_size=2, max_batch_age=None, recover_interval=100)
    with q.producer() as p:
        p.put_many(["old", "old", "young", "young"])
    older = w.queue_files(q.path)[0]
    os.rename(q.path / older, q.path / _naming.claimed_name(w.dead_owner(), older))
    _recovery.pacer.reset()  # as in a fresh process
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == ["old", "old"]


def test_one_recovery_scan_per_interval_for_all_consumers_of_a_process(tmp_path, monkeypatch):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=1, max_batch_age=None, recover_interval=0.3)
    with q.producer() as p:
        p.put_many(range(400))
    scans = []
    real = _recovery.recover
    monkeypatch.setattr(_recovery, "recover", lambda *a, **k: scans.append(time.monotonic()) or real(*a, **k))
    _recovery.pacer.reset()
    consumers = [q.consumer() for _ in range(4)]
    assert len(scans) == 1  # the first start scans; the others share it
    t0 = time.monotonic()
    for _ in range(25):
        for c in consumers:
            c.get_batch(timeout=0)  # 100 claims
    busy = time.monotonic() - t0
    assert len(scans) <= 1 + busy / 0.3 + 1, "recovery ran more often than once per interval"
    time.sleep(0.35)  # let one interval pass, with every consumer still holding work
    consumers[0].get_batch(timeout=0)
    consumers[1].get_batch(timeout=0)
    assert scans[-1] >= t0 + 0.3 and len([t for t in scans if t > time.monotonic() - 0.3]) == 1
    for c in consumers:
        c.close()


def test_pacer_is_reset_in_a_forked_child(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q", recover_interval=100)
    q.consumer().close()  # this process has scanned: the next scan is 100 s away
    assert not _recovery.pacer.due(str(q.path), 100)
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(wfd, b"1" if _recovery.pacer.due(str(q.path), 100) else b"0")
        os._exit(0)
    os.close(wfd)
    assert os.read(r, 1) == b"1"
    os.close(r)
    os.waitpid(pid, 0)
