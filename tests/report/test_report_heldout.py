"""The report's "Held-out check" section, from a hand-written verify.json."""

from __future__ import annotations

import json

import pytest
from report_synth import linear_turbo, saturating_mpq, write_result_set

from bench.presenting.doc import Doc
from bench.presenting.heldout import heldout_section, read_verify, verdict
from bench.presenting.report import build_report

SCENARIO = {"start_method": "fork", "producers": 1, "work_us": 50.0, "workload": "busy",
            "event_bytes": 300, "load": "closed"}


def _cand(role, b, c, med, lo, hi, valid=3):
    return {"backend": "turbo", "batch_size": b, "consumers": c, "role": role,
            "events_per_s_median": med, "events_per_s_min": lo, "events_per_s_max": hi,
            "repeats": 3, "valid_repeats": valid}


VERIFY = {
    "schema_version": 1, "verified_utc": "2026-12-02T18:00:00Z", "source": "SET",
    "run_dir": "verify", "command": "python -m bench verify results/SET", "threshold": 0.95,
    "cores": 2,
    "outcomes": [
        {"scenario": SCENARIO,
         "recommended": {"backend": "turbo", "batch_size": 1000, "consumers": 2},
         "candidates": [_cand("recommended", 1000, 2, 98_000.0, 97_000.0, 99_500.0),
                        _cand("batch-down", 100, 2, 100_000.0, 99_000.0, 101_000.0),
                        _cand("consumers-down", 1000, 1, 51_000.0, 50_000.0, 52_000.0)],
         "best": {"batch_size": 100, "consumers": 2, "events_per_s_median": 100_000.0},
         "ratio": 0.98, "passed": True, "reason": ""},
        {"scenario": {**SCENARIO, "work_us": 200.0},
         "recommended": {"backend": "turbo", "batch_size": 100, "consumers": 1},
         "candidates": [_cand("recommended", 100, 1, 4_000.0, 3_900.0, 4_100.0),
                        _cand("consumers-up", 100, 2, 8_000.0, 7_800.0, 8_100.0)],
         "best": {"batch_size": 100, "consumers": 2, "events_per_s_median": 8_000.0},
         "ratio": 0.5, "passed": False, "reason": "",
         "skipped": [{"role": "batch-down", "why": "no smaller batch size in the set"}]},
        {"scenario": {**SCENARIO, "work_us": 10.0},
         "recommended": {"backend": "turbo", "batch_size": 10, "consumers": 2},
         "candidates": [{**_cand("recommended", 10, 2, None, None, None, valid=0),
                         "ok_events_per_s_median": 5_279.0, "ok_events_per_s_min": 5_061.0,
                         "ok_events_per_s_max": 5_391.0, "ok_repeats": 3}],
         "best": {}, "ratio": None, "passed": None,
         "reason": "no valid repeat of the recommended configuration"},
    ],
}


def _section(doc: Doc) -> str:
    md = doc.markdown()
    return md[md.index("## Held-out check"):]


def test_verified_set_shows_each_outcome(tmp_path):
    (tmp_path / "verify.json").write_text(json.dumps(VERIFY))
    doc = Doc()
    assert heldout_section(doc, tmp_path, "SET") is not None
    sec = _section(doc)
    assert "Verified 2026-12-02T18:00:00Z with `python -m bench verify results/SET`" in sec
    assert "reaches 95% of the best" in sec
    passed, failed, undecided = sec.split("**W=")[1:]
    assert "PASSED" in passed and "ratio 0.980" in passed and "reached 98.0% of the best" in passed
    assert "| batch-down | turbo_queue | 100 | 2 | 100,000 [99,000-101,000] | 3/3 | 1.000 | - |" in passed
    assert "| recommended | turbo_queue | 1000 | 2 | 98,000 [97,000-99,500] | 3/3 | 0.980 | - |" in passed
    assert "FAILED" in failed and "ratio 0.500" in failed
    assert "Neighbours not measured: batch-down (no smaller batch size in the set)." in failed
    assert "UNDECIDED" in undecided and "no valid repeat of the recommended configuration" in undecided
    # What the flagged repeats moved is shown in its own column, outside the verdict.
    assert "| recommended | turbo_queue | 10 | 2 | - | 0/3 | - | - | 5,279 [5,061-5,391] over 3 |" \
        in undecided
    assert "takes no part in the verdict" in sec


def test_verdicts():
    assert verdict(VERIFY["outcomes"][0])[0] == "passed"
    assert verdict(VERIFY["outcomes"][1])[0] == "failed"
    state, why = verdict({"passed": None, "reason": ""})
    assert state == "undecided" and "could not decide" in why


def test_unverified_set_says_so_with_the_command(tmp_path):
    doc = Doc()
    assert heldout_section(doc, tmp_path, "SET") is None
    sec = _section(doc)
    assert "**not verified**" in sec and f"python -m bench verify {tmp_path}" in sec


@pytest.mark.parametrize("text, words", [
    ("{not json", "cannot be read as JSON"),
    ('{"schema_version": 1}', "list 'outcomes'"),
    ('{"schema_version": 7, "outcomes": []}', "schema_version 7"),
])
def test_unreadable_verify_file_is_named(tmp_path, text, words):
    (tmp_path / "verify.json").write_text(text)
    with pytest.raises(Exception, match=words):
        read_verify(tmp_path)
    doc = Doc()
    heldout_section(doc, tmp_path, "SET")
    sec = _section(doc)
    assert "**Not verified**" in sec and str(tmp_path / "verify.json") in sec and words in sec


def test_report_includes_the_verify_outcome(tmp_path):
    d = write_result_set(tmp_path, [linear_turbo(batch_sizes=(100,)), saturating_mpq()],
                         consumers=(1, 2, 4))
    (d / "verify.json").write_text(json.dumps(VERIFY))
    md = build_report(d, tmp_path / "r", html_report=False).markdown_path.read_text()
    assert md.index("## Recommendation") < md.index("## Held-out check") < md.index("## Machine")
    assert "PASSED" in md and "not verified" not in md
