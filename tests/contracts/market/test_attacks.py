"""The attacks of the market-integrity review, written as the attacker would try them.

Each test replays one attack from issue 11 against the contracts as they are now and shows
that it no longer pays (or is refused), in the market community of ``tests.market_setup``:
members alice (battery BAT, meters MA, MBAT), bob (EV charger EV, meters MB, MEV), carol
(PV, meter MPV), dave (meter MD); every member and the treasury hold a 1000-token deposit.
"""

from __future__ import annotations

import pytest

from contracts import units
from contracts.market import AssetKind, Side, TimeInForce
from tests.market_setup import (
    EXPORT_PRICE,
    IMPORT_PRICE,
    MEMBERS,
    METERS,
    MISSING_MINUTE_W,
    PENALTY_PRICE,
    PRICE,
    SLOT_MINUTES,
    TOKEN,
    deploy_market_community,
)
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
WATT_MINUTES_PER_KWH = 60_000


def meters_of(member: str) -> list[str]:
    return [meter for meter, owner in METERS.items() if owner == member]


def deliver(env, slot: int, powers_w: dict[str, int], members=MEMBERS) -> dict:
    """Close the gate, record ``powers_w`` (meter -> constant W; meters not named stay
    silent), finalize and settle ``members``; returns member name -> MemberSettlement."""
    community, operator = env.community, env["operator"]
    env.to_gate_closure(slot)
    while not community.market.finalized(slot):
        community.market.finalize_slot(operator, slot)
    env.travel((slot + 1) * SLOT_MINUTES * 60)
    for meter, power in powers_w.items():
        env.record_slot(meter, slot, power)
    env.to_final(slot)
    result = community.settlement.settle(operator, slot, [env[name].address for name in members])
    by_address = {settled.member: settled for settled in result.members}
    return {name: by_address[env[name].address] for name in members}


def silent_except(active: dict[str, int]) -> dict[str, int]:
    """Every meter reports 0 W except those in ``active``."""
    return {meter: active.get(meter, 0) for meter in METERS}


# ------------------------------------------------- 1. the treasury is not a piggy bank


def test_colluders_selling_energy_never_delivered_pay_for_it_and_the_treasury_gains(env):
    """Alice "sells" 100 kWh she never delivers to her accomplice dave, who never uses it.
    Before: dave was paid the export price for the "unused" energy and alice's debt was never
    collected. Now alice's sell locked collateral at the import price, which pays her
    shortfall, and dave gets no export credit for energy that never left the community."""
    slot = env.open_slot()
    quantity_wh = 100_000
    before = {name: env.balance(name) for name in ("alice", "dave", "treasury")}
    _, receipt = env.place("alice", slot, SELL, quantity_wh, PRICE, asset=(AssetKind.METER, "MA"))
    assert env.events("OrderPlaced", receipt)[0]["lockPrice"] == IMPORT_PRICE  # collateral
    env.place("dave", slot, BUY, quantity_wh, PRICE)
    settled = deliver(env, slot, silent_except({}))

    assert settled["alice"].charge == units.units_to_tokens(quantity_wh * IMPORT_PRICE // 1000)
    assert settled["dave"].credit == 0
    assert env.community.settlement.debt_of(env["alice"].address) == 0  # the collateral paid it
    pair = env.balance("alice") + env.balance("dave") - before["alice"] - before["dave"]
    treasury = env.balance("treasury") - before["treasury"]
    assert pair == -quantity_wh * IMPORT_PRICE // 1000
    assert treasury == quantity_wh * IMPORT_PRICE // 1000


def test_a_sell_without_the_collateral_in_the_deposit_is_refused(env):
    slot = env.open_slot()
    too_much_wh = 1000 * TOKEN * 1000 // IMPORT_PRICE + 1000  # collateral above the 1000-token deposit
    expect_revert(
        "InsufficientDeposit",
        lambda: env.place("alice", slot, SELL, too_much_wh, PRICE, asset=(AssetKind.METER, "MA")),
    )


def test_export_credit_is_paid_only_for_metered_injection(env):
    """Dave buys 10 kWh and uses none of it: no export credit. Carol injects 2 kW from her
    PV with nothing sold: she is paid the export price for it."""
    slot = env.open_slot()
    env.place("alice", slot, SELL, 10_000, PRICE, asset=(AssetKind.METER, "MA"))
    env.place("dave", slot, BUY, 10_000, PRICE)
    settled = deliver(env, slot, silent_except({"MA": 40_000, "MPV": -2_000}))  # MA: 10 kWh in 15 min
    assert settled["dave"].credit == 0
    injected_wmin = 2_000 * SLOT_MINUTES
    assert settled["carol"].credit == units.units_to_tokens(
        injected_wmin * EXPORT_PRICE // WATT_MINUTES_PER_KWH
    )


def test_no_member_gives_the_settlement_a_standing_allowance(env):
    """Members fund a deposit they control: after funding, no allowance is left to anyone,
    and only the member can withdraw its free deposit."""
    token = env.community.token.contract.functions
    for name in (*MEMBERS, "treasury"):
        for spender in (env.community.settlement.address, env.community.market.address):
            assert env.client.call(token.allowance(env[name].address, spender)) == 0
    free, _ = env.deposit("alice")
    env.community.settlement.withdraw(env["alice"], units.units_to_tokens(free))
    assert env.wallet("alice") == free


# ------------------------------------------------- 2. bands bind the flexibility


def test_an_order_against_a_flexibilitys_own_meter_is_refused(env):
    slot = env.open_slot()
    expect_revert(
        "MeterMeasuresFlexibility",
        lambda: env.place("bob", slot, BUY, 5_000, PRICE, asset=(AssetKind.METER, "MEV")),
    )


def test_a_flexibility_without_a_published_band_cannot_trade(env):
    slot = env.bare_slot()
    expect_revert("BandNotPublished", lambda: env.place("bob", slot, BUY, 1_000, PRICE))


def test_a_self_trade_cannot_shift_a_flexibilitys_schedule(env):
    """Alice buys for her battery, then tries to sell to herself to move its matched total."""
    slot = env.open_slot()
    env.place("alice", slot, BUY, 2_000, 2 * PRICE)
    expect_revert("SelfTrade", lambda: env.place("alice", slot, SELL, 2_000, PRICE))


def test_trading_around_a_band_through_the_household_meter_does_not_pay(env):
    """Bob's EV charger may draw 2 kW in the slot; he buys the energy for 11 kW cheaply through
    his household meter and charges at 11 kW. The penalty for the energy outside the band is
    larger than what the cheap purchase saved him against the import price."""
    slot = env.open_slot()
    env.publish_band("EV", slot, 0, 2_000)
    bought_wh = 11_000 * SLOT_MINUTES // 60
    env.place("alice", slot, SELL, bought_wh, PRICE, asset=(AssetKind.METER, "MA"))
    env.place("bob", slot, BUY, bought_wh, PRICE, asset=(AssetKind.METER, "MB"))
    settled = deliver(env, slot, silent_except({"MEV": 11_000, "MA": -44_000}))
    outside_wh = (11_000 - 2_000) * SLOT_MINUTES // 60
    assert settled["bob"].penalty == units.units_to_tokens(outside_wh * PENALTY_PRICE // 1000)
    saving = units.units_to_tokens(bought_wh * (IMPORT_PRICE - PRICE) // 1000)
    assert settled["bob"].penalty > saving
    assert env.community.settlement.violations("EV")[0] == 1


def test_a_band_tightened_before_gate_closure_curtails_trades_without_anyone_calling_curtail(env):
    """Nobody runs the curtailer: the slot cannot be settled before it is finalized, and
    finalizing cuts the trade back into the band and refunds the buyer."""
    slot = env.open_slot()
    env.place("carol", slot, SELL, 2_000, PRICE)  # PV injects 8 kW on average
    env.place("bob", slot, BUY, 2_000, PRICE)
    env.publish_band("PV", slot, -4_000, 0)  # now at most 1 kWh of injection in the slot
    env.to_gate_closure(slot)
    env.travel((slot + 1) * SLOT_MINUTES * 60)
    env.to_final(slot)
    expect_revert(
        "SlotNotFinalized",
        lambda: env.community.settlement.settle(env["operator"], slot, [env["bob"].address]),
    )
    done, cuts = env.community.market.finalize_slot(env["stranger"], slot)
    assert done and len(cuts) == 1 and cuts[0].curtailed_kwh == pytest.approx(1.0)
    assert env.community.market.position(env["carol"].address, slot).sold_kwh == pytest.approx(1.0)
    expect_revert("SlotInSettlement", lambda: env.community.market.curtail(env["bob"], "PV", slot))


# ------------------------------------------------- 3. no member can deny others a slot


def test_a_spammer_runs_out_of_orders_long_before_the_book_does(env):
    slot = env.open_slot()
    for i in range(8):
        env.place("dave", slot, SELL, 10, PRICE * (20 + i))
    expect_revert("TooManyOpenOrders", lambda: env.place("dave", slot, SELL, 10, PRICE * 30), maxOrders=8)
    env.place("alice", slot, SELL, 1_000, PRICE * 2, asset=(AssetKind.METER, "MA"))  # others still trade


def test_free_one_wh_orders_are_gone(env):
    slot = env.open_slot()
    expect_revert("InvalidQuantity", lambda: env.place("dave", slot, SELL, 1, PRICE), minWh=10)
    env.place("dave", slot, SELL, 10, PRICE)
    assert env.deposit("dave")[1] == -(-10 * IMPORT_PRICE // 1000)  # a sell locks collateral


def test_resting_all_or_none_orders_cannot_exhaust_the_matching_budget(env):
    """Large all-or-none bids sit at the best price; a seller behind them still reaches the
    ordinary bids, and a ninth all-or-none order on the side is refused."""
    slot = env.open_slot()
    aon = TimeInForce.ALL_OR_NONE
    for name, asset in (("alice", "MA"), ("bob", "MB")):
        for i in range(4):
            env.place(name, slot, BUY, 50_000, 3 * PRICE - i * 10**12, aon, asset=(AssetKind.METER, asset))
    expect_revert(
        "TooManyAllOrNone", lambda: env.place("dave", slot, BUY, 50_000, 2 * PRICE, aon), maxOrders=8
    )
    env.place("dave", slot, BUY, 1_000, PRICE)  # an ordinary bid behind the eight
    _, receipt = env.place("carol", slot, SELL, 1_000, PRICE)
    fills = env.events("TradeExecuted", receipt)
    assert [fill["quantityWh"] for fill in fills] == [1_000]


# ------------------------------------------------- 4. settlement uses complete, final data


def test_a_member_who_cuts_the_meters_uplink_pays_for_the_missing_minutes(env):
    slot = env.open_slot()
    meters = {meter: 0 for meter in METERS if meter not in meters_of("dave")}  # dave's MD is silent
    settled = deliver(env, slot, meters)
    assert settled["dave"].missing_minutes == SLOT_MINUTES
    assert settled["dave"].charge == units.units_to_tokens(
        -(-MISSING_MINUTE_W * SLOT_MINUTES * IMPORT_PRICE // WATT_MINUTES_PER_KWH)
    )


def test_readings_after_the_data_deadline_are_refused(env):
    slot = env.open_slot(ahead=1)
    env.to_final(slot)
    expect_revert("ReadingPastDeadline", lambda: env.record_slot("MD", slot, 500))


def test_every_slot_has_settlement_terms(env):
    settlement = env.community.settlement
    for slot in (0, env.open_slot(), 2**32 - 1):
        terms = settlement.terms_at(slot)
        assert terms.import_price == units.units_per_kwh_to_price(IMPORT_PRICE)


# ------------------------------------------------- 5. prices and money routes


@pytest.fixture(scope="module")
def auction_env(artifacts):
    return deploy_market_community(artifacts, clearing_mode="auction")


def test_a_tiny_order_pair_does_not_move_the_auction_price(auction_env):
    """A bid of 1 kWh at 0.20 meets an ask at 0.10: the clearing price is 0.15. Two
    accomplices add a minimal bid far above and a minimal ask far below: the price stays."""
    env, meter = auction_env, AssetKind.METER
    slot = env.open_slot()
    env.place("alice", slot, BUY, 1_000, 2 * PRICE, asset=(meter, "MA"))
    env.place("bob", slot, SELL, 1_000, PRICE, asset=(meter, "MB"))
    env.place("dave", slot, BUY, 10, 29 * PRICE // 10)
    env.place("carol", slot, SELL, 10, PRICE // 10)
    env.to_gate_closure(slot)
    cleared = env.community.market.clear_auction(env["stranger"], slot)
    assert cleared.price == units.units_per_kwh_to_price(3 * PRICE // 2)
    assert cleared.volume_kwh == pytest.approx(1.01)


def test_no_single_role_can_redirect_money(env):
    settlement = env.community.settlement
    next_slot = env.open_slot(ahead=1)
    expect_revert(
        "AccessControlUnauthorizedAccount",
        lambda: settlement.set_treasury(env["operator"], env["operator"].address, next_slot),
    )
    expect_revert(
        "NoticeTooShort", lambda: settlement.set_treasury(env["admin"], env["admin"].address, next_slot)
    )
    expect_revert(
        "NotMarket",
        lambda: env.client.transact(env.settlement.functions.unlock(env["dave"].address, 1), env["admin"]),
    )
