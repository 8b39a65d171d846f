"""The Kafka scenario's result files and command line."""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.scenarios.kafka.run import run_kafka_cell
from bench.scenarios.kafka.settings import (
    ALL_COLUMNS,
    BACKENDS,
    KAFKA_COLUMNS,
    MOCK_PARTITION_BYTES,
    kafka_available,
    mock_max_events,
)

# --------------------------------------------------------------------------
# Result files
# --------------------------------------------------------------------------


def append_rows(out_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """Append rows to ``out_dir/runs.csv`` (header: ALL_COLUMNS), fsynced."""
    path = Path(out_dir) / "runs.csv"
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if header != ALL_COLUMNS:
            raise ValueError(f"{path} has other columns than the Kafka scenario's; use another --out")
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=ALL_COLUMNS, extrasaction="raise")
        if new:
            w.writeheader()
        for row in rows:
            w.writerow({k: format(v, ".10g") if isinstance(v, float) else v for k, v in row.items()})
        f.flush()
        os.fsync(f.fileno())
    return path


def _first(version: Any) -> str:
    return version[0] if isinstance(version, tuple) else str(version)


def kafka_meta(bootstrap_servers: str | None) -> dict:
    """What meta.json says about the cluster used."""
    import confluent_kafka

    meta = {
        "cluster": "real" if bootstrap_servers else "mock",
        "confluent_kafka": _first(confluent_kafka.version()),
        "librdkafka": _first(confluent_kafka.libversion()),
    }
    if bootstrap_servers:
        meta["bootstrap_servers"] = bootstrap_servers
        meta["note"] = "a real Kafka cluster (--bootstrap-servers)"
    else:
        meta["note"] = ("librdkafka's built-in mock cluster (test.mock.num.brokers=1) in a helper process on "
                        "loopback: in-memory, no replication or disk, 4 partitions per topic. Its figures "
                        "are not a real broker's; they measure the pipeline around it.")
    return meta


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _csv_list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.scenarios.kafka",
        description="The Kafka pipeline benchmark: topic -> sources -> queue -> C workers -> queue -> sink "
                    "-> topic.  Without --bootstrap-servers it runs against librdkafka's mock cluster.",
    )
    p.add_argument("--backend", "--backends", dest="backends", type=_csv_list(str), default=["turbo"],
                   metavar="turbo,mpq-batch")
    p.add_argument("--consumers", type=_csv_list(int), default=[2], metavar="C,...",
                   help="worker processes (default 2)")
    p.add_argument("--work-us", type=_csv_list(float), default=[50.0], metavar="W,...",
                   help="busy work per event in microseconds (default 50)")
    p.add_argument("--batch-size", "--batch-sizes", dest="batch_sizes", type=_csv_list(int), default=[100],
                   metavar="B,...", help="events per queue batch (default 100)")
    p.add_argument("--events", type=int, default=20000, help="events preloaded into the input topic")
    p.add_argument("--sources", type=int, default=1, help="source processes in the consumer group")
    p.add_argument("--bootstrap-servers", default=None, help="a real cluster (default: the mock cluster)")
    p.add_argument("--partitions", type=int, default=4, help="partitions of new topics (real cluster only)")
    p.add_argument("--workload", default="busy")
    p.add_argument("--event-bytes", type=int, default=300)
    p.add_argument("--start-method", default="spawn", choices=("spawn", "fork", "forkserver"))
    p.add_argument("--max-buffered-events", type=int, default=10000)
    p.add_argument("--max-batch-age", type=float, default=0.2,
                   help="seconds after which a partial batch is sealed (turbo) or handed over (mpq-batch)")
    p.add_argument("--commit-interval", type=float, default=0.2,
                   help="seconds between the sources' offset commits (both backends; the library's "
                        "default is 1 s)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0, help="hard limit per run in seconds")
    p.add_argument("--out", default=None, help="result directory (default results/<UTC>-<host>-kafka)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    ok, reason = kafka_available()
    if not ok:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    for b in args.backends:
        if b not in BACKENDS:
            print(f"error: unknown backend {b!r}; the Kafka scenario runs {', '.join(BACKENDS)}", file=sys.stderr)
            return 2
    if not args.bootstrap_servers and args.events > mock_max_events(args.event_bytes):
        print(f"error: --events {args.events} is too many for the mock cluster (it keeps at most "
              f"{MOCK_PARTITION_BYTES >> 20} MiB per partition and deletes older messages): at most "
              f"{mock_max_events(args.event_bytes)} events of {args.event_bytes} bytes; use "
              f"--bootstrap-servers for more", file=sys.stderr)
        return 2
    from bench import results as res
    from bench.measuring.work import calibrate

    out = Path(args.out) if args.out else Path(str(res.default_out_dir()) + "-kafka")
    out.mkdir(parents=True, exist_ok=True)
    calibration = calibrate(work_us=tuple(args.work_us), workloads=(args.workload,),
                            event_bytes=(args.event_bytes,))
    grid = [dict(backend=b, consumers=c, work_us=w, batch_size=bs)
            for c, w, bs, b in itertools.product(args.consumers, args.work_us, args.batch_sizes, args.backends)]
    sweep = {"scenario": "kafka", "grid": grid, "events": args.events, "sources": args.sources,
             "workload": args.workload, "event_bytes": args.event_bytes, "start_method": args.start_method,
             "max_buffered_events": args.max_buffered_events, "max_batch_age": args.max_batch_age,
             "commit_interval": args.commit_interval,
             "repeat": args.repeat, "columns_appended": list(KAFKA_COLUMNS)}
    meta = res.collect_meta(sweep, calibration, {"scenario": "kafka", "kafka": kafka_meta(args.bootstrap_servers)})
    res.write_meta(out, meta)
    cluster = "a real cluster at " + args.bootstrap_servers if args.bootstrap_servers else \
        "librdkafka's MOCK cluster (not a broker's figures)"
    print(f"Kafka pipeline scenario against {cluster}; results in {out}", flush=True)
    failed = 0
    started = time.monotonic()
    for r in range(args.repeat):
        for cell in grid:
            row = run_kafka_cell(
                **cell, events=args.events, sources=args.sources, bootstrap_servers=args.bootstrap_servers,
                partitions=args.partitions, workload=args.workload, event_bytes=args.event_bytes,
                start_method=args.start_method, max_buffered_events=args.max_buffered_events,
                max_batch_age=args.max_batch_age, commit_interval=args.commit_interval,
                calibration=calibration, repeat=r,
                timeout=args.timeout, workdir=str(out / "work"),
            )
            append_rows(out, [row])
            failed += row["status"] != "ok"
            print(_summary(row), flush=True)
    shutil.rmtree(out / "work", ignore_errors=True)
    meta["finished_utc"] = res.utc_now()
    meta["elapsed_s"] = round(time.monotonic() - started, 3)
    res.write_meta(out, meta)
    return 1 if failed else 0


def _summary(row: dict) -> str:
    head = f"{row['cell_id']} r{row['repeat']}: {row['status']}"
    if row["status"] != "ok":
        return f"{head}: {row['error']}"

    def f(key, fmt):
        v = row.get(key, "")
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    return (f"{head}: {f('events_per_s', ',.0f')} events/s over {f('window_s', '.2f')} s "
            f"({row['events']} events), cpu {f('cpu_busy_pct', '.0f')}%, "
            f"overhead {f('overhead_us_per_event', '.1f')} us/event, "
            f"lag {row['consumer_lag']} at window end, "
            f"kafka-ts latency p50 {f('latency_p50_ms', '.0f')} ms, "
            f"pipeline latency p50 {f('pipeline_latency_p50_ms', '.1f')} / p99 {f('pipeline_latency_p99_ms', '.1f')} ms, "
            f"pauses {row['source_pauses']}, lost {row['lost']}, duplicated {row['duplicated']}, "
            f"output {row['output_messages']} msgs, cluster {row['kafka_cluster']}")


if __name__ == "__main__":
    sys.exit(main())
