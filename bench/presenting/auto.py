"""The report's ``batch_size="auto"`` section: auto against the best fixed size, load by load.

The figures and verdicts come from :mod:`bench.analysing.auto`; this module
only writes them: a table per scenario (throughput ratio, p99 queue-wait
and end-to-end ratios, median (min-max) over paired repeats), one sentence
per load saying where auto wins, loses or the data cannot decide, and the
issue's goals met or missed.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.analysing.auto import EDGE_SHARE, AutoComparison, goal_lines, load_label
from bench.analysing.axes import batch_label, scenario_label
from bench.presenting import plots
from bench.presenting.csvout import write_comparisons

fmt = plots.fmt_float


def auto_section(doc, comparisons_by_scenario: list[tuple[dict, list[AutoComparison]]]) -> None:
    """One sub-section per scenario with auto cells; nothing when no scenario has any."""
    todo = [(s, cs) for s, cs in comparisons_by_scenario if cs]
    if not todo:
        return
    doc.h(2, "batch_size='auto' against the best fixed batch size")
    doc.p("Per load: the best fixed turbo batch size (closed loop: the most events/s; open loop: "
          "the lowest p99 latency among the sizes that carried the load), and auto / best per "
          "repeat, paired by repeat: median (min-max). Throughput ratio > 1 and latency ratios "
          "< 1 favour auto. A fraction load is a fraction of each cell's own closed-loop median, "
          "so the offered rates differ a little: both are shown. A load at "
          f"{EDGE_SHARE:.0%} or more of the best fixed size's own closed-loop median is that "
          "size's maximum more than a load in between: its reason says so.")
    for s, cs in todo:
        doc.h(3, f"auto: {scenario_label(s)}")
        rows = []
        for c in cs:
            rows.append([
                load_label(c), c.consumers, batch_label(c.best_batch),
                _rate(c.auto_offered), _rate(c.best_offered),
                f"{c.auto_eps:,.0f}" if c.auto_eps == c.auto_eps else "-",
                c.eps.text(3), fmt(c.auto_qwait_p99_ms, 3), fmt(c.best_qwait_p99_ms, 3),
                c.qwait_p99.text(), c.latency_p99.text(),
                fmt(c.auto_mean_batch, 3), f"{c.pairs} ({c.basis})", f"**{c.verdict}**",
            ])
        doc.table(["load", "consumers", "best fixed", "auto offered/s", "best offered/s",
                   "auto events/s", "events/s ratio", "auto qwait p99 ms", "best qwait p99 ms",
                   "qwait p99 ratio", "e2e p99 ratio", "auto mean batch", "pairs", "auto"], rows)
        doc.ul([f"{load_label(c)}, {c.consumers} consumer(s): auto **{c.verdict}** against batch "
                f"{batch_label(c.best_batch)}: {c.reason}." for c in cs])
        doc.p("The issue's goals:")
        doc.ul(goal_lines(cs))


def _rate(v: float) -> str:
    return f"{v:,.0f}" if isinstance(v, float) and math.isfinite(v) else "-"


def write_csv(path: Path, comparisons_by_scenario) -> None:
    """auto_comparison.csv: one row per comparison, ratios flattened (median, min, max, the median's interval)."""
    write_comparisons(path, comparisons_by_scenario,
                      {"eps": "eps_ratio", "qwait_p99": "qwait_p99_ratio", "latency_p99": "latency_p99_ratio"})
