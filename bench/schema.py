"""The tidy result schema shared by the sweep (writer) and the report (reader).

One row of ``runs.csv`` is one cell x one repeat.  A cell is one point of the
grid: (backend, start_method, producers, consumers, batch_size, work_us,
workload, event_bytes, load).  Columns are only ever added; a change in meaning or a
removal bumps ``SCHEMA_VERSION`` so old result sets stay readable by a report
that knows their version.

Version 2 added the validity checks (``work_us_measured``, ``work_drift_pct``,
``overhead_err_us``, ``steal_pct``, ``valid``, ``invalid_reason`` ...), the
bottleneck attribution, open-loop cells (``load``, ``offered_rate``,
``queue_wait_p*``) and the process settings (``pinned``, ``producers_setting``);
``overhead_us_per_event`` and ``useful_work_fraction`` now use the work cost
measured inside the cell, not the parent's calibration.  A version-1 row has
none of the new columns: its ``load`` is ``"closed"`` and its validity unknown.

``meta.json`` beside ``runs.csv`` describes the machine and the sweep; the
keys the report relies on are listed in ``META_KEYS``.
"""

SCHEMA_VERSION = 2

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
    "load",
)

#: ``load`` of a closed-loop cell (producers flat out against the queue's bound).
LOAD_CLOSED = "closed"

#: Every column of runs.csv, in order, with its meaning.
COLUMNS = {
    "schema_version": "int: SCHEMA_VERSION of the writer",
    "cell_id": "str: stable id of the cell, e.g. 'turbo-fork-p1-c4-b100-w50-busy-e300'; an open-loop "
               "cell's id ends in its load ('...-e300-rate5000', '...-e300-frac0.25')",
    "repeat": "int: 0-based repeat index (repeats are interleaved across cells)",
    "backend": "str: backend name (turbo, mpq, mpq-batch, faster-fifo)",
    "start_method": "str: fork or spawn",
    "producers": "int: producer processes",
    "consumers": "int: consumer processes",
    "batch_size": "int, or 'auto' for turbo's adaptive size (batch_size='auto'): events per "
                  "batch/message (1 for unbatched backends)",
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
    "work_cpu_us_per_event": "float: CPU us of the work function per event, calibrated in the parent",
    "overhead_us_per_event": "float: (producer+consumer CPU us, less producer_pacing_s) / events - "
                             "work_us_measured",
    "useful_work_fraction": "float: events x work_us_measured / (cpu_count x window), not clipped",
    "ctx_voluntary_per_event": "float: voluntary context switches (all processes) per event",
    "ctx_involuntary_per_event": "float: involuntary context switches (all processes) per event",
    "latency_p50_ms": "float: end-to-end latency (created or scheduled -> processed) median of sampled events",
    "latency_p90_ms": "float",
    "latency_p99_ms": "float",
    "latency_max_ms": "float",
    "latency_samples": "int: number of sampled events",
    "peak_rss_mb": "float: largest peak RSS of any producer or consumer process",
    "disk_bytes_written": "int: bytes written to disk by all processes (file-based backends), -1 if unknown",
    "lost": "int: sequence numbers produced but never consumed (must be 0 for ok)",
    "duplicated": "int: sequence numbers consumed more than once",
    # -- schema version 2 --------------------------------------------------
    "load": "str: 'closed' (producers flat out), 'frac:0.25' (that fraction of this cell's "
            "closed-loop events_per_s offered), 'rate:5000' (events/s offered in total)",
    "offered_rate": "float: events/s scheduled in total (open loop); empty for closed",
    "queue_wait_p50_ms": "float: scheduled (open loop) or created (closed) -> handed to a consumer, median",
    "queue_wait_p90_ms": "float",
    "queue_wait_p99_ms": "float",
    "queue_wait_max_ms": "float",
    "work_us_measured": "float: work CPU us per event measured inside the consumers during the cell "
                        "(timed bursts at its start and end, in each consumer, on its core)",
    "work_drift_pct": "float: largest |in-cell burst - calibrated| / calibrated x 100",
    "overhead_err_us": "float: measurement error of overhead_us_per_event (CPU tick, sampling skew, "
                       "work-cost spread; see bench.measuring.validity)",
    "steal_pct": "float: steal time / total CPU time of the usable cores in the window; empty if unknown",
    "cpu_mhz": "float: mean CPU clock of the usable cores at the window edges; empty if unreadable",
    "usable_cores": "int: cores this process may use (affinity and cgroup quota)",
    "producer_cpu_pct": "float: (producers' CPU less producer_pacing_s) / (producers x window) x 100",
    "consumer_cpu_pct": "float: consumers' CPU / (consumers x window) x 100",
    "bottleneck": "str: producers, consumers, queue or machine (see bench.measuring.validity); empty if failed",
    "valid": "bool: ok row whose measurements passed the validity checks (empty for failed rows)",
    "invalid_reason": "str: why the row is invalid, '; '-joined; empty when valid",
    "polling_fallback": "bool: a process of the backend waited by polling (no inotify)",
    "pinned": "bool: every process of the cell ran pinned to a core of its own",
    "producers_setting": "str: 'auto' or the producer count asked for",
    # -- open loop (bench.measuring.schedule) -------------------------------
    "achieved_rate_ratio": "float: events_per_s / offered_rate (open loop); empty for closed",
    "achieved_rate_err": "float: relative uncertainty of events_per_s in open loop from batch delivery: "
                         "events delivered at once / (rate per producer x window); empty for closed",
    "saturated": "bool: open loop: achieved rate short of the offered by > max(5%, achieved_rate_err): "
                 "the cell could not carry its rate (a valid measurement of saturation); empty for closed",
    "schedule_lag_p50_ms": "float: open loop: created - scheduled of sampled events, median (how late "
                           "producers put events: a full queue blocks them); empty for closed",
    "schedule_lag_p99_ms": "float: open loop: created - scheduled, 99th percentile",
    "producer_backlog": "int: open loop: events due before the window's end that producers had not put "
                        "by then (0 when they kept to the schedule); empty for closed",
    "max_batch_age_s": "float: seconds after which the backend seals a partial batch (turbo's "
                       "max_batch_age); empty for backends that send a batch only when it is full",
    "mean_batch_size": "float: events consumed / batches received over the whole cell, the batch "
                       "size the consumers saw (an 'auto' cell's, or partial batches sealed by "
                       "max_batch_age); empty for rows made before it was recorded",
    "producer_pacing_s": "float: CPU seconds the producers spent inside the window waiting for their "
                         "next event to be due (open loop: the pacing spin), left out of "
                         "producer_cpu_pct, overhead_us_per_event and cpu_us_per_event; 0 in closed "
                         "loop; empty for rows made before it was recorded (their open-loop producer "
                         "CPU includes it)",
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
    "git_commit": "str or null: HEAD, or the commit recorded at install time (git_commit_source)",
    "usable_cores": "int: cores the sweep may use (affinity and cgroup quota)",
    "governor": "str or null: cpufreq scaling governor (cpu0)",
    "boost": "bool or null: turbo/boost enabled",
    "smt_siblings": "int or null: hardware threads per core",
    "numa_nodes": "int or null",
    "inotify_max_user_instances": "int or null",
    "is_vm": "bool or null: the machine is a virtual machine (vm_detail says how it was told)",
    "shuffle_seed": "int: seed of the per-repeat order of the backends and batch sizes",
    "pin": "bool: --pin (each process its own core where there are enough)",
    "sweep": "dict: the sweep config actually run (axes after overrides)",
    "calibration": "dict: busy-loop calibration (iterations per us, measured us per call) of the "
                   "sweep's start: repeat round 0's, and what producers = auto was sized from",
    "calibrations": "dict: repeat round (str) -> the calibration its cells ran and were checked "
                    "against, for rounds after 0 (sweep.calibrate = 'round'; empty with 'once')",
    "machine_speed": "dict or null: the busy loop's speed sampled every 50 ms for watch_s seconds before "
                     "the first cell (bench.measuring.work.speed_summary: ns_per_iteration quantiles, "
                     "max_over_min, share_off_median_by_10pct, samples)",
    "started_utc": "str",
    "finished_utc": "str or null",
    "pyperf": "dict: pyperf's collected metadata",
    "elapsed_s": "float: seconds the sweep has run, over all its invocations (--resume too)",
    "adaptive": "dict or null (max_repeats <= repeat): adaptive repeats: noise_threshold, "
                "max_repeats, time_budget, extra_repeats (cell id -> repeats added), "
                "still_noisy (cell id -> why it still needs repeats), budget_ran_out",
}
#: ``sweep.supply`` of meta.json, under ``producers = ["auto"]`` (bench.measuring.supply):
#: ``margin``, ``usable_cores`` and ``probes`` (``"<backend>/b<batch>/e<bytes>"`` ->
#: ``supply_per_producer`` events per producer CPU second, ``consumer_overhead_us``,
#: ``status``), ``work_cost_us``: what each auto cell's producer count was sized from.

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
    # The load axis: open-loop cells beside every closed-loop cell (bench.measuring.schedule).
    "rates",
    "rate_fractions",
    "open_loop_batch_sizes",
    "open_loop_backends",
)
SWEEP_SCALARS = (
    "repeat",
    "warmup",
    "duration",
    "max_buffered_events",
    "cell_timeout",
    "shuffle_seed",
    "max_repeats",
    "time_budget",
    "pin",
    "calibrate",
)
