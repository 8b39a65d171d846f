"""One batch's round trip, two checkouts alternated burst by burst and paired.

Reproduce with::

    python -m bench.micro.batch_pairs OLD_TREE NEW_TREE --pairs 16 -o pairs.json

``bench.micro.batch_cost`` runs each variant's pyperf workers one after the
other, so on a machine whose speed swings from second to second (the 2-core
VM) its control, the bare file steps, moved as much as the change did
between two runs.  Here each pair is one short burst of each checkout, a
second or so apart, in alternating order: the round trip of
``batch_cost``'s ``turbo-round-trip-B`` (B puts, the seal, ``get_batch``,
the ack), after 200 untimed ones, timed in CPU seconds of the process.
Prints, per batch size, each checkout's median CPU per batch and the median
of the per-pair ratios old / new with their min-max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from bench.micro.checkouts import pair_order, run_in

#: One checkout's burst: 200 untimed round trips, then ``loops`` timed; prints CPU us per batch.
#: The loop of batch_cost's bench_turbo_round_trip, written out here: the older checkout it is
#: held against may predate that module (it needs only turbo_queue and speed_putget's make_event).
CHILD = r'''
import sys, os, tempfile, shutil, time
import turbo_queue
from bench.micro.speed_putget import make_event
batch, loops = int(sys.argv[1]), int(sys.argv[2])
events = [make_event(i) for i in range(batch)]
tmp = tempfile.mkdtemp()
q = turbo_queue.Queue(os.path.join(tmp, "q"), batch_size=batch, max_batch_age=None)
with q.producer() as p, q.consumer() as c:
    for _ in range(200):
        for e in events: p.put(e)
        c.get_batch(timeout=0)
    t0 = time.process_time()
    for _ in range(loops):
        for e in events: p.put(e)
        c.get_batch(timeout=0)
    print((time.process_time() - t0) / loops * 1e6)
shutil.rmtree(tmp)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description="One batch's round trip, two checkouts alternated and paired.")
    parser.add_argument("old", help="the checkout to compare against (its root folder)")
    parser.add_argument("new", help="the checkout measured (its root folder)")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("-o", "--output", help="write every value and ratio here (JSON)")
    args = parser.parse_args()
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    out = {}
    for batch, loops in ((1, 3000), (100, 1500)):
        vals: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(args.pairs):
            for name in pair_order(i):
                vals[name].append(float(run_in(trees[name], CHILD, batch, loops)))
        ratios = [a / b for a, b in zip(vals["old"], vals["new"])]
        out[batch] = {"old_us": vals["old"], "new_us": vals["new"], "old_over_new": ratios}
        print(f"B={batch}: old {statistics.median(vals['old']):.1f} us, new {statistics.median(vals['new']):.1f} us "
              f"of CPU per batch; old / new {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) over {len(ratios)} pairs", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"old": trees["old"], "new": trees["new"], "batches": out}, f, indent=1)


if __name__ == "__main__":
    main()
