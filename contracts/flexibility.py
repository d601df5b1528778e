"""Typed binding of ``FlexibilityMarket``: the transactive flexibility market of seeds/000.

Python units: power in kW, prices in tokens per kW (``Decimal``), token amounts in tokens,
hours as Unix hour indices (``contracts.tariff.hour_of``), deadlines in UTC Unix seconds,
fractions in [0, 1]. ``Requirement`` and ``Bid`` carry the same fields as
``market.pricing.tfm.Requirement``/``Bid`` for one congestion hour (load points are buses);
the rules (baseline, delivery, escrow) are in the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import units
from contracts.binding import ContractBinding
from contracts.client import Signer

PPM = 1_000_000
PERMILLE = 1000


def fraction_to_ppm(fraction: float) -> int:
    """A cleared fraction in [0, 1] → ppm, as the chain takes it."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise units.UnitError(f"fraction {fraction!r} is not in [0, 1]")
    return round(float(fraction) * PPM)


def escrow_units(min_kw: float, price_cap: Decimal | str) -> int:
    """The budget (token units) a requirement escrows: ``ceil(minW · priceCap / 1000)``."""
    return -(-units.kw_to_w(min_kw) * units.tokens_to_units(price_cap) // 1000)


@dataclass(frozen=True)
class Requirement:
    """A DSO's requirement for one congestion hour; ``payback_cap`` is payback kW per kW of
    flexibility (1.5 = 150 %), ``price_cap`` tokens per kW, ``bid_deadline`` Unix seconds."""

    hour: int
    load_points: tuple[int, ...]
    min_kw: float
    payback_hours: frozenset[int]
    payback_cap: float
    price_cap: Decimal
    bid_deadline: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "load_points", tuple(self.load_points))
        object.__setattr__(self, "payback_hours", frozenset(self.payback_hours))

    def to_chain(self) -> tuple:
        return (
            self.hour,
            self.bid_deadline,
            units.kw_to_w(self.min_kw),
            units.tokens_to_units(self.price_cap),
            round(self.payback_cap * PERMILLE),
            list(self.load_points),
            sorted(self.payback_hours),
        )


@dataclass(frozen=True)
class PostedRequirement:
    """A requirement on chain: what the DSO posted, its escrow and what was paid from it."""

    requirement_id: int
    dso: str
    requirement: Requirement
    baseline_hour: int
    cleared: bool
    refunded: bool
    escrow: Decimal
    paid: Decimal
    cleared_bids: int
    settled_bids: int
    bid_ids: tuple[int, ...]


@dataclass(frozen=True)
class Bid:
    """An aggregator's bid on requirement ``requirement_id``: ``price`` tokens per kW, ``kw``
    of reduction at its load point, one payback hour and kW, and the meters that deliver it."""

    requirement_id: int
    load_point: int
    price: Decimal
    kw: float
    payback_hour: int
    payback_kw: float
    meters: tuple[str, ...]

    def to_chain(self) -> tuple:
        return (
            self.requirement_id,
            self.load_point,
            units.tokens_to_units(self.price),
            units.kw_to_w(self.kw),
            self.payback_hour,
            units.kw_to_w(self.payback_kw),
            [units.encode_id(meter) for meter in self.meters],
        )


@dataclass(frozen=True)
class PlacedBid:
    bid_id: int
    aggregator: str
    bid: Bid
    fraction: float
    cleared_kw: float
    settled: bool


@dataclass(frozen=True)
class BidSettlement:
    """A settled bid: average kW of its meters (baseline, metered), kW paid for, tokens paid."""

    bid_id: int
    requirement_id: int
    aggregator: str
    baseline_kw: float
    metered_kw: float
    delivered_kw: float
    payment: Decimal


class FlexibilityMarket(ContractBinding):
    """``FlexibilityMarket``: requirements with escrow, bids, clearing, pay-as-bid on delivery."""

    CONTRACT = "FlexibilityMarket"

    def authorize_aggregator_call(self, meter_id: str, aggregator: str) -> ContractFunction:
        return self._function("authorizeAggregator", units.encode_id(meter_id), aggregator)

    def authorize_aggregator(self, owner: Signer, meter_id: str, aggregator: str) -> TxReceipt:
        """Let ``aggregator`` bid with ``owner``'s meter (zero address: withdraw the consent)."""
        return self._transact(owner, self.authorize_aggregator_call(meter_id, aggregator))

    def aggregator_of(self, meter_id: str) -> str:
        return self._view("aggregatorOf", units.encode_id(meter_id))

    def post_requirement_call(self, requirement: Requirement) -> ContractFunction:
        return self._function("postRequirement", requirement.to_chain())

    def post_requirement(self, dso: Signer, requirement: Requirement) -> int:
        """Post ``requirement`` (approve ``escrow_units`` for this contract first); its id."""
        receipt = self._transact(dso, self.post_requirement_call(requirement))
        return self._logs("RequirementPosted", receipt)[0]["id"]

    def place_bid_call(self, bid: Bid) -> ContractFunction:
        return self._function("placeBid", bid.to_chain())

    def place_bid(self, aggregator: Signer, bid: Bid) -> int:
        """Place ``bid``; its id."""
        receipt = self._transact(aggregator, self.place_bid_call(bid))
        return self._logs("BidPlaced", receipt)[0]["bidId"]

    def clear_call(self, requirement_id: int, fractions: Sequence[float]) -> ContractFunction:
        return self._function("clear", requirement_id, [fraction_to_ppm(f) for f in fractions])

    def clear(self, operator: Signer, requirement_id: int, fractions: Sequence[float]) -> TxReceipt:
        """Post the cleared fraction of every bid of the requirement, in bid order."""
        return self._transact(operator, self.clear_call(requirement_id, fractions))

    def settle_bid_call(self, bid_id: int) -> ContractFunction:
        return self._function("settleBid", bid_id)

    def settle_bid(self, caller: Signer, bid_id: int) -> BidSettlement:
        """Pay cleared bid ``bid_id`` for what its meters delivered (once its hour is final)."""
        args = self._logs("BidSettled", self._transact(caller, self.settle_bid_call(bid_id)))[0]
        return BidSettlement(
            bid_id=args["bidId"],
            requirement_id=args["requirement"],
            aggregator=args["aggregator"],
            baseline_kw=units.w_to_kw(args["baselineW"]),
            metered_kw=units.w_to_kw(args["meteredW"]),
            delivered_kw=units.w_to_kw(args["deliveredW"]),
            payment=units.units_to_tokens(args["payment"]),
        )

    def refund_call(self, requirement_id: int) -> ContractFunction:
        return self._function("refund", requirement_id)

    def refund(self, caller: Signer, requirement_id: int) -> Decimal:
        """Return what the requirement did not pay to its DSO; the tokens returned."""
        receipt = self._transact(caller, self.refund_call(requirement_id))
        return units.units_to_tokens(self._logs("EscrowRefunded", receipt)[0]["amount"])

    def requirement_count(self) -> int:
        """Requirements posted so far; their ids are 1..count."""
        return self._view("requirementCount")

    def bid_count(self) -> int:
        """Bids placed so far; their ids are 1..count."""
        return self._view("bidCount")

    def requirement(self, requirement_id: int) -> PostedRequirement:
        raw = self._view("requirementOf", requirement_id)
        (dso, hour, baseline_hour, payback_cap, cleared, refunded, deadline, min_w, price_cap) = raw[:9]
        escrow, paid, cleared_bids, settled_bids, load_points, payback_hours, bid_ids = raw[9:]
        requirement = Requirement(
            hour=hour,
            load_points=tuple(load_points),
            min_kw=units.w_to_kw(min_w),
            payback_hours=frozenset(payback_hours),
            payback_cap=payback_cap / PERMILLE,
            price_cap=units.units_to_tokens(price_cap),
            bid_deadline=deadline,
        )
        tokens = units.units_to_tokens
        return PostedRequirement(
            requirement_id, dso, requirement, baseline_hour, cleared, refunded, tokens(escrow), tokens(paid),
            cleared_bids, settled_bids, tuple(bid_ids),
        )  # fmt: skip

    def bid(self, bid_id: int) -> PlacedBid:
        raw = self._view("bidOf", bid_id)
        aggregator, requirement_id, bus, payback_hour, price, offered_w, payback_w = raw[:7]
        cleared_w, fraction_ppm, settled, meters = raw[7:]
        bid = Bid(
            requirement_id=requirement_id,
            load_point=bus,
            price=units.units_to_tokens(price),
            kw=units.w_to_kw(offered_w),
            payback_hour=payback_hour,
            payback_kw=units.w_to_kw(payback_w),
            meters=tuple(units.decode_id(meter) for meter in meters),
        )
        return PlacedBid(bid_id, aggregator, bid, fraction_ppm / PPM, units.w_to_kw(cleared_w), settled)

    def final_time(self, hour: int) -> int:
        """When the meter data of Unix hour ``hour`` are final (UTC Unix seconds)."""
        return self._view("finalTime", hour)

    def measure(self, meter_ids: Sequence[str], hour: int, baseline_hour: int) -> tuple[float, float]:
        """(baseline kW, metered kW) of ``meter_ids`` as ``settle_bid`` computes them."""
        baseline_w, metered_w = self._view(
            "measure", [units.encode_id(meter) for meter in meter_ids], hour, baseline_hour
        )
        return units.w_to_kw(baseline_w), units.w_to_kw(metered_w)
