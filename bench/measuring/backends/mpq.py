"""multiprocessing.Queue, one event per put: how most pipelines start out.

Contract test: ``python -m pytest tests/bench/test_bench_backends.py -k "mpq and not batch"``.

Every put pickles one event and writes it through the queue's single pipe;
every get takes the queue's read lock.  That lock and pipe, shared by all
processes, is what stops it scaling.  ``maxsize`` is the cell's
``max_buffered_events``, so producers block rather than fill memory.
"""

from __future__ import annotations

import queue as queue_mod
import time
from collections.abc import Iterator, Sequence
from typing import Any

from bench.measuring.backends.base import Backend, Consumer, Producer

#: Marks the end of the stream: one per consumer, put after every producer
#: exited, so every consumer sees all events (FIFO pipe) before its sentinel.
SENTINEL = None


def put_sentinels(q: Any, count: int, timeout: float) -> None:
    """Put ``count`` sentinels within ``timeout`` seconds or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    for _ in range(count):
        try:
            q.put(SENTINEL, timeout=max(0.0, deadline - time.monotonic()))
        except queue_mod.Full:
            raise TimeoutError(
                f"queue still full after {timeout:.1f}s; consumers are not draining it"
            ) from None


def release_mp_queue(q: Any) -> None:
    """Close a multiprocessing.Queue in the parent without ever blocking.

    ``cancel_join_thread`` because after a timeout the parent's feeder thread
    may be stuck writing sentinels into a pipe nobody reads; closing our read
    end makes that write fail (EPIPE) so the thread ends instead of leaking.
    """
    q.cancel_join_thread()
    q.close()


class _MPQProducer(Producer):
    def __init__(self, q: Any):
        self._q = q
        self.put = q.put  # the bound method itself: no wrapper cost per event

    def put(self, event: dict) -> None:  # replaced per instance in __init__
        self._q.put(event)

    def close(self) -> None:
        # Wait for the feeder thread to write everything into the pipe, so
        # the events are in the queue before the parent's sentinels.
        self._q.close()
        self._q.join_thread()


class _MPQConsumer(Consumer):
    def __init__(self, q: Any):
        self._q = q

    def batches(self) -> Iterator[Sequence[dict]]:
        get = self._q.get
        while True:
            event = get()
            if event is SENTINEL:
                return
            yield (event,)

    def close(self) -> None:
        pass  # the queue belongs to the parent, which closes it


class MPQueueBackend(Backend):
    name = "mpq"
    batched = False
    description = "multiprocessing.Queue, one event per put/get"

    def __init__(self, settings):
        super().__init__(settings)
        self.q = None

    def open(self, ctx: Any) -> None:
        self.q = ctx.Queue(maxsize=self.settings.max_buffered_events)

    def producer(self, index: int) -> Producer:
        return _MPQProducer(self.q)

    def consumer(self, index: int) -> Consumer:
        return _MPQConsumer(self.q)

    def end_of_stream(self, timeout: float) -> None:
        put_sentinels(self.q, self.settings.consumers, timeout)

    def close(self) -> None:
        if self.q is not None:
            release_mp_queue(self.q)
            self.q = None

    def describe(self) -> dict:
        return {"maxsize_events": self.settings.max_buffered_events}
