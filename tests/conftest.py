"""Shared fixtures for the turbo_queue tests.

``reap_children``: every test that starts processes uses it (the test modules
that do list it in ``pytestmark``).  After the test it reaps children that
have exited and fails the test if any child it started is still running
(then kills it, so one leak does not hang the rest of the run).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

def _helper_pids() -> set[int]:
    """Pids of multiprocessing's session-long helpers (the forkserver, the resource tracker): not leaks.

    Told by pid, never by command line: a child the forkserver forks carries
    the forkserver's command line, so matching on it would hide exactly the
    leaked workers this fixture exists to catch.
    """
    pids = set()
    for module, obj, attr in (("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
                              ("multiprocessing.resource_tracker", "_resource_tracker", "_pid")):
        mod = sys.modules.get(module)
        pid = getattr(getattr(mod, obj, None), attr, None) if mod else None
        if pid:
            pids.add(pid)
    return pids


def leaked_children(before: set[int]) -> list[psutil.Process]:
    """Descendants of this process not in ``before``, still running, that are not helpers."""
    helpers = _helper_pids()
    return [proc for proc in psutil.Process().children(recursive=True)
            if proc.pid not in before and proc.pid not in helpers and not _reap_zombie(proc)]


def _reap_zombie(proc: psutil.Process) -> bool:
    """Reap ``proc`` if it is a zombie child of ours; True if it is gone."""
    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    try:
        os.waitpid(proc.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


@pytest.fixture
def reap_children():
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    # Processes the test joined are gone already; give ones that are exiting
    # a moment (multiprocessing reaps them in active_children()).
    deadline = time.monotonic() + 2.0
    while True:
        multiprocessing.active_children()
        alive = leaked_children(before)
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for proc in alive:
        try:
            proc.kill()
            proc.wait(5)
        except psutil.NoSuchProcess:
            pass
    multiprocessing.active_children()
    assert not alive, f"the test leaked child processes: {[p.pid for p in alive]}"


@pytest.fixture
def qpath(tmp_path) -> Path:
    """A path for a new queue folder (not created)."""
    return tmp_path / "q"
