"""``batch_size="auto"``: the size at which a producer seals, chosen from how many batches wait.

A big batch costs less CPU per event (one file, one serializer call, one
claim for many events) but an event waits for its batch to fill; at a low
rate that is the fill time or ``max_batch_age``.  What tells the two cases
apart is the folder: when no sealed batch is waiting, the consumers are
waiting for work, and sealing now costs them nothing but hands them events
sooner; when ready batches pile up, the consumers are the bottleneck, and
bigger batches make each of their claims carry more.

The policy sees the ready count at each seal (the producer keeps it from
its watch, :class:`turbo_queue._folder.ReadyCount`: no listing per seal and
nothing per event) and between puts, from the producer's background thread:

* **idle consumers** (no ready batch, and fewer consumers holding a claimed
  batch than consumers known from their claims: a consumer has nothing to
  do; see :meth:`turbo_queue._folder.ReadyCount.idle_consumer`): the open batch
  is sealed at once by that thread (:meth:`AutoBatchSize.seal_now`),
  whatever its size, and the size shrinks a step at the next seal;
* **its one consumer busy** (a batch sealed at the size while the only
  known consumer holds one, nothing else ready): the size holds.  That
  batch waits for the consumer, as the next would; it says nothing of the
  size being too big, and shrinking on it took the size down to what the
  consumer only just keeps up with (in the simulation of
  tests/test_put_sizing.py, ``test_near_capacity_auto_waits_no_longer_than_batch_100``:
  batches of ~70 events at 0.9 of capacity, the p99 wait 11.6 ms where
  batch 100 waits 5.2).  With one consumer, only a seal that found it idle
  shrinks, or one whose batch it took at once (none left ready).  With two or more, one batch ready after a seal shrinks as
  before: holding the size while both were busy kept batches that a slow
  spell's backlog had grown at ~1,150 events, the p99 wait 71 ms against
  batch 1000's 65 (``test_two_consumers_near_capacity_on_a_noisy_machine_wait_no_longer_than_batch_1000``).
  Until 2026-12-07 the open batch instead filled on past the size while
  its one consumer was busy, sealed when the consumer's ack freed it.  Each
  batch then waited, sealed, for the consumer that had just acked: the
  producer's thread woke on the ack, sealed (about 0.25 ms of its CPU) and
  the consumer woke on the rename, 0.3-0.7 ms a batch on the 2-core VM in
  which the consumer idled.  Near its capacity the batch grows until the
  events of one batch's work and that gap fill it, ``rate * (per batch +
  gap) / (1 - rate * per event)``, and every event waits about a batch's
  work.  Measured outside the harness (``python -m bench.micro.handoff_pairs
  OLD NEW --rate 44000 --pairs 10``: a paced producer, one consumer spinning
  20 us per event, the two checkouts alternated on the 2-core VM), auto's
  batches were 249 (138-463) events with it and 118 (112-194) without, its
  p99 wait 12.4 and 5.2 ms, 0.54 (0.21-2.38) of before, lower in 9 of 10
  pairs; against batch 100 in the same runs 1.62 (0.60-3.29) before,
  higher in 8 of 10 pairs, and 0.98 (0.41-1.68) after, higher in 5.  The
  harness's cell at one consumer's maximum had auto's p99 above batch
  100's in 12 of 16 pairs before (``results/20261207T114814Z-vm``,
  ``results/20261207T122832Z-vm``); in its runs alternated before/after
  it cannot tell the two apart, 9 and 7 of 18 pairs above
  (``results/20261207T134003Z-vm/README.md``).  The simulation with that gap
  (``handoff``) shows it, and that sealing at the size removes it:
  ``test_one_consumer_near_capacity_with_a_handoff_gap_waits_no_longer_than_batch_100``
  (its comment has the figures);
* **backlog** (:attr:`AutoBatchSize.GROW_AT` or more batches ready after a
  seal): the size grows a step, up to ``max_batch_size`` and to what fits in
  ``max_batch_bytes`` at the bytes per item of the last batch, but only
  while a batch fills in less than :attr:`AutoBatchSize.GROW_FILL` seconds.
  A batch that fills in that time already pays its fixed cost (a file, a
  rename, a claim: about 0.5 ms of CPU on both sides together, measured on
  the 2-core VM) at most 1 / GROW_FILL times a second per producer, a few
  percent of a core; a bigger one saves little more and makes the work
  lumpy: with two consumers near their capacity, one of them idles while
  the other works through a batch of thousands of events, and that capacity
  is lost for good.  Measured on the 2-core VM, 2 consumers at 20 us of
  work, 66,000 events/s offered: fixed batches of 1,000 and 2,000 carried
  0.99 and 0.96-1.00 of the rate, 4,800 carried 0.86-0.93, and auto, whose
  size grew on every passing backlog to 1,600-3,600, 0.78-0.88.  In a
  closed loop with fast consumers the producers put hundreds of thousands
  of events a second, and the bound lets batches grow to thousands there.
  What it costs is throughput where a backlog never clears and the
  producer is slow: at 200 us of work, 2 consumers, closed loop (about
  8,000 events/s put), batches stayed near 200 events and auto reached
  0.95 (0.94-0.97) of batch 1000's events/s (results/20261206T191103Z-vm).
  Letting batches under 500 items grow whatever their fill time was tried
  and measured worse: a passing backlog then grew them to 500, which the
  memory below kept; in a rerun of the same sweep auto fell short at 0.9
  with 1 consumer at 20 us and reached 0.89 of batch 1000 at 200 us with 1
  consumer (results/20261206T193349Z-vm);
* **a busy producer** (its process on the CPU for at least
  :attr:`AutoBatchSize.BUSY` of the time since its previous seal) never
  shrinks a batch below :attr:`AutoBatchSize.MIN_FILL` of filling, and
  grows one that reached its size faster, whatever the consumers do.  Sealing early
  is free only to a producer with time to spare: a batch's fixed cost
  (the file, the SQLite image, the rename: about 0.25 ms of the producer's
  CPU on the 2-core VM) comes out of a busy producer's rate.  Without this
  bound, consumers faster than their producer (waiting for work at every
  seal) shrank the size to a few events, each seal then cost the producer
  more than its events, and it fell further behind: in closed loop at 0 us
  of work with 2 consumers, auto's batches averaged 8.6 events and it
  carried 0.05 (0.02-0.37) of batch 1000's events/s, 24,773 against about
  500,000 (``results/20261207T013542Z-vm``).  A producer at a low or
  moderate rate is mostly idle and keeps the smallest batches (the busy
  share is what tells the two apart: the fill time alone does not, since a
  saturated producer's batches also fill quickly).  A step down is taken
  only from :attr:`AutoBatchSize.MIN_FILL_BAND` times MIN_FILL, so that it
  never makes a batch quick again (no hunting between the two).  What it
  costs is latency where the producer is busy but keeps up: its batches
  fill for 2 ms or more where batch 100 would fill sooner (above 50,000
  events/s), and a producer that spins while it waits for events (the
  harness's open-loop producers above ~20,000 events/s: ``sched_yield`` in
  a loop) is busy as far as its CPU time tells;
* anything in between holds the size, and a step is taken only after
  :attr:`AutoBatchSize.PATIENCE` seals in a row saw the same condition;
* a size that led to a backlog within :attr:`AutoBatchSize.MEMORY` seconds
  of filling after the policy shrank to it is remembered, and shrinking
  stops above it (lowered a step every MEMORY seconds of filling):
  without that, a steady rate near what the consumers can carry makes the
  size hunt between a size they cannot keep up with and one step above it
  (seen in the simulation of tests/test_put_sizing.py, which drives the
  policy with a simulated consumer and a fake clock).  The memory is kept
  in time, not in seals: it was 10,000 seals, and a backlog of a few
  milliseconds then held the size for the rest of a run.  Traced in the
  harness (2 consumers, 20 us of work, 35,000 events/s offered on the
  2-core VM): the open-loop producer's start, four batches of 100 sealed
  within 2 ms before the consumers' first claims, grew the size to 338 and
  set the floor at 225, and every later batch was sealed at 226 or more
  while the consumers waited for work (one batch ready at each seal), for
  the 2 s of the cell: 10,000 seals there is about a minute.  auto's p99
  wait was 7.9-26.8 ms against batch 100's 5.4-8.3 ms in that command.
  Kept in time, the start's floor still held batches at 300-500 for most
  of a cell at 60,000 events/s, so a backlog now sets the floor only at a
  size the policy shrank to within MEMORY: the start's size was never
  shrunk to, and a size held for long is not the one hunting returns to.
  Alternated with the code before, 3 runs each of ``--consumers 2
  --batch-sizes 100,auto --work-us 20 --rates 35000,60000,66000``, auto's
  mean batch at 60,000/s went from 325-540 to 175-211 events and its p99
  over batch 100's from 11.9-13.7 to 2.8-9.6 (medians of each run's
  repeats); at 35,000 and 66,000/s the runs cannot tell the two apart.

``max_batch_age`` stays the hard bound on how long an item waits unsealed.
"""

from __future__ import annotations

import math

__all__ = ["AutoBatchSize"]


class AutoBatchSize:
    """The sealing policy of one producer with ``batch_size="auto"``; not thread-safe (the producer's lock)."""

    #: Ready batches after a seal (that one included) that mean the consumers fall behind.
    GROW_AT = 3
    #: Ready batches after a seal at or below which the consumers wait for work (only the new one).
    SHRINK_AT = 1
    #: Seals in a row in the same condition before the size changes.
    PATIENCE = 2
    GROW = 1.5
    SHRINK = 0.75
    #: Seconds of filling (the batches' fill times added up: the time the
    #: producer is putting) after which the remembered size that led to a
    #: backlog is lowered a step.
    MEMORY = 0.5
    #: A backlog grows the size only while a batch fills in less than this (seconds).
    GROW_FILL = 0.010
    #: Seconds an open batch may fill while no batch is ready and no known
    #: consumer is idle: a consumer that never claimed (so not known) waits no longer.
    LINGER = 0.010
    #: A busy producer's batches fill for at least this long (seconds): at the
    #: 2-core VM's 0.25 ms of producer CPU per batch, at most an eighth of its
    #: time.  1.5 ms was tried: in the closed-loop cells at 0 us of work auto
    #: then carried 0.86 and 0.79 of batch 1000's events/s where 2 ms gave 0.96
    #: and 0.99 (results/20261207T014711Z-vm, 20261207T014228Z-vm; both noisy).
    MIN_FILL = 0.002
    #: ... and shrink only from this many times MIN_FILL: a step down (SHRINK)
    #: then leaves them at MIN_FILL or more, a step up (GROW) from under it
    #: below this, so the size settles instead of hunting.
    MIN_FILL_BAND = 1.5
    #: The share of a core the producer's process used since its previous seal
    #: at or above which it counts as busy (a producer that shares its cores
    #: with its consumers, on the CPU half the time, is one).
    BUSY = 0.5

    def __init__(self, max_batch_size: int = 10_000, max_batch_bytes: int | None = None,
                 min_batch_size: int = 1, initial: int | None = None) -> None:
        for name, value in (("max_batch_size", max_batch_size), ("min_batch_size", min_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if max_batch_bytes is not None and (isinstance(max_batch_bytes, bool) or not isinstance(max_batch_bytes, int)
                                            or max_batch_bytes <= 0):
            raise ValueError(f"max_batch_bytes: must be a positive integer or None, got {max_batch_bytes!r}")
        if min_batch_size > max_batch_size:
            raise ValueError(f"min_batch_size ({min_batch_size}) is above max_batch_size ({max_batch_size})")
        self.max_batch_size = max_batch_size
        self.max_batch_bytes = max_batch_bytes
        self.min_batch_size = min_batch_size
        start = initial if initial is not None else min(100, max_batch_size)
        #: The size at which the producer seals its next batch.
        self.size = max(min_batch_size, min(max_batch_size, start))
        self._streak = 0  # > 0: seals in a row that saw a backlog; < 0: idle consumers
        self._item_bytes: float | None = None
        self._too_small = 0  # the largest size that led to a backlog lately (0: none)
        self._too_small_age = 0.0  # seconds of filling since it was last seen
        self._shrunk_age = math.inf  # seconds of filling since the size last shrank (inf: never)

    def __repr__(self) -> str:
        return (f"AutoBatchSize(size={self.size}, max_batch_size={self.max_batch_size}, "
                f"max_batch_bytes={self.max_batch_bytes})")

    def _bound(self) -> int:
        limit = self.max_batch_size
        if self.max_batch_bytes is not None and self._item_bytes:
            limit = min(limit, max(1, int(self.max_batch_bytes // self._item_bytes)))
        return max(self.min_batch_size, limit)

    def after_seal(self, count: int, nbytes: int, ready: int, fill_s: float, busy: float,
                   idle: bool = True, consumers: int = 0) -> int:
        """A batch of ``count`` items, ``nbytes`` of records, was sealed; ``ready`` batches wait now.

        ``fill_s``: seconds from the batch's first item to its seal; ``busy``:
        the share of a core the producer's process used since its previous
        seal (CPU time over wall time).  No defaults: the growth bound, the
        memory's clock and the busy producer's bound read them.  ``idle``,
        ``consumers``: whether a consumer was idle at the seal and how many
        are known (:class:`turbo_queue._folder.ReadyCount`); with one known
        consumer, busy, one ready batch holds the size instead of shrinking
        it (see the module's docstring).  The defaults (idle, none known)
        read one ready batch as consumers waiting for work.  Returns the
        size to seal the next batch at.
        """
        if count > 0:
            self._item_bytes = nbytes / count
        backlog = ready >= self.GROW_AT
        busy_producer = busy >= self.BUSY
        # The new batch waits for the one consumer, busy (none ready: it
        # took the batch at once, so it was waiting for work).
        one_busy = not idle and consumers == 1 and ready > 0
        if backlog:
            if fill_s >= self.GROW_FILL:
                # Big enough that its fixed cost no longer matters (see the
                # module's docstring): the backlog is the consumers' work.
                self._streak = 0
            else:
                self._streak = self._streak + 1 if self._streak > 0 else 1
        elif busy_producer and fill_s < self.MIN_FILL and count >= self.size:
            # Too small for a producer with no time to spare, whether or not
            # the consumers wait (see the module's docstring).  Only a batch
            # that reached the size says how fast the size fills: one the
            # background thread sealed early for an idle consumer filled
            # briefly because it was sealed early.  Counted, such seals grew
            # the size at 35,000 events/s with 2 consumers on the 2-core VM;
            # alternated with that code (6 runs each of 3 repeats), auto's p99
            # queue wait over batch 100's went from 1.36 (1.06-3.56) to 1.02
            # (0.87-2.19), the median of the runs' medians, lower in each pair;
            # with 1 consumer at 36,000/s the runs could not tell the two
            # apart (1.03, 0.36-2.54, before; 1.12, 0.76-1.87, after).
            self._streak = self._streak + 1 if self._streak > 0 else 1
        elif (ready <= self.SHRINK_AT and not one_busy
              and not (busy_producer and fill_s < self.MIN_FILL_BAND * self.MIN_FILL)):
            # Consumers wait for work.  One ready batch with its one consumer
            # busy does not say so: the batch waits for it (see the module's
            # docstring, "its one consumer busy").
            self._streak = self._streak - 1 if self._streak < 0 else -1
        else:
            self._streak = 0
        size = self.size
        self._too_small_age += fill_s
        self._shrunk_age += fill_s
        if self._too_small_age > self.MEMORY:
            # Forgotten a step at a time: the rate may have fallen for good,
            # or the backlog was a passing one (a start, a slow spell).
            self._too_small = math.floor(self._too_small * self.SHRINK)
            self._too_small_age = 0.0
        if self._streak >= self.PATIENCE:
            # Only a backlog says the consumers could not keep up with this
            # size; a busy producer's growth is no floor for shrinking later.
            # Nor is a backlog at a size the policy did not shrink to lately:
            # the floor is there to stop a shrink that went too far from being
            # taken again (hunting), and a backlog at the start (the harness's
            # open-loop producer seals batches within a ms before the
            # consumers' first claims) or in a slow spell at a size held for
            # long says nothing of that, while remembered it held batches of
            # 300-500 at 60,000 events/s with 2 consumers where batch 100
            # waited a tenth as long (test_a_start_before_the_consumers_claim_is_not_remembered).
            if backlog and self._shrunk_age <= self.MEMORY and size >= self._too_small:
                self._too_small, self._too_small_age = size, 0.0
            size = math.ceil(size * self.GROW)
            self._streak = 0
        elif self._streak <= -self.PATIENCE:
            size = max(math.floor(size * self.SHRINK), self._too_small + 1 if self._too_small else 0)
            if size < self.size:
                self._shrunk_age = 0.0
            self._streak = 0
        self.size = max(self.min_batch_size, min(self._bound(), size))
        return self.size

    @classmethod
    def seal_now(cls, pending: int, ready: int, idle: bool = True, waited: float = 0.0) -> bool:
        """Between puts: seal the open batch of ``pending`` items now?

        Yes when no batch waits and a consumer is ``idle`` (or the oldest
        item has ``waited`` :attr:`LINGER` seconds: the consumers are counted
        from their claims, and one that never claimed is not known).
        """
        return pending > 0 and ready == 0 and (idle or waited >= cls.LINGER)
