"""Simulated community members that trade energy on the market.

Each agent decides, for one delivery slot, what to buy or sell from what it expects to
produce or use, from the band the grid operator allows its flexibility in that slot and
from the grid prices (the alternative to trading in the community: buying at the import
price, selling at the export price). ``plan`` is a pure function of a ``SlotOutlook``;
``outlook`` reads the chain and ``act`` places the planned orders, signed by the agent's
key, through the chain client. Every order stays inside the band, net of what the
flexibility already has matched or open in the slot, so the market never refuses one
for its band; a flexibility without a band published for the slot does not trade it
(the market is fail-closed). Prices are on the market's tick; orders below its minimum
quantity are not placed. Agents trade from their deposit in the settlement contract
(``Community.fund``).

Prices cross by design: PV asks a little above the export price, EV chargers bid well
below the import price, and the battery acts last, as the community's market maker: it
takes, immediately or not at all, what the others left resting (sells to open bids, buys
open asks) between its reservation prices, so its orders never wait to expire.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from contracts import units
from contracts.client import ChainError, ContractRevert, Signer
from contracts.community import Community
from contracts.market import MIN_QUANTITY_WH, AssetKind, OrderRequest, PlacedOrder, Side, TimeInForce, on_tick

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotOutlook:
    """What an agent knows about a slot when it plans (kW, kWh, tokens per kWh)."""

    slot: int
    slot_minutes: int
    import_price: Decimal
    export_price: Decimal
    band_kw: tuple[float, float] | None = None  # the flexibility's tightest band; None for a meter
    band_published: bool = True  # False: no band for every minute of the slot, no trading
    matched_net_kwh: float = 0.0  # the flexibility's matched energy in the slot (load convention)
    open_buy_kwh: float = 0.0
    open_sell_kwh: float = 0.0
    bids: tuple[tuple[Decimal, float], ...] = ()  # others' open buy orders: (limit price, kWh)
    asks: tuple[tuple[Decimal, float], ...] = ()  # others' open sell orders

    @property
    def buy_headroom_kwh(self) -> float:
        """Energy the band still lets the flexibility buy (conservative, as the market checks)."""
        if self.band_kw is None:
            return float("inf")
        if not self.band_published:
            return 0.0
        allowed = units.slot_energy_kwh(self.band_kw[1], self.slot_minutes)
        return max(0.0, allowed - self.matched_net_kwh - self.open_buy_kwh)

    @property
    def sell_headroom_kwh(self) -> float:
        """Energy the band still lets the flexibility sell."""
        if self.band_kw is None:
            return float("inf")
        if not self.band_published:
            return 0.0
        allowed = units.slot_energy_kwh(self.band_kw[0], self.slot_minutes)
        return max(0.0, self.matched_net_kwh - self.open_sell_kwh - allowed)

    def price_between(self, share: float) -> Decimal:
        """A price ``share`` of the way from the export to the import price."""
        spread = self.import_price - self.export_price
        return on_tick(self.export_price + spread * Decimal(str(share)))


@dataclass
class AgentResult:
    placed: list[PlacedOrder] = field(default_factory=list)
    refused: list[tuple[OrderRequest, ContractRevert]] = field(default_factory=list)

    @property
    def bought_kwh(self) -> float:
        return sum(f.energy_kwh for p in self.placed for f in p.fills if f.buy_order == p.order_id)

    @property
    def sold_kwh(self) -> float:
        return sum(f.energy_kwh for p in self.placed for f in p.fills if f.sell_order == p.order_id)


class Agent(ABC):
    """A member trading through one of its assets."""

    def __init__(self, name: str, signer: Signer, asset_kind: AssetKind, asset_id: str):
        self.name = name
        self.signer = signer
        self.asset_kind = asset_kind
        self.asset_id = asset_id

    @abstractmethod
    def plan(self, outlook: SlotOutlook) -> list[OrderRequest]:
        """The orders to place for ``outlook.slot``."""

    reads_book = False  # whether ``outlook`` includes the others' open orders

    def outlook(self, community: Community, slot: int) -> SlotOutlook:
        """Band, schedule and grid prices of ``slot`` (and the open book, for an agent that
        ``reads_book``) as the chain has them now."""
        prices = community.settlement.terms_at(slot)
        outlook = SlotOutlook(
            slot=slot,
            slot_minutes=community.slot_minutes,
            import_price=prices.import_price,
            export_price=prices.export_price,
        )
        if self.asset_kind != AssetKind.FLEXIBILITY:
            return outlook
        band = community.limits.tightest_band(self.asset_id, slot)
        schedule = community.market.schedule(self.asset_id, slot)
        book: dict[Side, tuple[tuple[Decimal, float], ...]] = {Side.BUY: (), Side.SELL: ()}
        if self.reads_book:
            for side in book:
                book[side] = tuple(
                    (order.limit_price, order.remaining_kwh)
                    for order in community.market.open_orders(slot, side)
                    if order.owner != self.signer.address
                )
        return SlotOutlook(
            slot=slot,
            slot_minutes=community.slot_minutes,
            import_price=outlook.import_price,
            export_price=outlook.export_price,
            band_kw=(band.p_min_kw, band.p_max_kw),
            band_published=band.published,
            matched_net_kwh=schedule.matched_net_kwh,
            open_buy_kwh=schedule.open_buy_kwh,
            open_sell_kwh=schedule.open_sell_kwh,
            bids=book[Side.BUY],
            asks=book[Side.SELL],
        )

    def may_trade(self, community: Community, slot: int) -> bool:
        """Whether the market takes orders of this agent's asset for ``slot`` now: a meter's
        always, a flexibility's once a band is published for every minute of the slot."""
        if self.asset_kind != AssetKind.FLEXIBILITY:
            return True
        return community.limits.tightest_band(self.asset_id, slot).published

    def act(self, community: Community, slot: int) -> AgentResult:
        """Report the device's state, plan ``slot`` from the chain's outlook and place the
        orders; a refused order or report is logged and reported, not raised."""
        result = AgentResult()
        state = self.device_state()
        if state is not None:
            try:
                community.devices.report(self.signer, self.asset_id, **state)
            except ChainError as refusal:
                log.warning("%s: device state not reported: %s", self.name, refusal)
        for request in self.plan(self.outlook(community, slot)):
            if request.quantity_wh < MIN_QUANTITY_WH:
                continue
            try:
                placed = community.market.place_order(self.signer, request)
            except ContractRevert as refusal:
                log.info("%s: order refused: %s", self.name, refusal)
                result.refused.append((request, refusal))
                continue
            result.placed.append(placed)
            self.on_placed(placed)
        return result

    def on_placed(self, placed: PlacedOrder) -> None:  # noqa: B027 (optional hook)
        """Hook: learn from an order's immediate fills (nothing by default)."""

    def device_state(self) -> dict | None:
        """The device's state for ``DeviceStates.report`` (the grid operator's OCM relies on
        the device only as far as it is available); None: nothing to report."""
        return None

    def _request(
        self, outlook: SlotOutlook, side: Side, energy_kwh: float, price: Decimal, **kw
    ) -> OrderRequest:
        return OrderRequest(
            slot=outlook.slot,
            side=side,
            asset_id=self.asset_id,
            energy_kwh=units.wh_to_kwh(units.kwh_to_wh_down(energy_kwh)),
            limit_price=price,
            asset_kind=self.asset_kind,
            **kw,
        )


class PvProsumer(Agent):
    """Sells its expected PV surplus (as much as the band lets it inject) a little above
    the export price: any sale in the community beats exporting to the grid."""

    def __init__(self, name: str, signer: Signer, flex_id: str, surplus_kw: float, ask_share: float = 0.3):
        super().__init__(name, signer, AssetKind.FLEXIBILITY, flex_id)
        self.surplus_kw = surplus_kw
        self.ask_share = ask_share

    def plan(self, outlook: SlotOutlook) -> list[OrderRequest]:
        energy = min(units.slot_energy_kwh(self.surplus_kw, outlook.slot_minutes), outlook.sell_headroom_kwh)
        if units.kwh_to_wh_down(energy) <= 0:
            return []
        return [self._request(outlook, Side.SELL, energy, outlook.price_between(self.ask_share))]


class EvOwner(Agent):
    """Needs ``energy_kwh`` by the end of ``deadline_slot``; spreads it over the slots left,
    never above the band, bidding below the import price and up to it in the last slot.
    A bid that rests may fill later (the battery takes it): the next round counts that."""

    def __init__(
        self,
        name: str,
        signer: Signer,
        flex_id: str,
        energy_kwh: float,
        deadline_slot: int,
        bid_share: float = 0.8,
    ):
        super().__init__(name, signer, AssetKind.FLEXIBILITY, flex_id)
        self.needed_kwh = energy_kwh
        self.deadline_slot = deadline_slot
        self.bid_share = bid_share
        self._counted_kwh: dict[int, float] = {}  # slot -> its bought energy taken off the need
        self._slot = 0  # the slot being traded (``act``)

    def plan(self, outlook: SlotOutlook) -> list[OrderRequest]:
        slots_left = self.deadline_slot - outlook.slot + 1
        if slots_left <= 0 or self.needed_kwh <= 0:
            return []
        energy = min(self.needed_kwh / slots_left, outlook.buy_headroom_kwh)
        if units.kwh_to_wh_down(energy) <= 0:
            return []
        share = 1.0 if slots_left == 1 else self.bid_share
        return [self._request(outlook, Side.BUY, energy, outlook.price_between(share))]

    def act(self, community: Community, slot: int) -> AgentResult:
        """Take off the need what earlier slots' bids bought after they were placed, then trade."""
        for earlier in [s for s in self._counted_kwh if s < slot]:
            bought = community.market.schedule(self.asset_id, earlier).matched_buy_kwh
            self.needed_kwh = max(0.0, self.needed_kwh - (bought - self._counted_kwh.pop(earlier)))
        self._counted_kwh[slot] = self._counted_kwh.get(slot, 0.0)
        self._slot = slot
        return super().act(community, slot)

    def device_state(self) -> dict | None:
        """Plugged in until the deadline while energy is wanted; the need includes what was
        bought but not delivered yet (the slots still counted)."""
        undelivered = sum(self._counted_kwh.values())
        need = self.needed_kwh + undelivered
        plugged = self._slot <= self.deadline_slot and need > 0
        return {"plugged": plugged, "energy_need_kwh": round(need, 3) if plugged else 0.0}

    def on_placed(self, placed: PlacedOrder) -> None:
        self.needed_kwh = max(0.0, self.needed_kwh - placed.filled_kwh)
        self._counted_kwh[self._slot] = self._counted_kwh.get(self._slot, 0.0) + placed.filled_kwh


class BatteryOwner(Agent):
    """The community's market maker, inside its band: it takes what the other agents left
    open in the book (it acts after them), buying open asks up to its bid and selling to
    open bids down to its ask, immediately or not at all, so it never leaves an order to
    expire. Its reservation prices follow the state of charge: below ``low`` it pays more
    and does not sell, above ``high`` it sells cheaper and does not buy."""

    reads_book = True

    def __init__(
        self,
        name: str,
        signer: Signer,
        flex_id: str,
        capacity_kwh: float,
        soc_kwh: float,
        low: float = 0.3,
        high: float = 0.7,
    ):
        super().__init__(name, signer, AssetKind.FLEXIBILITY, flex_id)
        self.capacity_kwh = capacity_kwh
        self.soc_kwh = soc_kwh
        self.low = low
        self.high = high

    def plan(self, outlook: SlotOutlook) -> list[OrderRequest]:
        orders = []
        soc = self.soc_kwh / self.capacity_kwh
        if soc < self.high:
            bid = outlook.price_between(0.6 if soc < self.low else 0.45)
            offered = sum(kwh for price, kwh in outlook.asks if price <= bid)
            charge = min(offered, self.capacity_kwh - self.soc_kwh, outlook.buy_headroom_kwh)
            if units.kwh_to_wh_down(charge) > 0:
                orders.append(self._taking(outlook, Side.BUY, charge, bid))
        if soc > self.low:
            ask = outlook.price_between(0.4 if soc > self.high else 0.55)
            wanted = sum(kwh for price, kwh in outlook.bids if price >= ask)
            discharge = min(wanted, self.soc_kwh, outlook.sell_headroom_kwh)
            if units.kwh_to_wh_down(discharge) > 0:
                orders.append(self._taking(outlook, Side.SELL, discharge, ask))
        return orders

    def device_state(self) -> dict | None:
        """Capacity and stored energy as its trading book sees them (trades count when made)."""
        stored = min(max(self.soc_kwh, 0.0), self.capacity_kwh)
        return {"plugged": False, "stored_kwh": round(stored, 3), "capacity_kwh": self.capacity_kwh}

    def _taking(self, outlook: SlotOutlook, side: Side, energy_kwh: float, price: Decimal) -> OrderRequest:
        return self._request(outlook, side, energy_kwh, price, time_in_force=TimeInForce.IMMEDIATE_OR_CANCEL)

    def on_placed(self, placed: PlacedOrder) -> None:
        for fill in placed.fills:
            if fill.buy_order == placed.order_id:
                self.soc_kwh += fill.energy_kwh
            elif fill.sell_order == placed.order_id:
                self.soc_kwh -= fill.energy_kwh


class PlainConsumer(Agent):
    """Buys its expected load through its meter, bidding just under the import price and
    dropping what is not filled at once (the grid supplies the rest)."""

    def __init__(self, name: str, signer: Signer, meter_id: str, load_kw: float, bid_share: float = 0.95):
        super().__init__(name, signer, AssetKind.METER, meter_id)
        self.load_kw = load_kw
        self.bid_share = bid_share

    def plan(self, outlook: SlotOutlook) -> list[OrderRequest]:
        energy = units.slot_energy_kwh(self.load_kw, outlook.slot_minutes)
        if units.kwh_to_wh_down(energy) <= 0:
            return []
        return [
            self._request(
                outlook,
                Side.BUY,
                energy,
                outlook.price_between(self.bid_share),
                time_in_force=TimeInForce.IMMEDIATE_OR_CANCEL,
            )
        ]


def trading_round(agents: Sequence[Agent], community: Community, slot: int) -> dict[str, AgentResult]:
    """Every agent acts once for ``slot``, in the given order (sellers first fill the book)."""
    return {agent.name: agent.act(community, slot) for agent in agents}
