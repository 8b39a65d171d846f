"""The chaos run itself (the parent that starts, kills and restarts workers) and its command line."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import turbo_queue
from bench.scenarios.chaos.checker import check
from bench.scenarios.chaos.logs import WorkerLog, parse_consumer_log, parse_producer_log, runs_of
from bench.scenarios.chaos.workers import (
    consumer_worker,
    dead_letter_supported,
    producer_worker,
    quiet,
)
from turbo_queue import _naming as naming
from turbo_queue._folder import Folder

PROG = "python -m bench.scenarios.chaos"
QUEUE_DIR, LOG_DIR = "queue", "logs"

# -- the run -----------------------------------------------------------------------


@dataclass
class _Worker:
    role: str
    tag: str
    proc: mp.process.BaseProcess
    killed: bool = False


def _owned_files(qdir: str, pid: int) -> tuple[int, int]:
    """(loading, claimed) files in the folder whose owner is ``pid``."""
    loading = claimed = 0
    for name in os.listdir(qdir):
        if name.startswith(naming.LOADING):
            parsed = naming.parse_batch_name(name)
            loading += parsed is not None and parsed.owner.pid == pid
        elif name.startswith(naming.CLAIMED):
            parsed_c = naming.parse_claimed_name(name)
            claimed += parsed_c is not None and parsed_c.owner.pid == pid
    return loading, claimed


def _aside_origin(entry: str):
    """The parsed batch name an aside/ entry was set aside under, or None."""
    original = entry.split(naming.SUFFIX + ".", 1)[0] + naming.SUFFIX
    if original.startswith(naming.CLAIMED):
        claimed = naming.parse_claimed_name(original)
        original = claimed.ready_name if claimed else original
    return naming.parse_batch_name(original)


def run(args: argparse.Namespace) -> dict:
    """Run the chaos run described by ``args`` (see :func:`parse_args`); return the figures."""
    ctx = mp.get_context(args.start_method)
    rng = random.Random(args.seed)
    temporary = args.path is None
    root = tempfile.mkdtemp(prefix="turbo-chaos-") if temporary else os.path.abspath(args.path)
    qdir, logdir = os.path.join(root, QUEUE_DIR), os.path.join(root, LOG_DIR)
    for d in (qdir, logdir):
        if os.path.exists(d) and os.listdir(d):
            raise SystemExit(f"{PROG}: {d} is not empty; give a new PATH (a chaos run needs a fresh queue)")
    os.makedirs(logdir, mode=0o700, exist_ok=True)
    dead_letter = dead_letter_supported() and args.max_deliveries > 0
    extra = {"max_deliveries": args.max_deliveries} if dead_letter else {}
    q = turbo_queue.Queue(qdir, batch_size=args.batch_size, max_ready=args.max_ready, max_batch_age=0.05,
                          serializer=args.serializer, durable=args.durable, recover_interval=0.2, **extra)
    # Poison batches (always failing) only where they can be dead-lettered: without a delivery
    # limit they would come back for ever, which is the problem max_deliveries solves.
    poison_every = args.poison_every if dead_letter else 0
    stop = ctx.RawValue("b", 0)
    workers: list[_Worker] = []
    counters = {"producer": 0, "consumer": 0}
    kills = Counter()
    unexpected: list[str] = []
    sabotaged = []

    def start(role: str) -> None:
        tag = f"{role[0]}{counters[role]}"
        counters[role] += 1
        log_path = os.path.join(logdir, tag + ".log")
        seed = rng.randrange(2**32)
        if role == "producer":
            target, wargs = producer_worker, (q, log_path, tag, stop, seed, args.seal_pause, args.verbose)
        else:
            target, wargs = consumer_worker, (q, log_path, tag, seed, args.work_ms / 1000, args.verbose,
                                               args.fail_rate, poison_every)
        proc = ctx.Process(target=target, args=wargs, name=f"chaos-{tag}", daemon=True)
        proc.start()
        workers.append(_Worker(role, tag, proc))

    def live(role: str | None = None) -> list[_Worker]:
        return [w for w in workers if not w.killed and w.proc.exitcode is None and role in (None, w.role)]

    t0 = time.monotonic()
    try:
        for _ in range(args.producers):
            start("producer")
        for _ in range(args.consumers):
            start("consumer")
        t_end = t0 + args.duration
        next_kill = t0 + rng.expovariate(1 / args.kill_interval)
        while True:
            now = time.monotonic()
            if now >= t_end:
                break
            for w in workers:
                if not w.killed and w.proc.exitcode is not None and w.tag not in unexpected:
                    unexpected.append(w.tag)  # no worker ends on its own before the stop
                    start(w.role)
            if args.sabotage and not sabotaged and now >= t0 + args.duration / 2:
                ready = sorted(n for n in os.listdir(qdir) if naming.is_ready_name(n))
                for name in ready[:1]:  # steal one sealed batch: the checker must see the loss
                    try:
                        os.rename(os.path.join(qdir, name), os.path.join(root, "stolen-" + name))
                    except FileNotFoundError:
                        continue  # a consumer claimed it first: try another next time
                    sabotaged.append(name)
            if now >= next_kill:
                role = rng.choice(("producer", "consumer"))
                victims = live(role)
                if victims:
                    victim = rng.choice(victims)
                    os.kill(victim.proc.pid, signal.SIGKILL)
                    victim.proc.join(10)
                    victim.killed = True
                    kills[role] += 1
                    loading, claimed = _owned_files(qdir, victim.proc.pid)
                    kills["mid_seal"] += bool(loading)
                    kills["holding_batch"] += bool(claimed)
                    start(role)
                next_kill = now + rng.expovariate(1 / args.kill_interval)
            time.sleep(max(0.0, min(0.02, next_kill - now, t_end - now)))
        chaos_s = time.monotonic() - t0

        # The end: producers close cleanly, then the queue closes and the consumers drain it.
        stop.value = 1
        for w in live("producer"):
            w.proc.join(max(1.0, 60 - (time.monotonic() - t0 - chaos_s)))
        q.close()
        for w in live("consumer"):
            w.proc.join(max(1.0, 120 - (time.monotonic() - t0 - chaos_s)))
        for w in live():
            unexpected.append(f"{w.tag} (hung at the end)")
            w.proc.kill()
            w.proc.join(10)
        for w in workers:
            if not w.killed and w.proc.exitcode not in (0, None) and w.tag not in unexpected:
                unexpected.append(f"{w.tag} (exit code {w.proc.exitcode})")
        drain_s = time.monotonic() - t0 - chaos_s
    finally:
        for w in workers:
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join(10)

    quiet(args.verbose)
    final = q.recover()
    # Dead-lettered batches are not lost: requeue them and drain them here, with a handler that
    # does not fail, so that every sealed event is still delivered (and checked).
    dead_at_end = {"batches": 0, "events": 0}
    requeued = 0
    final_tag = "cend"
    if dead_letter:
        dead_at_end = dict(q.stats()["dead"])
        requeued = q.requeue_dead()
        rec = WorkerLog(os.path.join(logdir, final_tag + ".log"))
        bad: list[str] = []
        with q.consumer() as c:
            bid = 0
            while True:
                try:
                    items = c.get_batch(timeout=5)
                except (turbo_queue.Empty, turbo_queue.Closed):
                    break
                bid += 1
                rec(f"R {bid} {runs_of(items, bad)}")
                rec(f"a {bid}")
                c.ack()
                rec(f"A {bid}")
            while bad:
                rec(f"X {bad.pop()}")
        rec("E")
    # The folder's own scan sorts its entries by state (dead/ and aside/ are
    # its sub-folders, counted below), so the check reads it as the queue does.
    scan = Folder(qdir).scan()
    left = Counter(loading=len(scan.loading), claimed=len(scan.claimed), ready=len(scan.ready))
    other = scan.other
    killed_producer_pids = {w.proc.pid for w in workers if w.killed and w.role == "producer"}
    aside_dir = os.path.join(qdir, naming.ASIDE_DIR)
    aside = sorted(os.listdir(aside_dir)) if os.path.isdir(aside_dir) else []
    origins = {e: _aside_origin(e) for e in aside}
    unexplained_aside = [e for e, o in origins.items() if o is None or o.owner.pid not in killed_producer_pids]

    def read(tag: str) -> str:
        try:
            with open(os.path.join(logdir, tag + ".log"), encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""  # killed before it opened its log

    plogs = {w.tag: parse_producer_log(read(w.tag)) for w in workers if w.role == "producer"}
    clogs = {w.tag: parse_consumer_log(read(w.tag)) for w in workers if w.role == "consumer"}
    if dead_letter:
        clogs[final_tag] = parse_consumer_log(read(final_tag))
    released = sum(len(c.released) for c in clogs.values())
    killed = {w.tag for w in workers if w.killed}
    result = check(plogs, clogs, killed)
    recovered = Counter()
    for clog in clogs.values():
        recovered.update(clog.recovered)
    recovered.update(returned=len(final.returned), sealed=len(final.sealed), set_aside=len(final.set_aside))
    problems = result.pop("problems")
    if dead_letter:
        left["dead"] = q.stats()["dead"]["batches"]
        if requeued != dead_at_end["batches"]:
            problems.append(f"requeue_dead returned {requeued}, stats said {dead_at_end['batches']} dead")
    if left["loading"] or left["claimed"] or left["ready"] or left["dead"]:
        problems.append(f"folder not empty at the end: {dict(left)}")
    if unexplained_aside:
        problems.append(f"set aside, not a torn file of a killed producer: {unexplained_aside[:5]}")
    if unexpected:
        problems.append(f"workers that ended on their own: {unexpected}")
    if other:
        problems.append(f"files left in the queue folder that are not batches: {other[:5]}")
    if not os.path.exists(os.path.join(qdir, naming.CLOSED_MARKER)):
        problems.append("CLOSED marker missing")
    if sabotaged:
        problems.append(f"sabotage: the run itself removed ready batch {sabotaged[0]}")
    figures = {
        "ok": not problems,
        "duration_s": round(chaos_s, 1),
        "drain_s": round(drain_s, 1),
        "producers": args.producers,
        "consumers": args.consumers,
        "batch_size": args.batch_size,
        "serializer": args.serializer,
        "durable": args.durable,
        "kills": {"producer": kills["producer"], "consumer": kills["consumer"],
                  "total": kills["producer"] + kills["consumer"],
                  "mid_seal": kills["mid_seal"], "holding_batch": kills["holding_batch"]},
        "recoveries": {"returned": recovered["returned"], "sealed": recovered["sealed"],
                       "set_aside": recovered["set_aside"],
                       "total": recovered["returned"] + recovered["sealed"] + recovered["set_aside"]},
        "handler_failures": released,
        "dead_letter": {"enabled": dead_letter, "max_deliveries": args.max_deliveries if dead_letter else None,
                        "batches": dead_at_end["batches"], "events": dead_at_end["events"],
                        "requeued": requeued},
        "events_put": result["put"],
        "events_sealed": result["sealed"],
        "events_checked": result["sealed"],
        "events_delivered": result["delivered"],
        "batches_delivered": result["batches_delivered"],
        "duplicates": result["duplicates"],
        "duplicate_batches": result["duplicate_batches"],
        "unattributed_duplicates": result["unattributed_duplicates"],
        "lost": result["lost"],
        "unsealed_at_kill": result["unsealed_at_kill"],
        "sealed_unlogged": result["sealed_unlogged"],
        "phantom": result["phantom"],
        "bad_items": result["bad_items"],
        "folder_at_end": {"loading": left["loading"], "claimed": left["claimed"], "ready": left["ready"],
                          "dead": left["dead"],
                          "aside": len(aside), "aside_unexplained": len(unexplained_aside),
                          "other_files": other},
        "problems": problems,
        "command": args.command,
        "path": None if temporary and not args.keep else root,
    }
    if temporary and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return figures


def format_figures(f: dict) -> str:
    k, r, end = f["kills"], f["recoveries"], f["folder_at_end"]
    rows = [
        ("kills survived", f"{k['total']}", f"producers {k['producer']}, consumers {k['consumer']}"),
        ("  mid-seal", f"{k['mid_seal']}", "producer kills that left a loading file"),
        ("  holding a batch", f"{k['holding_batch']}", "consumer kills that left a claimed batch"),
        ("recoveries", f"{r['total']}", f"claimed returned {r['returned']}, loading sealed {r['sealed']}, "
                                        f"set aside {r['set_aside']}"),
        ("handler failures", f"{f['handler_failures']}", "batches released by a handler that raised"),
        ("dead-lettered", f"{f['dead_letter']['batches']}",
         (f"batches ({f['dead_letter']['events']} events) after {f['dead_letter']['max_deliveries']} "
          f"deliveries; {f['dead_letter']['requeued']} requeued and drained at the end")
         if f["dead_letter"]["enabled"] else "dead-letter state not available in this turbo_queue"),
        ("events put", f"{f['events_put']}", "by every producer, killed or not"),
        ("events checked", f"{f['events_checked']}", "sealed: each must be delivered at least once"),
        ("events delivered", f"{f['events_delivered']}", f"in {f['batches_delivered']} batch deliveries"),
        ("duplicates", f"{f['duplicates']}", f"events, in {f['duplicate_batches']} batches redelivered after "
                                             "their consumer was killed or their handler raised"),
        ("unattributed dups", f"{f['unattributed_duplicates']}", "must be 0"),
        ("unsealed at kill", f"{f['unsealed_at_kill']}", "buffered in killed producers, never sealed: not a loss"),
        ("phantom / damaged", f"{f['phantom']} / {f['bad_items']}", "must be 0"),
        ("lost", f"{f['lost']}", "must be 0"),
        ("folder at end", f"{end['loading']}/{end['claimed']}/{end['ready']}",
         f"loading/claimed/ready; aside {end['aside']} (torn files of killed producers; "
         f"{end['aside_unexplained']} unexplained)"),
    ]
    head = (f"turbo_queue chaos run: {f['duration_s']} s of kills (+{f['drain_s']} s drain), "
            f"{f['producers']} producers, {f['consumers']} consumers, batch_size {f['batch_size']}, "
            f"serializer {f['serializer']}")
    lines = [head, ""]
    lines += [f"  {name:<19}{value:>12}   {note}" for name, value, note in rows]
    lines.append("")
    lines.append("result: " + ("OK" if f["ok"] else "FAILED"))
    lines += [f"  - {p}" for p in f["problems"]]
    lines.append(f"reproduce: {f['command']}")
    if f["path"]:
        lines.append(f"run folder (queue/ and logs/): {f['path']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Chaos run: SIGKILL producers and consumers at random; prove nothing sealed is lost.")
    parser.add_argument("path", nargs="?", default=None,
                        help="run folder (queue/ and logs/ go in it; default: a temporary folder, removed after)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of kills (default 60)")
    parser.add_argument("--producers", type=int, default=3, help="producer processes (default 3)")
    parser.add_argument("--consumers", type=int, default=3, help="consumer processes (default 3)")
    parser.add_argument("--kill-interval", type=float, default=0.5,
                        help="mean seconds between kills, exponentially distributed (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=100, help="queue batch_size (default 100)")
    parser.add_argument("--max-ready", type=int, default=32, help="queue max_ready (default 32)")
    parser.add_argument("--serializer", default="pickle", choices=("pickle", "json", "raw"))
    parser.add_argument("--durable", action="store_true", help="fsync every batch (Queue(durable=True))")
    parser.add_argument("--seal-pause", type=float, default=0.001,
                        help="seconds a producer pauses mid-write and before the rename (default 0.001; 0: off)")
    parser.add_argument("--work-ms", type=float, default=2.0,
                        help="milliseconds a consumer spends on each batch it holds (default 2)")
    parser.add_argument("--fail-rate", type=float, default=0.05,
                        help="chance that a consumer's handler raises inside `with c.batch()` (default 0.05)")
    parser.add_argument("--max-deliveries", type=int, default=3,
                        help="queue max_deliveries, where turbo_queue has dead-letter (default 3; 0: off)")
    parser.add_argument("--poison-every", type=int, default=1000,
                        help="a batch holding an id that is a multiple of this always fails its handler, "
                             "with dead-letter on (default 1000)")
    parser.add_argument("--verbose", action="store_true", help="let workers log turbo_queue's warnings")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill schedule (default 1)")
    parser.add_argument("--start-method", default="forkserver", choices=mp.get_all_start_methods())
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder")
    # Tests only: steal one ready batch mid-run, to prove the checker reports the loss.
    parser.add_argument("--sabotage", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("duration", "kill_interval"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')}: must be positive")
    for name in ("producers", "consumers", "batch_size", "max_ready"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be at least 1")
    if not 0 <= args.fail_rate < 1:
        parser.error("--fail-rate: must be in [0, 1)")
    if args.max_deliveries < 0 or args.poison_every < 0:
        parser.error("--max-deliveries and --poison-every must not be negative")
    if args.seal_pause < 0 or args.work_ms < 0:
        parser.error("--seal-pause and --work-ms must not be negative")
    args.command = " ".join([PROG, *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = run(args)
    print(json.dumps(figures, indent=2) if args.json else format_figures(figures), flush=True)
    return 0 if figures["ok"] else 1
