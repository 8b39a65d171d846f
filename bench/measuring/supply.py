"""``--producers auto``: enough producers that the queue, not the supply, limits a cell.

A closed-loop cell measures the queue only while its producers keep ahead of
its consumers; when they cannot, the cell measures what the producers supply
(the bottleneck attribution then says ``producers`` and the analysis drops
the cell).  ``auto`` sizes the producer count per cell from two figures
measured once per (backend, batch size, event size) and sweep, by a probe: a
cell of one producer and one consumer with no work, run for a fraction of a
second (``run_cell`` itself, so the probe is the same code as the cells).

* **supply per producer**: events per producer CPU second.  Per CPU second
  rather than per wall second, so that a producer that shared its core with
  the consumer (2 cores) or waited on a full queue is not under-rated.
* **consumer overhead per event**: consumer CPU us per event with no work,
  the queue's own cost on the consumer side.

A cell with C consumers and W us of work per event then demands about
``C x 1e6 / (W + overhead)`` events/s, and gets
``ceil(MARGIN x demand / supply per producer)`` producers, capped at the
usable cores less the consumers (at least 1): producers beyond the free cores
would only take CPU from the consumers they are meant to feed.

The probes and the core count they were sized against are kept in the sweep
config (``SweepConfig.supply``, recorded in meta.json's ``sweep``), and the
count is a pure function of them, so repeats and ``--resume`` plan the same
cells with the same ids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from bench.measuring.cell import Cell, CellRun, run_cell

#: The producer-count setting that asks for this module.
AUTO = "auto"
#: Supply over demand: the probe is short and the machine noisy, and a cell
#: whose producers are merely just fast enough still runs them at full CPU.
MARGIN = 1.5
#: The probe cell: short, since only rates per CPU second are read from it.
PROBE_WARMUP_S = 0.1
PROBE_DURATION_S = 0.3
PROBE_TIMEOUT_S = 30.0


def probe_key(backend: str, batch_size: int, event_bytes: int) -> str:
    return f"{backend}/b{batch_size}/e{event_bytes}"


def probe(
    backend: str,
    batch_size: int,
    event_bytes: int,
    *,
    start_method: str,
    max_buffered_events: int | str,
    workdir: str,
    calibration: dict,
) -> dict:
    """One probe: supply per producer CPU second and consumer overhead per event."""
    cell = Cell(backend, start_method, 1, 1, batch_size, 0.0, "busy", event_bytes)
    run = CellRun(
        warmup=PROBE_WARMUP_S,
        duration=PROBE_DURATION_S,
        max_buffered_events=max_buffered_events,
        timeout=PROBE_TIMEOUT_S,
        workdir=workdir,
    )
    row, _ = run_cell(cell, run, calibration, repeat=0)
    out = {"status": row["status"], "error": row.get("error", "")}
    if row["status"] != "ok":
        return out
    events = float(row["events"] or 0)
    prod_s = float(row["producer_user_s"] or 0) + float(row["producer_sys_s"] or 0)
    cons_s = float(row["consumer_user_s"] or 0) + float(row["consumer_sys_s"] or 0)
    if events <= 0 or prod_s <= 0:
        out.update(status="failed", error="probe measured no events or no producer CPU")
        return out
    out.update(
        events_per_s=float(row["events_per_s"]),
        supply_per_producer=events / prod_s,
        consumer_overhead_us=cons_s / events * 1e6,
    )
    return out


def probe_all(
    keys: Iterable[tuple[str, int, int]],
    *,
    start_method: str,
    max_buffered_events: int | str,
    workdir: str,
    calibration: dict,
    usable_cores: int,
    say: Callable[[str], None] = lambda _msg: None,
) -> dict:
    """Probe every distinct (backend, batch size, event size): the ``supply`` of a sweep config."""
    probes = {}
    for backend, batch, size in dict.fromkeys(keys):
        key = probe_key(backend, batch, size)
        p = probe(backend, batch, size, start_method=start_method,
                  max_buffered_events=max_buffered_events, workdir=workdir,
                  calibration=calibration)
        probes[key] = p
        if p["status"] == "ok":
            say(f"producers auto: {key}: one producer supplies {p['supply_per_producer']:,.0f} "
                f"events per CPU second; consumer overhead {p['consumer_overhead_us']:.1f} us/event")
        else:
            say(f"producers auto: probe {key} {p['status']}: {p['error']}; its cells get 1 producer")
    return {"margin": MARGIN, "usable_cores": usable_cores, "probes": probes}


def producers_for(
    supply: dict, backend: str, batch_size: int, event_bytes: int, consumers: int,
    work_cost_us: float,
) -> int:
    """The producer count of one cell under ``auto`` (see the module docstring).

    A backend whose probe failed (or was not run) gets 1 producer, the count
    the sweeps used before ``auto``; the bottleneck attribution still tells
    whether that was enough.
    """
    cap = max(1, int(supply.get("usable_cores") or 1) - consumers)
    p = (supply.get("probes") or {}).get(probe_key(backend, batch_size, event_bytes))
    if not p or p.get("status") != "ok":
        return 1
    demand = consumers * 1e6 / max(work_cost_us + p["consumer_overhead_us"], 1e-3)
    need = math.ceil(float(supply.get("margin", MARGIN)) * demand / p["supply_per_producer"])
    return max(1, min(need, cap))


__all__ = ["AUTO", "MARGIN", "probe", "probe_all", "probe_key", "producers_for"]
