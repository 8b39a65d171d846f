"""The axes a result set is read along: batch sizes (``"auto"`` among them) and scenarios.

A *scenario* is one combination of the axes held fixed along a scaling
curve (:data:`SCENARIO_KEYS`); the report draws and recommends per
scenario.  Batch sizes are numbers except turbo's adaptive ``"auto"``
(:data:`bench.measuring.backends.base.AUTO_BATCH`, whose owner is the
harness), which sorts after every fixed size and is written as itself.
The loader (:mod:`bench.analysing.loading`) reads ``runs.csv`` into these
values; everything downstream orders, labels and selects with them here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.measuring.backends.base import AUTO_BATCH, is_auto

__all__ = [
    "AUTO_BATCH",
    "AUTO_PRODUCERS",
    "SCALING_AXIS",
    "SCENARIO_KEYS",
    "batch_label",
    "batch_rank",
    "batch_sort_key",
    "is_auto",
    "number_text",
    "plain",
    "scenario_label",
    "scenario_slug",
    "scenarios",
    "select",
]

#: The scaling axis of every curve: producers are usually fixed (often 1) and
#: the user's question is how many consumers to run.
SCALING_AXIS = "consumers"

#: Axes that are held fixed along one scaling curve.  One combination of their
#: values is one *scenario*; the report draws and recommends per scenario
#: because the user's per-event work (``work_us``) changes the answer.
SCENARIO_KEYS = ("start_method", "producers", "workload", "event_bytes", "work_us")
#: ``producers`` of a scenario whose cells sized their producers themselves
#: (``producers_setting == "auto"``, bench.measuring.supply): their counts differ
#: from cell to cell, and the cells form one scenario by that setting.
AUTO_PRODUCERS = "auto"


def batch_rank(batch_size) -> float:
    """Sort rank of a batch size: fixed sizes by size, then "auto" (for ordering only)."""
    if is_auto(batch_size):
        return math.inf
    try:
        return float(batch_size)
    except (TypeError, ValueError):
        return math.nan


def batch_sort_key(s: pd.Series) -> pd.Series:
    """``sort_values(key=...)``: batch_size by :func:`batch_rank`, other columns as they are."""
    return s.map(batch_rank) if s.name == "batch_size" else s


def batch_label(batch_size) -> str:
    """How a batch size is written in tables and legends: "1000", "auto"."""
    if is_auto(batch_size):
        return AUTO_BATCH
    try:
        f = float(batch_size)
    except (TypeError, ValueError):
        return str(batch_size)
    return f"{f:g}" if not f.is_integer() else str(int(f))


def scenarios(cells: pd.DataFrame) -> list[dict]:
    """Distinct combinations of :data:`SCENARIO_KEYS` as dicts, by per-event work first.

    Sorted so that the last scenario has the largest ``work_us``, the one
    closest to the CPU-heavy pipelines turbo_queue is for.
    """
    combos = cells[list(SCENARIO_KEYS)].copy()
    if "producers_setting" in cells:
        auto = cells["producers_setting"] == AUTO_PRODUCERS
        combos["producers"] = combos["producers"].astype(object).where(~auto, AUTO_PRODUCERS)
    combos = combos.drop_duplicates()
    combos = combos.sort_values(["work_us", "producers", "workload", "event_bytes", "start_method"],
                                key=lambda s: s.map(str) if s.name == "producers" else s)
    return [dict(zip(SCENARIO_KEYS, _py(row))) for row in combos.itertuples(index=False)]


def _py(values) -> list:
    """numpy scalars -> plain Python, so scenarios print and compare cleanly."""
    out = []
    for v in values:
        v = plain(v)
        if isinstance(v, float) and v.is_integer():
            v = int(v) if not math.isnan(v) else v
        out.append(v)
    return out


def select(cells: pd.DataFrame, **axes) -> pd.DataFrame:
    """Rows of ``cells`` matching every given axis value (None = any)."""
    mask = pd.Series(True, index=cells.index)
    if "producers" in axes and axes["producers"] is not None and "producers_setting" in cells:
        # An auto scenario is its setting; a fixed count never takes in auto cells.
        auto = cells["producers_setting"] == AUTO_PRODUCERS
        mask &= auto if axes["producers"] == AUTO_PRODUCERS else ~auto
        if axes["producers"] == AUTO_PRODUCERS:
            axes = {k: v for k, v in axes.items() if k != "producers"}
    for key, value in axes.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple, set)):
            mask &= cells[key].isin(list(value))
        else:
            mask &= cells[key] == value
    return cells[mask]


def scenario_label(scenario: dict) -> str:
    """Short human label, e.g. 'W=50 us, busy, 300 B events, 1 producer, fork'."""
    p = scenario["producers"]
    return (
        f"W={number_text(scenario['work_us'])} us, {scenario['workload']}, "
        f"{number_text(scenario['event_bytes'])} B events, {number_text(p)} producer{'s' if p != 1 else ''}, "
        f"{scenario['start_method']}"
    )


def scenario_slug(scenario: dict) -> str:
    """File-name-safe id, e.g. 'w50-busy-e300-p1-fork'."""
    return (
        (
            f"w{number_text(scenario['work_us'])}-{scenario['workload']}-e{number_text(scenario['event_bytes'])}"
            f"-p{number_text(scenario['producers'])}-{scenario['start_method']}"
        )
        .replace(".", "_")
        .replace("/", "_")
    )


def number_text(v) -> str:
    """A count or size as written: 4.0 -> "4", 2.5 -> "2.5", "auto" as it is."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def plain(v):
    """A numpy scalar as the plain Python value (keys and JSON compare and print cleanly)."""
    return v.item() if isinstance(v, np.generic) else v
