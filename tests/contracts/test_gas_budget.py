"""The gas budget of meter readings (issue 13): benchmarks/gas.py, run as a user runs it,
shows at most 10,000 gas per reading in batches of 100 averaged over a 15-minute slot.
Gas is deterministic, so this is a test, not a timing."""

from __future__ import annotations

import re
import subprocess
import sys

from contracts.paths import PROJECT_ROOT

BUDGET = 10_000


def test_a_reading_costs_at_most_10k_gas_averaged_over_a_slot():
    result = subprocess.run(
        [sys.executable, "benchmarks/gas.py"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = re.search(r"^\s+100\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)$", result.stdout, re.MULTILINE)
    assert row, result.stdout
    first, later, average = (int(value.replace(",", "")) for value in row.groups())
    assert later < first and average <= BUDGET, result.stdout
