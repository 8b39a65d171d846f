"""Faults local to a consumer, failing handlers, dropped and interrupted consumers.

Only a file that is not a batch is set aside; a good batch that this consumer
cannot read (EMFILE, EIO, MemoryError, a module it lacks) goes back to ready
at its place in line and the caller gets BatchReadError.  A handler that
raises never gets its batch acked, last item included.  A consumer that is
dropped or interrupted between claim and hand-over leaves nothing claimed.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import subprocess
import sys
import textwrap

import _workers as w
import pytest

import turbo_queue
from turbo_queue import _consumer, _naming

pytestmark = [pytest.mark.usefixtures("reap_children"), pytest.mark.timeout(60)]


def states(folder) -> dict[str, list[str]]:
    names = w.queue_files(folder)
    return {s: [n for n in names if n.startswith(s)] for s in ("l_", "r_", "c_")}


def filled(qpath, n_batches: int, batch_size: int = 2, **kwargs) -> turbo_queue.Queue:
    q = turbo_queue.Queue(qpath, batch_size=batch_size, max_batch_age=None, recover_interval=100, **kwargs)
    with q.producer() as p:
        p.put_many(range(n_batches * batch_size))
    return q


def run_app(code: str, *args, timeout=30) -> dict:
    """Run ``code`` in a fresh interpreter that imports the turbo_queue this test imports."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(turbo_queue.__file__))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=os.path.dirname(env["PYTHONPATH"]))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- local faults: back to ready, BatchReadError -------------------------------------------------

EMFILE_APP = """
import errno, json, os, resource, sys, turbo_queue
q = turbo_queue.Queue(sys.argv[1], batch_size=1, max_batch_age=None, recover_interval=100)
c = q.consumer()
first = c.get(timeout=0)                     # lists every ready batch, holds the first
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
used = [int(fd) for fd in os.listdir("/proc/self/fd")]
resource.setrlimit(resource.RLIMIT_NOFILE, (max(used) + 1, hard))
filler = []
try:
    while True:
        filler.append(os.open("/dev/null", os.O_RDONLY))
except OSError as exc:
    assert exc.errno == errno.EMFILE
out = {"first": first}
try:
    c.get(timeout=0)                         # acks the first, claims the next: its open() fails
    out["error"] = None
except Exception as exc:
    out["error"] = type(exc).__name__
    out["cause_errno"] = getattr(exc.__cause__, "errno", None)
    out["path"] = exc.path
for fd in filler:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
out["names"] = sorted(n for n in os.listdir(sys.argv[1]) if n.endswith(".tqb"))
out["rest"] = [c.get(timeout=0), c.get(timeout=0)]   # the consumer stays usable, order kept
c.close()
print(json.dumps(out))
"""


def test_out_of_file_descriptors_returns_the_batch_and_raises(qpath):
    q = filled(qpath, 3, batch_size=1)
    names = w.queue_files(qpath)
    out = run_app(EMFILE_APP, qpath)
    assert out["first"] == 0
    assert out["error"] == "BatchReadError" and out["cause_errno"] == errno.EMFILE
    assert out["path"] == str(qpath / names[1])  # named, and back under its own name (not a delivery)
    assert out["names"] == names[1:]  # first acked; the one that failed is ready again, nothing aside
    assert out["rest"] == [1, 2]
    assert not (qpath / "aside").exists()
    assert q.stats()["ready"]["batches"] == 0


MISSING_MODULE_APP = """
import json, sys, turbo_queue
q = turbo_queue.Queue(sys.argv[1], batch_size=2, max_batch_age=None, recover_interval=100)
out = []
with q.consumer() as c:
    for _ in range(3):
        try:
            c.get(timeout=0)
            out.append(None)
        except turbo_queue.BatchReadError as exc:
            out.append([type(exc.__cause__).__name__, exc.path])
print(json.dumps(out))
"""


def test_consumer_without_the_producers_module_keeps_every_batch(qpath, tmp_path, monkeypatch):
    """A consumer deployed without a module the producer pickled from: every batch stays in the
    queue (no aside/), each try raises BatchReadError naming it; a consumer with the module gets all."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "tq_only_here.py").write_text("class Thing:\n    def __init__(self, n):\n        self.n = n\n")
    monkeypatch.syspath_prepend(str(mods))
    import tq_only_here

    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None)
    with q.producer() as p:
        p.put_many([tq_only_here.Thing(i) for i in range(10)])
    names = w.queue_files(qpath)
    out = run_app(MISSING_MODULE_APP, qpath)  # its sys.path lacks mods/
    # Each failed decode is a delivery without an ack: counted in the name, same place in line.
    assert out == [["ModuleNotFoundError", str(qpath / names[0].replace(".tqb", f"_d{k}.tqb"))]
                   for k in (1, 2, 3)]
    assert not (qpath / "aside").exists()
    assert q.stats()["ready"] == {"batches": 5, "events": 10}
    q.close()
    with q.consumer() as c:
        assert [t.n for t in c] == list(range(10))


@pytest.mark.parametrize("fault", ["EIO", "MemoryError-read", "MemoryError-decode"])
def test_injected_read_faults_return_the_batch_to_its_place(qpath, monkeypatch, fault):
    q = filled(qpath, 3)
    names = w.queue_files(qpath)
    real_read, real_decode = _consumer.read_file, _consumer.decode_items
    calls = []

    def failing_read(path):
        calls.append(path)
        if len(calls) == 1:
            if fault == "EIO":
                raise OSError(errno.EIO, "Input/output error", path)
            raise MemoryError
        return real_read(path)

    def failing_decode(*args):
        calls.append(args)
        if len(calls) == 1:
            raise MemoryError
        return real_decode(*args)

    if fault == "MemoryError-decode":
        monkeypatch.setattr(_consumer, "decode_items", failing_decode)
    else:
        monkeypatch.setattr(_consumer, "read_file", failing_read)
    with q.consumer() as c:
        with pytest.raises(turbo_queue.BatchReadError) as info:
            c.get_batch(timeout=0)
        assert info.value.path == str(qpath / names[0])
        assert isinstance(info.value.__cause__, OSError if fault == "EIO" else MemoryError)
        assert states(qpath)["r_"] == names  # back under its own name: it was never handed over
        assert c.get_batch(timeout=0) == [0, 1]  # its place in line, the consumer usable
    assert not (qpath / "aside").exists()


def test_set_aside_files_are_logged(qpath, caplog):
    q = filled(qpath, 1)
    bad = w.write_batch_file(qpath, _naming.READY, ["?"], w.dead_owner(pid=1), seal_ns=1, data=b"garbage")
    with caplog.at_level(logging.ERROR, logger="turbo_queue"):
        with q.consumer() as c:
            assert c.get_batch(timeout=0) == [0, 1]
    records = [r for r in caplog.records if "set aside" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    assert bad in records[0].getMessage() and "aside" in records[0].getMessage()


# -- a failing handler never acks ------------------------------------------------------------------

class Boom(Exception):
    pass


def _fail_on(last):
    def handle(item):
        if item == last:
            raise Boom(item)
    return handle


def style_for_in_with(q, handle):
    with q.consumer() as c:
        for item in c:
            handle(item)


def style_for_then_close(q, handle):
    c = q.consumer()
    try:
        for item in c:
            handle(item)
    finally:
        c.close()


def style_get_in_with(q, handle):
    with q.consumer() as c:
        while True:
            handle(c.get(timeout=0))


def style_get_then_dropped(q, handle):
    c = q.consumer()
    while True:
        handle(c.get(timeout=0))


def style_batch(q, handle):
    with q.consumer() as c:
        while True:
            with c.batch(timeout=0) as items:
                for item in items:
                    handle(item)


STYLES = [style_for_in_with, style_for_then_close, style_get_in_with, style_get_then_dropped, style_batch]


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("style", STYLES, ids=lambda f: f.__name__[6:])
def test_handler_failing_on_the_last_item_never_acks(qpath, style, batch_size):
    q = filled(qpath, 2, batch_size=batch_size)
    first = w.queue_files(qpath)[0]
    last = batch_size - 1  # the last item of the first batch
    with pytest.raises(Boom):
        style(q, _fail_on(last))
    gc.collect()  # the dropped consumer's finalizer (style_get_then_dropped)
    # Back in ready, at the head of the line, with one delivery counted; nothing left claimed.
    assert states(qpath)["c_"] == []
    assert states(qpath)["r_"][0] == first.replace(".tqb", "_d1.tqb")
    q.close()
    with q.consumer() as c:
        assert list(c) == list(range(2 * batch_size))  # the failed item included


def test_break_out_of_for_inside_with_acks_what_was_handled(qpath):
    """The other side of the rule: leaving the block cleanly confirms what was handed out."""
    q = filled(qpath, 2)
    with q.consumer() as c:
        for item in c:
            if item == 1:
                break
    assert len(w.queue_files(qpath)) == 1  # the first batch acked, nothing redelivered
    q.close()
    assert list(q.consumer()) == [2, 3]


# -- nothing stranded while the process lives ---------------------------------------------------

def test_dropped_consumer_returns_its_batch(qpath):
    q = filled(qpath, 2)
    c = q.consumer()
    assert c.get_batch(timeout=0) == [0, 1]
    assert len(states(qpath)["c_"]) == 1
    del c
    gc.collect()
    assert states(qpath)["c_"] == []
    q.close()
    with q.consumer() as other:
        assert list(other) == [0, 1, 2, 3]  # a closed queue drains, nothing waits on a lost claim


def test_keyboard_interrupt_between_claim_and_read_returns_the_batch(qpath, monkeypatch):
    q = filled(qpath, 2)
    names = w.queue_files(qpath)

    def interrupted(path):
        raise KeyboardInterrupt

    with q.consumer() as c:
        monkeypatch.setattr(_consumer, "read_file", interrupted)
        with pytest.raises(KeyboardInterrupt):
            c.get(timeout=0)
        monkeypatch.undo()
        assert w.queue_files(qpath) == names  # same names: never handed over, not a delivery
        assert c.get_batch(timeout=0) == [0, 1]


def test_claim_nobody_holds_is_recovered(qpath):
    """A claimed file of this very process that no live Consumer holds (lost between claim and
    hand-over) is returned by recovery instead of being waited on while the process lives."""
    q = filled(qpath, 2)
    ready = w.queue_files(qpath)[0]
    os.rename(qpath / ready, qpath / _naming.claimed_name(_naming.make_owner(), ready))
    q.close()
    with q.consumer() as c:
        assert c.get_batch(timeout=5) == [0, 1]
        assert c.get_batch(timeout=5) == [2, 3]
        with pytest.raises(turbo_queue.Closed):
            c.get_batch(timeout=5)


def test_a_claim_a_live_consumer_holds_is_left_alone(qpath):
    q = filled(qpath, 2)
    holder = q.consumer()
    assert holder.get_batch(timeout=0) == [0, 1]
    assert not q.recover()  # held by a live Consumer of this process
    assert len(states(qpath)["c_"]) == 1
    holder.close()
