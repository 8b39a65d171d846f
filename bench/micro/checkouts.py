"""Two checkouts measured side by side: each child runs one checkout's code alone, pairs alternate.

Shared by the paired micro-benchmarks (:mod:`.batch_pairs`, :mod:`.handoff_pairs`),
which hold an older checkout against a newer one on a machine whose speed
swings from second to second: each pair runs both, seconds apart, the order
flipped from one pair to the next so that neither always runs first.
"""

from __future__ import annotations

import os
import subprocess
import sys


def pair_order(pair: int) -> tuple[str, str]:
    """The order of the checkouts in pair ``pair`` (from 0): old first, then new first, and so on."""
    return ("old", "new") if pair % 2 == 0 else ("new", "old")


def run_in(tree: str, code: str, *args: object, timeout: float = 300) -> str:
    """Run ``code`` (``python -c``) with ``tree``'s ``turbo_queue`` and ``bench``; its standard output.

    The child runs from the folder above ``tree``, not from this checkout's,
    so that ``tree`` (on ``PYTHONPATH``) is where its packages come from.
    A child that fails raises :class:`subprocess.CalledProcessError`.
    """
    env = dict(os.environ, PYTHONPATH=tree)
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, cwd=os.path.dirname(tree),
                          capture_output=True, text=True, check=True, timeout=timeout)
    return done.stdout
