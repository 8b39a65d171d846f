"""python -m bench.scenarios.chaos --duration 60

(or ``python -m bench chaos [PATH] --duration 60``): the chaos run of turbo_queue.

For ``--duration`` seconds, P producer and C consumer processes share one
queue folder, and at random moments (every ``--kill-interval`` seconds on
average) the run SIGKILLs a random producer or consumer and starts a
replacement.  The queue keeps running on live recovery only: idle consumers
return the batches of dead consumers to ready and seal (or set aside) the
loading files of dead producers.  Then it stops killing, closes the producers
cleanly, closes the queue, lets the consumers drain it, runs one last
``recover()`` and checks the logs.

Every worker writes what it did to its own log (one ``os.write`` of one line
per record, on an ``O_APPEND`` descriptor: a SIGKILL can only tear the last
line, which the checker ignores).  A producer logs ``W n`` *before* it puts
ids below ``n`` (an upper bound of what it put) and ``S n`` once
``Producer.sealed_items`` says the first ``n`` of its items are in batches
renamed to ready (a lower bound of what is sealed: a kill between the rename
and the log line only makes the bound lower).  A consumer logs ``R`` with the
ids of each batch it received, ``a`` just before it acks it and ``A`` once
it has, and ``N`` before its handler raises inside ``with c.batch()``
(``--fail-rate`` of the batches, and every poison batch: one holding an id
that is a multiple of ``--poison-every``), which releases the batch unacked.
Where turbo_queue has the dead-letter state, the queue runs with
``max_deliveries`` (``--max-deliveries``): poison batches end there; at the
end the run requeues them (``q.requeue_dead()``) and drains them with a
handler that does not fail, logged as consumer ``cend``, so every sealed
event is still delivered; the summary counts the dead-lettered batches.

The checks (any failure makes the run exit 1):

* lost = 0: every event a producer sealed was delivered at least once, and
  delivered again if every consumer it went to was killed before acking it
  (before its ``a`` line) or released it (``N``);
* every duplicate is attributable: an event may be delivered ``d`` times only
  if at least ``d - 1`` of those deliveries were batches received, and not
  acked, by a consumer that was then killed;
* no phantom: nothing was delivered that its producer did not put; every item
  arrives intact;
* the folder ends with no loading, claimed or ready file, and everything in
  ``aside/`` is a loading file of a killed producer (a kill in the middle of
  writing a batch leaves a torn file that recovery sets aside: those events
  were never sealed);
* no worker failed or exited on its own.

Events a killed producer had put but not sealed are lost by design (the README
says so: a producer buffers up to a batch in memory); they are counted as
"unsealed at kill", never as loss.

``--seal-pause`` (default 1 ms) makes each producer write its batch file in
two halves with a pause between them and after them, before the rename: it
widens the seal so that random kills land in the middle of it (torn and
complete loading files) often enough to matter.  ``--seal-pause 0`` seals at
full speed.

Figures go to stdout as a table, or as JSON with ``--json``.
"""


from bench.scenarios.chaos.checker import check
from bench.scenarios.chaos.logs import (
    ConsumerLog,
    ProducerLog,
    parse_consumer_log,
    parse_producer_log,
)
from bench.scenarios.chaos.run import main, run
from bench.scenarios.chaos.workers import dead_letter_supported

__all__ = [
    "ConsumerLog",
    "ProducerLog",
    "check",
    "dead_letter_supported",
    "main",
    "parse_consumer_log",
    "parse_producer_log",
    "run",
]
