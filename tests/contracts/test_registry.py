"""CommunityRegistry: members, meters, flexibilities and their refusals."""

from __future__ import annotations

import pytest

from contracts import units
from contracts.client import ChainError
from contracts.deploy import CommunityConfig, deploy_community
from contracts.registry import Flexibility, FlexKind, Meter, Role
from tests.reverts import expect_revert


def test_roles_members_meters_and_flexibilities_are_registered(env):
    community, alice = env.community, env["alice"]
    assert community.registry.has_role(Role.MEMBER, alice.address)
    assert community.registry.has_role(Role.GATEWAY, env["gateway"].address)
    assert not community.registry.has_role(Role.GATEWAY, env["stranger"].address)
    assert community.registry.meter_ids() == ["M01", "M02", "M03"]
    meter = community.registry.meter("M01")
    assert (meter.bus, meter.member, meter.active) == (2, alice.address, True)
    assert meter.signer == env["meter-M01"].address
    assert community.registry.flexibility_ids() == ["BAT01", "CS01", "CS02", "PV01"]
    battery = community.registry.flexibility("BAT01")
    assert (battery.kind, battery.p_low_kw, battery.p_high_kw, battery.meter_id) == (
        FlexKind.BATTERY,
        -50,
        50,
        "M01",
    )
    assert community.registry.flexibility("PV01").meter_id is None
    registry = community.registry.contract.functions
    assert units.decode_id(env.client.call(registry.memberName(alice.address))) == "alice"
    assert env.client.call(registry.slotMinutes()) == 15
    assert env.client.call(registry.communityName()) == "test"


def test_member_removal_revokes_the_member_role(env):
    community, admin = env.community, env["admin"]
    receipt = env.client.transact(
        community.registry.contract.functions.removeMember(env["bob"].address), admin
    )
    assert env.client.events(community.registry.contract, "MemberRemoved", receipt) == [
        {"account": env["bob"].address}
    ]
    assert not community.registry.has_role(Role.MEMBER, env["bob"].address)
    expect_revert(
        "NotAMember",
        lambda: env.client.transact(
            community.registry.contract.functions.removeMember(env["bob"].address), admin
        ),
        account=env["bob"].address,
    )


def test_add_member_refusals(env):
    registry, admin = env.community.registry.contract.functions, env["admin"]
    expect_revert(
        "AlreadyMember",
        lambda: env.client.transact(registry.addMember(env["alice"].address, b"x" * 32), admin),
    )
    zero = "0x" + "00" * 20
    expect_revert("ZeroIdentifier", lambda: env.client.transact(registry.addMember(zero, b"x" * 32), admin))


def test_meter_signer_rotation_and_deregistration(env):
    community, admin = env.community, env["admin"]
    new_signer = env.keyring.signer("meter-M01-v2").address
    env.client.transact(
        community.registry.contract.functions.setMeterSigner(units.encode_id("M01"), new_signer), admin
    )
    assert community.registry.meter("M01").signer == new_signer
    env.client.transact(community.registry.contract.functions.deregisterMeter(units.encode_id("M01")), admin)
    assert community.registry.meter("M01").active is False
    assert (
        env.client.call(community.registry.contract.functions.isActiveMeter(units.encode_id("M01"))) is False
    )


def test_meter_refusals(env):
    community, admin, alice = env.community, env["admin"], env["alice"]
    expect_revert(
        "MeterAlreadyRegistered",
        lambda: community.registry.register_meter(admin, Meter("M01", 9, alice.address, alice.address)),
        meterId=units.encode_id("M01"),
    )
    expect_revert(
        "NotAMember",
        lambda: community.registry.register_meter(
            admin, Meter("M09", 9, env["stranger"].address, alice.address)
        ),
        account=env["stranger"].address,
    )
    zero = "0x" + "00" * 20
    expect_revert(
        "ZeroIdentifier",
        lambda: community.registry.register_meter(admin, Meter("M09", 9, alice.address, zero)),
    )
    unknown = units.encode_id("NOPE")
    expect_revert("UnknownMeter", lambda: community.registry.meter("NOPE"), meter=unknown)
    expect_revert(
        "UnknownMeter",
        lambda: env.client.transact(community.registry.contract.functions.deregisterMeter(unknown), admin),
        meter=unknown,
    )
    expect_revert(
        "UnknownMeter",
        lambda: env.client.transact(
            community.registry.contract.functions.setMeterSigner(unknown, alice.address), admin
        ),
    )


@pytest.mark.parametrize(
    ("low", "high"),
    [(10.0, 5.0), (-1_000_001.0, 0.0), (0.0, 1_000_001.0)],
    ids=["inverted", "below-max", "above-max"],
)
def test_flexibility_bounds_are_checked(env, low, high):
    flex = Flexibility("X01", env["alice"].address, 2, FlexKind.OTHER, low, high)
    expect_revert(
        "InvalidHardwareBounds",
        lambda: env.community.registry.register_flexibility(env["admin"], flex),
        pLowW=units.kw_to_w(low),
        pHighW=units.kw_to_w(high),
    )


def test_flexibility_refusals_and_deactivation(env):
    community, admin, alice = env.community, env["admin"], env["alice"]
    duplicate = Flexibility("CS01", alice.address, 2, FlexKind.EV_CHARGER, 0, 22)
    expect_revert(
        "FlexibilityAlreadyRegistered", lambda: community.registry.register_flexibility(admin, duplicate)
    )
    stranger_owned = Flexibility("X02", env["stranger"].address, 2, FlexKind.OTHER, 0, 1)
    expect_revert("NotAMember", lambda: community.registry.register_flexibility(admin, stranger_owned))
    unknown_meter = Flexibility("X03", alice.address, 2, FlexKind.OTHER, 0, 1, meter_id="NOPE")
    expect_revert("UnknownMeter", lambda: community.registry.register_flexibility(admin, unknown_meter))
    expect_revert(
        "UnknownFlexibility",
        lambda: community.registry.flexibility("NOPE"),
        flexibility=units.encode_id("NOPE"),
    )
    env.client.transact(
        community.registry.contract.functions.deactivateFlexibility(units.encode_id("CS02")), admin
    )
    assert community.registry.flexibility("CS02").active is False
    expect_revert(
        "UnknownFlexibility",
        lambda: env.client.transact(
            community.registry.contract.functions.deactivateFlexibility(units.encode_id("NOPE")), admin
        ),
    )


@pytest.mark.parametrize("slot_minutes", [0, 65])
def test_slot_length_is_checked_at_deployment(env, slot_minutes):
    with pytest.raises(ChainError, match="InvalidSlotLength"):
        deploy_community(env.client, env["admin"], CommunityConfig(slot_minutes=slot_minutes))


def test_every_change_emits_an_event(env):
    community, admin, alice = env.community, env["admin"], env["alice"]
    receipt = community.registry.register_meter(admin, Meter("M10", 7, alice.address, alice.address))
    (event,) = env.client.events(community.registry.contract, "MeterRegistered", receipt)
    assert (event["meterId"], event["bus"]) == (units.encode_id("M10"), 7)
    receipt = community.registry.register_flexibility(
        admin, Flexibility("HP10", alice.address, 7, FlexKind.HEAT_PUMP, 0, 3.5, 2)
    )
    (event,) = env.client.events(community.registry.contract, "FlexibilityRegistered", receipt)
    assert (event["pHighW"], event["priorityGroup"]) == (3500, 2)
