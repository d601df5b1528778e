"""Band enforcement at order entry (fail-closed: no published band, no flexibility order)
and at matching, curtailment after a band tightens, and the finalization of a slot, which
curtails every traded flexibility to its band in force before the settlement.

EV [0, 11] kW: at most 2750 Wh in a 15-minute slot; PV [-10, 0] kW: at most 2500 Wh
injected; BAT [-20, 20] kW: ±5000 Wh.
"""

from __future__ import annotations

from contracts import units
from contracts.market import AssetKind, CloseReason, OrderStatus, Side, TimeInForce, lock_units, trade_value
from tests.market_setup import IMPORT_PRICE, PRICE, SLOT_MINUTES
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
EV, PV, BAT = (units.encode_id(name) for name in ("EV", "PV", "BAT"))


def schedule(env, flex: bytes, slot: int) -> tuple[int, int, int, int]:
    """(matched buy, matched sell, open buy, open sell) in Wh."""
    return tuple(env.client.call(env.contract.functions.schedule(flex, slot)))


def curtail(env, flex: bytes, slot: int, caller: str = "stranger"):
    """((trades curtailed, done), receipt) of a ``curtail`` call."""
    call = env.contract.functions.curtail(flex, slot)
    result = env.client.call(call)
    return tuple(result), env.client.transact(call, env[caller])


def finalize(env, slot: int, caller: str = "stranger"):
    """(done, receipt) of a ``finalizeSlot`` call."""
    call = env.contract.functions.finalizeSlot(slot)
    done = env.client.call(call, block="pending")
    return done, env.client.transact(call, env[caller])


def position(env, name: str, slot: int) -> tuple:
    """(bought, sold, paid, released, proceeds, collateral)."""
    return tuple(env.client.call(env.contract.functions.position(env[name].address, slot)))


def test_a_buy_may_not_take_a_flexibility_above_its_band(env):
    slot = env.open_slot()
    expect_revert(
        "BandExceeded",
        lambda: env.place("bob", slot, BUY, 2751, PRICE),
        flexibility=EV,
        slot=slot,
        requestedW=11_004,
        allowedW=11_000,
    )
    env.place("bob", slot, BUY, 2750, PRICE)
    assert schedule(env, EV, slot) == (0, 0, 2750, 0)


def test_open_buys_count_against_the_band_until_cancelled(env):
    slot = env.open_slot()
    first, _ = env.place("bob", slot, BUY, 2000, PRICE)
    expect_revert(
        "BandExceeded", lambda: env.place("bob", slot, BUY, 751, PRICE), requestedW=11_004, allowedW=11_000
    )
    env.client.transact(env.contract.functions.cancelOrder(first), env["bob"])
    assert schedule(env, EV, slot) == (0, 0, 0, 0)
    env.place("bob", slot, BUY, 751, PRICE)


def test_a_sell_may_not_take_a_flexibility_below_its_band(env):
    slot = env.open_slot()
    expect_revert(
        "BandExceeded",
        lambda: env.place("carol", slot, SELL, 2501, PRICE),
        flexibility=PV,
        requestedW=-10_004,
        allowedW=-10_000,
    )
    # a PV cannot consume: buying 10 Wh would put it above P_max = 0
    expect_revert("BandExceeded", lambda: env.place("carol", slot, BUY, 10, PRICE), requestedW=40, allowedW=0)
    env.place("carol", slot, SELL, 2500, PRICE)


def test_matched_energy_counts_and_a_battery_may_trade_both_ways(env):
    slot = env.open_slot()
    env.place("dave", slot, BUY, 3000, PRICE)
    env.place("alice", slot, SELL, 3000, PRICE)  # matched: BAT net −3000 Wh
    assert schedule(env, BAT, slot) == (0, 3000, 0, 0)
    env.place("alice", slot, BUY, 8000, PRICE // 2)  # −3000 + 8000 = 5000 Wh = 20 kW
    expect_revert(
        "BandExceeded",
        lambda: env.place("alice", slot, BUY, 10, PRICE // 2),
        requestedW=20_040,
        allowedW=20_000,
    )
    expect_revert(  # −3000 − 2001 < −5000
        "BandExceeded", lambda: env.place("alice", slot, SELL, 2001, 2 * PRICE), requestedW=-20_004
    )


def test_the_published_band_and_not_the_hardware_decides(env):
    slot = env.open_slot()
    env.publish_band("EV", slot, 0, 4000)
    expect_revert(
        "BandExceeded", lambda: env.place("bob", slot, BUY, 1001, PRICE), requestedW=4004, allowedW=4000
    )
    env.place("bob", slot, BUY, 1000, PRICE)


def test_orders_tied_to_a_meter_have_no_band(env):
    slot = env.open_slot()
    env.place("dave", slot, BUY, 1_000_000, PRICE)
    env.place("bob", slot, BUY, 1_000_000, PRICE, asset=(AssetKind.METER, "MB"))
    assert schedule(env, units.encode_id("MD"), slot) == (0, 0, 0, 0)


def _ev_trades(env, slot):
    """carol sells 2000 Wh; bob buys 1000 + 800 of it and leaves a bid of 200 below it."""
    env.place("carol", slot, SELL, 2000, PRICE)
    _, first = env.place("bob", slot, BUY, 1000, PRICE)
    _, second = env.place("bob", slot, BUY, 800, PRICE)
    bid, _ = env.place("bob", slot, BUY, 200, PRICE // 2)
    trades = [env.events("TradeExecuted", r)[0]["tradeId"] for r in (first, second)]
    assert schedule(env, EV, slot) == (1800, 0, 200, 0)
    return trades, bid


def test_a_tightened_band_curtails_the_latest_trades_and_closes_open_orders_when_they_would_match(env):
    slot = env.open_slot()
    (_, second), bid = _ev_trades(env, slot)
    env.publish_band("EV", slot, 0, 4000)  # at most 1000 Wh
    bob, carol = env.balance("bob"), env.balance("carol")
    held = env.escrow_held()
    (curtailed, done), receipt = curtail(env, EV, slot)
    assert (curtailed, done) == (1, True)
    cut = env.events("TradeCurtailed", receipt)
    assert [(e["tradeId"], e["flexibility"], e["slot"], e["curtailedWh"], e["remainingWh"]) for e in cut] == [
        (second, EV, slot, 800, 0)
    ]
    assert cut[0]["refund"] == trade_value(800, PRICE)
    assert not env.events("OrderClosed", receipt)  # curtailing cuts trades, not orders
    # the buyer gets the value back, the seller the collateral of the energy cut
    collateral = lock_units(800, IMPORT_PRICE)
    assert env.balance("bob") == bob + trade_value(800, PRICE)
    assert env.balance("carol") == carol + collateral
    assert env.escrow_held() == held - trade_value(800, PRICE) - collateral
    assert schedule(env, EV, slot) == (1000, 0, 200, 0)  # the bid below stays open
    assert schedule(env, PV, slot) == (0, 1000, 0, 200)  # the seller's matched energy shrinks too
    assert position(env, "bob", slot) == (1000, 0, trade_value(1000, PRICE), False, 0, 0)
    assert position(env, "carol", slot) == (
        0,
        1000,
        0,
        False,
        trade_value(1000, PRICE),
        lock_units(1000, IMPORT_PRICE),
    )
    assert env.client.call(env.contract.functions.trade(second))[3] == 0
    (curtailed, done), receipt = curtail(env, EV, slot)  # nothing more to do
    assert (curtailed, done) == (0, True) and not env.events("TradeCurtailed", receipt)
    # the open bid the band no longer allows is closed when an ask would match it
    ask, receipt = env.place("dave", slot, SELL, 200, PRICE // 2)
    closed = env.events("OrderClosed", receipt)
    assert [(c["orderId"], c["reason"], c["remainingWh"], c["refund"]) for c in closed] == [
        (bid, CloseReason.BAND_TIGHTENED, 200, lock_units(200, PRICE // 2))
    ]
    assert not env.events("TradeExecuted", receipt)
    assert OrderStatus(env.order(ask)[5]) == OrderStatus.OPEN
    assert schedule(env, EV, slot) == (1000, 0, 0, 0)
    assert env.balance("bob") == bob + trade_value(800, PRICE) + lock_units(200, PRICE // 2)


def test_the_last_trade_needed_is_curtailed_only_in_part(env):
    slot = env.open_slot()
    (first, second), _ = _ev_trades(env, slot)
    env.publish_band("EV", slot, 0, 2000)  # at most 500 Wh
    _, receipt = curtail(env, EV, slot)
    cut = [(e["tradeId"], e["curtailedWh"], e["remainingWh"]) for e in env.events("TradeCurtailed", receipt)]
    assert cut == [(second, 800, 0), (first, 500, 500)]
    assert schedule(env, EV, slot) == (500, 0, 200, 0)  # the bid stays open (closed if it would match)


def test_a_raised_lower_bound_curtails_the_latest_sales(env):
    slot = env.open_slot()
    env.place("dave", slot, BUY, 3000, PRICE)
    trades = [
        env.events("TradeExecuted", env.place("carol", slot, SELL, quantity, PRICE)[1])[0]["tradeId"]
        for quantity in (1500, 500)
    ]
    env.publish_band("PV", slot, -4000, 0)  # at most 1000 Wh injected
    dave = env.balance("dave")
    _, receipt = curtail(env, PV, slot, caller="dso")
    cut = [(e["tradeId"], e["curtailedWh"], e["remainingWh"]) for e in env.events("TradeCurtailed", receipt)]
    assert cut == [(trades[1], 500, 0), (trades[0], 500, 1000)]
    assert schedule(env, PV, slot) == (0, 1000, 0, 0)
    assert env.balance("dave") == dave + trade_value(500, PRICE) * 2


def test_matching_skips_and_cancels_a_resting_order_its_band_no_longer_allows(env):
    slot = env.open_slot()
    stale, _ = env.place("alice", slot, SELL, 1000, PRICE)
    fresh, _ = env.place("carol", slot, SELL, 500, 2 * PRICE)
    env.publish_band("BAT", slot, 0, 20_000)  # the battery may no longer inject; nobody curtailed
    buy, receipt = env.place("dave", slot, BUY, 500, 2 * PRICE)
    closed = env.events("OrderClosed", receipt)
    assert [(c["orderId"], c["reason"]) for c in closed] == [(stale, CloseReason.BAND_TIGHTENED)]
    executed = env.events("TradeExecuted", receipt)
    assert [(e["buyOrder"], e["sellOrder"], e["quantityWh"]) for e in executed] == [(buy, fresh, 500)]
    assert schedule(env, BAT, slot) == (0, 0, 0, 0)
    assert OrderStatus(env.order(stale)[5]) == OrderStatus.CLOSED


def test_an_all_or_none_dry_run_counts_two_orders_of_one_flexibility_together(env):
    slot = env.open_slot()
    first, _ = env.place("alice", slot, SELL, 600, PRICE)
    second, _ = env.place("alice", slot, SELL, 600, PRICE)
    other, _ = env.place("carol", slot, SELL, 800, 2 * PRICE)
    env.publish_band("BAT", slot, -4000, 20_000)  # 1000 Wh may still be injected, not 1200
    aon, receipt = env.place("dave", slot, BUY, 1200, 2 * PRICE, TimeInForce.ALL_OR_NONE)
    executed = [
        (e["buyOrder"], e["sellOrder"], e["quantityWh"]) for e in env.events("TradeExecuted", receipt)
    ]
    assert executed == [(aon, first, 600), (aon, other, 600)]
    closed = [(c["orderId"], c["reason"]) for c in env.events("OrderClosed", receipt)]
    assert closed == [(second, CloseReason.BAND_TIGHTENED)]
    assert schedule(env, BAT, slot)[1] == 600


def test_a_flexibility_trades_only_a_slot_with_a_band_published_for_every_minute(env):
    slot = env.bare_slot()  # no band published: fail-closed
    for name, side, flex in (("bob", BUY, EV), ("carol", SELL, PV), ("alice", BUY, BAT)):
        expect_revert(
            "BandNotPublished",
            lambda n=name, s=side: env.place(n, slot, s, 100, PRICE),
            flexibility=flex,
            slot=slot,
        )
    # a band for part of the slot is not enough
    start = slot * SLOT_MINUTES
    limits = env.community.limits.contract.functions
    env.client.transact(limits.publishBands([(EV, start, start + 10, 0, 11_000)]), env["ocm"])
    expect_revert("BandNotPublished", lambda: env.place("bob", slot, BUY, 100, PRICE), flexibility=EV)
    # orders tied to a household meter need no band
    ask, _ = env.place("dave", slot, SELL, 100, PRICE)
    buy, receipt = env.place("bob", slot, BUY, 100, PRICE, asset=(AssetKind.METER, "MB"))
    assert [(e["buyOrder"], e["sellOrder"]) for e in env.events("TradeExecuted", receipt)] == [(buy, ask)]
    # once every minute has a band, the flexibility trades
    env.client.transact(limits.publishBands([(EV, start + 10, start + SLOT_MINUTES, 0, 11_000)]), env["ocm"])
    order_id, _ = env.place("bob", slot, BUY, 100, PRICE)
    assert (
        schedule(env, EV, slot) == (0, 0, 100, 0) and OrderStatus(env.order(order_id)[5]) == OrderStatus.OPEN
    )


def test_a_meter_that_measures_a_flexibility_cannot_trade_in_its_place(env):
    slot = env.open_slot()
    for name, meter, flex in (("alice", "MBAT", BAT), ("bob", "MEV", EV), ("carol", "MPV", PV)):
        expect_revert(
            "MeterMeasuresFlexibility",
            lambda n=name, m=meter: env.place(n, slot, SELL, 10_000, PRICE, asset=(AssetKind.METER, m)),
            meter=units.encode_id(meter),
            flexibility=flex,
        )
    env.place("alice", slot, SELL, 10_000, PRICE, asset=(AssetKind.METER, "MA"))  # her house meter may


def test_finalizing_a_slot_curtails_its_trades_to_the_bands_in_force(env):
    slot = env.open_slot()
    (first, second), _ = _ev_trades(env, slot)
    env.publish_band("EV", slot, 0, 4000)  # tightened before gate closure; nobody calls curtail
    expect_revert(
        "GateNotClosed",
        lambda: env.client.transact(env.contract.functions.finalizeSlot(slot), env["stranger"]),
        slot=slot,
    )
    env.to_gate_closure(slot)
    bob, carol = env.balance("bob"), env.balance("carol")
    done, receipt = finalize(env, slot)
    assert done
    cut = env.events("TradeCurtailed", receipt)
    assert [
        (e["tradeId"], e["flexibility"], e["curtailedWh"], e["remainingWh"], e["refund"]) for e in cut
    ] == [(second, EV, 800, 0, trade_value(800, PRICE))]
    finalized = env.events("SlotFinalized", receipt)
    assert [(e["slot"], e["flexibilities"]) for e in finalized] == [(slot, 2)]  # EV and PV traded
    assert env.balance("bob") == bob + trade_value(800, PRICE)
    assert env.balance("carol") == carol + lock_units(800, IMPORT_PRICE)
    assert schedule(env, EV, slot)[:2] == (1000, 0)
    assert env.client.call(env.contract.functions.trade(first))[3] == 1000
    assert env.community.market.finalized(slot)
    # the trades are final now
    expect_revert(
        "SlotInSettlement", lambda: env.client.transact(env.contract.functions.curtail(EV, slot), env["dso"]),
        slot=slot,
    )  # fmt: skip
    expect_revert("SlotInSettlement", lambda: finalize(env, slot), slot=slot)


def test_settlement_waits_for_finalization_and_curtailment_ends_with_it(env):
    slot = env.open_slot()
    _ev_trades(env, slot)
    env.to_final(slot)
    settle = env.settlement.functions.settle(slot, [env["bob"].address])
    expect_revert("SlotNotFinalized", lambda: env.client.transact(settle, env["stranger"]), slot=slot)
    (curtailed, done), _ = curtail(env, EV, slot)  # before finalization anyone may still curtail
    assert (curtailed, done) == (0, True)
    done, receipt = finalize(env, slot)
    assert done and not env.events("TradeCurtailed", receipt)  # the bands held
    assert [e["flexibilities"] for e in env.events("SlotFinalized", receipt)] == [2]
    expect_revert(
        "SlotInSettlement", lambda: env.client.transact(env.contract.functions.curtail(EV, slot), env["dso"]),
        slot=slot,
    )  # fmt: skip
    env.client.transact(settle, env["stranger"])
    assert position(env, "bob", slot)[:4] == (1800, 0, trade_value(1800, PRICE), True)
