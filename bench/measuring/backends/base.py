"""The backend contract: what a queue must provide to be swept.

A backend adapts one multi-process queue to the harness.  The harness owns
everything else (processes, events, work, timing, accounting), so that every
backend is measured by the same code and only the queue differs.

Lifecycle of one cell, and who calls what where::

    parent   backend = Backend(settings)      # plain attributes only
    parent   backend.open(ctx)                # create the queue (mp context given)
    child    with backend.producer(i) as p:   # in each producer process
                 p.put(event) ...             #   one call per event, flat out
             # leaving the block flushes anything buffered (partial batches)
    child    with backend.consumer(i) as c:   # in each consumer process
                 for batch in c.batches():    #   sequences of events, until
                     ...                      #   end of stream
    parent   backend.end_of_stream(timeout)   # once every producer has exited
    parent   backend.close()                  # always, even after a timeout

Rules a backend must follow (the contract suite in tests/bench checks them):

* ``name`` is the backend's key on the command line and in runs.csv.
* ``batched`` says whether ``settings.batch_size`` means anything.  Unbatched
  backends carry one event per message; the sweep runs them at
  ``batch_size = 1`` only.
* ``auto_batch`` says whether the backend has an adaptive batch size: the
  sweep gives it cells at ``batch_size = "auto"`` (:data:`AUTO_BATCH`);
  the others skip them.
* ``available()`` returns ``(True, "")`` or ``(False, reason)``.  It must not
  raise when an optional dependency is missing: the sweep skips an
  unavailable backend with its reason as the warning.  Import optional
  dependencies inside methods, never at module level.
* After ``open()`` the backend object is handed to child processes, pickled
  under the spawn start method, so its state must be picklable there.
* ``Producer.put(event)`` may block (the queue's own backpressure bounds
  memory); it must never drop an event.  ``Producer.close()`` makes every
  event put so far visible to consumers.
* ``Consumer.batches()`` yields non-empty sequences of events and returns
  (ends) only after ``end_of_stream()`` was called and every event before it
  was delivered.  Each event is delivered exactly once when no process
  crashes.
* ``end_of_stream(timeout)`` is called once, in the parent, after all
  producers have exited normally; it is how consumers learn there is
  nothing more to wait for (a sentinel per consumer, or closing the queue).
  It raises ``TimeoutError`` rather than block past ``timeout``.
* ``close()`` releases what ``open()`` created (pipes, shared memory, files).
  It is called after all processes ended or were killed, may be called when
  ``open()`` failed half-way, and must be idempotent.
* ``describe()`` returns the settings that matter for interpreting results
  (buffer sizes, serializer); they go into meta.json per cell.
* ``max_batch_age_s()`` is how long a partial batch may wait before the
  backend sends it anyway, or None when it sends a batch only once full.
  In an open-loop cell (events at a fixed rate) it bounds the batch fill
  time, which at low rates sets the latency; the harness records it per row.
* Every backend gets the same events on the same schedule: flat out in a
  closed-loop cell, at its offered rate in an open-loop one (the harness
  calls ``put`` at each event's scheduled time); nothing in the contract
  changes with the load.
* A backend never starts processes of its own (so the harness can account
  for and reap every process of a cell).

Adding a backend: write one module in bench/measuring/backends/ with a ``Backend``
subclass and add one line to ``BACKENDS`` in bench/measuring/backends/__init__.py.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

#: The batch size of a cell whose backend picks its own (turbo's ``batch_size="auto"``).
AUTO_BATCH = "auto"
#: Events per message an ``auto`` cell's buffer bound counts with: the size
#: turbo's policy starts at (turbo_queue._sizing.AutoBatchSize), which it
#: keeps while consumers wait for work.
AUTO_NOMINAL_BATCH = 100


def is_auto(batch_size: object) -> bool:
    """True for the adaptive batch size ``"auto"``, which is never a number."""
    return isinstance(batch_size, str) and batch_size == AUTO_BATCH


def nominal_batch(batch_size: int | str) -> int:
    """Events per message to size buffers with: the batch size, or :data:`AUTO_NOMINAL_BATCH`."""
    return AUTO_NOMINAL_BATCH if is_auto(batch_size) else int(batch_size)


@dataclass(frozen=True)
class BackendSettings:
    """What the harness tells a backend about the cell it will serve."""

    producers: int
    consumers: int
    #: Events per batch/message; 1 for unbatched backends; "auto" for
    #: backends with ``auto_batch`` that pick their own.
    batch_size: int | str
    #: Upper bound on events buffered inside the queue, shared by every
    #: backend so that none wins by hoarding memory; each backend maps it to
    #: its own knob (maxsize, max_ready, bytes).  Producers run flat out, so
    #: this bound also sets how long the drain after the window takes.
    max_buffered_events: int
    #: Target JSON size of one event, and its measured pickled size (for
    #: backends that bound their buffer in bytes).
    event_bytes: int
    event_pickled_bytes: int
    #: A private directory for this cell (file-based backends put their
    #: queue here); removed by the harness after the cell.
    workdir: str

    def to_dict(self) -> dict:
        return asdict(self)

    def buffered_messages(self) -> int:
        """``max_buffered_events`` in messages of ``batch_size`` events (>= 1; see :func:`nominal_batch`)."""
        return max(1, math.ceil(self.max_buffered_events / nominal_batch(self.batch_size)))


class Producer(abc.ABC):
    """The sending end, used by one producer process."""

    @abc.abstractmethod
    def put(self, event: dict) -> None:
        """Send one event; may block for backpressure, never drops."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush buffered events so consumers can get them; called once."""

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ListProducer(Producer):
    """A producer that collects ``batch_size`` events and sends them as one list.

    The batching every list-carrying backend does by hand (``mpq-batch``,
    ``faster-fifo``, ``turbo-many``), written once so that they batch alike:
    subclasses say how a list is sent (:meth:`send`) and what closing does
    after the last partial list is sent (:meth:`finish`).
    """

    def __init__(self, batch_size: int):
        self._size = batch_size
        self._buf: list = []

    @abc.abstractmethod
    def send(self, events: list) -> None:
        """Send one list of events; may block for backpressure, never drops."""

    def finish(self) -> None:
        """Called once after the last list is sent."""

    def put(self, event: dict) -> None:
        buf = self._buf
        buf.append(event)
        if len(buf) >= self._size:
            self.send(buf)
            self._buf = []

    def close(self) -> None:
        if self._buf:
            self.send(self._buf)
            self._buf = []
        self.finish()


class Consumer(abc.ABC):
    """The receiving end, used by one consumer process."""

    @abc.abstractmethod
    def batches(self) -> Iterator[Sequence[dict]]:
        """Yield non-empty sequences of events until the end of the stream."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the consumer's resources; called once after ``batches``."""

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(abc.ABC):
    """One queue under test; see the module docstring for the contract."""

    name: ClassVar[str]
    batched: ClassVar[bool]
    #: One line for ``python -m bench backends``.
    description: ClassVar[str] = ""
    #: How to install a missing optional dependency, shown when unavailable.
    install_hint: ClassVar[str] = ""
    #: True when the queue keeps its data in files (disk_bytes_written matters).
    file_based: ClassVar[bool] = False
    #: True when the backend takes ``batch_size="auto"`` (its own adaptive size).
    auto_batch: ClassVar[bool] = False

    def __init__(self, settings: BackendSettings):
        self.settings = settings

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @abc.abstractmethod
    def open(self, ctx: Any) -> None:
        """Create the queue in the parent; ``ctx`` is the multiprocessing context."""

    @abc.abstractmethod
    def producer(self, index: int) -> Producer:
        """The sending end for producer ``index`` (called in the child)."""

    @abc.abstractmethod
    def consumer(self, index: int) -> Consumer:
        """The receiving end for consumer ``index`` (called in the child)."""

    @abc.abstractmethod
    def end_of_stream(self, timeout: float) -> None:
        """Tell every consumer the stream has ended (parent, after producers exited).

        Must return within ``timeout`` seconds, raising ``TimeoutError`` if it
        cannot (say, a full queue whose consumers died): the parent must
        never hang.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything ``open`` created; idempotent."""

    def describe(self) -> dict:
        return {}

    def max_batch_age_s(self) -> float | None:
        """Seconds a partial batch may wait before it is sent anyway; None: sent only when full."""
        return None
