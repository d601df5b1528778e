"""The market community of ``tests.market_setup``, reset between tests by snapshots."""

from __future__ import annotations

from tests.market_setup import env, market_chain  # noqa: F401  (fixtures)
