"""The Kafka scenario's child processes: the mock cluster, the preload, and the source, worker and sink stages."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
import uuid
from array import array
from typing import Any

from bench.measuring.cell import (
    _write_result,
    report_child,
)
from bench.measuring.events import EventFactory, clock_ns
from bench.scenarios.kafka.settings import POLL_HEADER

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


def broker_main(conn, stop) -> None:
    """Own the mock cluster for the run: it lives in this process's librdkafka threads."""
    _die_with_parent()
    from confluent_kafka import Producer

    owner = Producer({"test.mock.num.brokers": 1, "log_level": 3})
    brokers = owner.list_topics(timeout=30).brokers.values()
    conn.send(",".join(f"{b.host}:{b.port}" for b in brokers))
    conn.close()
    stop.wait()
    del owner


def preload_main(spec: dict, result_path: str) -> None:
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

        source = KafkaSource(open_queue(spec, "a"), spec["in_topic"], _consumer_config(spec),
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

        qa, qb = open_queue(spec, "a"), open_queue(spec, "b")
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

        sink = KafkaSink(open_queue(spec, "b"), _producer_config(spec), spec["out_topic"], on_batch=on_batch)
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


def open_queue(spec: dict, which: str):
    import turbo_queue

    return turbo_queue.Queue(os.path.join(spec["workdir"], f"queue-{which}"), batch_size=spec["batch_size"],
                             max_ready=spec["max_ready"], max_batch_age=spec["max_batch_age"])


_STAGES = {"source": _source, "worker": _worker, "sink": _sink}


def stage_main(role: str, index: int, spec: dict, shared: dict, result_path: str) -> None:
    _die_with_parent()
    # `kill -USR1 <pid>` prints every thread's stack: to see where a stuck run waits.
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)
    result: dict[str, Any] = {"role": role, "index": index, "pid": os.getpid()}
    report_child(result_path, result, lambda: _STAGES[role](spec, shared, index))


