"""``python -m bench.scenarios.chaos``: see :mod:`bench.scenarios.chaos`."""

import sys

from bench.scenarios.chaos.run import main

sys.exit(main())
