"""contracts.market: the typed API in Python units (kWh, tokens, seconds) over the contracts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts import clock, units
from contracts.clock import SlotClock
from contracts.market import (
    AssetKind,
    ClearingMode,
    CloseReason,
    OrderRequest,
    OrderStatus,
    Side,
    TimeInForce,
    escrow_units,
    trade_value,
)
from tests.market_setup import SLOT_MINUTES


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
    assert escrow_units(1, 1001) == 2 and trade_value(1, 1001) == 1


def test_orders_fills_and_cancels_in_python_units(env):
    market, slot = env.market, env.open_slot()
    market.market.set_gate_closure(env["operator"], 600)
    assert market.market.gate_closure_time(slot) == market.clock.start(slot) - 600
    sell = OrderRequest(slot, Side.SELL, "PV", 1.5, "0.12")
    placed = market.market.place_order(env["carol"], sell)
    assert placed.rests and placed.fills == [] and market.market.escrow_for(sell) == 0
    buy = OrderRequest(slot, Side.BUY, "EV", 2.0, "0.2")
    assert market.market.escrow_for(buy) == Decimal("0.4")
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


def test_curtailment_and_settlement_in_python_units(env):
    market, slot = env.market, env.open_slot()
    market.market.place_order(env["carol"], OrderRequest(slot, Side.SELL, "PV", 2.0, "0.1"))
    market.market.place_order(env["bob"], OrderRequest(slot, Side.BUY, "EV", 2.0, "0.1"))
    env.publish_band("EV", slot, 0, 6000)
    result = market.market.curtail(env["dso"], "EV", slot)
    assert result.done and [(c.flex_id, c.curtailed_kwh, c.refund) for c in result.curtailments] == [
        ("EV", 0.5, Decimal("0.05"))
    ]
    env.travel(market.settlement.final_time(slot))
    env.record_slot("MEV", slot, 7000)  # 1.75 kWh, 0.25 above what bob bought; 7 kW > 6 kW band
    env.record_slot("MPV", slot, -6000)  # 1.5 kWh injected, as sold
    settled = market.settlement.settle(env["stranger"], slot, [env["bob"].address, env["carol"].address])
    bob, carol = settled.members
    assert (bob.traded_kwh, bob.metered_kwh, bob.imbalance_kwh) == (1.5, 1.75, 0.25)
    assert bob.imbalance_amount == Decimal("0.075") == bob.paid_to_treasury
    assert (carol.imbalance_kwh, carol.proceeds_paid_out) == (0.0, Decimal("0.15"))
    (violation,) = settled.violations
    assert (violation.flex_id, violation.outside_kwh, violation.p_max_kw) == ("EV", 0.25, 6.0)
    assert market.settlement.violations("EV") == (1, 0.25)
    assert (
        market.settlement.is_settled(env["bob"].address, slot)
        and market.settlement.debt_of(env["bob"].address) == 0
    )
    assert market.settlement.credit_of(env["carol"].address) == 0


def test_configuration_and_the_auction_in_python_units(env):
    market = env.market
    market.market.set_clearing_mode(env["operator"], ClearingMode.CALL_AUCTION)
    assert market.market.clearing_mode() == ClearingMode.CALL_AUCTION
    slot = env.open_slot()
    market.market.place_order(env["carol"], OrderRequest(slot, Side.SELL, "PV", 1.0, "0.1"))
    market.market.place_order(env["dave"], OrderRequest(slot, Side.BUY, "MD", 1.0, "0.3", AssetKind.METER))
    env.travel(market.market.gate_closure_time(slot))
    cleared = market.market.clear_auction(env["stranger"], slot)
    assert (cleared.price, cleared.volume_kwh, len(cleared.fills)) == (Decimal("0.2"), 1.0, 1)
    market.settlement.set_finality_delay(env["operator"], 3600)
    assert market.settlement.final_time(slot) == market.clock.start(slot + 1) + 3600
    market.settlement.set_grid_prices(env["operator"], slot + 4, "0.4", "0.1")
    prices = env.client.call(env.settlement.functions.gridPricesAt(slot + 4))
    assert tuple(prices[1:]) == (units.price_to_units_per_kwh("0.4"), units.price_to_units_per_kwh("0.1"))
    market.settlement.set_treasury(env["operator"], env["dso"].address)
    assert env.client.call(env.settlement.functions.treasury()) == env["dso"].address
    assert market.slot_minutes == SLOT_MINUTES
