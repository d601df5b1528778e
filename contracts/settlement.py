"""Typed binding of ``Settlement``: the members' deposits, and metered against traded energy
after delivery. Energy in kWh, money in tokens (``Decimal``); the rules are in the contract
and ``docs/market.md``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import units
from contracts.binding import ContractBinding
from contracts.client import Signer
from contracts.events import ChainEvent, EventFollower

# The events a settlement transaction emits per member (settled, then paid), per meter charged
# the DSO's tariff, per member's tariff payment and per flexibility.
SETTLEMENT_EVENTS = ("MemberSettled", "MemberPaid", "TariffCharged", "TariffPaid", "BandViolation")


@dataclass(frozen=True)
class Terms:
    """Settlement terms: grid import and export price and the DSO's penalty for energy
    outside a band (tokens per kWh), and the consumption (kW) a missing meter minute counts as."""

    import_price: Decimal
    export_price: Decimal
    penalty_price: Decimal
    missing_minute_kw: float

    def to_chain(self, from_slot: int = 0) -> tuple:
        return (
            from_slot,
            units.kw_to_w(self.missing_minute_kw),
            units.price_to_units_per_kwh(self.import_price),
            units.price_to_units_per_kwh(self.export_price),
            units.price_to_units_per_kwh(self.penalty_price),
        )

    @classmethod
    def from_chain(cls, raw: Sequence[int]) -> Terms:
        _, missing_w, import_units, export_units, penalty_units = raw
        price = units.units_per_kwh_to_price
        return cls(price(import_units), price(export_units), price(penalty_units), units.w_to_kw(missing_w))


@dataclass(frozen=True)
class Deposit:
    """An account's deposit: free (withdrawable) and locked by the market, in tokens."""

    free: Decimal
    locked: Decimal


@dataclass(frozen=True)
class MemberSettlement:
    """One member's settled slot: energy in kWh, money in tokens. ``tariff`` is the DSO's
    dynamic tariff charged on its meters' consumption (``tariff_lines`` per meter),
    ``paid_for_tariff`` what went to the tariff payee and ``tariff_debt`` what it still owes."""

    member: str
    slot: int
    traded_kwh: float
    metered_kwh: float
    missing_minutes: int
    imbalance_kwh: float
    charge: Decimal
    credit: Decimal
    penalty: Decimal
    paid_to_treasury: Decimal
    paid_by_treasury: Decimal
    debt: Decimal
    credit_owed: Decimal
    tariff: Decimal = Decimal(0)
    paid_for_tariff: Decimal = Decimal(0)
    tariff_debt: Decimal = Decimal(0)
    tariff_lines: tuple[TariffLine, ...] = ()


@dataclass(frozen=True)
class TariffLine:
    """The tariff one meter was charged in a slot: consumption (kWh, missing minutes
    counted) at ``bus`` times ``price`` (tokens per kWh) = ``charge`` (tokens, rounded up)."""

    meter_id: str
    bus: int
    consumed_kwh: float
    price: Decimal
    charge: Decimal


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
    """``Settlement``: deposits, terms, and each member's slot settled once it is final."""

    CONTRACT = "Settlement"

    # --------------------------------------------------------------- deposits

    def deposit_call(self, tokens: Decimal | str) -> ContractFunction:
        return self._function("deposit", units.tokens_to_units(tokens))

    def deposit(self, account: Signer, tokens: Decimal | str) -> TxReceipt:
        """Move ``tokens`` of ``account`` into its deposit (approve the settlement first)."""
        return self._transact(account, self.deposit_call(tokens))

    def withdraw_call(self, tokens: Decimal | str) -> ContractFunction:
        return self._function("withdraw", units.tokens_to_units(tokens))

    def withdraw(self, account: Signer, tokens: Decimal | str) -> TxReceipt:
        return self._transact(account, self.withdraw_call(tokens))

    def deposit_of(self, account: str) -> Deposit:
        free, locked = self._view("accountOf", account)
        return Deposit(units.units_to_tokens(free), units.units_to_tokens(locked))

    def claim_credit(self, caller: Signer, member: str) -> TxReceipt:
        return self._transact(caller, self._function("claimCredit", member))

    # ------------------------------------------------------------------ terms

    def final_time(self, slot: int) -> int:
        """When ``slot`` can be settled (Unix seconds): its meter data deadline."""
        return self._view("finalTime", slot)

    def set_terms_call(self, from_slot: int, terms: Terms) -> ContractFunction:
        return self._function("setTerms", terms.to_chain(from_slot))

    def set_terms(self, operator: Signer, from_slot: int, terms: Terms) -> TxReceipt:
        """Terms from ``from_slot`` on (a slot at least the notice period ahead)."""
        return self._transact(operator, self.set_terms_call(from_slot, terms))

    def terms_at(self, slot: int) -> Terms:
        return Terms.from_chain(self._view("termsAt", slot))

    def collateral_price_units(self, slot: int) -> int:
        """Token units per kWh at which a sell of ``slot`` is collateralised."""
        return self._view("collateralPrice", slot)

    def set_treasury(self, admin: Signer, treasury: str, from_slot: int) -> TxReceipt:
        return self._transact(admin, self._function("setTreasury", treasury, from_slot))

    def treasury_at(self, slot: int) -> str:
        return self._view("treasuryAt", slot)

    # ------------------------------------------------------------- settlement

    def settle_call(self, slot: int, members: Sequence[str]) -> ContractFunction:
        return self._function("settle", slot, list(members))

    def settle(self, caller: Signer, slot: int, members: Sequence[str]) -> SettlementResult:
        """Settle ``members`` for the final ``slot``; members settled before are skipped."""
        receipt = self._transact(caller, self.settle_call(slot, members))
        settled, violations = settlement_records(self._receipt_events(SETTLEMENT_EVENTS, receipt))
        return SettlementResult(settled, violations, receipt)

    def follow_settlements(self, from_block: int) -> EventFollower[ChainEvent]:
        """The settlement's events from ``from_block`` on (``SETTLEMENT_EVENTS``), raw;
        ``settlement_records`` turns them into statements and violations."""
        return self._follower(SETTLEMENT_EVENTS, from_block, lambda event: event)

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

    def tariff_debt_of(self, member: str) -> Decimal:
        """Tokens ``member`` owes the tariff payee and has not paid."""
        return units.units_to_tokens(self._view("tariffDebtOf", member))

    def tariff_charged(self, slot: int) -> Decimal:
        """Tariff charged to members in ``slot``'s settlement so far, in tokens."""
        return units.units_to_tokens(self._view("tariffCharged", slot))

    def slot_flows(self, slot: int) -> tuple[Decimal, Decimal]:
        """(charged for, credited by) the treasury in ``slot``'s settlement so far, in tokens."""
        charged, credited = self._view("slotFlows", slot)
        return units.units_to_tokens(charged), units.units_to_tokens(credited)


def settlement_records(events: Sequence[ChainEvent]) -> tuple[list[MemberSettlement], list[BandViolation]]:
    """Members' statements and band violations from settlement events in chain order (each
    ``MemberSettled`` is joined with the ``MemberPaid``, ``TariffPaid`` and ``TariffCharged``
    of the same member and transaction)."""
    tokens = units.units_to_tokens
    paid, tariff_paid, lines = {}, {}, {}
    for event in events:
        key = (event.transaction_hash, event.args.get("member"))
        if event.name == "MemberPaid":
            paid[key] = event.args
        elif event.name == "TariffPaid":
            tariff_paid[key] = event.args
        elif event.name == "TariffCharged":
            lines.setdefault(key, []).append(_tariff_line(event.args))
    settled, violations = [], []
    for event in events:
        args = event.args
        if event.name == "MemberSettled":
            key = (event.transaction_hash, args["member"])
            payment = paid[key]
            tariff = tariff_paid.get(key, {"charge": 0, "paid": 0, "debt": 0})
            settled.append(
                MemberSettlement(
                    member=args["member"],
                    slot=args["slot"],
                    traded_kwh=units.wh_to_kwh(args["tradedWh"]),
                    metered_kwh=units.watt_minutes_to_kwh(args["meteredWattMinutes"]),
                    missing_minutes=args["missingMinutes"],
                    imbalance_kwh=units.watt_minutes_to_kwh(args["imbalanceWattMinutes"]),
                    charge=tokens(args["charge"]),
                    credit=tokens(args["credit"]),
                    penalty=tokens(args["penalty"]),
                    paid_to_treasury=tokens(payment["paidToTreasury"]),
                    paid_by_treasury=tokens(payment["paidByTreasury"]),
                    debt=tokens(payment["debt"]),
                    credit_owed=tokens(payment["credit"]),
                    tariff=tokens(tariff["charge"]),
                    paid_for_tariff=tokens(tariff["paid"]),
                    tariff_debt=tokens(tariff["debt"]),
                    tariff_lines=tuple(lines.get(key, ())),
                )
            )
        elif event.name == "BandViolation":
            violations.append(
                BandViolation(
                    flex_id=units.decode_id(args["flexibility"]),
                    slot=args["slot"],
                    owner=args["owner"],
                    outside_kwh=units.watt_minutes_to_kwh(args["outsideWattMinutes"]),
                    metered_kwh=units.watt_minutes_to_kwh(args["meteredWattMinutes"]),
                    readings=args["readings"],
                    p_min_kw=units.w_to_kw(args["pMinW"]),
                    p_max_kw=units.w_to_kw(args["pMaxW"]),
                )
            )
    return settled, violations


def _tariff_line(args: dict) -> TariffLine:
    return TariffLine(
        meter_id=units.decode_id(args["meter"]),
        bus=args["bus"],
        consumed_kwh=units.watt_minutes_to_kwh(args["wattMinutes"]),
        price=units.units_per_kwh_to_price(args["price"]),
        charge=units.units_to_tokens(args["charge"]),
    )
