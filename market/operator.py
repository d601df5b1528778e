"""The market operator's routine: let the agents trade each slot, close what gate closure
ended, settle what is final.

``tick(now)`` is idempotent and cheap when there is nothing to do; ``run`` calls it every
``interval`` seconds. Each slot is traded once by the agents (when it is the next slot
still open), expired once its gate has closed (continuous mode; in auction mode it is
cleared instead), and settled for every member once it is final.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from contracts.client import ChainError, Signer
from contracts.community import Community
from contracts.market import ClearingMode
from contracts.registry import Role
from market.agents import Agent, trading_round

log = logging.getLogger(__name__)

LOOKBACK_SLOTS = 8  # slots before the current one that are still closed and settled


class MarketOperator:
    """Drives one community's market: agents, gate closure, settlement."""

    def __init__(self, community: Community, operator: Signer, agents: Sequence[Agent] = ()):
        self.community = community
        self.operator = operator
        self.agents = list(agents)
        self._first_slot: int | None = None  # slots before the operator started are not its own
        self._traded: set[int] = set()
        self._closed: set[int] = set()
        self._settled: set[int] = set()

    def tick(self, now: float | None = None) -> dict[str, list[int]]:
        """One round at chain time ``now``; returns the slots traded, closed and settled."""
        now = self.community.client.latest_timestamp() if now is None else now
        current = self.community.clock.slot_of(now)
        done: dict[str, list[int]] = {"traded": [], "closed": [], "settled": []}
        next_open = self._next_open_slot(current, now)
        if self._first_slot is None:
            self._first_slot = next_open
        if self.agents and next_open not in self._traded:
            results = trading_round(self.agents, self.community, next_open)
            placed = sum(len(r.placed) for r in results.values())
            refused = sum(len(r.refused) for r in results.values())
            log.info("slot %d: agents placed %d orders (%d refused)", next_open, placed, refused)
            self._traded.add(next_open)
            done["traded"].append(next_open)
        for slot in range(max(self._first_slot, current - LOOKBACK_SLOTS), next_open):
            if slot not in self._closed and now >= self.community.market.gate_closure_time(slot):
                self._close(slot)
                self._closed.add(slot)
                done["closed"].append(slot)
            if slot not in self._settled and now >= self.community.settlement.final_time(slot):
                self._settle(slot)
                self._settled.add(slot)
                done["settled"].append(slot)
        return done

    def _next_open_slot(self, current: int, now: float) -> int:
        """The first slot from ``current`` on whose gate is still open at ``now`` (the gate
        may close more than a slot ahead of delivery)."""
        slot = current
        while now >= self.community.market.gate_closure_time(slot):
            slot += 1
        return slot

    def run(self, stop: threading.Event, interval: float = 15.0) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except ChainError as error:
                log.warning("market round failed: %s", error)
            except Exception:
                log.exception("market round failed")
            stop.wait(interval)

    def _close(self, slot: int) -> None:
        if self.community.market.clearing_mode() == ClearingMode.CALL_AUCTION:
            result = self.community.market.clear_auction(self.operator, slot)
            log.info("slot %d: auction cleared (%s)", slot, result)
            return
        while True:
            closed = self.community.market.expire_orders(self.operator, slot)
            if not closed:
                return
            log.info("slot %d: %d open orders expired at gate closure", slot, len(closed))

    def _settle(self, slot: int) -> None:
        members = [
            account
            for account in self.community.registry.members()
            if self.community.registry.has_role(Role.MEMBER, account)
        ]
        if not members:
            return
        started = time.perf_counter()
        result = self.community.settlement.settle(self.operator, slot, members)
        log.info(
            "slot %d settled for %d members (%d band violations) in %.1f s",
            slot,
            len(result.members),
            len(result.violations),
            time.perf_counter() - started,
        )
