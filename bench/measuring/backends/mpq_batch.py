"""multiprocessing.Queue carrying lists of B events: the fair batched baseline.

Contract test: ``python -m pytest tests/bench/test_bench_backends.py -k mpq-batch``.

Batching by hand is the first thing anyone does when multiprocessing.Queue
gets slow, so Turbo Queue must beat this, not just plain ``mpq``.  The
producer collects ``batch_size`` events in a list and puts the list (one
pickle, one pipe write, one lock round per batch); the final partial list is
put when the producer closes.  ``maxsize`` is ``max_buffered_events`` in lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from bench.measuring.backends.base import Backend, Consumer, ListProducer, Producer
from bench.measuring.backends.mpq import SENTINEL, put_sentinels, release_mp_queue


class _BatchProducer(ListProducer):
    def __init__(self, q: Any, batch_size: int):
        super().__init__(batch_size)
        self._q = q

    def send(self, events: list) -> None:
        self._q.put(events)  # one pickle, one pipe write per list

    def finish(self) -> None:
        self._q.close()
        self._q.join_thread()


class _BatchConsumer(Consumer):
    def __init__(self, q: Any):
        self._q = q

    def batches(self) -> Iterator[Sequence[dict]]:
        get = self._q.get
        while True:
            batch = get()
            if batch is SENTINEL:
                return
            yield batch

    def close(self) -> None:
        pass  # the queue belongs to the parent, which closes it


class MPQueueBatchBackend(Backend):
    name = "mpq-batch"
    batched = True
    description = "multiprocessing.Queue carrying lists of batch_size events"

    def __init__(self, settings):
        super().__init__(settings)
        self.q = None

    def open(self, ctx: Any) -> None:
        self.q = ctx.Queue(maxsize=self.settings.buffered_messages())

    def producer(self, index: int) -> Producer:
        return _BatchProducer(self.q, self.settings.batch_size)

    def consumer(self, index: int) -> Consumer:
        return _BatchConsumer(self.q)

    def end_of_stream(self, timeout: float) -> None:
        put_sentinels(self.q, self.settings.consumers, timeout)

    def close(self) -> None:
        if self.q is not None:
            release_mp_queue(self.q)
            self.q = None

    def describe(self) -> dict:
        return {"maxsize_lists": self.settings.buffered_messages()}
