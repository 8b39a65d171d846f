"""``--pin``: each process of a cell on a core of its own, where there are enough.

Reproduce a pinned cell with::

    python -m bench sweep --backends turbo --producers 1 --consumers 1 --pin --repeat 1

Unpinned, the scheduler moves processes between cores and lets two of them
share one while another idles; on a many-core machine that is noise in
every figure, and it hides what a queue costs from what the scheduler did.
Pinned, producers and consumers each get a core of their own (from the
cores this process may use, see bench.measuring.machine.affinity), set by
``os.sched_setaffinity`` in the child before it reports ready; the parent,
which mostly sleeps, moves to a core none of them uses when one is left.

Where the usable cores (affinity, cut down by a cgroup quota) are fewer
than the cell's producers and consumers, nothing is pinned: the row
records ``pinned = False`` and the sweep says why.  Only a child that
confirmed its affinity counts as pinned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bench.measuring import machine


@dataclass(frozen=True)
class PinPlan:
    """Which core each child gets; empty when the cell runs unpinned (``reason`` says why)."""

    #: (role, index) -> core.
    children: dict[tuple[str, int], int] = field(default_factory=dict)
    #: Cores left for the parent; empty when every usable core went to a child.
    parent: tuple[int, ...] = ()
    reason: str = ""

    @property
    def pinned(self) -> bool:
        return bool(self.children)

    def core_of(self, role: str, index: int) -> int | None:
        return self.children.get((role, index))


def plan(producers: int, consumers: int, cores: list[int] | None = None,
         usable: int | None = None) -> PinPlan:
    """The pinning of a cell with ``producers`` and ``consumers`` on ``cores``.

    ``cores`` defaults to this process's affinity and ``usable`` to
    :func:`bench.measuring.machine.usable_cores` (a cgroup quota can allow
    fewer cores than the affinity lists).  Consumers take the first cores,
    producers the next ones, the parent what is left.
    """
    cores = sorted(machine.affinity() if cores is None else cores)
    usable = machine.usable_cores() if usable is None else usable
    need = producers + consumers
    have = min(len(cores), usable)
    if need > have:
        return PinPlan(reason=f"not pinned: {need} producers and consumers, "
                              f"{have} usable cores ({len(cores)} in the affinity)")
    roles = [("consumer", i) for i in range(consumers)] + [("producer", i) for i in range(producers)]
    children = dict(zip(roles, cores))
    return PinPlan(children=children, parent=tuple(cores[need:have]))


def pin_self(core: int) -> bool:
    """Pin the calling process to ``core``; True when the kernel confirms it."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {core})
        return os.sched_getaffinity(0) == {core}
    except OSError:
        return False


class ParentPinned:
    """Move the parent to ``cores`` for the length of a ``with`` block (nothing if empty)."""

    def __init__(self, cores: tuple[int, ...]):
        self._cores = set(cores)
        self._saved: set[int] | None = None

    def __enter__(self) -> ParentPinned:
        if self._cores and hasattr(os, "sched_setaffinity"):
            try:
                self._saved = os.sched_getaffinity(0)
                os.sched_setaffinity(0, self._cores)
            except OSError:
                self._saved = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            try:
                os.sched_setaffinity(0, self._saved)
            except OSError:
                pass
