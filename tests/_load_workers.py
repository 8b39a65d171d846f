"""Child-process workers of test_recovery_load.py and test_dead_letter.py (importable by forkserver)."""

from __future__ import annotations

import os
import time

from _workers import block_forever, write_result

import turbo_queue


def busy_consumer(q: turbo_queue.Queue, stop: str, started: str, work_s: float) -> None:
    """Consume batch after batch, ``work_s`` of work per item, until the file ``stop`` exists."""
    with q.consumer() as c:
        write_result(started, os.getpid())
        while not os.path.exists(stop):
            try:
                with c.batch(timeout=0.1) as items:
                    for _ in items:
                        end = time.monotonic() + work_s
                        while time.monotonic() < end:
                            pass
            except turbo_queue.Empty:
                continue


def claim_report_hang(q: turbo_queue.Queue, marker: str) -> None:
    """Claim one batch, report its claimed file name, then block until killed."""
    c = q.consumer()
    items = c.get_batch(timeout=30)
    write_result(marker, {"claimed": c._held, "items": items})
    block_forever()
