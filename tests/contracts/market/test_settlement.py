"""Settlement: traded schedule against the meters, imbalances at grid prices through the
treasury, sale proceeds from escrow, debts, band violations, idempotence."""

from __future__ import annotations

from contracts import units
from contracts.market import Side
from contracts.registry import Meter
from tests.market_setup import EXPORT_PRICE, IMPORT_PRICE, MEMBERS, PRICE, SLOT_MINUTES
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
EV, PV = units.encode_id("EV"), units.encode_id("PV")


def settle(env, slot, names=MEMBERS, caller="stranger"):
    call = env.settlement.functions.settle(slot, [env[name].address for name in names])
    return env.client.transact(call, env[caller])


def settled_by_member(env, receipt) -> dict[str, dict]:
    names = {env[name].address: name for name in MEMBERS}
    paid = {e["member"]: e for e in env.events("MemberPaid", receipt, env.settlement)}
    return {
        names[e["member"]]: {**e, **paid[e["member"]]}
        for e in env.events("MemberSettled", receipt, env.settlement)
    }


def charge(watt_minutes: int, price: int) -> int:
    return -(-watt_minutes * price // 60_000)


def traded_slot(env):
    """bob (EV) buys 1000 Wh from carol (PV) at 0.1 token/kWh; the slot is then final."""
    slot = env.open_slot()
    env.place("carol", slot, SELL, 1000, PRICE)
    env.place("bob", slot, BUY, 1000, PRICE)
    env.to_final(slot)
    return slot


def test_imbalances_are_paid_to_the_treasury_and_proceeds_to_the_seller(env):
    slot = traded_slot(env)
    env.record_slot("MEV", slot, 4800)  # 1200 Wh: 200 Wh more than bought
    env.record_slot("MPV", slot, -3600)  # 900 Wh injected: 100 Wh less than sold
    env.record_slot("MD", slot, 2000)  # 500 Wh, nothing bought
    before = {name: env.balance(name) for name in (*MEMBERS, "treasury")}
    receipt = settle(env, slot)
    result = settled_by_member(env, receipt)
    bob, carol, dave, alice = (result[name] for name in ("bob", "carol", "dave", "alice"))
    assert (bob["tradedWh"], bob["meteredWattMinutes"], bob["imbalanceWattMinutes"]) == (1000, 72_000, 12_000)
    assert bob["imbalanceAmount"] == charge(12_000, IMPORT_PRICE) == 6 * 10**16
    assert (carol["tradedWh"], carol["imbalanceWattMinutes"], carol["proceeds"]) == (-1000, 6000, PRICE)
    assert carol["imbalanceAmount"] == charge(6000, IMPORT_PRICE)
    assert (carol["paidToTreasury"], carol["proceedsPaidOut"]) == (
        charge(6000, IMPORT_PRICE),
        PRICE - 3 * 10**16,
    )
    assert dave["imbalanceAmount"] == charge(30_000, IMPORT_PRICE)
    assert (alice["tradedWh"], alice["meteredWattMinutes"], alice["imbalanceAmount"]) == (0, 0, 0)
    change = {name: env.balance(name) - before[name] for name in before}
    assert change == {
        "alice": 0,
        "bob": -6 * 10**16,
        "carol": PRICE - 3 * 10**16,
        "dave": -charge(30_000, IMPORT_PRICE),
        "treasury": 6 * 10**16 + 3 * 10**16 + charge(30_000, IMPORT_PRICE),
    }
    assert env.escrow_held() == 0 and env.balance(env.settlement.address) == 0
    assert not env.events("BandViolation", receipt, env.settlement)
    for name in MEMBERS:
        assert env.client.call(env.settlement.functions.isSettled(env[name].address, slot))
        assert env.client.call(env.contract.functions.position(env[name].address, slot))[3]  # released


def test_a_surplus_is_paid_by_the_treasury_at_the_export_price(env):
    slot = traded_slot(env)
    env.record_slot("MPV", slot, -8000)  # 2000 Wh injected, 1000 Wh sold
    treasury = env.balance("treasury")
    carol = env.balance("carol")
    result = settled_by_member(env, settle(env, slot, ["carol"]))["carol"]
    credit = 60_000 * EXPORT_PRICE // 60_000
    assert (result["imbalanceWattMinutes"], result["imbalanceAmount"]) == (-60_000, -credit)
    assert result["paidByTreasury"] == credit
    assert env.balance("carol") - carol == PRICE + credit
    assert treasury - env.balance("treasury") == credit


def test_settling_again_changes_nothing(env):
    slot = traded_slot(env)
    env.record_slot("MEV", slot, 4800)
    settle(env, slot, ["bob", "carol"])
    balances = [env.balance(name) for name in (*MEMBERS, "treasury")]
    call = env.settlement.functions.settle(slot, [env[name].address for name in ("bob", "carol", "bob")])
    assert env.client.call(call) == 0
    receipt = env.client.transact(call, env["dso"])
    assert not env.events("MemberSettled", receipt, env.settlement)
    assert balances == [env.balance(name) for name in (*MEMBERS, "treasury")]
    assert settled_by_member(env, settle(env, slot, ["dave", "dave"])).keys() == {"dave"}


def test_a_member_who_cannot_pay_owes_a_debt_collected_later(env):
    slot = traded_slot(env)
    env.record_slot("MEV", slot, 4800)
    token = env.community.token.contract.functions
    env.client.transact(token.approve(env.settlement.address, 2 * 10**16), env["bob"])
    result = settled_by_member(env, settle(env, slot, ["bob"]))["bob"]
    assert (result["paidToTreasury"], result["debt"]) == (2 * 10**16, 4 * 10**16)
    assert env.client.call(env.settlement.functions.debtOf(env["bob"].address)) == 4 * 10**16
    env.client.transact(token.approve(env.settlement.address, 2**256 - 1), env["bob"])
    bob = env.balance("bob")
    receipt = env.client.transact(env.settlement.functions.settleDebts(env["bob"].address), env["stranger"])
    paid = env.events("MemberPaid", receipt, env.settlement)[0]
    assert (paid["paidToTreasury"], paid["debt"]) == (4 * 10**16, 0)
    assert bob - env.balance("bob") == 4 * 10**16


def test_a_debt_is_paid_from_the_next_proceeds(env):
    slot = traded_slot(env)
    env.record_slot("MEV", slot, 4800)
    env.client.transact(env.community.token.contract.functions.approve(env.settlement.address, 0), env["bob"])
    settle(env, slot, ["bob"])
    assert env.client.call(env.settlement.functions.debtOf(env["bob"].address)) == 6 * 10**16
    later = env.open_slot()
    env.place("dave", later, BUY, 1000, PRICE)
    env.place("bob", later, SELL, 1000, PRICE, asset=(0, "MB"))  # bob sells via his house meter
    env.to_final(later)
    env.record_slot("MB", later, -4000)  # delivered exactly
    bob = env.balance("bob")
    result = settled_by_member(env, settle(env, later, ["bob"]))["bob"]
    assert (result["proceeds"], result["paidToTreasury"], result["proceedsPaidOut"]) == (
        PRICE,
        6 * 10**16,
        PRICE - 6 * 10**16,
    )
    assert result["debt"] == 0 and env.balance("bob") - bob == PRICE - 6 * 10**16


def test_a_treasury_that_cannot_pay_owes_the_member(env):
    slot = traded_slot(env)
    env.record_slot("MPV", slot, -8000)
    env.client.transact(
        env.community.token.contract.functions.approve(env.settlement.address, 0), env["treasury"]
    )
    result = settled_by_member(env, settle(env, slot, ["carol"]))["carol"]
    credit = EXPORT_PRICE
    assert (result["paidByTreasury"], result["credit"], result["proceedsPaidOut"]) == (0, credit, PRICE)
    assert env.client.call(env.settlement.functions.creditOf(env["carol"].address)) == credit
    env.client.transact(
        env.community.token.contract.functions.approve(env.settlement.address, credit), env["treasury"]
    )
    carol = env.balance("carol")
    env.client.transact(env.settlement.functions.settleDebts(env["carol"].address), env["carol"])
    assert env.balance("carol") - carol == credit
    assert env.client.call(env.settlement.functions.creditOf(env["carol"].address)) == 0


def test_energy_outside_the_band_is_recorded_as_a_violation(env):
    slot = env.open_slot()
    env.publish_band("EV", slot, 0, 4000)
    env.to_final(slot)
    env.record_slot("MEV", slot, [6000] * 10)  # 10 minutes at 6 kW against a 4 kW maximum
    env.record_slot("MPV", slot, -1000)  # inside [-10, 0] kW
    receipt = settle(env, slot, ["bob", "carol"])
    violations = env.events("BandViolation", receipt, env.settlement)
    assert len(violations) == 1
    violation = violations[0]
    assert (violation["flexibility"], violation["slot"], violation["owner"]) == (EV, slot, env["bob"].address)
    assert (violation["outsideWattMinutes"], violation["meteredWattMinutes"], violation["readings"]) == (
        20_000,
        60_000,
        10,
    )
    assert (violation["pMinW"], violation["pMaxW"]) == (0, 4000)
    assert tuple(env.client.call(env.settlement.functions.violations(EV))) == (1, 20_000)
    assert tuple(env.client.call(env.settlement.functions.violations(PV))) == (0, 0)


def test_settlement_waits_for_finality_and_needs_a_treasury_and_prices(env):
    slot = env.open_slot()
    final = env.client.call(env.settlement.functions.finalTime(slot))
    assert final == (slot + 1) * SLOT_MINUTES * 60 + 15 * 60
    env.travel(final - 1)
    expect_revert("SlotNotFinal", lambda: settle(env, slot), slot=slot, finalTime=final, blockTime=final - 1)
    past = env.now() // 60 // SLOT_MINUTES - 60  # before the first grid prices
    expect_revert("NoGridPrices", lambda: settle(env, past), slot=past)
    addresses = env.market.deployment.addresses
    other = env.client.deploy(
        "Settlement",
        env["admin"],
        *(addresses[name] for name in ("CommunityRegistry", "MeasurementLedger", "CapacityLimits")),
        addresses["CommunityToken"],
        addresses["EnergyMarket"],
        15,
    )
    expect_revert(
        "TreasuryNotSet", lambda: env.client.transact(other.functions.settle(past, []), env["stranger"])
    )


def test_grid_price_and_finality_rules(env):
    settlement = env.settlement.functions
    current = env.now() // 60 // SLOT_MINUTES
    expect_revert(
        "PriceSlotNotInFuture",
        lambda: env.client.transact(settlement.setGridPrices(current, 2, 1), env["operator"]),
        fromSlot=current,
        currentSlot=current,
    )
    expect_revert(
        "ExportAboveImport",
        lambda: env.client.transact(settlement.setGridPrices(current + 5, 1, 2), env["operator"]),
        importPrice=1,
        exportPrice=2,
    )
    env.client.transact(settlement.setGridPrices(current + 10, 7, 3), env["operator"])
    env.client.transact(settlement.setGridPrices(current + 20, 9, 4), env["operator"])
    env.client.transact(settlement.setGridPrices(current + 15, 8, 3), env["operator"])  # drops the later one
    # the fixture's prices (set in an earlier slot of the session) hold until current + 10
    assert tuple(env.client.call(settlement.gridPricesAt(current + 9)))[1:] == (IMPORT_PRICE, EXPORT_PRICE)
    assert tuple(env.client.call(settlement.gridPricesAt(current + 12))) == (current + 10, 7, 3)
    assert tuple(env.client.call(settlement.gridPricesAt(current + 99))) == (current + 15, 8, 3)
    expect_revert(
        "FinalityDelayTooLong",
        lambda: env.client.transact(settlement.setFinalityDelay(7 * 24 * 60 + 1), env["operator"]),
        delayMinutes=7 * 24 * 60 + 1,
    )
    env.client.transact(settlement.setFinalityDelay(60), env["operator"])
    zero = "0x" + "00" * 20
    expect_revert("ZeroAddress", lambda: env.client.transact(settlement.setTreasury(zero), env["operator"]))
    assert env.client.call(settlement.finalTime(current)) == (current + 1) * SLOT_MINUTES * 60 + 3600


def test_meters_registered_later_are_counted(env):
    slot = env.open_slot()
    env.to_final(slot)
    settle(env, slot, ["dave"])  # indexes the registry's meters
    admin = env["admin"]
    env.community.registry.register_meter(admin, Meter("MD2", 1, env["dave"].address, env["dave"].address))
    later = slot + 1
    env.to_final(later)
    env.record_slot("MD", later, 1000)
    env.record_slot("MD2", later, 3000)
    receipt = settle(env, later, ["dave"])
    assert settled_by_member(env, receipt)["dave"]["meteredWattMinutes"] == 60_000
    assert env.events("AssetsIndexed", receipt, env.settlement)[0]["meters"] == 7


def test_only_the_settlement_takes_positions(env):
    slot = traded_slot(env)
    for name in ("admin", "operator", "carol", "stranger"):
        expect_revert(
            "NotSettlement",
            lambda n=name: env.client.transact(
                env.contract.functions.release(env["carol"].address, slot), env[n]
            ),
            account=env[name].address,
            settlement=env.settlement.address,
        )
