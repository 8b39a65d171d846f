"""Entry point: ``python -m bench ...`` and the ``turbo-bench`` console script.

Reproduce the default benchmark (quick sweep + report) with::

    python -m bench run

See bench/cli.py for the subcommands and ``python -m bench --help``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from bench.cli import main as cli_main

    return cli_main(argv)


# The guard matters: under the spawn start method every child re-imports the
# parent's __main__ module, which must not start another sweep.
if __name__ == "__main__":
    sys.exit(main())
