"""Comparison tables as CSV (auto_comparison.csv, peers.csv): made from the report's dataclasses.

One row per comparison, its scenario's axes first, every
:class:`bench.analysing.auto.Ratio` field flattened into median, min and
max columns, so a spreadsheet or a notebook reads them without the report.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd


def write_comparisons(path: Path, comparisons_by_scenario, ratios: dict[str, str]) -> None:
    """Write ``path``; ``ratios`` maps each Ratio field to its column (``X``, ``X_min``, ``X_max``).

    Nothing is written when there is no comparison.
    """
    rows = []
    for s, cs in comparisons_by_scenario:
        for c in cs:
            d = asdict(c)
            d.pop("scenario", None)
            for name, column in ratios.items():
                r = d.pop(name)
                d.update({column: r["median"], f"{column}_min": r["lo"], f"{column}_max": r["hi"]})
            rows.append({**s, **d})
    if rows:
        pd.DataFrame(rows).to_csv(path, index=False)
