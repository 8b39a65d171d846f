"""The test suite's own hygiene: the reaping fixture sees every leaked child, forkserver children too."""

from __future__ import annotations

import multiprocessing
import time

import pytest
from _reaping import leaked_children

pytestmark = pytest.mark.timeout(60)


def test_reaper_sees_a_leaked_forkserver_child():
    ctx = multiprocessing.get_context("forkserver")
    helpers_before = {p.pid for p in leaked_children(set())}
    proc = ctx.Process(target=time.sleep, args=(60,), daemon=True)
    proc.start()
    try:
        leaked = {p.pid for p in leaked_children(helpers_before)}
        # The child is the forkserver's, with the forkserver's command line: caught by pid all the same.
        assert proc.pid in leaked
        forkserver_pid = multiprocessing.forkserver._forkserver._forkserver_pid
        assert forkserver_pid not in leaked, "the forkserver itself is a session helper, not a leak"
    finally:
        proc.kill()
        proc.join(10)
    assert proc.pid not in {p.pid for p in leaked_children(helpers_before)}
