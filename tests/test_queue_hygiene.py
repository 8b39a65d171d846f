"""Behaviour that no result shows but users rely on, each recorded as it happens.

``durable=True`` write order (recorded os calls), the no-stampede pick
(a monkeypatched ``random.randrange``) and the log records of set-aside files
(``caplog``).  Each test fails when the behaviour it names is removed.
"""

from __future__ import annotations

import errno
import logging
import os

import pytest

import turbo_queue
from turbo_queue import Empty

pytestmark = pytest.mark.timeout(60)


# -- durable=True write order ------------------------------------------------------------


def _record_os_calls(monkeypatch, folder: str) -> list[tuple]:
    """Record, in order, fsyncs (of a batch file or of the folder) and renames in ``folder``."""
    calls: list[tuple] = []
    fds: dict[int, str] = {}
    real_open, real_fsync, real_rename = os.open, os.fsync, os.rename

    def rec_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        fds[fd] = os.fspath(path)
        return fd

    def rec_fsync(fd):
        path = fds.get(fd if isinstance(fd, int) else fd.fileno(), "?")
        if path == folder:
            calls.append(("fsync-folder",))
        elif path.startswith(folder):
            calls.append(("fsync-file", os.path.basename(path)))
        return real_fsync(fd)

    def rec_rename(src, dst, *args, **kwargs):
        if os.fspath(dst).startswith(folder):
            calls.append(("rename", os.path.basename(os.fspath(src)), os.path.basename(os.fspath(dst))))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "open", rec_open)
    monkeypatch.setattr(os, "fsync", rec_fsync)
    monkeypatch.setattr(os, "rename", rec_rename)
    return calls


@pytest.mark.parametrize("durable", [True, False])
def test_durable_write_order(qpath, monkeypatch, durable):
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None, durable=durable)
    folder = str(q.path)
    calls = _record_os_calls(monkeypatch, folder)
    with q.producer() as p:
        p.put_many([1, 2, 3, 4])
    seals = [c for c in calls if c[0] == "rename" and c[2].startswith("r_")]
    assert len(seals) == 2
    if not durable:
        assert not [c for c in calls if c[0].startswith("fsync")], calls
    else:
        for seal in seals:
            i = calls.index(seal)
            loading = seal[1]
            assert loading.startswith("l_")
            # The file's data reaches the disk before its name says "ready" ...
            assert ("fsync-file", loading) in calls[:i], calls
            # ... and the rename itself is made durable by a folder fsync after it, before the next seal.
            following = calls[i + 1:]
            nxt = next((k for k, c in enumerate(following) if c[0] == "rename"), len(following))
            assert ("fsync-folder",) in following[:nxt], calls
    monkeypatch.undo()
    with q.consumer() as c:
        assert c.get_batch(timeout=0) + c.get_batch(timeout=0) == [1, 2, 3, 4]


# -- the no-stampede pick ----------------------------------------------------------------


def _stampede_window() -> int:
    from turbo_queue import _consumer

    window = getattr(_consumer, "STAMPEDE_WINDOW", None)
    if window is None:  # moved with the folder module
        from turbo_queue import _folder  # type: ignore[attr-defined]
        window = _folder.STAMPEDE_WINDOW
    return window


def test_after_a_lost_race_a_consumer_picks_among_the_oldest_window(qpath, monkeypatch):
    """Consumer A lists 20 ready batches; B takes the one A would try next, so A loses that race.
    A then picks at random among the oldest STAMPEDE_WINDOW remaining, not the next in line and not
    from the whole list: randrange is asked for exactly that window, and its answer is used."""
    window = _stampede_window()
    n = window * 2 + 4
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p:
        for i in range(n):
            p.put(i)
    asked = []

    def randrange(stop, *args):
        assert not args
        asked.append(stop)
        return stop - 1  # the youngest the window allows

    a, b = q.consumer(), q.consumer()
    try:
        assert a.get_batch(timeout=0) == [0]  # A has listed 1..n-1
        assert b.get_batch(timeout=0) == [1]  # B wins batch 1 before A tries it
        monkeypatch.setattr("random.randrange", randrange)
        got = a.get_batch(timeout=0)
        assert asked == [window], "after a lost race the pick must be random among the window"
        # Remaining after the lost race: 2..n-1; the window's youngest is 2 + window - 1.
        assert got == [2 + window - 1]
    finally:
        monkeypatch.undo()
        a.close()
        b.close()
    rest = []
    with q.consumer() as c:
        while True:
            try:
                rest += c.get_batch(timeout=0)
            except Empty:
                break
    assert sorted(rest + [0, 1, 2 + window - 1]) == list(range(n))


def test_without_a_lost_race_the_oldest_is_taken(qpath, monkeypatch):
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    with q.producer() as p:
        for i in range(5):
            p.put(i)
    monkeypatch.setattr("random.randrange", lambda *a: pytest.fail("no race was lost: no random pick"))
    with q.consumer() as c:
        assert [c.get_batch(timeout=0)[0] for _ in range(5)] == list(range(5))


# -- log records for set-aside files -----------------------------------------------------


@pytest.mark.parametrize("content, reason", [
    (b"not a batch at all", "unreadable"),
    (b"", "unreadable"),
])
def test_a_set_aside_file_is_logged_naming_it(qpath, caplog, content, reason):
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    name = "r_" + "0" * 19 + "1_000000000001_1_host-1-0-deadbeef.tqb"
    tmp = q.path / ".staging"
    tmp.write_bytes(content)
    os.rename(tmp, q.path / name)
    with q.producer() as p:
        p.put("good")
    caplog.set_level(logging.WARNING, logger="turbo_queue")
    with q.consumer() as c:
        assert c.get_batch(timeout=0) == ["good"]
    assert q.stats()["aside"] == 1
    records = [r for r in caplog.records if r.name == "turbo_queue" and name in r.getMessage()]
    assert records, f"setting {name} aside was not logged: {[r.getMessage() for r in caplog.records]}"
    assert records[0].levelno >= logging.WARNING


# -- idle CPU and wake-up latency, on both wait paths ------------------------------------


def _inotify_fds() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            pass
    return n


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to tell the wait path")
@pytest.mark.parametrize("path", ["inotify", "backoff"])
def test_idle_consumer_sleeps_and_wakes_soon_after_a_seal(qpath, monkeypatch, path):
    """A consumer blocked in get() for about a second uses a small CPU budget (its own thread's CPU
    time), and returns soon after a batch is sealed.  With inotify the periodic cap is made huge,
    so only the watch can wake it in time; the back-off path is forced by disabling inotify."""
    import threading
    import time

    from turbo_queue import _wait

    if path == "backoff":
        monkeypatch.setattr(_wait, "_libc", False)  # as on a system without inotify
    else:
        monkeypatch.setattr(_wait.FolderWaiter, "INOTIFY_CAP", 60.0)
    q = turbo_queue.Queue(qpath, batch_size=1, max_batch_age=None)
    sealed_at = []
    before_fds = _inotify_fds()
    p = q.producer()
    c = q.consumer()
    got_waiting = threading.Event()

    def seal_later():
        # The scenario is "idle for about a second": a duration, not a synchronization.
        got_waiting.wait(10)
        time.sleep(1.0)
        p.put("wake")  # batch_size=1: sealed (renamed to ready) before put returns
        sealed_at.append(time.monotonic())

    t = threading.Thread(target=seal_later, daemon=True)
    t.start()
    try:
        cpu0 = time.thread_time()
        got_waiting.set()
        item = c.get(timeout=30)
        woke_at = time.monotonic()
        cpu = time.thread_time() - cpu0
        t.join(10)
        assert item == "wake" and sealed_at
        watching = _inotify_fds() - before_fds
        if path == "inotify":
            assert watching >= 1, "the consumer is not waiting on an inotify watch"
        else:
            assert watching == 0, "inotify was meant to be off"
        latency = woke_at - sealed_at[0]
        assert cpu < 0.15, f"idle consumer used {cpu:.3f} s CPU in about 1 s of waiting ({path})"
        assert latency < 1.0, f"woke {latency:.3f} s after the seal ({path})"
    finally:
        c.close()
        p.close()


# -- disk full and read-only without root (injected ENOSPC / EROFS) ----------------------
# tests/test_queue_faults.py runs the same paths on a real tmpfs where it can mount one (root).


def _inject(monkeypatch, folder: str, err: int, calls=("open", "write", "rename", "unlink")) -> None:
    """Make the os-level calls the producer and consumer use fail with ``err`` inside ``folder``."""
    real = {name: getattr(os, name) for name in ("open", "write", "rename", "unlink")}
    fds: set[int] = set()

    def inside(path) -> bool:
        return os.fspath(path).startswith(folder)

    def fail(path):
        raise OSError(err, os.strerror(err), os.fspath(path))

    def open_(path, flags, *args, **kwargs):
        if "open" in calls and inside(path) and flags & os.O_CREAT:
            fail(path)
        fd = real["open"](path, flags, *args, **kwargs)
        if inside(path):
            fds.add(fd)
        return fd

    def write(fd, data):
        if "write" in calls and fd in fds:
            raise OSError(err, os.strerror(err))
        return real["write"](fd, data)

    def rename(src, dst, *args, **kwargs):
        if "rename" in calls and inside(dst):
            fail(src)
        return real["rename"](src, dst, *args, **kwargs)

    def unlink(path, *args, **kwargs):
        if "unlink" in calls and inside(path) and err == errno.EROFS:
            fail(path)
        return real["unlink"](path, *args, **kwargs)

    for name, fn in (("open", open_), ("write", write), ("rename", rename), ("unlink", unlink)):
        monkeypatch.setattr(os, name, fn)


def test_disk_full_injected_keeps_the_items_and_names_the_path(qpath, monkeypatch):
    q = turbo_queue.Queue(qpath, batch_size=3, max_batch_age=None)
    folder = str(q.path)
    p = q.producer()
    p.put_many([0, 1, 2, 3])  # one sealed, one pending
    _inject(monkeypatch, folder, errno.ENOSPC, calls=("write",))
    with pytest.raises(OSError) as info:
        p.flush()
    assert info.value.errno == errno.ENOSPC and folder in str(info.value)
    assert info.value.filename.startswith(folder)
    assert p.pending == 1, "the items of a failed seal stay buffered"
    assert not [n for n in os.listdir(folder) if n.startswith("l_")], "a torn loading file was left"
    monkeypatch.undo()
    p.flush()  # space again: the retry seals them, once
    p.close()
    with q.consumer() as c:
        assert c.get_batch(timeout=0) + c.get_batch(timeout=0) == [0, 1, 2, 3]
        with pytest.raises(Empty):
            c.get_batch(timeout=0)


def test_read_only_injected_errors_name_the_path(qpath, monkeypatch):
    q = turbo_queue.Queue(qpath, batch_size=2, max_batch_age=None)
    folder = str(q.path)
    p, c = q.producer(), q.consumer()
    p.put_many([0, 1, 2, 3, 4])  # two sealed batches, one item pending
    _inject(monkeypatch, folder, errno.EROFS)
    for call in (p.flush, lambda: c.get_batch(timeout=5), q.close):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EROFS and folder in str(info.value), call
    assert q.stats()["ready"]["events"] == 4  # reading still works
    monkeypatch.undo()
    p.close()
    q.close()
    assert sorted(c) == [0, 1, 2, 3, 4]
    c.close()
