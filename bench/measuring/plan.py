"""What a sweep runs: a sweep file (TOML) read into a :class:`SweepConfig`, and the cells of its grid.

How they are run (the order of their repeats, calibration, adaptive
repeats, the open-loop cells' rates) is bench.measuring.sweep's.

Sweep file format (TOML, top-level keys; every axis is a list)::

    backends      = ["turbo", "mpq", "mpq-batch", "faster-fifo"]
    start_methods = ["fork"]            # fork, spawn, forkserver
    producers     = ["auto"]            # counts: ints, "cores" expressions, or "auto"
    consumers     = [1, 2, "cores", "2*cores"]
    consumers_max = "2*cores"           # optional cap, drops larger counts
    batch_sizes   = [100, 1000]         # ignored (1) for unbatched backends
    work_us       = [0, 50]             # busy-loop us per event
    workloads     = ["busy"]            # busy, parse, regex, hash
    event_bytes   = [300]
    repeat        = 3                   # repeats, interleaved across cells
    warmup        = 0.5                 # seconds excluded before the window
    duration      = 1.5                 # seconds of the measure window
    max_buffered_events = 10000         # queue bound shared by all backends
    cell_timeout  = 60                  # optional; default warmup+duration+60
    max_repeats   = 6                   # optional; adaptive repeats (default: repeat, none)
    time_budget   = 165                 # optional; seconds for the whole sweep (see below)
    rates         = [2000, 20000]       # optional: open-loop cells at R events/s in total
    rate_fractions = [0.25, 0.5, 0.8]   # optional: open-loop cells at f x the closed-loop max
    open_loop_batch_sizes = [1000]      # optional: only these batch sizes get open-loop cells
    open_loop_backends = ["turbo"]      # optional: only these backends get open-loop cells
    pin           = false               # optional: each process its own core (bench.measuring.pinning)

A count expression is ``"cores"``, ``"N*cores"`` or ``"cores/N"`` with
``cores`` the logical core count of the machine running the sweep (rounded
down, at least 1), so one file serves any machine.  ``producers_max`` and
``consumers_max`` drop counts above the cap.  ``producers = ["auto"]`` sizes
each cell's producers from a short measured producer rate so that supply
exceeds the consumers' demand (bench.measuring.supply); rows record
``producers_setting = "auto"`` beside the count that ran.

The grid is the product of the axes, less duplicates: unbatched backends run
at ``batch_size = 1`` only, and named workloads (parse, regex, hash) at
``work_us = 0`` only (see bench.measuring.work).  Open-loop cells (``rates``,
``rate_fractions``; bench.measuring.schedule) are added beside every
closed-loop cell (of ``open_loop_batch_sizes`` and ``open_loop_backends``
only, when given; unbatched backends count as any batch size).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.measuring import supply
from bench.measuring.backends import BACKENDS, UnknownBackend, get_backend
from bench.measuring.backends.base import AUTO_BATCH, is_auto
from bench.measuring.cell import Cell
from bench.measuring.schedule import frac_load, parse_load, rate_load
from bench.measuring.work import WORKLOADS, work_cost_us
from bench.schema import SWEEP_AXES, SWEEP_SCALARS

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
DEFAULT_SWEEP = SWEEPS_DIR / "quick.toml"

#: Margin added to warmup + duration for start-up and drain when the sweep
#: does not set cell_timeout.
DEFAULT_TIMEOUT_MARGIN_S = 60.0
DEFAULT_REPEAT = 3
DEFAULT_MAX_BUFFERED = 10_000
#: ``max_buffered_events = "auto"``: the bound follows the cell (see bench.measuring.cell.buffer_bound).
AUTO_BUFFER = "auto"
#: ``calibrate``: once per repeat round (the default), or once per sweep.
CALIBRATE_ROUND, CALIBRATE_ONCE = "round", "once"

AXES = SWEEP_AXES
SCALARS = SWEEP_SCALARS
OTHER_KEYS = ("name", "description", "producers_max", "consumers_max")


class SweepConfigError(ValueError):
    """A sweep file or override that cannot be run; the message names the key."""


@dataclass
class SweepConfig:
    """A sweep after count expressions are resolved and overrides applied."""

    backends: list[str]
    start_methods: list[str] = field(default_factory=lambda: ["fork"])
    #: Counts, and/or "auto" (sized per cell from ``supply``).
    producers: list[int | str] = field(default_factory=lambda: [1])
    consumers: list[int] = field(default_factory=lambda: [1])
    #: Counts, and/or "auto" (turbo's adaptive size; backends without one skip it).
    batch_sizes: list[int | str] = field(default_factory=lambda: [1000])
    work_us: list[float] = field(default_factory=lambda: [0.0])
    workloads: list[str] = field(default_factory=lambda: ["busy"])
    event_bytes: list[int] = field(default_factory=lambda: [300])
    repeat: int = DEFAULT_REPEAT
    warmup: float = 1.0
    duration: float = 3.0
    max_buffered_events: int | str = DEFAULT_MAX_BUFFERED
    cell_timeout: float | None = None
    #: Seed of the per-repeat order of backends and batch sizes; None: drawn at the start (recorded).
    shuffle_seed: int | None = None
    #: Adaptive repeats: at most this many per cell (None: ``repeat``, no extra ones).
    max_repeats: int | None = None
    #: Seconds the whole sweep may take before extra repeats stop (None: no limit).
    time_budget: float | None = None
    #: ``producers = "auto"``: the probes and cores the counts are sized from
    #: (bench.measuring.supply.probe_all); filled when the sweep starts.
    supply: dict = field(default_factory=dict)
    #: Only these cells of the grid run (``bench verify``'s candidates): dicts of
    #: backend, start_method, workload, event_bytes, work_us, batch_size,
    #: consumers and producers_setting.  Empty: every cell.
    only_cells: list[dict] = field(default_factory=list)
    #: Open-loop cells: events/s offered in total, and fractions of the
    #: closed-loop maximum; None: none.
    rates: list[float] | None = None
    rate_fractions: list[float] | None = None
    #: Batch sizes and backends that get open-loop cells; None: every one.
    open_loop_batch_sizes: list[int | str] | None = None
    open_loop_backends: list[str] | None = None
    #: Each process of a cell on a core of its own where there are enough.
    pin: bool = False
    #: "round": calibrate the busy loop at the start of every repeat round; "once": at the start only.
    calibrate: str = CALIBRATE_ROUND
    name: str = "custom"
    description: str = ""
    source: str | None = None
    #: Backends dropped because they are not installed: name -> reason.
    skipped_backends: dict[str, str] = field(default_factory=dict)

    @property
    def timeout(self) -> float:
        if self.cell_timeout is not None:
            return self.cell_timeout
        return self.warmup + self.duration + DEFAULT_TIMEOUT_MARGIN_S

    def to_dict(self) -> dict:
        d = asdict(self)
        d["effective_cell_timeout"] = self.timeout
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SweepConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------

_COUNT_EXPR = re.compile(r"^\s*(?:(\d+)\s*\*\s*)?cores(?:\s*\*\s*(\d+))?(?:\s*/\s*(\d+))?\s*$")


def _count(key: str, value: Any, cores: int) -> int:
    """An int, or a "cores" expression resolved against ``cores``."""
    if isinstance(value, bool):
        raise SweepConfigError(f"{key}: expected a count, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _COUNT_EXPR.match(value)
        if m:
            mul = int(m.group(1) or 1) * int(m.group(2) or 1)
            div = int(m.group(3) or 1)
            if div == 0:
                raise SweepConfigError(f"{key}: division by zero in {value!r}")
            return max(1, (mul * cores) // div)
        try:
            return int(value)
        except ValueError:
            pass
    raise SweepConfigError(
        f"{key}: expected a positive integer or 'cores', 'N*cores', 'cores/N'; got {value!r}"
    )


def _as_list(key: str, value: Any) -> list:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise SweepConfigError(f"{key}: expected a list, got {value!r}")
    if not value:
        raise SweepConfigError(f"{key}: empty axis (give at least one value)")
    return value


def _positive_ints(key: str, values: list, cores: int, cap: int | None = None) -> list[int]:
    out = []
    for v in values:
        n = _count(key, v, cores)
        if n <= 0:
            raise SweepConfigError(f"{key}: must be positive, got {v!r}")
        if cap is None or n <= cap:
            out.append(n)
    if not out:
        raise SweepConfigError(f"{key}: every value is above the cap {cap}")
    return sorted(set(out))


def _batch_sizes(key: str, value: Any, cores: int) -> list[int | str]:
    """Positive counts and/or "auto" (turbo's adaptive size), counts first, ascending."""
    values = _as_list(key, value)
    auto = [v for v in values if isinstance(v, str) and v.strip().lower() == AUTO_BATCH]
    counts = [v for v in values if v not in auto]
    out: list[int | str] = _positive_ints(key, counts, cores) if counts else []
    return out + ([AUTO_BATCH] if auto else [])


def _names(key: str, values: list, known: tuple[str, ...] | list[str]) -> list[str]:
    out = []
    for v in values:
        if not isinstance(v, str) or v not in known:
            raise SweepConfigError(f"{key}: unknown value {v!r}; known: {', '.join(known)}")
        if v not in out:
            out.append(v)
    return out


def _number(key: str, value: Any, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SweepConfigError(f"{key}: expected a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        rel = ">" if strict else ">="
        raise SweepConfigError(f"{key}: must be {rel} {minimum:g}, got {value!r}")
    return float(value)


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SweepConfigError(f"{key}: expected an integer, got {value!r}")
    if value <= 0:
        raise SweepConfigError(f"{key}: must be positive, got {value!r}")
    return value


def load_sweep_file(path: str | os.PathLike) -> dict:
    """The raw key/value table of a sweep file."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise SweepConfigError(f"cannot read sweep file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SweepConfigError(f"sweep file {path} is not valid TOML: {exc}") from exc
    known = set(AXES) | set(SCALARS) | set(OTHER_KEYS)
    for key in raw:
        if key not in known:
            raise SweepConfigError(
                f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}"
            )
    return raw


def build_config(
    raw: dict,
    overrides: dict | None = None,
    cores: int | None = None,
    source: str | None = None,
    warn=None,
) -> SweepConfig:
    """Validate ``raw`` (a sweep file's table) with ``overrides`` on top.

    Overrides replace whole axes (``{"consumers": [1, 2]}``).  Unknown
    backends are an error; known but unavailable ones are skipped with a
    warning through ``warn(message)``.
    """
    cores = cores or psutil.cpu_count(logical=True) or 1
    data = dict(raw)
    for k, v in (overrides or {}).items():
        if v is not None:
            data[k] = v

    if "backends" not in data:
        raise SweepConfigError("backends: missing (list the backends to sweep)")
    backend_names = _as_list("backends", data["backends"])
    for b in backend_names:
        try:
            get_backend(b)
        except UnknownBackend as exc:
            raise SweepConfigError(f"backends: {exc}") from None
    backend_names = list(dict.fromkeys(backend_names))
    skipped = {}
    usable = []
    for b in backend_names:
        ok, reason = BACKENDS[b].available()
        if ok:
            usable.append(b)
        else:
            skipped[b] = reason
            if warn:
                warn(f"skipping backend {b}: {reason}")
    if not usable:
        raise SweepConfigError(
            "backends: none of " + ", ".join(backend_names) + " is available here"
        )

    def cap(key: str) -> int | None:
        return _count(key, data[key], cores) if key in data else None

    cfg = SweepConfig(backends=usable, skipped_backends=skipped, source=source)
    cfg.name = str(data.get("name", Path(source).stem if source else "custom"))
    cfg.description = str(data.get("description", ""))
    if "start_methods" in data:
        cfg.start_methods = _names(
            "start_methods",
            _as_list("start_methods", data["start_methods"]),
            multiprocessing.get_all_start_methods(),
        )
    if "producers" in data:
        values = _as_list("producers", data["producers"])
        counts = [v for v in values if v != supply.AUTO]
        cfg.producers = (
            _positive_ints("producers", counts, cores, cap("producers_max")) if counts else []
        )
        if supply.AUTO in values:
            cfg.producers = [supply.AUTO, *cfg.producers]
    if "consumers" in data:
        cfg.consumers = _positive_ints(
            "consumers", _as_list("consumers", data["consumers"]), cores, cap("consumers_max")
        )
    if "batch_sizes" in data:
        cfg.batch_sizes = _batch_sizes("batch_sizes", data["batch_sizes"], cores)
    if "work_us" in data:
        cfg.work_us = sorted(
            {_number("work_us", v, 0.0, strict=False) for v in _as_list("work_us", data["work_us"])}
        )
    if "workloads" in data:
        cfg.workloads = _names("workloads", _as_list("workloads", data["workloads"]), WORKLOADS)
    if "event_bytes" in data:
        cfg.event_bytes = _positive_ints(
            "event_bytes", _as_list("event_bytes", data["event_bytes"]), cores
        )
    if "repeat" in data:
        cfg.repeat = _int("repeat", data["repeat"])
    if "warmup" in data:
        cfg.warmup = _number("warmup", data["warmup"], 0.0, strict=False)
    if "duration" in data:
        cfg.duration = _number("duration", data["duration"], 0.0, strict=True)
    if "max_buffered_events" in data:
        value = data["max_buffered_events"]
        cfg.max_buffered_events = value if value == AUTO_BUFFER else _int("max_buffered_events", value)
    if data.get("shuffle_seed") is not None:
        seed = data["shuffle_seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SweepConfigError(f"shuffle_seed: expected an integer, got {seed!r}")
        cfg.shuffle_seed = seed
    if data.get("max_repeats") is not None:
        # It counts the planned repeats too: at or below ``repeat`` (say a
        # --repeat 8 over a file's max_repeats = 6) it adds none.
        cfg.max_repeats = max(_int("max_repeats", data["max_repeats"]), cfg.repeat)
    if data.get("time_budget") is not None:
        cfg.time_budget = _number("time_budget", data["time_budget"], 0.0, strict=True)
    for key in ("rates", "rate_fractions"):
        if data.get(key) is not None:
            values = sorted({_number(key, v, 0.0, strict=True) for v in _as_list(key, data[key])})
            setattr(cfg, key, values)
    if data.get("open_loop_batch_sizes") is not None:
        cfg.open_loop_batch_sizes = _batch_sizes("open_loop_batch_sizes",
                                                 data["open_loop_batch_sizes"], cores)
    if data.get("open_loop_backends") is not None:
        cfg.open_loop_backends = _names(
            "open_loop_backends", _as_list("open_loop_backends", data["open_loop_backends"]),
            list(BACKENDS))
    no_auto = auto_skipped(cfg)
    if no_auto and len(no_auto) == len(cfg.backends) and cfg.batch_sizes == [AUTO_BATCH]:
        raise SweepConfigError(
            f"batch_sizes: only 'auto', which none of {', '.join(cfg.backends)} has (only "
            + ", ".join(n for n, b in BACKENDS.items() if b.auto_batch) + " pick their own size)")
    if no_auto and warn:
        warn(f"batch size auto: {', '.join(no_auto)} ha{'s' if len(no_auto) == 1 else 've'} no "
             "adaptive batch size and get no auto cells")
    for key in ("open_loop_batch_sizes", "open_loop_backends"):
        if data.get(key) is not None and not cfg.rates and not cfg.rate_fractions:
            raise SweepConfigError(f"{key}: given, but neither rates nor rate_fractions asks "
                                   "for open-loop cells")
    if (cfg.rates or cfg.rate_fractions) and not any(c.open_loop for c in plan_cells(cfg)):
        message = (f"open_loop_backends: rates/rate_fractions ask for open-loop cells, but "
                   f"open_loop_backends {cfg.open_loop_backends} and open_loop_batch_sizes "
                   f"{cfg.open_loop_batch_sizes} leave none among backends {cfg.backends}, batch "
                   f"sizes {cfg.batch_sizes} (set --open-loop-backends / --open-loop-batch-sizes)")
        # Asked for on the command line it is an error; a sweep file's
        # open-loop part narrowed away by --backends is only worth a word.
        if any((overrides or {}).get(k) is not None for k in ("rates", "rate_fractions")):
            raise SweepConfigError(message)
        if warn:
            warn(message.replace("open_loop_backends: ", "no open-loop cells: ", 1))
    if data.get("pin") is not None:
        if not isinstance(data["pin"], bool):
            raise SweepConfigError(f"pin: expected true or false, got {data['pin']!r}")
        cfg.pin = data["pin"]
    if data.get("calibrate") is not None:
        if data["calibrate"] not in (CALIBRATE_ROUND, CALIBRATE_ONCE):
            raise SweepConfigError(f"calibrate: expected {CALIBRATE_ROUND!r} (every repeat round) or "
                                   f"{CALIBRATE_ONCE!r} (the start only), got {data['calibrate']!r}")
        cfg.calibrate = data["calibrate"]
    if data.get("cell_timeout") is not None:
        cfg.cell_timeout = _number("cell_timeout", data["cell_timeout"], 0.0, strict=True)
        if cfg.cell_timeout <= cfg.warmup + cfg.duration:
            raise SweepConfigError(
                f"cell_timeout: {cfg.cell_timeout:g}s leaves no time for start-up and drain "
                f"after warmup + duration = {cfg.warmup + cfg.duration:g}s"
            )
    return cfg


def plan_cells(cfg: SweepConfig) -> list[Cell]:
    """The cells of one repeat, in run order, without duplicates."""
    seen: set[str] = set()
    cells = []
    for sm in cfg.start_methods:
        for workload in cfg.workloads:
            for size in cfg.event_bytes:
                for p in cfg.producers:
                    for c in cfg.consumers:
                        for w in cfg.work_us:
                            for b in cfg.batch_sizes:
                                for name in cfg.backends:
                                    if is_auto(b) and not BACKENDS[name].auto_batch:
                                        continue  # no adaptive size: see auto_skipped
                                    batch = b if BACKENDS[name].batched else 1
                                    work = w if workload == "busy" else 0.0
                                    n = p
                                    if p == supply.AUTO:
                                        n = _auto_producers(cfg, name, batch, c, work, workload,
                                                            size)
                                    cell = Cell(name, sm, n, c, batch, work, workload, size)
                                    if cell.cell_id not in seen:
                                        seen.add(cell.cell_id)
                                        cells.append(cell)
                                    if not _gets_open_loop(cfg, name, b):
                                        continue
                                    for load in open_loads(cfg):
                                        twin = Cell(name, sm, n, c, batch, work, workload, size,
                                                    load)
                                        if twin.cell_id not in seen:
                                            seen.add(twin.cell_id)
                                            cells.append(twin)
    return cells


def auto_skipped(cfg: SweepConfig) -> list[str]:
    """Backends of ``cfg`` that get no ``batch_size = "auto"`` cells (they have no adaptive size)."""
    if AUTO_BATCH not in cfg.batch_sizes:
        return []
    return [b for b in cfg.backends if not BACKENDS[b].auto_batch]


def open_loads(cfg: SweepConfig) -> list[str]:
    """The ``load`` of every open-loop cell beside a closed-loop one: rates, then fractions."""
    return ([rate_load(r) for r in cfg.rates or []]
            + [frac_load(f) for f in cfg.rate_fractions or []])


def _gets_open_loop(cfg: SweepConfig, backend: str, batch_size: int) -> bool:
    if cfg.open_loop_backends is not None and backend not in cfg.open_loop_backends:
        return False
    if cfg.open_loop_batch_sizes is None:
        return True
    return batch_size in cfg.open_loop_batch_sizes or not BACKENDS[backend].batched


def _load_rank(load: str) -> tuple[int, float]:
    """Closed loop first, then rates, then fractions (which need their closed twin measured)."""
    kind, value = parse_load(load)
    return ({"closed": 0, "rate": 1, "frac": 2}[kind], value or 0.0)


def _auto_producers(cfg: SweepConfig, backend, batch, consumers, work, workload, size) -> int:
    cost = work_cost_us(workload, work, size, {"measured_us": cfg.supply.get("work_cost_us", {})})
    return supply.producers_for(cfg.supply, backend, batch, size, consumers,
                                cost if cost is not None else work)


def producers_setting(cfg: SweepConfig, cell: Cell) -> str:
    """``"auto"`` for a cell whose producer count ``auto`` chose, else the count.

    A cell that both ``auto`` and an explicit count plan is one cell (one id):
    it counts as ``auto``'s.
    """
    if supply.AUTO in cfg.producers and cell.producers == _auto_producers(
        cfg, cell.backend, cell.batch_size, cell.consumers, cell.work_us, cell.workload,
        cell.event_bytes,
    ):
        return supply.AUTO
    return str(cell.producers)


def _only_key(d: dict) -> tuple:
    # A named cell without a load is the closed-loop one.
    batch = d["batch_size"]
    return (d["backend"], d["start_method"], d["workload"], int(d["event_bytes"]),
            float(d["work_us"]), batch if is_auto(batch) else int(batch), int(d["consumers"]),
            str(d["producers_setting"]), str(d.get("load") or "closed"))


def named_cells(cfg: SweepConfig, cells: list[Cell]) -> list[Cell]:
    """The planned cells that ``cfg.only_cells`` names (all when it names none)."""
    if not cfg.only_cells:
        return cells
    want = {_only_key(d) for d in cfg.only_cells}
    return [c for c in cells
            if _only_key({**c.to_dict(), "producers_setting": producers_setting(cfg, c)}) in want]


def probe_keys(cfg: SweepConfig) -> list[tuple[str, int, int]]:
    """(backend, batch size, event size) of every cell ``auto`` has to size."""
    return [
        (name, b if BACKENDS[name].batched else 1, size)
        for size in cfg.event_bytes for b in cfg.batch_sizes for name in cfg.backends
        if not is_auto(b) or BACKENDS[name].auto_batch
    ]


def repeat_order(cells: list[Cell], backends: list[str], rng: random.Random) -> list[Cell]:
    """``cells`` in the order of one repeat, the settings, batch sizes and backends shuffled by ``rng``.

    Cells of one setting (start method, workload, event size, consumers,
    work) run together: closed-loop cells first, then each load in turn,
    and within a load every batch size, and within a batch size every
    backend.  So the cells the report sets side by side, backends at one
    batch size and batch sizes (``auto`` among them) at one load, run back to
    back, in an order drawn for each repeat, as is the order of the settings
    (none always runs last in a repeat, furthest from its calibration).

    Until 2026-12-07 the batch size was part of the setting, and the
    settings ran in a fixed order: ``auto`` ran after both fixed sizes at
    every load, 8 cells (about 18 s) after batch 100 in
    ``auto-between.toml``, and later in each repeat, further from the
    repeat's calibration.  In each of the five ``auto-between`` sets of that
    day the cells of a repeat's second half drifted further from it than
    those of its first (median work drift 18.0, 17.9, 45.4, 49.2 and 47.4%
    against 15.9, 10.2, 14.6, 22.7 and 36.1%), and ``auto``'s cells further
    than batch 100's (18.9, 17.9, 36.8, 44.6 and 44.5% against 15.5, 12.8,
    23.3, 37.7 and 36.1%): a slower CPU under ``auto`` near the consumers'
    capacity, whatever the batch size did.
    """
    order = list(backends)
    rng.shuffle(order)
    sizes = sorted({c.batch_size for c in cells}, key=_batch_rank)
    rng.shuffle(sizes)
    settings = sorted({_setting_key(c) for c in cells})
    rng.shuffle(settings)
    # Within a setting, closed-loop cells first: a fraction cell's rate comes
    # from its closed-loop twin, so the twin must have run in this repeat.
    return sorted(cells, key=lambda c: (settings.index(_setting_key(c)), _load_rank(c.load),
                                        sizes.index(c.batch_size), c.producers, order.index(c.backend)))


def _batch_rank(batch: int | str) -> tuple[int, int]:
    # "auto" after every fixed size (a str never compares with an int).
    return (1, 0) if is_auto(batch) else (0, int(batch))


def _setting_key(cell: Cell) -> tuple:
    """A cell's place in the plan ignoring its backend, batch size, producers and load."""
    return (cell.start_method, cell.workload, cell.event_bytes, cell.consumers, cell.work_us)


def estimate_seconds(cfg: SweepConfig, cells: int) -> float:
    # Start-up, drain and accounting add about half a second per cell under
    # fork and more under spawn (each child imports the harness).
    per_cell = cfg.warmup + cfg.duration + (0.5 if cfg.start_methods == ["fork"] else 1.5)
    return cells * cfg.repeat * per_cell


__all__ = [
    "AUTO_BUFFER",
    "CALIBRATE_ONCE",
    "CALIBRATE_ROUND",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_SWEEP",
    "SWEEPS_DIR",
    "SweepConfig",
    "SweepConfigError",
    "auto_skipped",
    "build_config",
    "estimate_seconds",
    "load_sweep_file",
    "named_cells",
    "open_loads",
    "plan_cells",
    "probe_keys",
    "producers_setting",
    "repeat_order",
]
