"""The held-out check: does a result set's recommendation survive a fresh run?

Reproduce::

    python -m bench verify results/<set>            # 3 interleaved repeats
    python -m bench verify results/<set> --repeat 5

For every scenario the result set recommends from (the recommendation the
report gives, :func:`bench.analysing.recommend.recommend_all`), the
recommended configuration (turbo, batch size B, C consumers) and its
neighbours -- the next batch size down and up among the set's turbo batch
sizes (``batch-down``, ``batch-up``), one consumer fewer and one more
(``consumers-down``, ``consumers-up``) -- are measured again in one fresh
interleaved sweep with the set's own scenario settings (work, workload, event
size, start method, producers, warm-up, window, queue bound).  The consumer
neighbours stay within what the recommendation itself may choose: at least 1,
and at most the usable cores less the producers (1 for ``auto`` producers).

The outcome of a scenario passes when the recommended configuration's median
events/s over its valid repeats is at least ``threshold`` (95%) of the best
median among the candidates; it is undecided (``passed`` null, ``reason``
says why) when the recommended one or every neighbour has fewer than 2
valid repeats (1 when the run made one).
The recommendation answers "the most events/s within the p99 budget", so a
neighbour whose fresh p99 (median over its valid repeats) is over the budget
the recommendation used is shown but is no rival for "best" (the
recommended one's own p99 over it is said in the reason).  (Seen on the 2-core set
results/20261206T010659Z-vm: batch 100 was recommended because batch 1000's
closed-loop p99 was 890 ms against the 100 ms budget, and a verdict on
events/s alone then failed it against batch 1000;
test_a_neighbour_over_the_latency_budget_is_no_rival.)

Output: the fresh run is a result set of its own in ``RESULT_DIR/verify/``
(``--out`` elsewhere), the verdict is ``RESULT_DIR/verify.json`` (format
agreed with the report, which shows it) and is printed.  Exit status: 0 when
every outcome passes, 1 when one fails or cannot be decided, 2 on bad input
(no result set, nothing recommended to verify), 130 interrupted (rerun the
same command: the run resumes).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import pandas as pd

from bench.analysing.axes import AUTO_BATCH, AUTO_PRODUCERS, batch_rank, is_auto, scenarios, select
from bench.analysing.loading import ResultSetError, aggregate, load_result_set, too_few_valid
from bench.analysing.recommend import TURBO, Recommendation, recommend_all

SCHEMA_VERSION = 1
THRESHOLD = 0.95
VERIFY_DIR = "verify"
VERIFY_JSON = "verify.json"
DEFAULT_REPEAT = 3
ROLES = ("recommended", "batch-down", "batch-up", "consumers-down", "consumers-up")
#: Scenario keys of verify.json, in the agreed order (``load`` is always closed).
SCENARIO_FIELDS = ("start_method", "producers", "work_us", "workload", "event_bytes")


class VerifyError(Exception):
    """Input that cannot be verified; the message says what is wrong."""


# --------------------------------------------------------------------------- what to measure


def consumer_cap(usable_cores: int, producers) -> int:
    """Most consumers a recommendation may choose beside its producers (as recommend does)."""
    p = 1 if producers == AUTO_PRODUCERS else int(producers or 0)
    return max(1, int(usable_cores) - p)


def neighbours(batch_size: int, consumers: int, batch_sizes, cap: int) -> tuple[list, list]:
    """(candidates, skipped) around a recommendation.

    ``candidates`` are (role, batch_size, consumers), the recommended one
    first; ``skipped`` are (role, why) for neighbours that do not exist here.
    A fixed size's batch neighbours are the fixed sizes next to it;
    ``"auto"`` (no size of its own) has the smallest and the largest fixed
    sizes of the set as its ``batch-down`` and ``batch-up``.
    """
    fixed = sorted({int(b) for b in batch_sizes if not is_auto(b)})
    if is_auto(batch_size):
        batch_size = AUTO_BATCH
        sizes, i = fixed, None
    else:
        batch_size = int(batch_size)
        sizes = sorted(set(fixed) | {batch_size})
        i = sizes.index(batch_size)
    out = [("recommended", batch_size, int(consumers))]
    skipped = []
    if i is None:
        for role, pick in (("batch-down", 0), ("batch-up", -1)):
            if sizes and (role == "batch-down" or len(sizes) > 1):
                out.append((role, sizes[pick], int(consumers)))
            else:
                skipped.append((role, "the set has no other fixed batch size"))
    elif i > 0:
        out.append(("batch-down", sizes[i - 1], int(consumers)))
    else:
        skipped.append(("batch-down", f"batch {batch_size} is the set's smallest"))
    if i is None:
        pass
    elif i + 1 < len(sizes):
        out.append(("batch-up", sizes[i + 1], int(consumers)))
    else:
        skipped.append(("batch-up", f"batch {batch_size} is the set's largest"))
    if consumers - 1 >= 1:
        out.append(("consumers-down", batch_size, int(consumers) - 1))
    else:
        skipped.append(("consumers-down", "1 consumer is the least"))
    if consumers + 1 <= cap:
        out.append(("consumers-up", batch_size, int(consumers) + 1))
    else:
        skipped.append(("consumers-up", f"{consumers + 1} consumers exceed the {cap} the cores "
                                        "leave beside the producers"))
    return out, skipped


def scenario_dict(scenario: dict) -> dict:
    """A recommendation's scenario in verify.json's form."""
    out = {k: scenario[k] for k in SCENARIO_FIELDS}
    out["load"] = "closed"
    return out


def targets(recs: list[Recommendation], cells: pd.DataFrame, usable_cores: int) -> list[dict]:
    """What to re-measure for each scenario with a recommendation."""
    out = []
    for rec in recs:
        if not rec.ok:
            continue
        sc = select(cells, **rec.scenario)
        sizes = sc.loc[sc["backend"] == TURBO, "batch_size"].dropna().unique()
        cap = consumer_cap(usable_cores, rec.scenario["producers"])
        cands, skipped = neighbours(rec.batch_size, int(rec.consumers), sizes, cap)
        out.append({
            "scenario": scenario_dict(rec.scenario),
            "recommended": {"backend": TURBO, "batch_size": cands[0][1],
                            "consumers": int(rec.consumers)},
            "candidates": [{"backend": TURBO, "batch_size": b, "consumers": c, "role": role}
                           for role, b, c in cands],
            "skipped": [{"role": role, "why": why} for role, why in skipped],
            "latency_budget_ms": float(rec.latency_budget_ms),
        })
    return out


# --------------------------------------------------------------------------- the verdict


def _valid_mask(runs: pd.DataFrame) -> pd.Series:
    """Rows that count: ok and usable (valid, not producer-bound) as the analysis reads them."""
    ok = runs["status"] == "ok"
    if "usable" in runs:
        return ok & runs["usable"].fillna(False).astype(bool)
    if "valid" in runs:
        return ok & (runs["valid"] == True)  # noqa: E712 (NaN is not valid)
    return ok


def _scenario_rows(runs: pd.DataFrame, scenario: dict) -> pd.DataFrame:
    axes = {k: scenario[k] for k in SCENARIO_FIELDS}
    rows = select(runs, **axes)
    if "load" in rows:
        rows = rows[rows["load"].fillna("closed").replace("", "closed") == "closed"]
    return rows


def candidate_stats(runs: pd.DataFrame, scenario: dict, candidate: dict) -> dict:
    """One candidate's figures over its valid repeats (NaN when it has none)."""
    rows = _scenario_rows(runs, scenario)
    rows = rows[(rows["backend"] == candidate["backend"])
                & (rows["batch_size"] == candidate["batch_size"])
                & (rows["consumers"] == candidate["consumers"])]
    valid = _valid_mask(rows)
    eps = rows.loc[valid, "events_per_s"].astype(float)
    # Every ok repeat, flagged ones included: shown beside the valid figures
    # so that an UNDECIDED outcome still says what was measured, and never
    # used by the verdict (a flagged repeat did not do the work it was asked).
    seen = rows.loc[rows["status"] == "ok", "events_per_s"].astype(float)
    p99 = (rows.loc[valid, "latency_p99_ms"].astype(float).dropna()
           if "latency_p99_ms" in rows else pd.Series(dtype=float))
    return {
        **candidate,
        "events_per_s_median": float(eps.median()) if len(eps) else math.nan,
        "events_per_s_min": float(eps.min()) if len(eps) else math.nan,
        "events_per_s_max": float(eps.max()) if len(eps) else math.nan,
        "repeats": int(len(rows)),
        "valid_repeats": int(len(eps)),
        "ok_events_per_s_median": float(seen.median()) if len(seen) else math.nan,
        "ok_events_per_s_min": float(seen.min()) if len(seen) else math.nan,
        "ok_events_per_s_max": float(seen.max()) if len(seen) else math.nan,
        "ok_repeats": int(len(seen)),
        "p99_ms_median": float(p99.median()) if len(p99) else math.nan,
    }


def _enough(c: dict) -> bool:
    """Valid repeats enough to judge: 2, or the one repeat of a ``--repeat 1`` run.

    The recommendation's rule (:func:`~bench.analysing.loading.too_few_valid`),
    so the check holds its figures to the same.
    """
    return c["valid_repeats"] > 0 and not too_few_valid(c["repeats"], c["valid_repeats"])


def _over(c: dict, budget: float | None) -> bool:
    """Is the candidate's fresh p99 over the budget (False when either is unknown)?"""
    p99 = c.get("p99_ms_median")
    return (budget is not None and isinstance(p99, float) and math.isfinite(p99)
            and p99 > budget)


def verdict(candidates: list[dict], threshold: float = THRESHOLD,
            budget_ms: float | None = None) -> dict:
    """best, ratio, passed, reason from candidate figures (the recommended one has that role).

    ``budget_ms``: the p99 budget the recommendation was made under; a
    neighbour over it is marked ``over_budget`` and is no rival (None: no
    budget known, every measured neighbour is one).
    """
    for c in candidates:
        c["over_budget"] = _over(c, budget_ms)
    rec = next(c for c in candidates if c["role"] == "recommended")
    measured = [c for c in candidates if _enough(c) and (c is rec or not c["over_budget"])]
    out = {"best": None, "ratio": None, "passed": None, "reason": ""}
    over = [c for c in candidates if c is not rec and c["over_budget"] and _enough(c)]
    note = ""
    if over:
        note = (f"; over the {budget_ms:g} ms p99 budget, so no rival: "
                + ", ".join(f"batch {c['batch_size']} x {c['consumers']} (p99 "
                            f"{c['p99_ms_median']:,.0f} ms)" for c in over))
    if _enough(rec) and rec["over_budget"]:
        # Said, not judged: the verdict is about events/s against the rivals,
        # and a closed-loop p99 sits near the harness's own buffer bound (a
        # recommendation at 99.6 ms of a 100 ms budget is one noisy repeat
        # from over it).
        note += (f"; the recommended configuration's own p99 was {rec['p99_ms_median']:,.0f} ms, "
                 f"over the {budget_ms:g} ms budget it was recommended under")
    if measured:
        top = max(measured, key=lambda c: c["events_per_s_median"])
        out["best"] = {"batch_size": top["batch_size"], "consumers": top["consumers"],
                       "events_per_s_median": top["events_per_s_median"]}
    if rec["valid_repeats"] == 0:
        out["reason"] = (f"the recommended configuration has no valid repeat "
                         f"({rec['repeats']} run)")
        return out
    if not _enough(rec):
        out["reason"] = (f"the recommended configuration has 1 valid repeat of {rec['repeats']}: "
                         "its noise cannot be judged")
        return out
    others = [c for c in measured if c["role"] != "recommended"]
    if not others:
        out["reason"] = (("no neighbour inside the budget to compare with"
                          if over else "no neighbour has 2 valid repeats to compare with")
                         if len(candidates) > 1 else "the set has no neighbour to compare with")
        out["reason"] += note
        return out
    ratio = rec["events_per_s_median"] / out["best"]["events_per_s_median"]
    out.update(ratio=ratio, passed=bool(ratio >= threshold))
    if not out["passed"]:
        top = out["best"]
        out["reason"] = (
            f"batch {top['batch_size']} x {top['consumers']} consumers moved "
            f"{1 / ratio - 1:.1%} more events/s than the recommendation"
        )
    out["reason"] = (out["reason"] + note) if out["reason"] else note.lstrip("; ")
    return out


def outcomes(runs: pd.DataFrame, plan: list[dict], threshold: float = THRESHOLD) -> list[dict]:
    """verify.json's outcomes: each target's candidates measured in ``runs`` and its verdict."""
    out = []
    for t in plan:
        cands = [candidate_stats(runs, t["scenario"], c) for c in t["candidates"]]
        budget = t.get("latency_budget_ms")
        out.append({"scenario": t["scenario"], "recommended": t["recommended"],
                    "candidates": cands, **verdict(cands, threshold, budget),
                    "skipped": t.get("skipped", []), "latency_budget_ms": budget})
    return out


def exit_code(outs: list[dict]) -> int:
    return 0 if outs and all(o["passed"] is True for o in outs) else 1


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    if hasattr(v, "item"):  # numpy scalar
        return _json_safe(v.item())
    return v


def document(source: str, run_dir: str, command: str, threshold: float, cores: int,
             outs: list[dict], verified_utc: str) -> dict:
    return _json_safe({
        "schema_version": SCHEMA_VERSION, "verified_utc": verified_utc, "source": source,
        "run_dir": run_dir, "command": command, "threshold": threshold, "cores": cores,
        "outcomes": outs,
    })


def summary(doc: dict) -> str:
    lines = []
    for o in doc["outcomes"]:
        s, r = o["scenario"], o["recommended"]
        head = (f"W={s['work_us']:g} us, {s['workload']}, {s['event_bytes']} B, "
                f"{s['producers']} producer(s), {s['start_method']}: turbo batch {r['batch_size']} "
                f"x {r['consumers']} consumers")
        state = {True: "PASS", False: "FAIL", None: "UNDECIDED"}[o["passed"]]
        ratio = f" ({o['ratio']:.1%} of the best)" if o["ratio"] is not None else ""
        lines.append(f"{state} {head}{ratio}" + (f": {o['reason']}" if o["reason"] else ""))
        for c in o["candidates"]:
            med = c["events_per_s_median"]
            fig = (f"{med:,.0f} ev/s ({c['events_per_s_min']:,.0f}-{c['events_per_s_max']:,.0f})"
                   if med is not None else "no valid repeat")
            line = (f"  {c['role']:<15} batch {c['batch_size']:>6} x {c['consumers']:>3}: "
                    f"{fig}, {c['valid_repeats']}/{c['repeats']} valid repeats")
            p99 = c.get("p99_ms_median")
            if p99 is not None:
                line += f", p99 {p99:,.1f} ms" + (" (over the budget)" if c.get("over_budget") else "")
            seen = c.get("ok_events_per_s_median")
            if seen is not None and c.get("ok_repeats", 0) > c["valid_repeats"]:
                line += (f"; every ok repeat, flagged ones included: {seen:,.0f} ev/s "
                         f"({c['ok_events_per_s_min']:,.0f}-{c['ok_events_per_s_max']:,.0f}), "
                         "not used by the verdict")
            lines.append(line)
        for sk in o.get("skipped", []):
            lines.append(f"  {sk['role']:<15} not measured: {sk['why']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- measuring


def verify_config(sweep: dict, plan: list[dict], repeat: int, max_repeats: int | None,
                  time_budget: float | None):
    """The fresh run's sweep config: the source sweep's settings, only the candidates' cells."""
    from bench.measuring.plan import DEFAULT_MAX_BUFFERED, SweepConfig

    cells = []
    for t in plan:
        s = t["scenario"]
        for c in t["candidates"]:
            cells.append({"backend": c["backend"], "start_method": s["start_method"],
                          "workload": s["workload"], "event_bytes": s["event_bytes"],
                          "work_us": s["work_us"], "batch_size": c["batch_size"],
                          "consumers": c["consumers"], "producers_setting": str(s["producers"])})
    settings = sorted({str(t["scenario"]["producers"]) for t in plan})
    producers = [AUTO_PRODUCERS] * (AUTO_PRODUCERS in settings) + sorted(
        int(p) for p in settings if p != AUTO_PRODUCERS)
    return SweepConfig(
        backends=[TURBO],
        start_methods=sorted({c["start_method"] for c in cells}),
        producers=producers,
        consumers=sorted({c["consumers"] for c in cells}),
        batch_sizes=sorted({c["batch_size"] for c in cells}, key=batch_rank),
        work_us=sorted({float(c["work_us"]) for c in cells}),
        workloads=sorted({c["workload"] for c in cells}),
        event_bytes=sorted({int(c["event_bytes"]) for c in cells}),
        repeat=repeat,
        max_repeats=max(max_repeats or repeat, repeat),
        time_budget=time_budget,
        warmup=float(sweep.get("warmup", 1.0)),
        duration=float(sweep.get("duration", 3.0)),
        max_buffered_events=sweep.get("max_buffered_events", DEFAULT_MAX_BUFFERED),
        cell_timeout=sweep.get("cell_timeout"),
        name="verify",
        description="bench verify: the recommendation and its neighbours, measured again",
        only_cells=cells,
    )


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench verify",
        description="Re-measure a result set's recommendation and its neighbours in a fresh "
                    "interleaved run; pass when it reaches >= 95%% of the best of them.")
    p.add_argument("result_dir", metavar="RESULT_DIR", help="a results/<timestamp>-<host>/ folder")
    p.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, metavar="N",
                   help="interleaved repeats of every candidate (default: %(default)s)")
    p.add_argument("--max-repeats", type=int, metavar="N",
                   help="adaptive repeats for noisy candidates, up to N in all (default: 2 x --repeat)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="no extra repeat starts past this many seconds of the run")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help="fraction of the best candidate's median to reach (default: %(default)s)")
    p.add_argument("--out", metavar="DIR",
                   help="where the fresh run goes (default: RESULT_DIR/verify)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    from bench import results as res
    from bench.measuring.machine import usable_cores
    from bench.measuring.plan import SweepConfigError
    from bench.measuring.sweep import run_sweep

    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    if args.repeat < 1 or (args.max_repeats is not None and args.max_repeats < 1):
        print("error: --repeat and --max-repeats must be positive", file=sys.stderr)
        return 2
    if not 0 < args.threshold <= 1:
        print("error: --threshold must be in (0, 1]", file=sys.stderr)
        return 2
    try:
        rs = load_result_set(args.result_dir)
    except ResultSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cells = aggregate(rs.runs)
    recs = recommend_all(cells, rs.runs, scenarios(cells), rs.cores)
    cores = usable_cores()
    plan = targets(recs, cells, cores)
    if not plan:
        why = "; ".join(f"{r.label}: {'; '.join(r.refusals) or 'no turbo data'}" for r in recs)
        print(f"error: {rs.path} has no recommendation to verify ({why or 'no scenario'})",
              file=sys.stderr)
        return 2
    if rs.cores and rs.cores != cores:
        print(f"warning: the set was measured with {rs.cores} cores, this machine has {cores} "
              "usable: the neighbours are judged on this one", file=sys.stderr)
    run_dir = Path(args.out) if args.out else rs.path / VERIFY_DIR
    max_repeats = args.max_repeats if args.max_repeats is not None else 2 * args.repeat
    try:
        if (run_dir / res.RUNS_CSV).exists():
            meta = res.read_meta(run_dir) if (run_dir / res.META_JSON).exists() else {}
            if meta.get("finished_utc"):
                print(f"error: {run_dir} already holds a finished verify run; remove it or "
                      "pass --out DIR", file=sys.stderr)
                return 2
            print(f"resuming the interrupted verify run in {run_dir}", file=sys.stderr)
            outcome = run_sweep(None, run_dir, resume=True, progress=not args.no_progress)
        else:
            cfg = verify_config(rs.meta.get("sweep") or {}, plan, args.repeat, max_repeats,
                                args.time_budget)
            outcome = run_sweep(cfg, run_dir, progress=not args.no_progress)
    except SweepConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if outcome.interrupted:
        return 130
    fresh = load_result_set(run_dir)
    outs = outcomes(fresh.runs, plan, args.threshold)
    try:
        rel = str(run_dir.resolve().relative_to(rs.path.resolve()))
    except ValueError:
        rel = str(run_dir.resolve())
    doc = document(rs.name, rel, shlex.join(["python", "-m", "bench", "verify", *argv]),
                   args.threshold, cores, outs, res.utc_now())
    (rs.path / VERIFY_JSON).write_text(json.dumps(doc, indent=2) + "\n")
    print(summary(doc))
    print(f"verdict: {rs.path / VERIFY_JSON}")
    return exit_code(doc["outcomes"])


if __name__ == "__main__":
    sys.exit(main())
