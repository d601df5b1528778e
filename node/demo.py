"""A small demo community: service roles, three members, their meters and flexibilities."""

from __future__ import annotations

from dataclasses import dataclass

from node.accounts import Keyring
from node.client import Signer
from node.community import Community, Flexibility, FlexKind, Meter, Role

REGISTRATION_GAS = 400_000
SERVICE_ROLES = {
    "dso": Role.DSO,
    "ocm": Role.OCM_ORACLE,
    "gateway": Role.GATEWAY,
    "operator": Role.MARKET_OPERATOR,
    "aggregator": Role.AGGREGATOR,
}


@dataclass(frozen=True)
class DemoMember:
    name: str
    bus: int
    meter_id: str
    flexibilities: tuple[tuple[str, FlexKind, float, float, int], ...]  # id, kind, low kW, high kW, group


DEMO_MEMBERS = (
    DemoMember("alice", 2, "M01", (("BAT01", FlexKind.BATTERY, -50.0, 50.0, 0),)),
    DemoMember("bob", 3, "M02", (("CS01", FlexKind.EV_CHARGER, 0.0, 22.0, 1),)),
    DemoMember(
        "carol",
        4,
        "M03",
        (("CS02", FlexKind.EV_CHARGER, 0.0, 22.0, 1), ("PV03", FlexKind.PV, -10.0, 0.0, 1)),
    ),
)


def setup_demo_community(community: Community, keyring: Keyring) -> list[Signer]:
    """Grant the service roles and register the demo members in one pipelined batch
    (one or two blocks); returns the member signers."""
    admin = keyring["admin"]
    calls = [
        (community.grant_role_call(role, keyring[name].address), admin)
        for name, role in SERVICE_ROLES.items()
    ]
    members = []
    for member in DEMO_MEMBERS:
        signer = keyring[member.name]
        members.append(signer)
        meter_key = keyring[f"meter-{member.meter_id}"]
        calls.append((community.add_member_call(signer.address, member.name), admin))
        calls.append(
            (
                community.register_meter_call(
                    Meter(member.meter_id, member.bus, signer.address, meter_key.address)
                ),
                admin,
            )
        )
        for flex_id, kind, low, high, group in member.flexibilities:
            flexibility = Flexibility(
                flex_id, signer.address, member.bus, kind, low, high, group, member.meter_id
            )
            calls.append((community.register_flexibility_call(flexibility), admin))
    community.client.transact_all(calls, gas=REGISTRATION_GAS)
    return members
