"""Typed access to the energy market and the settlement: Python units in, chain integers out.

Energy in kWh, prices in tokens per kWh, token amounts in tokens (``Decimal``), times in
UTC Unix seconds; a delivery slot is its index (``slot = Unix minute // slot_minutes``).
Every conversion goes through ``contracts.units``. The rules themselves (matching, escrow,
curtailment, settlement) are in the contracts and ``docs/market.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import units
from contracts.client import ChainClient, Signer
from contracts.deploy import Deployment

MAX_ALLOWANCE = 2**256 - 1


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


class ClearingMode(enum.IntEnum):
    CONTINUOUS = 0
    CALL_AUCTION = 1


def trade_value(energy_wh: int, price_units_per_kwh: int) -> int:
    """Token units a trade of ``energy_wh`` at ``price_units_per_kwh`` is worth (the chain's rule)."""
    return energy_wh * price_units_per_kwh // 1000


def escrow_units(energy_wh: int, limit_price_units_per_kwh: int) -> int:
    """Token units a buy order escrows: ``ceil(Wh · price / 1000)`` (the chain's rule)."""
    return -(-energy_wh * limit_price_units_per_kwh // 1000)


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
    bought_kwh: float
    sold_kwh: float
    proceeds: Decimal
    released: bool


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
    closures: list[Closure]
    done: bool


@dataclass(frozen=True)
class AuctionResult:
    slot: int
    price: Decimal
    volume_kwh: float
    fills: list[Fill]
    closures: list[Closure]


@dataclass(frozen=True)
class MemberSettlement:
    """One member's settled slot: energy in kWh, money in tokens (+ = member pays)."""

    member: str
    slot: int
    traded_kwh: float
    metered_kwh: float
    imbalance_kwh: float
    imbalance_amount: Decimal
    proceeds: Decimal
    paid_to_treasury: Decimal
    paid_by_treasury: Decimal
    proceeds_paid_out: Decimal
    debt: Decimal
    credit: Decimal


@dataclass(frozen=True)
class BandViolation:
    flex_id: str
    slot: int
    owner: str
    outside_kwh: float
    metered_kwh: float
    readings: int
    p_min_kw: float
    p_max_kw: float


@dataclass(frozen=True)
class SettlementResult:
    members: list[MemberSettlement]
    violations: list[BandViolation]
    receipt: TxReceipt


class Market:
    """The energy market and settlement of one deployed community, in Python units."""

    def __init__(self, client: ChainClient, deployment: Deployment):
        self.client = client
        self.deployment = deployment
        self.slot_minutes = deployment.config.slot_minutes
        addresses = deployment.addresses
        self.market = client.contract("EnergyMarket", addresses["EnergyMarket"])
        self.settlement = client.contract("Settlement", addresses["Settlement"])
        self.token = client.contract("CommunityToken", addresses["CommunityToken"])

    # ------------------------------------------------------------------- time

    def slot_start(self, slot: int) -> int:
        return units.slot_start(slot, self.slot_minutes)

    def slot_of(self, unix_seconds: float) -> int:
        return units.slot_of_time(unix_seconds, self.slot_minutes)

    def gate_closure_time(self, slot: int) -> int:
        """When orders for ``slot`` stop being accepted (Unix seconds)."""
        return self.client.call(self.market.functions.gateClosureTime(slot))

    def final_time(self, slot: int) -> int:
        """When ``slot`` can be settled (Unix seconds)."""
        return self.client.call(self.settlement.functions.finalTime(slot))

    # ------------------------------------------------------------ configuration

    def set_clearing_mode(self, operator: Signer, mode: ClearingMode) -> TxReceipt:
        return self.client.transact(self.market.functions.setClearingMode(int(mode)), operator)

    def clearing_mode(self) -> ClearingMode:
        return ClearingMode(self.client.call(self.market.functions.clearingMode()))

    def set_gate_closure(self, operator: Signer, lead_seconds: int) -> TxReceipt:
        minutes = units.duration_minutes(lead_seconds)
        return self.client.transact(self.market.functions.setGateClosure(minutes), operator)

    def set_treasury(self, operator: Signer, treasury: str) -> TxReceipt:
        return self.client.transact(self.settlement.functions.setTreasury(treasury), operator)

    def set_grid_prices(
        self, operator: Signer, from_slot: int, import_price: Decimal | str, export_price: Decimal | str
    ) -> TxReceipt:
        """Grid prices in tokens per kWh from ``from_slot`` on (a future slot)."""
        return self.client.transact(
            self.set_grid_prices_call(from_slot, import_price, export_price), operator
        )

    def set_grid_prices_call(
        self, from_slot: int, import_price: Decimal | str, export_price: Decimal | str
    ) -> ContractFunction:
        return self.settlement.functions.setGridPrices(
            from_slot, units.price_to_units_per_kwh(import_price), units.price_to_units_per_kwh(export_price)
        )

    def set_finality_delay(self, operator: Signer, delay_seconds: int) -> TxReceipt:
        minutes = units.duration_minutes(delay_seconds)
        return self.client.transact(self.settlement.functions.setFinalityDelay(minutes), operator)

    # ------------------------------------------------------------------ token

    def approve(self, member: Signer, tokens: Decimal | str | None = None) -> list[TxReceipt]:
        """Let the market (escrow) and the settlement (imbalances) take ``member``'s tokens
        (unlimited when ``tokens`` is None)."""
        amount = MAX_ALLOWANCE if tokens is None else units.tokens_to_units(tokens)
        return [
            self.client.transact(self.token.functions.approve(spender.address, amount), member)
            for spender in (self.market, self.settlement)
        ]

    def escrow_for(self, request: OrderRequest) -> Decimal:
        """Tokens a buy order escrows when placed (0 for a sell)."""
        if request.side == Side.SELL:
            return Decimal(0)
        return units.units_to_tokens(escrow_units(request.quantity_wh, request.limit_price_units))

    def escrow_held(self) -> Decimal:
        """Tokens the market holds: open buy orders plus trades not yet settled."""
        return units.units_to_tokens(self.client.call(self.token.functions.balanceOf(self.market.address)))

    # ----------------------------------------------------------------- orders

    def insertion_hint(self, slot: int, side: Side, limit_price_units: int) -> int:
        return self.client.call(self.market.functions.insertionHint(slot, int(side), limit_price_units))

    def place_order_call(self, request: OrderRequest, hint: int | None = None) -> ContractFunction:
        """The call placing ``request``; the book position hint is read now unless given."""
        if hint is None:
            hint = self.insertion_hint(request.slot, request.side, request.limit_price_units)
        return self.market.functions.placeOrder(request.to_chain(), hint)

    def place_order(self, member: Signer, request: OrderRequest, hint: int | None = None) -> PlacedOrder:
        receipt = self.client.transact(self.place_order_call(request, hint), member)
        order_id = self.client.events(self.market, "OrderPlaced", receipt)[0]["orderId"]
        return PlacedOrder(
            order_id=order_id,
            fills=self._fills(receipt),
            closures=self._closures(receipt),
            status=self.order(order_id).status,
            receipt=receipt,
        )

    def cancel_order(self, member: Signer, order_id: int) -> Closure:
        receipt = self.client.transact(self.market.functions.cancelOrder(order_id), member)
        return self._closures(receipt)[0]

    def expire_orders(self, caller: Signer, slot: int) -> list[Closure]:
        """Close (up to a bounded number of) open orders of ``slot`` after its gate closed."""
        return self._closures(self.client.transact(self.market.functions.expireOrders(slot), caller))

    def clear_auction(self, caller: Signer, slot: int) -> AuctionResult:
        receipt = self.client.transact(self.market.functions.clearAuction(slot), caller)
        cleared = self.client.events(self.market, "AuctionCleared", receipt)[0]
        return AuctionResult(
            slot=slot,
            price=units.units_per_kwh_to_price(cleared["price"]),
            volume_kwh=units.wh_to_kwh(cleared["volumeWh"]),
            fills=self._fills(receipt),
            closures=self._closures(receipt),
        )

    def curtail(self, caller: Signer, flex_id: str, slot: int) -> CurtailResult:
        """Bring ``flex_id``'s schedule in ``slot`` back inside its band (see docs/market.md)."""
        call = self.market.functions.curtail(units.encode_id(flex_id), slot)
        done = self.client.call(call)[2]
        receipt = self.client.transact(call, caller)
        curtailments = [
            Curtailment(
                trade_id=event["tradeId"],
                flex_id=units.decode_id(event["flexibility"]),
                slot=event["slot"],
                curtailed_kwh=units.wh_to_kwh(event["curtailedWh"]),
                remaining_kwh=units.wh_to_kwh(event["remainingWh"]),
                refund=units.units_to_tokens(event["refund"]),
            )
            for event in self.client.events(self.market, "TradeCurtailed", receipt)
        ]
        return CurtailResult(curtailments, self._closures(receipt), done)

    # ------------------------------------------------------------------ views

    def order(self, order_id: int) -> Order:
        raw = self.client.call(self.market.functions.order(order_id))
        return _order(order_id, raw)

    def open_orders(self, slot: int, side: Side) -> list[Order]:
        """Open orders of ``slot`` on ``side``, best first."""
        ids = self.client.call(self.market.functions.openOrders(slot, int(side)))
        return [self.order(order_id) for order_id in ids]

    def position(self, account: str, slot: int) -> Position:
        bought, sold, proceeds, released = self.client.call(self.market.functions.position(account, slot))
        return Position(
            units.wh_to_kwh(bought), units.wh_to_kwh(sold), units.units_to_tokens(proceeds), released
        )

    def schedule(self, flex_id: str, slot: int) -> Schedule:
        raw = self.client.call(self.market.functions.schedule(units.encode_id(flex_id), slot))
        return Schedule(*(units.wh_to_kwh(value) for value in raw))

    # ------------------------------------------------------------- settlement

    def settle_call(self, slot: int, members: Sequence[str]) -> ContractFunction:
        return self.settlement.functions.settle(slot, list(members))

    def settle(self, caller: Signer, slot: int, members: Sequence[str]) -> SettlementResult:
        """Settle ``members`` for the final ``slot``; members settled before are skipped."""
        receipt = self.client.transact(self.settle_call(slot, members), caller)
        paid = {
            event["member"]: event for event in self.client.events(self.settlement, "MemberPaid", receipt)
        }
        settled = []
        for event in self.client.events(self.settlement, "MemberSettled", receipt):
            payment = paid[event["member"]]
            settled.append(
                MemberSettlement(
                    member=event["member"],
                    slot=event["slot"],
                    traded_kwh=units.wh_to_kwh(event["tradedWh"]),
                    metered_kwh=units.watt_minutes_to_kwh(event["meteredWattMinutes"]),
                    imbalance_kwh=units.watt_minutes_to_kwh(event["imbalanceWattMinutes"]),
                    imbalance_amount=units.units_to_tokens(event["imbalanceAmount"]),
                    proceeds=units.units_to_tokens(event["proceeds"]),
                    paid_to_treasury=units.units_to_tokens(payment["paidToTreasury"]),
                    paid_by_treasury=units.units_to_tokens(payment["paidByTreasury"]),
                    proceeds_paid_out=units.units_to_tokens(payment["proceedsPaidOut"]),
                    debt=units.units_to_tokens(payment["debt"]),
                    credit=units.units_to_tokens(payment["credit"]),
                )
            )
        violations = [
            BandViolation(
                flex_id=units.decode_id(event["flexibility"]),
                slot=event["slot"],
                owner=event["owner"],
                outside_kwh=units.watt_minutes_to_kwh(event["outsideWattMinutes"]),
                metered_kwh=units.watt_minutes_to_kwh(event["meteredWattMinutes"]),
                readings=event["readings"],
                p_min_kw=units.w_to_kw(event["pMinW"]),
                p_max_kw=units.w_to_kw(event["pMaxW"]),
            )
            for event in self.client.events(self.settlement, "BandViolation", receipt)
        ]
        return SettlementResult(settled, violations, receipt)

    def settle_debts(self, caller: Signer, member: str) -> TxReceipt:
        return self.client.transact(self.settlement.functions.settleDebts(member), caller)

    def is_settled(self, member: str, slot: int) -> bool:
        return self.client.call(self.settlement.functions.isSettled(member, slot))

    def debt_of(self, member: str) -> Decimal:
        """Tokens ``member`` owes the treasury and has not paid."""
        return units.units_to_tokens(self.client.call(self.settlement.functions.debtOf(member)))

    def credit_of(self, member: str) -> Decimal:
        """Tokens the treasury owes ``member`` and has not paid."""
        return units.units_to_tokens(self.client.call(self.settlement.functions.creditOf(member)))

    def violations(self, flex_id: str) -> tuple[int, float]:
        """(count, kWh outside the band) of ``flex_id`` over every settled slot."""
        count, watt_minutes = self.client.call(self.settlement.functions.violations(units.encode_id(flex_id)))
        return count, units.watt_minutes_to_kwh(watt_minutes)

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
            for event in self.client.events(self.market, "TradeExecuted", receipt)
        ]

    def _closures(self, receipt: TxReceipt) -> list[Closure]:
        return [
            Closure(
                order_id=event["orderId"],
                reason=CloseReason(event["reason"]),
                remaining_kwh=units.wh_to_kwh(event["remainingWh"]),
                refund=units.units_to_tokens(event["refund"]),
            )
            for event in self.client.events(self.market, "OrderClosed", receipt)
        ]


def _order(order_id: int, raw: Sequence) -> Order:
    owner, slot, side, tif, kind, status, asset, price, quantity, remaining, _, _ = raw
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
