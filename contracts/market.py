"""Typed binding of ``EnergyMarket``: Python units in, chain integers out.

Energy in kWh, prices in tokens per kWh, token amounts in tokens (``Decimal``), times in
UTC Unix seconds; a delivery slot is its index (``contracts.clock.SlotClock``). The rules
themselves (matching, deposits and collateral, curtailment, finalization) are in the
contract and ``docs/market.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import clock, units
from contracts.binding import ContractBinding
from contracts.client import ContractRevert, Signer
from contracts.events import ChainEvent, EventFollower

# The events an order book is built from (``contracts.orderbook``).
MARKET_EVENTS = (
    "OrderPlaced",
    "TradeExecuted",
    "OrderClosed",
    "TradeCurtailed",
    "AuctionCleared",
    "SlotFinalized",
    "PositionReleased",
)

# EnergyMarket's constants (checked against the contract by the tests).
MIN_QUANTITY_WH = 10
PRICE_TICK_UNITS = 10**12
MAX_OPEN_PER_MEMBER = 8


class Side(enum.IntEnum):
    BUY = 0
    SELL = 1


class TimeInForce(enum.IntEnum):
    """Must match IEnergyMarket.TimeInForce."""

    GOOD_TILL_CANCELLED = 0
    IMMEDIATE_OR_CANCEL = 1
    FILL_OR_KILL = 2
    ALL_OR_NONE = 3


class AssetKind(enum.IntEnum):
    METER = 0
    FLEXIBILITY = 1


class OrderStatus(enum.IntEnum):
    NONE = 0
    OPEN = 1
    FILLED = 2
    CLOSED = 3


class CloseReason(enum.IntEnum):
    CANCELLED = 0
    EXPIRED = 1
    IMMEDIATE_REMAINDER = 2
    MATCH_LIMIT = 3
    BAND_TIGHTENED = 4
    AUCTION_UNMATCHED = 5
    DISPLACED = 6
    REMOVED = 7


class ClearingMode(enum.IntEnum):
    CONTINUOUS = 0
    CALL_AUCTION = 1


def trade_value(energy_wh: int, price_units_per_kwh: int) -> int:
    """Token units a trade of ``energy_wh`` at ``price_units_per_kwh`` is worth (the chain's rule)."""
    return energy_wh * price_units_per_kwh // 1000


def lock_units(energy_wh: int, price_units_per_kwh: int) -> int:
    """Token units ``energy_wh`` locks at a price: ``ceil(Wh · price / 1000)`` (the chain's
    rule; a buy locks at its limit price, a sell at the slot's collateral price)."""
    return -(-energy_wh * price_units_per_kwh // 1000)


def on_tick(price: Decimal | float | str, up: bool = False) -> Decimal:
    """``price`` (tokens per kWh) rounded to the market's price tick (down unless ``up``)."""
    price_units = units.price_to_units_per_kwh(price)
    ticks = -(-price_units // PRICE_TICK_UNITS) if up else price_units // PRICE_TICK_UNITS
    return units.units_per_kwh_to_price(ticks * PRICE_TICK_UNITS)


@dataclass(frozen=True)
class OrderRequest:
    """An order to buy or sell ``energy_kwh`` for delivery ``slot`` at ``limit_price``
    (tokens per kWh), tied to the sender's meter or flexibility ``asset_id``."""

    slot: int
    side: Side
    asset_id: str
    energy_kwh: float
    limit_price: Decimal | float | str
    asset_kind: AssetKind = AssetKind.FLEXIBILITY
    time_in_force: TimeInForce = TimeInForce.GOOD_TILL_CANCELLED

    @property
    def quantity_wh(self) -> int:
        return units.kwh_to_wh(self.energy_kwh)

    @property
    def limit_price_units(self) -> int:
        return units.price_to_units_per_kwh(self.limit_price)

    def to_chain(self) -> tuple:
        return (
            self.slot,
            int(self.side),
            int(self.time_in_force),
            int(self.asset_kind),
            units.encode_id(self.asset_id),
            self.quantity_wh,
            self.limit_price_units,
        )


@dataclass(frozen=True)
class Order:
    order_id: int
    owner: str
    slot: int
    side: Side
    time_in_force: TimeInForce
    asset_kind: AssetKind
    asset_id: str
    status: OrderStatus
    limit_price: Decimal
    energy_kwh: float
    remaining_kwh: float


@dataclass(frozen=True)
class Fill:
    """One trade, as executed (or cleared)."""

    trade_id: int
    slot: int
    buy_order: int
    sell_order: int
    energy_kwh: float
    price: Decimal
    value: Decimal
    buyer_refund: Decimal


@dataclass(frozen=True)
class Closure:
    order_id: int
    reason: CloseReason
    remaining_kwh: float
    refund: Decimal


@dataclass(frozen=True)
class PlacedOrder:
    """What placing an order did: its id, its fills, the closures it caused (its own
    remainder, resting orders a band no longer allows) and its status afterwards."""

    order_id: int
    fills: list[Fill]
    closures: list[Closure]
    status: OrderStatus
    receipt: TxReceipt

    @property
    def rests(self) -> bool:
        return self.status == OrderStatus.OPEN

    @property
    def filled_kwh(self) -> float:
        return sum(f.energy_kwh for f in self.fills if self.order_id in (f.buy_order, f.sell_order))


@dataclass(frozen=True)
class Position:
    """A member's matched energy in a slot and the tokens its trades hold locked."""

    bought_kwh: float
    sold_kwh: float
    paid: Decimal
    released: bool
    proceeds: Decimal
    collateral: Decimal


@dataclass(frozen=True)
class Schedule:
    """A flexibility's energy in a slot: matched and still in open orders (kWh)."""

    matched_buy_kwh: float
    matched_sell_kwh: float
    open_buy_kwh: float
    open_sell_kwh: float

    @property
    def matched_net_kwh(self) -> float:
        return self.matched_buy_kwh - self.matched_sell_kwh


@dataclass(frozen=True)
class Curtailment:
    trade_id: int
    flex_id: str
    slot: int
    curtailed_kwh: float
    remaining_kwh: float
    refund: Decimal


@dataclass(frozen=True)
class CurtailResult:
    curtailments: list[Curtailment]
    done: bool


@dataclass(frozen=True)
class AuctionResult:
    slot: int
    price: Decimal
    volume_kwh: float
    fills: list[Fill]
    closures: list[Closure]


class EnergyMarket(ContractBinding):
    """``EnergyMarket``: orders, matching, escrow and curtailment, in Python units."""

    CONTRACT = "EnergyMarket"

    # ------------------------------------------------------------------- time

    def gate_closure_time(self, slot: int) -> int:
        """When orders for ``slot`` stop being accepted (Unix seconds)."""
        return self._view("gateClosureTime", slot)

    # ------------------------------------------------------------ configuration

    def set_clearing_mode(self, operator: Signer, mode: ClearingMode) -> TxReceipt:
        return self._transact(operator, self._function("setClearingMode", int(mode)))

    def clearing_mode(self) -> ClearingMode:
        return ClearingMode(self._view("clearingMode"))

    def set_gate_closure(self, operator: Signer, lead_seconds: int) -> TxReceipt:
        minutes = clock.duration_minutes(lead_seconds)
        return self._transact(operator, self._function("setGateClosure", minutes))

    def set_paused(self, operator: Signer, paused: bool) -> TxReceipt:
        """Stop (or resume) new orders; cancelling, settlement and withdrawals go on."""
        return self._transact(operator, self._function("setPaused", paused))

    def paused(self) -> bool:
        return self._view("paused")

    # ----------------------------------------------------------------- orders

    def lock_for(self, request: OrderRequest, collateral_price_units: int) -> Decimal:
        """Tokens an order locks in the deposit when placed: a buy its value at the limit
        price, a sell its collateral at ``collateral_price_units`` (``Settlement.collateral_price``)."""
        price = request.limit_price_units if request.side == Side.BUY else collateral_price_units
        return units.units_to_tokens(lock_units(request.quantity_wh, price))

    def insertion_hint(self, slot: int, side: Side, limit_price_units: int) -> int:
        return self._view("insertionHint", slot, int(side), limit_price_units)

    def place_order_call(self, request: OrderRequest, hint: int | None = None) -> ContractFunction:
        """The call placing ``request``; the book position hint is read now unless given."""
        if hint is None:
            hint = self.insertion_hint(request.slot, request.side, request.limit_price_units)
        return self._function("placeOrder", request.to_chain(), hint)

    def place_order(self, member: Signer, request: OrderRequest, hint: int | None = None) -> PlacedOrder:
        receipt = self._transact(member, self.place_order_call(request, hint))
        order_id = self._logs("OrderPlaced", receipt)[0]["orderId"]
        return PlacedOrder(
            order_id=order_id,
            fills=self._fills(receipt),
            closures=self._closures(receipt),
            status=self.order(order_id).status,
            receipt=receipt,
        )

    def cancel_order_call(self, order_id: int) -> ContractFunction:
        return self._function("cancelOrder", order_id)

    def cancel_order(self, member: Signer, order_id: int) -> Closure:
        receipt = self._transact(member, self.cancel_order_call(order_id))
        return self._closures(receipt)[0]

    def remove_order(self, operator: Signer, order_id: int) -> Closure:
        """Take off the book an order of a removed member or an inactive asset."""
        receipt = self._transact(operator, self._function("removeOrder", order_id))
        return self._closures(receipt)[0]

    def expire_orders(self, caller: Signer, slot: int) -> list[Closure]:
        """Close (up to a bounded number of) open orders of ``slot`` after its gate closed."""
        return self._closures(self._transact(caller, self._function("expireOrders", slot)))

    def clear_auction(self, caller: Signer, slot: int) -> AuctionResult:
        receipt = self._transact(caller, self._function("clearAuction", slot))
        cleared = self._logs("AuctionCleared", receipt)[0]
        return AuctionResult(
            slot=slot,
            price=units.units_per_kwh_to_price(cleared["price"]),
            volume_kwh=units.wh_to_kwh(cleared["volumeWh"]),
            fills=self._fills(receipt),
            closures=self._closures(receipt),
        )

    def curtail_preview(self, flex_id: str, slot: int) -> tuple[int, bool]:
        """What ``curtail`` would do now: (trades cut, done), without sending anything;
        (0, True) when the schedule already fits the band."""
        return tuple(self._view("curtail", units.encode_id(flex_id), slot))

    @staticmethod
    def settlement_started(revert: ContractRevert) -> bool:
        """Whether ``revert`` says the slot is already finalized (too late to curtail)."""
        return revert.error == "SlotInSettlement"

    def curtail(self, caller: Signer, flex_id: str, slot: int) -> CurtailResult:
        """Bring ``flex_id``'s matched schedule in ``slot`` back inside its band (docs/market.md)."""
        call = self._function("curtail", units.encode_id(flex_id), slot)
        done = self.client.call(call)[1]
        receipt = self._transact(caller, call)
        return CurtailResult(self._curtailments(receipt), done)

    def finalize_slot(self, caller: Signer, slot: int) -> tuple[bool, list[Curtailment]]:
        """One bounded step of finalizing ``slot`` after gate closure: curtail every traded
        flexibility to its band in force. Returns (finalized, trades cut by this call)."""
        receipt = self._transact(caller, self._function("finalizeSlot", slot))
        return bool(self._logs("SlotFinalized", receipt)), self._curtailments(receipt)

    def finalized(self, slot: int) -> bool:
        return self._view("book", slot)[9]

    # ------------------------------------------------------------------ views

    def order(self, order_id: int) -> Order:
        raw = self._view("order", order_id)
        return _order(order_id, raw)

    def open_orders(self, slot: int, side: Side) -> list[Order]:
        """Open orders of ``slot`` on ``side``, best first."""
        ids = self._view("openOrders", slot, int(side))
        return [self.order(order_id) for order_id in ids]

    def position(self, account: str, slot: int) -> Position:
        bought, sold, paid, released, proceeds, collateral = self._view("position", account, slot)
        tokens = units.units_to_tokens
        return Position(
            units.wh_to_kwh(bought),
            units.wh_to_kwh(sold),
            tokens(paid),
            released,
            tokens(proceeds),
            tokens(collateral),
        )

    def schedule(self, flex_id: str, slot: int) -> Schedule:
        raw = self._view("schedule", units.encode_id(flex_id), slot)
        return Schedule(*(units.wh_to_kwh(value) for value in raw))

    # ----------------------------------------------------------------- events

    def follow_events(self, from_block: int) -> EventFollower[ChainEvent]:
        """The market's order, trade and settlement-release events from ``from_block`` on."""
        return self._follower(MARKET_EVENTS, from_block, lambda event: event)

    def events_in(self, receipt: TxReceipt) -> list[ChainEvent]:
        """The market events a transaction emitted, in order."""
        return self._receipt_events(MARKET_EVENTS, receipt)

    # -------------------------------------------------------------- internals

    def _fills(self, receipt: TxReceipt) -> list[Fill]:
        return [
            Fill(
                trade_id=event["tradeId"],
                slot=event["slot"],
                buy_order=event["buyOrder"],
                sell_order=event["sellOrder"],
                energy_kwh=units.wh_to_kwh(event["quantityWh"]),
                price=units.units_per_kwh_to_price(event["price"]),
                value=units.units_to_tokens(event["value"]),
                buyer_refund=units.units_to_tokens(event["buyerRefund"]),
            )
            for event in self._logs("TradeExecuted", receipt)
        ]

    def _curtailments(self, receipt: TxReceipt) -> list[Curtailment]:
        return [
            Curtailment(
                trade_id=event["tradeId"],
                flex_id=units.decode_id(event["flexibility"]),
                slot=event["slot"],
                curtailed_kwh=units.wh_to_kwh(event["curtailedWh"]),
                remaining_kwh=units.wh_to_kwh(event["remainingWh"]),
                refund=units.units_to_tokens(event["refund"]),
            )
            for event in self._logs("TradeCurtailed", receipt)
        ]

    def _closures(self, receipt: TxReceipt) -> list[Closure]:
        return [
            Closure(
                order_id=event["orderId"],
                reason=CloseReason(event["reason"]),
                remaining_kwh=units.wh_to_kwh(event["remainingWh"]),
                refund=units.units_to_tokens(event["refund"]),
            )
            for event in self._logs("OrderClosed", receipt)
        ]


def _order(order_id: int, raw: Sequence) -> Order:
    owner, slot, side, tif, kind, status, asset, price, quantity, remaining, _, _, _ = raw
    return Order(
        order_id=order_id,
        owner=owner,
        slot=slot,
        side=Side(side),
        time_in_force=TimeInForce(tif),
        asset_kind=AssetKind(kind),
        asset_id=units.decode_id(asset) if any(asset) else "",
        status=OrderStatus(status),
        limit_price=units.units_per_kwh_to_price(price),
        energy_kwh=units.wh_to_kwh(quantity),
        remaining_kwh=units.wh_to_kwh(remaining),
    )
