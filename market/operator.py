"""The market operator's routine: let the agents trade each slot, close and finalize what
gate closure ended, settle what is final.

``tick(now)`` is idempotent and cheap when there is nothing to do; ``run`` calls it every
``interval`` seconds. Each agent trades each slot once, while it is the next slot still
open and as soon as it may (a flexibility's band must be published for every minute of the
slot; the OCM publishes bands a limited horizon ahead). Once a slot's gate has closed its
open orders are expired (continuous mode; in auction mode it is cleared instead) and it is
finalized (every traded flexibility curtailed to its band in force); once its meter data
are final it is settled for every member.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from contracts import clock
from contracts.client import ChainError, ContractRevert, Signer
from contracts.community import Community
from contracts.market import ClearingMode
from contracts.registry import Role
from market.agents import Agent, trading_round

log = logging.getLogger(__name__)

LOOKBACK_SLOTS = 8  # slots before the current one that are still closed and settled
MIN_INTERVAL_S = 0.5  # real seconds between rounds at least, however fast the community clock


class MarketOperator:
    """Drives one community's market: agents, gate closure, settlement."""

    def __init__(self, community: Community, operator: Signer, agents: Sequence[Agent] = ()):
        self.community = community
        self.operator = operator
        self.agents = list(agents)
        self._first_slot: int | None = None  # slots before the operator started are not its own
        self._traded: dict[int, set[int]] = {}  # slot -> indices of the agents that traded it
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
        if self._trade(next_open):
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

    def _trade(self, slot: int) -> bool:
        """Let the agents that have not traded ``slot`` yet and may trade it now act; whether any did."""
        traded = self._traded.setdefault(slot, set())
        ready = [
            index
            for index, agent in enumerate(self.agents)
            if index not in traded and agent.may_trade(self.community, slot)
        ]
        if not ready:
            return False
        results = trading_round([self.agents[index] for index in ready], self.community, slot)
        traded.update(ready)
        for old in [s for s in self._traded if s < slot]:
            del self._traded[old]
        placed = sum(len(r.placed) for r in results.values())
        refused = sum(len(r.refused) for r in results.values())
        waiting = len(self.agents) - len(traded)
        log.info(
            "slot %d: %d agents placed %d orders (%d refused), %d wait for their band",
            slot, len(ready), placed, refused, waiting,
        )  # fmt: skip
        return True

    def _next_open_slot(self, current: int, now: float) -> int:
        """The first slot from ``current`` on whose gate is still open at ``now`` (the gate
        may close more than a slot ahead of delivery)."""
        slot = current
        while now >= self.community.market.gate_closure_time(slot):
            slot += 1
        return slot

    def run(self, stop: threading.Event, interval: float = 15.0) -> None:
        """``tick`` every ``interval`` community seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.tick()
            except ChainError as error:
                log.warning("market round failed: %s", error)
            except Exception:
                log.exception("market round failed")
            stop.wait(max(clock.real_seconds(interval), MIN_INTERVAL_S))

    def _close(self, slot: int) -> None:
        market = self.community.market
        if market.clearing_mode() == ClearingMode.CALL_AUCTION:
            try:
                result = market.clear_auction(self.operator, slot)
            except ContractRevert as refusal:  # anyone may clear (or finalize) before the operator
                if refusal.error != "AuctionAlreadyCleared":
                    raise
                log.info("slot %d: auction already cleared", slot)
            else:
                log.info(
                    "slot %d: auction cleared at %s per kWh, %.3f kWh", slot, result.price, result.volume_kwh
                )
        else:
            while closed := market.expire_orders(self.operator, slot):
                log.info("slot %d: %d open orders expired at gate closure", slot, len(closed))
        self._finalize(slot)

    def _finalize(self, slot: int) -> None:
        market = self.community.market
        if market.finalized(slot):
            return
        done = False
        while not done:
            done, cuts = market.finalize_slot(self.operator, slot)
            if cuts:
                kwh = sum(cut.curtailed_kwh for cut in cuts)
                log.info(
                    "slot %d: %d trades curtailed by %.3f kWh to the bands in force", slot, len(cuts), kwh
                )
        log.info("slot %d finalized", slot)

    def _settle(self, slot: int) -> None:
        members = [
            account
            for account in self.community.registry.members()
            if self.community.registry.has_role(Role.MEMBER, account)
        ]
        if not members:
            return
        self._finalize(slot)
        started = time.perf_counter()
        result = self.community.settlement.settle(self.operator, slot, members)
        log.info(
            "slot %d settled for %d members (%d band violations) in %.1f s",
            slot,
            len(result.members),
            len(result.violations),
            time.perf_counter() - started,
        )
