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

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import turbo_queue
from turbo_queue import _naming as naming
from turbo_queue._folder import Folder

__all__ = ["ConsumerLog", "ProducerLog", "check", "main", "parse_consumer_log", "parse_producer_log", "run"]

PROG = "python -m bench.scenarios.chaos"
QUEUE_DIR, LOG_DIR = "queue", "logs"
# Producer items: "<producer tag>:<n>:<pad>", the pad derived from n so that a
# consumer can tell an intact item from a damaged one.
_PAD = "abcdefghijklmnopqrstuvwxyz\u00e9\u65e5\U0001f389" * 2


def _item(tag: str, n: int) -> str:
    return f"{tag}:{n}:{_PAD[:n % 31]}"


# -- worker logs ----------------------------------------------------------------


class _Log:
    """Append-only, one record per line, one write per record (survives SIGKILL of the writer)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __call__(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


@dataclass
class ProducerLog:
    intent: int = 0  # W: every id it put is below this
    sealed: int = 0  # S: ids below this are sealed (in ready batches)
    clean: bool = False  # E: closed cleanly (everything it put is sealed)
    failures: list[str] = field(default_factory=list)


@dataclass
class ConsumerLog:
    received: dict[int, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)  # bid -> runs
    acked: set[int] = field(default_factory=set)
    acking: set[int] = field(default_factory=set)  # "a": an ack was about to happen
    released: set[int] = field(default_factory=set)  # "N": the handler raised; the batch goes back unacked
    recovered: Counter = field(default_factory=Counter)  # returned / sealed / set_aside
    bad_items: list[str] = field(default_factory=list)
    clean: bool = False
    failures: list[str] = field(default_factory=list)


def _complete_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return lines[:-1]  # the last piece is "" or a line torn by a kill: ignored


def parse_producer_log(text: str) -> ProducerLog:
    log = ProducerLog()
    for line in _complete_lines(text):
        kind, _, rest = line.partition(" ")
        if kind == "W":
            log.intent = max(log.intent, int(rest))
        elif kind == "S":
            log.sealed = max(log.sealed, int(rest))
        elif kind == "E":
            log.clean = True
        elif kind == "F":
            log.failures.append(rest)
    return log


def _parse_runs(text: str) -> tuple[tuple[str, int, int], ...]:
    runs = []
    for part in text.split(","):
        tag, _, span = part.partition(":")
        a, _, b = span.partition("-")
        runs.append((tag, int(a), int(b)))
    return tuple(runs)


def parse_consumer_log(text: str) -> ConsumerLog:
    log = ConsumerLog()
    for line in _complete_lines(text):
        kind, _, rest = line.partition(" ")
        if kind == "R":
            bid, _, runs = rest.partition(" ")
            log.received[int(bid)] = _parse_runs(runs)
        elif kind == "A":
            log.acked.add(int(rest))
        elif kind == "a":
            log.acking.add(int(rest))
        elif kind == "N":
            log.released.add(int(rest))
        elif kind == "V":
            returned, sealed, aside = (int(x) for x in rest.split())
            log.recovered.update(returned=returned, sealed=sealed, set_aside=aside)
        elif kind == "X":
            log.bad_items.append(rest)
        elif kind == "E":
            log.clean = True
        elif kind == "F":
            log.failures.append(rest)
    return log


def _runs_of(items: list, bad: list[str]) -> str:
    """Compress a batch's items into runs "tag:a-b" (b exclusive), checking each item."""
    runs: list[list] = []
    for item in items:
        try:
            tag, n_text, pad = item.split(":", 2)
            n = int(n_text)
            if pad != _PAD[:n % 31]:
                raise ValueError("damaged pad")
        except (AttributeError, ValueError):
            bad.append(repr(item)[:80])
            continue
        if runs and runs[-1][0] == tag and runs[-1][2] == n:
            runs[-1][2] = n + 1
        else:
            runs.append([tag, n, n + 1])
    return ",".join(f"{t}:{a}-{b}" for t, a, b in runs)


# -- workers (run in child processes) -----------------------------------------------


def _install_slow_seal(pause: float) -> None:
    """Write batch files in two halves with pauses, so random kills land mid-seal."""
    from turbo_queue import _producer

    if not hasattr(_producer, "write_file"):
        raise RuntimeError("turbo_queue._producer.write_file is gone: update bench/scenarios/chaos.py's seal hook")

    def write_all(fd: int, data) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def write_file(path: str, data: bytes, durable: bool, mode: int = 0o600) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            if mode & 0o077:
                os.fchmod(fd, mode)  # as turbo_queue._batch.write_file: the folder's group access
            half = len(data) // 2
            write_all(fd, data[:half])
            time.sleep(pause)  # a kill here leaves a torn loading file
            write_all(fd, data[half:])
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        os.close(fd)
        time.sleep(pause)  # a kill here leaves a complete loading file

    _producer.write_file = write_file


def _parent_gone(ppid: int) -> bool:
    return os.getppid() != ppid


def _quiet(verbose: bool) -> None:
    if not verbose:  # recoveries and set-asides are counted from the logs instead
        logging.getLogger("turbo_queue").addHandler(logging.NullHandler())
        logging.getLogger("turbo_queue").propagate = False


def _producer_worker(queue: turbo_queue.Queue, log_path: str, tag: str, stop, seed: int,
                     seal_pause: float, verbose: bool) -> None:
    rec = _Log(log_path)
    try:
        _quiet(verbose)
        ppid = os.getppid()
        rng = random.Random(seed)
        if seal_pause > 0:
            _install_slow_seal(seal_pause)
        batch_size = queue.batch_size
        p = queue.producer()
        rec(f"H {os.getpid()}")
        n = sealed = 0
        while not stop.value:
            if _parent_gone(ppid):
                return
            # Sizes that fit the current batch, so that put_many runs as one
            # chunk and a Full timeout means none of it was queued (the ids
            # must stay contiguous: the log says "the first n are sealed").
            pending = p.pending
            room = batch_size - pending if pending < batch_size else batch_size
            k = 1 if rng.random() < 0.3 else rng.randint(1, room)
            rec(f"W {n + k}")
            try:
                if k == 1:
                    p.put(_item(tag, n), timeout=1.0)
                else:
                    p.put_many([_item(tag, i) for i in range(n, n + k)], timeout=1.0)
            except turbo_queue.Full:
                continue  # nothing queued; try again (and look at stop and the parent)
            n += k
            if rng.random() < 0.02:
                try:
                    p.flush(timeout=1.0)
                except turbo_queue.Full:
                    pass
            s = p.sealed_items
            if s != sealed:
                sealed = s
                rec(f"S {s}")
        p.close(timeout=60)
        rec(f"S {p.sealed_items}")
        rec("E")
    except BaseException as exc:
        rec("F " + " | ".join(traceback.format_exception_only(type(exc), exc)).strip().replace("\n", " "))
        raise


def _log_recoveries(rec: _Log) -> None:
    """Make this process's consumers log what each of their recoveries did."""
    from turbo_queue import _consumer, _recovery

    real = _recovery.recover

    def recover(folder: str, *args, **kwargs):
        report = real(folder, *args, **kwargs)
        if report:
            rec(f"V {len(report.returned)} {len(report.sealed)} {len(report.set_aside)}")
        return report

    # Drain detection calls it from _consumer, the paced scans from _recovery.
    _consumer.recover = _recovery.recover = recover


class HandlerFailure(Exception):
    """Raised inside ``with c.batch()`` by the chaos consumer's handler: the batch must go back unacked."""


def dead_letter_supported() -> bool:
    """Whether this turbo_queue has the dead-letter state (Queue(max_deliveries=...), requeue_dead)."""
    import inspect

    return ("max_deliveries" in inspect.signature(turbo_queue.Queue).parameters
            and hasattr(turbo_queue.Queue, "requeue_dead"))


def _is_poison(items: list, every: int) -> bool:
    """A batch holding an item whose id is a multiple of ``every`` always fails its handler."""
    for item in items:
        try:
            if int(item.split(":", 2)[1]) % every == 0:
                return True
        except (AttributeError, ValueError, IndexError):
            pass
    return False


def _consumer_worker(queue: turbo_queue.Queue, log_path: str, tag: str, seed: int, work_s: float,
                     verbose: bool, fail_rate: float = 0.0, poison_every: int = 0) -> None:
    rec = _Log(log_path)
    try:
        _quiet(verbose)
        ppid = os.getppid()
        rng = random.Random(seed)
        _log_recoveries(rec)
        c = queue.consumer()
        rec(f"H {os.getpid()}")
        bid = 0
        unacked: int | None = None  # received, acked by the next get_batch call
        bad: list[str] = []

        def received(items: list) -> None:
            nonlocal bid, unacked
            if unacked is not None:  # the get that returned these items acked it
                rec(f"A {unacked}")
                unacked = None
            bid += 1
            runs = _runs_of(items, bad)
            rec(f"R {bid} {runs}")
            while bad:
                rec(f"X {bad.pop()}")
            if work_s:
                time.sleep(work_s)

        # "a" (about to ack) before each ack, "A" after: a batch of a killed consumer with
        # neither was surely not acked, so it must have been delivered again.
        while True:
            if _parent_gone(ppid):
                return
            if unacked is not None:
                rec(f"a {unacked}")  # the next get acks it
            style = rng.random()
            try:
                if style < 0.34:
                    try:
                        with c.batch(timeout=0.5) as items:
                            received(items)
                            if (poison_every and _is_poison(items, poison_every)) or rng.random() < fail_rate:
                                # Logged before the raise: from here the batch is surely not acked.
                                rec(f"N {bid}")
                                raise HandlerFailure(f"batch {bid}")
                            rec(f"a {bid}")  # leaving the block acks it
                        rec(f"A {bid}")
                    except HandlerFailure:
                        pass  # released by the with block: delivered again (or dead-lettered)
                else:
                    received(c.get_batch(timeout=0.5))
                    if style < 0.67:
                        rec(f"a {bid}")
                        c.ack()
                        rec(f"A {bid}")
                    else:
                        unacked = bid
            except turbo_queue.Empty:
                if unacked is not None:  # get_batch acks the previous batch before it waits
                    rec(f"A {unacked}")
                    unacked = None
            except turbo_queue.Closed:
                break
        c.close()
        if unacked is not None:
            rec(f"A {unacked}")
        rec("E")
    except BaseException as exc:
        rec("F " + " | ".join(traceback.format_exception_only(type(exc), exc)).strip().replace("\n", " "))
        raise


# -- the checker -------------------------------------------------------------------


def check(producers: dict[str, ProducerLog], consumers: dict[str, ConsumerLog], killed: set[str]) -> dict:
    """Check the logs of a run; ``killed`` holds the tags of the workers that were SIGKILLed.

    Returns the figures; ``lost``, ``unattributed_duplicates``, ``phantom``
    and ``bad_items`` must all be 0 for a correct queue.
    """
    intervals: dict[str, list[tuple[int, int, bool, bool]]] = defaultdict(list)
    batch_deliveries: Counter = Counter()
    for ctag, clog in consumers.items():
        for bid, runs in clog.received.items():
            # Maybe not acked (the consumer was killed before its "A"): may be delivered again.
            # A batch whose handler raised was released unacked: the same.
            released = bid in clog.released
            attributable = (ctag in killed and bid not in clog.acked) or released
            # Surely not acked (killed before even its "a", or released): must be delivered again.
            unacked = (ctag in killed and bid not in clog.acked and bid not in clog.acking) or released
            batch_deliveries[runs] += 1
            for ptag, a, b in runs:
                intervals[ptag].append((a, b, attributable, unacked))
    fig = Counter()
    problems: list[str] = []
    for ptag in sorted(set(producers) | set(intervals)):
        plog = producers.get(ptag)
        if plog is None:
            n = sum(b - a for a, b, _, _ in intervals[ptag])
            fig["phantom"] += n
            problems.append(f"{n} event(s) delivered from unknown producer {ptag}")
            continue
        put_bound, sealed = plog.intent, plog.sealed
        if plog.clean:
            if sealed != put_bound:
                problems.append(f"producer {ptag} closed cleanly with ids {sealed}..{put_bound} unsealed")
            sealed = put_bound  # close() returned: everything it put is sealed
        elif ptag not in killed:
            problems.append(f"producer {ptag} ended without closing and was not killed")
        fig["put"] += put_bound
        fig["sealed"] += sealed
        # Sweep over the ids: d deliveries, u of them attributable, s of them surely unacked.
        deltas: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for a, b, attributable, unacked in intervals[ptag]:
            for point, sign in ((a, 1), (b, -1)):
                deltas[point][0] += sign
                deltas[point][1] += sign * attributable
                deltas[point][2] += sign * unacked
        points = sorted(set(deltas) | {0, sealed, put_bound})
        d = u = s = 0
        for x, y in zip(points, points[1:]):
            dd, du, ds = deltas.get(x, (0, 0, 0))
            d, u, s = d + dd, u + du, s + ds
            length = y - x
            if d and d == s and x < put_bound:
                # Only ever handed to consumers killed before acking, and never again.
                fig["lost"] += length
                fig["lost_unacked"] += length
                continue
            if x < 0 and d:
                fig["phantom"] += length * d
            elif d == 0:
                if y <= sealed:
                    fig["lost"] += length
                elif y <= put_bound:
                    fig["unsealed_at_kill"] += length
            else:
                fig["delivered"] += length
                if x >= put_bound:
                    fig["phantom"] += length
                elif x >= sealed:
                    fig["sealed_unlogged"] += length  # killed between the seal and its log line
                if d > 1:
                    fig["duplicates"] += (d - 1) * length
                    fig["unattributed_duplicates"] += max(0, d - 1 - u) * length
    fig["duplicate_batches"] = sum(n - 1 for n in batch_deliveries.values() if n > 1)
    fig["batches_delivered"] = sum(batch_deliveries.values())
    fig["bad_items"] = sum(len(c.bad_items) for c in consumers.values())
    if fig["lost"] - fig["lost_unacked"]:
        problems.append(f"{fig['lost'] - fig['lost_unacked']} sealed event(s) never delivered")
    if fig["lost_unacked"]:
        problems.append(f"{fig['lost_unacked']} event(s) delivered only to consumers killed before acking "
                        "them (or whose handler raised), and never delivered again")
    if fig["unattributed_duplicates"]:
        problems.append(f"{fig['unattributed_duplicates']} duplicate delivery(ies) not from a killed "
                        "consumer's unacked batch")
    if fig["phantom"]:
        problems.append(f"{fig['phantom']} delivered event(s) that were never put")
    if fig["bad_items"]:
        problems.append(f"{fig['bad_items']} damaged item(s)")
    for tag, log in [*producers.items(), *consumers.items()]:
        for failure in log.failures:
            problems.append(f"worker {tag} failed: {failure}")
    for ctag, clog in consumers.items():
        if not clog.clean and ctag not in killed:
            problems.append(f"consumer {ctag} ended without draining and was not killed")
    keys = ("put", "sealed", "delivered", "batches_delivered", "duplicates", "duplicate_batches",
            "unattributed_duplicates", "lost", "unsealed_at_kill", "sealed_unlogged", "phantom", "bad_items")
    result = {k: fig[k] for k in keys}
    result["problems"] = problems
    return result


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
            target, wargs = _producer_worker, (q, log_path, tag, stop, seed, args.seal_pause, args.verbose)
        else:
            target, wargs = _consumer_worker, (q, log_path, tag, seed, args.work_ms / 1000, args.verbose,
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

    _quiet(args.verbose)
    final = q.recover()
    # Dead-lettered batches are not lost: requeue them and drain them here, with a handler that
    # does not fail, so that every sealed event is still delivered (and checked).
    dead_at_end = {"batches": 0, "events": 0}
    requeued = 0
    final_tag = "cend"
    if dead_letter:
        dead_at_end = dict(q.stats()["dead"])
        requeued = q.requeue_dead()
        rec = _Log(os.path.join(logdir, final_tag + ".log"))
        bad: list[str] = []
        with q.consumer() as c:
            bid = 0
            while True:
                try:
                    items = c.get_batch(timeout=5)
                except (turbo_queue.Empty, turbo_queue.Closed):
                    break
                bid += 1
                rec(f"R {bid} {_runs_of(items, bad)}")
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


if __name__ == "__main__":
    # Run the importable module's main, so that the workers pickle as bench.scenarios.chaos.* (not __main__.*).
    from bench.scenarios.chaos import main as _main

    sys.exit(_main())
