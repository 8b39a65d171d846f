"""``python -m bench.scenarios.kafka``: see :mod:`bench.scenarios.kafka`."""

import sys

from bench.scenarios.kafka.cli import main

sys.exit(main())
