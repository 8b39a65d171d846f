"""A consumer for tests/test_lease.py, run as a script (inside ``unshare --pid``, among others).

``python tests/_lease_worker.py QUEUE LEASE_TIMEOUT RESULT SIGNAL``: claims one
batch, writes what it got to RESULT (atomically), then waits for the file
SIGNAL to appear and exits at once, without ack or release, as a killed
consumer would.  It gives up after 60 s so that a failed test cannot leave it
running.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import turbo_queue  # noqa: E402
from turbo_queue import _naming  # noqa: E402


def main(path: str, lease_timeout: str, result: str, signal: str) -> None:
    q = turbo_queue.Queue(path, max_batch_age=None, lease_timeout=float(lease_timeout))
    c = q.consumer()
    items = c.get_batch(timeout=30)
    report = {"items": items, "held": c._held, "pid": os.getpid(), "ns": _naming.local_namespace()}
    tmp = f"{result}.tmp"
    with open(tmp, "w") as f:
        f.write(repr(report))
    os.rename(tmp, result)
    deadline = time.monotonic() + 60
    while not os.path.exists(signal):
        if time.monotonic() > deadline:
            os._exit(3)
        time.sleep(0.01)
    os._exit(0)  # gone without ack or release


if __name__ == "__main__":
    main(*sys.argv[1:])
