"""The busy loop's calibration: a bad moment of the machine is redone, not kept as the reference.

The machine is simulated: ``_time_calls`` is replaced by a clock whose speed
the test sets per call, so the outcome does not depend on this machine's noise.
"""

from __future__ import annotations

from bench.measuring import work


def _machine(monkeypatch, speeds):
    """Each timing reports iterations / speed[i] us per call (speed: iterations per us)."""
    speeds = iter(speeds)

    def fake_time_calls(fn, event, calls, trials):
        n = fn.__defaults__[0] if fn.__defaults__ else 0  # the lambda's bound iteration count
        return n / next(speeds)

    monkeypatch.setattr(work, "_time_calls", fake_time_calls)


def test_a_refinement_measured_in_a_fast_moment_is_redone_and_the_accepted_cost_recorded(monkeypatch):
    # Loop speed 40 it/us throughout, except that the check after the first
    # refinement lands in a moment twice as fast (the VM's speed jumping).
    fast_moment = [40.0, 40.0, 40.0, 80.0]       # refine x3, then the check: 100 us, not 200
    steady = [40.0, 40.0, 40.0, 40.0]            # refine x3, then the check: 200 us
    _machine(monkeypatch, [40.0] + fast_moment + steady + [40.0] * 50)
    monkeypatch.setattr(work, "_busy_loop", lambda n: None)
    cal = work.calibrate((200.0,), ("busy",), (300,), target_s=0.001)
    assert cal["attempts"]["200"] == 2
    assert cal["busy_iterations"]["200"] == 8000
    # The reference is the cost measured when the count was accepted.
    assert abs(cal["measured_us"]["busy:200"] - 200.0) < 1e-9


def test_when_no_attempt_lands_within_tolerance_the_closest_is_kept(monkeypatch):
    checks = [70.0, 52.0, 75.0, 60.0, 65.0, 58.0]  # check speeds: 114, 154, 107, 133, 123, 138 us
    seq = [40.0]
    for c in checks:
        seq += [40.0, 40.0, 40.0, c]
    _machine(monkeypatch, seq + [40.0] * 50)
    monkeypatch.setattr(work, "_busy_loop", lambda n: None)
    cal = work.calibrate((200.0,), ("busy",), (300,), target_s=0.001)
    assert cal["attempts"]["200"] == work.CALIBRATION_ATTEMPTS
    assert abs(cal["measured_us"]["busy:200"] - 8000 / 52.0) < 1e-6
