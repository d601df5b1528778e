"""contracts.market: the typed API in Python units (kWh, tokens, seconds) over the contracts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts import clock, units
from contracts.client import ContractRevert
from contracts.clock import SlotClock
from contracts.market import (
    AssetKind,
    ClearingMode,
    CloseReason,
    OrderRequest,
    OrderStatus,
    Side,
    TimeInForce,
    lock_units,
    on_tick,
    trade_value,
)
from contracts.settlement import Deposit, Terms
from tests.market_setup import DATA_DELAY_MINUTES, FUNDED_TOKENS, IMPORT_PRICE, SLOT_MINUTES
from tests.reverts import expect_revert


def test_units_for_the_market():
    assert units.kwh_to_wh(1.2345) == 1234 and units.wh_to_kwh(1500) == 1.5
    assert units.kwh_to_wh_down(0.83325) == 833 and units.kwh_to_wh_down(0.6 - 0.4) == 200
    assert units.slot_energy_kwh(11.0, 15) == 2.75
    assert units.price_to_units_per_kwh("0.25") == 25 * 10**16
    assert units.units_per_kwh_to_price(25 * 10**16) == Decimal("0.25")
    assert SlotClock(15).start(3) == 2700 and SlotClock(15).slot_of(2699) == 2
    assert clock.duration_minutes(300) == 5
    with pytest.raises(units.UnitError):
        clock.duration_minutes(90)
    assert lock_units(1, 1001) == 2 and trade_value(1, 1001) == 1
    assert on_tick("0.1234567") == Decimal("0.123456") and on_tick("0.1234567", up=True) == Decimal(
        "0.123457"
    )
    assert on_tick("0.25") == on_tick("0.25", up=True) == Decimal("0.25")


def test_orders_fills_and_cancels_in_python_units(env):
    market, slot = env.market, env.open_slot()
    market.market.set_gate_closure(env["operator"], 600)
    assert market.market.gate_closure_time(slot) == market.clock.start(slot) - 600
    sell = OrderRequest(slot, Side.SELL, "PV", 1.5, "0.12")
    collateral_price = market.settlement.collateral_price_units(slot)
    assert collateral_price == IMPORT_PRICE
    placed = market.market.place_order(env["carol"], sell)
    # a sell locks its collateral: 1.5 kWh at the import price of 0.3
    assert (
        placed.rests
        and placed.fills == []
        and market.market.lock_for(sell, collateral_price) == Decimal("0.45")
    )
    assert market.settlement.deposit_of(env["carol"].address) == Deposit(
        Decimal(FUNDED_TOKENS) - Decimal("0.45"), Decimal("0.45")
    )
    buy = OrderRequest(slot, Side.BUY, "EV", 2.0, "0.2")
    assert market.market.lock_for(buy, collateral_price) == Decimal("0.4")
    bob = market.market.place_order(env["bob"], buy)
    (fill,) = bob.fills
    assert (fill.energy_kwh, fill.price, fill.value, fill.buyer_refund) == (
        1.5,
        Decimal("0.12"),
        Decimal("0.18"),
        Decimal("0.12"),
    )
    assert bob.status == OrderStatus.OPEN and bob.filled_kwh == 1.5
    (resting,) = market.market.open_orders(slot, Side.BUY)
    assert (resting.order_id, resting.remaining_kwh, resting.asset_id) == (bob.order_id, 0.5, "EV")
    closure = market.market.cancel_order(env["bob"], bob.order_id)
    assert (closure.reason, closure.remaining_kwh, closure.refund) == (
        CloseReason.CANCELLED,
        0.5,
        Decimal("0.1"),
    )
    assert market.market.position(env["carol"].address, slot).proceeds == Decimal("0.18")
    assert market.market.schedule("EV", slot).matched_net_kwh == 1.5
    ioc = OrderRequest(slot, Side.BUY, "MD", 1.0, "0.5", AssetKind.METER, TimeInForce.IMMEDIATE_OR_CANCEL)
    placed = market.market.place_order(env["dave"], ioc)
    assert (
        placed.status == OrderStatus.CLOSED and placed.closures[0].reason == CloseReason.IMMEDIATE_REMAINDER
    )


def test_curtailment_finalization_and_settlement_in_python_units(env):
    market, slot = env.market, env.open_slot()
    market.market.place_order(env["carol"], OrderRequest(slot, Side.SELL, "PV", 2.0, "0.1"))
    market.market.place_order(env["bob"], OrderRequest(slot, Side.BUY, "EV", 2.0, "0.1"))
    env.publish_band("EV", slot, 0, 6000)
    assert market.market.curtail_preview("EV", slot) == (1, True)
    result = market.market.curtail(env["dso"], "EV", slot)
    assert result.done and [(c.flex_id, c.curtailed_kwh, c.refund) for c in result.curtailments] == [
        ("EV", 0.5, Decimal("0.05"))
    ]
    assert market.market.curtail_preview("EV", slot) == (0, True)
    carol = market.market.position(env["carol"].address, slot)
    assert (carol.sold_kwh, carol.proceeds, carol.collateral) == (1.5, Decimal("0.15"), Decimal("0.45"))
    env.travel(market.clock.start(slot + 1))  # delivered
    assert not market.market.finalized(slot)
    done, cut = market.market.finalize_slot(env["stranger"], slot)
    assert (done, cut) == (True, []) and market.market.finalized(slot)
    with pytest.raises(ContractRevert) as caught:
        market.market.curtail(env["dso"], "EV", slot)
    assert market.market.settlement_started(caught.value)
    env.record_slot("MEV", slot, 7000)  # 1.75 kWh, 0.25 above what bob bought; 7 kW > 6 kW band
    env.record_slot("MB", slot, 0)  # bob's house meter (a missing minute would count as 20 kW)
    env.record_slot("MPV", slot, -6000)  # 1.5 kWh injected, as sold
    final = market.settlement.final_time(slot)
    assert final == market.clock.start(slot + 1) + DATA_DELAY_MINUTES * 60
    env.travel(final)
    carol_before = market.settlement.deposit_of(env["carol"].address)
    settled = market.settlement.settle(env["stranger"], slot, [env["bob"].address, env["carol"].address])
    bob, carol = settled.members
    assert (bob.traded_kwh, bob.metered_kwh, bob.imbalance_kwh, bob.missing_minutes) == (1.5, 1.75, 0.25, 0)
    assert bob.charge == Decimal("0.075")  # 0.25 kWh at the import price of 0.3
    assert bob.penalty == Decimal("0.25")  # 0.25 kWh outside the band at the penalty price of 1
    assert bob.paid_to_treasury == bob.charge + bob.penalty and bob.debt == 0
    assert (carol.traded_kwh, carol.imbalance_kwh, carol.charge, carol.credit) == (-1.5, 0.0, 0, 0)
    # carol's proceeds and her collateral become free
    assert market.settlement.deposit_of(env["carol"].address) == Deposit(
        carol_before.free + Decimal("0.15") + Decimal("0.45"), Decimal(0)
    )
    (violation,) = settled.violations
    assert (violation.flex_id, violation.outside_kwh, violation.p_max_kw) == ("EV", 0.25, 6.0)
    assert market.settlement.violations("EV") == (1, 0.25)
    assert (
        market.settlement.is_settled(env["bob"].address, slot)
        and market.settlement.debt_of(env["bob"].address) == 0
    )
    assert market.settlement.credit_of(env["carol"].address) == 0
    assert market.settlement.slot_flows(slot) == (Decimal("0.325"), Decimal(0))


def test_deposits_pausing_and_removal_in_python_units(env):
    market, slot = env.market, env.open_slot()
    dave = env["dave"].address
    assert market.settlement.deposit_of(dave) == Deposit(Decimal(FUNDED_TOKENS), Decimal(0))
    held = market.deposits_held()
    assert held == 5 * FUNDED_TOKENS  # four members and the treasury
    market.settlement.withdraw(env["dave"], "10")
    assert market.token.balance(dave) == 10
    market.fund(env["dave"], "4")
    assert market.settlement.deposit_of(dave).free == FUNDED_TOKENS - 6 and market.deposits_held() == held - 6
    market.market.set_paused(env["operator"], True)
    assert market.market.paused()
    request = OrderRequest(slot, Side.BUY, "MD", 1.0, "0.3", AssetKind.METER)
    with pytest.raises(ContractRevert, match="MarketPaused"):
        market.market.place_order(env["dave"], request)
    market.market.set_paused(env["operator"], False)
    placed = market.market.place_order(env["dave"], request)
    assert market.settlement.deposit_of(dave).locked == Decimal("0.3")
    expect_revert("OrderStillValid", lambda: market.market.remove_order(env["operator"], placed.order_id))
    market.registry.remove_member(env["admin"], dave)
    closure = market.market.remove_order(env["operator"], placed.order_id)
    assert (closure.order_id, closure.reason, closure.remaining_kwh, closure.refund) == (
        placed.order_id,
        CloseReason.REMOVED,
        1.0,
        Decimal("0.3"),
    )
    assert market.settlement.deposit_of(dave) == Deposit(Decimal(FUNDED_TOKENS - 6), Decimal(0))


def test_configuration_and_the_auction_in_python_units(env):
    market = env.market
    market.market.set_clearing_mode(env["operator"], ClearingMode.CALL_AUCTION)
    assert market.market.clearing_mode() == ClearingMode.CALL_AUCTION
    slot = env.open_slot()
    market.market.place_order(env["carol"], OrderRequest(slot, Side.SELL, "PV", 1.0, "0.1"))
    market.market.place_order(env["dave"], OrderRequest(slot, Side.BUY, "MD", 1.0, "0.3", AssetKind.METER))
    env.travel(market.market.gate_closure_time(slot))
    cleared = market.market.clear_auction(env["stranger"], slot)
    # 1 kWh at 0.1 and at 0.3, both without surplus: the midpoint
    assert (cleared.price, cleared.volume_kwh, len(cleared.fills)) == (Decimal("0.2"), 1.0, 1)
    assert market.settlement.final_time(slot) == market.clock.start(slot + 1) + DATA_DELAY_MINUTES * 60
    standing = market.settlement.terms_at(slot)
    assert standing == Terms(Decimal("0.3"), Decimal("0.05"), Decimal("1"), 20.0)
    # new terms and a new treasury apply only after two days' notice
    notice = 2 * 24 * 60 // SLOT_MINUTES
    current = env.now() // 60 // SLOT_MINUTES
    early, later = current + notice - 1, current + notice + 1
    terms = Terms(Decimal("0.4"), Decimal("0.1"), Decimal("2"), 10.0)
    expect_revert(
        "NoticeTooShort", lambda: market.settlement.set_terms(env["operator"], early, terms), fromSlot=early
    )
    market.settlement.set_terms(env["operator"], later, terms)
    assert market.settlement.terms_at(later) == terms and market.settlement.terms_at(later - 1) == standing
    assert market.settlement.collateral_price_units(later) == units.price_to_units_per_kwh("0.4")
    treasury = market.settlement.treasury_at(slot)
    assert treasury == env["treasury"].address
    expect_revert(
        "NoticeTooShort",
        lambda: market.settlement.set_treasury(env["admin"], env["dso"].address, early),
        fromSlot=early,
    )
    market.settlement.set_treasury(env["admin"], env["dso"].address, later)
    assert market.settlement.treasury_at(later) == env["dso"].address
    assert market.settlement.treasury_at(later - 1) == treasury
    assert market.slot_minutes == SLOT_MINUTES
