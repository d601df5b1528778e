"""Settlement: traded schedule against the meters once the data deadline passed and the market
finalized the slot. Missing meter minutes count as consumption, imbalances are charged at
the import price from the member's deposit (a seller's collateral covers what it does not
deliver), export credit is paid by the treasury for metered injection only, energy outside
a band pays the penalty, debts are collected from later deposits and proceeds, credits the
treasury cannot pay are claimed later; terms and treasury change only with notice."""

from __future__ import annotations

from decimal import Decimal

from contracts import clock, units
from contracts.ledger import Reading
from contracts.market import AssetKind, Side
from contracts.registry import Meter
from contracts.settlement import Terms
from tests.community_setup import SETUP_GAS
from tests.market_setup import (
    DATA_DELAY_MINUTES,
    EXPORT_PRICE,
    IMPORT_PRICE,
    MEMBERS,
    METERS,
    MISSING_MINUTE_W,
    PENALTY_PRICE,
    PRICE,
    SLOT_MINUTES,
    TOKEN,
)
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
EV, PV, BAT = (units.encode_id(flex) for flex in ("EV", "PV", "BAT"))
ZERO_ADDRESS = "0x" + "00" * 20
NOTICE_MINUTES = 2 * 24 * 60
ACCOUNTS = (*MEMBERS, "treasury")


# ------------------------------------------------------------------ helpers


def charge(watt_minutes: int, price: int) -> int:
    """What the settlement charges for ``watt_minutes`` at ``price`` (rounded up)."""
    return -(-watt_minutes * price // 60_000)


def credit(watt_minutes: int, price: int) -> int:
    """What the settlement credits for ``watt_minutes`` at ``price`` (rounded down)."""
    return watt_minutes * price // 60_000


def slot_end(slot: int) -> int:
    return (slot + 1) * SLOT_MINUTES * 60


def deliver(env, slot: int, powers: dict[str, int | list[int]], members=MEMBERS, silent=()) -> None:
    """At the end of ``slot``, record a reading of every minute of every meter of ``members``:
    ``powers`` (W, constant or per minute) for the meters it names, 0 W for the others, none
    for the meters in ``silent``."""
    env.travel(slot_end(slot))
    start = slot * SLOT_MINUTES
    readings = []
    for meter, owner in METERS.items():
        if owner not in members or meter in silent:
            continue
        power = powers.get(meter, 0)
        per_minute = power if isinstance(power, list) else [power] * SLOT_MINUTES
        readings += [
            Reading(meter, clock.minute_start(start + i), units.w_to_kw(p), 0.0, 1.0, 0.0)
            for i, p in enumerate(per_minute)
        ]
    env.community.ledger.record_readings(env["gateway"], readings)


def finalize(env, slot: int) -> None:
    """Wait for ``slot``'s data deadline and let the market finalize it."""
    env.to_final(slot)
    env.client.transact(env.contract.functions.finalizeSlot(slot), env["stranger"])


def settle(env, slot, names=MEMBERS, caller="stranger"):
    call = env.settlement.functions.settle(slot, [env[name].address for name in names])
    return env.client.transact(call, env[caller])


def settled_by_member(env, receipt) -> dict[str, dict]:
    """MemberSettled merged with MemberPaid per member name (MemberPaid's ``credit``, the
    credit still owed, becomes ``creditOwed``)."""
    names = {env[name].address: name for name in MEMBERS}
    paid = {e["member"]: e for e in env.events("MemberPaid", receipt, env.settlement)}
    merged = {}
    for e in env.events("MemberSettled", receipt, env.settlement):
        payment = paid[e["member"]]
        merged[names[e["member"]]] = {
            **e,
            "paidToTreasury": payment["paidToTreasury"],
            "paidByTreasury": payment["paidByTreasury"],
            "debt": payment["debt"],
            "creditOwed": payment["credit"],
        }
    return merged


def traded_slot(env):
    """bob (EV) buys 1000 Wh from carol (PV) at 0.1 token/kWh: bob locks 0.1 token, carol
    0.3 token of collateral (1 kWh at the import price)."""
    slot = env.open_slot()
    env.place("carol", slot, SELL, 1000, PRICE)
    env.place("bob", slot, BUY, 1000, PRICE)
    return slot


def view(env, name: str, *args):
    return env.client.call(getattr(env.settlement.functions, name)(*args))


def debt_of(env, name: str) -> int:
    return view(env, "debtOf", env.address(name))


def credit_of(env, name: str) -> int:
    return view(env, "creditOf", env.address(name))


def withdraw(env, name: str, amount: int):
    return env.client.transact(env.settlement.functions.withdraw(amount), env[name])


def fund(env, name: str, amount: int):
    """Approve exactly ``amount`` and deposit it; returns the deposit's receipt."""
    token = env.community.token.contract.functions
    env.client.transact(token.approve(env.settlement.address, amount), env[name])
    return env.client.transact(env.settlement.functions.deposit(amount), env[name])


def deposits_add_up(env, *slots: int) -> bool:
    """The settlement holds exactly the deposits (free and locked) of every account, once
    the positions it took in ``slots`` are counted: a buyer's payment leaves its deposit
    when the buyer is settled, the seller's proceeds arrive when the seller is."""
    held = sum(sum(env.deposit(name)) for name in ACCOUNTS)
    for slot in slots:
        for name in MEMBERS:
            _, _, paid, released, proceeds, _ = env.client.call(
                env.contract.functions.position(env[name].address, slot)
            )
            if released:
                held += paid - proceeds
    return env.wallet(env.settlement.address) == held


def notice_slot(env) -> int:
    """The first slot whose terms can still be changed (NOTICE_MINUTES from the next block)."""
    return -(-(env.now() // 60 + NOTICE_MINUTES) // SLOT_MINUTES)


# ----------------------------------------------------------- imbalances


def test_imbalances_are_charged_to_the_treasury_and_proceeds_paid_to_the_seller(env):
    slot = traded_slot(env)
    assert env.deposit("bob") == (1000 * TOKEN - PRICE, PRICE)
    assert env.deposit("carol") == (1000 * TOKEN - 3 * PRICE, 3 * PRICE)  # collateral at import price
    deliver(env, slot, {"MEV": 4800, "MPV": -3600, "MD": 2000})
    # bob: 1200 Wh, 200 Wh more than bought; carol: 900 Wh injected, 100 Wh short; dave: 500 Wh
    finalize(env, slot)
    before = {name: env.balance(name) for name in ACCOUNTS}
    receipt = settle(env, slot)
    result = settled_by_member(env, receipt)
    bob, carol, dave, alice = (result[name] for name in ("bob", "carol", "dave", "alice"))
    assert (bob["tradedWh"], bob["meteredWattMinutes"], bob["imbalanceWattMinutes"]) == (1000, 72_000, 12_000)
    assert (bob["charge"], bob["credit"], bob["penalty"], bob["missingMinutes"]) == (6 * 10**16, 0, 0, 0)
    assert bob["charge"] == charge(12_000, IMPORT_PRICE)
    assert (carol["tradedWh"], carol["meteredWattMinutes"], carol["imbalanceWattMinutes"]) == (
        -1000,
        -54_000,
        6000,
    )
    assert carol["charge"] == charge(6000, IMPORT_PRICE) == 3 * 10**16
    assert dave["charge"] == charge(30_000, IMPORT_PRICE)
    assert (alice["tradedWh"], alice["meteredWattMinutes"], alice["charge"]) == (0, 0, 0)
    for name, member in result.items():
        assert (member["paidToTreasury"], member["debt"]) == (member["charge"], 0), name
    # the market handed over each position: bob's payment, carol's proceeds and collateral
    released = {e["member"]: e for e in env.events("PositionReleased", receipt)}
    assert released[env["bob"].address]["paid"] == PRICE
    carol_position = released[env["carol"].address]
    assert (carol_position["proceeds"], carol_position["collateral"]) == (PRICE, 3 * PRICE)
    change = {name: env.balance(name) - before[name] for name in before}
    assert change == {
        "alice": 0,
        "bob": -6 * 10**16,  # his locked payment left with the trade
        "carol": PRICE + 3 * PRICE - 3 * 10**16,  # proceeds and collateral, less her charge
        "dave": -charge(30_000, IMPORT_PRICE),
        "treasury": 6 * 10**16 + 3 * 10**16 + charge(30_000, IMPORT_PRICE),
    }
    assert env.deposit("bob") == (1000 * TOKEN - PRICE - 6 * 10**16, 0)
    assert env.escrow_held() == 0 and deposits_add_up(env)
    assert view(env, "slotFlows", slot) == (6 * 10**16 + 3 * 10**16 + charge(30_000, IMPORT_PRICE), 0)
    assert not env.events("BandViolation", receipt, env.settlement)
    for name in MEMBERS:
        assert view(env, "isSettled", env[name].address, slot)
        assert env.client.call(env.contract.functions.position(env[name].address, slot))[3]  # released


def test_a_surplus_is_paid_by_the_treasury_from_its_deposit_at_the_export_price(env):
    slot = traded_slot(env)
    deliver(env, slot, {"MPV": -8000}, ["carol"])  # 2000 Wh injected, 1000 Wh sold
    finalize(env, slot)
    treasury, carol = env.deposit("treasury"), env.balance("carol")
    result = settled_by_member(env, settle(env, slot, ["carol"]))["carol"]
    paid = credit(60_000, EXPORT_PRICE)
    assert (result["imbalanceWattMinutes"], result["charge"], result["credit"]) == (-60_000, 0, paid)
    assert (result["paidByTreasury"], result["creditOwed"]) == (paid, 0)
    assert env.balance("carol") - carol == PRICE + 3 * PRICE + paid
    assert env.deposit("treasury") == (treasury[0] - paid, 0)
    assert view(env, "slotFlows", slot) == (0, paid)
    assert credit_of(env, "carol") == 0
    assert deposits_add_up(env, slot) and not deposits_add_up(env)  # bob's payment is still locked


def test_export_credit_is_paid_only_for_metered_injection(env):
    slot = env.open_slot()
    env.place("carol", slot, SELL, 2000, PRICE)
    env.place("bob", slot, BUY, 1000, PRICE)  # bob buys 1 kWh and uses none of it
    env.place("dave", slot, BUY, 1000, PRICE)  # dave buys 1 kWh and injects 0.5 kWh
    deliver(env, slot, {"MPV": -8000, "MD": -2000}, ["bob", "dave"])
    finalize(env, slot)
    treasury = env.deposit("treasury")[0]
    result = settled_by_member(env, settle(env, slot, ["bob", "dave"]))
    bob, dave = result["bob"], result["dave"]
    assert (bob["meteredWattMinutes"], bob["imbalanceWattMinutes"], bob["credit"], bob["charge"]) == (
        0,
        -60_000,
        0,
        0,
    )
    assert (dave["meteredWattMinutes"], dave["imbalanceWattMinutes"]) == (-30_000, -90_000)
    assert dave["credit"] == credit(30_000, EXPORT_PRICE)  # only what left his meter
    assert treasury - env.deposit("treasury")[0] == credit(30_000, EXPORT_PRICE)
    assert env.deposit("bob") == (1000 * TOKEN - PRICE, 0)  # he paid for energy he did not use


def test_missing_meter_minutes_count_as_consumption(env):
    slot = env.open_slot()
    deliver(env, slot, {}, ["alice", "bob"], silent=["MEV"])  # dave's meter says nothing at all
    env.record_slot("MEV", slot, [1000] * 5)  # bob's EV meter reports 5 of 15 minutes
    finalize(env, slot)
    receipt = settle(env, slot, ["alice", "bob", "dave"])
    result = settled_by_member(env, receipt)
    dave, bob, alice = result["dave"], result["bob"], result["alice"]
    silent = SLOT_MINUTES * MISSING_MINUTE_W
    assert (dave["missingMinutes"], dave["meteredWattMinutes"], dave["imbalanceWattMinutes"]) == (
        SLOT_MINUTES,
        silent,
        silent,
    )
    assert dave["charge"] == charge(silent, IMPORT_PRICE) > 0  # a silent meter pays, it is not zero
    metered = 5 * 1000 + 10 * MISSING_MINUTE_W
    assert (bob["missingMinutes"], bob["meteredWattMinutes"]) == (10, metered)
    assert bob["charge"] == charge(metered, IMPORT_PRICE)
    # the missing minutes count against the EV's band too (at most 11 kW)
    violation = env.events("BandViolation", receipt, env.settlement)[0]
    assert (violation["flexibility"], violation["readings"], violation["meteredWattMinutes"]) == (
        EV,
        SLOT_MINUTES,
        metered,
    )
    assert violation["outsideWattMinutes"] == metered - 11_000 * SLOT_MINUTES
    assert bob["penalty"] == charge(metered - 11_000 * SLOT_MINUTES, PENALTY_PRICE)
    assert (alice["missingMinutes"], alice["charge"], alice["penalty"]) == (0, 0, 0)
    assert env.deposit("dave") == (1000 * TOKEN - dave["charge"], 0)


def test_deregistering_a_silent_meter_after_the_slot_does_not_excuse_its_missing_minutes(env):
    """Dave's meter says nothing in the slot and is deregistered before the settlement: its
    minutes were expected while it was registered, so they still count against him."""
    slot = env.open_slot()
    deliver(env, slot, {}, ["alice", "bob"])
    env.community.registry.deregister_meter(env["admin"], "MD")
    finalize(env, slot)
    dave = settled_by_member(env, settle(env, slot, ["dave"]))["dave"]
    assert dave["missingMinutes"] == SLOT_MINUTES
    assert dave["charge"] == charge(SLOT_MINUTES * MISSING_MINUTE_W, IMPORT_PRICE)
    later = env.open_slot()  # after deregistration nothing is expected of it
    deliver(env, later, {}, ["alice", "bob"])
    finalize(env, later)
    assert settled_by_member(env, settle(env, later, ["dave"]))["dave"]["missingMinutes"] == 0


def test_a_seller_that_does_not_deliver_pays_the_import_price_from_its_collateral(env):
    slot = traded_slot(env)
    free, _ = env.deposit("carol")
    withdraw(env, "carol", free)  # all carol has left in the settlement is her collateral
    assert env.deposit("carol") == (0, 3 * PRICE)
    deliver(env, slot, {}, ["carol"])  # carol's PV injects nothing
    finalize(env, slot)
    treasury = env.deposit("treasury")[0]
    carol = settled_by_member(env, settle(env, slot, ["carol"]))["carol"]
    assert (carol["tradedWh"], carol["meteredWattMinutes"], carol["imbalanceWattMinutes"]) == (
        -1000,
        0,
        60_000,
    )
    assert carol["charge"] == charge(60_000, IMPORT_PRICE) == 3 * PRICE
    assert (carol["paidToTreasury"], carol["debt"]) == (3 * PRICE, 0)  # the collateral covered it
    assert debt_of(env, "carol") == 0
    assert env.deposit("carol") == (PRICE, 0)  # her proceeds are left
    assert env.deposit("treasury")[0] - treasury == 3 * PRICE


def test_settling_again_changes_nothing(env):
    slot = traded_slot(env)
    deliver(env, slot, {"MEV": 4800}, ["bob", "carol"])
    finalize(env, slot)
    settle(env, slot, ["bob", "carol"])
    balances = [env.deposit(name) for name in ACCOUNTS]
    call = env.settlement.functions.settle(slot, [env[name].address for name in ("bob", "carol", "bob")])
    assert env.client.call(call) == 0
    receipt = env.client.transact(call, env["dso"])
    assert not env.events("MemberSettled", receipt, env.settlement)
    assert not env.events("PositionReleased", receipt)
    assert balances == [env.deposit(name) for name in ACCOUNTS]
    assert settled_by_member(env, settle(env, slot, ["dave", "dave"])).keys() == {"dave"}


# ------------------------------------------------------- debts and credits


def test_a_debt_is_collected_from_later_deposits(env):
    slot = traded_slot(env)
    free, _ = env.deposit("bob")
    withdraw(env, "bob", free - 2 * 10**16)
    deliver(env, slot, {"MEV": 4800}, ["bob"])  # 0.06 token owed for 200 Wh
    finalize(env, slot)
    result = settled_by_member(env, settle(env, slot, ["bob"]))["bob"]
    assert (result["paidToTreasury"], result["debt"]) == (2 * 10**16, 4 * 10**16)
    assert debt_of(env, "bob") == 4 * 10**16 and env.deposit("bob") == (0, 0)
    treasury = env.deposit("treasury")[0]
    deposited = env.events("Deposited", fund(env, "bob", 3 * 10**16), env.settlement)[0]
    assert (deposited["amount"], deposited["debtPaid"]) == (3 * 10**16, 3 * 10**16)
    assert debt_of(env, "bob") == 10**16 and env.deposit("bob") == (0, 0)
    deposited = env.events("Deposited", fund(env, "bob", TOKEN), env.settlement)[0]
    assert deposited["debtPaid"] == 10**16
    assert debt_of(env, "bob") == 0 and env.deposit("bob") == (TOKEN - 10**16, 0)
    assert env.deposit("treasury")[0] - treasury == 4 * 10**16
    env.place("bob", env.open_slot(), BUY, 1000, PRICE)  # and he trades again
    assert deposits_add_up(env, slot)


def test_a_debt_is_collected_before_the_member_withdraws(env):
    slot = traded_slot(env)
    later = env.open_slot(ahead=9)
    resting, _ = env.place("bob", later, BUY, 1000, PRICE, asset=(AssetKind.METER, "MB"))
    free, _ = env.deposit("bob")
    withdraw(env, "bob", free - 2 * 10**16)
    deliver(env, slot, {"MEV": 4800}, ["bob"])
    finalize(env, slot)
    settle(env, slot, ["bob"])
    assert debt_of(env, "bob") == 4 * 10**16
    env.client.transact(env.contract.functions.cancelOrder(resting), env["bob"])  # unlocks 0.1 token
    assert env.deposit("bob") == (PRICE, 0) and debt_of(env, "bob") == 4 * 10**16
    expect_revert(
        "InsufficientDeposit",
        lambda: withdraw(env, "bob", PRICE),
        account=env["bob"].address,
        amount=PRICE,
        free=PRICE - 4 * 10**16,
    )
    wallet = env.wallet("bob")
    withdraw(env, "bob", PRICE - 4 * 10**16)
    assert env.wallet("bob") - wallet == PRICE - 4 * 10**16
    assert debt_of(env, "bob") == 0 and env.deposit("bob") == (0, 0)


def test_a_debt_is_paid_from_the_next_proceeds(env):
    slot = traded_slot(env)
    later = env.open_slot(ahead=10)
    env.place("dave", later, BUY, 1000, PRICE)
    env.place("bob", later, SELL, 1000, PRICE, asset=(AssetKind.METER, "MB"))  # bob sells via his house
    free, _ = env.deposit("bob")
    withdraw(env, "bob", free)  # bob keeps nothing free: his buy and his sell's collateral are locked
    assert env.deposit("bob") == (0, PRICE + 3 * PRICE)
    deliver(env, slot, {"MEV": 4800}, ["bob"])
    finalize(env, slot)
    settle(env, slot, ["bob"])
    assert debt_of(env, "bob") == 6 * 10**16
    deliver(env, later, {"MB": -4000}, ["bob"])  # delivered exactly
    finalize(env, later)
    result = settled_by_member(env, settle(env, later, ["bob"]))["bob"]
    assert (result["charge"], result["paidToTreasury"], result["debt"]) == (0, 6 * 10**16, 0)
    assert env.deposit("bob") == (PRICE + 3 * PRICE - 6 * 10**16, 0)


def test_a_treasury_that_cannot_pay_owes_the_member_who_claims_later(env):
    slot = traded_slot(env)
    withdraw(env, "treasury", env.deposit("treasury")[0])
    deliver(env, slot, {"MPV": -8000}, ["bob", "carol"])
    finalize(env, slot)
    owed = credit(60_000, EXPORT_PRICE)
    result = settled_by_member(env, settle(env, slot, ["carol"]))["carol"]
    assert (result["credit"], result["paidByTreasury"], result["creditOwed"]) == (owed, 0, owed)
    assert credit_of(env, "carol") == owed
    assert env.deposit("carol") == (1000 * TOKEN + PRICE, 0)  # proceeds and collateral all the same
    carol = env.deposit("carol")[0]
    env.client.transact(env.settlement.functions.claimCredit(env["carol"].address), env["stranger"])
    assert credit_of(env, "carol") == owed and env.deposit("carol")[0] == carol  # nothing to pay it from
    fund(env, "treasury", 2 * 10**16)
    env.client.transact(env.settlement.functions.claimCredit(env["carol"].address), env["stranger"])
    assert credit_of(env, "carol") == owed - 2 * 10**16
    fund(env, "treasury", TOKEN)
    env.client.transact(env.settlement.functions.claimCredit(env["carol"].address), env["dave"])
    assert credit_of(env, "carol") == 0 and env.deposit("carol")[0] - carol == owed
    assert env.deposit("treasury")[0] == TOKEN + 2 * 10**16 - owed
    settle(env, slot, ["bob"])
    assert deposits_add_up(env)  # every position of the slot is settled


# ------------------------------------------------------------------ bands


def test_energy_outside_the_band_pays_the_penalty(env):
    slot = env.open_slot()
    env.publish_band("EV", slot, 0, 4000)
    env.publish_band("PV", slot, -4000, 0)
    deliver(env, slot, {"MEV": [6000] * 10 + [2000] * 5, "MPV": -6000}, ["bob", "carol"])
    # EV: 70 000 W·min against at most 60 000; PV: -90 000 W·min against at least -60 000
    finalize(env, slot)
    receipt = settle(env, slot, ["bob", "carol"])
    violations = {e["flexibility"]: e for e in env.events("BandViolation", receipt, env.settlement)}
    assert violations.keys() == {EV, PV}
    ev, pv = violations[EV], violations[PV]
    assert (ev["slot"], ev["owner"], ev["outsideWattMinutes"], ev["meteredWattMinutes"], ev["readings"]) == (
        slot,
        env["bob"].address,
        10_000,
        70_000,
        SLOT_MINUTES,
    )
    assert (ev["pMinW"], ev["pMaxW"]) == (0, 4000)
    assert (pv["owner"], pv["outsideWattMinutes"], pv["meteredWattMinutes"]) == (
        env["carol"].address,
        30_000,
        -90_000,
    )
    assert (pv["pMinW"], pv["pMaxW"]) == (-4000, 0)
    result = settled_by_member(env, receipt)
    bob, carol = result["bob"], result["carol"]
    assert (bob["charge"], bob["penalty"]) == (charge(70_000, IMPORT_PRICE), charge(10_000, PENALTY_PRICE))
    assert bob["paidToTreasury"] == bob["charge"] + bob["penalty"]
    assert (carol["credit"], carol["penalty"]) == (
        credit(90_000, EXPORT_PRICE),
        charge(30_000, PENALTY_PRICE),
    )
    assert carol["paidToTreasury"] == carol["penalty"]
    assert view(env, "slotFlows", slot) == (
        bob["charge"] + bob["penalty"] + carol["penalty"],
        credit(90_000, EXPORT_PRICE),
    )
    assert tuple(view(env, "violations", EV)) == (1, 10_000)
    assert tuple(view(env, "violations", PV)) == (1, 30_000)
    assert tuple(view(env, "violations", BAT)) == (0, 0)


# ---------------------------------------------------- finality and notice


def test_settlement_waits_for_the_data_deadline_and_the_finalized_slot(env):
    slot = traded_slot(env)
    final = view(env, "finalTime", slot)
    assert final == env.community.ledger.data_deadline(slot) == slot_end(slot) + DATA_DELAY_MINUTES * 60
    deliver(env, slot, {"MEV": 4000, "MPV": -4000}, ["bob", "carol"])
    env.client.transact(env.contract.functions.finalizeSlot(slot), env["stranger"])
    env.travel(final - 1)
    expect_revert("SlotNotFinal", lambda: settle(env, slot), slot=slot, finalTime=final, blockTime=final - 1)
    other = slot + 1  # final, but the market has not finalized it
    env.travel(view(env, "finalTime", other))
    expect_revert("SlotNotFinalized", lambda: settle(env, other, ["dave"]), slot=other)
    assert not view(env, "isSettled", env["dave"].address, other)
    assert settled_by_member(env, settle(env, slot, ["bob", "carol"])).keys() == {"bob", "carol"}


def test_readings_after_the_data_deadline_are_refused(env):
    slot = env.open_slot()
    deadline = env.community.ledger.data_deadline(slot)
    start = slot * SLOT_MINUTES
    env.travel(deadline - 1)
    env.community.ledger.record_readings(
        env["gateway"], [Reading("MD", clock.minute_start(start), 1.0, 0, 1, 0)]
    )
    env.travel(deadline)
    assert env.now() == deadline
    late = Reading("MD", clock.minute_start(start + 1), 1.0, 0, 1, 0)
    expect_revert(
        "ReadingPastDeadline",
        lambda: env.community.ledger.record_readings(env["gateway"], [late]),
        index=0,
        meter=units.encode_id("MD"),
        minute=start + 1,
        deadline=deadline,
    )
    assert env.community.ledger.slot_energy("MD", slot).readings == 1


def test_terms_change_only_with_notice(env):
    operator, settlement = env["operator"], env.community.settlement
    standing = settlement.terms_at(0)
    assert standing == Terms(Decimal("0.3"), Decimal("0.05"), Decimal("1"), 20.0)
    new = Terms(Decimal("0.5"), Decimal("0.1"), Decimal("2"), 10.0)
    earliest = notice_slot(env)
    refusal = expect_revert("NoticeTooShort", lambda: settlement.set_terms(operator, earliest - 1, new))
    assert refusal.args_by_name["fromSlot"] == earliest - 1
    assert refusal.args_by_name["earliestSlot"] in (earliest, earliest + 1)
    current = env.now() // 60 // SLOT_MINUTES
    expect_revert("NoticeTooShort", lambda: settlement.set_terms(operator, current + 1, new))
    expect_revert(
        "ExportAboveImport",
        lambda: settlement.set_terms(operator, earliest + 1, Terms(Decimal(1), Decimal(2), Decimal(0), 1.0)),
        importPrice=TOKEN,
        exportPrice=2 * TOKEN,
    )
    expect_revert(
        "MissingMinutePowerTooHigh",
        lambda: settlement.set_terms(
            operator, earliest + 1, Terms(Decimal(1), Decimal(0), Decimal(0), 1000.001)
        ),
        missingMinuteW=1_000_001,
        maxW=1_000_000,
    )
    later = Terms(Decimal("0.6"), Decimal("0.1"), Decimal("3"), 5.0)
    settlement.set_terms(operator, earliest + 10, later)
    settlement.set_terms(operator, earliest + 20, later)
    settlement.set_terms(operator, earliest + 1, new)  # replaces both
    assert settlement.terms_at(earliest) == standing  # every slot has terms
    assert settlement.terms_at(earliest + 1) == settlement.terms_at(earliest + 99) == new
    assert settlement.collateral_price_units(earliest) == IMPORT_PRICE
    assert settlement.collateral_price_units(earliest + 1) == 5 * PRICE


def test_scheduled_terms_price_the_slots_they_cover(env):
    new = Terms(Decimal("0.5"), Decimal("0.1"), Decimal("2"), 10.0)
    start = notice_slot(env) + 1
    env.community.settlement.set_terms(env["operator"], start, new)
    env.travel((start - 8) * SLOT_MINUTES * 60)  # the slot is now open for orders
    slot = env.open_slot()
    assert slot == start
    _, receipt = env.place("carol", slot, SELL, 1000, PRICE)
    assert env.events("OrderPlaced", receipt)[0]["lockPrice"] == 5 * PRICE
    assert env.deposit("carol")[1] == 5 * PRICE
    env.place("dave", slot, BUY, 1000, PRICE)
    deliver(env, slot, {"MPV": -4000}, ["carol"])  # dave's meter says nothing
    finalize(env, slot)
    result = settled_by_member(env, settle(env, slot, ["carol", "dave"]))
    assert result["carol"]["charge"] == 0 and env.deposit("carol") == (1000 * TOKEN + PRICE, 0)
    dave = result["dave"]
    assert (dave["missingMinutes"], dave["meteredWattMinutes"]) == (SLOT_MINUTES, SLOT_MINUTES * 10_000)
    assert dave["charge"] == charge(SLOT_MINUTES * 10_000 - 60_000, 5 * PRICE)


def test_the_treasury_changes_only_with_notice_by_the_admin(env):
    settlement, admin = env.community.settlement, env["admin"]
    earliest = notice_slot(env)
    expect_revert("ZeroAddress", lambda: settlement.set_treasury(admin, ZERO_ADDRESS, earliest + 1))
    expect_revert(
        "NoticeTooShort",
        lambda: settlement.set_treasury(admin, env["dso"].address, earliest - 1),
        fromSlot=earliest - 1,
    )
    settlement.set_treasury(admin, env["dso"].address, earliest + 5)
    settlement.set_treasury(admin, env["stranger"].address, earliest + 9)
    settlement.set_treasury(admin, env["aggregator"].address, earliest + 1)  # replaces both
    assert settlement.treasury_at(0) == settlement.treasury_at(earliest) == env["treasury"].address
    assert (
        settlement.treasury_at(earliest + 1)
        == settlement.treasury_at(earliest + 99)
        == env["aggregator"].address
    )


def test_a_settlement_needs_a_treasury(env):
    addresses = env.market.deployment.addresses
    expect_revert(
        "ZeroAddress",
        lambda: env.client.deploy(
            "Settlement",
            env["admin"],
            *(addresses[name] for name in ("CommunityRegistry", "MeasurementLedger", "CapacityLimits")),
            addresses["CommunityToken"],
            addresses["EnergyMarket"],
            addresses["DynamicTariff"],
            ZERO_ADDRESS,
            env.community.settlement.terms_at(0).to_chain(),
        ),
    )


# ----------------------------------------------------------------- meters


def test_meters_registered_later_count_from_their_registration(env):
    registry = env.community.registry
    registry.register_meter(env["admin"], Meter("MD2", 1, env["dave"].address, env["dave"].address))
    registered = registry.meter("MD2").registered_minute
    assert registry.meters_of(env["dave"].address) == ["MD", "MD2"]
    current = registered // SLOT_MINUTES
    deliver(env, current, {"MD": 1000}, ["dave"])  # MD2 says nothing in the slot it was registered in
    finalize(env, current)
    dave = settled_by_member(env, settle(env, current, ["dave"]))["dave"]
    missing = (current + 1) * SLOT_MINUTES - registered
    assert dave["missingMinutes"] == missing
    assert dave["meteredWattMinutes"] == SLOT_MINUTES * 1000 + missing * MISSING_MINUTE_W
    later = current + 2
    env.travel(slot_end(later))
    env.record_slot("MD", later, 1000)
    env.record_slot("MD2", later, 3000)
    finalize(env, later)
    dave = settled_by_member(env, settle(env, later, ["dave"]))["dave"]
    assert (dave["meteredWattMinutes"], dave["missingMinutes"]) == (60_000, 0)


def test_a_members_settlement_gas_does_not_grow_with_other_members_meters(env):
    slot = env.open_slot()

    def settle_gas(extra_meters: int) -> tuple[int, int]:
        """Gas of settling dave, then alice, for ``slot`` after registering ``extra_meters``
        more meters for alice (from a snapshot, so both runs start alike)."""
        snapshot = env.tester.take_snapshot()
        try:
            calls = [
                (
                    env.community.registry.register_meter_call(
                        Meter(f"XA{i}", 1, env["alice"].address, env["alice"].address)
                    ),
                    env["admin"],
                )
                for i in range(extra_meters)
            ]
            if calls:
                env.client.transact_all(calls, gas=SETUP_GAS)
            deliver(env, slot, {"MD": 1000}, ["alice", "dave"])
            finalize(env, slot)
            dave = settle(env, slot, ["dave"])["gasUsed"]
            alice = settle(env, slot, ["alice"])["gasUsed"]
            return dave, alice
        finally:
            env.tester.revert_to_snapshot(snapshot)
            env.client.forget_nonces()

    dave_before, alice_before = settle_gas(0)
    dave_after, alice_after = settle_gas(20)
    assert abs(dave_after - dave_before) <= dave_before // 10, (dave_before, dave_after)
    assert alice_after > alice_before + 20 * 2000  # alice's own meters are read: the measure sees them


# ----------------------------------------------------------- access, pause


def test_withdrawals_work_while_the_market_is_paused(env):
    slot = env.open_slot()
    resting, _ = env.place("dave", slot, BUY, 1000, PRICE)
    env.community.market.set_paused(env["operator"], True)
    expect_revert("MarketPaused", lambda: env.place("dave", slot, BUY, 1000, PRICE))
    env.client.transact(env.contract.functions.cancelOrder(resting), env["dave"])
    wallet = env.wallet("dave")
    withdraw(env, "dave", 1000 * TOKEN)
    assert env.wallet("dave") - wallet == 1000 * TOKEN and env.deposit("dave") == (0, 0)
    fund(env, "dave", 10 * TOKEN)
    env.community.market.set_paused(env["operator"], False)
    env.place("dave", slot, BUY, 1000, PRICE)
    assert env.deposit("dave") == (10 * TOKEN - PRICE, PRICE)


def test_only_the_settlement_takes_positions(env):
    slot = traded_slot(env)
    finalize(env, slot)
    for name in ("admin", "operator", "carol", "stranger"):
        expect_revert(
            "NotSettlement",
            lambda n=name: env.client.transact(
                env.contract.functions.release(env["carol"].address, slot), env[n]
            ),
            account=env[name].address,
            settlement=env.settlement.address,
        )
