"""Typed binding of ``CommunityRegistry``: roles, members, meters and flexibilities."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from eth_utils import to_checksum_address
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from contracts import units
from contracts.binding import ContractBinding
from contracts.client import Signer
from contracts.events import ChainEvent, EventFollower


class Role(enum.Enum):
    """The community's roles; the value names the contract's public constant holding the id."""

    ADMIN = "DEFAULT_ADMIN_ROLE"
    DSO = "DSO_ROLE"
    OCM_ORACLE = "OCM_ORACLE_ROLE"
    GATEWAY = "GATEWAY_ROLE"
    MARKET_OPERATOR = "MARKET_OPERATOR_ROLE"
    AGGREGATOR = "AGGREGATOR_ROLE"
    MEMBER = "MEMBER_ROLE"


class FlexKind(enum.IntEnum):
    """Kinds of flexibility (ICommunityRegistry.FlexKind)."""

    BATTERY = 0
    EV_CHARGER = 1
    HEAT_PUMP = 2
    PV = 3
    OTHER = 4


@dataclass(frozen=True)
class Meter:
    """A meter; ``registered_minute`` and ``deregistered_minute`` (Unix minutes; 0: not yet)
    are read from the chain."""

    meter_id: str
    bus: int
    member: str
    signer: str
    active: bool = True
    registered_minute: int = 0
    deregistered_minute: int = 0


@dataclass(frozen=True)
class Flexibility:
    """A registered flexibility in Python units (kW, load convention); ``meter_id`` is its
    own meter (a sub-meter of its owner that measures it alone; required on chain)."""

    flex_id: str
    owner: str
    bus: int
    kind: FlexKind
    p_low_kw: float
    p_high_kw: float
    priority_group: int = 0
    meter_id: str | None = None
    active: bool = True


class MeterChange(enum.Enum):
    REGISTERED = "MeterRegistered"
    SIGNER_CHANGED = "MeterSignerChanged"
    DEREGISTERED = "MeterDeregistered"


@dataclass(frozen=True)
class MeterEvent:
    """A change of a meter, as the registry's events tell (``signer``/``bus`` when known)."""

    change: MeterChange
    meter_id: str
    signer: str | None = None
    bus: int | None = None


class Registry(ContractBinding):
    """``CommunityRegistry``: who is who in the community."""

    CONTRACT = "CommunityRegistry"

    def __init__(self, client, address: str):
        super().__init__(client, address)
        self._role_ids: dict[Role, bytes] = {}

    # ------------------------------------------------------------------ roles

    def role_id(self, role: Role) -> bytes:
        """The bytes32 id of ``role``, read from the contract's public constant."""
        if role not in self._role_ids:
            self._role_ids[role] = bytes(self._view(role.value))
        return self._role_ids[role]

    def grant_role_call(self, role: Role, account: str) -> ContractFunction:
        return self._function("grantRole", self.role_id(role), account)

    def grant_role(self, admin: Signer, role: Role, account: str) -> TxReceipt:
        return self._transact(admin, self.grant_role_call(role, account))

    def revoke_role(self, admin: Signer, role: Role, account: str) -> TxReceipt:
        return self._transact(admin, self._function("revokeRole", self.role_id(role), account))

    def has_role(self, role: Role, account: str) -> bool:
        return self._view("hasRole", self.role_id(role), account)

    def roles_of(self, account: str) -> set[Role]:
        return {role for role in Role if self.has_role(role, account)}

    # ---------------------------------------------------------------- members

    def slot_minutes(self) -> int:
        return self._view("slotMinutes")

    def add_member_call(self, account: str, name: str) -> ContractFunction:
        return self._function("addMember", account, units.encode_id(name))

    def add_member(self, admin: Signer, account: str, name: str) -> TxReceipt:
        return self._transact(admin, self.add_member_call(account, name))

    def remove_member(self, admin: Signer, account: str) -> TxReceipt:
        return self._transact(admin, self._function("removeMember", account))

    def members(self) -> list[str]:
        return [to_checksum_address(account) for account in self._view("members")]

    def member_name(self, account: str) -> str:
        return units.decode_id(self._view("memberName", account))

    # ----------------------------------------------------------------- meters

    def register_meter_call(self, meter: Meter) -> ContractFunction:
        return self._function(
            "registerMeter", units.encode_id(meter.meter_id), meter.bus, meter.member, meter.signer
        )

    def register_meter(self, admin: Signer, meter: Meter) -> TxReceipt:
        return self._transact(admin, self.register_meter_call(meter))

    def set_meter_signer(self, admin: Signer, meter_id: str, signer: str) -> TxReceipt:
        return self._transact(admin, self._function("setMeterSigner", units.encode_id(meter_id), signer))

    def deregister_meter(self, admin: Signer, meter_id: str) -> TxReceipt:
        return self._transact(admin, self._function("deregisterMeter", units.encode_id(meter_id)))

    def meter(self, meter_id: str) -> Meter:
        member, bus, active, signer, registered, deregistered = self._view("meter", units.encode_id(meter_id))
        return Meter(meter_id, bus, member, signer, active, registered, deregistered)

    def meter_ids(self) -> list[str]:
        return [units.decode_id(raw) for raw in self._view("meterIds")]

    def meters_of(self, member: str) -> list[str]:
        return [units.decode_id(raw) for raw in self._view("metersOf", member)]

    def flexibility_of_meter(self, meter_id: str) -> str | None:
        """The flexibility ``meter_id`` measures (None: a household meter)."""
        raw = self._view("flexibilityOfMeter", units.encode_id(meter_id))
        return units.decode_id(raw) if any(raw) else None

    def follow_meters(self, from_block: int) -> EventFollower[MeterEvent]:
        """Registrations, signer changes and deregistrations of meters from ``from_block`` on."""
        return self._follower(tuple(change.value for change in MeterChange), from_block, _meter_event)

    # ---------------------------------------------------------- flexibilities

    def register_flexibility_call(self, flex: Flexibility) -> ContractFunction:
        return self._function(
            "registerFlexibility",
            units.encode_id(flex.flex_id),
            flex.owner,
            flex.bus,
            int(flex.kind),
            units.kw_to_w(flex.p_low_kw),
            units.kw_to_w(flex.p_high_kw),
            flex.priority_group,
            units.encode_id(flex.meter_id) if flex.meter_id else bytes(32),
        )

    def register_flexibility(self, admin: Signer, flex: Flexibility) -> TxReceipt:
        return self._transact(admin, self.register_flexibility_call(flex))

    def deactivate_flexibility(self, admin: Signer, flex_id: str) -> TxReceipt:
        return self._transact(admin, self._function("deactivateFlexibility", units.encode_id(flex_id)))

    def flexibility(self, flex_id: str) -> Flexibility:
        owner, bus, kind, group, active, p_low, p_high, meter = self._view(
            "flexibility", units.encode_id(flex_id)
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
        return [units.decode_id(raw) for raw in self._view("flexibilityIds")]

    def flexibilities_of(self, owner: str) -> list[str]:
        return [units.decode_id(raw) for raw in self._view("flexibilitiesOf", owner)]


def _meter_event(event: ChainEvent) -> MeterEvent:
    args = event.args
    signer = args.get("signer")
    return MeterEvent(
        change=MeterChange(event.name),
        meter_id=units.decode_id(args["meterId"]),
        signer=to_checksum_address(signer) if signer else None,
        bus=args.get("bus"),
    )
