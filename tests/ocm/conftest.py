"""Fixtures of the OCM tests."""

from __future__ import annotations

import random
import warnings

import pytest


@pytest.fixture(autouse=True)
def _seeded_python_random():
    """pandapower's Kerber networks draw line types from ``random``: make them reproducible."""
    random.seed(20240611)


@pytest.fixture
def quiet_warnings():
    """pandapower's own warnings (deprecations, numba) off; used by the modules that drive it
    (``pytestmark = pytest.mark.usefixtures("quiet_warnings")``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
