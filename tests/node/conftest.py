"""The node's tests reuse the gateway's running stack (embedded chain, broker, community)."""

from __future__ import annotations

from tests.gateway.conftest import broker, stack, topic_community  # noqa: F401  (fixtures)
