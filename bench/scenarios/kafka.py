"""The Kafka pipeline as a benchmark scenario.

Reproduce one run (needs ``pip install "turbo-queue-ng[kafka]"``)::

    python -m bench.scenarios.kafka --consumers 2 --work-us 50 --events 20000 --out results/kafka-mock
    python -m bench.scenarios.kafka --backend turbo,mpq-batch --consumers 1,2 --repeat 3
    python -m bench.scenarios.kafka --bootstrap-servers broker1:9092 ...     # a real cluster

The pipeline our users run, one machine's share of it::

    input topic -> S source processes -> queue A -> C worker processes -> queue B -> sink process -> output topic

``--backend turbo``: the connectors of :mod:`turbo_queue.kafka`
(:class:`~turbo_queue.kafka.KafkaSource` committing only sealed offsets,
:func:`~turbo_queue.kafka.run_worker`, :class:`~turbo_queue.kafka.KafkaSink`
acking only confirmed batches).  ``--backend mpq-batch``: the same stages
around two ``multiprocessing.Queue`` carrying lists of ``batch_size`` records
(the hand-batched baseline; offsets are stored once a list is handed to the
queue, so it is not crash-safe: a throughput reference only).

Timeline of a run:

1. Without ``--bootstrap-servers`` a helper process starts librdkafka's
   built-in mock cluster (``test.mock.num.brokers=1``, loopback only) and
   lives for the whole run; every stage connects to it.  **The mock's figures
   are not a broker's**: it keeps messages in memory in that one process,
   without replication or disk, and its CPU shows up as ``broker_*`` columns.
   Its topics have 4 partitions (it cannot create topics, it auto-creates
   them with 4), so ``--partitions`` applies to real clusters only, and it
   keeps at most 5 MiB per partition, deleting older messages: runs of more
   than :func:`mock_max_events` events (about 45,000 of 300 bytes) are refused
   rather than silently losing unread input.  A run whose input topic lost
   messages to retention (any cluster) fails with that reason.
2. A preload process writes ``--events`` events (bench.measuring.events, JSON values,
   key = the event's ``seq``) to a fresh input topic.
3. The stages start, each signals ready, then all start at once.  Workers run
   the calibrated per-event work of bench.measuring.work on the decoded event.
4. The window: from the moment the sink has delivered ``--window-from`` of
   the events (default 10 %) to the moment it has delivered
   ``--window-to`` (90 %), so group join and start-up are excluded, and so is
   the tail.  The parent samples every process with psutil at both edges and
   reads the group's consumer lag (committed offsets vs high watermarks of
   the input topic) at the end edge.
5. Then the sources stop (seal, commit, leave), queue A is closed, workers
   drain, queue B is closed, the sink drains, and the parent reads the
   output topic back: every input key must be there (``lost``; ``duplicated``
   counts keys seen more than once).

Latency: ``latency_*`` is from the input message's Kafka timestamp to the
sink's delivery confirmation.  The topic is preloaded, so this includes the
time a message waited in the topic backlog (it grows through the run, like
the lag); ``pipeline_latency_*`` is from the source's poll to the sink's
confirmation, the time spent in this machine's pipeline.

Output: ``runs.csv`` with the columns of :data:`bench.schema.COLUMNS` in order,
then :data:`KAFKA_COLUMNS` appended, and ``meta.json`` (whose ``kafka`` key says
whether the mock cluster or a real one was used).  Schema columns map as:
``producers`` = source processes, ``consumers`` = worker processes,
``producer_*_s`` = sources' CPU, ``consumer_*_s`` = workers' CPU, and
``overhead_us_per_event`` counts sources, workers and sink (not the broker).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.measuring.cell import (
    _write_result,
    reap_processes,
    report_child,
    sample_delta,
    window_figures,
)
from bench.measuring.events import EventFactory, clock_ns
from bench.schema import COLUMNS, SCHEMA_VERSION

#: Columns appended after bench.schema.COLUMNS in this scenario's runs.csv.
KAFKA_COLUMNS = {
    "scenario": "str: 'kafka' (the Kafka pipeline scenario)",
    "kafka_cluster": "str: 'mock' (librdkafka's built-in mock cluster: not a broker's figures) or 'real'",
    "partitions": "int: partitions of the input topic",
    "events_preloaded": "int: events written to the input topic before the run",
    "output_messages": "int: messages found on the output topic (more than events_preloaded: duplicates)",
    "consumer_lag": "int: input messages not yet committed by the source group at the window's end "
                    "(sum over partitions of high watermark - committed offset)",
    "sink_user_s": "float: user CPU seconds of the sink process inside the window",
    "sink_sys_s": "float: system CPU seconds of the sink process inside the window",
    "broker_user_s": "float: user CPU seconds of the mock cluster's process inside the window (empty: real)",
    "broker_sys_s": "float: system CPU seconds of the mock cluster's process inside the window (empty: real)",
    "pipeline_latency_p50_ms": "float: source poll -> sink delivery confirmed, median (window)",
    "pipeline_latency_p99_ms": "float: source poll -> sink delivery confirmed, 99th percentile (window)",
    "source_pauses": "int: times the sources paused their partitions for backpressure (turbo only)",
}

ALL_COLUMNS = [*COLUMNS, *KAFKA_COLUMNS]

BACKENDS = ("turbo", "mpq-batch")

#: Header the source adds to each record: the clock_ns of its poll.
POLL_HEADER = "bench-poll-ns"

#: How often the parent checks progress (it mostly sleeps).
_TICK_S = 0.002

#: librdkafka's mock cluster keeps at most this many bytes per partition
#: (rdkafka_mock.c: max_size 5 MiB, max_cnt 100000 message sets) and deletes
#: the oldest data beyond it, so a preloaded topic larger than that loses
#: messages before the source reads them.  Runs that would come near it are
#: refused up front.
MOCK_PARTITION_BYTES = 5 * 1024 * 1024
MOCK_PARTITIONS = 4
#: Bytes a record costs in the mock's log beyond its JSON value (key, record
#: and batch headers, and the poll-time header the output copy carries).
_RECORD_OVERHEAD = 120

#: A run whose sink delivers nothing new for this long has failed.
STALL_S = 60.0


def mock_max_events(event_bytes: int) -> int:
    """The most events a run against the mock cluster may use (90 % of its per-partition cap)."""
    return int(0.9 * MOCK_PARTITION_BYTES * MOCK_PARTITIONS / (event_bytes + _RECORD_OVERHEAD))


def _kafka_available() -> tuple[bool, str]:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False, 'confluent-kafka is not installed: pip install "turbo-queue-ng[kafka]"'
    return True, ""


def cell_id(backend: str, start_method: str, sources: int, consumers: int, batch_size: int,
            work_us: float, workload: str, event_bytes: int) -> str:
    return (f"kafka-{backend}-{start_method}-s{sources}-c{consumers}-b{batch_size}"
            f"-w{work_us:g}-{workload}-e{event_bytes}")


# --------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _broker_main(conn, stop) -> None:
    """Own the mock cluster for the run: it lives in this process's librdkafka threads."""
    _die_with_parent()
    from confluent_kafka import Producer

    owner = Producer({"test.mock.num.brokers": 1, "log_level": 3})
    brokers = owner.list_topics(timeout=30).brokers.values()
    conn.send(",".join(f"{b.host}:{b.port}" for b in brokers))
    conn.close()
    stop.wait()
    del owner


def _preload_main(spec: dict, result_path: str) -> None:
    _die_with_parent()
    result: dict[str, Any] = {}
    try:
        from confluent_kafka import Producer

        if spec["cluster"] == "real":
            _create_topics(spec)
        p = Producer({"bootstrap.servers": spec["bootstrap"], "linger.ms": 20, "log_level": 3,
                      "batch.num.messages": 10000})
        make = EventFactory(0, spec["event_bytes"]).make
        dumps = json.dumps
        for i in range(spec["events"]):
            ev = make(i)
            while True:
                try:
                    p.produce(spec["in_topic"], key=str(ev["seq"]).encode(), value=dumps(ev).encode())
                    break
                except BufferError:
                    p.poll(0.05)
        left = p.flush(120)
        if left:
            raise RuntimeError(f"{left} preload messages undelivered")
        md = p.list_topics(spec["in_topic"], timeout=30)
        parts = sorted(md.topics[spec["in_topic"]].partitions)
        result["partitions"] = len(parts)
        result["low_watermarks"] = _low_watermarks(spec["bootstrap"], spec["in_topic"], parts)
    except BaseException as exc:
        result["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    _write_result(result_path, result)


def _low_watermarks(bootstrap: str, topic: str, parts: list[int]) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-wm-{uuid.uuid4().hex[:8]}",
                  "log_level": 3})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[0] for p in parts}
    finally:
        c.close()


def _create_topics(spec: dict) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": spec["bootstrap"], "log_level": 3})
    topics = [NewTopic(t, num_partitions=spec["partitions"], replication_factor=-1)
              for t in (spec["in_topic"], spec["out_topic"])]
    for topic, fut in admin.create_topics(topics, request_timeout=30).items():
        try:
            fut.result(60)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create topic {topic}: {exc}") from exc


def _consumer_config(spec: dict) -> dict:
    return {
        "bootstrap.servers": spec["bootstrap"],
        "group.id": spec["group"],
        "auto.offset.reset": "earliest",
        # Revocations after the group synced: commits in on_revoke succeed
        # (the mock cluster refuses commits while an eager rebalance joins).
        "partition.assignment.strategy": "cooperative-sticky",
        "log_level": 3,
    }


def _producer_config(spec: dict) -> dict:
    return {"bootstrap.servers": spec["bootstrap"], "log_level": 3}


def _stamp(msg):
    """The source's item: the KafkaRecord plus a header with the poll time."""
    from turbo_queue.kafka import KafkaRecord

    rec = KafkaRecord.from_message(msg)
    headers = list(rec.headers or ())
    headers.append((POLL_HEADER, b"%d" % clock_ns()))
    return rec._replace(headers=headers)


def _source(spec: dict, shared: dict, index: int) -> dict:
    ready, start, stop = shared["ready"], shared["start"], shared["stop_sources"]
    if spec["backend"] == "turbo":
        from turbo_queue.kafka import KafkaSource

        source = KafkaSource(_queue(spec, "a"), spec["in_topic"], _consumer_config(spec),
                             poll_batch=spec["poll_batch"], commit_interval=spec["commit_interval"],
                             to_item=_stamp)
        ready.release()
        start.wait()
        with source:
            while not stop.is_set():
                source.step()
        return {"stats": source.stats}

    from confluent_kafka import Consumer, TopicPartition

    config = _consumer_config(spec)
    config.update({"enable.auto.commit": True, "enable.auto.offset.store": False,
                   "auto.commit.interval.ms": max(1, int(spec["commit_interval"] * 1000))})
    consumer = Consumer(config)
    consumer.subscribe([spec["in_topic"]])
    q = shared["qa"]
    size = spec["batch_size"]
    max_age = spec["max_batch_age"]
    buf: list = []
    top: dict = {}
    first = 0.0
    ready.release()
    start.wait()

    def hand_over():
        # Store (for the next auto-commit) once the list is in the queue.
        q.put(buf)
        consumer.store_offsets(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in top.items()])

    while not stop.is_set():
        for msg in consumer.consume(num_messages=spec["poll_batch"], timeout=0.1):
            if msg.error():
                continue
            if not buf:
                first = time.monotonic()
            buf.append(_stamp(msg))
            top[(msg.topic(), msg.partition())] = msg.offset()
            if len(buf) >= size:
                hand_over()
                buf, top = [], {}
        if buf and time.monotonic() - first >= max_age:
            hand_over()
            buf, top = [], {}
    if buf:
        hand_over()
    consumer.close()  # commits what was stored
    q.close()
    q.join_thread()
    return {"stats": {}}


def _worker(spec: dict, shared: dict, index: int) -> dict:
    from bench.measuring.work import make_work

    work = make_work(spec["workload"], spec["work_us"], spec["calibration"])
    counts = shared["worker_counts"]
    loads = json.loads

    def process(items):
        for rec in items:
            work(loads(rec.value))
        counts[index] += len(items)
        return items  # the records go on to the sink unchanged

    ready, start = shared["ready"], shared["start"]
    if spec["backend"] == "turbo":
        from turbo_queue.kafka import run_worker

        qa, qb = _queue(spec, "a"), _queue(spec, "b")
        ready.release()
        start.wait()
        run_worker(qa, qb, process, many=True)
        return {}

    from bench.measuring.backends.mpq import SENTINEL

    qa, qb = shared["qa"], shared["qb"]
    ready.release()
    start.wait()
    while True:
        items = qa.get()
        if items is SENTINEL:
            break
        qb.put(process(items))
    qb.put(SENTINEL)
    qb.close()
    qb.join_thread()
    return {}


def _sink(spec: dict, shared: dict, index: int) -> dict:
    delivered = shared["delivered"]
    at_ns = array("q")
    kafka_ms = array("d")
    pipe_ns = array("q")

    def on_batch(items) -> None:
        # Runs once Kafka confirmed every message of the batch (before the ack).
        now_ns = clock_ns()
        now_ms = time.time() * 1000.0
        for rec in items:
            at_ns.append(now_ns)
            kafka_ms.append(now_ms - rec.timestamp if rec.timestamp is not None else -1.0)
            pipe_ns.append(now_ns - int(rec.headers[-1][1]))
        delivered.value += len(items)

    ready, start = shared["ready"], shared["start"]
    if spec["backend"] == "turbo":
        from turbo_queue.kafka import KafkaSink

        sink = KafkaSink(_queue(spec, "b"), _producer_config(spec), spec["out_topic"], on_batch=on_batch)
        ready.release()
        start.wait()
        sink.run()
        stats = sink.stats
    else:
        from confluent_kafka import Producer

        from bench.measuring.backends.mpq import SENTINEL

        producer = Producer(_producer_config(spec))
        qb = shared["qb"]
        ends = 0
        failed = 0
        ready.release()
        start.wait()
        while ends < spec["consumers"]:
            items = qb.get()
            if items is SENTINEL:
                ends += 1
                continue
            errors = []

            def report(err, msg, errors=errors):
                if err is not None:
                    errors.append(err)

            for rec in items:
                kwargs = {"value": rec.value, "key": rec.key, "headers": rec.headers}
                if rec.timestamp is not None:
                    kwargs["timestamp"] = rec.timestamp
                while True:
                    try:
                        producer.produce(spec["out_topic"], on_delivery=report, **kwargs)
                        break
                    except BufferError:
                        producer.poll(0.05)
            while producer.flush(1.0):
                pass
            failed += bool(errors)
            on_batch(items)
        stats = {"failed_batches": failed}
    return {"stats": stats, "at_ns": at_ns.tobytes(), "kafka_ms": kafka_ms.tobytes(),
            "pipe_ns": pipe_ns.tobytes()}


def _queue(spec: dict, which: str):
    import turbo_queue

    return turbo_queue.Queue(os.path.join(spec["workdir"], f"queue-{which}"), batch_size=spec["batch_size"],
                             max_ready=spec["max_ready"], max_batch_age=spec["max_batch_age"])


_STAGES = {"source": _source, "worker": _worker, "sink": _sink}


def _stage_main(role: str, index: int, spec: dict, shared: dict, result_path: str) -> None:
    _die_with_parent()
    # `kill -USR1 <pid>` prints every thread's stack: to see where a stuck run waits.
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)
    result: dict[str, Any] = {"role": role, "index": index, "pid": os.getpid()}
    report_child(result_path, result, lambda: _STAGES[role](spec, shared, index))


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
    ok, reason = _kafka_available()
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
        broker = ctx.Process(target=_broker_main, args=(child_conn, stop), name="bench-kafka-mock", daemon=True)
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
    pre = ctx.Process(target=_preload_main, args=(spec, pre_path), name="bench-kafka-preload", daemon=True)
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
            _queue(spec, which)  # create the folders once, here
    roles = [("source", i) for i in range(sources)] + [("worker", i) for i in range(consumers)] + [("sink", 0)]
    by_role: dict = {}
    paths: dict = {}
    for role, i in roles:
        paths[(role, i)] = os.path.join(results_dir, f"{role}-{i}.pickle")
        p = ctx.Process(target=_stage_main, args=(role, i, spec, shared, paths[(role, i)]),
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
            time.sleep(_TICK_S)
    finally:
        checker.close()

    # 5. End of stream: sources, then queue A, workers, queue B, sink.
    shared["stop_sources"].set()
    for (role, _i), p in by_role.items():
        if role == "source":
            p.join(remaining())
    if backend == "turbo":
        _queue(spec, "a").close()
    else:
        from bench.measuring.backends.mpq import SENTINEL

        for _ in range(consumers):
            shared["qa"].put(SENTINEL, timeout=max(0.1, remaining()))
    for (role, _i), p in by_role.items():
        if role == "worker":
            p.join(remaining())
    if backend == "turbo":
        _queue(spec, "b").close()
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
    ok, reason = _kafka_available()
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
