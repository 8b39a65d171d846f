"""The Kafka connectors (turbo_queue.kafka), against librdkafka's built-in mock cluster.

The mock cluster (``test.mock.num.brokers``) lives inside this test process
and listens on loopback; the pipeline stages of the end-to-end test are
separate processes (tests/_kafka_workers.py) that connect to it, so they can
be killed with SIGKILL.  No Kafka server is needed.  Every test but the first
is skipped, with the reason shown, where confluent-kafka is not installed.

Run just these with ``pytest -m kafka``.  Mock-cluster behaviour that shapes
the timings here: a new group's first join is held for 3 s, and a rebalance
after a member joins or dies waits up to session.timeout.ms - 1 s.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path

import _kafka_workers as kw
import pytest
from _workers import wait_for

import turbo_queue

pytestmark = [pytest.mark.kafka]

SKIP_REASON = 'confluent-kafka is not installed (pip install "turbo-queue-ng[kafka]")'


@pytest.fixture(scope="module")
def kafka() -> str:
    """Bootstrap servers of a mock cluster owned by this process for the module."""
    pytest.importorskip("confluent_kafka", reason=SKIP_REASON)
    owner, bootstrap = kw.start_mock_cluster()
    yield bootstrap
    del owner  # destroys the mock cluster


@pytest.fixture
def names():
    """A fresh topic and group per test (they share one mock cluster)."""
    tag = uuid.uuid4().hex[:8]
    return f"in-{tag}", f"out-{tag}", f"group-{tag}"


def group_config(bootstrap: str, group: str) -> dict:
    return {"bootstrap.servers": bootstrap, "group.id": group, **kw.GROUP_SETTINGS}


def sealed_offsets(folder: Path) -> dict[int, set]:
    """(partition -> offsets) of every item in the folder's ready batches."""
    out: dict[int, set] = {}
    for name in os.listdir(folder):
        if name.startswith("r_") and name.endswith(".tqb"):
            for rec in turbo_queue.read_batch(folder / name):
                out.setdefault(rec.partition, set()).add(rec.offset)
    return out


# -- without confluent-kafka --------------------------------------------------


def test_turbo_queue_imports_without_confluent_kafka():
    code = (
        "import sys\n"
        "sys.modules['confluent_kafka'] = None  # as if not installed\n"
        "import turbo_queue\n"
        "turbo_queue.Queue\n"
        "try:\n"
        "    import turbo_queue.kafka\n"
        "except ImportError as exc:\n"
        "    print('IMPORT-ERROR', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "IMPORT-ERROR" in out.stdout
    assert 'pip install "turbo-queue-ng[kafka]"' in out.stdout


# -- units ----------------------------------------------------------------------


def test_record_pickles_and_sink_produces_its_fields(kafka, tmp_path):
    from turbo_queue.kafka import KafkaRecord, KafkaSink

    rec = KafkaRecord("in", 2, 41, b"k", b"v", [("h", b"1"), ("h", None)], 1_700_000_000_123, 1)
    assert pickle.loads(pickle.dumps(rec)) == rec
    q = turbo_queue.Queue(tmp_path / "b")
    sink = KafkaSink(q, {"bootstrap.servers": kafka, "log_level": 3}, "out")
    try:
        assert sink._produce_args(rec) == {"topic": "out", "key": b"k", "value": b"v",
                                           "headers": [("h", b"1"), ("h", None)],
                                           "timestamp": 1_700_000_000_123}
        assert sink._produce_args(b"raw") == {"topic": "out", "value": b"raw"}
        assert sink._produce_args({"value": b"x", "key": b"y", "topic": "other"}) == {
            "topic": "out", "value": b"x", "key": b"y"}
        with pytest.raises(TypeError, match="cannot produce an item of type int"):
            sink._produce_args(3)
    finally:
        sink.close()


def test_source_refuses_auto_commit(kafka, tmp_path):
    from turbo_queue.kafka import KafkaSource

    q = turbo_queue.Queue(tmp_path / "a")
    with pytest.raises(ValueError, match="enable.auto.commit"):
        KafkaSource(q, "t", {"bootstrap.servers": kafka, "group.id": "g", "enable.auto.commit": True})
    with pytest.raises(ValueError, match="group.id"):
        KafkaSource(q, "t", {"bootstrap.servers": kafka})


# -- the source's commit rule -------------------------------------------------


def test_offsets_never_committed_ahead_of_sealed_batches(kafka, names, tmp_path):
    """After every step, every offset below the group's committed offset is in a sealed batch.

    Small odd batches, a poll size that does not divide them, and a 20 ms age
    flush (a second thread sealing at any moment) make the seal boundaries
    fall everywhere.  Nothing consumes the queue, so its ready batches are
    everything the source ever sealed.
    """
    from turbo_queue.kafka import KafkaSource

    topic, _, group = names
    n = 400
    kw.produce_input(kafka, topic, n)
    folder = tmp_path / "a"
    q = turbo_queue.Queue(folder, batch_size=7, max_batch_age=0.02)
    offsets = kw.GroupOffsets(kafka, group, topic)
    src = KafkaSource(q, topic, group_config(kafka, group), poll_batch=13, commit_interval=0)
    checks = lagging = 0
    try:
        deadline = time.monotonic() + 40
        while True:
            assert time.monotonic() < deadline, f"source stalled: {src.stats}"
            src.step()
            committed = offsets.get()       # read Kafka first,
            sealed = sealed_offsets(folder)  # then the folder: it only grows meanwhile
            for part, upto in committed.items():
                if upto > 0:
                    missing = set(range(upto)) - sealed.get(part, set())
                    assert not missing, (f"partition {part}: committed {upto} but offsets "
                                         f"{sorted(missing)[:10]} are not sealed")
            checks += 1
            lagging += src.stats["puts"] > sum(max(0, o) for o in committed.values())
            if src.stats["puts"] == n and offsets.total() == n:
                break
    finally:
        src.close()
        offsets.close()
    assert checks >= 5
    assert lagging, "the commit never trailed the puts: the test did not exercise unsealed items"
    assert src.sealed_items == n


def test_rebalance_seals_and_commits_before_giving_partitions_up(kafka, names, tmp_path):
    """A second source joins: the first seals what it holds and commits it in on_revoke.

    With the cooperative protocol the revocation comes after the group synced,
    when commits are accepted.  (Under the eager protocol the mock cluster
    refuses commits while the group is joining, which is when eager revokes;
    a real broker accepts them.  The source then logs the failed commit and the
    partitions' next owner reads the uncommitted messages again: duplicates.)
    """
    from turbo_queue.kafka import KafkaSource

    topic, _, group = names
    n = 200
    kw.produce_input(kafka, topic, n)
    # No age flush and a batch larger than the topic: only the revoke seals.
    q = turbo_queue.Queue(tmp_path / "a", batch_size=1000, max_batch_age=None)
    offsets = kw.GroupOffsets(kafka, group, topic)
    config = {**group_config(kafka, group), "partition.assignment.strategy": "cooperative-sticky"}
    first = KafkaSource(q, topic, config, commit_interval=0)
    second = None
    try:
        wait_for(lambda: first.step() is not None and first.stats["puts"] == n, 30, "first source puts all")
        assert first.sealed_items == 0 and first.buffered == n
        assert offsets.total() == 0, "committed offsets of unsealed items"
        second = KafkaSource(q, topic, config, commit_interval=0)

        def rebalanced():
            first.step()
            second.step()
            return first.stats["revoked"] >= 1 and second.stats["assigned"] >= 1

        wait_for(rebalanced, 30, "the rebalance")
        assert first.sealed_items == n and first.buffered == 0
        # The partitions the first source gave up were committed, in full,
        # before it let them go (each holds 50 of the 200 keys).
        kept = {tp.partition for tp in first.consumer.assignment()}
        given = set(offsets.partitions) - kept
        assert given, "the first source gave nothing up"
        committed = offsets.get()
        highs = {p: first.consumer.get_watermark_offsets(kw.TopicPartition(topic, p), timeout=10)[1]
                 for p in offsets.partitions}
        assert {p: committed[p] for p in given} == {p: highs[p] for p in given}

        # The ones it kept are committed by its next periodic commit.
        def all_committed():
            first.step()
            second.step()
            return offsets.total() == n

        wait_for(all_committed, 20, "the remaining commits")
        # The new owner started after the committed offsets: nothing read twice.
        assert first.stats["messages"] + second.stats["messages"] == n
    finally:
        first.close()
        if second is not None:
            second.close()
        offsets.close()


# -- backpressure -----------------------------------------------------------------


def test_source_pauses_under_backpressure(kafka, names, tmp_path):
    from turbo_queue.kafka import KafkaSource

    topic, _, group = names
    n, batch, poll = 300, 20, 50
    kw.produce_input(kafka, topic, n)
    q = turbo_queue.Queue(tmp_path / "a", batch_size=batch, max_ready=2, max_batch_age=None)
    src = KafkaSource(q, topic, group_config(kafka, group), poll_batch=poll, put_timeout=0.05,
                      commit_interval=0.1)
    try:
        wait_for(lambda: src.step() is not None and src.paused, 30, "the source to pause")
        consumed = src.stats["messages"]
        for _ in range(15):  # stays blocked, polling without taking messages
            src.step()
            assert src.paused
            assert src.buffered <= batch + poll
        assert src.stats["messages"] == consumed, "consumed more while paused"
        assert consumed <= 2 * batch + batch + poll
        assert src.stats["pauses"] == 1 and src.stats["resumes"] == 0
        assert q.stats()["ready"]["batches"] == 2
        # Drain the queue here: the source resumes and everything goes through.
        taken = 0
        with q.consumer() as c:

            def drained():
                nonlocal taken
                try:
                    taken += len(c.get_batch(timeout=0))
                except turbo_queue.Empty:
                    src.step()
                return taken >= n

            wait_for(drained, 30, "the queue to carry every message", interval=0)
        assert src.stats["resumes"] >= 1
        assert taken == n
    finally:
        src.close()
    assert sum(src.committed.values()) == n


# -- the sink ---------------------------------------------------------------------


def test_sink_returns_batch_to_ready_on_delivery_failure(kafka, names, tmp_path, caplog):
    from turbo_queue.kafka import KafkaRecord, KafkaSink

    _, out_topic, _ = names
    q = turbo_queue.Queue(tmp_path / "b", batch_size=10)
    records = [KafkaRecord("in", 0, i, b"k%d" % i, b"v%d" % i, kw.record_headers(i), kw.record_timestamp(i), 1)
               for i in range(10)]
    with q.producer() as p:
        p.put_many(records)
    # Nothing listens on port 1: every message times out after 300 ms.
    bad = KafkaSink(q, {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 300, "log_level": 0},
                    out_topic, retry_backoff=0.05)
    with caplog.at_level(logging.ERROR, logger="turbo_queue.kafka"):
        bad.run(stop=lambda: bad.stats["failed_batches"] >= 2)
    assert bad.stats["messages"] == 0
    assert "failed delivery" in caplog.text and "back in the queue" in caplog.text
    stats = q.stats()
    assert stats["ready"]["events"] == 10 and stats["claimed"]["batches"] == 0
    good = KafkaSink(q, {"bootstrap.servers": kafka, "log_level": 3}, out_topic)
    try:
        assert good.step(timeout=10) == 10
    finally:
        good.close()
    assert q.stats()["ready"]["batches"] == 0
    reader = kw.TopicReader(kafka, out_topic)
    try:
        wait_for(lambda: reader.poll() is not None and len(reader.messages) == 10, 20, "the output")
    finally:
        reader.close()
    for i in range(10):
        [(value, headers, ts, _, _)] = reader.messages[b"k%d" % i]
        assert (value, headers, ts) == (b"v%d" % i, kw.record_headers(i), (1, kw.record_timestamp(i)))


# -- end to end, with kill -9 -------------------------------------------------------


@pytest.fixture
def stages(reap_children):
    """Pipeline stage processes; whatever a test leaves running is killed and reaped."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.mark.timeout(120)
def test_pipeline_delivers_every_message_through_kill9_of_source_worker_and_sink(kafka, names, tmp_path, stages):
    topic, out_topic, group = names
    n = 3000
    kw.produce_input(kafka, topic, n)
    a, b = tmp_path / "a", tmp_path / "b"
    kw.queue_a(a)
    kw.queue_b(b)
    status = {name: tmp_path / f"{name}.json" for name in ("source", "w0", "w1", "sink")}
    log = tmp_path / "stages.log"

    def start(role: str, name: str) -> subprocess.Popen:
        status[name].unlink(missing_ok=True)
        args = {
            "source": ["--bootstrap", kafka, "--group", group, "--topic", topic, "--queue", a],
            "worker": ["--in", a, "--out", b, "--item-sleep", "0.002"],
            "sink": ["--queue", b, "--bootstrap", kafka, "--topic", out_topic, "--ack-delay", "0.2"],
        }[role]
        proc = kw.spawn(role, *args, "--status", status[name], log_path=log)
        stages.append(proc)
        return proc

    def st(name: str) -> dict:
        return kw.read_status(status[name])

    def logs() -> str:
        return log.read_text(errors="replace")[-4000:] if log.exists() else ""

    offsets = kw.GroupOffsets(kafka, group, topic)
    reader = kw.TopicReader(kafka, out_topic)
    try:
        source = start("source", "source")
        workers = [start("worker", "w0"), start("worker", "w1")]
        sink = start("sink", "sink")

        # 1. kill -9 the source once it has committed a fifth of the topic.
        wait_for(lambda: offsets.total() >= n // 5, 40, f"source commits\n{logs()}")
        kw.kill9(source)
        at_kill = offsets.get()
        assert sum(max(0, o) for o in at_kill.values()) < n, "the source finished before it was killed"
        source = start("source", "source")
        wait_for(lambda: st("source").get("assigned", 0) >= 1, 40, f"the new source's assignment\n{logs()}")

        # 2. kill -9 a worker in the middle of a batch (it reports a batch as it starts it).
        started = st("w0").get("batches", 0)
        wait_for(lambda: st("w0").get("batches", 0) >= started + 2, 30, f"worker progress\n{logs()}")
        kw.kill9(workers[0])
        workers[0] = start("worker", "w0")

        # 3. kill -9 the sink between Kafka's confirmation of a batch and its ack.
        done = st("sink").get("delivered", 0)
        wait_for(lambda: st("sink").get("delivered", 0) >= max(done + 100, n // 2), 40,
                    f"sink progress\n{logs()}")
        kw.kill9(sink)
        sink = start("sink", "sink")

        # Every input key arrives on the output topic, with its data intact.
        wait_for(lambda: reader.poll() is not None and len(reader.messages) >= n, 60,
                    f"every key on the output topic (have {len(reader.messages)})\n{logs()}")
        for i in range(n):
            copies = reader.messages.get(b"k%d" % i)
            assert copies, f"key k{i} never arrived"
            for value, headers, ts, _, _ in copies:
                assert value == b"done:v%d" % i
                assert headers == kw.record_headers(i)
                assert ts == (1, kw.record_timestamp(i))  # (TIMESTAMP_CREATE_TIME, ms)
        # Clean shutdown of the survivors.
        for proc in [source, *workers, sink]:
            assert kw.stop(proc) == 0, logs()
    finally:
        reader.close()
        offsets.close()
    assert reader.total >= n
