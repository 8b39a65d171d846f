"""The chaos run's checker: from the logs alone, was any sealed item lost, damaged or stolen?"""

from __future__ import annotations

from collections import Counter, defaultdict

from bench.scenarios.chaos.logs import ConsumerLog, ProducerLog

# -- the checker -------------------------------------------------------------------


def check(producers: dict[str, ProducerLog], consumers: dict[str, ConsumerLog], killed: set[str]) -> dict:
    """Check the logs of a run; ``killed`` holds the tags of the workers that were SIGKILLed.

    Returns the figures; ``lost``, ``unattributed_duplicates``, ``phantom``
    and ``bad_items`` must all be 0 for a correct queue.
    """
    intervals: dict[str, list[tuple[int, int, bool, bool]]] = defaultdict(list)
    batch_deliveries: Counter = Counter()
    for ctag, clog in consumers.items():
        for bid, runs in clog.received.items():
            # Maybe not acked (the consumer was killed before its "A"): may be delivered again.
            # A batch whose handler raised was released unacked: the same.
            released = bid in clog.released
            attributable = (ctag in killed and bid not in clog.acked) or released
            # Surely not acked (killed before even its "a", or released): must be delivered again.
            unacked = (ctag in killed and bid not in clog.acked and bid not in clog.acking) or released
            batch_deliveries[runs] += 1
            for ptag, a, b in runs:
                intervals[ptag].append((a, b, attributable, unacked))
    fig = Counter()
    problems: list[str] = []
    for ptag in sorted(set(producers) | set(intervals)):
        plog = producers.get(ptag)
        if plog is None:
            n = sum(b - a for a, b, _, _ in intervals[ptag])
            fig["phantom"] += n
            problems.append(f"{n} event(s) delivered from unknown producer {ptag}")
            continue
        put_bound, sealed = plog.intent, plog.sealed
        if plog.clean:
            if sealed != put_bound:
                problems.append(f"producer {ptag} closed cleanly with ids {sealed}..{put_bound} unsealed")
            sealed = put_bound  # close() returned: everything it put is sealed
        elif ptag not in killed:
            problems.append(f"producer {ptag} ended without closing and was not killed")
        fig["put"] += put_bound
        fig["sealed"] += sealed
        # Sweep over the ids: d deliveries, u of them attributable, s of them surely unacked.
        deltas: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for a, b, attributable, unacked in intervals[ptag]:
            for point, sign in ((a, 1), (b, -1)):
                deltas[point][0] += sign
                deltas[point][1] += sign * attributable
                deltas[point][2] += sign * unacked
        points = sorted(set(deltas) | {0, sealed, put_bound})
        d = u = s = 0
        for x, y in zip(points, points[1:]):
            dd, du, ds = deltas.get(x, (0, 0, 0))
            d, u, s = d + dd, u + du, s + ds
            length = y - x
            if d and d == s and x < put_bound:
                # Only ever handed to consumers killed before acking, and never again.
                fig["lost"] += length
                fig["lost_unacked"] += length
                continue
            if x < 0 and d:
                fig["phantom"] += length * d
            elif d == 0:
                if y <= sealed:
                    fig["lost"] += length
                elif y <= put_bound:
                    fig["unsealed_at_kill"] += length
            else:
                fig["delivered"] += length
                if x >= put_bound:
                    fig["phantom"] += length
                elif x >= sealed:
                    fig["sealed_unlogged"] += length  # killed between the seal and its log line
                if d > 1:
                    fig["duplicates"] += (d - 1) * length
                    fig["unattributed_duplicates"] += max(0, d - 1 - u) * length
    fig["duplicate_batches"] = sum(n - 1 for n in batch_deliveries.values() if n > 1)
    fig["batches_delivered"] = sum(batch_deliveries.values())
    fig["bad_items"] = sum(len(c.bad_items) for c in consumers.values())
    if fig["lost"] - fig["lost_unacked"]:
        problems.append(f"{fig['lost'] - fig['lost_unacked']} sealed event(s) never delivered")
    if fig["lost_unacked"]:
        problems.append(f"{fig['lost_unacked']} event(s) delivered only to consumers killed before acking "
                        "them (or whose handler raised), and never delivered again")
    if fig["unattributed_duplicates"]:
        problems.append(f"{fig['unattributed_duplicates']} duplicate delivery(ies) not from a killed "
                        "consumer's unacked batch")
    if fig["phantom"]:
        problems.append(f"{fig['phantom']} delivered event(s) that were never put")
    if fig["bad_items"]:
        problems.append(f"{fig['bad_items']} damaged item(s)")
    for tag, log in [*producers.items(), *consumers.items()]:
        for failure in log.failures:
            problems.append(f"worker {tag} failed: {failure}")
    for ctag, clog in consumers.items():
        if not clog.clean and ctag not in killed:
            problems.append(f"consumer {ctag} ended without draining and was not killed")
    keys = ("put", "sealed", "delivered", "batches_delivered", "duplicates", "duplicate_batches",
            "unattributed_duplicates", "lost", "unsealed_at_kill", "sealed_unlogged", "phantom", "bad_items")
    result = {k: fig[k] for k in keys}
    result["problems"] = problems
    return result


