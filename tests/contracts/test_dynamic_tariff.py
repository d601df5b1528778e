"""DynamicTariff and the settlement's tariff charge (issue 15, on chain): the DSO posts a tariff per
bus and hour until the market's gate closes for the hour's first slot, capped in price and
entries; the settlement charges it on each meter's metered consumption (missing minutes
counted, injection neither charged nor credited), pays it into the payee's deposit (debt
when the deposit is short), and members' statements show it."""

from __future__ import annotations

from contextlib import contextmanager
from decimal import Decimal

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contracts import units
from contracts.deploy import CommunityConfig
from contracts.ledger import Reading
from contracts.registry import Meter, Role
from contracts.tariff import Tariff, hour_of, hour_start
from tests import market_setup
from tests.community_setup import SETUP_GAS, deploy_on_eth_tester, populate
from tests.contracts.market.test_settlement import deliver, finalize
from tests.market_setup import (
    GATE_MINUTES,
    IMPORT_PRICE,
    MEMBERS,
    METERS,
    MISSING_MINUTE_W,
    ROLE_HOLDERS,
    SLOT_MINUTES,
    TOKEN,
)
from tests.reverts import expect_revert

# the fixtures of the shared market community (session deployment, snapshot per test)
market_chain = market_setup.market_chain
env = market_setup.env

BUS = 1  # every meter of the market community is at bus 1
TARIFF = Decimal("0.2")  # tokens per kWh
MAX_TARIFF = 10 * TOKEN
MAX_ENTRIES = 96
HOLDERS = (*ROLE_HOLDERS, "treasury")
ZERO_ADDRESS = "0x" + "00" * 20


def charge(watt_minutes: int, price_units: int) -> int:
    """The tariff charge of ``watt_minutes`` at ``price_units`` per kWh, rounded up."""
    return -(-watt_minutes * price_units // 60_000)


def future_hour(env, ahead: int = 2) -> int:
    return hour_of(env.now()) + ahead


def first_slot(hour: int) -> int:
    return hour * 60 // SLOT_MINUTES


def post(env, *tariffs: Tariff, dso: str = "dso"):
    return env.community.tariff.post_tariffs(env[dso], list(tariffs))


def settle_slot(env, slot: int, powers: dict[str, int], silent=(), members=MEMBERS):
    """Deliver ``powers`` in ``slot``, finalize it and settle ``members``: the statements by name."""
    deliver(env, slot, powers, members, silent)
    finalize(env, slot)
    result = env.community.settlement.settle(env["stranger"], slot, [env[name].address for name in members])
    names = {env[name].address: name for name in MEMBERS}
    return {names[record.member]: record for record in result.members}, result.receipt


# ------------------------------------------------------------------ posting


def test_the_dso_posts_and_changes_tariffs_until_the_gate_of_the_hour_closes(env):
    tariff, hour = env.community.tariff, future_hour(env)
    receipt = post(env, Tariff(BUS, hour, TARIFF), Tariff(2, hour, Decimal("0.5")))
    assert tariff.tariff_at(BUS, hour) == TARIFF and tariff.tariff_at(2, hour) == Decimal("0.5")
    assert tariff.tariff_at(BUS, hour + 1) == 0  # none posted
    posted = env.events("TariffPosted", receipt, tariff.contract)
    assert [(e["bus"], e["hour"], e["price"], e["dso"]) for e in posted] == [
        (BUS, hour, units.price_to_units_per_kwh(TARIFF), env["dso"].address),
        (2, hour, TOKEN // 2, env["dso"].address),
    ]
    deadline = tariff.posting_deadline(hour)
    assert deadline == hour_start(hour) - GATE_MINUTES * 60
    env.travel(deadline - 1)
    post(env, Tariff(BUS, hour, Decimal("0.3")))  # the last second before the gate closes
    assert tariff.tariff_at(BUS, hour) == Decimal("0.3")
    expect_revert(
        "TariffHourClosed",
        lambda: post(env, Tariff(BUS, hour + 1, TARIFF), Tariff(BUS, hour, TARIFF)),
        index=1,
        hour=hour,
        deadline=deadline,
        blockTime=deadline,
    )
    assert tariff.tariff_at(BUS, hour) == Decimal("0.3") and tariff.tariff_at(BUS, hour + 1) == 0


def test_hours_that_started_are_refused(env):
    hour = hour_of(env.now())
    expect_revert("TariffHourClosed", lambda: post(env, Tariff(BUS, hour, TARIFF)), index=0, hour=hour)
    expect_revert("TariffHourClosed", lambda: post(env, Tariff(BUS, hour - 5, TARIFF)), hour=hour - 5)
    expect_revert("TariffHourClosed", lambda: post(env, Tariff(BUS, 0, TARIFF)), deadline=0)


def test_prices_and_entries_are_capped(env):
    tariff, hour = env.community.tariff, future_hour(env)
    assert tariff.max_tariff() == 10
    post(env, Tariff(BUS, hour, Decimal(10)))  # the cap itself is allowed
    expect_revert(
        "TariffTooHigh",
        lambda: post(env, Tariff(BUS, hour, TARIFF), Tariff(2, hour, Decimal(10) + Decimal("1e-18"))),
        index=1,
        price=MAX_TARIFF + 1,
        maxPrice=MAX_TARIFF,
    )
    many = [Tariff(BUS, hour + i, TARIFF) for i in range(MAX_ENTRIES + 1)]
    post(env, *many[:MAX_ENTRIES])
    expect_revert("TooManyEntries", lambda: post(env, *many), count=MAX_ENTRIES + 1, maxEntries=MAX_ENTRIES)
    expect_revert("EmptyBatch", lambda: post(env))


def test_the_dso_names_the_payee(env):
    tariff = env.community.tariff
    assert tariff.payee() == env["admin"].address  # the deployment's default
    receipt = tariff.set_payee(env["dso"], env["dso"].address)
    assert tariff.payee() == env["dso"].address
    assert env.events("PayeeSet", receipt, tariff.contract)[0]["payee"] == env["dso"].address
    expect_revert("ZeroAddress", lambda: tariff.set_payee(env["dso"], ZERO_ADDRESS))


GUARDED = {
    "postTariffs": lambda env: ([(BUS, future_hour(env), 1)],),
    "setPayee": lambda env: (env["dso"].address,),
}


def test_every_state_changing_function_needs_the_dso_role_and_refuses_every_other(env):
    contract = env.community.tariff.contract
    assert state_changing(contract) == set(GUARDED)
    for name, arguments in GUARDED.items():
        call = getattr(contract.functions, name)(*arguments(env))
        expect_refused_by_every_other_role(env, call, Role.DSO)
        env.client.transact(call, env["dso"])


def state_changing(contract) -> set[str]:
    """Names of the state-changing functions in ``contract``'s ABI."""
    return {
        item["name"]
        for item in contract.abi
        if item["type"] == "function" and item["stateMutability"] in ("nonpayable", "payable")
    }


def expect_refused_by_every_other_role(env, call, role: Role) -> None:
    """``call`` reverts with the role error for every account of the community without ``role``."""
    registry = env.community.registry
    for holder in HOLDERS:
        if registry.has_role(role, env[holder].address):
            continue
        expect_revert(
            "AccessControlUnauthorizedAccount",
            lambda h=holder: env.client.transact(call, env[h]),
            account=env[holder].address,
            neededRole=registry.role_id(role),
        )


def chain_examples(count: int):
    """Hypothesis settings for a property whose examples run on the chain: few, no deadline,
    no shrinking (a chain example is slow to shrink)."""
    return settings(
        max_examples=count,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


@contextmanager
def rolled_back(env):
    """The chain as it was before the block, afterwards (a snapshot per hypothesis example)."""
    snapshot = env.tester.take_snapshot()
    try:
        yield env
    finally:
        env.tester.revert_to_snapshot(snapshot)
        env.client.forget_nonces()


# --------------------------------------------------------------- settlement


def test_the_settlement_charges_the_tariff_on_metered_consumption_and_pays_the_payee(env):
    hour = future_hour(env)
    slot = first_slot(hour)
    price = units.price_to_units_per_kwh(TARIFF)
    post(env, Tariff(BUS, hour, TARIFF), Tariff(2, hour, Decimal(5)))  # bus 2 has no meter here
    payee_before = env.deposit("admin")[0]
    deposits_before = {name: env.deposit(name)[0] for name in MEMBERS}
    statements, receipt = settle_slot(
        env, slot, {"MEV": 4800, "MB": 0, "MPV": -3600, "MA": 1000, "MBAT": -2000}, silent=("MD",)
    )
    consumed = {"MEV": 72_000, "MA": 15_000, "MD": 15 * MISSING_MINUTE_W}  # W·min; MD silent
    expected = {meter: charge(wm, price) for meter, wm in consumed.items()}
    assert expected == {"MEV": 24 * 10**16, "MA": 5 * 10**16, "MD": TOKEN}
    lines = {line.meter_id: line for record in statements.values() for line in record.tariff_lines}
    assert lines.keys() == consumed.keys()  # injection (MPV, MBAT) and 0 W (MB) are not charged
    for meter, line in lines.items():
        assert (line.bus, line.price) == (BUS, TARIFF)
        assert line.consumed_kwh == units.watt_minutes_to_kwh(consumed[meter])
        assert line.charge == units.units_to_tokens(expected[meter])
    by_member = {"alice": expected["MA"], "bob": expected["MEV"], "carol": 0, "dave": expected["MD"]}
    for name, amount in by_member.items():
        record = statements[name]
        assert record.tariff == record.paid_for_tariff == units.units_to_tokens(amount), name
        assert record.tariff_debt == 0
        imbalance_charge = units.tokens_to_units(record.charge + record.penalty)
        assert env.deposit(name)[0] == deposits_before[
            name
        ] - amount - imbalance_charge + units.tokens_to_units(record.paid_by_treasury), name
    # alice's net metered energy is negative (her battery injects), her house meter still pays
    assert statements["alice"].metered_kwh < 0 and statements["alice"].tariff > 0
    total = sum(expected.values())
    assert env.deposit("admin")[0] - payee_before == total
    assert env.community.settlement.tariff_charged(slot) == units.units_to_tokens(total)
    paid = env.events("TariffPaid", receipt, env.settlement)
    assert {e["payee"] for e in paid} == {env["admin"].address} and len(paid) == 3


def test_a_slot_takes_the_tariff_of_the_hour_it_starts_in(env):
    hour = future_hour(env)
    post(env, Tariff(BUS, hour, TARIFF), Tariff(BUS, hour + 1, Decimal("0.4")))
    last_of_hour = first_slot(hour + 1) - 1
    statements, _ = settle_slot(env, last_of_hour, {"MD": 4000}, members=("dave",))
    assert statements["dave"].tariff == units.units_to_tokens(
        charge(60_000, units.price_to_units_per_kwh(TARIFF))
    )
    statements, _ = settle_slot(env, last_of_hour + 1, {"MD": 4000}, members=("dave",))
    assert statements["dave"].tariff == Decimal("0.4")  # 1 kWh at the next hour's tariff
    statements, _ = settle_slot(env, first_slot(hour + 2), {"MD": 4000}, members=("dave",))
    assert statements["dave"].tariff == 0 and statements["dave"].tariff_lines == ()


def test_an_unpaid_tariff_is_debt_collected_after_the_treasurys_on_the_next_deposit(env):
    settlement, hour = env.community.settlement, future_hour(env)
    settlement.withdraw(env["dave"], Decimal(1000))
    env.community.tariff.set_payee(env["dso"], env["dso"].address)
    post(env, Tariff(BUS, hour, Decimal(1)))
    statements, _ = settle_slot(env, first_slot(hour), {"MD": 4000}, members=("dave",))
    dave = statements["dave"]
    import_charge = charge(60_000, IMPORT_PRICE)  # 1 kWh bought nowhere: imbalance at import price
    assert (dave.charge, dave.tariff) == (units.units_to_tokens(import_charge), Decimal(1))
    assert (dave.paid_to_treasury, dave.paid_for_tariff) == (0, 0)
    assert (dave.debt, dave.tariff_debt) == (units.units_to_tokens(import_charge), Decimal(1))
    assert settlement.tariff_debt_of(env["dave"].address) == 1
    treasury, payee = env.deposit("treasury")[0], env.deposit("dso")[0]
    part = import_charge + TOKEN // 2  # pays the treasury in full, half the tariff
    env.community.fund(env["dave"], units.units_to_tokens(part))
    assert env.deposit("treasury")[0] - treasury == import_charge
    assert env.deposit("dso")[0] - payee == TOKEN // 2
    assert settlement.tariff_debt_of(env["dave"].address) == Decimal("0.5")
    assert settlement.debt_of(env["dave"].address) == 0
    expect_revert("InsufficientDeposit", lambda: settlement.withdraw(env["dave"], Decimal(1)))
    env.community.fund(env["dave"], Decimal(2))
    assert settlement.tariff_debt_of(env["dave"].address) == 0
    assert env.deposit("dave") == (TOKEN + TOKEN // 2, 0)


METER_POWER = st.integers(min_value=-20_000, max_value=20_000)


@chain_examples(6)
@given(
    powers=st.fixed_dictionaries({meter: METER_POWER for meter in METERS}),
    silent=st.sets(st.sampled_from(sorted(METERS)), max_size=2),
    price=st.integers(min_value=0, max_value=MAX_TARIFF),
    drained=st.sets(st.sampled_from(MEMBERS)),
)
def test_tariffs_charge_exactly_consumption_and_move_only_between_deposits(
    env, powers, silent, price, drained
):
    """Whatever the members' meters do (inject, consume, go silent) and however empty their
    deposits are, each meter pays ceil(consumption · tariff) and nothing for injection; every
    token charged is either in the payee's deposit or recorded as tariff debt."""
    with rolled_back(env):
        for name in drained:
            env.community.settlement.withdraw(env[name], Decimal(1000))
        hour = future_hour(env)
        if price:
            env.client.transact(
                env.community.tariff.contract.functions.postTariffs([(BUS, hour, price)]), env["dso"]
            )
        held = env.wallet(env.settlement.address)
        payee = env.deposit("admin")[0]
        statements, _ = settle_slot(env, first_slot(hour), powers, silent=silent)
        total = 0
        for name, record in statements.items():
            expected = 0
            for meter, owner in METERS.items():
                if owner != name:
                    continue
                consumed = 15 * (MISSING_MINUTE_W if meter in silent else powers[meter])
                expected += charge(consumed, price) if consumed > 0 and price else 0
            assert units.tokens_to_units(record.tariff) == expected, name
            debt = units.tokens_to_units(record.tariff_debt)
            assert units.tokens_to_units(record.paid_for_tariff) + debt == expected, name
            # a debt is left only when the deposit ran dry (export credit is paid after collection)
            assert debt == 0 or env.deposit(name)[0] == units.tokens_to_units(record.paid_by_treasury)
            total += expected
        assert env.deposit("admin")[0] - payee == total - sum(
            units.tokens_to_units(env.community.settlement.tariff_debt_of(env[n].address)) for n in MEMBERS
        )
        assert env.wallet(env.settlement.address) == held  # the settlement's tokens never leave


def test_a_slot_straddling_two_hours_takes_the_tariff_of_the_hour_it_starts_in(artifacts):
    """With 7-minute slots (7 does not divide 60) a slot can start in one hour and end in the
    next: the tariff of the hour it starts in applies to all of it."""
    config = CommunityConfig(name="seven", slot_minutes=7, gate_closure_minutes=0, data_delay_minutes=5)
    client, tester, keyring, community = deploy_on_eth_tester(artifacts, config, ("erin",))
    populate(
        community,
        keyring,
        None,
        ("erin",),
        [Meter("ME", BUS, keyring["erin"].address, keyring["erin"].address)],
    )
    erin, operator = keyring["erin"], keyring["operator"]
    client.transact_all(
        [
            (community.token.mint_call(erin.address, 10), operator),
            (community.token.approve_call(community.settlement.address, 10), erin),
            (community.settlement.deposit_call(10), erin),
        ],
        gas=SETUP_GAS,
    )
    hour = hour_of(tester.get_block_by_number("pending")["timestamp"]) + 2
    last_minute = 60 * hour + 59
    slot = last_minute // 7
    if (slot + 1) * 7 == 60 * (hour + 1):  # ends on the hour: take the next hour's last slot
        hour, slot = hour + 1, (last_minute + 60) // 7
    assert slot * 7 // 60 == hour and ((slot + 1) * 7 - 1) // 60 == hour + 1
    community.tariff.post_tariffs(
        keyring["dso"], [Tariff(BUS, hour, Decimal(1)), Tariff(BUS, hour + 1, Decimal(9))]
    )
    tester.time_travel((slot + 1) * 7 * 60)
    readings = [Reading("ME", (slot * 7 + i) * 60, 6.0, 0.0, 1.0, 0.0) for i in range(7)]  # 0.7 kWh
    community.ledger.record_readings(keyring["gateway"], readings)
    tester.time_travel(community.settlement.final_time(slot))
    client.transact(community.market.contract.functions.finalizeSlot(slot), keyring["stranger"])
    (statement,) = community.settlement.settle(keyring["stranger"], slot, [erin.address]).members
    assert statement.tariff == Decimal("0.7") and statement.tariff_lines[0].price == 1
