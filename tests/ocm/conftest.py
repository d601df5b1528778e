"""Fixtures of the OCM tests."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(autouse=True)
def _seeded_python_random():
    """pandapower's Kerber networks draw line types from ``random``: make them reproducible."""
    random.seed(20240611)
