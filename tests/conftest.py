"""Shared fixtures for the turbo_queue tests.

``reap_children``: every test that starts processes uses it (the test modules
that do list it in ``pytestmark``).  After the test it reaps children that
have exited and fails the test if any child it started is still running
(then kills it, so one leak does not hang the rest of the run).
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _reaping import leaked_children  # noqa: E402


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
