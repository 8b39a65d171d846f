"""Realistic log-record events, identical for every backend.

Reproduce the size check with::

    python -c "from bench.measuring.events import EventFactory; print(EventFactory(0, 300).sample_json_size())"

Every producer of every backend builds its events with the same
``EventFactory``, so the only thing that differs between backends is the
queue.  An event is a plain ``dict`` shaped like a structured web-service log
record (the kind of stream our users pipe through many processes)::

    {"ts": 1732770000.123, "seq": 3000000000042, "producer": 3,
     "host": "web-03", "service": "checkout", "level": "INFO",
     "status": 200, "path": "/api/v1/orders", "latency_ms": 12.5,
     "trace_id": "00000ae9f7bcc02a", "msg": "GET /api/v1/orders ...",
     "created_ns": 8123456789012, "scheduled_ns": 8123456789012}

``msg`` is padded so the record serialized as JSON is about ``event_bytes``
long (exact to a few bytes: the size of ``ts``/``created_ns`` digits varies).

``seq`` is unique across all producers of a cell: producer ``p`` numbers its
events ``p * SEQ_STRIDE + i`` for ``i = 0, 1, 2, ...``, so the delivery check
knows exactly which numbers must arrive without any coordination.

``created_ns`` comes from :func:`clock_ns`, a clock every process on the
machine shares, so a consumer can subtract it from its own reading to get the
end-to-end latency.  ``scheduled_ns`` is when the event was due: in an
open-loop cell its slot in the producer's schedule (bench.measuring.schedule),
which a late producer reaches after it; in a closed-loop cell, where producers
run flat out, an event is due when it is made, so it equals ``created_ns``.
Latency is measured from ``scheduled_ns``.
"""

from __future__ import annotations

import json
import socket
import time

#: Producer ``p`` numbers its events from ``p * SEQ_STRIDE``; 10**12 events per
#: producer is far beyond any cell, and the numbers stay within an int64.
SEQ_STRIDE = 10**12

#: The shared clock.  On Linux ``time.monotonic_ns`` is CLOCK_MONOTONIC, which
#: is system-wide (one clock for all processes) and, unlike ``time.time_ns``,
#: never jumps when NTP steps the wall clock in the middle of a cell.
clock_ns = time.monotonic_ns
CLOCK_DESCRIPTION = (
    "time.monotonic_ns (CLOCK_MONOTONIC on Linux: system-wide, shared by all processes, "
    "not stepped by NTP)"
)

DEFAULT_EVENT_BYTES = 300

# Small rotating vocabularies: cheap to pick from by index (no random calls in
# the producer's hot loop) yet varied enough that records are not identical.
_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "INFO", "WARNING", "INFO", "ERROR")
_STATUS = (200, 200, 201, 200, 204, 200, 404, 200, 500, 200, 302)
_PATHS = (
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v1/cart",
    "/api/v1/users/{id}/profile",
    "/healthz",
    "/api/v1/search",
    "/static/app.js",
)
_SERVICES = ("checkout", "catalog", "auth", "search", "frontend")
_LATENCIES = (0.8, 2.4, 12.5, 3.1, 48.0, 7.7, 150.2, 1.9, 22.6)
_FILLER = (
    "user_agent=Mozilla/5.0 (X11; Linux x86_64) region=eu-west-1 cache=miss "
    "upstream=10.0.3.17:8080 retries=0 bytes_in=512 bytes_out=18244 "
    "feature_flags=new_checkout,fast_search tenant=acme-corp "
)


class EventFactory:
    """Makes the events of one producer.

    ``make(i)`` returns a fresh dict for the producer's ``i``-th event; it is
    the only call in the producer's hot loop, so it does as little as a
    realistic record allows: copy a template, fill the varying fields.
    """

    __slots__ = ("producer", "event_bytes", "_base", "_template", "_msgs", "_hosts")

    def __init__(self, producer: int, event_bytes: int = DEFAULT_EVENT_BYTES):
        if event_bytes <= 0:
            raise ValueError(f"event_bytes must be positive, got {event_bytes}")
        self.producer = producer
        self.event_bytes = event_bytes
        self._base = producer * SEQ_STRIDE
        host = socket.gethostname().split(".")[0] or "host"
        self._hosts = tuple(f"{host}-{n:02d}" for n in range(4))
        self._template = {
            "ts": 0.0,
            "seq": 0,
            "producer": producer,
            "host": self._hosts[0],
            "service": _SERVICES[producer % len(_SERVICES)],
            "level": "INFO",
            "status": 200,
            "path": _PATHS[0],
            "latency_ms": 0.0,
            "trace_id": "",
            "msg": "",
            "created_ns": 0,
            "scheduled_ns": 0,
        }
        # One padded message per path; the padding is computed against a
        # record whose numeric fields have realistic widths, so the JSON size
        # of real events lands within a few bytes of the target.
        self._msgs = tuple(self._padded_msg(path) for path in _PATHS)

    def _padded_msg(self, path: str) -> str:
        head = f"GET {path} completed"
        probe = dict(self._template)
        probe.update(
            ts=time.time(),
            seq=self._base + 123456,
            path=path,
            latency_ms=12.5,
            trace_id=f"{self._base + 123456:016x}",
            msg=head,
            created_ns=clock_ns(),
            scheduled_ns=clock_ns(),
        )
        room = self.event_bytes - len(json.dumps(probe))
        if room <= 0:
            # A target smaller than a bare record: keep the record intact
            # rather than produce something that is not a log line.
            return head
        filler = (" " + _FILLER * (room // len(_FILLER) + 2))[:room]
        return head + filler

    def make(self, i: int, scheduled_ns: int | None = None) -> dict:
        """Event ``i``; ``scheduled_ns``: when it was due (default: now, closed loop)."""
        seq = self._base + i
        ev = self._template.copy()
        ev["ts"] = time.time()
        ev["seq"] = seq
        k = i % len(_PATHS)
        ev["path"] = _PATHS[k]
        ev["msg"] = self._msgs[k]
        ev["host"] = self._hosts[i & 3]
        ev["level"] = _LEVELS[i % len(_LEVELS)]
        ev["status"] = _STATUS[i % len(_STATUS)]
        ev["latency_ms"] = _LATENCIES[i % len(_LATENCIES)]
        ev["trace_id"] = f"{seq:016x}"
        now = clock_ns()
        ev["created_ns"] = now
        ev["scheduled_ns"] = now if scheduled_ns is None else scheduled_ns
        return ev

    def sample_json_size(self, n: int = 64) -> float:
        """Mean JSON size of ``n`` events: what ``event_bytes`` actually yields."""
        return sum(len(json.dumps(self.make(i))) for i in range(n)) / n


def split_seq(seq: int) -> tuple[int, int]:
    """``(producer, index)`` of a sequence number."""
    return divmod(seq, SEQ_STRIDE)
