"""Looking at batches without touching them: what ``python -m turbo_queue peek`` shows.

The batch files are what users troubleshoot with (a dead batch, a set-aside
file, a batch that keeps failing).  Everything here only reads: no rename,
no claim, no delivery counted.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from typing import Any

from . import _naming as naming
from ._batch import array_from, decode_batch, read_file
from ._errors import BatchFormatError
from ._folder import Folder
from ._serializers import get_serializer

__all__ = ["STATES", "find_batch", "peek_batch"]

STATES = ("ready", "claimed", "loading", "dead", "aside")


def _listing(folder: Folder, state: str) -> list[str]:
    """Names (relative to the queue folder) of the batches in ``state``, oldest first."""
    if state == "dead":
        return [os.path.join(naming.DEAD_DIR, n) for n in folder.list_dead()]
    if state == "aside":
        return [os.path.join(naming.ASIDE_DIR, n) for n in folder.list_aside()]
    scan = folder.scan()
    names = {"ready": scan.ready, "claimed": scan.claimed, "loading": scan.loading}[state]
    if state == "claimed":
        # Oldest first by the ready name they embed.
        return sorted(names, key=lambda n: (naming.parse_claimed_name(n) or naming.ClaimedName(None, n)).ready_name)
    return sorted(names)


def find_batch(folder: Folder, name: str | None, state: str | None) -> tuple[str, str] | None:
    """(state, name relative to the folder) of ``name``, or of the oldest batch in ``state``."""
    states = (state,) if state else STATES
    if name is None:
        for s in states if state else ("ready",):
            names = _listing(folder, s)
            if names:
                return s, names[0]
        return None
    base = os.path.basename(name)
    for s in states:
        for candidate in _listing(folder, s):
            if os.path.basename(candidate) == base:
                return s, candidate
    return None


def _fields(state: str, name: str) -> dict[str, Any]:
    base = os.path.basename(name)
    if state == "claimed":
        claimed = naming.parse_claimed_name(base)
        parsed = naming.parse_batch_name(claimed.ready_name) if claimed else None
        holder = str(claimed.owner) if claimed else None
    elif state == "aside":
        parsed = None
        for end in range(len(base), 0, -1):  # <original name>.<reason>.<ns>
            if base[:end].endswith(naming.SUFFIX):
                parsed = naming.parse_batch_name(base[:end])
                break
        holder = None
    else:
        parsed = naming.parse_batch_name(base)
        holder = None
    if parsed is None:
        return {"claimed_by": holder} if holder else {}
    out: dict[str, Any] = {
        "sealed_at": datetime.fromtimestamp(parsed.seal_ns / 1e9, UTC).isoformat(),
        "seq": parsed.seq, "events": parsed.count, "deliveries": parsed.deliveries,
        "producer": str(parsed.owner),
    }
    if holder:
        out["claimed_by"] = holder
    return out


def _may_unpickle(path: str) -> bool:
    """The rule a Queue applies: pickle only from a folder no other user can write."""
    st = os.stat(path)
    foreign = hasattr(os, "geteuid") and st.st_uid not in (os.geteuid(), 0)
    return not (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or foreign)


def peek_batch(folder: Folder, state: str, name: str, limit: int | None, serializer: str | None) -> dict[str, Any]:
    """Metadata and up to ``limit`` items of one batch file, read and never changed."""
    path = folder.join(name)
    info: dict[str, Any] = {"path": path, "state": state, "name": os.path.basename(name)}
    info.update(_fields(state, name))
    if state == "dead":
        info["last_error"] = (folder.last_error(os.path.basename(name)) or "").strip() or None
    try:
        info["bytes"] = os.lstat(path).st_size
        meta, records = decode_batch(read_file(path), path)
    except BatchFormatError as exc:
        info["error"] = f"not a readable batch: {exc.message}"
        return info
    except OSError as exc:
        info["error"] = f"cannot read: {exc}"
        return info
    info["meta"] = {k: meta[k] for k in sorted(meta)}
    written = meta.get("serializer")
    name_to_use = serializer or written
    if name_to_use == "pickle" and serializer is None and not _may_unpickle(folder.path):
        info["error"] = ("items not shown: the folder is writable by other users and loading a pickle runs "
                         "code; pass --serializer pickle to load them anyway")
        return info
    try:
        ser = get_serializer(name_to_use)
    except (ValueError, TypeError) as exc:
        info["error"] = f"items not shown: {exc}"
        return info
    items: list[dict[str, Any]] = []
    info["items"] = items
    for many, lengths, data in records:
        if limit is not None and len(items) >= limit:
            break
        if many:
            try:
                loaded = ser.loads_many(data)
            except Exception as exc:  # the very thing peek exists to show
                items.append({"error": f"{type(exc).__name__}: {exc}"})
                continue
            for item in loaded:
                if limit is not None and len(items) >= limit:
                    break
                items.append({"item": item})
            continue
        offset = 0
        for n in array_from(lengths):
            if limit is not None and len(items) >= limit:
                break
            raw = data[offset:offset + n]
            offset += n
            try:
                items.append({"item": ser.loads(raw)})
            except Exception as exc:
                items.append({"error": f"{type(exc).__name__}: {exc}", "bytes": raw[:64].hex()})
    return info


def format_peek(info: dict[str, Any]) -> str:
    lines = [f"{k:<12}{info[k]}" for k in ("path", "state", "sealed_at", "seq", "events", "deliveries",
                                            "producer", "claimed_by", "bytes") if k in info]
    if "meta" in info:
        lines.append("meta        " + ", ".join(f"{k}={v}" for k, v in info["meta"].items()))
    if info.get("last_error"):
        lines.append(f"last error  {info['last_error']}")
    if info.get("error"):
        lines.append(f"error       {info['error']}")
    for k, entry in enumerate(info.get("items", [])):
        lines.append(f"[{k}] " + (repr(entry["item"]) if "item" in entry else f"<cannot load: {entry['error']}>"))
    return "\n".join(lines)
