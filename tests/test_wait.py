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
