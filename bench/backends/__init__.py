"""Queues under test, by name.  See base.py for the contract.

List them and whether each is usable here with::

    python -m bench backends

Adding a backend: one module here with a :class:`~bench.backends.base.Backend`
subclass, and one line in ``BACKENDS`` below.
"""

from __future__ import annotations

from .base import Backend, BackendSettings, Consumer, ListProducer, Producer
from .fasterfifo import FasterFifoBackend
from .mpq import MPQueueBackend
from .mpq_batch import MPQueueBatchBackend
from .turbo import TurboBackend
from .turbo_many import TurboManyBackend

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
