"""Off-chain view of the energy market, built from its events alone (a projection of
``EnergyMarket``'s events, so it lives beside the binding).

Indexers, the dApp and the agents read this instead of walking contract storage: open
orders per slot and side in book order (price, then time), trades with their
curtailments, sellers' proceeds still held in escrow, auction prices. Amounts are the
chain's exact integers (Wh, token units, units per kWh); ``contracts.market`` converts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from contracts import units
from contracts.events import ChainEvent
from contracts.market import (
    AssetKind,
    CloseReason,
    EnergyMarket,
    OrderStatus,
    Side,
    TimeInForce,
    escrow_units,
    trade_value,
)


@dataclass
class BookOrder:
    order_id: int
    owner: str
    slot: int
    side: Side
    time_in_force: TimeInForce
    asset_kind: AssetKind
    asset_id: str
    limit_price: int  # token units per kWh
    quantity_wh: int
    remaining_wh: int
    status: OrderStatus = OrderStatus.OPEN
    close_reason: CloseReason | None = None

    @property
    def escrow(self) -> int:
        """Token units this order holds in the market (open buys only)."""
        if self.side != Side.BUY or self.status != OrderStatus.OPEN:
            return 0
        return escrow_units(self.remaining_wh, self.limit_price)


@dataclass
class BookTrade:
    trade_id: int
    slot: int
    buy_order: int
    sell_order: int
    quantity_wh: int  # after curtailment
    price: int
    curtailed_wh: int = 0

    @property
    def value(self) -> int:
        return trade_value(self.quantity_wh, self.price)


@dataclass
class OrderBookView:
    """The market's state as its events tell it; feed events with ``apply``."""

    orders: dict[int, BookOrder] = field(default_factory=dict)
    trades: dict[int, BookTrade] = field(default_factory=dict)
    proceeds: dict[tuple[str, int], int] = field(default_factory=dict)  # (seller, slot) -> unreleased units
    released: set[tuple[str, int]] = field(default_factory=set)
    auction_prices: dict[int, int] = field(default_factory=dict)

    def apply(self, event: ChainEvent) -> None:
        """Apply one market event (others are ignored)."""
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is not None:
            handler(event.args)

    def apply_all(self, events: Iterable[ChainEvent]) -> None:
        for event in events:
            self.apply(event)

    # --------------------------------------------------------------- queries

    def open_orders(self, slot: int, side: Side) -> list[BookOrder]:
        """Open orders of ``slot`` on ``side``, best first (price, then time)."""
        found = [
            o
            for o in self.orders.values()
            if o.slot == slot and o.side == side and o.status == OrderStatus.OPEN
        ]
        sign = -1 if side == Side.BUY else 1
        return sorted(found, key=lambda o: (sign * o.limit_price, o.order_id))

    def best(self, slot: int, side: Side) -> BookOrder | None:
        book = self.open_orders(slot, side)
        return book[0] if book else None

    def depth(self, slot: int, side: Side) -> list[tuple[int, int]]:
        """(price, open Wh) per price level, best first."""
        levels: dict[int, int] = {}
        for order in self.open_orders(slot, side):
            levels[order.limit_price] = levels.get(order.limit_price, 0) + order.remaining_wh
        return list(levels.items())

    def insertion_hint(self, slot: int, side: Side, limit_price: int) -> int:
        """The open order a new order at ``limit_price`` rests behind (0: the head)."""
        hint = 0
        for order in self.open_orders(slot, side):
            better_or_equal = (
                order.limit_price >= limit_price if side == Side.BUY else order.limit_price <= limit_price
            )
            if not better_or_equal:
                break
            hint = order.order_id
        return hint

    def escrow(self) -> int:
        """Token units the market must hold: open buys plus unreleased proceeds."""
        return sum(order.escrow for order in self.orders.values()) + sum(self.proceeds.values())

    def slot_trades(self, slot: int) -> list[BookTrade]:
        return [t for t in self.trades.values() if t.slot == slot]

    # ------------------------------------------------------------- handlers

    def _on_OrderPlaced(self, e: dict) -> None:
        self.orders[e["orderId"]] = BookOrder(
            order_id=e["orderId"],
            owner=e["owner"],
            slot=e["slot"],
            side=Side(e["side"]),
            time_in_force=TimeInForce(e["timeInForce"]),
            asset_kind=AssetKind(e["assetKind"]),
            asset_id=units.decode_id(e["asset"]),
            limit_price=e["limitPrice"],
            quantity_wh=e["quantityWh"],
            remaining_wh=e["quantityWh"],
        )

    def _on_TradeExecuted(self, e: dict) -> None:
        trade = BookTrade(e["tradeId"], e["slot"], e["buyOrder"], e["sellOrder"], e["quantityWh"], e["price"])
        self.trades[trade.trade_id] = trade
        for order_id, remaining in (
            (e["buyOrder"], e["buyRemainingWh"]),
            (e["sellOrder"], e["sellRemainingWh"]),
        ):
            order = self.orders[order_id]
            order.remaining_wh = remaining
            if remaining == 0:
                order.status = OrderStatus.FILLED
        key = (self.orders[e["sellOrder"]].owner, e["slot"])
        self.proceeds[key] = self.proceeds.get(key, 0) + e["value"]

    def _on_OrderClosed(self, e: dict) -> None:
        order = self.orders[e["orderId"]]
        order.status = OrderStatus.CLOSED
        order.close_reason = CloseReason(e["reason"])
        order.remaining_wh = 0

    def _on_TradeCurtailed(self, e: dict) -> None:
        trade = self.trades[e["tradeId"]]
        trade.quantity_wh = e["remainingWh"]
        trade.curtailed_wh += e["curtailedWh"]
        key = (self.orders[trade.sell_order].owner, trade.slot)
        self.proceeds[key] -= e["refund"]

    def _on_AuctionCleared(self, e: dict) -> None:
        self.auction_prices[e["slot"]] = e["price"]

    def _on_PositionReleased(self, e: dict) -> None:
        key = (e["member"], e["slot"])
        self.proceeds.pop(key, None)
        self.released.add(key)


def build_order_book(market: EnergyMarket, from_block: int = 0) -> OrderBookView:
    """The order book as the market's events since ``from_block`` tell it."""
    view = OrderBookView()
    view.apply_all(market.follow_events(from_block).poll().items)
    return view
