"""``python -m bench compare A B``: per-cell ratio of two result sets, as a CI guard.

Cells are matched by ``cell_id``.  For each cell in both sets: median events/s
of A and of B over ok repeats, the ratio B/A (above 1 = B is faster) and
whether the difference is significant.  Significance is the test pyperf's
``compare_to`` uses (``pyperf._compare.is_significant_benchs``: a two-sample
Student t-test at 95%, and any two single values count as significant) applied
to the cell's values in each set's ``bench.json``.  Where a cell is missing
from a bench.json (or the file is absent) the values come from runs.csv and
Welch's t-test (scipy, p < 0.05) decides instead; the table says which test
was used for each cell.

Exit status: 1 when any cell is a significant regression worse than
``--threshold`` (default 5%: ratio < 0.95) or a cell that was ok in A failed in
B; 0 otherwise; 2 on bad input (missing runs.csv, unknown schema version,
no cell in common), with a message naming the file.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysing.loading import ResultSet, ResultSetError, aggregate, load_result_set, ok_runs

DEFAULT_THRESHOLD = 0.05


def _pyperf_test():
    """pyperf's own significance test (the one compare_to uses), or None if unavailable."""
    try:
        from pyperf._compare import is_significant_benchs

        return is_significant_benchs
    except Exception:  # private API: moved or renamed in some pyperf version
        return None


def load_bench_json(rs: ResultSet) -> dict[str, object]:
    """cell_id -> pyperf.Benchmark from the set's bench.json ({} when absent).

    A benchmark is matched by its name, or by a ``cell_id`` metadata entry
    when the writer named it otherwise.
    """
    path = rs.bench_json
    if path is None:
        return {}
    import pyperf

    try:
        suite = pyperf.BenchmarkSuite.load(str(path))
    except Exception as exc:
        raise ResultSetError(f"{path}: cannot be read as a pyperf suite ({exc})") from exc
    out = {}
    for bench in suite.get_benchmarks():
        out[bench.get_name()] = bench
        cid = bench.get_metadata().get("cell_id")
        if cid:
            out[str(cid)] = bench
    return out


@dataclass
class CellComparison:
    cell_id: str
    a_eps: float
    b_eps: float
    ratio: float
    significant: bool | None
    test: str
    status: str  # "ok", "new failure", "fixed", "failed in both", "only in A", "only in B"
    p_value: float = math.nan
    p_adjusted: float = math.nan

    @property
    def change(self) -> float:
        return self.ratio - 1 if math.isfinite(self.ratio) else math.nan


def compare_sets(
    a: ResultSet, b: ResultSet, correction: str = "holm", alpha: float = 0.05
) -> list[CellComparison]:
    """One CellComparison per cell_id seen in either set."""
    ca = aggregate(a.runs).set_index("cell_id")
    cb = aggregate(b.runs).set_index("cell_id")
    ba, bb = load_bench_json(a), load_bench_json(b)
    pyperf_test = _pyperf_test()
    ok_a = ok_runs(a.runs).groupby("cell_id")["events_per_s"].apply(list)
    ok_b = ok_runs(b.runs).groupby("cell_id")["events_per_s"].apply(list)
    out = []
    for cid in sorted(set(ca.index) | set(cb.index)):
        if cid not in cb.index:
            out.append(
                CellComparison(
                    cid, ca.at[cid, "events_per_s"], math.nan, math.nan, None, "-", "only in A"
                )
            )
            continue
        if cid not in ca.index:
            out.append(
                CellComparison(
                    cid, math.nan, cb.at[cid, "events_per_s"], math.nan, None, "-", "only in B"
                )
            )
            continue
        fa, fb = bool(ca.at[cid, "failed"]), bool(cb.at[cid, "failed"])
        ea, eb = float(ca.at[cid, "events_per_s"]), float(cb.at[cid, "events_per_s"])
        if fa or fb:
            status = {
                (False, True): "new failure",
                (True, False): "fixed",
                (True, True): "failed in both",
            }[(fa, fb)]
            out.append(CellComparison(cid, ea, eb, math.nan, None, "-", status))
            continue
        ratio = eb / ea
        if pyperf_test is not None and cid in ba and cid in bb:
            # pyperf compare_to's test (Student's two-sample t on the
            # bench.json values), as a p-value so that it can be corrected.
            p = _student_p(ba[cid].get_values(), bb[cid].get_values())
            test = "pyperf t-test"
        else:
            p, test = _welch_p(ok_a.get(cid, []), ok_b.get(cid, []))
        out.append(CellComparison(cid, ea, eb, ratio, None, test, "ok", p_value=p))
    _correct(out, correction, alpha)
    return out


#: Multiple-testing corrections over the per-cell tests.
CORRECTIONS = {
    "holm": "Holm-Bonferroni (family-wise error rate)",
    "bh": "Benjamini-Hochberg (false discovery rate)",
    "none": "none (each cell tested alone)",
}
DEFAULT_CORRECTION = "holm"
DEFAULT_ALPHA = 0.05


def _student_p(xa, xb) -> float:
    if len(xa) < 2 or len(xb) < 2:
        return math.nan
    from scipy import stats

    if np.std(xa) == 0 and np.std(xb) == 0:
        return 0.0 if np.mean(xa) != np.mean(xb) else 1.0
    return float(stats.ttest_ind(xa, xb, equal_var=True).pvalue)


def _welch_p(xa, xb) -> tuple[float, str]:
    if len(xa) < 2 or len(xb) < 2:
        return math.nan, "runs.csv: too few repeats"
    from scipy import stats

    if np.std(xa) == 0 and np.std(xb) == 0:
        return (0.0 if np.mean(xa) != np.mean(xb) else 1.0), "runs.csv Welch t-test"
    return float(stats.ttest_ind(xa, xb, equal_var=False).pvalue), "runs.csv Welch t-test"


def _correct(rows: list[CellComparison], correction: str, alpha: float) -> None:
    """Adjusted p-values and verdicts over every cell with a test.

    Testing dozens of cells at 5% each finds a "significant" change in some
    by chance alone; the correction keeps that chance at ``alpha`` for the
    whole table (Holm) or bounds the share of false findings (BH).
    """
    tested = [r for r in rows if r.status == "ok" and math.isfinite(r.p_value)]
    m = len(tested)
    order = sorted(tested, key=lambda r: r.p_value)
    if correction == "holm":
        running = 0.0
        for i, r in enumerate(order):
            running = max(running, min(1.0, (m - i) * r.p_value))
            r.p_adjusted = running
    elif correction == "bh":
        running = 1.0
        for i in range(m - 1, -1, -1):
            r = order[i]
            running = min(running, min(1.0, r.p_value * m / (i + 1)))
            r.p_adjusted = running
    else:
        for r in tested:
            r.p_adjusted = r.p_value
    for r in tested:
        r.significant = bool(r.p_adjusted < alpha)


def geometric_mean_ratio(rows: list[CellComparison]) -> float:
    ratios = [r.ratio for r in rows if r.status == "ok" and math.isfinite(r.ratio) and r.ratio > 0]
    if not ratios:
        return math.nan
    return float(math.exp(sum(math.log(x) for x in ratios) / len(ratios)))


def regressions(rows: list[CellComparison], threshold: float) -> list[CellComparison]:
    """Significant slow-downs past the threshold, and cells newly failing in B."""
    bad = [r for r in rows if r.status == "new failure"]
    bad += [r for r in rows if r.status == "ok" and r.significant and r.ratio < 1 - threshold]
    return bad


def _p(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) and math.isfinite(v) else "-"


def render(
    rows: list[CellComparison],
    a: ResultSet,
    b: ResultSet,
    threshold: float,
    correction: str = DEFAULT_CORRECTION,
    alpha: float = DEFAULT_ALPHA,
) -> str:
    """Markdown: a header, the per-cell table, the geometric mean and the verdict."""
    lines = [
        f"# Compare {a.name} (A) -> {b.name} (B)",
        "",
        f"A: `{a.path}` ({a.meta.get('hostname', '?')}, commit `{a.meta.get('git_commit') or '?'}`)  ",
        f"B: `{b.path}` ({b.meta.get('hostname', '?')}, commit `{b.meta.get('git_commit') or '?'}`)",
        "",
    ]
    if (
        a.meta.get("hostname")
        and b.meta.get("hostname")
        and a.meta["hostname"] != b.meta["hostname"]
    ):
        lines += [
            "Warning: the two sets come from different hosts; ratios mix machine and code.",
            "",
        ]
    lines += [
        "Ratio = median events/s of B / median of A (above 1: B is faster). "
        "Significance: pyperf compare_to's t-test on bench.json, or Welch's t-test on runs.csv where noted; "
        f"p-values corrected for {sum(math.isfinite(r.p_value) for r in rows)} tests at once by "
        f"{CORRECTIONS[correction]}, significant when the corrected p < {alpha:g}.",
        "",
        "| cell | A events/s | B events/s | B/A | change | p | corrected p | significant | test | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sig = {True: "yes", False: "no", None: "-"}[r.significant]
        flag = ""
        if r.status == "ok" and r.significant and r.ratio < 1 - threshold:
            flag = " **REGRESSION**"
        lines.append(
            f"| `{r.cell_id}` | {_n(r.a_eps)} | {_n(r.b_eps)} | {_r(r.ratio)} | "
            f"{_pct(r.change)} | {_p(r.p_value)} | {_p(r.p_adjusted)} | {sig} | {r.test} | "
            f"{r.status}{flag} |"
        )
    gm = geometric_mean_ratio(rows)
    lines += [
        "",
        f"Geometric mean of B/A over {sum(r.status == 'ok' for r in rows)} common ok cells: {_r(gm)} ({_pct(gm - 1)}).",
    ]
    bad = regressions(rows, threshold)
    if bad:
        lines.append(
            f"FAIL: {len(bad)} cell(s) regressed past {threshold:.0%} or newly failed: "
            + ", ".join(r.cell_id for r in bad)
        )
    else:
        lines.append(f"OK: no significant regression past {threshold:.0%}.")
    return "\n".join(lines) + "\n"


def _n(v) -> str:
    return f"{v:,.0f}" if isinstance(v, float) and math.isfinite(v) else "-"


def _r(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else "-"


def _pct(v) -> str:
    return f"{v:+.1%}" if isinstance(v, float) and math.isfinite(v) else "-"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench compare",
        description="Compare two result sets cell by cell; exit 1 on a significant regression.",
    )
    p.add_argument("a", metavar="A", help="baseline result set folder")
    p.add_argument("b", metavar="B", help="new result set folder")
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="fail when a significant slow-down exceeds this fraction (default: %(default)s)",
    )
    p.add_argument("--out", default=None, help="also write the table as Markdown to this file")
    p.add_argument(
        "--correction",
        choices=sorted(CORRECTIONS),
        default=DEFAULT_CORRECTION,
        help="multiple-testing correction over the per-cell tests (default: %(default)s)",
    )
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="significance level after correction (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        a = load_result_set(args.a)
        b = load_result_set(args.b)
        rows = compare_sets(a, b, args.correction, args.alpha)
    except ResultSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not any(r.status not in ("only in A", "only in B") for r in rows):
        print(f"error: {a.path} and {b.path} have no cell_id in common", file=sys.stderr)
        return 2
    text = render(rows, a, b, args.threshold, args.correction, args.alpha)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 1 if regressions(rows, args.threshold) else 0


def to_frame(rows: list[CellComparison]) -> pd.DataFrame:
    """The comparison as a DataFrame (for notebooks)."""
    return pd.DataFrame([{**r.__dict__, "change": r.change} for r in rows])


if __name__ == "__main__":
    sys.exit(main())
