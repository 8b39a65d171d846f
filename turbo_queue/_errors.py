"""The exception hierarchy: one base, the names the standard ``queue`` module uses.

Every exception carries the path involved (the queue folder or the batch file),
and survives pickling, so a worker process can send it to its parent through a
``multiprocessing`` pipe unchanged (``BaseException.__reduce__`` re-calls the
constructor with ``self.args``, which is why ``args`` holds exactly the
constructor's arguments).
"""

from __future__ import annotations

import os
import queue

__all__ = ["BatchFormatError", "BatchReadError", "Closed", "Empty", "Full", "TurboQueueError"]


class TurboQueueError(Exception):
    """Base class of every error turbo_queue raises on purpose."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message, path)
        self.message = message
        #: The queue folder or batch file the error is about (a string), or None.
        self.path = os.fspath(path) if path is not None else None

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        return f"{self.message} [{self.path}]"


# Full and Empty are also the standard library's, so code written for
# queue.Queue or multiprocessing.Queue (``except queue.Empty``) works unchanged.
# TurboQueueError comes first in the bases: its __init__, __str__ and args
# (what pickling re-calls the constructor with) are the ones that apply.


class Full(TurboQueueError, queue.Full):
    """``put`` timed out (or ``block=False`` found no room) while ``max_ready`` sealed batches were waiting."""


class Empty(TurboQueueError, queue.Empty):
    """``get`` timed out (or ``block=False`` found nothing ready) with no sealed batch to claim."""


class Closed(TurboQueueError):
    """The queue was closed: no more puts; ``get`` raises it once drained."""


class BatchFormatError(TurboQueueError):
    """A file named like a batch is not a batch this version can read.

    Consumers never raise it at the caller: they set the file aside (renamed,
    never deleted) and log it.  :func:`turbo_queue.read_batch` raises it.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None,
                 reason: str = "unreadable") -> None:
        super().__init__(message, path)
        self.args = (message, path, reason)
        #: A short token used in the set-aside file name (``unreadable``, ``format-v9``...).
        self.reason = reason


class BatchReadError(TurboQueueError):
    """A consumer could not read a good batch for a reason local to it.

    Out of file descriptors, an I/O error, memory, or an item its serializer
    cannot load here (a module the producer had and this process lacks, a
    renamed class).  The batch is back in ready at its place in line (unless
    it reached ``max_deliveries``: then the message says it is dead); ``path``
    names it and ``__cause__`` is the original exception.  The consumer stays
    usable.
    """
