"""``python -m turbo_queue status|watch|recover PATH``."""

from __future__ import annotations

import json
import subprocess
import sys

import _workers as w
import pytest

import turbo_queue
from turbo_queue import _naming

pytestmark = [pytest.mark.usefixtures("reap_children"), pytest.mark.timeout(60)]


def run_cli(*args, timeout=30):
    proc = subprocess.run([sys.executable, "-m", "turbo_queue", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=w.app_env(), cwd=w.REPO)
    return proc


@pytest.fixture
def busy_queue(tmp_path):
    """4 ready batches (7 events), 1 claimed (2 events), closed."""
    q = turbo_queue.Queue(tmp_path / "q", batch_size=2, max_batch_age=None)
    with q.producer() as p:
        p.put_many(range(9))
    c = q.consumer()
    c.get_batch(timeout=0)
    q.close()
    yield q
    c.close()


def test_status(busy_queue):
    proc = run_cli("status", busy_queue.path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert str(busy_queue.path) in out and "(closed)" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["ready"] == ["4", "7"]
    assert lines["claimed"] == ["1", "2"]
    assert lines["loading"] == ["0", "0"]
    assert "oldest ready batch" in out


def test_status_json(busy_queue):
    proc = run_cli("status", busy_queue.path, "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["path"] == str(busy_queue.path)
    assert stats["ready"] == {"batches": 4, "events": 7}
    assert stats["claimed"] == {"batches": 1, "events": 2}
    assert stats["closed"] is True
    assert stats["aside"] == 0
    assert stats["oldest_ready_age_s"] >= 0
    assert stats == {**busy_queue.stats(), "oldest_ready_age_s": stats["oldest_ready_age_s"]}


def test_status_of_empty_queue(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q")
    proc = run_cli("status", q.path, "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["ready"]["batches"] == 0 and stats["oldest_ready_age_s"] is None
    proc = run_cli("status", q.path)
    assert proc.returncode == 0 and "oldest ready batch: -" in proc.stdout


def test_watch_count_1(busy_queue):
    proc = run_cli("watch", busy_queue.path, "--count", "1", "--interval", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("queue   ") == 1
    assert "ready" in proc.stdout


def test_watch_count_2(busy_queue):
    proc = run_cli("watch", busy_queue.path, "--count", "2", "--interval", "0.01")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("queue   ") == 2


def test_watch_bad_interval(busy_queue):
    proc = run_cli("watch", busy_queue.path, "--count", "1", "--interval", "0")
    assert proc.returncode != 0
    assert "interval" in proc.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_recover_returns_claimed_batch_of_dead_consumer(tmp_path, as_json):
    q = turbo_queue.Queue(tmp_path / "q", batch_size=2)
    with q.producer() as p:
        p.put_many(["a", "b"])
    ready = w.queue_files(q.path)[0]
    (q.path / ready).rename(q.path / _naming.claimed_name(w.dead_owner(), ready))
    assert q.stats()["claimed"]["batches"] == 1
    proc = run_cli("recover", q.path, *(["--json"] if as_json else []))
    assert proc.returncode == 0, proc.stderr
    if as_json:
        report = json.loads(proc.stdout)
        assert report["returned"] == [ready.replace(".tqb", "_d1.tqb")]  # one delivery without an ack
        assert report["sealed"] == [] and report["set_aside"] == [] and report["remote"] == 0
    else:
        assert "returned 1 claimed batch" in proc.stdout
    assert w.queue_files(q.path) == [ready.replace(".tqb", "_d1.tqb")]
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == ["a", "b"]


def test_recover_nothing_to_do(tmp_path):
    q = turbo_queue.Queue(tmp_path / "q")
    proc = run_cli("recover", q.path)
    assert proc.returncode == 0, proc.stderr
    assert "returned 0" in proc.stdout


@pytest.mark.parametrize("command", ["status", "watch", "recover"])
def test_missing_folder(tmp_path, command):
    missing = tmp_path / "nope"
    extra = ["--count", "1"] if command == "watch" else []
    proc = run_cli(command, missing, *extra)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr
    assert not missing.exists()  # the CLI never creates a queue


def test_path_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    proc = run_cli("status", f)
    assert proc.returncode != 0 and str(f) in proc.stderr


def test_no_command():
    proc = run_cli()
    assert proc.returncode != 0
    assert "usage" in proc.stderr.lower()


def test_main_in_process(tmp_path, capsys):
    from turbo_queue.__main__ import main

    q = turbo_queue.Queue(tmp_path / "q", batch_size=1)
    with q.producer() as p:
        p.put(1)
    assert main(["status", str(q.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ready"]["batches"] == 1
