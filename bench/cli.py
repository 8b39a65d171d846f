"""Command line of the benchmark harness: ``python -m bench`` / ``turbo-bench``.

Reproduce the default run (quick sweep, then the report) with::

    python -m bench run

Subcommands:

``run``        sweep with bench/sweeps/quick.toml (or --sweep), then ``report``
``sweep``      run a sweep and write results/<UTC timestamp>-<host>/
``calibrate``  print the busy-loop calibration of this machine
``backends``   list the backends and whether each is usable here
``report``     (bench.presenting.report) plots and tables from a result directory
``compare``    (bench.analysing.compare) compare two result directories
``chaos``      (bench.scenarios.chaos) crash-safety experiments
``verify``     (bench.analysing.verify) re-measure a recommendation and its neighbours

Exit status: 0 success, 1 some cells failed or timed out, 2 bad usage or
input, 130 interrupted (the sweep can be resumed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from bench.schema import SWEEP_AXES, SWEEP_SCALARS

#: Subcommands implemented by other modules, each exposing main(argv) -> int.
#: They are imported only when used, so a missing or broken one never stops
#: the sweep from running.
DELEGATED = {
    "report": ("bench.presenting.report", "plots and tables from a result directory"),
    "compare": ("bench.analysing.compare", "compare two result directories"),
    "chaos": ("bench.scenarios.chaos", "crash-safety experiments"),
    "kafka": ("bench.scenarios.kafka", "the Kafka pipeline scenario (also: sweep --scenario kafka)"),
    "verify": ("bench.analysing.verify",
               "re-measure a result set's recommendation and its neighbours"),
}


#: Options where ``auto`` is a value: producers sized per cell, turbo's adaptive batch size.
_AUTO_OK = ("--producers", "--batch-sizes", "--open-loop-batch-sizes")


def _csv(kind, name: str):
    """An argparse type for comma-separated lists (``--consumers 1,2,4``)."""

    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",")]
        if not text.strip() or any(not t for t in items):
            raise argparse.ArgumentTypeError(f"{name}: empty value in {text!r}")
        out = []
        for t in items:
            if kind is str:
                out.append(t)
                continue
            try:
                out.append(kind(t))
            except ValueError:
                if kind is int and ("cores" in t or (t == "auto" and name in _AUTO_OK)):
                    out.append(t)  # a count expression or "auto", resolved by the sweep
                else:
                    what = "an integer" if kind is int else "a number"
                    if name in _AUTO_OK:
                        what += " or 'auto'"
                    raise argparse.ArgumentTypeError(f"{name}: {t!r} is not {what}") from None
        return out

    return parse


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("grid (each flag replaces that axis of the sweep file)")
    g.add_argument("--sweep", metavar="TOML", help="sweep file (default: bench/sweeps/quick.toml)")
    g.add_argument("--backends", type=_csv(str, "--backends"), metavar="A,B")
    g.add_argument("--start-methods", type=_csv(str, "--start-methods"), metavar="fork,spawn")
    g.add_argument("--producers", type=_csv(int, "--producers"), metavar="N,...|auto",
                   help="producer counts, or 'auto': sized per cell from a short measured "
                        "producer rate so that supply exceeds the consumers' demand")
    g.add_argument("--consumers", type=_csv(int, "--consumers"), metavar="N,...")
    g.add_argument("--batch-sizes", type=_csv(int, "--batch-sizes"), metavar="B,...|auto",
                   help="events per batch; auto: turbo's adaptive size (batch_size='auto'), "
                        "skipped by backends without one")
    g.add_argument("--work-us", type=_csv(float, "--work-us"), metavar="W,...")
    g.add_argument("--workloads", type=_csv(str, "--workloads"), metavar="busy,parse,...")
    g.add_argument("--event-bytes", type=_csv(int, "--event-bytes"), metavar="BYTES,...")
    g.add_argument("--repeat", type=int, metavar="N",
                   help="interleaved repeats per cell; given alone, exactly N (no adaptive "
                        "repeats unless --max-repeats is given too)")
    g.add_argument("--warmup", type=float, metavar="SECONDS")
    g.add_argument("--duration", type=float, metavar="SECONDS", help="measure window")
    g.add_argument("--max-buffered-events", type=_buffer_arg, metavar="N|auto",
                   help="queue bound in events shared by all backends, or 'auto': "
                        "2 x consumers x max(batch size, 64) events per cell")
    g.add_argument("--rate", "--rates", dest="rates", type=_csv(float, "--rate"), metavar="R,...",
                   help="open-loop cells beside every closed-loop one: R events/s offered in "
                        "total, split over the producers, each event at its scheduled time")
    g.add_argument("--rate-fractions", type=_csv(float, "--rate-fractions"), metavar="F,...",
                   help="open-loop cells at F x the same cell's measured closed-loop events/s "
                        "(median of its repeats so far), e.g. 0.25,0.5,0.8")
    g.add_argument("--open-loop-batch-sizes", type=_csv(int, "--open-loop-batch-sizes"),
                   metavar="B,...|auto", help="only these batch sizes get open-loop cells (default: all)")
    g.add_argument("--open-loop-backends", type=_csv(str, "--open-loop-backends"), metavar="A,...",
                   help="only these backends get open-loop cells (default: all)")
    g.add_argument("--pin", nargs="?", const=True, default=None, type=_bool_arg, metavar="BOOL",
                   help="each process its own core where there are enough (recorded per row "
                        "as pinned); '--pin false' turns it off")
    g.add_argument("--calibrate", choices=("round", "once"), default=None,
                   help="calibrate the busy loop at the start of every repeat round (round, the "
                        "default: the loop follows the machine's speed, each round's cells are "
                        "checked against its own) or only at the start (once)")
    g.add_argument("--cell-timeout", type=float, metavar="SECONDS")
    g.add_argument("--max-repeats", type=int, metavar="N",
                   help="adaptive repeats: a cell whose events/s spread exceeds the report's noise "
                        "threshold, or with < 2 valid repeats, gets more, up to N in all "
                        "(default: --repeat, none)")
    g.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="seconds for the whole sweep: no extra repeat starts past it")
    g.add_argument("--shuffle-seed", type=int, metavar="N",
                   help="seed of the per-repeat order of backends and batch sizes (default: drawn, recorded in meta.json)")
    o = p.add_argument_group("output")
    o.add_argument("--out", metavar="DIR", help="result directory (default: results/<UTC>-<host>)")
    o.add_argument("--resume", metavar="DIR", help="continue an interrupted sweep in DIR")
    o.add_argument(
        "--queue-dir",
        metavar="DIR",
        help="where file-based queues live (default: beside the results, same disk)",
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument(
        "--dry-run",
        action="store_true",
        help="print the planned cells and the estimate, run nothing",
    )


#: Every axis and scalar setting of a sweep file can be overridden by a flag.
_OVERRIDES = SWEEP_AXES + SWEEP_SCALARS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Sweep multi-process queues (turbo_queue vs multiprocessing.Queue and "
        "friends) over process counts, batch sizes and CPU work per event.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("run", help="quick sweep, then the report")
    _add_sweep_options(p)
    r = p.add_argument_group("report (passed through to python -m bench report)")
    r.add_argument("--expected-rate", metavar="EVENTS_PER_S", type=_report_type("parse_rate"),
                   help="recommend what carries this many events/s within --latency-budget "
                        "at the least CPU")
    r.add_argument("--latency-budget", metavar="DURATION", type=_report_type("parse_duration_ms"),
                   help="p99 latency budget of the recommendation: 50ms, 0.05s, 500us")
    p = sub.add_parser("sweep", help="run a sweep and write results")
    p.add_argument("--scenario", choices=SCENARIOS, default="queue",
                   help="queue: producers -> queue -> consumers (default); kafka: the Kafka pipeline "
                        "(see python -m bench.scenarios.kafka --help for its options)")
    _add_sweep_options(p)
    p = sub.add_parser("calibrate", help="print the busy-loop calibration")
    p.add_argument("--work-us", type=_csv(float, "--work-us"), default=[0.0, 10.0, 50.0, 200.0])
    p.add_argument("--workloads", type=_csv(str, "--workloads"), default=["busy"])
    p.add_argument("--event-bytes", type=_csv(int, "--event-bytes"), default=[300])
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="instead: sample the busy loop's speed every 50 ms for SECONDS and print how "
                        "steady it was (quantiles, and the share of samples >10%% from the median: "
                        "cells run then would fail the work-drift check)")
    sub.add_parser("backends", help="list backends and whether they are usable")
    for name, (_, help_text) in DELEGATED.items():
        # Parsed by the delegate itself; listed here for --help.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _sweep_config(args, warn):
    from bench.measuring.plan import DEFAULT_SWEEP, build_config, load_sweep_file

    source = args.sweep or str(DEFAULT_SWEEP)
    raw = load_sweep_file(source)
    overrides = {k: getattr(args, k) for k in _OVERRIDES}
    if args.repeat is not None and args.max_repeats is None:
        # --repeat N asks for N repeats: the file's max_repeats is for its own repeat.
        overrides["max_repeats"] = args.repeat
    return build_config(raw, overrides, source=source, warn=warn)


def cmd_sweep(args) -> tuple[int, Path | None]:
    from bench import results as res
    from bench.measuring.sweep import run_sweep

    def warn(msg: str) -> None:
        print(f"warning: {msg}", file=sys.stderr)

    if args.resume:
        if args.dry_run:
            raise UsageError("--dry-run plans a new sweep; it does not combine with --resume")
        given = [f"--{k.replace('_', '-')}" for k in _OVERRIDES if getattr(args, k) is not None]
        if args.sweep:
            given.append("--sweep")
        if args.out:
            given.append("--out")
        if given:
            raise UsageError(
                f"--resume continues the recorded sweep as it was; drop {', '.join(given)}"
            )
        outcome = run_sweep(
            None,
            args.resume,
            resume=True,
            queue_dir=args.queue_dir,
            progress=not args.no_progress,
        )
        return outcome.exit_code, outcome.out_dir
    cfg = _sweep_config(args, warn)
    if args.dry_run:
        from bench.measuring.plan import estimate_seconds, plan_cells

        cells = plan_cells(cfg)
        for cell in cells:
            print(cell.cell_id)
        if "auto" in cfg.producers:
            print("producers auto: shown as 1 producer; the sweep sizes each cell's count from "
                  "a short producer-rate probe when it starts", file=sys.stderr)
        print(
            f"{len(cells)} cells x {cfg.repeat} repeats; "
            f"estimated {estimate_seconds(cfg, len(cells)) / 60:.1f} min",
            file=sys.stderr,
        )
        return 0, None
    out = Path(args.out) if args.out else res.default_out_dir()
    outcome = run_sweep(cfg, out, queue_dir=args.queue_dir, progress=not args.no_progress)
    return outcome.exit_code, outcome.out_dir


def cmd_calibrate(args) -> int:
    import psutil

    from bench.measuring.work import calibrate, speed_summary, speed_trace

    if args.watch is not None:
        if not args.watch > 0:
            raise UsageError(f"--watch: expected a positive number of seconds, got {args.watch!r}")
        summary = speed_summary(speed_trace(args.watch))
        summary["watch_s"] = args.watch
        summary["cpu_count_logical"] = psutil.cpu_count(logical=True)
        print(json.dumps(summary, indent=2))
        return 0
    cal = calibrate(tuple(args.work_us), tuple(args.workloads), tuple(args.event_bytes))
    cal["cpu_count_logical"] = psutil.cpu_count(logical=True)
    cal["cpu_count_physical"] = psutil.cpu_count(logical=False)
    print(json.dumps(cal, indent=2))
    return 0


def cmd_backends(args) -> int:
    from bench.measuring.backends import BACKENDS

    width = max(len(n) for n in BACKENDS)
    for name, cls in BACKENDS.items():
        ok, reason = cls.available()
        state = "available" if ok else f"UNAVAILABLE: {reason}"
        kind = "batched" if cls.batched else "unbatched"
        print(f"{name:<{width}}  {kind:<9}  {cls.description}  [{state}]")
    return 0


def delegate(command: str, argv: list[str]) -> int:
    module_name = DELEGATED[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (module_name, *_parents(module_name)):
            raise  # the module exists but one of its own imports is missing
        print(
            f"error: '{command}' is not available: {module_name} is not installed in this checkout",
            file=sys.stderr,
        )
        return 2
    main = getattr(module, "main", None)
    if main is None:
        print(f"error: {module_name} has no main(argv)", file=sys.stderr)
        return 2
    return int(main(argv) or 0)


def _parents(module_name: str) -> list[str]:
    parts = module_name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return delegate(argv[0], argv[1:])
    if argv and argv[0] == "sweep":
        scenario, argv = _pop_scenario(argv)
        if scenario == "kafka":
            # The Kafka pipeline (topic -> sources -> queue -> workers -> sink
            # -> topic) has its own options (--bootstrap-servers, --events...);
            # bench.scenarios.kafka parses them.
            return delegate("kafka", argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from bench.measuring.backends import UnknownBackend
    from bench.measuring.plan import SweepConfigError

    try:
        if args.command == "sweep":
            return cmd_sweep(args)[0]
        if args.command == "run":
            code, out = cmd_sweep(args)
            if out is None or code == 130:
                return code
            try:
                importlib.import_module(DELEGATED["report"][0])
            except ModuleNotFoundError as exc:
                if exc.name != DELEGATED["report"][0]:
                    raise
                print(
                    f"note: bench.presenting.report is not available; the results are in {out}",
                    file=sys.stderr,
                )
                return code
            report_code = delegate("report", [str(out), *_report_flags(args)])
            return code or report_code
        if args.command == "calibrate":
            return cmd_calibrate(args)
        if args.command == "backends":
            return cmd_backends(args)
    except (SweepConfigError, UnknownBackend, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Outside a sweep's cell loop (calibration, report): nothing to resume.
        print("interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


def _buffer_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def _bool_arg(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _report_type(parser_name: str):
    """An argparse type checked by the report's own parser, so a bad value stops ``run``
    before its sweep; the text itself is passed on (the report module is imported only then)."""

    def parse(text: str) -> str:
        from bench.presenting import report

        getattr(report, parser_name)(text)
        return text

    return parse


def _report_flags(args) -> list[str]:
    """The report's own flags given to ``run``, as ``bench report`` takes them."""
    out = []
    for name in ("expected_rate", "latency_budget"):
        value = getattr(args, name, None)
        if value is not None:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out


SCENARIOS = ("queue", "kafka")


def _pop_scenario(argv: list[str]) -> tuple[str, list[str]]:
    """Take ``--scenario NAME`` (or ``--scenario=NAME``) out of a sweep command line."""
    out, scenario, i = [], "queue", 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--scenario" or arg.startswith("--scenario="):
            if "=" in arg:
                scenario = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                scenario = argv[i + 1]
                i += 1
            else:
                raise SystemExit("bench sweep: --scenario needs a value: " + ", ".join(SCENARIOS))
            if scenario not in SCENARIOS:
                raise SystemExit(f"bench sweep: unknown scenario {scenario!r}; known scenarios: "
                                 + ", ".join(SCENARIOS))
        else:
            out.append(arg)
        i += 1
    return scenario, out
