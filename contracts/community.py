"""Typed access to a deployed community: Python units in, chain integers out.

Services (gateway, OCM, market) and the command line use this instead of calling the
contracts by hand; every unit conversion goes through ``contracts.units``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils import keccak
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import units
from contracts.client import ChainClient, Signer
from contracts.deploy import Deployment


class Role(bytes, enum.Enum):
    """On-chain role identifiers (must match contracts/Roles.sol)."""

    ADMIN = bytes(32)
    DSO = keccak(text="DSO_ROLE")
    OCM_ORACLE = keccak(text="OCM_ORACLE_ROLE")
    GATEWAY = keccak(text="GATEWAY_ROLE")
    MARKET_OPERATOR = keccak(text="MARKET_OPERATOR_ROLE")
    AGGREGATOR = keccak(text="AGGREGATOR_ROLE")
    MEMBER = keccak(text="MEMBER_ROLE")


class FlexKind(enum.IntEnum):
    """Kinds of flexibility (must match ICommunityRegistry.FlexKind)."""

    BATTERY = 0
    EV_CHARGER = 1
    HEAT_PUMP = 2
    PV = 3
    OTHER = 4


class BandSource(enum.IntEnum):
    """Where a band in force comes from (must match CapacityLimits.BandSource)."""

    HARDWARE_BOUNDS = 0
    OCM = 1
    DSO = 2
    OCM_AND_DSO = 3


class LimitationKind(enum.IntEnum):
    FORESEEN = 0
    UNFORESEEN = 1


@dataclass(frozen=True)
class Meter:
    meter_id: str
    bus: int
    member: str
    signer: str
    active: bool = True


@dataclass(frozen=True)
class Flexibility:
    """A flexibility in Python units (kW, load convention)."""

    flex_id: str
    owner: str
    bus: int
    kind: FlexKind
    p_low_kw: float
    p_high_kw: float
    priority_group: int = 0
    meter_id: str | None = None
    active: bool = True


@dataclass(frozen=True)
class MeterReading:
    """One minute of one meter: time is UTC Unix seconds aligned to the minute."""

    meter_id: str
    time: int
    p_kw: float
    q_kvar: float
    v_pu: float
    theta_deg: float

    def to_chain(self) -> tuple:
        return (
            units.encode_id(self.meter_id),
            units.unix_minute(self.time),
            units.kw_to_w(self.p_kw),
            units.kvar_to_var(self.q_kvar),
            units.pu_to_micro_pu(self.v_pu),
            units.deg_to_micro_deg(self.theta_deg),
        )


@dataclass(frozen=True)
class Band:
    """A band ``[p_min_kw, p_max_kw]`` for one flexibility over ``[start, end)`` (Unix s)."""

    flex_id: str
    start: int
    end: int
    p_min_kw: float
    p_max_kw: float

    def to_chain(self) -> tuple:
        return (
            units.encode_id(self.flex_id),
            units.unix_minute(self.start),
            units.unix_minute(self.end),
            units.kw_to_w(self.p_min_kw),
            units.kw_to_w(self.p_max_kw),
        )


@dataclass(frozen=True)
class BandInForce:
    p_min_kw: float
    p_max_kw: float
    source: BandSource


@dataclass(frozen=True)
class SlotEnergy:
    readings: int
    active_kwh: float
    reactive_kvarh: float


class Community:
    """The contracts of one deployed community, spoken to in Python units."""

    def __init__(self, client: ChainClient, deployment: Deployment):
        self.client = client
        self.deployment = deployment
        self.slot_minutes = deployment.config.slot_minutes
        addresses = deployment.addresses
        self.registry = client.contract("CommunityRegistry", addresses["CommunityRegistry"])
        self.ledger = client.contract("MeasurementLedger", addresses["MeasurementLedger"])
        self.limits = client.contract("CapacityLimits", addresses["CapacityLimits"])
        self.token = client.contract("CommunityToken", addresses["CommunityToken"])

    # -------------------------------------------------------------- roles, members

    def grant_role_call(self, role: Role, account: str) -> ContractFunction:
        return self.registry.functions.grantRole(role.value, account)

    def grant_role(self, admin: Signer, role: Role, account: str) -> TxReceipt:
        return self.client.transact(self.grant_role_call(role, account), admin)

    def has_role(self, role: Role, account: str) -> bool:
        return self.client.call(self.registry.functions.hasRole(role.value, account))

    def add_member_call(self, account: str, name: str) -> ContractFunction:
        return self.registry.functions.addMember(account, units.encode_id(name))

    def add_member(self, admin: Signer, account: str, name: str) -> TxReceipt:
        return self.client.transact(self.add_member_call(account, name), admin)

    # ------------------------------------------------------- meters, flexibilities

    def register_meter_call(self, meter: Meter) -> ContractFunction:
        return self.registry.functions.registerMeter(
            units.encode_id(meter.meter_id), meter.bus, meter.member, meter.signer
        )

    def register_meter(self, admin: Signer, meter: Meter) -> TxReceipt:
        return self.client.transact(self.register_meter_call(meter), admin)

    def meter(self, meter_id: str) -> Meter:
        member, bus, active, signer = self.client.call(
            self.registry.functions.meter(units.encode_id(meter_id))
        )
        return Meter(meter_id, bus, member, signer, active)

    def meter_ids(self) -> list[str]:
        return [units.decode_id(raw) for raw in self.client.call(self.registry.functions.meterIds())]

    def register_flexibility(self, admin: Signer, flex: Flexibility) -> TxReceipt:
        return self.client.transact(self.register_flexibility_call(flex), admin)

    def register_flexibility_call(self, flex: Flexibility) -> ContractFunction:
        return self.registry.functions.registerFlexibility(
            units.encode_id(flex.flex_id),
            flex.owner,
            flex.bus,
            int(flex.kind),
            units.kw_to_w(flex.p_low_kw),
            units.kw_to_w(flex.p_high_kw),
            flex.priority_group,
            units.encode_id(flex.meter_id) if flex.meter_id else bytes(32),
        )

    def flexibility(self, flex_id: str) -> Flexibility:
        owner, bus, kind, group, active, p_low, p_high, meter = self.client.call(
            self.registry.functions.flexibility(units.encode_id(flex_id))
        )
        return Flexibility(
            flex_id=flex_id,
            owner=owner,
            bus=bus,
            kind=FlexKind(kind),
            p_low_kw=units.w_to_kw(p_low),
            p_high_kw=units.w_to_kw(p_high),
            priority_group=group,
            meter_id=units.decode_id(meter) if any(meter) else None,
            active=active,
        )

    def flexibility_ids(self) -> list[str]:
        return [units.decode_id(raw) for raw in self.client.call(self.registry.functions.flexibilityIds())]

    # ------------------------------------------------------------------ readings

    def record_readings_call(self, readings: Sequence[MeterReading]) -> ContractFunction:
        return self.ledger.functions.recordReadings([reading.to_chain() for reading in readings])

    def record_readings(self, gateway: Signer, readings: Sequence[MeterReading]) -> TxReceipt:
        return self.client.transact(self.record_readings_call(readings), gateway)

    def slot_energy(self, meter_id: str, slot: int) -> SlotEnergy:
        count, active, reactive = self.client.call(
            self.ledger.functions.slotEnergy(units.encode_id(meter_id), slot)
        )
        return SlotEnergy(count, units.watt_minutes_to_kwh(active), units.watt_minutes_to_kwh(reactive))

    def has_reading(self, meter_id: str, time: int) -> bool:
        return self.client.call(
            self.ledger.functions.hasReading(units.encode_id(meter_id), units.unix_minute(time))
        )

    # --------------------------------------------------------------------- bands

    def publish_bands_call(self, bands: Sequence[Band]) -> ContractFunction:
        return self.limits.functions.publishBands([band.to_chain() for band in bands])

    def publish_bands(self, ocm: Signer, bands: Sequence[Band]) -> TxReceipt:
        return self.client.transact(self.publish_bands_call(bands), ocm)

    def band_at(self, flex_id: str, time: int) -> BandInForce:
        minute = units.unix_minute(time - time % units.SECONDS_PER_MINUTE)
        p_min, p_max, source = self.client.call(
            self.limits.functions.bandAt(units.encode_id(flex_id), minute)
        )
        return BandInForce(units.w_to_kw(p_min), units.w_to_kw(p_max), BandSource(source))

    def tightest_band(self, flex_id: str, slot: int) -> tuple[float, float, bool]:
        """(p_min_kw, p_max_kw, every minute published) over market ``slot``."""
        p_min, p_max, published = self.client.call(
            self.limits.functions.tightestBand(units.encode_id(flex_id), slot)
        )
        return units.w_to_kw(p_min), units.w_to_kw(p_max), published

    # --------------------------------------------------------------------- token

    def mint_call(self, to: str, tokens: float | str) -> ContractFunction:
        return self.token.functions.mint(to, units.tokens_to_units(tokens))

    def mint(self, operator: Signer, to: str, tokens: float | str) -> TxReceipt:
        return self.client.transact(self.mint_call(to, tokens), operator)

    def token_balance(self, account: str) -> int:
        """Balance in smallest token units."""
        return self.client.call(self.token.functions.balanceOf(account))
