"""The report's "Held-out check" section, read from ``RESULT_DIR/verify.json``.

``python -m bench verify RESULT_DIR`` re-measures each scenario's
recommended configuration and its neighbours (batch size one step down and
up, one consumer fewer and more) in a fresh interleaved run and writes its
verdict to ``verify.json`` (format agreed with the verify command: a list of
``outcomes``, each with ``scenario``, ``recommended``, ``candidates`` with a
``role``, ``best``, ``ratio`` = recommended median / best median,
``passed`` true, false or null and ``reason``).  The report only reads it: a
set without one is said to be unverified, with the command that verifies it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.analysing.axes import scenario_label
from bench.analysing.recommend import backend_name

VERIFY_FILE = "verify.json"
KNOWN_VERSIONS = (1,)
ROLE_ORDER = ("recommended", "batch-down", "batch-up", "consumers-down", "consumers-up")


class VerifyFileError(Exception):
    """verify.json exists but cannot be used; the message says what is wrong."""


def read_verify(result_dir) -> dict | None:
    """The parsed verify.json of a result set, None when there is none."""
    path = Path(result_dir) / VERIFY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VerifyFileError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("outcomes"), list):
        raise VerifyFileError(f"{path}: expected an object with a list 'outcomes'")
    version = data.get("schema_version")
    if version not in KNOWN_VERSIONS:
        raise VerifyFileError(f"{path}: schema_version {version!r} is not one this report reads "
                              f"(known: {', '.join(map(str, KNOWN_VERSIONS))})")
    return data


def verdict(outcome: dict) -> tuple[str, str]:
    """('passed' | 'failed' | 'undecided', the reason in words)."""
    passed = outcome.get("passed")
    ratio = outcome.get("ratio")
    reason = str(outcome.get("reason") or "")
    if passed is None:
        return "undecided", reason or "the check could not decide (no reason recorded)"
    text = f"the recommended configuration reached {ratio:.1%} of the best" if _num(ratio) else ""
    best = outcome.get("best") or {}
    if best:
        text += (f" (batch {best.get('batch_size')}, {best.get('consumers')} consumers, "
                 f"{best.get('events_per_s_median', math.nan):,.0f} events/s)")
    if reason:
        text = (text + "; " if text else "") + reason
    return ("passed" if passed else "failed"), text


def heldout_section(doc, result_dir, name: str) -> dict | None:
    """Write the section into ``doc``; return the parsed file (None when absent or unreadable)."""
    doc.h(2, "Held-out check")
    command = f"python -m bench verify {result_dir}"
    try:
        data = read_verify(result_dir)
    except VerifyFileError as exc:
        doc.p(f"**Not verified**: {exc}. Rerun the check with:")
        doc.code(command)
        return None
    if data is None:
        doc.p(
            "This result set is **not verified**: it has no verify.json, so no fresh run has "
            "re-measured the recommendation against its neighbours. Verify it with:"
        )
        doc.code(command)
        return None
    thr = data.get("threshold")
    doc.p(
        f"Verified {data.get('verified_utc', '?')} with `{data.get('command', command)}`: a fresh "
        f"interleaved run (result set `{data.get('run_dir', 'verify')}/`, {data.get('cores', '?')} "
        f"cores) re-measured each recommended configuration and its neighbours. It passes when "
        f"the recommended median reaches {_pct(thr)} of the best median among them, over valid "
        f"repeats only; the last column, over every ok repeat with flagged ones included, says "
        f"what was measured and takes no part in the verdict."
    )
    if not data["outcomes"]:
        doc.p("The check recorded no outcome (no scenario had a recommendation to verify).")
    for outcome in data["outcomes"]:
        state, why = verdict(outcome)
        rec = outcome.get("recommended") or {}
        doc.p(
            f"**{_label(outcome.get('scenario') or {})}**: {state.upper()}: "
            f"{backend_name(rec.get('backend', 'turbo'))} batch {rec.get('batch_size')}, "
            f"{rec.get('consumers')} consumers; ratio {_ratio(outcome.get('ratio'))}. {why}."
        )
        budget = outcome.get("latency_budget_ms")
        if _num(budget):
            doc.p(f"p99 budget of the recommendation: {budget:g} ms; a neighbour over it in the "
                  "fresh run is no rival for the best.")
        doc.table(["role", "backend", "batch", "consumers", "events/s median [min-max]",
                   "valid repeats", "vs best", "p99 ms", "every ok repeat, flags included"],
                  _rows(outcome))
        skipped = [f"{k.get('role', '?')} ({k.get('why', '')})" for k in outcome.get("skipped") or []]
        if skipped:
            doc.p("Neighbours not measured: " + "; ".join(skipped) + ".")
    return data


def _rows(outcome: dict) -> list[list]:
    best = (outcome.get("best") or {}).get("events_per_s_median")
    cands = sorted(outcome.get("candidates") or [],
                   key=lambda c: ROLE_ORDER.index(c.get("role")) if c.get("role") in ROLE_ORDER else 9)
    rows = []
    for c in cands:
        med = c.get("events_per_s_median")
        rows.append([
            c.get("role", "?"), backend_name(c.get("backend", "?")), c.get("batch_size"),
            c.get("consumers"),
            (f"{med:,.0f} [{c.get('events_per_s_min', math.nan):,.0f}-"
             f"{c.get('events_per_s_max', math.nan):,.0f}]") if _num(med) else "-",
            f"{c.get('valid_repeats', '?')}/{c.get('repeats', '?')}",
            _ratio(med / best) if _num(med) and _num(best) and best > 0 else "-",
            (f"{c['p99_ms_median']:,.1f}" + (" (over budget)" if c.get("over_budget") else ""))
            if _num(c.get("p99_ms_median")) else "-",
            _as_measured(c),
        ])
    return rows


def _as_measured(c: dict) -> str:
    """What every ok repeat moved, flagged ones included: context, never the verdict."""
    seen = c.get("ok_events_per_s_median")
    if not _num(seen):
        return "-"  # verify.json written before this column, or nothing ok
    return (f"{seen:,.0f} [{c.get('ok_events_per_s_min', math.nan):,.0f}-"
            f"{c.get('ok_events_per_s_max', math.nan):,.0f}] over {c.get('ok_repeats', '?')}")


def _label(scenario: dict) -> str:
    try:
        text = scenario_label(scenario)
    except KeyError:
        return ", ".join(f"{k}={v}" for k, v in scenario.items()) or "scenario"
    load = scenario.get("load")
    return text + (f", load {load}" if load and load != "closed" else "")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ratio(v) -> str:
    return f"{v:.3f}" if _num(v) else "-"


def _pct(v) -> str:
    return f"{v:.0%}" if _num(v) else "the recorded threshold"
