"""The sweep: the cells of a sweep file (bench.measuring.plan), run with interleaved repeats.

Reproduce the default sweep with::

    python -m bench sweep                       # bench/sweeps/quick.toml
    python -m bench sweep --sweep bench/sweeps/full.toml

Within one repeat the backend varies fastest, then the batch size, both in
an order drawn for the repeat, then the load, so the cells compared most
often run back to back (bench.measuring.plan.repeat_order); repeat ``r``
of every cell runs before repeat ``r + 1`` of any, so drift in the machine
(thermal, background load) spreads over all cells instead of biasing one.
A setting's open-loop cells run after all its closed-loop ones within a
repeat, so that a ``frac:f`` cell's rate, f times the median events/s of
its twin over the repeats measured so far, can be resolved when it runs
(bench.measuring.schedule.RateResolver).

Adaptive repeats (bench.measuring.adaptive): after the planned repeats, a cell
whose events/s spread over its valid repeats exceeds the report's noise
threshold, or that has fewer than 2 valid repeats, gets more repeats, one
round at a time (interleaved and shuffled like the planned ones), up to
``max_repeats`` repeats in all, and no extra repeat starts once the sweep's
``time_budget`` (seconds since it started, resumes included, calibration and
probes too) would be overrun by it.  The planned repeats always run.

The busy loop is calibrated again at the start of every repeat round
(``calibrate = "round"``, the default; ``"once"``: the sweep's first
calibration for every round), and each round's cells run that round's loop
and are checked against its cost (work drift, bench.measuring.validity).
Within a round every backend runs the same loop, so the pairs the report
compares stay like for like; across rounds the loop follows the machine.  A
calibration minutes old is a poor reference for a machine whose speed moves
slowly (thermal limits, a neighbour's long job): on the 2-core VM one
calibration for a whole sweep fell in a fast spell and the cells after it
cost a median 44% more (``results/20261207T010717Z-vm/``); calibrated per
round, the same command's cells were a median 25% off their round's
calibration (``results/20261207T012534Z-vm/``, the rounds' counts for 20 us
ranging 1,070-1,722 iterations), and as few stayed within the 10% the check
allows (9 of 96 against 8): there the speed also moves within seconds, which
no calibration follows, and the check is right to refuse those cells.  The
calibrations are recorded in meta.json (``calibration``: round 0, also what
the producer counts were sized from; ``calibrations``: later rounds), so
``--resume`` reuses them, and the report's header gives each setting's
iteration counts over the rounds: how far the machine's speed moved.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import results as res
from bench.measuring import adaptive, pinning, supply
from bench.measuring.backends import BACKENDS
from bench.measuring.cell import Cell, CellRun, failed_row, leaked_children, run_cell
from bench.measuring.machine import usable_cores
from bench.measuring.plan import (
    CALIBRATE_ONCE,
    SweepConfig,
    SweepConfigError,
    estimate_seconds,
    named_cells,
    plan_cells,
    probe_keys,
    producers_setting,
    repeat_order,
)
from bench.measuring.progress import Progress, fmt_duration
from bench.measuring.schedule import RateResolver
from bench.measuring.work import calibrate, speed_summary, speed_trace

#: Seconds the busy loop's speed is sampled before the first cell (meta.json's machine_speed).
SPEED_WATCH_S = 1.0


def _fstype(path: str) -> str | None:
    path = os.path.realpath(path)
    best = None
    for part in psutil.disk_partitions(all=True):
        mp = part.mountpoint
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) > len(best.mountpoint):
                best = part
    return best.fstype if best else None


@dataclass
class SweepOutcome:
    out_dir: Path
    ran: int
    skipped: int
    ok: int
    failed: int
    timeout: int
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if self.failed == 0 and self.timeout == 0 else 1


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _calibrate(cfg: SweepConfig) -> dict:
    """The busy loop and the work settings of ``cfg``, measured now (a round's calibration)."""
    return calibrate(tuple(cfg.work_us), tuple(cfg.workloads), tuple(cfg.event_bytes))


def run_sweep(
    cfg: SweepConfig | None,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    queue_dir: str | None = None,
    progress: bool = True,
    say=_say,
) -> SweepOutcome:
    """Run (or resume) a sweep into ``out_dir``; see the module docstring."""
    t_start = time.monotonic()
    out = Path(out_dir)
    if resume:
        try:
            meta = res.read_meta(out)
        except FileNotFoundError:
            raise SweepConfigError(f"--resume {out}: no {res.META_JSON} there") from None
        cfg = SweepConfig.from_dict(meta["sweep"])
        for b in list(cfg.backends):
            ok, reason = BACKENDS[b].available() if b in BACKENDS else (False, "unknown backend")
            if not ok:
                say(f"warning: skipping backend {b} on resume: {reason}")
                cfg.backends.remove(b)
        if not cfg.backends:
            raise SweepConfigError(f"--resume {out}: none of the sweep's backends is available")
        here = (socket.gethostname(), psutil.cpu_count(logical=True))
        recorded = (meta.get("hostname"), meta.get("cpu_count_logical"))
        if here != recorded:
            say(
                f"warning: resuming on {here[0]} ({here[1]} cores), the sweep started on "
                f"{recorded[0]} ({recorded[1]} cores): its rows will mix two machines"
            )
        # The recorded calibrations, not fresh ones: the busy loop must be the
        # same for every row of a round (a round not begun yet calibrates
        # when it starts, as it would have).
        calibration = meta["calibration"]
        done = res.done_keys(out)
        queue_dir = queue_dir or meta.get("queue_dir_requested")
        meta["finished_utc"] = None
        meta.setdefault("resumed_utc", []).append(res.utc_now())
    else:
        assert cfg is not None
        if (out / res.RUNS_CSV).exists():
            raise SweepConfigError(
                f"--out {out}: already holds {res.RUNS_CSV}; use --resume {out} to continue it"
            )
        out.mkdir(parents=True, exist_ok=True)
        cores = psutil.cpu_count(logical=True)
        say(
            f"machine: {cores} logical / {psutil.cpu_count(logical=False)} physical cores; "
            "calibrating the busy loop ..."
        )
        calibration = _calibrate(cfg)
        # How steady the CPU's speed is, before any cell: the report warns
        # when it moved so much that cells with work will fail the drift check.
        speed = speed_summary(speed_trace(SPEED_WATCH_S))
        speed["watch_s"] = SPEED_WATCH_S
        if cfg.shuffle_seed is None:
            cfg.shuffle_seed = random.SystemRandom().randrange(2**31)
        meta = res.collect_meta(cfg.to_dict(), calibration, {
            "shuffle_seed": cfg.shuffle_seed, "elapsed_s": 0.0, "adaptive": None, "pin": cfg.pin,
            "machine_speed": speed})
        meta["queue_dir_requested"] = queue_dir
        done = set()
    meta.setdefault("calibrations", {})

    work_root = Path(queue_dir) if queue_dir else out / ".work"
    work_root.mkdir(parents=True, exist_ok=True)
    if supply.AUTO in cfg.producers and not cfg.supply:
        # Once per sweep, before any cell: the counts (and so the cell ids)
        # must be the same for every repeat and after --resume.
        cfg.supply = supply.probe_all(
            probe_keys(cfg), start_method=cfg.start_methods[0],
            max_buffered_events=cfg.max_buffered_events, workdir=str(work_root),
            calibration=calibration, usable_cores=usable_cores(), say=say,
        )
        cfg.supply["work_cost_us"] = dict(calibration.get("measured_us", {}))
        meta["sweep"] = cfg.to_dict()
    from bench.measuring.events import CLOCK_DESCRIPTION, SEQ_STRIDE

    meta.update(
        clock=CLOCK_DESCRIPTION,
        seq_stride=SEQ_STRIDE,
        queue_dir=str(work_root.resolve()),
        queue_dir_fstype=_fstype(str(work_root)),
        backends={
            name: {
                "description": BACKENDS[name].description,
                "batched": BACKENDS[name].batched,
                "file_based": BACKENDS[name].file_based,
            }
            for name in cfg.backends
        },
    )
    meta.setdefault("cells", {})
    res.write_meta(out, meta)

    cells = named_cells(cfg, plan_cells(cfg))
    # Backend order shuffled per repeat (seeded, recorded in meta.json), so
    # that no backend always runs right after another one's load.
    rng = random.Random(cfg.shuffle_seed if cfg.shuffle_seed is not None else 0)
    todo = []
    for r in range(cfg.repeat):
        todo += [(r, c) for c in repeat_order(cells, cfg.backends, rng) if (c.cell_id, r) not in done]
    total = len(cells) * cfg.repeat
    per_cell = estimate_seconds(cfg, 1) / cfg.repeat
    say(
        f"sweep {cfg.name!r}: {len(cells)} cells x {cfg.repeat} repeats = {total} runs "
        f"({total - len(todo)} already done); backends {', '.join(cfg.backends)}; "
        f"{psutil.cpu_count(logical=True)} logical cores seen; "
        f"estimated {fmt_duration(per_cell * len(todo))}"
    )
    say(f"results: {out}   queue dir: {work_root} ({meta['queue_dir_fstype'] or 'unknown fs'})")
    run = CellRun(
        warmup=cfg.warmup,
        duration=cfg.duration,
        max_buffered_events=cfg.max_buffered_events,
        timeout=cfg.timeout,
        workdir=str(work_root),
        pin=cfg.pin,
    )
    if cfg.pin:
        for text in sorted({pinning.plan(c.producers, c.consumers).reason for c in cells} - {""}):
            say(f"warning: --pin: {text}; those cells run unpinned (pinned = False)")
    # Fraction cells take their rate from the closed-loop rows measured so
    # far, those of an interrupted run included.
    rates = RateResolver(res.read_runs(out) if resume else None)
    bar = Progress(total, total - len(todo), per_cell) if progress else None
    counts = {"ok": 0, "failed": 0, "timeout": 0}
    interrupted = False
    writer = res.RunsWriter(out)
    # The time budget counts every invocation of this sweep (resumes too).
    spent_before = float(meta.get("elapsed_s") or 0.0)
    ran_s: list[float] = []

    def calibration_for(r: int) -> dict:
        """The calibration of round ``r``: recorded, or measured now, as the round starts."""
        if r == 0 or cfg.calibrate == CALIBRATE_ONCE:
            return calibration
        cal = meta["calibrations"].get(str(r))
        if cal is None:
            cal = meta["calibrations"][str(r)] = _calibrate(cfg)
            res.write_meta(out, meta)
        return cal

    def run_one(r: int, cell: Cell) -> None:
        # Before the cell's clock starts: a round's calibration is not its first cell's time.
        cal = calibration_for(r)
        t_cell = time.monotonic()
        label = f"{cell.cell_id} r{r}"
        if bar:
            bar.starting(label)
        offered, why = rates.resolve(cell.load, cell.closed_twin().cell_id)
        if why:
            row, description = failed_row(cell, run, r, why), {}
        else:
            row, description = run_cell(cell, run, cal, repeat=r, offered_rate=offered)
        rates.record(row)
        if supply.AUTO in cfg.producers:
            row["producers_setting"] = producers_setting(cfg, cell)
        writer.append(row)
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if description:
            meta["cells"][cell.cell_id] = description
        if bar:
            bar.finished(label, row)
        elif row["status"] != "ok":
            say(f"{label}: {row['status']}: {row['error']}")
        ran_s.append(time.monotonic() - t_cell)

    def elapsed() -> float:
        return spent_before + time.monotonic() - t_start

    try:
        for r, cell in todo:
            run_one(r, cell)
        if (cfg.max_repeats or cfg.repeat) > cfg.repeat:
            # Extra repeats are for the closed-loop cells: an open-loop cell's
            # events/s is its offered rate, whose spread says nothing.
            closed = [c for c in cells if not c.open_loop]
            extra = _adaptive_rounds(cfg, closed, out, rng, run_one, elapsed, ran_s, per_cell,
                                     bar, say)
            meta["adaptive"] = extra
    except KeyboardInterrupt:
        interrupted = True
    finally:
        meta["elapsed_s"] = elapsed()
        writer.close()
        if bar:
            bar.close()
        # run_cell reaps its own processes; this catches the ones a second
        # Ctrl-C may have saved by interrupting that reaping half-way.
        stray = leaked_children()
        for proc in stray:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(stray, timeout=5)
        multiprocessing.active_children()  # let multiprocessing reap its own
        rows = res.read_runs(out)
        try:
            res.write_pyperf(out, rows, meta)
        finally:
            finished = {(r["cell_id"], int(r["repeat"])) for r in rows}
            complete = not interrupted and all(
                (c.cell_id, r) in finished for r in range(cfg.repeat) for c in cells)
            meta["finished_utc"] = res.utc_now() if complete else None
            res.write_meta(out, meta)
            if not queue_dir:
                shutil.rmtree(work_root, ignore_errors=True)
    outcome = SweepOutcome(
        out_dir=out,
        ran=sum(counts.values()),
        skipped=total - len(todo),
        ok=counts["ok"],
        failed=counts["failed"],
        timeout=counts["timeout"],
        interrupted=interrupted,
    )
    if interrupted:
        say(f"interrupted; continue with: python -m bench sweep --resume {out}")
    else:
        say(f"done: {outcome.ok} ok, {outcome.failed} failed, {outcome.timeout} timed out -> {out}")
    return outcome


def _adaptive_rounds(cfg, cells, out, rng, run_one, elapsed, ran_s, per_cell, bar, say) -> dict:
    """Extra repeats for noisy cells (bench.measuring.adaptive); what meta.json records of them."""
    threshold = adaptive.noise_threshold()
    by_id = {c.cell_id: c for c in cells}
    planned = {c.cell_id: cfg.repeat for c in cells}
    budget_out = False
    while True:
        # Every row is on disk: RunsWriter syncs each one.
        rows = adaptive.with_usable(res.read_runs(out), out / res.RUNS_CSV)
        round_, _ = adaptive.next_round(by_id, rows, threshold, cfg.max_repeats)
        if not round_:
            break
        order = repeat_order([by_id[cid] for cid in round_], cfg.backends, rng)
        if bar:
            bar.total += len(order)
        for cell in order:
            # A cell's cost is known from the ones run so far; stop before a
            # run that would overrun the budget, not after.
            cost = (sum(ran_s) / len(ran_s)) if ran_s else per_cell
            if cfg.time_budget is not None and elapsed() + cost > cfg.time_budget:
                budget_out = True
                break
            run_one(round_[cell.cell_id], cell)
        if budget_out:
            break
    rows = adaptive.with_usable(res.read_runs(out), out / res.RUNS_CSV)
    state = adaptive.cell_state(rows)
    extra = {cid: state[cid]["repeats"] - planned[cid] for cid in by_id
             if cid in state and state[cid]["repeats"] > planned[cid]}
    still = adaptive.needing_more(by_id, rows, threshold)
    record = {
        "noise_threshold": threshold,
        "max_repeats": cfg.max_repeats,
        "time_budget": cfg.time_budget,
        "extra_repeats": extra,
        "still_noisy": still,
        "budget_ran_out": budget_out,
    }
    if extra:
        say("extra repeats: " + ", ".join(f"{cid} +{n}" for cid, n in sorted(extra.items())))
    if still:
        why = "the time budget ran out" if budget_out else f"max_repeats = {cfg.max_repeats}"
        say(f"still noisy when {why}: "
            + "; ".join(f"{cid} ({r})" for cid, r in sorted(still.items())))
    elif extra:
        say("every cell's spread is now within the noise threshold")
    return record


__all__ = ["SweepOutcome", "run_sweep"]
