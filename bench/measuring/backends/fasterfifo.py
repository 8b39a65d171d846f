"""faster-fifo: a C++ circular buffer in shared memory with put_many/get_many.

Contract test: ``python -m pytest tests/bench/test_bench_backends.py -k faster-fifo``.

An optional extra (``pip install turbo-queue-ng[fifo]``); the sweep skips it
with a warning when it is not installed.  Producers collect ``batch_size``
events and hand them to one ``put_many`` call; consumers take up to
``batch_size`` messages per ``get_many``.  Each event is still its own
message (pickled separately), which is how faster-fifo is meant to be used.

The buffer is bounded in bytes, not messages: ``max_size_bytes`` is sized for
``max(max_buffered_events, 2 * batch_size)`` pickled events plus faster-fifo's
per-message header, so it holds about as many events as the other backends
and always fits one ``put_many`` (which is all-or-nothing).  The size is
recorded in meta.json.
"""

from __future__ import annotations

import queue as queue_mod
import time
from collections.abc import Iterator, Sequence
from typing import Any

from bench.measuring.backends.base import Backend, Consumer, ListProducer, Producer

SENTINEL = None
#: faster-fifo stores a size header with every message.
_MESSAGE_OVERHEAD = 16
#: get_many's default timeout is 10 s; a consumer must keep waiting until
#: the end of the stream however long that is, so it retries on Empty.
_GET_TIMEOUT_S = 1.0


class _FifoProducer(ListProducer):
    def __init__(self, q: Any, batch_size: int):
        super().__init__(batch_size)
        self._q = q

    def send(self, events: list) -> None:
        # put_many blocks up to its timeout and raises Full; with producers
        # running flat out a full buffer is normal backpressure, so wait on.
        while True:
            try:
                self._q.put_many(events, timeout=_GET_TIMEOUT_S)
                return
            except queue_mod.Full:
                continue


class _FifoConsumer(Consumer):
    def __init__(self, q: Any, batch_size: int):
        self._q = q
        self._size = batch_size

    def batches(self) -> Iterator[Sequence[dict]]:
        get_many = self._q.get_many
        size = self._size
        while True:
            try:
                events = get_many(timeout=_GET_TIMEOUT_S, max_messages_to_get=size)
            except queue_mod.Empty:
                continue
            if events[-1] is SENTINEL:
                # Sentinels are put only after every producer has exited, so
                # they all sit after the last event.  One get_many may take
                # several; the extra ones belong to other consumers.
                first = events.index(SENTINEL)
                extra = len(events) - first - 1
                del events[first:]
                for _ in range(extra):
                    self._q.put(SENTINEL)
                if events:
                    yield events
                return
            yield events

    def close(self) -> None:
        pass  # the queue belongs to the parent, which closes it


class FasterFifoBackend(Backend):
    name = "faster-fifo"
    batched = True
    description = "faster_fifo.Queue, put_many/get_many of batch_size events"
    install_hint = "pip install 'turbo-queue-ng[fifo]'  (or: pip install faster-fifo)"

    def __init__(self, settings):
        super().__init__(settings)
        self.q = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import faster_fifo  # noqa: F401
        except ImportError as exc:
            return False, f"faster-fifo is not installed ({exc}); {cls.install_hint}"
        return True, ""

    def max_size_bytes(self) -> int:
        s = self.settings
        events = max(s.max_buffered_events, 2 * s.batch_size)
        return events * (s.event_pickled_bytes + _MESSAGE_OVERHEAD)

    def open(self, ctx: Any) -> None:
        import faster_fifo

        self.q = faster_fifo.Queue(max_size_bytes=self.max_size_bytes())

    def producer(self, index: int) -> Producer:
        return _FifoProducer(self.q, self.settings.batch_size)

    def consumer(self, index: int) -> Consumer:
        return _FifoConsumer(self.q, self.settings.batch_size)

    def end_of_stream(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(self.settings.consumers):
            try:
                self.q.put(SENTINEL, timeout=max(0.0, deadline - time.monotonic()))
            except queue_mod.Full:
                raise TimeoutError(
                    f"queue still full after {timeout:.1f}s; consumers are not draining it"
                ) from None

    def close(self) -> None:
        if self.q is not None:
            self.q.close()
            self.q = None

    def describe(self) -> dict:
        return {"max_size_bytes": self.max_size_bytes()}
