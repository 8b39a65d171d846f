"""The processes of a cell: how children report, and how the parent reaps them.

Shared by the queue sweep (bench.measuring.cell) and the Kafka scenario, so
that every child reports its result, its peak RSS and its failure alike,
and no process a cell started outlives it::

    python -m pytest tests/bench/test_bench_cell.py -k "hung or crash"

* A child writes its result as a pickle beside the others (:func:`report_child`,
  atomically through a rename) and dies with the parent (:func:`_die_with_parent`).
* The parent reads the results (:func:`_read_result`), says how a child
  ended when it left none (:func:`_describe_exit`), and at the end of every
  cell terminates, then kills, whatever is left (:func:`reap_processes`).
* :func:`leaked_children` is the check that nothing was left behind.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable

import psutil


def _die_with_parent() -> None:
    """Have the kernel kill this child if the sweep process dies (Linux).

    Without it a SIGKILLed sweep would leave consumers blocked forever on a
    queue nobody will close.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return


def _max_rss_bytes() -> int:
    """Peak resident set size of this process.

    On Linux VmHWM of /proc/self/status: getrusage's ru_maxrss survives
    exec, so a spawned child would report the RSS of the sweep process it
    was forked from rather than its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return rss if sys.platform == "darwin" else rss * 1024


def _write_result(path: str, result: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def report_child(result_path: str, result: dict, body: Callable[[], dict]) -> None:
    """Run a child process's ``body`` and write ``result`` (updated with what it
    returns, or with the error) to ``result_path`` for the parent; exit 1 on error.

    Shared by the sweep's producers and consumers and the Kafka scenario's
    stages, so that every child reports its peak RSS and its failure alike.
    """
    try:
        result.update(body())
    except BaseException as exc:
        result["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result["traceback"] = traceback.format_exc()
        result["max_rss_bytes"] = _max_rss_bytes()
        _write_result(result_path, result)
        sys.exit(1)
    result["max_rss_bytes"] = _max_rss_bytes()
    _write_result(result_path, result)


def mp_helper_pids() -> set[int]:
    """Processes multiprocessing keeps for the sweep's whole life.

    The resource tracker (started by the spawn method) is a child of the
    sweep process but belongs to no cell; leak checks must not count it.
    """
    pids = set()
    try:
        from multiprocessing import resource_tracker

        pid = getattr(resource_tracker._resource_tracker, "_pid", None)
        if pid:
            pids.add(pid)
    except (ImportError, AttributeError):
        pass
    try:
        from multiprocessing import forkserver

        pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
        if pid:
            pids.add(pid)
    except (ImportError, AttributeError):
        pass
    return pids


def leaked_children() -> list[psutil.Process]:
    """Descendants of this process that no cell should have left behind."""
    helpers = mp_helper_pids()
    out = []
    for p in psutil.Process().children(recursive=True):
        if p.pid in helpers:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                # Not running; reaped below by the process that owns it.
                continue
        except psutil.NoSuchProcess:
            continue
        out.append(p)
    return out


def reap_processes(processes: list, grace: float = 2.0) -> None:
    """Terminate, then kill, every process of the cell and its descendants.

    Direct children are reaped with ``Process.join`` (multiprocessing's own
    bookkeeping), descendants they may have started with psutil.
    """
    alive = [p for p in processes if p.is_alive()]
    descendants: list[psutil.Process] = []
    for p in alive:
        try:
            descendants.extend(psutil.Process(p.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    for d in descendants:
        try:
            d.terminate()
        except psutil.NoSuchProcess:
            pass
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + grace
    for p in alive:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in alive:
        if p.is_alive():
            p.kill()
            p.join(grace)
    _, still = psutil.wait_procs(descendants, timeout=grace)
    for d in still:
        try:
            d.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(still, timeout=grace)
    for p in processes:
        p.join(0)  # reap the already-exited ones too
        try:
            p.close()
        except ValueError:
            pass  # still running after SIGKILL + grace: nothing more we can do


def _read_result(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return None


def _describe_exit(role: str, index: int, proc, result: dict | None) -> str:
    if result and result.get("error"):
        return f"{role} {index} failed: {result['error']}"
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"{role} {index} killed by {name}"
    return f"{role} {index} exited with code {code} without a result"
