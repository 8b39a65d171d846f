"""The result set of a sweep: runs.csv, meta.json and bench.json.

Reproduce a result set with::

    python -m bench sweep --out results/my-run

and compare two of them with pyperf::

    python -m pyperf compare_to results/A/bench.json results/B/bench.json

Layout of ``results/<UTC timestamp>-<host>/``:

``runs.csv``
    Tidy: one row per cell x repeat, exactly the columns of
    :data:`bench.schema.COLUMNS` in that order.  Rows are appended (and
    fsynced) as each cell finishes, so an interrupted sweep keeps everything
    it finished and ``--resume`` can carry on.
``meta.json``
    The machine, the software, the sweep config actually run and the
    calibration (at least :data:`bench.schema.META_KEYS`).  Written at the
    start with ``finished_utc: null``, rewritten at the end.
``bench.json``
    The ok closed-loop rows in pyperf's format: one benchmark per cell, one
    run per repeat, value = seconds per event (1 / events_per_s), so that
    ``python -m pyperf compare_to`` and ``pyperf stats`` work on it.  An
    open-loop cell's events/s is the rate it was offered, not a speed, so
    open-loop rows stay in runs.csv only.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.schema import COLUMNS, LOAD_CLOSED, META_KEYS, SCHEMA_VERSION

RUNS_CSV = "runs.csv"
META_JSON = "meta.json"
PYPERF_JSON = "bench.json"

#: Distributions whose versions go into meta.json (missing ones are skipped).
_PACKAGES = ("turbo-queue-ng", "pyperf", "psutil", "faster-fifo", "numpy")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_out_dir(base: str | os.PathLike = "results") -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    host = socket.gethostname().split(".")[0] or "host"
    return Path(base) / f"{stamp}-{host}"


# --------------------------------------------------------------------------
# runs.csv
# --------------------------------------------------------------------------


def _format(value: Any) -> Any:
    if isinstance(value, float):
        # Ten significant digits: beyond any measurement's precision, and
        # without repr's 17-digit binary noise.
        return format(value, ".10g")
    return value


class RunsWriter:
    """Appends rows to runs.csv, one durable line per finished cell."""

    def __init__(self, out_dir: str | os.PathLike):
        self.path = Path(out_dir) / RUNS_CSV
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            _truncate_partial_line(self.path)
        self._f = open(self.path, "a", newline="", encoding="utf-8")
        self._w = csv.DictWriter(self._f, fieldnames=list(COLUMNS), extrasaction="raise")
        if new:
            self._w.writeheader()
            self._sync()

    def append(self, row: dict) -> None:
        missing = [k for k in COLUMNS if k not in row]
        if missing:
            raise ValueError(f"row lacks columns {missing}")
        self._w.writerow({k: _format(row[k]) for k in COLUMNS})
        self._sync()

    def _sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RunsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_partial_line(path: Path) -> None:
    """Drop a half-written last line (the sweep was killed mid-write)."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_runs(out_dir: str | os.PathLike) -> list[dict]:
    """The rows of runs.csv as dicts of strings (complete lines only)."""
    path = Path(out_dir) / RUNS_CSV
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(text.splitlines()))
    if rows and list(rows[0].keys()) != list(COLUMNS):
        # Columns are only ever appended: an older file's columns are a
        # prefix of COLUMNS, and a scenario's file (bench.scenarios.kafka)
        # has COLUMNS as a prefix followed by its own.
        known = list(rows[0].keys())
        n = min(len(known), len(COLUMNS))
        if known[:n] != list(COLUMNS)[:n]:
            raise ValueError(f"{path}: columns do not match bench.schema.COLUMNS")
    return rows


def done_keys(out_dir: str | os.PathLike) -> set[tuple[str, int]]:
    """(cell_id, repeat) pairs already recorded, whatever their status."""
    try:
        return {(r["cell_id"], int(r["repeat"])) for r in read_runs(out_dir)}
    except FileNotFoundError:
        return set()


# --------------------------------------------------------------------------
# meta.json
# --------------------------------------------------------------------------


def _package_versions() -> dict:
    from importlib import metadata

    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "turbo-queue-ng" not in out:
        # Running from a checkout that is not pip-installed.
        try:
            import turbo_queue

            out["turbo_queue"] = getattr(turbo_queue, "__version__", "unknown")
        except ImportError:
            pass
    return out


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent.parent
    # GIT_OPTIONAL_LOCKS=0: read-only, never refresh the index behind the
    # user's back.
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model(pyperf_meta: dict) -> str:
    model = pyperf_meta.get("cpu_model_name")
    if model:
        return model
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pyperf_metadata() -> dict:
    try:
        from pyperf._collect_metadata import collect_metadata
    except ImportError:  # the private module moved; record what we can
        return {}
    try:
        return collect_metadata(process=False)
    except Exception as exc:  # a metadata probe must never sink a sweep
        return {"error": repr(exc)}


def collect_meta(sweep: dict, calibration: dict, extra: dict | None = None) -> dict:
    """Everything about the machine and the run that results depend on."""
    pyperf_meta = _pyperf_metadata()
    commit = _git("rev-parse", "HEAD")
    commit_source = "git" if commit else None
    if not commit:
        # A copy of the tree without .git: the commit dev.py recorded when it
        # installed the project (.git_commit at the repository root).
        recorded = Path(__file__).resolve().parent.parent / ".git_commit"
        try:
            commit = recorded.read_text().strip() or None
            commit_source = "install" if commit else None
        except OSError:
            pass
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    meta = {
        "schema_version": SCHEMA_VERSION,
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(pyperf_meta),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_total_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": _package_versions(),
        "git_commit": commit,
        "git_commit_source": commit_source,
        "git_dirty": bool(status) if status is not None else None,
        "sweep": sweep,
        "calibration": calibration,
        "started_utc": utc_now(),
        "finished_utc": None,
        "pyperf": pyperf_meta,
        "argv": sys.argv,
    }
    from bench.measuring.machine import machine_state

    meta.update(machine_state())
    meta.setdefault("shuffle_seed", None)
    meta.setdefault("pin", False)
    # Later rounds' calibrations, filled by the sweep as each round starts.
    meta.setdefault("calibrations", {})
    # A scenario's own loop watches no speed.
    meta.setdefault("machine_speed", None)
    # Runs without adaptive repeats (a scenario's own loop) say so; their
    # writer fills elapsed_s when it finishes.
    meta.setdefault("adaptive", None)
    meta.setdefault("elapsed_s", None)
    meta.update(extra or {})
    missing = set(META_KEYS) - set(meta)
    assert not missing, f"meta lacks {missing}"
    return meta


def write_meta(out_dir: str | os.PathLike, meta: dict) -> None:
    path = Path(out_dir) / META_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_meta(out_dir: str | os.PathLike) -> dict:
    return json.loads((Path(out_dir) / META_JSON).read_text())


# --------------------------------------------------------------------------
# bench.json (pyperf)
# --------------------------------------------------------------------------


def write_pyperf(out_dir: str | os.PathLike, rows: list[dict], meta: dict) -> Path | None:
    """Write the ok closed-loop rows as a pyperf BenchmarkSuite; None when there are none."""
    import pyperf

    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        closed = (r.get("load") or LOAD_CLOSED) == LOAD_CLOSED
        if closed and r["status"] == "ok" and float(r["events_per_s"]) > 0:
            by_cell.setdefault(r["cell_id"], []).append(r)
    path = Path(out_dir) / PYPERF_JSON
    if not by_cell:
        return None
    common = {
        "hostname": meta.get("hostname"),
        "cpu_model_name": meta.get("cpu_model"),
        "cpu_count": meta.get("cpu_count_logical"),
        "python_version": meta.get("python"),
        "platform": meta.get("platform"),
    }
    common = {k: v for k, v in common.items() if v not in (None, "")}
    benchmarks = []
    for cell_id, cell_rows in by_cell.items():
        runs = []
        for r in sorted(cell_rows, key=lambda r: int(r["repeat"])):
            md = dict(common, name=cell_id, unit="second", date=r["started_utc"])
            # One value per run: seconds per event over the measure window.
            runs.append(
                pyperf.Run([1.0 / float(r["events_per_s"])], metadata=md, collect_metadata=False)
            )
        benchmarks.append(pyperf.Benchmark(runs))
    suite = pyperf.BenchmarkSuite(benchmarks)
    suite.dump(str(path), replace=True)
    return path
