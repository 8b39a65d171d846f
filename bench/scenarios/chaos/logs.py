"""The chaos run's worker logs: what each producer sealed and each consumer handled, and their parsers."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

# Producer items: "<producer tag>:<n>:<pad>", the pad derived from n so that a
# consumer can tell an intact item from a damaged one.
_PAD = "abcdefghijklmnopqrstuvwxyz\u00e9\u65e5\U0001f389" * 2


def item_text(tag: str, n: int) -> str:
    return f"{tag}:{n}:{_PAD[:n % 31]}"


# -- worker logs ----------------------------------------------------------------


class WorkerLog:
    """Append-only, one record per line, one write per record (survives SIGKILL of the writer)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __call__(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


@dataclass
class ProducerLog:
    intent: int = 0  # W: every id it put is below this
    sealed: int = 0  # S: ids below this are sealed (in ready batches)
    clean: bool = False  # E: closed cleanly (everything it put is sealed)
    failures: list[str] = field(default_factory=list)


@dataclass
class ConsumerLog:
    received: dict[int, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)  # bid -> runs
    acked: set[int] = field(default_factory=set)
    acking: set[int] = field(default_factory=set)  # "a": an ack was about to happen
    released: set[int] = field(default_factory=set)  # "N": the handler raised; the batch goes back unacked
    recovered: Counter = field(default_factory=Counter)  # returned / sealed / set_aside
    bad_items: list[str] = field(default_factory=list)
    clean: bool = False
    failures: list[str] = field(default_factory=list)


def _complete_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return lines[:-1]  # the last piece is "" or a line torn by a kill: ignored


def parse_producer_log(text: str) -> ProducerLog:
    log = ProducerLog()
    for line in _complete_lines(text):
        kind, _, rest = line.partition(" ")
        if kind == "W":
            log.intent = max(log.intent, int(rest))
        elif kind == "S":
            log.sealed = max(log.sealed, int(rest))
        elif kind == "E":
            log.clean = True
        elif kind == "F":
            log.failures.append(rest)
    return log


def _parse_runs(text: str) -> tuple[tuple[str, int, int], ...]:
    runs = []
    for part in text.split(","):
        tag, _, span = part.partition(":")
        a, _, b = span.partition("-")
        runs.append((tag, int(a), int(b)))
    return tuple(runs)


def parse_consumer_log(text: str) -> ConsumerLog:
    log = ConsumerLog()
    for line in _complete_lines(text):
        kind, _, rest = line.partition(" ")
        if kind == "R":
            bid, _, runs = rest.partition(" ")
            log.received[int(bid)] = _parse_runs(runs)
        elif kind == "A":
            log.acked.add(int(rest))
        elif kind == "a":
            log.acking.add(int(rest))
        elif kind == "N":
            log.released.add(int(rest))
        elif kind == "V":
            returned, sealed, aside = (int(x) for x in rest.split())
            log.recovered.update(returned=returned, sealed=sealed, set_aside=aside)
        elif kind == "X":
            log.bad_items.append(rest)
        elif kind == "E":
            log.clean = True
        elif kind == "F":
            log.failures.append(rest)
    return log


def runs_of(items: list, bad: list[str]) -> str:
    """Compress a batch's items into runs "tag:a-b" (b exclusive), checking each item."""
    runs: list[list] = []
    for item in items:
        try:
            tag, n_text, pad = item.split(":", 2)
            n = int(n_text)
            if pad != _PAD[:n % 31]:
                raise ValueError("damaged pad")
        except (AttributeError, ValueError):
            bad.append(repr(item)[:80])
            continue
        if runs and runs[-1][0] == tag and runs[-1][2] == n:
            runs[-1][2] = n + 1
        else:
            runs.append([tag, n, n + 1])
    return ",".join(f"{t}:{a}-{b}" for t, a, b in runs)


