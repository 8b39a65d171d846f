"""Fixtures for the report tests: synthetic result sets with known answers.

The generator lives in report_synth.py beside this file (pytest puts this
folder on sys.path because tests/report has no __init__.py).
"""

from __future__ import annotations

import pytest
from report_synth import write_result_set


@pytest.fixture(scope="session")
def standard_set(tmp_path_factory):
    """Linear turbo (batches 10/100/1000), USL mpq (N* ~ 6.9), batched mpq; 9 cores, 1..8 consumers."""
    # 9 cores: 1 producer + 8 consumers fit beside each other.
    return write_result_set(tmp_path_factory.mktemp("std"), consumers=(1, 2, 4, 6, 8), cores=9)


@pytest.fixture(scope="session")
def standard_report(standard_set, tmp_path_factory):
    """The report of ``standard_set`` built once (matplotlib is the slow part)."""
    from bench.presenting.report import build_report

    return build_report(standard_set, tmp_path_factory.mktemp("std-report"))
