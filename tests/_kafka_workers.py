"""Processes and helpers for tests/test_kafka.py (the Kafka connectors).

Run as a script, this file is one stage of the pipeline in its own process,
so that the tests can kill -9 it::

    python tests/_kafka_workers.py source --bootstrap B --group G --topic IN --queue A --status F
    python tests/_kafka_workers.py worker --in A --out B --status F [--item-sleep S]
    python tests/_kafka_workers.py sink --queue B --bootstrap B --topic OUT --status F [--ack-delay S]

Each stage rewrites its ``--status`` file (JSON, written to a temporary name
and renamed, so a reader never sees half of it) as it makes progress, and
stops cleanly on SIGTERM.  The tests synchronize on those files and on Kafka's
committed offsets, never on bare sleeps.

The two queues are made by :func:`queue_a` and :func:`queue_b` here, in the
test and in every stage alike, so that all agree on their settings.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import turbo_queue

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()

#: Consumer settings every test source uses.  The mock cluster holds a new
#: group's first join for 3 s (group.initial.rebalance.delay.ms) and drops a
#: member that sends nothing for session.timeout.ms, so the session must be
#: longer than that delay; shorter than the 45 s default so that a killed
#: source's partitions move on quickly.
GROUP_SETTINGS = {
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 4500,
    "heartbeat.interval.ms": 300,
    "topic.metadata.refresh.interval.ms": 1000,
    "log_level": 3,
}


def queue_a(path) -> turbo_queue.Queue:
    """Source -> workers: small batches and max_ready, so backpressure is real."""
    return turbo_queue.Queue(path, batch_size=50, max_ready=4, max_batch_age=0.3, recover_interval=0.2)


def queue_b(path) -> turbo_queue.Queue:
    """Workers -> sink."""
    return turbo_queue.Queue(path, batch_size=50, max_batch_age=0.3, recover_interval=0.2)


# -- helpers used by the tests -----------------------------------------------



def write_status(path, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def read_status(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def TopicPartition(topic: str, partition: int):
    from confluent_kafka import TopicPartition as TP

    return TP(topic, partition)


def start_mock_cluster():
    """A mock cluster living in this process; returns (handle to keep alive, bootstrap servers)."""
    from confluent_kafka import Producer

    owner = Producer({"test.mock.num.brokers": 1, "log_level": 3})
    brokers = owner.list_topics(timeout=10).brokers.values()
    return owner, ",".join(f"{b.host}:{b.port}" for b in brokers)


def record_headers(i: int) -> list:
    return [("idx", str(i).encode()), ("src", b"test")]


def record_timestamp(i: int) -> int:
    return 1_700_000_000_000 + i


def produce_input(bootstrap: str, topic: str, n: int) -> None:
    """Messages key ``k<i>``, value ``v<i>``, two headers and timestamp base+i."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 3})
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, headers=record_headers(i),
                          timestamp=record_timestamp(i))
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(30)
    assert left == 0, f"{left} input messages not delivered"


def partitions_of(bootstrap: str, topic: str) -> list[int]:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3}).list_topics(topic, timeout=10)
    return sorted(md.topics[topic].partitions)


class TopicReader:
    """Reads a whole topic from the beginning, remembering every message by key."""

    def __init__(self, bootstrap: str, topic: str):
        from confluent_kafka import Consumer, TopicPartition

        self.topic = topic
        self.messages: dict[bytes, list] = {}
        self.total = 0
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{os.getpid()}-{topic}",
                            "enable.auto.commit": False, "log_level": 3})
        parts = partitions_of(bootstrap, topic)
        self._c.assign([TopicPartition(topic, p, 0) for p in parts])

    def poll(self, timeout: float = 0.2) -> int:
        got = 0
        for m in self._c.consume(1000, timeout):
            if m.error():
                continue
            self.messages.setdefault(m.key(), []).append(
                (m.value(), m.headers(), m.timestamp(), m.partition(), m.offset()))
            got += 1
        self.total += got
        return got

    def close(self) -> None:
        self._c.close()


class GroupOffsets:
    """Reads a consumer group's committed offsets (one client, reused)."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        from confluent_kafka import Consumer

        self.topic = topic
        self.partitions = partitions_of(bootstrap, topic)
        self._c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                            "enable.auto.commit": False, "log_level": 3})

    def get(self) -> dict[int, int]:
        """Committed offset per partition (-1001 where the group committed none)."""
        from confluent_kafka import TopicPartition

        tps = self._c.committed([TopicPartition(self.topic, p) for p in self.partitions], timeout=10)
        return {tp.partition: tp.offset for tp in tps}

    def total(self) -> int:
        return sum(max(0, o) for o in self.get().values())

    def close(self) -> None:
        self._c.close()


def spawn(role: str, *args: str, log_path) -> subprocess.Popen:
    """Start one pipeline stage as ``python tests/_kafka_workers.py role ...``."""
    out = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, str(SCRIPT), role, *map(str, args)], cwd=str(REPO),
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM, wait; SIGKILL if it does not end.  Returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"pid {proc.pid} ignored SIGTERM for {timeout} s") from None
    return proc.returncode


# -- the stages, run as a script -----------------------------------------------


def _die_with_parent() -> None:
    # If the test process dies, the kernel kills this stage too (Linux).
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _on_sigterm(stopper) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stopper())


def run_source(args) -> int:
    from turbo_queue.kafka import KafkaSource

    config = {"bootstrap.servers": args.bootstrap, "group.id": args.group, **GROUP_SETTINGS}
    source = KafkaSource(queue_a(args.queue), args.topic, config, poll_batch=100, commit_interval=0.2)
    stop = threading.Event()
    _on_sigterm(stop.set)
    write_status(args.status, {"pid": os.getpid(), "started": True})
    with source:
        last = 0.0
        while not stop.is_set():
            source.step()
            now = time.monotonic()
            if now - last >= 0.05:
                last = now
                write_status(args.status, {"pid": os.getpid(), **source.stats,
                                           "sealed_items": source.sealed_items,
                                           "committed": {f"{t}:{p}": o for (t, p), o in source.committed.items()}})
    return 0


def run_worker_stage(args) -> int:
    from turbo_queue.kafka import run_worker

    stop = threading.Event()
    _on_sigterm(stop.set)
    batches = 0

    def transform(items):
        # A whole batch at once (many=True), so progress can be reported per
        # batch; the status is written before the results are put, so a kill
        # right after it lands mid-batch.
        nonlocal batches
        batches += 1
        write_status(args.status, {"pid": os.getpid(), "batches": batches})
        out = []
        for rec in items:
            time.sleep(args.item_sleep)  # stands in for CPU work without using a core
            out.append(rec._replace(value=b"done:" + rec.value))
        return out

    write_status(args.status, {"pid": os.getpid(), "batches": 0})
    run_worker(queue_a(args.in_queue), queue_b(args.out_queue), transform, stop=stop, batch_timeout=0.2,
               many=True)
    return 0


def run_sink(args) -> int:
    from turbo_queue.kafka import KafkaSink

    delivered = 0

    def on_batch(items):
        # Called once Kafka confirmed the batch and before it is acked: a
        # kill inside the pause below leaves a delivered, unacked batch,
        # which must be delivered again (duplicates, never a loss).
        nonlocal delivered
        delivered += len(items)
        write_status(args.status, {"pid": os.getpid(), "delivered": delivered, "in_ack_window": True})
        time.sleep(args.ack_delay)

    config = {"bootstrap.servers": args.bootstrap, "linger.ms": 2, "log_level": 3}
    sink = KafkaSink(queue_b(args.queue), config, args.topic, batch_timeout=0.2, on_batch=on_batch)
    _on_sigterm(sink.stop)
    write_status(args.status, {"pid": os.getpid(), "delivered": 0})
    sink.run()
    return 0


def main(argv: list[str]) -> int:
    _die_with_parent()
    parser = argparse.ArgumentParser(prog="_kafka_workers")
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("source")
    s.add_argument("--bootstrap", required=True)
    s.add_argument("--group", required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--queue", required=True)
    s.add_argument("--status", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--in", dest="in_queue", required=True)
    w.add_argument("--out", dest="out_queue", required=True)
    w.add_argument("--status", required=True)
    w.add_argument("--item-sleep", type=float, default=0.0)
    k = sub.add_parser("sink")
    k.add_argument("--queue", required=True)
    k.add_argument("--bootstrap", required=True)
    k.add_argument("--topic", required=True)
    k.add_argument("--status", required=True)
    k.add_argument("--ack-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    return {"source": run_source, "worker": run_worker_stage, "sink": run_sink}[args.role](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
