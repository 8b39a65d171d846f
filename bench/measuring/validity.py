"""Whether a cell's numbers describe the queue, and what limited the cell.

A row is marked ``valid = False`` (kept in runs.csv, excluded from fits,
efficiencies and recommendations) when any of these holds:

* **work drift**: a consumer's timed burst of the work function, at the
  start or the end of the cell, cost more than ``MAX_WORK_DRIFT_PCT`` away
  from the parent's calibration (CPU clock changed, SMT sibling busy, a
  noisy neighbour's cache traffic).  Work cheaper than ``MIN_DRIFT_US`` is
  exempt: timer noise is then larger than the work.
* **negative overhead**: ``overhead_us_per_event`` below ``-overhead_err_us``.
  A queue cannot cost less than nothing, so the accounting is off.
* **steal**: more than ``MAX_STEAL_PCT`` of the usable cores' time was
  taken by the hypervisor.

``overhead_err_us`` adds three terms in quadrature, each per event:

1. CPU-time resolution: psutil reads per-process user and system time in
   clock ticks (usually 10 ms); each of 2 fields x 2 samples x N processes
   may be off by up to one tick.
2. Sampling skew: the two samples are not taken at the window edges
   themselves; the whole CPU rate of the cell times the time each sample
   took and how late it started.
3. Work-cost spread: half the range of the in-cell burst costs (start vs
   end, across consumers): the work itself is known no better than that.

Bottleneck (first match wins): ``producers`` when producers ran at
>= ``SATURATED_PCT`` of the window each (in open loop: when the offered
rate was carried, the source is by design the limit); ``machine`` when the
usable cores were >= ``SATURATED_PCT`` busy on average; ``queue`` when
consumers were idle (< ``SATURATED_PCT``) while producers were not
saturated either; otherwise ``consumers``.

Open loop (``load`` ``rate:R`` or ``frac:f``, bench.measuring.schedule):

* **saturated**: the achieved rate (``events_per_s``) fell short of the
  offered one by more than ``1 - CARRIED_SHARE`` (5%) *and* by more than
  the window count can tell (``achieved_rate_err``, below).  A saturated
  cell is a valid measurement: it says this configuration cannot carry this
  rate here, and its latency shows what that costs; it is marked, not
  dropped.
* It is **invalid** only when the producers themselves were the limit
  (saturated and their CPU at >= ``SATURATED_PCT``): then the harness could
  not offer the rate, and the cell measured its own source, not the queue.
  A producer that the queue's bound blocks is not busy (it waits), so a
  queue or its consumers falling behind never makes a cell invalid.
* ``achieved_rate_err``: events reach consumers in batches, so the count
  inside a window moves in steps of one batch per producer; relative to the
  window's events that is ``delivered / (rate per producer x window)``,
  with ``delivered`` the batch size (or what one producer puts within the
  backend's ``max_batch_age``, when that seals batches sooner).  A cell
  of 1000-event batches at 2000 events/s and a 1 s window cannot tell 60%
  from 100%: run it longer, or at a smaller batch size.
"""

from __future__ import annotations

import math

MAX_WORK_DRIFT_PCT = 10.0
MIN_DRIFT_US = 1.0
MAX_STEAL_PCT = 5.0
SATURATED_PCT = 90.0
#: An open-loop cell that achieved this share of its offered rate carried it.
CARRIED_SHARE = 0.95


def overhead_error_us(*, events: int, processes: int, tick_s: float, cpu_s: float,
                      window_s: float, sample_skew_s: float, burst_costs: list[float]) -> float:
    """Measurement error of ``overhead_us_per_event`` (see the module docstring)."""
    if events <= 0:
        return float("inf")
    resolution = tick_s * math.sqrt(4 * max(1, processes)) * 1e6 / events
    rate = cpu_s / window_s if window_s > 0 else 0.0
    skew = rate * sample_skew_s * 1e6 / events
    spread = (max(burst_costs) - min(burst_costs)) / 2 if burst_costs else 0.0
    return math.sqrt(resolution**2 + skew**2 + spread**2)


def drift_pct(burst_costs: list[float], calibrated: float | None) -> float | None:
    """Largest |burst - calibrated| / calibrated x 100, or None when unknown."""
    if not burst_costs or not calibrated or calibrated <= 0:
        return None
    return max(abs(c - calibrated) for c in burst_costs) / calibrated * 100.0


def invalid_reasons(*, drift: float | None, calibrated: float | None, overhead: float | None,
                    overhead_err: float | None, steal: float | None) -> list[str]:
    out = []
    if drift is not None and calibrated is not None and calibrated >= MIN_DRIFT_US \
            and drift > MAX_WORK_DRIFT_PCT:
        out.append(f"work drift {drift:.1f}% > {MAX_WORK_DRIFT_PCT:g}% of the calibrated "
                   f"{calibrated:.2f} us")
    if overhead is not None and overhead_err is not None and overhead < -overhead_err:
        out.append(f"negative overhead {overhead:.2f} us/event beyond its error "
                   f"{overhead_err:.2f} us")
    if steal is not None and steal > MAX_STEAL_PCT:
        out.append(f"steal {steal:.1f}% > {MAX_STEAL_PCT:g}%")
    return out


def rate_count_error(delivered: float, rate_per_producer: float, window_s: float) -> float:
    """Relative uncertainty of an open-loop window's event count (see the module docstring)."""
    if rate_per_producer <= 0 or window_s <= 0:
        return math.inf
    return delivered / (rate_per_producer * window_s)


def saturated(offered_rate: float, events_per_s: float, count_err: float = 0.0) -> bool:
    """The open-loop cell did not carry its offered rate (beyond 5% and its count error)."""
    shortfall = max(1.0 - CARRIED_SHARE, count_err)
    return events_per_s < (1.0 - shortfall) * offered_rate


def open_loop_reasons(*, saturated: bool, bottleneck: str, producer_cpu_pct: float,
                      offered_rate: float, events_per_s: float) -> list[str]:
    """Why an open-loop row is invalid: its own producers could not offer the rate."""
    if saturated and bottleneck == "producers":
        return [f"offered rate not offered: producers at {producer_cpu_pct:.0f}% CPU put "
                f"{events_per_s:,.0f} of {offered_rate:,.0f} events/s (the source was the limit)"]
    return []


def bottleneck(*, producer_cpu_pct: float, consumer_cpu_pct: float, machine_busy_pct: float,
               offered_rate: float | None = None, events_per_s: float | None = None,
               saturated: bool | None = None) -> str:
    """What limited the cell: producers, machine, queue or consumers.

    In open loop, ``saturated`` (when given) says whether the offered rate
    was carried; else it is carried when ``CARRIED_SHARE`` of it was.
    """
    if offered_rate and events_per_s is not None:
        carried = (not saturated) if saturated is not None \
            else events_per_s >= CARRIED_SHARE * offered_rate
        if carried:
            return "producers"
    if producer_cpu_pct >= SATURATED_PCT:
        return "producers"
    if machine_busy_pct >= SATURATED_PCT:
        return "machine"
    if consumer_cpu_pct < SATURATED_PCT:
        return "queue"
    return "consumers"
