"""Comparison tables as CSV (auto_comparison.csv, peers.csv): made from the report's dataclasses.

One row per comparison, its scenario's axes first, every
:class:`bench.analysing.auto.Ratio` field flattened into median, min, max
and confidence-interval (``_ci_lo``, ``_ci_hi``) columns, so a spreadsheet
or a notebook reads them without the report.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd


def write_comparisons(path: Path, comparisons_by_scenario, ratios: dict[str, str]) -> None:
    """Write ``path``; ``ratios`` maps each Ratio field to its column (``X``, ``X_min``, ``X_max``, ``X_ci_lo``, ``X_ci_hi``).

    Nothing is written when there is no comparison.
    """
    rows = []
    for s, cs in comparisons_by_scenario:
        for c in cs:
            d = asdict(c)
            d.pop("scenario", None)
            for name, column in ratios.items():
                r = d.pop(name)
                d.update({column: r["median"], f"{column}_min": r["lo"], f"{column}_max": r["hi"],
                          f"{column}_ci_lo": r["ci_lo"], f"{column}_ci_hi": r["ci_hi"]})
            rows.append({**s, **d})
    if rows:
        pd.DataFrame(rows).to_csv(path, index=False)
