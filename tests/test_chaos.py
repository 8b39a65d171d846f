"""The chaos run (bench/scenarios/chaos) in a short setting, and proof that its checker bites.

The full run is ``python -m bench.scenarios.chaos --duration 60``; here it runs for 4 s
with a kill every 0.15 s on average.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.scenarios import chaos  # noqa: E402

pytestmark = pytest.mark.usefixtures("reap_children")


def run_chaos(args: list[str], timeout: float) -> tuple[int, dict, str]:
    """``python -m bench.scenarios.chaos ARGS --json`` in its own session; on timeout the whole process group
    (the run, its forkserver and every worker) is SIGKILLed, so nothing outlives the test."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "bench.scenarios.chaos", *args, "--json"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the chaos run did not end within {timeout} s; its process group was killed\n{err[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind by a run that did end
        except ProcessLookupError:
            pass
    return proc.returncode, json.loads(out), err


@pytest.mark.timeout(150)
def test_chaos_run_loses_nothing(tmp_path):
    rc, fig, err = run_chaos([str(tmp_path / "run"), "--duration", "4", "--kill-interval", "0.15",
                              "--producers", "2", "--consumers", "2", "--seed", "5"], timeout=120)
    assert rc == 0, (fig["problems"], err[-3000:])
    assert fig["ok"] and fig["problems"] == []
    assert fig["lost"] == 0
    assert fig["kills"]["producer"] > 0 and fig["kills"]["consumer"] > 0
    assert fig["unattributed_duplicates"] == 0 and fig["phantom"] == 0 and fig["bad_items"] == 0
    assert fig["events_checked"] > 1000
    assert fig["events_delivered"] >= fig["events_checked"]
    # Handlers that raise inside `with c.batch()`: released, delivered again, nothing lost.
    assert fig["handler_failures"] > 0
    if chaos.dead_letter_supported():
        # Poison batches were dead-lettered, then requeued and drained: still 0 lost.
        assert fig["dead_letter"]["enabled"] and fig["dead_letter"]["batches"] > 0
        assert fig["dead_letter"]["requeued"] == fig["dead_letter"]["batches"]
        assert fig["folder_at_end"]["dead"] == 0
    end = fig["folder_at_end"]
    assert (end["loading"], end["claimed"], end["ready"], end["aside_unexplained"]) == (0, 0, 0, 0)
    assert end["other_files"] == []
    # The run folder keeps the evidence.
    logs = os.listdir(tmp_path / "run" / "logs")
    final_drain = 1 if fig["dead_letter"]["enabled"] else 0
    assert 4 + final_drain <= len(logs) <= 4 + final_drain + fig["kills"]["total"]


@pytest.mark.timeout(150)
def test_chaos_run_reports_a_stolen_batch_as_lost(tmp_path):
    """--sabotage moves one ready batch out of the folder mid-run: the run must fail with lost > 0
    (through the command line, as a user runs it)."""
    rc, fig, err = run_chaos([str(tmp_path / "run"), "--duration", "2", "--kill-interval", "0.3",
                              "--producers", "2", "--consumers", "2", "--sabotage"], timeout=100)
    assert rc == 1, err[-3000:]
    assert fig["lost"] > 0 and not fig["ok"]
    assert any("never delivered" in p for p in fig["problems"])


# -- the checker on doctored logs ----------------------------------------------------


def plog(text: str) -> chaos.ProducerLog:
    return chaos.parse_producer_log(text)


def clog(text: str) -> chaos.ConsumerLog:
    return chaos.parse_consumer_log(text)


CLEAN_P = "H 1\nW 10\nS 5\nW 10\nS 10\nE\n"


def test_checker_passes_a_clean_run():
    r = chaos.check({"p0": plog(CLEAN_P)}, {"c0": clog("R 1 p0:0-5\nA 1\nR 2 p0:5-10\nA 2\nE\n")}, set())
    assert r["problems"] == [] and r["lost"] == 0 and r["delivered"] == 10 and r["sealed"] == 10


def test_checker_catches_a_lost_batch():
    r = chaos.check({"p0": plog(CLEAN_P)}, {"c0": clog("R 1 p0:0-5\nA 1\nE\n")}, set())
    assert r["lost"] == 5 and any("never delivered" in p for p in r["problems"])


def test_checker_attributes_duplicates_only_to_killed_unacked_batches():
    consumers = {"c0": clog("R 1 p0:0-5\n"),  # killed before acking
                 "c1": clog("R 1 p0:0-5\nA 1\nR 2 p0:5-10\nA 2\nE\n")}
    r = chaos.check({"p0": plog(CLEAN_P)}, consumers, {"c0"})
    assert r["problems"] == [] and r["duplicates"] == 5 and r["duplicate_batches"] == 1
    # The same duplicate from a consumer that was not killed, or that had acked: unexplained.
    r = chaos.check({"p0": plog(CLEAN_P)}, consumers, set())
    assert r["unattributed_duplicates"] == 5 and r["problems"]
    consumers["c0"] = clog("R 1 p0:0-5\nA 1\n")
    r = chaos.check({"p0": plog(CLEAN_P)}, consumers, {"c0"})
    assert r["unattributed_duplicates"] == 5


def test_checker_catches_phantoms_and_damage():
    consumers = {"c0": clog("R 1 p0:0-12\nA 1\nR 2 p9:0-3\nA 2\nX 'p0:3:zz'\nE\n")}
    r = chaos.check({"p0": plog(CLEAN_P)}, consumers, set())
    assert r["phantom"] == 2 + 3 and r["bad_items"] == 1 and len(r["problems"]) == 3


def test_checker_counts_unsealed_items_of_killed_producers_apart():
    # Killed with ids 10..20 put: 10..15 were sealed after all (a kill between seal and log line),
    # 15..20 were never sealed: not a loss.
    producers = {"p0": plog("W 10\nS 10\nW 20\n")}
    consumers = {"c0": clog("R 1 p0:0-10\nA 1\nR 2 p0:10-15\nA 2\nE\n")}
    r = chaos.check(producers, consumers, {"p0"})
    assert r["problems"] == [] and r["lost"] == 0
    assert r["unsealed_at_kill"] == 5 and r["sealed_unlogged"] == 5
    # The same log from a producer that was not killed is a failure.
    assert chaos.check(producers, consumers, set())["problems"]


def test_checker_flags_a_clean_producer_that_left_items_unsealed():
    r = chaos.check({"p0": plog("W 10\nS 5\nE\n")}, {"c0": clog("R 1 p0:0-5\nA 1\nE\n")}, set())
    assert r["lost"] == 5 and len(r["problems"]) == 2


def test_torn_last_lines_are_ignored():
    p = plog("W 10\nS 10\nW 2")  # killed in the middle of writing "W 20"
    assert (p.intent, p.sealed) == (10, 10)
    c = clog("R 1 p0:0-5\nA 1\nR 2 p0:5")
    assert list(c.received) == [1] and c.acked == {1}


def test_checker_catches_a_batch_lost_with_its_killed_consumer():
    """A batch handed to a consumer killed before it even began to ack must be delivered again."""
    other = clog("R 1 p0:5-10\na 1\nA 1\nE\n")
    r = chaos.check({"p0": plog(CLEAN_P)}, {"c0": clog("R 1 p0:0-5\n"), "c1": other}, {"c0"})
    assert r["lost"] == 5 and any("killed before acking" in p for p in r["problems"])
    # Killed after its "a" line: it may have acked, so no redelivery is owed.
    r = chaos.check({"p0": plog(CLEAN_P)}, {"c0": clog("R 1 p0:0-5\na 1\n"), "c1": other}, {"c0"})
    assert r["problems"] == [] and r["lost"] == 0


def test_checker_attributes_redeliveries_of_released_batches():
    """A handler that raised released its batch ("N"): the redelivery is explained, and a released
    batch that nobody got again is lost."""
    consumers = {"c0": clog("R 1 p0:0-5\nN 1\nR 2 p0:5-10\na 2\nA 2\nE\n"),
                 "c1": clog("R 1 p0:0-5\na 1\nA 1\nE\n")}
    r = chaos.check({"p0": plog(CLEAN_P)}, consumers, set())
    assert r["problems"] == [] and r["duplicates"] == 5 and r["unattributed_duplicates"] == 0
    r = chaos.check({"p0": plog(CLEAN_P)}, {"c0": consumers["c0"]}, set())
    assert r["lost"] == 5 and any("handler raised" in p for p in r["problems"])
