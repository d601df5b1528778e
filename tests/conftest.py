"""Fixtures shared by every test suite."""

from __future__ import annotations

import pytest

from contracts.build import build_contracts


@pytest.fixture(scope="session")
def artifacts():
    """The compiled contracts (cached build)."""
    return build_contracts().artifacts
