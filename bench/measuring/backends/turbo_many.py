"""Turbo Queue fed with ``put_many``: the producer hands over lists of B events.

Contract test: ``python -m pytest tests/bench/test_bench_backends.py -k turbo-many``.

The same queue as ``turbo`` (same folder layout, ``batch_size=B``, same
``max_ready`` and consumers), fed the way ``mpq-batch`` is: the producer
collects B events in a list and passes the list to ``put_many``, which
serializes it in one call.  Side by side with ``turbo`` it shows what
per-event ``put`` costs (each event serialized on its own when accepted);
side by side with ``mpq-batch`` it compares the two queues with the same
batching done by the caller.
"""

from __future__ import annotations

from typing import Any

from bench.measuring.backends.base import ListProducer, Producer
from bench.measuring.backends.turbo import TurboBackend


class _ManyProducer(ListProducer):
    def __init__(self, q: Any, batch_size: int):
        super().__init__(batch_size)
        self._cm = q.producer()
        self._put_many = self._cm.__enter__().put_many

    def send(self, events: list) -> None:
        self._put_many(events)

    def finish(self) -> None:
        # Leaving the producer block seals the pending partial batch.
        self._cm.__exit__(None, None, None)


class TurboManyBackend(TurboBackend):
    name = "turbo-many"
    description = "turbo_queue.Queue: put_many of B-event lists, get_batch per batch"
    # The caller makes the lists here, so their size is the caller's B: an
    # adaptive size has nothing to adapt (and a list of "auto" events is
    # not a size).  The sweep skips its auto cells with a note.
    auto_batch = False

    def producer(self, index: int) -> Producer:
        return _ManyProducer(self.q, self.settings.batch_size)

    def max_batch_age_s(self) -> float | None:
        # The producer hands over only full lists (or the last one at close),
        # so a partial batch waits for its fill however old it is: the
        # queue's max_batch_age never gets to seal one.
        return None
