"""Worker functions and small helpers shared by the turbo_queue tests.

Workers live at module level so that ``spawn`` children can import them.  They
report back by writing files (written to a temporary name, then renamed, so
the test never reads half a file), never through sleeps.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import turbo_queue
from turbo_queue import _batch, _naming, _serializers

REPO = Path(__file__).resolve().parent.parent


# -- helpers -----------------------------------------------------------------


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.005):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def write_result(path: str | os.PathLike[str], obj) -> None:
    """Write ``obj`` (pickled) to ``path`` atomically."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f)
    os.rename(tmp, path)


def read_result(path: str | os.PathLike[str]):
    with open(path, "rb") as f:
        return pickle.load(f)


def kill_process(proc) -> None:
    """SIGKILL a process that may still run, and reap it."""
    if isinstance(proc, subprocess.Popen):
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        return
    if proc.is_alive():
        proc.kill()
    proc.join(5)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def dead_owner(pid: int | None = None) -> _naming.Owner:
    return _naming.Owner(_naming.local_host(), dead_pid() if pid is None else pid, 0, "deadbeef")


def batch_bytes(items, serializer: str = "pickle", owner: str = "x-1-0-00000000", many: bool = True) -> bytes:
    """The bytes of a real batch file holding ``items`` (made with the library's own encoder)."""
    ser = _serializers.get_serializer(serializer)
    if many:
        records = [(1, None, ser.dumps_many(list(items)))]
    else:
        from array import array

        encoded = [ser.dumps(i) for i in items]
        records = [(0, _batch.lengths_bytes(array("Q", map(len, encoded))), b"".join(encoded))]
    return _batch.encode_batch(records, len(items), ser.name, owner, time.time_ns())


def write_batch_file(folder, state: str, items, owner: _naming.Owner, seal_ns: int | None = None,
                     seq: int = 1, data: bytes | None = None) -> str:
    """Write a batch file named for ``owner`` in ``state`` (``l_`` or ``r_``); returns its name."""
    seal_ns = time.time_ns() if seal_ns is None else seal_ns
    name = _naming.BatchName(state, seal_ns, seq, len(items), owner).name()
    if data is None:
        data = batch_bytes(items, owner=str(owner))
    Path(folder, name).write_bytes(data)
    return name


def drain(q: turbo_queue.Queue) -> list:
    """Every item ready now, in delivery order (one consumer, until no batch is ready)."""
    got = []
    with q.consumer() as c:
        while True:
            try:
                got.extend(c.get_batch(timeout=0))
            except (turbo_queue.Empty, turbo_queue.Closed):
                return got


def queue_files(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(_naming.SUFFIX))


def block_forever() -> None:
    threading.Event().wait()


# -- workers -------------------------------------------------------------------


def produce(q: turbo_queue.Queue, ids: list, use_many: bool = False) -> None:
    """Put ``ids`` (one by one, or half of them with put_many) and seal them on exit."""
    with q.producer() as p:
        if use_many:
            half = len(ids) // 2
            for i in ids[:half]:
                p.put(i)
            p.put_many(ids[half:])
        else:
            for i in ids:
                p.put(i)


def consume_all(q: turbo_queue.Queue, out: str) -> None:
    """Take items until the queue is closed and drained; write them to ``out``."""
    got = []
    with q.consumer() as c:
        for item in c:
            got.append(item)
    write_result(out, got)


def consume_batches(q: turbo_queue.Queue, out: str) -> None:
    """Like consume_all, with get_batch."""
    got = []
    with q.consumer() as c:
        while True:
            try:
                got.extend(c.get_batch())
            except turbo_queue.Closed:
                break
    write_result(out, got)


def claim_and_hang(q: turbo_queue.Queue, marker: str) -> None:
    """Claim one batch, report its items in ``marker``, then block until killed."""
    c = q.consumer()
    items = c.get_batch(timeout=30)
    write_result(marker, items)
    block_forever()


def take_one_batch(q: turbo_queue.Queue, out: str) -> None:
    """Take and ack one batch, report it."""
    with q.consumer() as c:
        with c.batch(timeout=30) as items:
            pass
    write_result(out, items)


def produce_then_hang(q: turbo_queue.Queue, ids: list, marker: str) -> None:
    """Put ``ids`` (some are sealed, the rest stays pending), report, block until killed."""
    p = q.producer()
    for i in ids:
        p.put(i)
    write_result(marker, {"sealed": p.sealed_items, "pending": p.pending})
    block_forever()


def produce_and_die_before_rename(q: turbo_queue.Queue, ids: list, marker: str) -> None:
    """Seal one batch but block between writing its loading file and renaming it."""
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(src)).startswith(_naming.LOADING):
            write_result(marker, os.path.basename(os.fspath(src)))
            block_forever()
        return real_rename(src, dst, *args, **kwargs)

    os.rename = rename
    p = q.producer()
    for i in ids:
        p.put(i)
    p.flush()


def use_inherited_producer(p, out: str) -> None:
    """(fork only) Use a Producer made in the parent: must raise, not hang."""
    results = {}
    for name, call in (("put", lambda: p.put(1, timeout=5)),
                       ("put_many", lambda: p.put_many([1, 2], timeout=5)),
                       ("flush", lambda: p.flush(timeout=5))):
        try:
            call()
            results[name] = None
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            results[name] = (type(exc).__name__, str(exc))
    write_result(out, results)


def use_inherited_consumer(c, out: str) -> None:
    """(fork only) Use a Consumer made in the parent: must raise."""
    try:
        c.get(timeout=1)
        result = None
    except Exception as exc:  # noqa: BLE001
        result = (type(exc).__name__, str(exc))
    write_result(out, result)


def fork_child_roundtrip(q: turbo_queue.Queue, out: str) -> None:
    """Produce and consume in a child process (fresh producer/consumer, inherited Queue)."""
    try:
        with q.producer() as p:
            p.put_many(["child-a", "child-b"])
            p.put("child-c")
        with q.consumer() as c:
            got = c.get_batch(timeout=10)
        write_result(out, ("ok", got))
    except Exception as exc:  # noqa: BLE001
        write_result(out, ("error", repr(exc)))


def app_command(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def app_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PRODUCER_APP = """
import sys, turbo_queue
path, n = sys.argv[1], int(sys.argv[2])
q = turbo_queue.Queue(path, batch_size=17, max_batch_age=0.05)
with q.producer() as p:
    for i in range(n):
        p.put({"app": "producer", "i": i})
q.close()
"""

CONSUMER_APP = """
import json, os, sys, turbo_queue
path, out = sys.argv[1], sys.argv[2]
q = turbo_queue.Queue(path, batch_size=17, max_batch_age=0.05, recover_interval=0.05)
got = [item["i"] for item in q.consumer()]
with open(out + ".tmp", "w") as f:
    json.dump(got, f)
os.rename(out + ".tmp", out)
"""


def load_json(path) -> object:
    with open(path) as f:
        return json.load(f)


class Rot13Serializer:
    """A custom serializer (module level, so a Queue using it pickles)."""

    def dumps(self, obj) -> bytes:
        if not isinstance(obj, str):
            raise TypeError(f"Rot13Serializer takes str, not {type(obj).__name__}")
        import codecs

        return codecs.encode(obj, "rot13").encode("utf-8")

    def loads(self, data) -> str:
        import codecs

        return codecs.decode(bytes(data).decode("utf-8"), "rot13")
