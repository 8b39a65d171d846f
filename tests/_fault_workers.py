"""Child-process workers and helpers of tests/test_queue_faults.py.

Workers live at module level so that any start method can import them.  They
report by writing a result file (to a temporary name, then renamed, so the
test never reads half of one), and they wait for each other through files
(``wait_for``), never through sleeps.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import sys
import time
import types

from _workers import wait_for

import turbo_queue
from turbo_queue import _naming

NOBODY = 65534


# -- helpers ---------------------------------------------------------------------



def write_result(path, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f)
    os.rename(tmp, path)


def read_result(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def error_info(exc: BaseException) -> dict:
    """What a test asserts about an error: its type, errno, the path(s) it names and its text."""
    return {"type": type(exc).__name__, "errno": getattr(exc, "errno", None),
            "filename": getattr(exc, "filename", None), "filename2": getattr(exc, "filename2", None),
            "path": getattr(exc, "path", None), "text": str(exc)}


def attempt(call) -> dict | None:
    """Run ``call``; None if it returned, else :func:`error_info` of what it raised."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return error_info(exc)
    return None


def mount_tmpfs(target, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``target``; None if it worked, else why not (for a skip)."""
    if not sys.platform.startswith("linux"):
        return "tmpfs mounts are Linux only"
    if shutil.which("mount") is None:
        return "no mount command"
    os.makedirs(target, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"mount failed: {exc}"
    if r.returncode != 0:
        return f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}"
    return None


def remount(target, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(target)], check=True, capture_output=True,
                   timeout=30)


def umount(target) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


# -- workers ---------------------------------------------------------------------


def seal_batches(q: turbo_queue.Queue, tag: str, n_batches: int, out: str) -> None:
    """Seal ``n_batches`` full batches of items (tag, i), report their names, exit (the owner dies)."""
    with q.producer() as p:
        for i in range(n_batches * q.batch_size):
            p.put((tag, i))
    names = sorted(n for n in os.listdir(q.path) if n.startswith(_naming.READY))
    write_result(out, names)


def recoverer(q: turbo_queue.Queue, go: str, rounds: int, out: str) -> None:
    """Say it is ready, wait for ``go`` to exist, then run recover() ``rounds`` times; report what
    each changed.  The short poll makes the recoverers start within a fraction of a millisecond."""
    write_result(out + ".ready", os.getpid())
    deadline = time.monotonic() + 20
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the go file")
        time.sleep(0.0002)
    returned, sealed, aside = [], [], []
    for _ in range(rounds):
        report = q.recover()
        returned += report.returned
        sealed += report.sealed
        aside += report.set_aside
    write_result(out, {"returned": returned, "sealed": sealed, "set_aside": aside})


def collect(q: turbo_queue.Queue, go: str | None, out: str) -> None:
    """Consume whole batches until the queue is closed and drained; report each batch."""
    if go:
        wait_for(lambda: os.path.exists(go), what="the go file")
    batches = []
    with q.consumer() as c:
        while True:
            try:
                with c.batch(timeout=None) as items:
                    batches.append(items)
            except turbo_queue.Closed:
                break
    write_result(out, batches)


def blocked_get(q: turbo_queue.Queue, started: str, out: str) -> None:
    """Block in get_batch(timeout=None) on an empty queue; report how it ended."""
    c = q.consumer()
    write_result(started, os.getpid())
    write_result(out, attempt(lambda: c.get_batch(timeout=None)))


def blocked_put(q: turbo_queue.Queue, started: str, out: str) -> None:
    """Fill max_ready, then block in put(timeout=None); report how it ended."""
    p = q.producer()
    for i in range(q.max_ready * q.batch_size):
        p.put(i)
    write_result(started, p.sealed_batches)
    write_result(out, attempt(lambda: [p.put(i) for i in range(2 * q.batch_size)]))


class _SkewedTime(types.ModuleType):
    """The ``time`` module with ``time_ns`` shifted (or jumping back after a while)."""

    def __init__(self, offset_ns: int, jump_ns: int, jump_after: int) -> None:
        super().__init__("time")
        self._offset, self._jump, self._after, self._calls = offset_ns, jump_ns, jump_after, 0

    def __getattr__(self, name):
        return getattr(time, name)

    def time_ns(self) -> int:
        self._calls += 1
        shift = self._offset + (self._jump if self._calls > self._after else 0)
        return time.time_ns() + shift


def skewed_producer(q: turbo_queue.Queue, tag: str, n: int, offset_ns: int, jump_ns: int, jump_after: int,
                    go: str, out: str) -> None:
    """A producer whose clock is off by ``offset_ns`` and jumps by ``jump_ns`` after ``jump_after`` seals."""
    from turbo_queue import _producer

    skewed = _SkewedTime(offset_ns, jump_ns, jump_after)
    if isinstance(getattr(_producer, "time", None), types.ModuleType):
        _producer.time = skewed
    if callable(getattr(_producer, "time_ns", None)):  # in case it imports the function itself
        _producer.time_ns = skewed.time_ns
    wait_for(lambda: os.path.exists(go), what="the go file")
    with q.producer() as p:
        for i in range(n):
            p.put((tag, i))
    write_result(out, "done")


def permission_scenario(base: str, out: str) -> None:
    """As user nobody (the test runs as root, whom file modes do not stop): chmod the folder under a
    live producer and consumer and report each error; then restore the mode and drain.  Not root:
    modes already stop this user, so it stays who it is (switching users would need root)."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    path = os.path.join(base, "q")
    results: dict = {}
    q = turbo_queue.Queue(path, batch_size=2, max_batch_age=None, serializer="json")
    p, c = q.producer(), q.consumer()
    p.put_many([0, 1, 2])  # one sealed batch, one item pending
    os.chmod(path, 0o500)  # read and search only
    results["flush_ro"] = attempt(p.flush)
    results["get_ro"] = attempt(lambda: c.get_batch(timeout=5))
    results["queue_ro"] = attempt(lambda: turbo_queue.Queue(path, serializer="json"))
    os.chmod(path, 0o000)
    results["get_none"] = attempt(lambda: c.get_batch(timeout=5))
    results["stats_none"] = attempt(q.stats)
    os.chmod(path, 0o700)
    results["flush_after"] = attempt(p.flush)
    got = []
    results["drain"] = attempt(lambda: [got.extend(c.get_batch(timeout=5)) for _ in range(2)])
    results["got"] = got
    p.close()
    c.close()
    write_result(out, results)


def raise_inside_batch(q: turbo_queue.Queue, out: str) -> None:
    """Take one batch with ``with c.batch()`` and raise inside the block (the process then exits)."""
    c = q.consumer()
    try:
        with c.batch(timeout=30) as items:
            write_result(out, items)
            raise RuntimeError("worker failed on this batch")
    except RuntimeError:
        pass


def errno_name(code: int | None) -> str:
    return errno.errorcode.get(code, str(code)) if code is not None else "-"
