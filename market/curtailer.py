"""The curtailer: keeps traded schedules inside their bands when a band is tightened.

Bands change after trades were matched: the OCM oracle publishes a tighter band from
fresher readings, or the DSO posts a limitation. ``EnergyMarket.curtail`` (callable by
anyone) then cuts the flexibility's latest trades back into the band and refunds the
buyers (and unlocks the sellers' collateral); open orders beyond the band are closed when
they would match. The market also curtails every traded flexibility when the slot is
finalized after gate closure, so the curtailer only makes the cut known early. It follows
``BandPublished`` and ``FlexibilityLimited`` events and, for every market slot a new band
touches, asks the market what ``curtail`` would do (a free ``eth_call``); when it would cut
anything, it sends it, again until the market says done. It polls a few times per block
period, so a tightened band is acted on in the next block; a slot already finalized is left
alone (too late).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from contracts.client import ChainError, ContractRevert, Signer
from contracts.community import Community
from contracts.market import Curtailment

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
MAX_CALLS_PER_SLOT = 20  # each call looks at a bounded number of trades and orders


@dataclass
class CurtailerRound:
    """What one round did: the (flexibility, slot) pairs looked at and the cuts made."""

    checked: list[tuple[str, int]] = field(default_factory=list)
    curtailments: list[Curtailment] = field(default_factory=list)


class Curtailer:
    """Calls ``curtail`` for every (flexibility, slot) whose band was tightened."""

    def __init__(self, community: Community, caller: Signer, from_block: int | None = None):
        self.community = community
        self.caller = caller
        start = community.client.head_block() + 1 if from_block is None else from_block
        self._bands = community.limits.follow_bands(start)
        self._limitations = community.limits.follow_limitations(start)

    def tick(self) -> CurtailerRound:
        """Read the new bands and limitations and curtail where a schedule left its band."""
        touched: set[tuple[str, int]] = set()
        clock = self.community.clock
        for published in self._bands.poll().items:
            band = published.band
            touched.update((band.flex_id, slot) for slot in _slots(clock, band.start, band.end))
        for limited in self._limitations.poll().items:
            touched.update((limited.flex_id, slot) for slot in _slots(clock, limited.start, limited.end))
        result = CurtailerRound()
        for flex_id, slot in sorted(touched, key=lambda pair: (pair[1], pair[0])):
            result.checked.append((flex_id, slot))
            self._curtail(flex_id, slot, result)
        return result

    def run(self, stop: threading.Event, interval: float = POLL_INTERVAL_S) -> None:
        """``tick`` every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.tick()
            except ChainError as error:
                log.warning("curtailer round failed: %s", error)
            except Exception:
                log.exception("curtailer round failed")
            stop.wait(interval)

    def _curtail(self, flex_id: str, slot: int, result: CurtailerRound) -> None:
        market = self.community.market
        for _ in range(MAX_CALLS_PER_SLOT):
            try:
                cut, _done = market.curtail_preview(flex_id, slot)
                if not cut:
                    return
                outcome = market.curtail(self.caller, flex_id, slot)
            except ContractRevert as refusal:
                if not market.settlement_started(refusal):  # then it is simply too late
                    log.warning("curtail %s in slot %d refused: %s", flex_id, slot, refusal)
                return
            result.curtailments.extend(outcome.curtailments)
            log.info("slot %d: %s back inside its band: %s", slot, flex_id, _describe(outcome))
            if outcome.done:
                return
        log.warning(
            "slot %d: %s still outside its band after %d curtail calls", slot, flex_id, MAX_CALLS_PER_SLOT
        )


def _describe(outcome) -> str:
    """``"2 trades cut by 1.250 kWh (refund 0.25 tokens)"``."""
    parts = []
    if outcome.curtailments:
        kwh = sum(c.curtailed_kwh for c in outcome.curtailments)
        refund = sum(c.refund for c in outcome.curtailments)
        count = len(outcome.curtailments)
        parts.append(
            f"{count} trade{'s' if count != 1 else ''} cut by {kwh:.3f} kWh (refund {refund} tokens)"
        )
    return ", ".join(parts) or "nothing to cut"


def _slots(clock, start: int, end: int) -> range:
    """The market slots that overlap ``[start, end)`` (Unix seconds)."""
    return range(clock.slot_of(start), clock.slot_of(end - 1) + 1)
