"""Command line: ``python -m turbo_queue status|watch|recover|requeue|peek PATH``.

``status`` prints batches and events per state; ``watch`` refreshes that view
until interrupted; ``recover`` returns batches of dead owners to ready and
sets unreadable files aside, then says what it did; ``requeue`` returns dead
batches to ready with their delivery count reset; ``peek`` shows a batch's
metadata and items (and a dead batch's last error) without changing
anything.  None of them creates a missing queue folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ._folder import Folder
from ._inspect import STATES, find_batch, format_peek, peek_batch
from ._lease import DEFAULT_LEASE_TIMEOUT
from ._queue import folder_stats
from ._recovery import recover


def _format(stats: dict) -> str:
    age = stats["oldest_ready_age_s"]
    lines = [
        f"queue   {stats['path']}{'  (closed)' if stats['closed'] else ''}",
        f"{'state':<9}{'batches':>10}{'events':>14}",
    ]
    for state in ("loading", "ready", "claimed"):
        lines.append(f"{state:<9}{stats[state]['batches']:>10}{stats[state]['events']:>14}")
    lines.append(f"{'dead':<9}{stats['dead']['batches']:>10}{stats['dead']['events']:>14}")
    lines.append(f"aside    {stats['aside']:>10}")
    lines.append(f"oldest ready batch: {'-' if age is None else f'{age:.3f} s old'}")
    if stats["other_files"]:
        lines.append(f"other files (not turbo_queue's, left alone): {stats['other_files']}")
    return "\n".join(lines)


def _existing(path: str) -> str:
    if not os.path.isdir(path):
        raise SystemExit(f"turbo_queue: no queue folder at {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m turbo_queue", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="batches and events per state")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the stats as JSON")
    p = sub.add_parser("watch", help="refresh the status view until Ctrl-C")
    p.add_argument("path")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--count", type=int, default=None, help="stop after this many refreshes")
    p = sub.add_parser("recover", help="return batches of dead owners to ready")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--lease-timeout", type=float, default=DEFAULT_LEASE_TIMEOUT, metavar="S",
                   help="recover files of owners that cannot be checked from here (other hosts, "
                        f"containers) once unrenewed for S seconds (default {DEFAULT_LEASE_TIMEOUT:g})")
    p = sub.add_parser("requeue", help="return dead batches to ready, delivery count reset")
    p.add_argument("path")
    p = sub.add_parser("peek", help="show a batch's metadata and items without changing anything")
    p.add_argument("path")
    p.add_argument("name", nargs="?", help="the batch's file name (default: the oldest batch of --state)")
    p.add_argument("--state", choices=STATES, help="where to look (default: ready; with NAME, everywhere)")
    p.add_argument("-n", type=int, default=10, help="items to show (default 10; 0: none, -1: all)")
    p.add_argument("--serializer", help="load items with this serializer (default: the one the file names; "
                   "pickle only from a folder no other user can write)")
    p.add_argument("--json", action="store_true", help="print as JSON (items that JSON cannot hold as repr)")
    args = parser.parse_args(argv)
    path = _existing(os.path.abspath(args.path))

    if args.command == "status":
        stats = folder_stats(path)
        print(json.dumps(stats, indent=2) if args.json else _format(stats))
    elif args.command == "watch":
        if args.interval <= 0:
            parser.error("--interval: must be positive")
        n = 0
        try:
            while args.count is None or n < args.count:
                text = _format(folder_stats(path))
                if sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")
                print(text + f"\n(every {args.interval:g} s, Ctrl-C to stop)", flush=True)
                n += 1
                if args.count is None or n < args.count:
                    time.sleep(args.interval)
        except KeyboardInterrupt:
            pass
    elif args.command == "recover":
        if not args.lease_timeout > 0:
            parser.error("--lease-timeout: must be positive")
        report = recover(path, lease_timeout=args.lease_timeout)
        print(json.dumps(report.as_dict(), indent=2) if args.json else str(report))
    elif args.command == "requeue":
        n = Folder(path).requeue_dead()
        print(f"{path}: returned {n} dead batch(es) to ready")
    else:
        folder = Folder(path)
        found = find_batch(folder, args.name, args.state)
        if found is None:
            what = args.name or f"no {args.state or 'ready'} batch"
            print(f"turbo_queue: {what} not found in {path}", file=sys.stderr)
            return 1
        limit = None if args.n < 0 else args.n
        info = peek_batch(folder, found[0], found[1], limit, args.serializer)
        print(json.dumps(info, indent=2, default=repr) if args.json else format_peek(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
