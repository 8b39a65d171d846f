"""Which child processes a test leaked (the ``reap_children`` fixture of tests/conftest.py)."""

from __future__ import annotations

import os
import sys

import psutil

__all__ = ["leaked_children"]


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
