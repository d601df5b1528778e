"""Typed binding of ``Settlement``: metered against traded energy after delivery, paid in
the community token. Energy in kWh, money in tokens (``Decimal``); the rules are in the
contract and ``docs/market.md``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import clock, units
from contracts.binding import ContractBinding
from contracts.client import Signer


@dataclass(frozen=True)
class GridPrices:
    """Import and export price of the grid in tokens per kWh."""

    import_price: Decimal
    export_price: Decimal


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


class Settlement(ContractBinding):
    """``Settlement``: each member's slot settled once it is final."""

    CONTRACT = "Settlement"

    def final_time(self, slot: int) -> int:
        """When ``slot`` can be settled (Unix seconds)."""
        return self._view("finalTime", slot)

    def set_treasury_call(self, treasury: str) -> ContractFunction:
        return self._function("setTreasury", treasury)

    def set_treasury(self, operator: Signer, treasury: str) -> TxReceipt:
        return self._transact(operator, self.set_treasury_call(treasury))

    def set_grid_prices(
        self, operator: Signer, from_slot: int, import_price: Decimal | str, export_price: Decimal | str
    ) -> TxReceipt:
        """Grid prices in tokens per kWh from ``from_slot`` on (a future slot)."""
        return self._transact(operator, self.set_grid_prices_call(from_slot, import_price, export_price))

    def set_grid_prices_call(
        self, from_slot: int, import_price: Decimal | str, export_price: Decimal | str
    ) -> ContractFunction:
        return self._function(
            "setGridPrices",
            from_slot,
            units.price_to_units_per_kwh(import_price),
            units.price_to_units_per_kwh(export_price),
        )

    def set_finality_delay(self, operator: Signer, delay_seconds: int) -> TxReceipt:
        minutes = clock.duration_minutes(delay_seconds)
        return self._transact(operator, self._function("setFinalityDelay", minutes))

    def settle_call(self, slot: int, members: Sequence[str]) -> ContractFunction:
        return self._function("settle", slot, list(members))

    def settle(self, caller: Signer, slot: int, members: Sequence[str]) -> SettlementResult:
        """Settle ``members`` for the final ``slot``; members settled before are skipped."""
        receipt = self._transact(caller, self.settle_call(slot, members))
        paid = {event["member"]: event for event in self._logs("MemberPaid", receipt)}
        settled = []
        for event in self._logs("MemberSettled", receipt):
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
            for event in self._logs("BandViolation", receipt)
        ]
        return SettlementResult(settled, violations, receipt)

    def settle_debts(self, caller: Signer, member: str) -> TxReceipt:
        return self._transact(caller, self._function("settleDebts", member))

    def is_settled(self, member: str, slot: int) -> bool:
        return self._view("isSettled", member, slot)

    def debt_of(self, member: str) -> Decimal:
        """Tokens ``member`` owes the treasury and has not paid."""
        return units.units_to_tokens(self._view("debtOf", member))

    def credit_of(self, member: str) -> Decimal:
        """Tokens the treasury owes ``member`` and has not paid."""
        return units.units_to_tokens(self._view("creditOf", member))

    def violations(self, flex_id: str) -> tuple[int, float]:
        """(count, kWh outside the band) of ``flex_id`` over every settled slot."""
        count, watt_minutes = self._view("violations", units.encode_id(flex_id))
        return count, units.watt_minutes_to_kwh(watt_minutes)

    def grid_prices_at(self, slot: int) -> GridPrices:
        """The grid prices in force for ``slot``."""
        _, import_units, export_units = self._view("gridPricesAt", slot)
        return GridPrices(
            units.units_per_kwh_to_price(import_units), units.units_per_kwh_to_price(export_units)
        )
