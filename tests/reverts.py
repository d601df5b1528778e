"""Assertions for chain tests."""

from __future__ import annotations

import pytest

from contracts.client import ContractRevert


def expect_revert(error: str, action, **expected_args) -> ContractRevert:
    """Run ``action`` and check it reverts with custom error ``error`` (and arguments)."""
    with pytest.raises(ContractRevert) as caught:
        action()
    assert caught.value.error == error, str(caught.value)
    for key, value in expected_args.items():
        assert caught.value.args_by_name[key] == value, str(caught.value)
    return caught.value
