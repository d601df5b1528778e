"""Off-chain view of the energy market, built from its events alone (a projection of
``EnergyMarket``'s events, so it lives beside the binding).

Indexers, the dApp and the agents read this instead of walking contract storage: open
orders per slot and side in book order (price, then time), trades with their
curtailments, what orders and unsettled trades keep locked in the deposits, auction prices. Amounts are the
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
    lock_units,
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
    lock_price: int  # token units per kWh it locks: a buy's limit, a sell's collateral price
    status: OrderStatus = OrderStatus.OPEN
    close_reason: CloseReason | None = None

    @property
    def locked(self) -> int:
        """Token units this open order locks in its owner's deposit."""
        if self.status != OrderStatus.OPEN:
            return 0
        return lock_units(self.remaining_wh, self.lock_price)


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
    # (member, slot) -> token units its unreleased trades keep locked (buys' value, sells' collateral)
    trade_locks: dict[tuple[str, int], int] = field(default_factory=dict)
    released: set[tuple[str, int]] = field(default_factory=set)
    collateral: dict[tuple[str, int], int] = field(default_factory=dict)  # (seller, slot) -> units
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

    def locked(self) -> int:
        """Token units the market keeps locked in the deposits: open orders plus unreleased trades."""
        return sum(order.locked for order in self.orders.values()) + sum(self.trade_locks.values())

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
            lock_price=e["lockPrice"],
        )

    def _on_TradeExecuted(self, e: dict) -> None:
        trade = BookTrade(e["tradeId"], e["slot"], e["buyOrder"], e["sellOrder"], e["quantityWh"], e["price"])
        self.trades[trade.trade_id] = trade
        buy, sell = self.orders[e["buyOrder"]], self.orders[e["sellOrder"]]
        collateral = lock_units(sell.remaining_wh, sell.lock_price) - lock_units(
            e["sellRemainingWh"], sell.lock_price
        )
        self._add_lock(buy.owner, e["slot"], e["value"])
        self._add_lock(sell.owner, e["slot"], collateral)
        self.collateral[(sell.owner, e["slot"])] = (
            self.collateral.get((sell.owner, e["slot"]), 0) + collateral
        )
        for order_id, remaining in (
            (e["buyOrder"], e["buyRemainingWh"]),
            (e["sellOrder"], e["sellRemainingWh"]),
        ):
            order = self.orders[order_id]
            order.remaining_wh = remaining
            if remaining == 0:
                order.status = OrderStatus.FILLED

    def _on_OrderClosed(self, e: dict) -> None:
        order = self.orders[e["orderId"]]
        order.status = OrderStatus.CLOSED
        order.close_reason = CloseReason(e["reason"])
        order.remaining_wh = 0

    def _on_TradeCurtailed(self, e: dict) -> None:
        trade = self.trades[e["tradeId"]]
        trade.quantity_wh = e["remainingWh"]
        trade.curtailed_wh += e["curtailedWh"]
        buy, sell = self.orders[trade.buy_order], self.orders[trade.sell_order]
        self._add_lock(buy.owner, trade.slot, -e["refund"])
        key = (sell.owner, trade.slot)
        released = min(self.collateral.get(key, 0), e["curtailedWh"] * sell.lock_price // 1000)
        self.collateral[key] = self.collateral.get(key, 0) - released
        self._add_lock(sell.owner, trade.slot, -released)

    def _on_AuctionCleared(self, e: dict) -> None:
        self.auction_prices[e["slot"]] = e["price"]

    def _on_PositionReleased(self, e: dict) -> None:
        key = (e["member"], e["slot"])
        self.trade_locks.pop(key, None)
        self.collateral.pop(key, None)
        self.released.add(key)

    def _add_lock(self, member: str, slot: int, units_: int) -> None:
        key = (member, slot)
        self.trade_locks[key] = self.trade_locks.get(key, 0) + units_


def build_order_book(market: EnergyMarket, from_block: int = 0) -> OrderBookView:
    """The order book as the market's events since ``from_block`` tell it."""
    view = OrderBookView()
    view.apply_all(market.follow_events(from_block).poll().items)
    return view
