"""A hand-made result set whose recommendation is known: for bench verify's tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from bench.schema import COLUMNS, SCHEMA_VERSION


def turbo_row(consumers: int, batch: int, eps: float, repeat: int, *, work_us: float = 0.0,
              producers: int = 1, setting: str = "", status: str = "ok", valid=True) -> dict:
    """One turbo row: valid, queue-bound, low latency, at ``eps`` events/s."""
    window = 1.0
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        schema_version=SCHEMA_VERSION,
        cell_id=f"turbo-fork-p{producers}-c{consumers}-b{batch}-w{work_us:g}-busy-e300",
        repeat=repeat, backend="turbo", start_method="fork", producers=producers,
        consumers=consumers, batch_size=batch, work_us=work_us, workload="busy", event_bytes=300,
        status=status, error="" if status == "ok" else "synthetic failure", warmup_s=0.1,
        window_s=window, events=int(eps * window), events_total=int(eps * window),
        events_per_s=eps, cpu_count=2, producer_user_s=0.2, producer_sys_s=0.0,
        consumer_user_s=eps * window * (work_us + 5) * 1e-6, consumer_sys_s=0.0,
        work_cpu_us_per_event=work_us, work_us_measured=work_us, overhead_us_per_event=5.0,
        overhead_err_us=1.0, useful_work_fraction=0.1, latency_p50_ms=1.0,
        latency_p90_ms=2.0, latency_p99_ms=3.0, latency_max_ms=4.0, latency_samples=100,
        lost=0, duplicated=0, load="closed", producer_cpu_pct=20.0, consumer_cpu_pct=80.0,
        bottleneck="consumers", valid=valid, invalid_reason="" if valid else "synthetic",
        producers_setting=setting or str(producers),
    )
    return row


def write_set(root: Path, rows: list[dict], *, cores: int = 2, sweep: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow(r)
    meta = {"schema_version": SCHEMA_VERSION, "hostname": "handmade", "cpu_count_logical": cores,
            "sweep": sweep or {}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def scaling_set(root: Path, *, producers: int = 1, setting: str = "", work_us: float = 20.0,
                duration: float = 0.3) -> Path:
    """turbo at 1 and 2 consumers, batches 10/100/1000, 3 quiet repeats; 1 consumer is
    recommended on 2 cores (the core cap leaves 1 beside the producer), batch 100 (the
    smallest within 5% of the best)."""
    eps = {10: 10_000.0, 100: 19_600.0, 1000: 20_000.0}
    rows = [turbo_row(c, b, eps[b] * c * (1 + 0.01 * r), r, producers=producers, setting=setting,
                      work_us=work_us)
            for r in range(3) for c in (1, 2) for b in (10, 100, 1000)]
    sweep = {"warmup": 0.1, "duration": duration, "max_buffered_events": "auto", "cell_timeout": 30,
             "repeat": 3}
    return write_set(root, rows, sweep=sweep)
