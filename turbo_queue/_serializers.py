"""Serializers: how items become the bytes stored in a batch.

``pickle`` (the default) carries any picklable object, like
``multiprocessing.Queue``.  **Loading a pickle runs code chosen by whoever
wrote it**: anyone who can write into the queue folder can make consumers
execute code.  ``json`` and ``raw`` are the safe choice for folders shared
between users.  Any object with ``dumps(obj) -> bytes`` and
``loads(bytes) -> obj`` may be passed as a serializer too.

Serializers with ``many`` (pickle, json) encode a list in one call
(``dumps_many``), which shares repeated keys and strings between its items:
about half the bytes and twice as fast to load.  With ``Queue(...,
capture="seal")``, the default, a producer keeps what ``put`` gives it and
encodes each run of items with one such call at seal; with
``capture="put"``, and for serializers without ``many``, each item is
encoded by its ``put``.  ``put_many`` encodes its chunk at the call (see
"Where the CPU of an event goes" in the README).
"""

from __future__ import annotations

import functools
import json
import pickle
from typing import Any, Protocol

__all__ = ["Serializer", "get_serializer"]


class Serializer(Protocol):
    name: str
    #: Whether ``dumps_many``/``loads_many`` encode a list of items as one record.
    many: bool

    def dumps(self, obj: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    name = "pickle"
    many = True

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol
        # A C-level partial, not a Python method: put() calls it per item.
        self.dumps = self.dumps_many = functools.partial(pickle.dumps, protocol=protocol)

    loads = staticmethod(pickle.loads)
    loads_many = staticmethod(pickle.loads)


class JsonSerializer:
    name = "json"
    many = True

    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True)

    def dumps(self, obj: Any) -> bytes:
        return self._encoder.encode(obj).encode("utf-8")

    loads = staticmethod(json.loads)
    dumps_many = dumps
    loads_many = staticmethod(json.loads)


class RawSerializer:
    """``bytes`` and ``str`` stored as they are; one tag byte keeps the type."""

    name = "raw"
    many = False

    def dumps(self, obj: Any) -> bytes:
        t = type(obj)
        if t is bytes:
            return b"b" + obj
        if t is str:
            return b"s" + obj.encode("utf-8", "surrogatepass")
        if isinstance(obj, (bytearray, memoryview)):
            return b"b" + bytes(obj)
        raise TypeError(f"the raw serializer takes bytes or str, not {t.__name__}")

    def loads(self, data: bytes) -> Any:
        tag, body = data[:1], data[1:]
        if tag == b"b":
            return bytes(body)
        if tag == b"s":
            return bytes(body).decode("utf-8", "surrogatepass")
        raise ValueError(f"not a raw record (tag {tag!r})")


class CustomSerializer:
    """Wraps a user object with ``dumps``/``loads``; items are stored one by one."""

    many = False

    def __init__(self, obj: Any) -> None:
        self._obj = obj
        self.name = getattr(obj, "__name__", None) or type(obj).__name__
        self.loads = obj.loads
        user_dumps, name = obj.dumps, self.name

        def dumps(item: Any) -> bytes:
            # Checked here, at put: a str would otherwise break the seal of
            # the whole batch later, and every later seal of that producer.
            data = user_dumps(item)
            if type(data) is not bytes:
                if not isinstance(data, (bytearray, memoryview)):
                    raise TypeError(f"{name}.dumps() returned {type(data).__name__}, not bytes")
                data = bytes(data)
            return data

        self.dumps = dumps

    def __reduce__(self):  # picklable when the wrapped object is (modules are not: see Queue)
        return (CustomSerializer, (self._obj,))


_BUILTIN = {"pickle": PickleSerializer, "json": JsonSerializer, "raw": RawSerializer}


def get_serializer(spec: Any) -> Serializer:
    """Resolve the ``serializer`` argument: a name or an object with dumps/loads."""
    if isinstance(spec, str):
        try:
            return _BUILTIN[spec]()
        except KeyError:
            known = ", ".join(sorted(_BUILTIN))
            raise ValueError(
                f"serializer: unknown serializer {spec!r}; use one of {known}, "
                "or an object with dumps() and loads()"
            ) from None
    if callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None)):
        return CustomSerializer(spec)
    raise ValueError(
        f"serializer: expected a name or an object with dumps() and loads(), got {type(spec).__name__}"
    )
