"""The API's request and response models: the contract with clients and the OpenAPI schema.

Units: power kW (load convention: positive = consumption), energy kWh, prices tokens per
kWh, token amounts as exact decimal strings, times UTC Unix seconds, slots as the
community's slot index (Unix time // slot length).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from contracts.ledger import PHASE_NAMES, Reading

MAX_SLOT = 2**32 - 1  # the contracts keep slots in uint32
MAX_TIME = 2**32 - 1  # Unix seconds up to 2106: their minutes fit the contracts' uint32
Tokens = str  # an exact decimal amount of tokens, e.g. "12.5"


class Terms(BaseModel):
    import_price: float
    export_price: float
    penalty_price: float


class CommunityInfo(BaseModel):
    name: str
    chain_id: int
    head: int
    now: int
    slot_minutes: int
    current_slot: int
    gate_closure_lead_s: int  # orders for a slot close this long before it starts
    contracts: dict[str, str]
    members: int
    terms: Terms


class BandNow(BaseModel):
    p_min_kw: float
    p_max_kw: float
    source: str


class FlexibilityInfo(BaseModel):
    flex_id: str
    owner: str
    bus: int
    kind: str
    p_low_kw: float
    p_high_kw: float
    priority_group: int
    meter_id: str | None
    active: bool
    band_now: BandNow | None = None


class BandPoint(BaseModel):
    time: int
    p_min_kw: float
    p_max_kw: float


class SchedulePoint(BaseModel):
    slot: int
    start: int
    end: int
    matched_net_kwh: float
    avg_kw: float


class FlexibilityBands(BaseModel):
    flex_id: str
    points: list[BandPoint]
    schedule: list[SchedulePoint] = []


class BandsAnswer(BaseModel):
    from_time: int
    to_time: int
    flexibilities: list[FlexibilityBands]


class BookEntry(BaseModel):
    order_id: int
    owner: str
    side: Literal["buy", "sell"]
    asset_id: str
    asset_kind: Literal["meter", "flexibility"]
    price: float
    energy_kwh: float
    remaining_kwh: float
    status: str


class OrderBook(BaseModel):
    slot: int
    start: int
    gate_closure: int
    bids: list[BookEntry]
    asks: list[BookEntry]


class TradeInfo(BaseModel):
    trade_id: int
    slot: int
    buy_order: int
    sell_order: int
    buyer: str
    seller: str
    energy_kwh: float
    curtailed_kwh: float
    price: float


class SlotPrice(BaseModel):
    slot: int
    trades: int
    energy_kwh: float
    vwap: float | None
    last: float | None
    auction_price: float | None


class TariffLine(BaseModel):
    meter_id: str
    bus: int
    consumed_kwh: float
    price: str = Field(description="tokens per kWh")
    charge: Tokens


class Statement(BaseModel):
    member: str
    slot: int
    traded_kwh: float
    metered_kwh: float
    missing_minutes: int
    imbalance_kwh: float
    charge: Tokens
    credit: Tokens
    penalty: Tokens
    paid_to_treasury: Tokens
    paid_by_treasury: Tokens
    debt: Tokens
    credit_owed: Tokens
    tariff: Tokens = Field(description="the DSO's dynamic tariff on the slot's metered consumption")
    paid_for_tariff: Tokens
    tariff_debt: Tokens
    tariff_lines: list[TariffLine] = Field(default_factory=list, description="per meter")


class Violation(BaseModel):
    flex_id: str
    slot: int
    owner: str
    outside_kwh: float
    metered_kwh: float
    readings: int
    p_min_kw: float
    p_max_kw: float


class FeederBusInfo(BaseModel):
    bus: int
    name: str
    vn_kv: float
    x: float
    y: float


class FeederBranchInfo(BaseModel):
    kind: str
    index: int
    from_bus: int
    to_bus: int
    name: str


class PlacedMeter(BaseModel):
    meter_id: str
    bus: int


class PlacedFlexibility(BaseModel):
    flex_id: str
    bus: int
    kind: str


class FeederInfo(BaseModel):
    name: str
    buses: list[FeederBusInfo]
    branches: list[FeederBranchInfo]
    meters: list[PlacedMeter]
    flexibilities: list[PlacedFlexibility]


# ------------------------------------------------------------------ sign-in


class Nonce(BaseModel):
    nonce: str
    chain_id: int
    expires_in: int


class SignIn(BaseModel):
    message: str = Field(max_length=4000, description="the EIP-4361 message the wallet signed")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$", description="personal_sign signature, 65 bytes")


class SignedIn(BaseModel):
    token: str
    address: str
    expires: int
    roles: list[str]


# ---------------------------------------------------------------- members


class MeterInfo(BaseModel):
    meter_id: str
    bus: int
    active: bool


class Me(BaseModel):
    address: str
    name: str
    roles: list[str]
    meters: list[MeterInfo]
    flexibilities: list[FlexibilityInfo]


class Balance(BaseModel):
    wallet_tokens: Tokens
    deposit_free: Tokens
    deposit_locked: Tokens
    debt: Tokens
    credit: Tokens


class PhaseInfo(BaseModel):
    """One phase of a reading (kW, kvar, load convention; pu; degrees in the feeder's reference)."""

    p_kw: float
    q_kvar: float
    v_pu: float
    theta_deg: float


class ReadingInfo(BaseModel):
    meter_id: str
    time: int
    p_kw: float
    q_kvar: float
    v_pu: float
    theta_deg: float
    phases: dict[Literal["L1", "L2", "L3"], PhaseInfo] | None = Field(
        default=None,
        description="per phase, from a meter that measures per phase: the phases it measures "
        "(a single-phase meter: one); null for a balanced three-phase total",
    )

    @classmethod
    def of(cls, reading: Reading) -> ReadingInfo:
        phases = None
        if reading.phases is not None:
            phases = {
                name: PhaseInfo(**vars(phase))
                for name, phase in zip(PHASE_NAMES, reading.phases, strict=True)
                if phase is not None
            }
        totals = ("meter_id", "time", "p_kw", "q_kvar", "v_pu", "theta_deg")
        return cls(**{name: getattr(reading, name) for name in totals}, phases=phases)


class OrderInput(BaseModel):
    slot: int = Field(ge=0, le=MAX_SLOT)
    side: Literal["buy", "sell"]
    asset_id: str = Field(min_length=1, max_length=31, pattern=r"^[\x21-\x7e]+$")
    asset_kind: Literal["meter", "flexibility"] = "flexibility"
    energy_kwh: float = Field(gt=0, le=1_000_000)
    limit_price: Decimal = Field(ge=0, le=1_000_000, max_digits=30, decimal_places=6)
    time_in_force: Literal["good_till_cancelled", "immediate_or_cancel", "fill_or_kill", "all_or_none"] = (
        "good_till_cancelled"
    )


class TokensInput(BaseModel):
    tokens: Decimal = Field(gt=0, le=10**12, max_digits=31, decimal_places=18)


class UnsignedTransaction(BaseModel):
    """An EIP-1559 transaction for the caller's wallet to sign (integers as JSON numbers)."""

    to: str
    data: str
    value: int
    gas: int
    nonce: int
    maxFeePerGas: int
    maxPriorityFeePerGas: int
    chainId: int
    type: int = 2


class Prepared(BaseModel):
    transactions: list[UnsignedTransaction]
    summary: str


class RawTransaction(BaseModel):
    raw: str = Field(pattern=r"^0x[0-9a-fA-F]+$", max_length=262_144)


class Relayed(BaseModel):
    hash: str


class TransactionStatus(BaseModel):
    hash: str
    status: Literal["pending", "success", "failed", "unknown"]
    block: int | None = None
    error: str | None = None
    detail: str | None = None


class OrderInfo(BookEntry):
    """One of my orders, with its slot and why it closed."""

    slot: int
    close_reason: str | None


# ------------------------------------------------------------------- DSO


class LimitationInput(BaseModel):
    flex_id: str = Field(min_length=1, max_length=31, pattern=r"^[\x21-\x7e]+$")
    start: int = Field(ge=0, le=MAX_TIME, description="Unix seconds, minute-aligned")
    end: int = Field(ge=0, le=MAX_TIME)
    p_min_kw: float = Field(ge=-100_000, le=100_000)
    p_max_kw: float = Field(ge=-100_000, le=100_000)
    kind: Literal["foreseen", "unforeseen"] = "foreseen"
    reason: str = Field(default="", max_length=200)

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: int, info) -> int:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("must be after start")
        return end


class LimitationInfo(BaseModel):
    limitation_id: int
    flex_id: str
    start: int
    end: int
    p_min_kw: float
    p_max_kw: float
    block_number: int


class SlotInfo(BaseModel):
    slot: int
    start: int
    end: int
    gate_closure: int
    open_bids: int
    open_asks: int
    trades: int
    energy_kwh: float
    finalized: bool
    auction_price: float | None


class MarketSettings(BaseModel):
    clearing_mode: str
    paused: bool
    slot_minutes: int
    current_slot: int
    gate_closure_next_slot: int
    terms: Terms


# ------------------------------------------------------------------ tariffs and flexibility market

MAX_HOUR = 2**32 - 1  # Unix hour indices (Unix seconds // 3600) in uint32


class TariffInfo(BaseModel):
    bus: int
    hour: int = Field(description="Unix hour index (Unix seconds // 3600)")
    start: int = Field(description="Unix seconds the hour starts")
    price: str = Field(description="tokens per kWh of metered consumption at the bus in that hour")


class TariffInput(BaseModel):
    bus: int = Field(ge=0, le=2**32 - 1)
    hour: int = Field(ge=0, le=MAX_HOUR, description="Unix hour index")
    price: Decimal = Field(ge=0, le=10, max_digits=30, decimal_places=18, description="tokens per kWh")


class TariffsInput(BaseModel):
    tariffs: list[TariffInput] = Field(min_length=1, max_length=96)


class FlexibilityBidInfo(BaseModel):
    bid_id: int
    aggregator: str
    load_point: int
    price: str = Field(description="tokens per kW")
    kw: float
    payback_hour: int
    payback_kw: float
    meters: list[str]
    fraction: float = Field(description="cleared share in [0, 1]")
    cleared_kw: float
    settled: bool


class RequirementInfo(BaseModel):
    requirement_id: int
    dso: str
    hour: int
    start: int
    load_points: list[int]
    min_kw: float
    payback_hours: list[int]
    payback_cap: float
    price_cap: str
    bid_deadline: int
    escrow: str
    paid: str
    cleared: bool
    refunded: bool
    bids: list[FlexibilityBidInfo]


class FlexibilityBidInput(BaseModel):
    requirement_id: int = Field(ge=1, le=2**32 - 1)
    load_point: int = Field(ge=0, le=2**32 - 1, description="bus, one of the requirement's")
    price: Decimal = Field(ge=0, le=1000, max_digits=30, decimal_places=18, description="tokens per kW")
    kw: float = Field(gt=0, le=100_000)
    payback_hour: int = Field(ge=0, le=MAX_HOUR)
    payback_kw: float = Field(ge=0, le=100_000)
    meters: list[str] = Field(min_length=1, max_length=8)


class RequirementInput(BaseModel):
    hour: int = Field(ge=0, le=MAX_HOUR, description="congestion hour (Unix hour index)")
    load_points: list[int] = Field(min_length=1, max_length=8, description="buses")
    min_kw: float = Field(gt=0, le=100_000)
    payback_hours: list[int] = Field(default_factory=list, max_length=8)
    payback_cap: float = Field(default=1.5, ge=0, le=5)
    price_cap: Decimal = Field(gt=0, le=1000, max_digits=30, decimal_places=18, description="tokens per kW")
    bid_deadline: int = Field(ge=0, le=MAX_TIME, description="Unix seconds")
