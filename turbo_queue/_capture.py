"""When a producer serializes what ``put`` gives it, and what happens to an item it cannot encode.

``Queue(..., capture="seal")`` (the default) keeps the objects and encodes
each run of single puts with one ``dumps_many`` call when the batch is
sealed; ``capture="put"`` encodes each item in its ``put``.  A list
serialized in one call shares repeated keys and strings between its items
(the pickle memo), about half the bytes and CPU of one call per item, as in
``multiprocessing.Queue`` fed lists; the price is that an object mutated
after ``put`` and before its seal is sent as it is at the seal, and an item
that cannot be encoded is found only then.  Such an item is dropped, the
rest of its run is kept (encoded one item at a time), and the producer
raises the TypeError that :func:`dropped_error` makes from the call that
sealed the batch.
"""

from __future__ import annotations

from array import array
from typing import Any

from ._batch import lengths_bytes

__all__ = ["CAPTURES", "dropped_error", "encode_error", "encode_runs", "first_unencodable"]

#: When a producer serializes what it was given (``Queue(..., capture=...)``).
CAPTURES = ("seal", "put")

Record = tuple[Any, Any, Any]


def encode_runs(records: list[Record], dumps_many, dumps) -> tuple[list[Record], list[tuple[int, Any, BaseException]]]:
    """The batch's records with every run of objects encoded; and (index in batch, item, error) of each dropped item.

    A run of objects is ``(None, index of its first item in the batch,
    objects)``; encoded records, ``(many, lengths, data)``, pass through.
    ``MemoryError`` propagates (nothing is dropped for want of memory: the
    producer keeps its items buffered).
    """
    if not any(record[0] is None for record in records):
        return records, []
    out: list[Record] = []
    bad: list[tuple[int, Any, BaseException]] = []
    for record in records:
        if record[0] is not None:
            out.append(record)
            continue
        _, start, objs = record
        try:
            out.append((1, None, dumps_many(objs)))
            continue
        except MemoryError:
            raise
        except Exception:
            pass
        # Rare path: find which items cannot be encoded, keep the others as
        # single items (one more list call could fail the same way).
        encoded = []
        for i, obj in enumerate(objs):
            try:
                encoded.append(dumps(obj))
            except MemoryError:
                raise
            except Exception as exc:
                bad.append((start + i, obj, exc))
        if encoded:
            out.append((0, lengths_bytes(array("Q", map(len, encoded))), b"".join(encoded)))
    return out, bad


def dropped_error(bad: list[tuple[int, Any, BaseException]], batch_position: int, kept: int,
                  serializer: str) -> TypeError:
    """The TypeError for items dropped at a seal: the first one's type and position, how many.

    ``batch_position``: how many items the producer accepted before this
    batch, so that ``exc.position`` counts over all of them.
    """
    index, obj, exc = bad[0]
    position = batch_position + index
    more = (f"; {len(bad) - 1} more item{'s' if len(bad) > 2 else ''} of the batch could not be encoded either"
            if len(bad) > 1 else "")
    error = TypeError(
        f"cannot encode item {index} of its batch (item {position} put to this producer, counting from 0), "
        f"of type {type(obj).__name__}, with the {serializer} serializer: {exc}; it was "
        f"dropped at seal and the batch's {kept} other item{'' if kept == 1 else 's'} sealed{more}")
    error.__cause__ = exc
    error.position = position
    error.dropped = len(bad)
    error.queued = 0
    return error


def encode_error(item: Any, serializer: str, exc: BaseException) -> TypeError:
    """The TypeError of an item refused at the call (``capture="put"``, ``put_many``)."""
    return TypeError(f"cannot encode item of type {type(item).__name__} with the {serializer} "
                     f"serializer: {exc}")


def first_unencodable(items: list[Any], dumps) -> Any:
    for item in items:
        try:
            dumps(item)
        except Exception:
            return item
    return items
