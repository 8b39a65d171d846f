"""The tidy result schema shared by the sweep (writer) and the report (reader).

One row of ``runs.csv`` is one cell x one repeat.  A cell is one point of the
grid: (backend, start_method, producers, consumers, batch_size, work_us,
workload, event_bytes).  Columns are only ever added; a change in meaning or a
removal bumps ``SCHEMA_VERSION`` so old result sets stay readable by a report
that knows their version.

``meta.json`` beside ``runs.csv`` describes the machine and the sweep; the
keys the report relies on are listed in ``META_KEYS``.
"""

SCHEMA_VERSION = 1

#: Columns that identify a cell (the grid axes).  ``batch_size`` is 1 for
#: backends that carry one event per message (``mpq``).
CELL_KEYS = (
    "backend",
    "start_method",
    "producers",
    "consumers",
    "batch_size",
    "work_us",
    "workload",
    "event_bytes",
)

#: Every column of runs.csv, in order, with its meaning.
COLUMNS = {
    "schema_version": "int: SCHEMA_VERSION of the writer",
    "cell_id": "str: stable id of the cell, e.g. 'turbo-fork-p1-c4-b100-w50-busy-e300'",
    "repeat": "int: 0-based repeat index (repeats are interleaved across cells)",
    "backend": "str: backend name (turbo, mpq, mpq-batch, faster-fifo)",
    "start_method": "str: fork or spawn",
    "producers": "int: producer processes",
    "consumers": "int: consumer processes",
    "batch_size": "int: events per batch/message (1 for unbatched backends)",
    "work_us": "float: microseconds of CPU work per event in the consumer (busy workload)",
    "workload": "str: busy, parse, regex or hash",
    "event_bytes": "int: target size of one event serialized as JSON",
    "status": "str: ok, failed, timeout",
    "error": "str: empty when ok; otherwise what went wrong",
    "started_utc": "str: ISO-8601 time the cell started",
    "warmup_s": "float: warm-up seconds excluded from the window",
    "window_s": "float: measured steady-state window in seconds",
    "events": "int: events consumed inside the window",
    "events_total": "int: events consumed over the whole cell (delivery check)",
    "events_per_s": "float: events consumed per second inside the window",
    "consumer_eps_min": "float: slowest consumer's events/s inside the window",
    "consumer_eps_max": "float: fastest consumer's events/s inside the window",
    "fairness": "float: Jain's fairness index of per-consumer events/s (1 = perfectly even)",
    "cpu_count": "int: logical cores the machine has",
    "cpu_busy_pct": "float: whole-machine busy % (mean over cores) during the window",
    "cpu_busy_pct_max_core": "float: busiest core's busy % during the window",
    "cpu_busy_per_core": "str: JSON list of per-core busy % during the window",
    "producer_user_s": "float: user CPU seconds of all producers inside the window",
    "producer_sys_s": "float: system CPU seconds of all producers inside the window",
    "consumer_user_s": "float: user CPU seconds of all consumers inside the window",
    "consumer_sys_s": "float: system CPU seconds of all consumers inside the window",
    "work_cpu_us_per_event": "float: measured CPU us of the work function per event (calibrated)",
    "overhead_us_per_event": "float: (producer+consumer CPU us) / events - work us per event",
    "useful_work_fraction": "float: events x work_us / (cpu_count x window)",
    "ctx_voluntary_per_event": "float: voluntary context switches (all processes) per event",
    "ctx_involuntary_per_event": "float: involuntary context switches (all processes) per event",
    "latency_p50_ms": "float: end-to-end latency (creation -> consumed) median of sampled events",
    "latency_p90_ms": "float",
    "latency_p99_ms": "float",
    "latency_max_ms": "float",
    "latency_samples": "int: number of sampled events",
    "peak_rss_mb": "float: largest peak RSS of any producer or consumer process",
    "disk_bytes_written": "int: bytes written to disk by all processes (file-based backends), -1 if unknown",
    "lost": "int: sequence numbers produced but never consumed (must be 0 for ok)",
    "duplicated": "int: sequence numbers consumed more than once",
}

#: meta.json keys the report relies on (the file holds more).
META_KEYS = {
    "schema_version": "int",
    "hostname": "str",
    "cpu_model": "str",
    "cpu_count_logical": "int: cores the report marks on its plots",
    "cpu_count_physical": "int or null",
    "memory_total_bytes": "int",
    "platform": "str",
    "python": "str",
    "packages": "dict name -> version",
    "git_commit": "str or null",
    "sweep": "dict: the sweep config actually run (axes after overrides)",
    "calibration": "dict: busy-loop calibration (iterations per us, measured us per call)",
    "started_utc": "str",
    "finished_utc": "str or null",
    "pyperf": "dict: pyperf's collected metadata",
}

#: Keys of meta.json's "sweep" that are grid axes, and the scalar settings;
#: each is also a ``python -m bench sweep`` flag (``--batch-sizes`` for
#: ``batch_sizes``), so a report can spell out the command that reproduces it.
SWEEP_AXES = (
    "backends",
    "start_methods",
    "producers",
    "consumers",
    "batch_sizes",
    "work_us",
    "workloads",
    "event_bytes",
)
SWEEP_SCALARS = ("repeat", "warmup", "duration", "max_buffered_events", "cell_timeout")
