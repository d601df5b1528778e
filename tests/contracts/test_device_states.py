"""DeviceStates (issue 16, "bands the devices can follow"): the owner of a flexibility reports its
device's state (an EV charger: car plugged in and energy it wants; a battery: capacity, stored
energy, reserve); the latest report is kept and every report is an event. Nobody else can speak
for a device, an inactive flexibility takes no report, and a report that is not physical is
refused with the facts."""

from __future__ import annotations

import math

import pytest

from contracts import units
from contracts.devices import MAX_WH, DeviceReport
from contracts.registry import Role
from tests.contracts.conftest import FLEXIBILITIES, ROLE_HOLDERS
from tests.contracts.test_dynamic_tariff import state_changing
from tests.reverts import expect_revert

# gas used (london, 21,000 intrinsic included) by a report: the first on a flexibility writes two
# fresh storage words (measured 86,162), a later one overwrites them (51,962)
FIRST_REPORT_GAS = 90_000
LATER_REPORT_GAS = 55_000


def ev(env, flex_id="CS02", owner="alice", **state):
    return env.community.devices.report(env[owner], flex_id, **({"plugged": True} | state))


def battery(env, flex_id="BAT01", owner="alice", **state):
    state = {"plugged": False, "capacity_kwh": 20.0, "stored_kwh": 12.5, "reserve_kwh": 2.0} | state
    return env.community.devices.report(env[owner], flex_id, **state)


def block_time(env, receipt) -> int:
    return env.client.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


# ----------------------------------------------------------------- reporting


def test_the_owner_reports_its_ev_charger_and_reads_it_back_and_in_the_events(env):
    devices, alice = env.community.devices, env["alice"].address
    assert devices.state_of("CS02") is None  # never reported
    receipt = ev(env, energy_need_kwh=18.25)
    expected = DeviceReport("CS02", alice, block_time(env, receipt), True, energy_need_kwh=18.25)
    assert devices.state_of("CS02") == expected
    assert devices.reports_in(receipt) == [expected]
    (event,) = env.client.events(devices.contract, "DeviceStateReported", receipt)
    assert event["flexibility"] == units.encode_id("CS02") and event["energyNeedWh"] == 18_250
    assert devices.follow_reports(receipt["blockNumber"]).poll().items == [expected]
    assert devices.state_of("BAT01") is None and devices.state_of("CS01") is None  # only CS02


def test_the_owner_reports_its_battery(env):
    devices = env.community.devices
    receipt = battery(env)
    assert devices.state_of("BAT01") == DeviceReport(
        "BAT01", env["alice"].address, block_time(env, receipt), False, 0.0, 12.5, 20.0, 2.0
    )
    battery(env, stored_kwh=20.0, reserve_kwh=20.0)  # full, all of it reserved: allowed
    battery(env, stored_kwh=0.0, reserve_kwh=5.0)  # empty, below its reserve: a state it can be in
    assert devices.state_of("BAT01").stored_kwh == 0 and devices.state_of("BAT01").reserve_kwh == 5


def test_other_kinds_are_stored_as_sent(env):
    receipt = env.community.devices.report(env["bob"], "PV01", plugged=True, capacity_kwh=1.0)
    assert env.community.devices.state_of("PV01") == DeviceReport(
        "PV01", env["bob"].address, block_time(env, receipt), True, capacity_kwh=1.0
    )


def test_the_latest_report_wins_and_every_report_stays_in_the_events(env):
    devices = env.community.devices
    follower = devices.follow_reports(env.client.head_block() + 1)
    first = ev(env, energy_need_kwh=30.0)
    env.travel(block_time(env, first) + 600)
    second = ev(env, plugged=False, energy_need_kwh=0.0)
    battery(env)  # another flexibility leaves CS02's report alone
    latest = devices.state_of("CS02")
    assert (latest.plugged, latest.energy_need_kwh, latest.time) == (False, 0.0, block_time(env, second))
    assert latest.time - block_time(env, first) >= 600
    items = follower.poll().items
    assert [(r.flex_id, r.plugged, r.energy_need_kwh) for r in items] == [
        ("CS02", True, 30.0),
        ("CS02", False, 0.0),
        ("BAT01", False, 0.0),
    ]
    assert items[1] == latest


def test_kwh_become_whole_wh(env):
    ev(env, energy_need_kwh=0.0004)  # 0.4 Wh
    assert env.community.devices.state_of("CS02").energy_need_kwh == 0
    battery(env, capacity_kwh=13.5006, stored_kwh=13.5004, reserve_kwh=0.0005)
    state = env.community.devices.state_of("BAT01")
    assert (state.capacity_kwh, state.stored_kwh, state.reserve_kwh) == (13.501, 13.5, 0.0)
    battery(env, capacity_kwh=1e16, stored_kwh=0.0, reserve_kwh=0.0)  # 1e19 Wh: near the uint64 limit
    assert env.community.devices.state_of("BAT01").capacity_kwh == 1e16


# ------------------------------------------------------------------ who may


def test_report_is_the_only_state_changing_function(env):
    assert state_changing(env.community.devices.contract) == {"report"}


@pytest.mark.parametrize("holder", [h for h in ROLE_HOLDERS if h != "alice"])
def test_every_account_without_the_member_role_is_refused(env, holder):
    """Admin, DSO, OCM oracle, gateway, market operator, aggregator and a stranger."""
    signer = env[holder]
    expect_revert(
        "AccessControlUnauthorizedAccount",
        lambda: battery(env, owner=holder),
        account=signer.address,
        neededRole=env.community.registry.role_id(Role.MEMBER),
    )
    assert env.community.devices.state_of("BAT01") is None


def test_another_member_is_not_the_owner(env):
    for flex_id, mine in (("BAT01", battery), ("CS02", ev)):
        expect_revert(
            "NotFlexibilityOwner",
            lambda mine=mine, flex_id=flex_id: mine(env, flex_id, owner="bob"),
            flexibility=units.encode_id(flex_id),
            account=env["bob"].address,
            owner=env["alice"].address,
        )
        assert env.community.devices.state_of(flex_id) is None
    expect_revert("NotFlexibilityOwner", lambda: ev(env, "CS01", owner="alice"), owner=env["bob"].address)
    ev(env, "CS01", owner="bob")  # bob's own charger


def test_an_owner_no_longer_a_member_is_refused(env):
    env.community.registry.remove_member(env["admin"], env["alice"].address)
    expect_revert(
        "AccessControlUnauthorizedAccount",
        lambda: battery(env),
        account=env["alice"].address,
        neededRole=env.community.registry.role_id(Role.MEMBER),
    )


def test_an_unknown_or_inactive_flexibility_takes_no_report(env):
    registry, admin = env.community.registry, env["admin"]
    expect_revert("UnknownFlexibility", lambda: ev(env, "NOPE"), flexibility=units.encode_id("NOPE"))
    ev(env)
    registry.deactivate_flexibility(admin, "CS02")
    expect_revert("UnknownFlexibility", lambda: ev(env), flexibility=units.encode_id("CS02"))
    assert env.community.devices.state_of("CS02").plugged  # the last report stays readable
    registry.deregister_meter(admin, FLEXIBILITIES["BAT01"][6])  # deactivates the battery with it
    expect_revert("UnknownFlexibility", lambda: battery(env), flexibility=units.encode_id("BAT01"))


# -------------------------------------------------------------- what is physical


def test_a_battery_cannot_hold_or_reserve_more_than_its_capacity(env):
    bat = units.encode_id("BAT01")
    expect_revert(
        "StoredAboveCapacity",
        lambda: battery(env, stored_kwh=20.001),
        flexibility=bat,
        storedWh=20_001,
        capacityWh=20_000,
    )
    expect_revert(
        "ReserveAboveCapacity",
        lambda: battery(env, reserve_kwh=21.0),
        flexibility=bat,
        reserveWh=21_000,
        capacityWh=20_000,
    )
    expect_revert("ZeroCapacity", lambda: battery(env, capacity_kwh=0.0, stored_kwh=0.0, reserve_kwh=0.0))
    expect_revert(
        "StoredAboveCapacity",
        lambda: env.community.devices.report(env["bob"], "PV01", plugged=False, stored_kwh=1.0),
        flexibility=units.encode_id("PV01"),
    )
    assert env.community.devices.state_of("BAT01") is None


def test_an_ev_charger_reports_no_battery_fields(env):
    for fields in ({"stored_kwh": 1.0, "capacity_kwh": 50.0}, {"capacity_kwh": 50.0}, {"reserve_kwh": 0.5}):
        expect_revert(
            "StorageStateOnEvCharger",
            lambda fields=fields: ev(env, energy_need_kwh=10.0, **fields),
            flexibility=units.encode_id("CS02"),
            storedWh=units.kwh_to_wh(fields.get("stored_kwh", 0)),
            capacityWh=units.kwh_to_wh(fields.get("capacity_kwh", 0)),
            reserveWh=units.kwh_to_wh(fields.get("reserve_kwh", 0)),
        )
    assert env.community.devices.state_of("CS02") is None


@pytest.mark.parametrize(
    "bad",
    [
        {"energy_need_kwh": -0.001},
        {"energy_need_kwh": math.nan},
        {"stored_kwh": math.inf},
        {"capacity_kwh": -math.inf},
        {"reserve_kwh": "2"},
        {"capacity_kwh": None},
        {"capacity_kwh": True},
        {"capacity_kwh": (MAX_WH + 1) / 1000},
        {"plugged": 1},
    ],
    ids=lambda bad: ",".join(f"{k}={v!r}" for k, v in bad.items()),
)
def test_the_binding_refuses_bad_input_before_sending(env, bad):
    head, nonce = env.client.head_block(), env.client.w3.eth.get_transaction_count(env["alice"].address)
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field):
        battery(env, **bad)
    assert env.client.head_block() == head
    assert env.client.w3.eth.get_transaction_count(env["alice"].address) == nonce
    with pytest.raises(ValueError, match="id"):
        env.community.devices.report(env["alice"], "AN ID LONGER THAN 32 BYTES IS NO ID", plugged=True)


def test_a_report_stays_within_its_gas_budget(env):
    first = battery(env)["gasUsed"]
    later = battery(env, stored_kwh=13.0)["gasUsed"]
    assert first <= FIRST_REPORT_GAS and later <= LATER_REPORT_GAS, (first, later)
    print(f"DeviceStates.report gas: first {first:,}, later {later:,}")
