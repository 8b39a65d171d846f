"""turbo (one ``put`` per event) against each peer backend, cell by cell, from side-by-side repeats.

The recommendation compares backends only where it can recommend; this is
the plain table behind "where a peer wins": for every closed-loop cell of a
scenario (consumer count, batch size) that turbo and a peer both measured,
turbo's events/s over the peer's, paired by repeat (repeat ``r`` of both
ran in the same interleaved round, so a pair saw the same machine), given
as median (min-max) over the pairs.

Which repeats count (``basis``):

* **queue**: both repeats usable (ok, valid, nothing flagged, not
  producer-bound): the consumers or the queue set the rate, so the ratio
  compares the queues;
* **put path**: both repeats pass every check but are producer-bound
  (the producers at full CPU set the rate): the ratio compares what one
  producer's ``put`` path carries, per producer, which is what a producer
  costs per event.  These rows are kept out of fits and recommendations
  (they do not measure the queue's consumers) but they are valid evidence
  about the producer side;
* **mixed**: one of each, with the same producer count: the same
  configuration's events/s, where one side's producers were the limit and
  the other's were not (so the producer-bound side could go faster with
  more producers: its ratio is a bound, not a tie);
* a pair with a flagged or invalid repeat counts for nothing, nor does a
  mixed pair with different producer counts: the row then says how many
  repeats were left out and the first reason.

Verdicts need :data:`MIN_PAIRS` pairs: ``turbo ahead`` (every paired ratio
above 1), ``peer ahead`` (every one below 1), else ``cannot decide``; and,
apart from who is ahead, ``within 10%`` says whether every pair is at or
above ``1 - WITHIN`` (yes), every pair below it (no), or the pairs straddle
it (undecided).  An "ahead" verdict carries its ``chance``: how likely all
of its n pairs fall on that side when turbo and the peer are alike and the
machine's noise alone orders each pair (a sign test, 0.5 ** n: 1 in 4 at 2
pairs, 1 in 8 at 3).  It says nothing of how far apart the pairs are: a
ratio of 3 in every pair is more than its odds alone show, one of 1.02 less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from bench.analysing.auto import Ratio
from bench.analysing.axes import SCENARIO_KEYS, batch_rank, is_auto, select
from bench.analysing.loading import ok_runs
from bench.schema import LOAD_CLOSED

TURBO = "turbo"
MIN_PAIRS = 2
#: "within 10%": turbo at or above this share of the peer's events/s.
WITHIN = 0.10
QUEUE, PUT_PATH, MIXED = "queue", "put path", "mixed"
TURBO_AHEAD, PEER_AHEAD, UNDECIDED = "turbo ahead", "peer ahead", "cannot decide"


@dataclass
class PeerComparison:
    """turbo against one peer in one cell (consumer count, batch size) of a scenario."""

    consumers: int
    batch_size: object
    peer: str
    peer_batch: object
    basis: str  # QUEUE, PUT_PATH, MIXED, several " and "-joined, or "" (no pair)
    ratio: Ratio
    turbo_eps: float
    peer_eps: float
    turbo_producers: str
    peer_producers: str
    pairs: int
    left_out: int
    left_out_reason: str
    verdict: str
    within: str  # "yes", "no", "undecided", "" (no verdict)
    #: An "ahead" verdict: the chance of every pair on its side when the two are alike (0.5 ** pairs); else NaN.
    chance: float = math.nan

    def sentence(self) -> str:
        if not self.pairs:
            return (f"no valid pair of repeats ({self.left_out} left out"
                    + (f": {self.left_out_reason}" if self.left_out_reason else "") + ")")
        said = f"{self.verdict}; within {WITHIN:.0%}: {self.within}" if self.within else self.verdict
        if self.left_out:
            said += (f" ({self.left_out} pair{'s' if self.left_out > 1 else ''} left out"
                     + (f"; first: {self.left_out_reason}" if self.left_out_reason else "") + ")")
        return said


def _kind(row) -> str:
    """QUEUE, PUT_PATH or "" (left out) for one ok repeat.

    PUT_PATH: producer-bound and nothing else against it, neither the
    harness's verdict nor the reader's own flags (bench.analysing.loading.check_validity).
    """
    if bool(row["usable"]):
        return QUEUE
    harness_valid = row["valid"] is not False and row["valid"] != False  # noqa: E712 - True or NaN (v1)
    if bool(row["producer_bound"]) and harness_valid and not str(row.get("check_flags") or ""):
        return PUT_PATH
    return ""


def _per_producer(eps: float, producers) -> float:
    try:
        n = float(producers)
    except (TypeError, ValueError):
        return math.nan
    return eps / n if n > 0 else math.nan


def compare_peers(runs: pd.DataFrame, scenario: dict) -> list[PeerComparison]:
    """One comparison per (consumers, batch size, peer) where turbo and the peer both ran closed-loop cells."""
    keys = {k: scenario[k] for k in SCENARIO_KEYS}
    sc = ok_runs(select(runs, **keys))
    sc = sc[sc["load"] == LOAD_CLOSED]
    turbo = sc[sc["backend"] == TURBO]
    if turbo.empty:
        return []
    out = []
    for peer, pg in sc[sc["backend"] != TURBO].groupby("backend", sort=True):
        peer_sizes = [s for s in pg["batch_size"].dropna().unique()]
        batched = len(peer_sizes) > 1 or any(is_auto(s) or s > 1 for s in peer_sizes)
        for (n, bs), tg in turbo.groupby(["consumers", "batch_size"], sort=False):
            if is_auto(bs):
                continue  # auto has its own section (bench.analysing.auto)
            # An unbatched peer (multiprocessing.Queue, one item per put) is
            # held against every turbo batch size at its only one.
            og = pg[(pg["consumers"] == n) & ((pg["batch_size"] == bs) if batched else True)]
            if og.empty:
                continue
            out.append(_compare(int(n), bs, str(peer), og["batch_size"].iloc[0], tg, og))
    out.sort(key=lambda c: (c.peer, c.consumers, batch_rank(c.batch_size)))
    return out


def _compare(n: int, bs, peer: str, peer_bs, turbo: pd.DataFrame, other: pd.DataFrame) -> PeerComparison:
    t = {int(r["repeat"]): r for _, r in turbo.iterrows()}
    o = {int(r["repeat"]): r for _, r in other.iterrows()}
    ratios, kinds, left, reasons = [], set(), 0, []
    t_eps, o_eps = [], []
    for rep in sorted(set(t) & set(o)):
        a, b = t[rep], o[rep]
        ka, kb = _kind(a), _kind(b)
        if not ka or not kb:
            left += 1
            for row, k in ((a, ka), (b, kb)):
                if not k:
                    reasons.append(f"{row['backend']} repeat {rep}: {row.get('exclude_reason') or 'flagged'}")
            continue
        same_producers = a["producers"] == b["producers"]
        if ka == kb == PUT_PATH:
            # Per producer: with auto producers the two may have been given different counts.
            x, y = _per_producer(a["events_per_s"], a["producers"]), _per_producer(b["events_per_s"], b["producers"])
        elif same_producers:
            x, y = float(a["events_per_s"]), float(b["events_per_s"])
        else:
            left += 1
            reasons.append(f"repeat {rep}: {a['producers']} vs {b['producers']} producers, and not both "
                           "producer-bound")
            continue
        kind = ka if ka == kb else MIXED
        if not (y > 0) or x != x:
            left += 1
            continue
        ratios.append(x / y)
        kinds.add(kind)
        t_eps.append(float(a["events_per_s"]))
        o_eps.append(float(b["events_per_s"]))
    ratio = Ratio.of(ratios)
    basis = " and ".join(sorted(kinds)) if kinds else ""
    verdict, within = "", ""
    if ratio.n >= MIN_PAIRS:
        verdict = TURBO_AHEAD if ratio.lo > 1 else PEER_AHEAD if ratio.hi < 1 else UNDECIDED
        floor = 1 - WITHIN
        within = "yes" if ratio.lo >= floor else "no" if ratio.hi < floor else "undecided"
    elif ratio.n == 1:
        verdict = f"{UNDECIDED} (1 pair; {MIN_PAIRS} needed)"

    def producers(df: pd.DataFrame) -> str:
        counts = sorted({int(p) for p in df["producers"].dropna()})
        return ",".join(map(str, counts)) or "?"

    return PeerComparison(
        consumers=n, batch_size=bs, peer=peer, peer_batch=peer_bs, basis=basis, ratio=ratio,
        turbo_eps=float(pd.Series(t_eps).median()) if t_eps else math.nan,
        peer_eps=float(pd.Series(o_eps).median()) if o_eps else math.nan,
        turbo_producers=producers(turbo), peer_producers=producers(other),
        pairs=ratio.n, left_out=left, left_out_reason=reasons[0] if reasons else "",
        verdict=verdict, within=within,
        chance=0.5 ** ratio.n if verdict in (TURBO_AHEAD, PEER_AHEAD) else math.nan,
    )
