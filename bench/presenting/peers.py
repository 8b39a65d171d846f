"""The report's "turbo against its peers" section: per-event turbo against each peer, cell by cell.

The figures and verdicts come from :mod:`bench.analysing.peers`; this module
only writes them: a table per scenario and ``peers.csv``.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.analysing.axes import batch_label, scenario_label
from bench.analysing.peers import MIXED, PUT_PATH, QUEUE, WITHIN, PeerComparison
from bench.analysing.recommend import backend_name
from bench.presenting.csvout import write_comparisons


def peers_section(doc, comparisons_by_scenario: list[tuple[dict, list[PeerComparison]]]) -> None:
    """One table per scenario with a peer; nothing when no scenario has one."""
    todo = [(s, cs) for s, cs in comparisons_by_scenario if cs]
    if not todo:
        return
    doc.h(2, "turbo_queue (one put per event) against its peers, cell by cell")
    doc.p(
        "turbo's events/s over the peer's in the same cell, paired by repeat (the two ran in the "
        "same interleaved round): median (min-max) over the pairs. Basis "
        f"**{QUEUE}**: both repeats pass every check, so the queues are compared. Basis "
        f"**{PUT_PATH}**: both pass every check but are producer-bound (the producers at full CPU "
        "set the rate), so the ratio, per producer, compares what one producer's put path "
        "carries; such cells are kept out of fits and recommendations but are valid evidence about "
        f"the producer side. Basis **{MIXED}**: one of each at the same producer count (the "
        "producer-bound side's ratio is then a bound, not a tie). A pair with a flagged repeat "
        "counts for nothing. A verdict needs 2 "
        f"pairs or more; \"within {WITHIN:.0%}\" asks whether every pair is at or above "
        f"{1 - WITHIN:.2f}. \"Ahead\" means every pair on one side; \"odds if alike\" is how often "
        "that happens when the two are alike and the machine's noise alone orders each pair (a "
        "sign test: 1 in 2^n for n pairs). It ignores how far apart the pairs are."
    )
    for s, cs in todo:
        doc.h(3, f"peers: {scenario_label(s)}")
        rows = []
        for c in cs:
            rows.append([
                backend_name(c.peer), c.consumers, batch_label(c.batch_size),
                f"{c.turbo_producers} / {c.peer_producers}",
                _eps(c.turbo_eps), _eps(c.peer_eps), c.ratio.text(),
                c.basis or "-", f"{c.pairs} ({c.left_out} left out)",
                f"**{c.verdict}**" if c.verdict else "-",
                f"1 in {round(1 / c.chance)}" if c.chance == c.chance else "-", c.within or "-",
            ])
        doc.table(["peer", "consumers", "batch", "producers turbo / peer", "turbo events/s",
                   "peer events/s", "ratio", "basis", "pairs", "verdict", "odds if alike",
                   f"within {WITHIN:.0%}"], rows)
        notes = [f"{backend_name(c.peer)}, {c.consumers} consumer(s), batch {batch_label(c.batch_size)}: "
                 f"{c.sentence()}." for c in cs if not c.pairs or c.left_out]
        if notes:
            doc.p("Left out:")
            doc.ul(notes)


def _eps(v: float) -> str:
    return f"{v:,.0f}" if isinstance(v, float) and math.isfinite(v) else "-"


def write_csv(path: Path, comparisons_by_scenario) -> None:
    """peers.csv: one row per comparison, the ratio flattened (median, min, max)."""
    write_comparisons(path, comparisons_by_scenario, {"ratio": "ratio"})
