"""Queues under test, by name.  See base.py for the contract.

List them and whether each is usable here with::

    python -m bench backends

Adding a backend: one module here with a :class:`~bench.measuring.backends.base.Backend`
subclass, and one line in ``BACKENDS`` below.
"""

from __future__ import annotations

from bench.measuring.backends.base import Backend, BackendSettings, Consumer, ListProducer, Producer
from bench.measuring.backends.fasterfifo import FasterFifoBackend
from bench.measuring.backends.mpq import MPQueueBackend
from bench.measuring.backends.mpq_batch import MPQueueBatchBackend
from bench.measuring.backends.turbo import TurboBackend
from bench.measuring.backends.turbo_many import TurboManyBackend

#: name -> Backend class, in the order reports list them.
BACKENDS: dict[str, type[Backend]] = {
    TurboBackend.name: TurboBackend,
    TurboManyBackend.name: TurboManyBackend,
    MPQueueBackend.name: MPQueueBackend,
    MPQueueBatchBackend.name: MPQueueBatchBackend,
    FasterFifoBackend.name: FasterFifoBackend,
}


class UnknownBackend(ValueError):
    pass


def get_backend(name: str) -> type[Backend]:
    """The backend class called ``name``; the error lists the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnknownBackend(
            f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}"
        ) from None


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSettings",
    "Consumer",
    "ListProducer",
    "Producer",
    "UnknownBackend",
    "get_backend",
]
