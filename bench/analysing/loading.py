"""Load a benchmark result set into pandas and aggregate its repeats.

A result set is a folder ``results/<UTC timestamp>-<host>/`` holding
``runs.csv`` (one row per cell x repeat, columns in :data:`bench.schema.COLUMNS`),
``meta.json`` (machine and sweep, keys in :data:`bench.schema.META_KEYS`) and a
pyperf-format ``bench.json``.  Everything downstream (report, compare,
notebooks) reads result sets through this module so that schema checks and the
meaning of "median of repeats" live in one place.

Only rows whose ``status`` is ``ok`` are aggregated: a failed or timed-out repeat
has no meaningful throughput, and averaging it in as zero would draw a collapse
that never happened.  Failed rows stay available through :func:`failed_runs`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysing.axes import SCALING_AXIS, SCENARIO_KEYS, batch_sort_key
from bench.measuring.backends.base import AUTO_BATCH, is_auto
from bench.measuring.validity import saturated as short_of_offered
from bench.schema import CELL_KEYS, COLUMNS, SCHEMA_VERSION

#: Schema versions this reader understands.  Columns are only ever added within
#: a version, so a reader of version N reads any set written as version N.
KNOWN_SCHEMA_VERSIONS = frozenset({1, 2, SCHEMA_VERSION})

#: Columns of schema version 2 (written by bench-measure), with their kinds.
#: Read defensively: a v1 set lacks them and gets them empty, so every
#: consumer of a loaded set can rely on the column existing.
V2_COLUMN_KINDS = {
    "load": "str", "offered_rate": "float",
    "queue_wait_p50_ms": "float", "queue_wait_p90_ms": "float",
    "queue_wait_p99_ms": "float", "queue_wait_max_ms": "float",
    "work_us_measured": "float", "work_drift_pct": "float", "overhead_err_us": "float",
    "steal_pct": "float", "cpu_mhz": "float", "usable_cores": "int",
    "producer_cpu_pct": "float", "consumer_cpu_pct": "float", "bottleneck": "str",
    "valid": "bool", "invalid_reason": "str", "polling_fallback": "bool", "pinned": "bool",
    "producers_setting": "str",
}

#: The issue's validity thresholds, re-applied by the reader so that a set
#: whose writer did not apply them (or a v1 set) is still checked.
MAX_WORK_DRIFT_PCT = 10.0
MAX_STEAL_PCT = 5.0
MIN_DRIFT_US = 1.0
#: A cell whose CPU clock lies further than this from the set's median clock
#: ran on a CPU of another speed than its neighbours: its throughput is not
#: comparable with theirs (frequency scaling, boost, another host).
MAX_CLOCK_DRIFT_PCT = 10.0
PRODUCER_SATURATED_PCT = 90.0
#: Tolerance of the retro-check on v1 rows, which lack overhead_err_us: CPU
#: times are read in 10 ms ticks per process, and the calibration is good to
#: about 2% of the work.
CPU_TICK_S = 0.01
CALIBRATION_TOLERANCE = 0.02

#: Columns without which nothing can be reported.
#: ``load`` joined the cell keys in schema 2; a v1 set has none and is all closed loop.
REQUIRED_COLUMNS = ("schema_version", "cell_id", "repeat", *(k for k in CELL_KEYS if k != "load"), "status",
                    "events_per_s")

#: Derived per-row columns (computed before aggregation so that their repeats
#: are aggregated like measured columns).
DERIVED_COLUMNS = (
    "cpu_us_per_event",
    "ctx_per_event",
    "useful_pct",
    "overhead_pct",
    "idle_pct",
)

#: Default noise threshold: a cell whose events/s spread (max - min) / median
#: exceeds this is too noisy to base a recommendation on.  25% is well past the
#: few-percent run-to-run spread of a quiet machine and well short of the
#: differences the report is meant to find (tens of percent to multiples).
DEFAULT_NOISE_THRESHOLD = 0.25


class ResultSetError(Exception):
    """A result set that cannot be read; the message names the offending file."""


def _column_kind(description: str) -> str:
    """'int', 'float' or 'str' from a COLUMNS description ('int: ...')."""
    head = description.split(":", 1)[0].strip()
    return head if head in ("int", "float", "str") else "str"


COLUMN_KINDS = {name: _column_kind(desc) for name, desc in COLUMNS.items()}
for _name, _kind in V2_COLUMN_KINDS.items():
    COLUMN_KINDS.setdefault(_name, _kind)
# bool columns are parsed by _parse_bool; a bool described as "bool" in
# schema.py lands in "str" by _column_kind, so force the known ones.
BOOL_COLUMNS = tuple(n for n, k in V2_COLUMN_KINDS.items() if k == "bool")
for _name in BOOL_COLUMNS:
    COLUMN_KINDS[_name] = "bool"
# batch_size holds counts and "auto" (turbo's adaptive size): read as text,
# then made ints where it is one (_batch_value), never a number for "auto".
COLUMN_KINDS["batch_size"] = "str"
NUMERIC_COLUMNS = tuple(n for n, k in COLUMN_KINDS.items() if k in ("int", "float"))
STRING_COLUMNS = tuple(n for n, k in COLUMN_KINDS.items() if k == "str")


@dataclass
class ResultSet:
    """One loaded result set."""

    path: Path
    runs: pd.DataFrame
    meta: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def bench_json(self) -> Path | None:
        p = self.path / "bench.json"
        return p if p.is_file() else None

    @property
    def cores(self) -> int | None:
        """Logical cores of the machine: meta first, then the runs' cpu_count."""
        return machine_cores(self.meta, self.runs)

    @property
    def name(self) -> str:
        return self.path.name


def machine_cores(meta: dict, runs: pd.DataFrame | None = None) -> int | None:
    value = meta.get("cpu_count_logical") if meta else None
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    if runs is not None and "cpu_count" in runs and runs["cpu_count"].notna().any():
        return int(runs["cpu_count"].max())
    return None


def load_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate one ``runs.csv``; raises :class:`ResultSetError`."""
    csv = Path(path)
    if not csv.is_file():
        raise ResultSetError(f"{csv}: no such file (a result set needs runs.csv)")
    try:
        runs = pd.read_csv(
            csv,
            dtype={c: str for c in STRING_COLUMNS},
            keep_default_na=False,
            na_values={c: ["", "nan", "NaN"] for c in NUMERIC_COLUMNS},
        )
    except pd.errors.EmptyDataError as exc:
        raise ResultSetError(f"{csv}: empty file, no results") from exc
    except Exception as exc:  # a truncated or binary file: say which one
        raise ResultSetError(f"{csv}: cannot be parsed as CSV ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in runs.columns]
    if missing:
        raise ResultSetError(f"{csv}: missing required column(s) {', '.join(missing)}")
    if runs.empty:
        raise ResultSetError(f"{csv}: no result rows (only a header)")
    versions = pd.to_numeric(runs["schema_version"], errors="coerce")
    unknown = sorted(
        {str(v) for v in runs["schema_version"][~versions.isin(KNOWN_SCHEMA_VERSIONS)]}
    )
    if unknown:
        raise ResultSetError(
            f"{csv}: schema_version {', '.join(unknown)} is not one this report reads "
            f"(known: {', '.join(map(str, sorted(KNOWN_SCHEMA_VERSIONS)))})"
        )
    # Older sets of a known version may lack columns added later: add them
    # empty so that code downstream can rely on every column existing.
    for col, kind in COLUMN_KINDS.items():
        if col not in runs.columns:
            runs[col] = "" if kind == "str" else np.nan
    for col in NUMERIC_COLUMNS:
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    for col in STRING_COLUMNS:
        runs[col] = runs[col].fillna("").astype(str)
    for col in BOOL_COLUMNS:
        runs[col] = runs[col].map(_parse_bool)
    sizes = runs["batch_size"].map(_batch_value)
    # Only a set with auto cells gets a mixed column; any other keeps numbers.
    runs["batch_size"] = (sizes.astype(object) if sizes.map(is_auto).any()
                          else pd.to_numeric(sizes, errors="coerce"))
    runs["status"] = runs["status"].str.strip().str.lower()
    # A v1 set has no load column: every one of its cells is closed loop.
    runs["load"] = runs["load"].str.strip().replace("", "closed")
    runs["offered_rate"] = runs["offered_rate"].fillna(runs["load"].map(_rate_of_load))
    _add_derived(runs)
    check_validity(runs)
    return runs.copy()  # consolidate the blocks the column fixes above left scattered


def _batch_value(v):
    """A runs.csv batch_size: an int, "auto", or NaN when empty or unreadable."""
    text = str(v).strip()
    if text.lower() == AUTO_BATCH:
        return AUTO_BATCH
    try:
        f = float(text)
    except ValueError:
        return np.nan
    return int(f) if f.is_integer() else f


def _rate_of_load(load: str) -> float:
    """'rate:5000' -> 5000.0; anything else (closed, frac:f) -> NaN (frac needs the row's offered_rate)."""
    if isinstance(load, str) and load.startswith("rate:"):
        try:
            return float(load[5:])
        except ValueError:
            return np.nan
    return np.nan


def _parse_bool(v):
    if isinstance(v, bool):
        return v
    t = str(v).strip().lower()
    if t in ("true", "1", "yes"):
        return True
    if t in ("false", "0", "no"):
        return False
    return np.nan  # unknown (a v1 row, or a failed cell)


def check_validity(runs: pd.DataFrame) -> None:
    """Per-row validity, in columns the report and the recommendation read.

    Adds ``made_before_checks`` (True for rows whose writer recorded no
    ``valid``: v1 sets), ``producer_bound`` (the producers, not the queue,
    limited a closed-loop cell: ``bottleneck == producers``, or their CPU at
    >= 90% of the window for v1 rows), ``saturated`` (an open-loop row that
    did not carry its offered rate: achieved < 95% of offered by more than its window's count can tell, bench.measuring.validity.saturated), ``check_flags`` (what the reader's own checks
    found, "; "-joined), ``exclude_reason`` (why the row is kept out of fits,
    efficiencies and the recommendation: the writer's ``invalid_reason``, the
    reader's flags, producer-bound) and ``usable`` (ok and nothing to exclude).
    """
    ok = runs["status"] == "ok"
    before = runs["valid"].isna()
    runs["made_before_checks"] = before & ok
    prod_cpu = runs["producer_cpu_pct"].copy()
    est = (
        (runs["producer_user_s"] + runs["producer_sys_s"])
        / (runs["producers"] * runs["window_s"])
        * 100
    )
    prod_cpu = prod_cpu.fillna(est)
    runs["producer_cpu_pct"] = prod_cpu
    events = runs["events"].where(runs["events"] > 0)
    cons_us = (runs["consumer_user_s"] + runs["consumer_sys_s"]) / events * 1e6
    runs["consumer_cpu_us_per_event"] = cons_us
    work = runs["work_us_measured"].fillna(runs["work_cpu_us_per_event"]).fillna(runs["work_us"])
    err = runs["overhead_err_us"].fillna(
        (runs["producers"] + runs["consumers"]) * CPU_TICK_S / events * 1e6
        + CALIBRATION_TOLERANCE * work
    )
    bott = runs["bottleneck"].str.strip().str.lower()
    closed = runs["load"] == "closed"
    # In open loop the harness names the producers the bottleneck when the
    # offered rate was carried: the schedule is the limit by design, so it
    # is not a producer-bound point.  What matters there is whether the
    # rate was carried (``saturated`` when not).
    bound = closed & (
        (bott == "producers") | ((bott == "") & (prod_cpu >= PRODUCER_SATURATED_PCT))
    )
    runs["producer_bound"] = bound & ok
    # The harness's own rule (bench.measuring.validity.saturated): short of
    # the offered rate by more than 5% and more than the window's count can
    # tell (achieved_rate_err; 0 where a row lacks it).  Read as a plain 95%
    # line, batch 1000's cells at about 2,100 events/s in a 2 s window (four
    # batches, a count good to 22-24%) "fell short in 3 of 3 repeats" that
    # their rows mark as carried.
    # A closed-loop row has no offered rate (NaN): never short of it.
    short = [short_of_offered(o, e, c) for o, e, c in
             zip(runs["offered_rate"], runs["events_per_s"], runs["achieved_rate_err"].fillna(0.0))]
    runs["saturated"] = ok & ~closed & pd.Series(short, index=runs.index, dtype=bool)
    clock = runs.loc[ok, "cpu_mhz"].median()
    flags, excl = [], []
    for i in runs.index:
        f = []
        if not ok[i]:
            flags.append("")
            excl.append("")
            continue
        ov = runs.at[i, "overhead_us_per_event"]
        if pd.notna(ov) and pd.notna(err[i]) and ov < -err[i]:
            f.append(
                f"negative queue overhead ({ov:.1f} us/event, beyond its error of "
                f"{err[i]:.1f} us): the work cost less than the {work[i]:.1f} us assumed"
            )
        cu = cons_us[i]
        if pd.notna(cu) and pd.notna(work[i]) and work[i] > 0 and cu < 0.9 * work[i]:
            f.append(
                f"consumer CPU per event ({cu:.1f} us) below the {work[i]:.1f} us of work "
                "it ran: the CPU ran faster than calibrated"
            )
        drift = runs.at[i, "work_drift_pct"]
        # As the harness does (bench.measuring.validity.MIN_DRIFT_US): the
        # cost of work under 1 us is within the timer's noise, not a drift.
        if pd.notna(drift) and drift > MAX_WORK_DRIFT_PCT and not work[i] < MIN_DRIFT_US:
            f.append(f"work cost drifted {drift:.0f}% from the calibration (> {MAX_WORK_DRIFT_PCT:g}%)")
        mhz = runs.at[i, "cpu_mhz"]
        if pd.notna(mhz) and pd.notna(clock) and clock > 0 and abs(mhz - clock) / clock * 100 > MAX_CLOCK_DRIFT_PCT:
            f.append(
                f"CPU clock {mhz:.0f} MHz, {abs(mhz - clock) / clock * 100:.0f}% from the set's median "
                f"{clock:.0f} MHz (> {MAX_CLOCK_DRIFT_PCT:g}%): the CPU speed changed between cells"
            )
        steal = runs.at[i, "steal_pct"]
        if pd.notna(steal) and steal > MAX_STEAL_PCT:
            f.append(f"steal time {steal:.1f}% (> {MAX_STEAL_PCT:g}%)")
        flags.append("; ".join(f))
        reasons = []
        if runs.at[i, "valid"] is False or runs.at[i, "valid"] == False:  # noqa: E712
            reasons.append(runs.at[i, "invalid_reason"] or "marked invalid by the harness")
        # The harness's own verdict already names drift, steal or negative
        # overhead where it found them: the reader's re-check of the same kind
        # would only say it twice (its own findings on other kinds still count).
        said = reasons[0] if reasons else ""
        reasons += [x for x in f if not any(k in said and k in x for k in _SAME_KIND)]
        if bound[i]:
            reasons.append(
                f"producer-bound (producers at {prod_cpu[i]:.0f}% CPU): measures the supply, "
                "not the queue"
            )
        excl.append("; ".join(reasons))
    runs["check_flags"] = flags
    runs["exclude_reason"] = excl
    runs["usable"] = ok & (runs["exclude_reason"] == "")


#: Words that mark one kind of check in both the harness's and the reader's reasons.
_SAME_KIND = ("drift", "steal", "negative", "clock")


def excluded_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """ok rows kept out of fits, efficiencies and the recommendation, with why."""
    ex = runs[(runs["status"] == "ok") & ~runs["usable"]]
    return ex.sort_values(["cell_id", "repeat"]).reset_index(drop=True)


def usable_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """ok, valid, not producer-bound, closed-loop rows: what fits and recommendations use."""
    return runs[runs["usable"] & (runs["load"] == "closed")]


def _add_derived(runs: pd.DataFrame) -> None:
    """Per-row derived columns (see DERIVED_COLUMNS)."""
    # All the CPU the cell's processes used, per event: what carrying a rate costs.
    cpu_s = runs[["producer_user_s", "producer_sys_s", "consumer_user_s", "consumer_sys_s"]].sum(
        axis=1, min_count=4
    )
    if "producer_pacing_s" in runs:
        # The open-loop producers' pacing spin is the harness's CPU, not the queue's.
        cpu_s = (cpu_s - pd.to_numeric(runs["producer_pacing_s"], errors="coerce").fillna(0.0)).clip(lower=0)
    runs["cpu_us_per_event"] = cpu_s / runs["events"].where(runs["events"] > 0) * 1e6
    runs["ctx_per_event"] = runs["ctx_voluntary_per_event"].fillna(0) + runs[
        "ctx_involuntary_per_event"
    ].fillna(0)
    both_missing = runs["ctx_voluntary_per_event"].isna() & runs["ctx_involuntary_per_event"].isna()
    runs.loc[both_missing, "ctx_per_event"] = np.nan
    busy = runs["cpu_busy_pct"].clip(lower=0, upper=100)
    # Not clipped: useful work above the busy % (a negative overhead) means
    # the work cost less than calibrated, and the saturation plot must show it.
    runs["useful_pct"] = runs["useful_work_fraction"] * 100
    runs["overhead_pct"] = busy - runs["useful_pct"]
    runs["idle_pct"] = 100 - busy


def load_meta(path: str | os.PathLike) -> dict:
    """Read and validate one ``meta.json``; raises :class:`ResultSetError`."""
    p = Path(path)
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ResultSetError(f"{p}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise ResultSetError(f"{p}: cannot be read as JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ResultSetError(f"{p}: expected a JSON object")
    version = meta.get("schema_version")
    if version is not None and version not in KNOWN_SCHEMA_VERSIONS:
        raise ResultSetError(
            f"{p}: schema_version {version!r} is not one this report reads "
            f"(known: {', '.join(map(str, sorted(KNOWN_SCHEMA_VERSIONS)))})"
        )
    return meta


def load_result_set(path: str | os.PathLike) -> ResultSet:
    """Load ``runs.csv`` and ``meta.json`` from a result folder.

    ``runs.csv`` is the data of record and must exist.  A missing ``meta.json``
    is tolerated (with a warning) so that a set whose sweep died before writing
    it can still be reported; the core count then comes from runs.csv.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ResultSetError(f"{folder}: not a directory (expected a result set folder)")
    runs = load_runs(folder / "runs.csv")
    warnings: list[str] = []
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = load_meta(meta_path)
    else:
        meta = {}
        warnings.append(f"{meta_path}: missing; machine details are taken from runs.csv")
    return ResultSet(path=folder, runs=runs, meta=meta, warnings=warnings)


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "ok"]


def failed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows whose status is not ok, in cell order."""
    bad = runs[runs["status"] != "ok"]
    return bad.sort_values(["cell_id", "repeat"]).reset_index(drop=True)


def _metric_columns(runs: pd.DataFrame) -> list[str]:
    skip = set(CELL_KEYS) | {"schema_version", "repeat", "cpu_count", "load"}
    cols = [c for c in NUMERIC_COLUMNS if c not in skip] + list(DERIVED_COLUMNS) + [
        "consumer_cpu_us_per_event"
    ]
    return [c for c in cols if c in runs.columns]


def too_few_valid(n_runs, n_measured):
    """A repeated cell (2 or more runs) left with fewer than 2 usable repeats.

    Its noise cannot be judged, so nothing is recommended or verified from
    it.  Takes :func:`aggregate`'s ``n_runs`` and ``n_measured`` (or a verify
    candidate's repeats and valid repeats), as numbers or as Series alike.
    """
    return (n_runs >= 2) & (n_measured < 2)


def aggregate(runs: pd.DataFrame, closed_only: bool = True) -> pd.DataFrame:
    """One row per cell: median, ``_min`` and ``_max`` of every metric over ok repeats.

    The median column keeps the metric's own name (``events_per_s`` is the
    median events/s).  Bookkeeping columns: ``n_runs`` (repeats seen), ``n_ok``
    (repeats that succeeded), ``failed`` (True when no repeat succeeded),
    ``status_summary`` and ``error`` (first error seen), ``n_measured`` (the
    repeats the medians rest on: the usable ones, or the ok ones of an
    excluded cell), ``spread`` (events/s (max - min) / median over those, NaN
    with fewer than 2 of them).  Cells with no ok
    repeat keep NaN metrics, never zeros.
    """
    if closed_only:
        # Scaling curves and the recommendation are closed-loop questions;
        # open-loop cells (load != "closed") answer latency at a given rate.
        runs = runs[runs["load"] == "closed"]
    keys = ["cell_id", *CELL_KEYS]
    metrics = _metric_columns(runs)
    book = (
        runs.groupby(keys, dropna=False, sort=True)
        .agg(
            n_runs=("repeat", "size"),
            n_ok=("status", lambda s: int((s == "ok").sum())),
            status_summary=("status", _status_summary),
            error=("error", _first_error),
            cpu_count=("cpu_count", "max"),
        )
        .reset_index()
    )
    # Medians rest on the usable repeats of a cell when it has any; a cell
    # with none (every repeat invalid or producer-bound) is aggregated over
    # its ok repeats so it can still be drawn, and marked ``excluded``.
    okr = ok_runs(runs)
    has_usable = okr.groupby(keys, dropna=False)["usable"].transform("any")
    ok = okr[okr["usable"] | ~has_usable]
    if ok.empty:
        names = [m + sfx for sfx in ("", "_min", "_max") for m in metrics]
        stats = pd.concat(
            [book[keys], pd.DataFrame(np.nan, index=book.index, columns=names)], axis=1
        ).assign(n_measured=0)
    else:
        g = ok.groupby(keys, dropna=False, sort=True)[metrics]
        med = g.median()
        lo = g.min().add_suffix("_min")
        hi = g.max().add_suffix("_max")
        n_measured = ok.groupby(keys, dropna=False, sort=True).size().rename("n_measured")
        stats = pd.concat([med, lo, hi, n_measured], axis=1).copy().reset_index()
    out = book.merge(stats, on=keys, how="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (out["events_per_s_max"] - out["events_per_s_min"]) / out["events_per_s"]
    flags = (
        runs.groupby(keys, dropna=False)
        .agg(
            n_usable=("usable", "sum"),
            exclude_reason=("exclude_reason", _first_error),
            made_before_checks=("made_before_checks", "any"),
            producer_bound=("producer_bound", "any"),
            saturated=("saturated", "any"),
            producers_setting=("producers_setting", "first"),
        )
        .reset_index()
    )
    out = out.merge(flags, on=keys, how="left")
    out = out.assign(
        failed=out["n_ok"] == 0,
        # The spread of the repeats the medians rest on: a cell with one
        # usable repeat among several ok ones has no spread to judge, not 0.
        n_measured=out["n_measured"].fillna(0).astype(int),
        spread=spread.where(out["n_measured"] >= 2),
        excluded=(out["n_ok"] > 0) & (out["n_usable"] == 0),
    )
    return out.sort_values([*SCENARIO_KEYS, "backend", "batch_size", SCALING_AXIS],
                           key=batch_sort_key).reset_index(drop=True)


def _status_summary(s: pd.Series) -> str:
    counts = s.value_counts()
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


def _first_error(s: pd.Series) -> str:
    for v in s:
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def find_result_dirs(root: str | os.PathLike = "results") -> list[Path]:
    """Result folders under ``root`` that contain runs.csv, oldest first.

    Folder names start with a UTC timestamp, so sorting by name sorts by time.
    """
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if (p / "runs.csv").is_file())


def default_result_dir(root: str | os.PathLike | None = None) -> Path:
    """The result set notebooks open: ``$TQ_RESULTS_DIR`` or the newest under results/.

    ``root`` defaults to the ``results/`` folder of the repository this module
    lives in, so a notebook finds it whatever its working directory.
    """
    env = os.environ.get("TQ_RESULTS_DIR")
    if env:
        return Path(env)
    if root is None:
        root = Path(__file__).resolve().parents[2] / "results"
    dirs = find_result_dirs(root)
    if not dirs:
        raise ResultSetError(
            f"{root}: no result set (a folder with runs.csv) found; "
            "run `python -m bench sweep` or set TQ_RESULTS_DIR"
        )
    return dirs[-1]
