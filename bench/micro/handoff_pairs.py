"""One consumer near its capacity: two checkouts alternated and paired, batch 100 against auto.

Reproduce with::

    python -m bench.micro.handoff_pairs OLD_TREE NEW_TREE --rate 40000 --pairs 5 -o handoff.json

A paced producer (the harness's open-loop schedule, ``produce_on_schedule``)
puts small events at ``--rate``; one forked consumer (``--consumers``: that
many) takes them with ``get_batch`` and spins ``--work-us`` per event.  Each event's wait runs from
the time it was due to its hand-over (the work on the events before it in
its batch included: what the harness's queue wait measures).  Outside the
harness so that its own costs (accounting, samplers, one process more on
the cores) do not move the consumer's capacity from repeat to repeat, as
they did on the 2-core VM, where its open-loop cells at one consumer's
maximum could not tell two policies apart in 18 pairs.  Each pair runs both
checkouts in alternating order, seconds apart; prints each one's p99 and
mean batch per size and the median of the per-pair ratios with their
min-max.  Written for the change that stopped an ``auto`` producer filling
its open batch past the size while its one consumer was busy (see
turbo_queue/_sizing.py, "its one consumer busy").  Each run also prints the
share of its batches above 100 events and their p99 size, which a passing
backlog grows: with ``--consumers 2 --rate 35000`` the question is whether
those batches set auto's p99 wait (README, "A calm hour").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from bench.micro.checkouts import pair_order, run_in

#: One run of one checkout: prints a JSON object of the figures.
CHILD = r'''
import json, multiprocessing as mp, os, shutil, sys, tempfile, time
import turbo_queue
from bench.measuring.events import clock_ns
from bench.measuring.schedule import produce_on_schedule

size, rate, seconds, work_us = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
consumers = int(sys.argv[5]) if len(sys.argv) > 5 else 1
size = size if size == "auto" else int(size)
WARM_NS = 500_000_000

def consume(path, out, measure_from):
    c = turbo_queue.Queue(path, batch_size=size).consumer()
    waits, sizes = [], []
    try:
        while True:
            batch = c.get_batch()
            if batch and batch[0]["due"] >= measure_from:
                sizes.append(len(batch))
            for event in batch:
                if event["due"] >= measure_from:
                    waits.append(clock_ns() - event["due"])
                end = time.perf_counter() + work_us * 1e-6
                while time.perf_counter() < end:
                    pass
    except turbo_queue.Closed:
        pass
    out.put((waits, sizes))

tmp = tempfile.mkdtemp()
path = os.path.join(tmp, "q")
# The harness's bound (max_buffered_events="auto"): two batches ready for a
# fixed size, GROW_AT + 1 for auto.
q = turbo_queue.Queue(path, batch_size=size, max_ready=4 if size == "auto" else 2, max_batch_age=1.0)
ctx = mp.get_context("fork")
out = ctx.Queue()
start = clock_ns() + 100_000_000
procs = [ctx.Process(target=consume, args=(path, out, start + WARM_NS)) for _ in range(consumers)]
for proc in procs:
    proc.start()
try:
    with q.producer() as p:
        sched = produce_on_schedule(p.put, lambda k, due: {"k": k, "due": due, "pad": "x" * 200}, rate=rate,
                                    t_start_ns=start, stop_ns=start + int(seconds * 1e9))
    q.close()
    waits, sizes = [], []
    for _ in procs:
        w, s = out.get(timeout=120)
        waits += w
        sizes += s
finally:
    for proc in procs:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()
    shutil.rmtree(tmp, ignore_errors=True)
waits.sort()
sizes.sort()
print(json.dumps({"p50_ms": waits[len(waits) // 2] / 1e6, "p99_ms": waits[int(0.99 * len(waits))] / 1e6,
                  "mean_batch": sum(sizes) / len(sizes), "batches": len(sizes), "behind": sched["backlog"],
                  "batch_p99": sizes[int(0.99 * (len(sizes) - 1))],
                  "over_100": sum(s > 100 for s in sizes) / len(sizes)}))
'''


def _run(tree: str, size: str, args: argparse.Namespace) -> dict:
    out = run_in(tree, CHILD, size, args.rate, args.seconds, args.work_us, args.consumers)
    return json.loads(out.strip().splitlines()[-1])


def _spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description="One consumer near its capacity, two checkouts alternated and paired.")
    parser.add_argument("old", help="the checkout to compare against (its root folder)")
    parser.add_argument("new", help="the checkout measured (its root folder)")
    parser.add_argument("--rate", type=float, default=40_000.0, help="events/s offered (default 40000)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run (the first 0.5 s not measured)")
    parser.add_argument("--work-us", type=float, default=20.0, help="the consumer's spin per event")
    parser.add_argument("--consumers", type=int, default=1, help="forked consumers (default 1)")
    parser.add_argument("--sizes", default="100,auto", help="batch sizes, comma-separated (default 100,auto)")
    parser.add_argument("-o", "--output", help="write every value and ratio here (JSON)")
    args = parser.parse_args()
    if args.rate <= 0 or args.pairs < 1 or args.seconds <= 0.5 or args.work_us < 0 or args.consumers < 1:
        parser.error("--rate must be > 0, --pairs >= 1, --seconds > 0.5, --work-us >= 0, --consumers >= 1")
    trees = {"old": os.path.abspath(args.old), "new": os.path.abspath(args.new)}
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    runs: dict[str, dict[str, list[dict]]] = {name: {s: [] for s in sizes} for name in trees}
    for pair in range(args.pairs):
        for name in pair_order(pair):
            for size in sizes:
                figures = _run(trees[name], size, args)
                runs[name][size].append(figures)
                print(f"pair {pair + 1} {name:>3} batch {size:>5}: p50 {figures['p50_ms']:6.2f} ms "
                      f"p99 {figures['p99_ms']:7.2f} ms mean batch {figures['mean_batch']:5.0f} "
                      f"(p99 {figures['batch_p99']}, {figures['over_100']:.1%} above 100) "
                      f"behind {figures['behind']}", flush=True)
    summary = {}
    print(f"\n{args.rate:.0f} events/s offered, {args.consumers} consumer(s) at {args.work_us:g} us an event, "
          f"{args.pairs} pairs; "
          "medians of the pairs (min-max)")
    for size in sizes:
        ratio = [n["p99_ms"] / o["p99_ms"] for o, n in zip(runs["old"][size], runs["new"][size])]
        lower = sum(r < 1 for r in ratio)
        summary[f"new_over_old_p99_{size}"] = ratio
        print(f"batch {size}: p99 old {_spread([r['p99_ms'] for r in runs['old'][size]])} ms, "
              f"new {_spread([r['p99_ms'] for r in runs['new'][size]])} ms; new / old {_spread(ratio)}, "
              f"lower in {lower} of {len(ratio)}; mean batch old "
              f"{_spread([r['mean_batch'] for r in runs['old'][size]], '.0f')}, "
              f"new {_spread([r['mean_batch'] for r in runs['new'][size]], '.0f')}")
    if "100" in sizes and "auto" in sizes:
        for name in trees:
            ratio = [a["p99_ms"] / b["p99_ms"] for a, b in zip(runs[name]["auto"], runs[name]["100"])]
            summary[f"auto_over_100_p99_{name}"] = ratio
            print(f"{name}: auto's p99 over batch 100's {_spread(ratio)}, higher in {sum(r > 1 for r in ratio)} "
                  f"of {len(ratio)}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "trees": trees, "runs": runs, "ratios": summary}, f, indent=1)


if __name__ == "__main__":
    main()
