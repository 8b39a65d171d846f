"""Adaptive repeats: more repeats for the cells whose numbers are too noisy to use.

After its planned repeats a sweep looks at every cell's valid repeats: the
repeats the report uses (status ok, valid, not flagged by the reader's own
checks, not producer-bound: ``usable`` in bench.analysing.loading), or, where
the rows cannot be read that way, those the harness marked valid.  A cell needs more when it has fewer than
2 of them, or when their events/s spread ``(max - min) / median`` exceeds the
noise threshold above which the report refuses to recommend from a cell
(bench.analysing.loading.DEFAULT_NOISE_THRESHOLD).  Each round gives every
such cell one more repeat, in the same interleaved, seeded-shuffled order as
the planned repeats, so that a drift of the machine spreads over the extra
repeats as it does over the planned ones; rounds stop when no cell needs
more, every cell needing more has ``max_repeats`` repeats, or the next round
would not fit in the sweep's ``time_budget``.

Everything here is a pure function of the rows already in runs.csv, so a
resumed sweep picks up where the interrupted one left off.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def noise_threshold() -> float:
    """The threshold the report uses (imported late: the analysis pulls in pandas)."""
    from bench.analysing.loading import DEFAULT_NOISE_THRESHOLD

    return DEFAULT_NOISE_THRESHOLD


def _valid(row: dict) -> bool:
    if "usable" in row:
        return bool(row["usable"])
    return row.get("status") == "ok" and str(row.get("valid", "")).strip().lower() in (
        "true", "1", "yes")


def with_usable(rows: list[dict], runs_csv) -> list[dict]:
    """``rows`` (runs.csv as dicts) with the report's ``usable`` verdict added to each.

    The report's reader re-checks every row (bench.analysing.loading); a cell
    repeated until the harness calls it quiet but the report still excludes
    would end the sweep without a recommendation.  Unreadable that way: the
    rows as they are (the harness's ``valid``).
    """
    try:
        from bench.analysing.loading import load_runs

        runs = load_runs(runs_csv)
    except Exception:  # noqa: BLE001 - the sweep must finish whatever the reader thinks
        return rows
    usable = {(c, int(r)): bool(u) for c, r, u in zip(runs["cell_id"], runs["repeat"], runs["usable"])}
    return [{**row, "usable": usable.get((row["cell_id"], int(row["repeat"])), False)}
            for row in rows]


def spread(values: list[float]) -> float | None:
    """(max - min) / median of events/s; None with fewer than 2 values or a zero median."""
    if len(values) < 2:
        return None
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med > 0 else None


def cell_state(rows: Iterable[dict]) -> dict[str, dict]:
    """Per cell id: repeats run (any status), next repeat index, valid events/s."""
    state: dict[str, dict] = {}
    for row in rows:
        s = state.setdefault(row["cell_id"], {"repeats": 0, "next": 0, "valid_eps": []})
        s["repeats"] += 1
        s["next"] = max(s["next"], int(row["repeat"]) + 1)
        if _valid(row):
            try:
                s["valid_eps"].append(float(row["events_per_s"]))
            except (TypeError, ValueError):
                pass
    return state


def why_more(state: dict | None, threshold: float) -> str:
    """Why a cell needs more repeats ('' when it does not)."""
    if state is None:
        return "no repeat recorded"
    eps = state["valid_eps"]
    if len(eps) < 2:
        return f"{len(eps)} valid repeat{'s' if len(eps) != 1 else ''} (< 2)"
    s = spread(eps)
    if s is not None and s > threshold:
        return f"events/s spread {s:.0%} > {threshold:.0%}"
    return ""


def needing_more(cell_ids: Iterable[str], rows: Iterable[dict], threshold: float) -> dict[str, str]:
    """cell id -> why it needs more repeats, for the cells that do."""
    state = cell_state(rows)
    out = {}
    for cid in cell_ids:
        why = why_more(state.get(cid), threshold)
        if why:
            out[cid] = why
    return out


def next_round(
    cell_ids: Iterable[str], rows: list[dict], threshold: float, max_repeats: int
) -> tuple[dict[str, int], dict[str, str]]:
    """(cell id -> repeat index to run next, cell id -> why it stays as it is at max_repeats)."""
    state = cell_state(rows)
    run, capped = {}, {}
    for cid, why in needing_more(cell_ids, rows, threshold).items():
        s = state.get(cid)
        if s is not None and s["repeats"] >= max_repeats:
            capped[cid] = why
        else:
            run[cid] = s["next"] if s else 0
    return run, capped


__all__ = ["with_usable", "cell_state", "needing_more", "next_round", "noise_threshold", "spread", "why_more"]
