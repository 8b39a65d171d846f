"""The chaos run's producers and consumers, run in child processes and killed at random."""

from __future__ import annotations

import logging
import os
import random
import time
import traceback

import turbo_queue
from bench.scenarios.chaos.logs import WorkerLog, item_text, runs_of

# -- workers (run in child processes) -----------------------------------------------


def _install_slow_seal(pause: float) -> None:
    """Write batch files in two halves with pauses, so random kills land mid-seal."""
    from turbo_queue import _producer

    if not hasattr(_producer, "write_file"):
        raise RuntimeError("turbo_queue._producer.write_file is gone: update bench/scenarios/chaos's seal hook")

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


def quiet(verbose: bool) -> None:
    if not verbose:  # recoveries and set-asides are counted from the logs instead
        logging.getLogger("turbo_queue").addHandler(logging.NullHandler())
        logging.getLogger("turbo_queue").propagate = False


def producer_worker(queue: turbo_queue.Queue, log_path: str, tag: str, stop, seed: int,
                     seal_pause: float, verbose: bool) -> None:
    rec = WorkerLog(log_path)
    try:
        quiet(verbose)
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
                    p.put(item_text(tag, n), timeout=1.0)
                else:
                    p.put_many([item_text(tag, i) for i in range(n, n + k)], timeout=1.0)
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


def _log_recoveries(rec: WorkerLog) -> None:
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


def consumer_worker(queue: turbo_queue.Queue, log_path: str, tag: str, seed: int, work_s: float,
                     verbose: bool, fail_rate: float = 0.0, poison_every: int = 0) -> None:
    rec = WorkerLog(log_path)
    try:
        quiet(verbose)
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
            runs = runs_of(items, bad)
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


