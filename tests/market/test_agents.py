"""Simulated members: their plans respect bands, prices, the price tick and the minimum
quantity, and a flexibility without a published band plans nothing; a round on the chain
trades PV energy to the EV, the battery and the consumer without a single refused order,
and in a round like the demo's every order finds a counterparty (none is left to expire)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts.market import MIN_QUANTITY_WH, PRICE_TICK_UNITS, Side, TimeInForce
from contracts.orderbook import build_order_book
from market.agents import BatteryOwner, EvOwner, PlainConsumer, PvProsumer, SlotOutlook, trading_round

IMPORT, EXPORT = Decimal("0.3"), Decimal("0.05")


def outlook(band=None, net=0.0, open_buy=0.0, open_sell=0.0, slot=100, published=True, bids=(), asks=()):
    return SlotOutlook(
        slot,
        15,
        IMPORT,
        EXPORT,
        band_kw=band,
        band_published=published,
        matched_net_kwh=net,
        open_buy_kwh=open_buy,
        open_sell_kwh=open_sell,
        bids=tuple((Decimal(price), kwh) for price, kwh in bids),
        asks=tuple((Decimal(price), kwh) for price, kwh in asks),
    )


def test_a_pv_prosumer_sells_its_surplus_within_the_band():
    pv = PvProsumer("carol", None, "PV", surplus_kw=6.0)
    (order,) = pv.plan(outlook(band=(-10.0, 0.0)))
    assert (order.side, order.energy_kwh, order.limit_price) == (Side.SELL, 1.5, Decimal("0.125"))
    (order,) = pv.plan(outlook(band=(-4.0, 0.0)))
    assert order.energy_kwh == 1.0
    (order,) = pv.plan(outlook(band=(-4.0, 0.0), net=-0.6, open_sell=0.2))
    assert order.energy_kwh == pytest.approx(0.2)
    assert pv.plan(outlook(band=(-4.0, 0.0), net=-1.0)) == []


def test_an_ev_owner_spreads_its_need_and_pays_up_to_the_import_price_at_the_end():
    ev = EvOwner("bob", None, "EV", energy_kwh=6.0, deadline_slot=103)
    (order,) = ev.plan(outlook(band=(0.0, 11.0)))
    assert (order.side, order.energy_kwh, order.limit_price) == (Side.BUY, 1.5, Decimal("0.25"))
    (order,) = ev.plan(outlook(band=(0.0, 3.333)))
    assert order.energy_kwh == 0.833  # never above the band, rounded down to the Wh
    (order,) = ev.plan(outlook(band=(0.0, 11.0), slot=103))
    assert (order.energy_kwh, order.limit_price) == (2.75, IMPORT)
    assert ev.plan(outlook(band=(0.0, 11.0), slot=104)) == []


def test_a_battery_takes_open_orders_between_its_reservation_prices_immediately():
    # the others' open orders (price, kWh): a bid at 0.25 and one at 0.10, asks at 0.125 and 0.29
    book = {"bids": [("0.25", 1.2), ("0.10", 3.0)], "asks": [("0.125", 0.8), ("0.29", 2.0)]}
    middle = BatteryOwner("alice", None, "BAT", capacity_kwh=10, soc_kwh=5)
    buy, sell = middle.plan(outlook(band=(-20.0, 20.0), **book))
    assert (buy.side, buy.energy_kwh, sell.side, sell.energy_kwh) == (Side.BUY, 0.8, Side.SELL, 1.2)
    assert {buy.time_in_force, sell.time_in_force} == {TimeInForce.IMMEDIATE_OR_CANCEL}
    assert Decimal("0.125") <= buy.limit_price < sell.limit_price <= Decimal("0.25")  # both cross
    low = BatteryOwner("alice", None, "BAT", capacity_kwh=10, soc_kwh=1)  # buys only, and pays more
    (order,) = low.plan(outlook(band=(-20.0, 20.0), **book))
    assert order.side == Side.BUY and order.limit_price > buy.limit_price
    high = BatteryOwner("alice", None, "BAT", capacity_kwh=10, soc_kwh=9)  # sells only, cheaper
    (order,) = high.plan(outlook(band=(-20.0, 20.0), **book))
    assert order.side == Side.SELL and order.limit_price < sell.limit_price
    # never beyond the band, its charge or what the book offers; nothing without a counterparty
    buy, sell = middle.plan(outlook(band=(-4.0, 2.0), net=0.3, **book))
    assert (buy.energy_kwh, sell.energy_kwh) == (0.2, 1.2)
    assert middle.plan(outlook(band=(-20.0, 20.0))) == []


def test_a_plain_consumer_buys_its_load_immediately_or_not_at_all():
    (order,) = PlainConsumer("dave", None, "MD", load_kw=2.0).plan(outlook())
    assert (order.energy_kwh, order.time_in_force) == (0.5, TimeInForce.IMMEDIATE_OR_CANCEL)
    assert order.limit_price == Decimal("0.2875")


def test_without_a_band_published_for_the_whole_slot_a_flexibility_plans_nothing():
    unpublished = outlook(band=(-20.0, 20.0), published=False)  # the market is fail-closed
    assert (unpublished.buy_headroom_kwh, unpublished.sell_headroom_kwh) == (0.0, 0.0)
    assert PvProsumer("carol", None, "PV", surplus_kw=6.0).plan(unpublished) == []
    assert EvOwner("bob", None, "EV", energy_kwh=6.0, deadline_slot=103).plan(unpublished) == []
    assert BatteryOwner("alice", None, "BAT", capacity_kwh=10, soc_kwh=5).plan(unpublished) == []
    # a meter has no band: its orders do not depend on one
    (order,) = PlainConsumer("dave", None, "MD", load_kw=2.0).plan(outlook(published=False))
    assert order.energy_kwh == 0.5


def test_prices_are_on_the_market_tick():
    third = outlook().price_between(1 / 3)  # 0.05 + 0.25 / 3, rounded down to the tick
    assert third == Decimal("0.133333")
    ev = EvOwner("bob", None, "EV", energy_kwh=6.0, deadline_slot=103, bid_share=1 / 3)
    (order,) = ev.plan(outlook(band=(0.0, 11.0)))
    assert order.limit_price_units % PRICE_TICK_UNITS == 0 and order.limit_price == third


def test_in_a_round_like_the_demos_every_order_finds_a_counterparty(env):
    start = env.client.w3.eth.block_number
    slot = env.open_slot()
    agents = [  # in the demo's order: PV asks, the EV bids, the battery takes the rest
        PvProsumer("carol", env["carol"], "PV", surplus_kw=4.0),
        EvOwner("bob", env["bob"], "EV", energy_kwh=4.0, deadline_slot=slot + 1),
        BatteryOwner("alice", env["alice"], "BAT", capacity_kwh=20, soc_kwh=10),
    ]
    results = trading_round(agents, env.community, slot)
    placed = [order for result in results.values() for order in result.placed]
    assert len(placed) == 3 and not any(result.refused for result in results.values())
    view = build_order_book(env.community.market, from_block=start)
    assert [view.orders[order.order_id].remaining_wh for order in placed] == [0, 0, 0]  # all filled
    assert env.market.market.schedule("EV", slot).matched_buy_kwh == 2.0  # 1 from the PV, 1 battery
    assert results["alice"].sold_kwh == 1.0 and agents[2].soc_kwh == 9.0
    # the EV's rest was filled after it was placed; its next round takes that off its need
    assert agents[1].needed_kwh == 3.0
    env.publish_band("EV", slot + 1, 0, 11_000)
    (order,) = agents[1].act(env.community, slot + 1).placed
    assert agents[1].needed_kwh == 2.0 and order.rests  # its last slot: 2 kWh, nobody sells


def test_orders_below_the_minimum_quantity_are_not_placed(env):
    slot = env.open_slot()
    tiny = EvOwner("bob", env["bob"], "EV", energy_kwh=(MIN_QUANTITY_WH - 1) / 1000, deadline_slot=slot)
    (planned,) = tiny.plan(tiny.outlook(env.community, slot))
    assert planned.quantity_wh == MIN_QUANTITY_WH - 1
    result = tiny.act(env.community, slot)
    assert result.placed == [] and result.refused == []  # skipped, not sent to be refused
    assert env.market.market.schedule("EV", slot).open_buy_kwh == 0


def test_a_trading_round_in_a_slot_without_bands_trades_only_through_meters(env):
    slot = env.bare_slot()
    agents = [
        PvProsumer("carol", env["carol"], "PV", surplus_kw=8.0),
        EvOwner("bob", env["bob"], "EV", energy_kwh=4.0, deadline_slot=slot + 1),
        BatteryOwner("alice", env["alice"], "BAT", capacity_kwh=20, soc_kwh=10),
        PlainConsumer("dave", env["dave"], "MD", load_kw=3.0),
    ]
    results = trading_round(agents, env.community, slot)
    assert all(not result.refused for result in results.values())  # nothing sent the market refuses
    assert [name for name, result in results.items() if result.placed] == ["dave"]
    assert [agent.may_trade(env.community, slot) for agent in agents] == [False, False, False, True]
    env.publish_band("PV", slot, -10_000, 0)
    assert agents[0].may_trade(env.community, slot) and not agents[1].may_trade(env.community, slot)


def test_a_trading_round_on_the_chain(env):
    start = env.client.w3.eth.block_number
    slot = env.open_slot()
    env.publish_band("EV", slot, 0, 4000)  # the DSO limits the charger to 4 kW in this slot
    agents = [
        PvProsumer("carol", env["carol"], "PV", surplus_kw=8.0),
        EvOwner("bob", env["bob"], "EV", energy_kwh=4.0, deadline_slot=slot + 1),
        PlainConsumer("dave", env["dave"], "MD", load_kw=3.0),
        BatteryOwner("alice", env["alice"], "BAT", capacity_kwh=20, soc_kwh=3),
    ]
    results = trading_round(agents, env.community, slot)
    assert all(not result.refused for result in results.values())
    assert results["carol"].sold_kwh == 0  # it only fills the book
    assert results["bob"].bought_kwh == 1.0  # 4 kW for 15 minutes, not the 2 kWh it wants
    assert results["dave"].bought_kwh == 0.75
    assert results["alice"].bought_kwh == 0.25  # the rest of carol's 2 kWh
    assert agents[1].needed_kwh == 3.0 and agents[3].soc_kwh == 3.25
    assert env.market.market.schedule("EV", slot).matched_buy_kwh == 1.0
    assert env.market.market.schedule("PV", slot).matched_sell_kwh == 2.0
    view = build_order_book(env.community.market, from_block=start)
    assert view.locked() == env.escrow_held()  # what the orders and trades lock in the deposits
    # a second round: the EV has no headroom left in this slot
    again = trading_round(agents[1:2], env.community, slot)
    assert again["bob"].placed == [] and again["bob"].refused == []
