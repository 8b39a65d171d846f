"""turbo_queue: a fast, crash-safe multi-process queue made of SQLite batch files.

A queue is a folder.  Producers seal batches of items into SQLite files and
make them visible with an atomic rename; consumers claim a batch by renaming
it to a name only they own, and delete it when done.  Nothing is shared but
the file system, so processes never lock each other, and separate
applications share a queue by its path.  See the README for the protocol.
"""

from ._batch import FORMAT_VERSION, read_batch
from ._consumer import Consumer
from ._errors import BatchFormatError, BatchReadError, Closed, Empty, Full, TurboQueueError
from ._producer import Producer
from ._queue import Queue
from ._recovery import RecoveryReport

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "BatchFormatError",
    "BatchReadError",
    "Closed",
    "Consumer",
    "Empty",
    "Full",
    "Producer",
    "Queue",
    "RecoveryReport",
    "TurboQueueError",
    "__version__",
    "read_batch",
]
