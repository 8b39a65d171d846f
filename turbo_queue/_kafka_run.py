"""What the Kafka stages share: their logger and how a ``stop`` argument is read.

``stop`` is a ``threading.Event`` (or any object with ``is_set``), a
callable returning true, or None (run until the queue is closed).
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("turbo_queue.kafka")


def stop_requested(stop: Any) -> bool:
    """True once ``stop`` says so (never for None)."""
    if stop is None:
        return False
    is_set = getattr(stop, "is_set", None)
    return bool(is_set() if is_set is not None else stop())


def pause(stop: Any, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    wait = getattr(stop, "wait", None)
    if wait is not None:
        wait(seconds)
        return
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop_requested(stop):
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
