"""The report's account of where a result set was measured, and how to measure it again.

The "Machine and sweep" section (host, cores seen, memory, commit, the busy
loop's calibration and the CPU's speed before the sweep, the command that
reruns the sweep and its configuration as run) and the warning when that
speed was not steady.  All of it comes from meta.json alone
(:data:`bench.schema.META_KEYS`), so an old set is described as it was run.
"""

from __future__ import annotations

import json
import shlex

from bench.analysing.axes import number_text
from bench.analysing.loading import ResultSet
from bench.schema import SWEEP_AXES, SWEEP_SCALARS

#: meta["sweep"] keys that ``python -m bench sweep`` takes as flags (the grid
#: axes and the scalar settings), in the order the command prints them.
SWEEP_FLAGS = SWEEP_AXES + SWEEP_SCALARS


def reproduce_command(meta: dict) -> tuple[str, bool]:
    """(command, exact): the sweep's own command line, or one rebuilt from its config.

    The rebuilt one passes every axis explicitly (after count expressions like
    "cores" were resolved on the original machine), so it reruns the same grid.
    """
    sweep = meta.get("sweep") or {}
    cmd = sweep.get("command")
    if isinstance(cmd, list):
        cmd = shlex.join(map(str, cmd))
    if cmd:
        return str(cmd), True
    parts = ["python -m bench sweep"]
    for key in SWEEP_FLAGS:
        value = sweep.get(key)
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(number_text(v) for v in value)
        else:
            value = number_text(value)
        parts.append(f"--{key.replace('_', '-')} {shlex.quote(value)}")
    return " ".join(parts), False


def calibration_text(meta: dict) -> str:
    """The busy loop's iteration count per work setting, over the rounds that calibrated it.

    Per round (``calibrate = "round"``) the spread says how far the machine's
    speed moved between rounds: the same 20 us took fewer iterations in a
    slow spell.
    """
    first = meta.get("calibration") or {}
    cals = [first] + [c for _, c in sorted((meta.get("calibrations") or {}).items(), key=lambda kv: int(kv[0]))]
    per_setting: dict[str, list[int]] = {}
    for cal in cals:
        for work, n in (cal.get("busy_iterations") or {}).items():
            per_setting.setdefault(work, []).append(n)
    if not per_setting:
        return "no busy work calibrated"
    how = f"calibrated in each of {len(cals)} rounds" if len(cals) > 1 else "calibrated once"
    parts = []
    for work in sorted(per_setting, key=float):
        counts = per_setting[work]
        span = f"{min(counts):,}" if min(counts) == max(counts) else f"{min(counts):,}-{max(counts):,}"
        parts.append(f"{work} us = {span} iterations")
    return f"{how}: " + "; ".join(parts)


#: A share of speed samples off their median by more than 10% above which the report warns.
UNSTEADY_SHARE = 0.10


def speed_text(speed: dict | None) -> str:
    """meta.json's machine_speed in words (bench.measuring.work.speed_summary)."""
    if not speed:
        return "not sampled"
    q = speed["ns_per_iteration"]
    return (f"{q['median']:.1f} ns per busy-loop iteration (p10-p90 {q['p10']:.1f}-{q['p90']:.1f}, "
            f"min-max {q['min']:.1f}-{q['max']:.1f}) over {speed['samples']} samples in "
            f"{speed.get('watch_s', '?')} s; {speed['share_off_median_by_10pct']:.0%} more than 10% "
            "from the median")


def speed_warning(speed: dict | None) -> str | None:
    """A warning when the CPU's speed moved before the sweep as much as the drift check allows, else None."""
    if not speed or speed["share_off_median_by_10pct"] <= UNSTEADY_SHARE:
        return None
    return (f"This machine's CPU speed was not steady before the sweep: "
            f"{speed['share_off_median_by_10pct']:.0%} of the busy loop's 5 ms samples were more than "
            f"10% from their median, the fastest {speed['max_over_min']:.1f}x the slowest. Cells with "
            "work will often fail the work-drift check (10%) and be left out; `python -m bench calibrate "
            "--watch 15` shows it again.")


def machine_section(doc, rs: ResultSet, cores):
    meta = rs.meta
    doc.h(2, "Machine and sweep")
    mem = meta.get("memory_total_bytes")
    rows = [
        ["result set", f"`{rs.path}`"],
        ["host", meta.get("hostname", "?")],
        ["CPU model", meta.get("cpu_model", "?")],
        ["logical cores seen", cores if cores else "unknown"],
        ["physical cores", meta.get("cpu_count_physical", "?")],
        ["memory", f"{mem / 2**30:.1f} GiB" if isinstance(mem, (int, float)) else "?"],
        ["platform", meta.get("platform", "?")],
        ["python", meta.get("python", "?")],
        ["git commit", f"`{meta.get('git_commit') or 'unknown'}`"],
        ["started (UTC)", meta.get("started_utc", "?")],
        [
            "finished (UTC)",
            meta.get("finished_utc") or "? (not recorded: the sweep may have stopped early)",
        ],
        ["schema version", meta.get("schema_version", "?")],
        ["cells / rows", f"{rs.runs['cell_id'].nunique()} / {len(rs.runs)}"],
        ["busy loop", calibration_text(meta)],
        ["CPU speed before the sweep", speed_text(meta.get("machine_speed"))],
    ]
    doc.table(["", ""], rows)
    doc.p(
        f"This machine has {cores if cores else 'an unknown number of'} logical cores. Throughput at "
        "more consumers than cores, and every dashed scaling-law curve past the largest measured "
        "count, is a **model** (the Universal Scalability Law fitted to the measured points), not "
        "a measurement: a 2-core laptop cannot show 40-core behaviour."
    )
    cmd, exact = reproduce_command(meta)
    doc.p(
        "Reproduce the sweep with"
        + ("" if exact else " (every axis spelled out from meta.json's sweep config)")
        + ":"
    )
    doc.code(cmd)
    if meta.get("sweep"):
        doc.p("Sweep configuration as run:")
        doc.code(json.dumps(meta["sweep"], indent=2, sort_keys=True, default=str))
