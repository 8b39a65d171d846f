"""The report's lists of what it left out: failed repeats and invalid or flagged ones."""

from __future__ import annotations

import pandas as pd

from bench.analysing.loading import excluded_runs


def failed_section(doc, fails: pd.DataFrame):
    doc.h(2, "Failed cells")
    if fails.empty:
        doc.p("None: every repeat of every cell finished ok.")
        return
    doc.p("These repeats did not finish ok. They are excluded from medians, fits and plots.")
    rows = [
        [f"`{r.cell_id}`", r.repeat, r.status, (r.error or "").replace("\n", " ")[:200]]
        for r in fails.itertuples()
    ]
    doc.table(["cell", "repeat", "status", "error"], rows)


def excluded_section(doc, runs: pd.DataFrame):
    """Rows kept out of fits, efficiencies and the recommendation, and why.

    Rows of a set written before the harness checked validity (schema v1)
    are marked "flagged (made before validity checks)": the reasons are what
    the checks would have found, judged from the columns such a set has.
    """
    doc.h(2, "Invalid and flagged cells")
    ex = excluded_runs(runs)
    before = bool(runs.loc[runs["status"] == "ok", "made_before_checks"].any())
    if before:
        doc.p(
            "This result set was made before the harness checked each cell's validity. The "
            "rows below are **flagged (made before validity checks)**: the reasons are what those "
            "checks would flag, judged from the CPU times, overhead and calibration it recorded."
        )
    if ex.empty:
        doc.p("None: every ok repeat passed the validity checks and no producer-bound cell was seen.")
        return
    doc.p(
        f"{len(ex)} ok repeat(s) in {ex['cell_id'].nunique()} cell(s) are listed here and left out "
        "of fits, efficiencies and the recommendation."
    )
    rows = [
        [
            f"`{r.cell_id}`",
            r.repeat,
            "flagged (made before validity checks)" if r.made_before_checks else "invalid",
            (r.exclude_reason or "").replace("\n", " ")[:300],
        ]
        for r in ex.itertuples()
    ]
    doc.table(["cell", "repeat", "state", "reason"], rows)
