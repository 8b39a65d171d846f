"""The Kafka scenario's parent: one run of the pipeline, sampled at the window's edges."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime

from bench.measuring.cell import (
    reap_processes,
    sample_delta,
    window_figures,
)
from bench.measuring.events import clock_ns
from bench.scenarios.kafka.settings import (
    ALL_COLUMNS,
    BACKENDS,
    MOCK_PARTITION_BYTES,
    MOCK_PARTITIONS,
    STALL_S,
    TICK_S,
    cell_id,
    kafka_available,
    mock_max_events,
)
from bench.scenarios.kafka.stages import broker_main, open_queue, preload_main, stage_main
from bench.schema import SCHEMA_VERSION

# --------------------------------------------------------------------------
# Parent: sampling
# --------------------------------------------------------------------------


def _ctx_switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary switches summed over all threads (Linux /proc)."""
    vol = invol = 0
    task_dir = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except OSError:
            continue
    return vol, invol


def _sample(procs: dict) -> dict:
    import psutil

    out = {"per_cpu": psutil.cpu_times(percpu=True), "procs": {}}
    for key, proc in procs.items():
        try:
            with proc.oneshot():
                t = proc.cpu_times()
                try:
                    written = proc.io_counters().write_bytes
                except (AttributeError, psutil.AccessDenied, NotImplementedError):
                    written = None
            vol, invol = _ctx_switches(proc.pid)
            out["procs"][key] = {"user": t.user, "system": t.system, "vol": vol, "invol": invol,
                                 "written": written}
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            out["procs"][key] = None
    return out


def _consumer_lag(checker, topic: str) -> int | None:
    from confluent_kafka import TopicPartition

    try:
        md = checker.list_topics(topic, timeout=10)
        parts = sorted(md.topics[topic].partitions)
        committed = checker.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        lag = 0
        for tp in committed:
            high = checker.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1]
            lag += high - max(tp.offset, 0) if tp.offset >= 0 else high
        return lag
    except Exception:
        return None


def _read_output(bootstrap: str, topic: str, timeout: float) -> tuple[dict, int]:
    """Every key on the output topic with its count, and the total message count."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-check-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "log_level": 3})
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return {}, 0
        parts = sorted(md.topics[topic].partitions)
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        if any(lo > 0 for lo, _ in marks.values()):
            # Retention deleted the oldest output: the check cannot see it.
            raise _Failed("failed", f"the output topic lost its oldest messages to retention (low watermarks "
                                    f"{ {p: lo for p, (lo, _) in marks.items()} }): cannot check delivery")
        highs = {p: hi for p, (_, hi) in marks.items()}
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        pos = dict.fromkeys(parts, 0)
        counts: dict = {}
        total = 0
        deadline = time.monotonic() + timeout
        while any(pos[p] < highs[p] for p in parts) and time.monotonic() < deadline:
            for m in c.consume(5000, 0.5):
                if m.error():
                    continue
                counts[m.key()] = counts.get(m.key(), 0) + 1
                pos[m.partition()] = m.offset() + 1
                total += 1
        return counts, total
    finally:
        c.close()


# --------------------------------------------------------------------------
# Parent: one run
# --------------------------------------------------------------------------


class _Failed(Exception):
    def __init__(self, status: str, error: str):
        super().__init__(error)
        self.status = status
        self.error = error


def _empty_row(**cell) -> dict:
    import psutil

    row = dict.fromkeys(ALL_COLUMNS, "")
    row.update(cell)
    row.update(schema_version=SCHEMA_VERSION, scenario="kafka", cpu_count=psutil.cpu_count(logical=True))
    return row


def run_kafka_cell(
    *,
    backend: str = "turbo",
    consumers: int = 2,
    work_us: float = 50.0,
    events: int = 20000,
    sources: int = 1,
    batch_size: int = 100,
    bootstrap_servers: str | None = None,
    partitions: int = 4,
    workload: str = "busy",
    event_bytes: int = 300,
    start_method: str = "spawn",
    max_buffered_events: int = 10000,
    max_batch_age: float = 0.2,
    commit_interval: float = 0.2,
    calibration: dict | None = None,
    repeat: int = 0,
    timeout: float = 300.0,
    workdir: str | None = None,
    window: tuple[float, float] = (0.1, 0.9),
) -> dict:
    """Run the pipeline once; return its runs.csv row (schema COLUMNS + KAFKA_COLUMNS).

    Never raises for a failing run: ``status`` is ``failed`` or ``timeout``
    and ``error`` says why; every process it started is reaped either way.
    """
    cid = cell_id(backend, start_method, sources, consumers, batch_size, work_us, workload, event_bytes)
    row = _empty_row(
        cell_id=cid, repeat=repeat, backend=backend, start_method=start_method, producers=sources,
        consumers=consumers, batch_size=batch_size, work_us=work_us, workload=workload,
        event_bytes=event_bytes, started_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        kafka_cluster="real" if bootstrap_servers else "mock", events_preloaded=events,
    )
    ok, reason = kafka_available()
    if not ok:
        row.update(status="failed", error=reason)
        return row
    if backend not in BACKENDS:
        row.update(status="failed", error=f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        return row
    if not bootstrap_servers and events > mock_max_events(event_bytes):
        row.update(status="failed", error=(
            f"--events {events} is too many for the mock cluster: it keeps at most "
            f"{MOCK_PARTITION_BYTES >> 20} MiB per partition ({MOCK_PARTITIONS} partitions) and deletes older "
            f"messages, so at {event_bytes} bytes per event it holds about {mock_max_events(event_bytes)} "
            f"events; use fewer events or --bootstrap-servers"))
        return row
    if calibration is None:
        from bench.measuring.work import calibrate

        calibration = calibrate(work_us=(work_us,), workloads=(workload,), event_bytes=(event_bytes,))
    ctx = multiprocessing.get_context(start_method)
    base = workdir or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"{cid}-r{repeat}-", dir=base)
    processes: list = []
    helpers: dict = {}
    try:
        row.update(_run(row, ctx, work, processes, helpers, backend=backend, consumers=consumers,
                        work_us=work_us, events=events, sources=sources, batch_size=batch_size,
                        bootstrap_servers=bootstrap_servers, partitions=partitions, workload=workload,
                        event_bytes=event_bytes, max_buffered_events=max_buffered_events,
                        max_batch_age=max_batch_age, commit_interval=commit_interval,
                        calibration=calibration, timeout=timeout, window=window))
        row["status"] = "ok"
    except _Failed as failure:
        row.update(getattr(failure, "row", {}))
        row.update(status=failure.status, error=failure.error)
    except Exception as exc:
        row.update(status="failed", error=f"harness error: {exc!r}")
    finally:
        reap_processes(processes)
        stop = helpers.get("broker_stop")
        if stop is not None:
            stop.set()
        reap_processes([p for p in (helpers.get("broker"),) if p is not None], grace=5.0)
        shutil.rmtree(work, ignore_errors=True)
    return row


def _read_result(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return None


def _run(row, ctx, work, processes, helpers, *, backend, consumers, work_us, events, sources, batch_size,
         bootstrap_servers, partitions, workload, event_bytes, max_buffered_events, max_batch_age,
         commit_interval, calibration, timeout, window) -> dict:
    import numpy as np
    import psutil

    hard_deadline = time.monotonic() + timeout

    def remaining() -> float:
        return max(0.0, hard_deadline - time.monotonic())

    # 1. The cluster.
    if bootstrap_servers:
        bootstrap, cluster = bootstrap_servers, "real"
    else:
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        helpers["broker_stop"] = stop = ctx.Event()
        broker = ctx.Process(target=broker_main, args=(child_conn, stop), name="bench-kafka-mock", daemon=True)
        broker.start()
        helpers["broker"] = broker
        child_conn.close()
        if not parent_conn.poll(min(60.0, remaining())):
            raise _Failed("failed", "the mock cluster did not start")
        bootstrap, cluster = parent_conn.recv(), "mock"
        parent_conn.close()
    tag = uuid.uuid4().hex[:10]
    spec = {
        "backend": backend, "bootstrap": bootstrap, "cluster": cluster,
        "in_topic": f"bench-in-{tag}", "out_topic": f"bench-out-{tag}", "group": f"bench-{tag}",
        "events": events, "event_bytes": event_bytes, "partitions": partitions,
        "batch_size": batch_size, "max_ready": max(1, -(-max_buffered_events // batch_size)),
        "max_batch_age": max_batch_age, "poll_batch": max(100, min(batch_size, 1000)),
        "commit_interval": commit_interval,
        "workload": workload, "work_us": work_us, "calibration": calibration,
        "consumers": consumers, "workdir": work,
    }

    # 2. Preload the input topic.
    results_dir = os.path.join(work, "results")
    os.makedirs(results_dir)
    pre_path = os.path.join(results_dir, "preload.pickle")
    pre = ctx.Process(target=preload_main, args=(spec, pre_path), name="bench-kafka-preload", daemon=True)
    pre.start()
    processes.append(pre)
    pre.join(remaining())
    pre_result = _read_result(pre_path) or {}
    if pre.exitcode is None:
        raise _Failed("timeout", "timed out preloading the input topic")
    if "error" in pre_result or pre.exitcode != 0:
        raise _Failed("failed", f"preload failed: {pre_result.get('error', pre.exitcode)}")
    n_partitions = pre_result["partitions"]
    truncated = {p: lo for p, lo in pre_result["low_watermarks"].items() if lo > 0}
    if truncated:
        raise _Failed("failed", f"the input topic lost its oldest messages right after the preload "
                                f"(low watermarks {truncated}): the cluster's retention is smaller than "
                                f"--events; use fewer events")

    # 3. The stages.
    shared = {
        "ready": ctx.Semaphore(0), "start": ctx.Event(), "stop_sources": ctx.Event(),
        "delivered": ctx.RawValue("q", 0), "worker_counts": ctx.RawArray("q", consumers),
    }
    if backend == "mpq-batch":
        maxsize = spec["max_ready"]
        shared["qa"] = ctx.Queue(maxsize=maxsize)
        shared["qb"] = ctx.Queue(maxsize=maxsize)
    else:
        for which in ("a", "b"):
            open_queue(spec, which)  # create the folders once, here
    roles = [("source", i) for i in range(sources)] + [("worker", i) for i in range(consumers)] + [("sink", 0)]
    by_role: dict = {}
    paths: dict = {}
    for role, i in roles:
        paths[(role, i)] = os.path.join(results_dir, f"{role}-{i}.pickle")
        p = ctx.Process(target=stage_main, args=(role, i, spec, shared, paths[(role, i)]),
                        name=f"bench-kafka-{role}-{i}", daemon=True)
        p.start()
        processes.append(p)
        by_role[(role, i)] = p

    def check_alive(phase: str) -> None:
        for (role, i), p in by_role.items():
            if p.exitcode is not None and not (role == "source" and shared["stop_sources"].is_set()):
                r = _read_result(paths[(role, i)]) or {}
                raise _Failed("failed", f"{role} {i} exited ({r.get('error') or p.exitcode}) {phase}")

    for _ in roles:
        while not shared["ready"].acquire(timeout=min(0.25, remaining())):
            check_alive("during start-up")
            if remaining() <= 0:
                raise _Failed("timeout", f"timed out after {timeout:g}s during start-up")
    procs = {f"{role}-{i}": psutil.Process(p.pid) for (role, i), p in by_role.items()}
    if "broker" in helpers:
        procs["broker"] = psutil.Process(helpers["broker"].pid)

    from confluent_kafka import Consumer

    checker = Consumer({"bootstrap.servers": bootstrap, "group.id": spec["group"], "enable.auto.commit": False,
                        "log_level": 3})
    try:
        # 4. Go, and take the window from the sink's progress.
        delivered = shared["delivered"]
        lo, hi = int(events * window[0]), int(events * window[1])
        t_go = clock_ns()
        shared["start"].set()
        before = after = None
        counts_before = counts_after = None
        d_before = d_after = 0
        t_before = t_after = 0
        lag = None
        peak_rss = 0
        next_rss = 0.0
        last_d, last_change = -1, time.monotonic()
        while True:
            d = delivered.value
            if d != last_d:
                last_d, last_change = d, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                raise _Failed("failed", f"no progress for {STALL_S:g}s with {d} of {events} events delivered "
                                        f"(consumer lag {_consumer_lag(checker, spec['in_topic'])}); "
                                        f"did the input topic lose messages to retention?")
            if before is None and d >= lo:
                t_before, d_before = clock_ns(), d
                counts_before = list(shared["worker_counts"])
                before = _sample(procs)
            if after is None and d >= hi:
                t_after, d_after = clock_ns(), d
                counts_after = list(shared["worker_counts"])
                after = _sample(procs)
                lag = _consumer_lag(checker, spec["in_topic"])
            if d >= events:
                break
            now = time.monotonic()
            if now >= next_rss:
                next_rss = now + 0.25
                for proc in procs.values():
                    try:
                        peak_rss = max(peak_rss, proc.memory_info().rss)
                    except psutil.Error:
                        pass
            check_alive("during the run")
            if remaining() <= 0:
                raise _Failed("timeout", f"timed out after {timeout:g}s with {d} of {events} events delivered")
            time.sleep(TICK_S)
    finally:
        checker.close()

    # 5. End of stream: sources, then queue A, workers, queue B, sink.
    shared["stop_sources"].set()
    for (role, _i), p in by_role.items():
        if role == "source":
            p.join(remaining())
    if backend == "turbo":
        open_queue(spec, "a").close()
    else:
        from bench.measuring.backends.mpq import SENTINEL

        for _ in range(consumers):
            shared["qa"].put(SENTINEL, timeout=max(0.1, remaining()))
    for (role, _i), p in by_role.items():
        if role == "worker":
            p.join(remaining())
    if backend == "turbo":
        open_queue(spec, "b").close()
    by_role[("sink", 0)].join(remaining())
    for (role, i), p in by_role.items():
        if p.exitcode is None:
            raise _Failed("timeout", f"timed out after {timeout:g}s waiting for {role} {i} to finish")
    results = {key: _read_result(path) for key, path in paths.items()}
    for (role, i), r in results.items():
        if r is None or "error" in r:
            raise _Failed("failed", f"{role} {i} failed: {(r or {}).get('error', 'no result')}")

    # 6. Delivery check: read the output topic back.
    counts, total = _read_output(bootstrap, spec["out_topic"], timeout=max(10.0, remaining()))
    # Keys are the events' seq: producer 0 numbers its events 0, 1, 2, ...
    lost = sum(1 for i in range(events) if b"%d" % i not in counts)
    duplicated = sum(1 for v in counts.values() if v > 1)
    return _measure(
        row, spec, results, before, after, counts_before, counts_after, d_before, d_after, t_go, t_before,
        t_after, lag, peak_rss, n_partitions, lost, duplicated, len(counts), total, np)


def _measure(row, spec, results, before, after, counts_before, counts_after, d_before, d_after, t_go,
             t_before, t_after, lag, peak_rss, n_partitions, lost, duplicated, unique, total, np) -> dict:
    from bench.measuring.work import work_cost_us

    window_s = (t_after - t_before) / 1e9
    events = d_after - d_before
    eps = [(a - b) / window_s for a, b in zip(counts_after, counts_before)] if window_s > 0 else [0.0]

    sink = results[("sink", 0)]
    at = np.frombuffer(sink["at_ns"], dtype=np.int64)
    kafka_ms = np.frombuffer(sink["kafka_ms"], dtype=np.float64)
    pipe_ns = np.frombuffer(sink["pipe_ns"], dtype=np.int64)
    inside = (at >= t_before) & (at <= t_after)
    k_lat = kafka_ms[inside & (kafka_ms >= 0)]
    p_lat = pipe_ns[inside] / 1e6

    cost = work_cost_us(spec["workload"], spec["work_us"], spec["event_bytes"], spec["calibration"])
    work_per_event = cost if cost is not None else float(spec["work_us"])

    def cpu(prefix: str, field: str) -> float:
        return sample_delta(before, after, prefix, field)

    # Sources are the producers and workers the consumers of the schema; the
    # sink counts in the overhead too, the broker (not ours) in none of it.
    out = window_figures(
        before, after, window_s, events, eps,
        producers=("source",), consumers=("worker",), others=("sink",),
        work_per_event=work_per_event,
        useful_us=spec["work_us"] if spec["workload"] == "busy" else work_per_event,
        latency_ms=k_lat,
        peak_rss_bytes=max([peak_rss] + [r.get("max_rss_bytes", 0) for r in results.values() if r]),
    )
    out.update({
        "warmup_s": (t_before - t_go) / 1e9,
        "events_total": unique,
        "lost": lost,
        "duplicated": duplicated,
        "partitions": n_partitions,
        "output_messages": total,
        "consumer_lag": "" if lag is None else lag,
        "sink_user_s": cpu("sink", "user"),
        "sink_sys_s": cpu("sink", "system"),
        "broker_user_s": cpu("broker", "user") if "broker" in before["procs"] else "",
        "broker_sys_s": cpu("broker", "system") if "broker" in before["procs"] else "",
        "pipeline_latency_p50_ms": float(np.percentile(p_lat, 50)) if p_lat.size else "",
        "pipeline_latency_p99_ms": float(np.percentile(p_lat, 99)) if p_lat.size else "",
        "source_pauses": sum(r.get("stats", {}).get("pauses", 0) for (role, _), r in results.items()
                             if role == "source"),
    })
    if lost:
        failure = _Failed("failed", f"delivery check failed: {lost} of {spec['events']} input keys never "
                                    f"reached the output topic ({total} messages there)")
        failure.row = out
        raise failure
    if events <= 0 or window_s <= 0:
        failure = _Failed("failed", "no events inside the window (too few --events?)")
        failure.row = out
        raise failure
    return out


