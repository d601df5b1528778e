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
    assert community.registry.meter_ids() == ["M01", "M02", "M03", "M04"]
    meter = community.registry.meter("M01")
    assert (meter.bus, meter.member, meter.active) == (2, alice.address, True)
    assert meter.signer == env["meter-M01"].address
    assert 0 < meter.registered_minute <= env.now_minute()
    assert community.registry.flexibility_ids() == ["BAT01", "CS01", "CS02", "PV01"]
    battery = community.registry.flexibility("BAT01")
    assert (battery.kind, battery.p_low_kw, battery.p_high_kw, battery.meter_id) == (
        FlexKind.BATTERY,
        -50,
        50,
        "M01",
    )
    assert community.registry.flexibility("PV01").meter_id == "M04"
    registry = community.registry.contract.functions
    assert units.decode_id(env.client.call(registry.memberName(alice.address))) == "alice"
    assert env.client.call(registry.slotMinutes()) == 15
    assert env.client.call(registry.communityName()) == "test"


def test_members_assets_are_listed_and_owned(env):
    registry, alice, bob = env.community.registry, env["alice"].address, env["bob"].address
    assert registry.meters_of(alice) == ["M01", "M03"]
    assert registry.meters_of(bob) == ["M02", "M04"]
    assert registry.meters_of(env["stranger"].address) == []
    assert registry.flexibilities_of(alice) == ["BAT01", "CS02"]
    assert registry.flexibilities_of(bob) == ["CS01", "PV01"]
    assert {meter: registry.flexibility_of_meter(meter) for meter in ("M01", "M02", "M03", "M04")} == {
        "M01": "BAT01",
        "M02": "CS01",
        "M03": "CS02",
        "M04": "PV01",
    }
    registry.register_meter(env["admin"], Meter("M10", 2, alice, alice))  # a household meter
    assert registry.flexibility_of_meter("M10") is None
    assert registry.flexibility_of_meter("NOPE") is None
    assert registry.meters_of(alice) == ["M01", "M03", "M10"]

    def asset_owner(is_flexibility, asset_id):
        call = registry.contract.functions.assetOwner(is_flexibility, units.encode_id(asset_id))
        return tuple(env.client.call(call))

    zero = "0x" + "00" * 20
    assert asset_owner(True, "CS01") == (bob, True)
    assert asset_owner(False, "M03") == (alice, True)
    assert asset_owner(True, "NOPE") == (zero, False), "no such asset: a zero owner, no revert"
    assert asset_owner(False, "BAT01") == (zero, False), "meters and flexibilities are apart"
    assert asset_owner(True, "M01") == (zero, False)
    registry.deregister_meter(env["admin"], "M03")
    registry.deactivate_flexibility(env["admin"], "CS01")
    assert asset_owner(False, "M03") == (alice, False)
    assert asset_owner(True, "CS01") == (bob, False)
    assert registry.meters_of(alice) == ["M01", "M03", "M10"], "inactive meters stay listed"
    assert registry.flexibilities_of(bob) == ["CS01", "PV01"], "inactive flexibilities stay listed"


def test_a_meter_records_the_minute_of_its_registration(env):
    minute = env.now_minute() + 10
    env.travel(minute * 60 + 42)
    alice = env["alice"].address
    receipt = env.community.registry.register_meter(env["admin"], Meter("M10", 2, alice, alice))
    block = env.client.w3.eth.get_block(receipt["blockNumber"])
    assert block["timestamp"] // 60 == minute
    assert env.community.registry.meter("M10").registered_minute == minute
    assert env.community.registry.meter("M01").registered_minute < minute


def test_a_flexibility_needs_its_own_meter_of_its_owner(env):
    registry, admin = env.community.registry, env["admin"]
    alice, bob = env["alice"].address, env["bob"].address
    registry.register_meter(admin, Meter("M10", 2, alice, alice))
    registry.register_meter(admin, Meter("M11", 3, bob, bob))

    def refused(flex_id, meter_id):
        flex = Flexibility(flex_id, alice, 2, FlexKind.HEAT_PUMP, 0, 3, 1, meter_id)
        expect_revert(
            "FlexibilityMeterInvalid",
            lambda: registry.register_flexibility(admin, flex),
            flexibilityId=units.encode_id(flex_id),
            meterId=units.encode_id(meter_id) if meter_id else bytes(32),
        )

    refused("HP10", None)  # no meter
    refused("HP10", "NOPE")  # not registered
    refused("HP10", "M11")  # bob's meter, not alice's
    refused("HP10", "M01")  # alice's, but it measures BAT01
    assert registry.flexibility_ids() == ["BAT01", "CS01", "CS02", "PV01"], "nothing was registered"

    registry.register_flexibility(admin, Flexibility("HP10", alice, 2, FlexKind.HEAT_PUMP, 0, 3, 1, "M10"))
    assert registry.flexibility("HP10").meter_id == "M10"
    assert registry.flexibility_of_meter("M10") == "HP10"
    refused("HP11", "M10")  # M10 now measures HP10
    registry.deactivate_flexibility(admin, "HP10")
    refused("HP11", "M10")  # and still does once HP10 is out of operation: its history stays
    assert registry.flexibility_of_meter("M10") == "HP10"


def test_a_flexibility_never_outlives_its_meter(env):
    """A deregistered meter cannot become a flexibility's meter, and deregistering the meter
    of a flexibility takes the flexibility out of operation with it (else it could trade
    while its energy outside the band went unmeasured)."""
    registry, admin = env.community.registry, env["admin"]
    alice = env["alice"].address
    registry.register_meter(admin, Meter("M12", 2, alice, alice))
    registry.deregister_meter(admin, "M12")
    expect_revert(
        "FlexibilityMeterInvalid",
        lambda: registry.register_flexibility(
            admin, Flexibility("HP12", alice, 2, FlexKind.HEAT_PUMP, 0, 3, 1, "M12")
        ),
    )
    receipt = registry.deregister_meter(admin, "M01")  # BAT01's meter
    assert not registry.flexibility("BAT01").active
    deactivated = env.client.events(registry.contract, "FlexibilityDeactivated", receipt)
    assert [units.decode_id(event["flexibilityId"]) for event in deactivated] == ["BAT01"]
    assert env.client.call(registry.contract.functions.assetOwner(True, units.encode_id("BAT01")))[1] is False


def test_the_admin_role_is_not_granted_or_revoked_directly(env):
    registry, admin = env.community.registry, env["admin"]
    admin_role = registry.role_id(Role.ADMIN)
    functions = registry.contract.functions
    assert env.client.call(functions.defaultAdmin()) == admin.address
    expect_revert(
        "AccessControlEnforcedDefaultAdminRules",
        lambda: env.client.transact(functions.grantRole(admin_role, env["bob"].address), admin),
    )
    expect_revert(
        "AccessControlEnforcedDefaultAdminRules",
        lambda: env.client.transact(functions.revokeRole(admin_role, admin.address), admin),
    )
    assert not registry.has_role(Role.ADMIN, env["bob"].address)
    assert registry.has_role(Role.ADMIN, admin.address)


def test_the_admin_role_moves_in_two_steps_after_two_days(env):
    registry, admin, successor = env.community.registry, env["admin"], env["stranger"]
    functions, client = registry.contract.functions, env.client
    delay = client.call(functions.ADMIN_TRANSFER_DELAY())
    assert delay == 2 * 24 * 3600 == client.call(functions.defaultAdminDelay())

    receipt = client.transact(functions.beginDefaultAdminTransfer(successor.address), admin)
    schedule = client.w3.eth.get_block(receipt["blockNumber"])["timestamp"] + delay
    assert client.events(registry.contract, "DefaultAdminTransferScheduled", receipt) == [
        {"newAdmin": successor.address, "acceptSchedule": schedule}
    ]
    assert tuple(client.call(functions.pendingDefaultAdmin())) == (successor.address, schedule)

    def accept(signer):
        return client.transact(functions.acceptDefaultAdminTransfer(), signer)

    expect_revert("AccessControlEnforcedDefaultAdminDelay", lambda: accept(successor), schedule=schedule)
    expect_revert(
        "AccessControlInvalidDefaultAdmin", lambda: accept(env["bob"]), defaultAdmin=env["bob"].address
    )
    env.travel(schedule)  # the delay has passed only after its last second
    expect_revert("AccessControlEnforcedDefaultAdminDelay", lambda: accept(successor), schedule=schedule)
    assert registry.has_role(Role.ADMIN, admin.address), "the admin stays until the transfer is accepted"
    env.travel(schedule + 1)
    accept(successor)

    assert client.call(functions.defaultAdmin()) == successor.address
    assert registry.has_role(Role.ADMIN, successor.address)
    assert not registry.has_role(Role.ADMIN, admin.address)
    assert tuple(client.call(functions.pendingDefaultAdmin())) == ("0x" + "00" * 20, 0)
    expect_revert(
        "AccessControlUnauthorizedAccount",
        lambda: registry.add_member(admin, env["dso"].address, "dso"),
        account=admin.address,
    )
    registry.add_member(successor, env["dso"].address, "dso")
    assert registry.has_role(Role.MEMBER, env["dso"].address)


def test_a_cancelled_admin_transfer_cannot_be_accepted(env):
    registry, admin, successor = env.community.registry, env["admin"], env["stranger"]
    functions, client = registry.contract.functions, env.client
    client.transact(functions.beginDefaultAdminTransfer(successor.address), admin)
    (_, schedule) = client.call(functions.pendingDefaultAdmin())
    receipt = client.transact(functions.cancelDefaultAdminTransfer(), admin)
    assert client.events(registry.contract, "DefaultAdminTransferCanceled", receipt) == [{}]
    assert tuple(client.call(functions.pendingDefaultAdmin())) == ("0x" + "00" * 20, 0)
    env.travel(schedule + 1)
    expect_revert(
        "AccessControlInvalidDefaultAdmin",
        lambda: client.transact(functions.acceptDefaultAdminTransfer(), successor),
        defaultAdmin=successor.address,
    )
    assert client.call(functions.defaultAdmin()) == admin.address


def test_a_shorter_admin_delay_takes_effect_only_after_the_current_one(env):
    registry, admin = env.community.registry, env["admin"]
    functions, client = registry.contract.functions, env.client
    receipt = client.transact(functions.changeDefaultAdminDelay(0), admin)
    now = client.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert tuple(client.call(functions.pendingDefaultAdminDelay())) == (0, now + 2 * 24 * 3600)
    assert client.call(functions.defaultAdminDelay()) == 2 * 24 * 3600, "no shortcut around the delay"
    client.transact(functions.rollbackDefaultAdminDelay(), admin)
    assert tuple(client.call(functions.pendingDefaultAdminDelay())) == (0, 0)
    env.travel(now + 2 * 24 * 3600 + 1)
    assert client.call(functions.defaultAdminDelay()) == 2 * 24 * 3600, "a rolled-back change never comes"


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
    expect_revert(
        "FlexibilityMeterInvalid",
        lambda: community.registry.register_flexibility(admin, unknown_meter),
        flexibilityId=units.encode_id("X03"),
        meterId=units.encode_id("NOPE"),
    )
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
    registry = community.registry.contract
    receipt = community.registry.register_meter(admin, Meter("M10", 7, alice.address, alice.address))
    (event,) = env.client.events(registry, "MeterRegistered", receipt)
    assert (event["meterId"], event["member"], event["bus"]) == (units.encode_id("M10"), alice.address, 7)
    receipt = community.registry.set_meter_signer(admin, "M10", env["bob"].address)
    assert env.client.events(registry, "MeterSignerChanged", receipt) == [
        {"meterId": units.encode_id("M10"), "signer": env["bob"].address}
    ]
    receipt = community.registry.deregister_meter(admin, "M04")
    assert env.client.events(registry, "MeterDeregistered", receipt) == [{"meterId": units.encode_id("M04")}]
    receipt = community.registry.deactivate_flexibility(admin, "PV01")
    assert env.client.events(registry, "FlexibilityDeactivated", receipt) == [
        {"flexibilityId": units.encode_id("PV01")}
    ]
    receipt = community.registry.add_member(admin, env["stranger"].address, "stranger")
    assert env.client.events(registry, "MemberAdded", receipt) == [
        {"account": env["stranger"].address, "name": units.encode_id("stranger")}
    ]
    receipt = community.registry.register_flexibility(
        admin, Flexibility("HP10", alice.address, 7, FlexKind.HEAT_PUMP, 0, 3.5, 2, "M10")
    )
    (event,) = env.client.events(community.registry.contract, "FlexibilityRegistered", receipt)
    assert (event["pHighW"], event["priorityGroup"], event["meter"]) == (3500, 2, units.encode_id("M10"))
