"""Turbo Queue: a folder of SQLite batch files claimed by atomic rename.

Contract test: ``python -m pytest tests/bench/test_bench_backends.py -k turbo``.

Used the way users call it: each producer ``put``s one event at a time into
``Queue(batch_size=B)`` (the library batches), leaving the producer block
seals the last partial batch; each consumer takes whole sealed batches with
``get_batch()`` until ``turbo_queue.Closed``; the parent ends the stream with
``q.close()``.  ``max_ready`` is ``max_buffered_events`` in batches, so flat-out
producers block like those of the other backends.  ``max_batch_age`` is the
library's default (:data:`MAX_BATCH_AGE_S`), passed explicitly so that the
value recorded per row is the value run: in an open-loop cell a partial
batch waits up to that long for its fill, which at low rates sets latency.

The queue folder lives in the cell's work directory, which the sweep puts on
the same disk as the results unless ``--queue-dir`` says otherwise (the
filesystem type is recorded in meta.json): a queue on tmpfs measures a
different thing than one on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from bench.measuring.backends.base import Backend, Consumer, Producer, is_auto

#: turbo_queue.Queue's default max_batch_age, as users get it.
MAX_BATCH_AGE_S = 1.0


class _TurboProducer(Producer):
    def __init__(self, q: Any):
        self._cm = q.producer()
        p = self._cm.__enter__()
        self.put = p.put  # the library's own per-event put, no wrapper

    def put(self, event: dict) -> None:  # replaced per instance in __init__
        raise AssertionError("unreachable")

    def close(self) -> None:
        # Leaving the producer block seals the pending partial batch.
        self._cm.__exit__(None, None, None)


class _TurboConsumer(Consumer):
    def __init__(self, q: Any):
        self._cm = q.consumer()
        self._c = self._cm.__enter__()

    def batches(self) -> Iterator[Sequence[dict]]:
        import turbo_queue

        get_batch = self._c.get_batch
        while True:
            try:
                # The next get_batch acks the previous batch, so a batch is
                # acked only after the harness has processed all of it.
                yield get_batch()
            except turbo_queue.Closed:
                return

    def polling_fallback(self) -> bool:
        """True when the consumer's folder waiter has no inotify watch (it polls)."""
        waiter = getattr(self._c, "_waiter", None)
        fd = getattr(waiter, "_inotify_fd", None)
        return bool(fd is not None and fd() < 0)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


class TurboBackend(Backend):
    name = "turbo"
    batched = True
    file_based = True
    auto_batch = True
    description = "turbo_queue.Queue: put per event, get_batch per batch (or batch_size='auto')"
    install_hint = "pip install turbo-queue-ng"

    def __init__(self, settings):
        super().__init__(settings)
        self.q = None
        self.path = os.path.join(settings.workdir, "queue")

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import turbo_queue
        except ImportError as exc:
            return False, f"turbo_queue cannot be imported ({exc}); {cls.install_hint}"
        if not hasattr(turbo_queue, "Queue"):
            return False, "turbo_queue has no Queue (library incomplete in this checkout?)"
        return True, ""

    def open(self, ctx: Any) -> None:
        import turbo_queue

        self.q = turbo_queue.Queue(
            self.path,
            batch_size=self.settings.batch_size,
            max_ready=self.max_ready(),
            max_batch_age=MAX_BATCH_AGE_S,
        )

    def max_ready(self) -> int:
        """``max_buffered_events`` in batches; for ``auto``, room for the policy to see a backlog.

        ``auto`` grows its size only once ``GROW_AT`` batches are ready after a
        seal, and a seal never leaves more than ``max_ready`` ready: with the
        two batches per consumer of the harness's ``auto`` bound a single
        consumer's backlog could never make it grow.
        """
        n = self.settings.buffered_messages()
        if is_auto(self.settings.batch_size):
            from turbo_queue._sizing import AutoBatchSize

            n = max(n, AutoBatchSize.GROW_AT + 1)
        return n

    def producer(self, index: int) -> Producer:
        return _TurboProducer(self.q)

    def consumer(self, index: int) -> Consumer:
        return _TurboConsumer(self.q)

    def end_of_stream(self, timeout: float) -> None:
        # close() only marks the queue closed; consumers finish the ready
        # batches and then get Closed.  It does not wait, so timeout is moot.
        self.q.close()

    def close(self) -> None:
        # Nothing to release in the parent: the harness removes the work
        # directory (and with it the queue folder) after the cell.
        self.q = None

    def max_batch_age_s(self) -> float | None:
        return MAX_BATCH_AGE_S

    def describe(self) -> dict:
        return {
            "max_ready_batches": self.max_ready(),
            "max_batch_age_s": MAX_BATCH_AGE_S,
            "serializer": "pickle",
            "durable": False,
        }
