"""Open-loop load: events offered on a schedule fixed in advance.

Reproduce an open-loop cell (2,000 events/s offered in total) with::

    python -m bench sweep --backends turbo --consumers 1 --batch-sizes 100,1000 \\
        --work-us 0 --rate 2000 --repeat 1 --out /tmp/open-loop

A closed-loop cell (``load = "closed"``) runs its producers flat out against
the queue's bound: it measures capacity, and its latency is that bound
divided by the throughput (Little's law).  An open-loop cell offers a fixed
rate instead, and so answers the question a user asks before choosing a
batch size: *at my event rate, how long does an event wait?*

``load`` names the load of a cell and is part of its id:

* ``"closed"``: producers flat out (today's cells keep their ids);
* ``"rate:R"``: R events/s offered in total, split evenly over the producers;
* ``"frac:f"``: f times the same cell's measured closed-loop maximum (the
  median events/s of its closed-loop twin over the repeats measured so far),
  resolved by the sweep when the cell runs (:class:`RateResolver`).

The schedule is fixed before the cell starts: producer ``i`` with rate
``r_i`` owes its ``k``-th event at ``t_start + k / r_i``.  It sleeps until
that time (spinning only for the last few microseconds), stamps the event
with its *scheduled* time, and puts it.  When it is late (the queue was
full, so ``put`` blocked; or it did not get a core) it never skips an
event: it puts the overdue ones back to back, each still stamped with the
time it was due.  Latency is measured from that scheduled time, so a
stalled producer cannot hide the queueing it caused (the coordinated-
omission correction of wrk2 and HdrHistogram); how late the producer was
shows separately as ``schedule_lag_p*`` (creation - scheduled).

At the window's end a producer stops, even when it is behind: the events it
owed but had not put are its ``backlog`` (``producer_backlog``), a direct
sign that the cell did not carry its rate.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable

from bench.measuring.events import clock_ns
from bench.schema import LOAD_CLOSED

#: Below this much time to wait, spin instead of sleeping: a sleep costs a
#: system call and wakes up tens of microseconds late, a spin this short
#: costs less CPU than that (and yields to any process that wants the core,
#: see wait_until).
SPIN_NS = 50_000


class LoadError(ValueError):
    """A ``load`` value that cannot be run; the message says what is wrong."""


def _num(value: float) -> str:
    """``2000.0 -> "2000"``, ``0.25 -> "0.25"``: stable text for ids and labels."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return format(value, ".6g")


def rate_load(rate: float) -> str:
    """The ``load`` of a cell offered ``rate`` events/s in total."""
    return f"rate:{_num(rate)}"


def frac_load(fraction: float) -> str:
    """The ``load`` of a cell offered ``fraction`` of its closed-loop maximum."""
    return f"frac:{_num(fraction)}"


def parse_load(load: str) -> tuple[str, float | None]:
    """``("closed", None)``, ``("rate", R)`` or ``("frac", f)``."""
    if load == LOAD_CLOSED:
        return LOAD_CLOSED, None
    kind, sep, value = str(load).partition(":")
    if sep and kind in ("rate", "frac"):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and number > 0:
            return kind, number
    raise LoadError(f"load: expected 'closed', 'rate:R' or 'frac:f' with a positive number, got {load!r}")


def load_id_suffix(load: str) -> str:
    """What ``load`` adds to a cell id: nothing for closed loop (old ids stay valid)."""
    kind, value = parse_load(load)
    if kind == LOAD_CLOSED:
        return ""
    return f"-{kind}{_num(value)}"


def producer_rates(total: float, producers: int) -> list[float]:
    """``total`` events/s split evenly over ``producers``."""
    if producers <= 0:
        raise LoadError(f"producers: must be positive, got {producers}")
    return [total / producers] * producers


def due_ns(t_start_ns: int, k: int, rate: float) -> int:
    """When event ``k`` of a producer offering ``rate`` events/s from ``t_start_ns`` is due.

    Computed from ``k`` every time, never by adding intervals, so rounding
    never accumulates into drift however long the cell runs.
    """
    return t_start_ns + int(k * 1e9 / rate)


def wait_until(t_ns: int, clock: Callable[[], int] = clock_ns) -> None:
    """Sleep until ``t_ns`` on the shared clock (spin for the last :data:`SPIN_NS`).

    The spin yields the core at every turn (``sched_yield``): above ~20,000
    events/s a producer's next event is always due within SPIN_NS, so it
    spins all the time, and a spin that kept its core took it from the
    consumers whenever the machine had fewer cores than processes.  On the
    2-core VM, 2 consumers at 20 us of work, batch 1000 at 66,000 events/s
    offered, the p99 queue wait was 99-106 ms with a plain spin and 60-77 ms
    with the yielding one, in alternating runs (2 x 2 repeats); an idle core
    still gives the spin its precision.  A producer that yields to a
    consumer may be late, which shows as schedule lag and in the latency,
    measured from the scheduled time, for every backend alike.
    """
    left = t_ns - clock()
    if left > SPIN_NS:
        time.sleep((left - SPIN_NS) / 1e9)
    while clock() < t_ns:
        os.sched_yield()


def produce_on_schedule(put: Callable[[dict], None], make: Callable[[int, int], dict], *,
                        rate: float, t_start_ns: int, stop_ns: int,
                        window_start_ns: int | None = None) -> dict:
    """Put events ``make(k, due)`` at ``rate`` events/s from ``t_start_ns`` until ``stop_ns``.

    Returns ``{"produced": n, "backlog": b, "pacing_s": p}``: ``b`` events
    were due before ``stop_ns`` but not put by then (the producer was behind
    at the end); ``p`` is the CPU this thread spent waiting for events to be
    due (the spin of :func:`wait_until`) from ``window_start_ns`` on: the
    harness's pacing, not the queue's work, which the row subtracts from the
    producers' CPU (sampling.window_figures).  At 8,000 events/s it is up to
    50 us an event, as much as the work of a 50 us cell.
    """
    clock = clock_ns
    cpu = time.thread_time
    per_event_ns = 1e9 / rate
    window_start_ns = t_start_ns if window_start_ns is None else window_start_ns
    pacing = 0.0
    k = 0
    while True:
        due = t_start_ns + int(k * per_event_ns)
        if due >= stop_ns:
            break
        now = clock()
        if now >= stop_ns:
            break
        if due > now:
            # Timed only when there is time to spare (the event is not due yet).
            if now >= window_start_ns:
                c0 = cpu()
                wait_until(due, clock)
                pacing += cpu() - c0
            else:
                wait_until(due, clock)
        put(make(k, due))
        k += 1
    owed = max(0, math.ceil((stop_ns - t_start_ns) / per_event_ns))
    return {"produced": k, "backlog": max(0, owed - k), "pacing_s": pacing}


class RateResolver:
    """The offered rate of each open-loop cell when it runs.

    ``rate:R`` cells are offered R.  ``frac:f`` cells are offered f times
    the median events/s of their closed-loop twin (the same cell with
    ``load = "closed"``) over the rows of that twin measured so far, so the
    sweep plans a fraction cell after its twin within each repeat.  Only
    rows with ``status == "ok"`` count; a fraction cell whose twin has no
    such row fails with the twin's last error.
    """

    def __init__(self, rows: list[dict] | None = None):
        self._eps: dict[str, list[float]] = {}
        self._errors: dict[str, str] = {}
        for row in rows or []:
            self.record(row)

    def record(self, row: dict) -> None:
        """Take note of a finished row (any load; only closed-loop rows matter)."""
        if str(row.get("load") or LOAD_CLOSED) != LOAD_CLOSED:
            return
        cell_id = row["cell_id"]
        if row.get("status") == "ok":
            try:
                eps = float(row["events_per_s"])
            except (TypeError, ValueError):
                return
            if eps > 0:
                self._eps.setdefault(cell_id, []).append(eps)
                return
        self._errors[cell_id] = str(row.get("error") or f"status {row.get('status')!r}")

    def resolve(self, load: str, twin_id: str) -> tuple[float | None, str]:
        """``(rate, "")``, or ``(None, why)`` when the rate cannot be known."""
        kind, value = parse_load(load)
        if kind == "rate":
            return value, ""
        if kind != "frac":
            return None, ""
        measured = self._eps.get(twin_id)
        if not measured:
            why = self._errors.get(twin_id, "it has not run yet")
            return None, f"closed-loop twin {twin_id} has no ok row to take the rate from: {why}"
        return value * statistics.median(measured), ""


__all__ = [
    "LoadError",
    "RateResolver",
    "due_ns",
    "frac_load",
    "load_id_suffix",
    "parse_load",
    "produce_on_schedule",
    "producer_rates",
    "rate_load",
    "wait_until",
]
