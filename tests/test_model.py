"""A state machine of one producer and one consumer in one process, checked against a FIFO model."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import turbo_queue
from turbo_queue._errors import Empty

items = st.one_of(st.integers(), st.text(max_size=5), st.binary(max_size=5), st.none())


class QueueModel(RuleBasedStateMachine):
    """Model: ``pending`` (the producer's buffer), ``ready`` (sealed batches, oldest first),
    ``held`` (the batch handed to the consumer, with how far it was handed out)."""

    @initialize(batch_size=st.integers(min_value=1, max_value=4),
                serializer=st.sampled_from(["pickle", "json"]))
    def setup(self, batch_size, serializer):
        self.tmp = tempfile.mkdtemp(prefix="tq-model-")
        self.serializer = serializer
        self.q = turbo_queue.Queue(os.path.join(self.tmp, "q"), batch_size=batch_size, max_batch_age=None,
                                   serializer=serializer)
        self.p = self.q.producer()
        self.c = self.q.consumer()
        self.batch_size = batch_size
        self.pending: list = []
        self.ready: deque[list] = deque()
        self.held: list | None = None
        self.pos = 0

    def teardown(self):
        if hasattr(self, "tmp"):
            self.c.close()
            self.p.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _norm(self, x):
        # json has no bytes: the model stores what the serializer can carry.
        if self.serializer == "json" and isinstance(x, bytes):
            return x.hex()
        return x

    # -- producer ------------------------------------------------------------------

    def _model_put(self, x):
        if len(self.pending) >= self.batch_size:
            self.ready.append(self.pending)
            self.pending = []
        self.pending.append(x)
        if len(self.pending) >= self.batch_size:
            self.ready.append(self.pending)
            self.pending = []

    @rule(x=items)
    def put(self, x):
        x = self._norm(x)
        self.p.put(x)
        self._model_put(x)

    @rule(xs=st.lists(items, max_size=9))
    def put_many(self, xs):
        xs = [self._norm(x) for x in xs]
        self.p.put_many(xs)
        for x in xs:
            self._model_put(x)

    @rule()
    def flush(self):
        self.p.flush(timeout=0)
        if self.pending:
            self.ready.append(self.pending)
            self.pending = []

    # -- consumer ------------------------------------------------------------------

    def _model_next_batch(self):
        self.held = None
        if not self.ready:
            return None
        self.held, self.pos = self.ready.popleft(), 0
        return self.held

    @rule()
    def get(self):
        if self.held is not None and self.pos < len(self.held):
            expected = self.held[self.pos]
            self.pos += 1
            assert self.c.get(timeout=0) == expected
            return
        batch = self._model_next_batch()
        if batch is None:
            try:
                got = self.c.get(timeout=0)
            except Empty:
                return
            raise AssertionError(f"got {got!r} but the model has nothing ready")
        self.pos = 1
        assert self.c.get(timeout=0) == batch[0]

    @rule()
    def get_batch(self):
        if self.held is not None and self.pos < len(self.held):
            expected = self.held[self.pos:]
            self.pos = len(self.held)
            assert self.c.get_batch(timeout=0) == expected
            return
        batch = self._model_next_batch()
        if batch is None:
            try:
                got = self.c.get_batch(timeout=0)
            except Empty:
                return
            raise AssertionError(f"got {got!r} but the model has nothing ready")
        self.pos = len(batch)
        assert self.c.get_batch(timeout=0) == batch

    @rule()
    def ack(self):
        self.c.ack()
        self.held, self.pos = None, 0

    @precondition(lambda self: self.held is not None)
    @rule()
    def release(self):
        self.c.release()
        self.ready.appendleft(self.held)  # same place in line: the oldest
        self.held, self.pos = None, 0

    @rule(raise_inside=st.booleans())
    def batch_block(self, raise_inside):
        if self.held is not None and self.pos < len(self.held):
            expected = self.held[self.pos:]
        else:
            self.held = None
            if not self.ready:
                try:
                    with self.c.batch(timeout=0):
                        raise AssertionError("a batch from an empty queue")
                except Empty:
                    return
            expected = self.ready.popleft()
            self.held, self.pos = expected, 0
        try:
            with self.c.batch(timeout=0) as got:
                assert got == expected
                if raise_inside:
                    raise KeyError("inside")
        except KeyError:
            self.ready.appendleft(self.held)
        self.held, self.pos = None, 0

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def folder_matches_model(self):
        if not hasattr(self, "q"):
            return
        stats = self.q.stats()
        assert self.p.pending == len(self.pending)
        assert stats["ready"]["batches"] == len(self.ready)
        assert stats["ready"]["events"] == sum(map(len, self.ready))
        assert stats["claimed"]["batches"] == (self.held is not None)
        assert stats["loading"]["batches"] == 0


QueueModel.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=5000)
TestQueueModel = QueueModel.TestCase
