"""The folder waiter: wakes for the renames that matter to it, and only those."""

from __future__ import annotations

import os
import sys

import pytest

from turbo_queue._wait import FolderWaiter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")


def _rename_in(folder, name):
    tmp = folder / f".tmp-{name}"
    tmp.write_bytes(b"x")
    os.rename(tmp, folder / name)


def test_consumer_waiter_ignores_claims_and_wakes_for_ready_batches(tmp_path):
    waiter = FolderWaiter(str(tmp_path), wake_on=("r_", "CLOSED"))
    fd = waiter._inotify_fd()
    assert fd >= 0, "inotify unavailable on this Linux machine"
    try:
        _rename_in(tmp_path, "c_someone__r_x.tqb")  # another consumer's claim
        (tmp_path / "l_loading.tqb").write_bytes(b"x")  # a create: not even reported
        os.unlink(tmp_path / "l_loading.tqb")
        assert waiter._drain(fd) is False
        _rename_in(tmp_path, "r_0001.tqb")
        assert waiter._drain(fd) is True
        _rename_in(tmp_path, "CLOSED")
        assert waiter._drain(fd) is True
    finally:
        waiter.close()


def test_producer_waiter_wakes_for_claims(tmp_path):
    waiter = FolderWaiter(str(tmp_path), wake_on=("c_",))
    fd = waiter._inotify_fd()
    assert fd >= 0
    try:
        _rename_in(tmp_path, "r_0001.tqb")  # another producer sealing: no room made
        assert waiter._drain(fd) is False
        _rename_in(tmp_path, "c_owner__r_0001.tqb")
        assert waiter._drain(fd) is True
    finally:
        waiter.close()


def test_vanished_folder_wakes_the_waiter(tmp_path):
    folder = tmp_path / "q"
    folder.mkdir()
    waiter = FolderWaiter(str(folder), wake_on=("r_",))
    fd = waiter._inotify_fd()
    assert fd >= 0
    try:
        folder.rmdir()  # the kernel drops the watch (IN_IGNORED): the caller must look
        assert waiter._drain(fd) is True
    finally:
        waiter.close()


def _counting_reads(monkeypatch, fd):
    """Count the reads of ``fd`` (the waiter's inotify descriptor) and nothing else."""
    calls = []
    real_read = os.read

    def read(f, n):
        if f == fd:
            calls.append(n)
        return real_read(f, n)

    monkeypatch.setattr(os, "read", read)
    return calls


def test_a_poll_reads_once_when_every_pending_event_fits(tmp_path, monkeypatch):
    # One read returns every pending event that fits; a second read only to
    # be told EAGAIN was a system call and an exception at every poll.
    seen = []
    waiter = FolderWaiter(str(tmp_path), wake_on=("r_",))
    waiter.listener = seen.append
    fd = waiter._inotify_fd()
    assert fd >= 0, "inotify unavailable on this Linux machine"
    try:
        for i in range(5):
            _rename_in(tmp_path, f"r_{i:04d}.tqb")
        calls = _counting_reads(monkeypatch, fd)
        assert waiter.poll() is True
        assert len(calls) == 1
        assert sum(buf.count(b"r_") for buf in seen) == 5
        assert waiter.poll() is True and len(calls) == 2  # nothing pending: one read, EAGAIN
    finally:
        waiter.close()


def test_a_poll_reads_on_while_a_read_comes_back_full(tmp_path, monkeypatch):
    # More events pending than one read holds (64 KiB): every one of them is
    # still read by the same poll, none left for a later one to find.
    from turbo_queue._wait import iter_events

    names = [f"r_{i:06d}_{'x' * 80}.tqb" for i in range(1500)]  # 112 bytes an event: ~585 a read
    got = []
    waiter = FolderWaiter(str(tmp_path), wake_on=("r_",))
    waiter.listener = lambda buf: got.extend(name.decode() for _mask, name in iter_events(buf))
    fd = waiter._inotify_fd()
    assert fd >= 0, "inotify unavailable on this Linux machine"
    try:
        for name in names:
            _rename_in(tmp_path, name)
        calls = _counting_reads(monkeypatch, fd)
        waiter.poll()
        assert len(calls) >= 3
        assert [n for n in got if n.startswith("r_")] == names
    finally:
        waiter.close()
