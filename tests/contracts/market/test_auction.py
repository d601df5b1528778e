"""The call-auction clearing mode: orders rest until gate closure, one call clears the
slot at a uniform price, pay-as-clear. The price maximises the matched volume; ties go to
the least surplus |demand − supply|, then to the midpoint of the lowest and highest such
candidate (the candidates are the limit prices). Clearing checks no band: finalizing the
slot curtails what a tightened band no longer allows."""

from __future__ import annotations

import pytest

from contracts.market import CloseReason, OrderStatus, Side, TimeInForce, lock_units, trade_value
from tests.market_setup import IMPORT_PRICE, PRICE
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
CONTINUOUS, AUCTION = 0, 1


@pytest.fixture
def auction(env):
    env.client.transact(env.contract.functions.setClearingMode(AUCTION), env["operator"])
    return env


def clear(env, slot, caller="stranger"):
    return env.client.transact(env.contract.functions.clearAuction(slot), env[caller])


def finalize(env, slot, caller="stranger"):
    return env.client.transact(env.contract.functions.finalizeSlot(slot), env[caller])


def executed(env, receipt) -> list[tuple[int, int, int, int]]:
    return [
        (e["buyOrder"], e["sellOrder"], e["quantityWh"], e["price"])
        for e in env.events("TradeExecuted", receipt)
    ]


def test_only_good_till_cancelled_orders_enter_an_auction(auction):
    slot = auction.open_slot()
    for tif in (TimeInForce.IMMEDIATE_OR_CANCEL, TimeInForce.FILL_OR_KILL, TimeInForce.ALL_OR_NONE):
        expect_revert(
            "TimeInForceNotSupported",
            lambda t=tif: auction.place("dave", slot, BUY, 10, PRICE, t),
            timeInForce=int(tif),
            mode=AUCTION,
        )


def test_the_auction_clears_at_one_price_for_everybody(auction):
    env = auction
    slot = env.open_slot()
    bids = {
        "bob": env.place("bob", slot, BUY, 1000, 4 * PRICE)[0],
        "dave": env.place("dave", slot, BUY, 1000, 3 * PRICE)[0],
        "alice": env.place("alice", slot, BUY, 500, PRICE)[0],
    }
    asks = {
        "carol": env.place("carol", slot, SELL, 800, PRICE)[0],
        "alice": env.place("alice", slot, SELL, 1000, 2 * PRICE)[0],
        "dave": env.place("dave", slot, SELL, 500, 5 * PRICE)[0],
    }
    assert OrderStatus(env.order(bids["bob"])[5]) == OrderStatus.OPEN  # crossing, yet not matched
    expect_revert("GateNotClosed", lambda: clear(env, slot), slot=slot)
    env.to_gate_closure(slot)
    expect_revert(
        "GateClosed",
        lambda: env.client.transact(env.contract.functions.cancelOrder(bids["alice"]), env["alice"]),
        slot=slot,
    )
    expect_revert(
        "WrongClearingMode",
        lambda: env.client.transact(env.contract.functions.expireOrders(slot), env["stranger"]),
        required=CONTINUOUS,
        current=AUCTION,
    )
    balances = {name: env.balance(name) for name in ("alice", "bob", "carol", "dave")}
    receipt = clear(env, slot)
    # price   demand supply volume surplus
    # 1 P      2500    800    800
    # 2 P      2000   1800   1800     200
    # 3 P      2000   1800   1800     200
    # 4 P      1000   1800   1000
    # 5 P         0   2300      0
    price = (2 * PRICE + 3 * PRICE) // 2  # most volume, least surplus: midpoint of 2 P and 3 P
    cleared = env.events("AuctionCleared", receipt)[0]
    assert (cleared["slot"], cleared["price"], cleared["volumeWh"], cleared["trades"]) == (
        slot,
        price,
        1800,
        3,
    )
    assert executed(env, receipt) == [
        (bids["bob"], asks["carol"], 800, price),
        (bids["bob"], asks["alice"], 200, price),
        (bids["dave"], asks["alice"], 800, price),
    ]
    closed = {(c["orderId"], c["reason"], c["remainingWh"]) for c in env.events("OrderClosed", receipt)}
    assert closed == {
        (bids["dave"], CloseReason.AUCTION_UNMATCHED, 200),
        (bids["alice"], CloseReason.AUCTION_UNMATCHED, 500),
        (asks["dave"], CloseReason.AUCTION_UNMATCHED, 500),
    }
    # every buyer paid the clearing price and got the rest of its lock back; unmatched orders
    # are unlocked, matched sells keep their collateral (the balances were taken after locking)
    refunds = {
        "bob": lock_units(1000, 4 * PRICE) - trade_value(800, price) - trade_value(200, price),
        "dave": lock_units(1000, 3 * PRICE) - trade_value(800, price) + lock_units(500, IMPORT_PRICE),
        "alice": lock_units(500, PRICE),
        "carol": 0,
    }
    assert {name: env.balance(name) - before for name, before in balances.items()} == refunds
    paid = trade_value(800, price) + trade_value(200, price) + trade_value(800, price)
    collateral = lock_units(800, IMPORT_PRICE) + lock_units(1000, IMPORT_PRICE)
    assert env.escrow_held() == paid + collateral
    assert env.client.call(env.contract.functions.openOrders(slot, 0)) == []
    assert env.client.call(env.contract.functions.openOrders(slot, 1)) == []
    statuses = [
        OrderStatus(env.order(i)[5]) for i in (bids["bob"], asks["carol"], asks["alice"], bids["dave"])
    ]
    assert statuses == [OrderStatus.FILLED] * 3 + [OrderStatus.CLOSED]
    expect_revert("AuctionAlreadyCleared", lambda: clear(env, slot), slot=slot)


def test_equal_volumes_go_to_the_least_surplus_then_to_the_midpoint(auction):
    env = auction
    slot = env.open_slot()
    bids = {
        "bob": env.place("bob", slot, BUY, 1000, 5 * PRICE)[0],
        "dave": env.place("dave", slot, BUY, 500, 3 * PRICE)[0],
    }
    asks = {
        "carol": env.place("carol", slot, SELL, 600, PRICE)[0],
        "alice": env.place("alice", slot, SELL, 400, 2 * PRICE)[0],
        "dave": env.place("dave", slot, SELL, 700, 4 * PRICE)[0],
    }
    env.to_gate_closure(slot)
    bob = env.balance("bob")
    receipt = clear(env, slot)
    # price   demand supply volume surplus
    # 1 P      1500    600    600     900
    # 2 P      1500   1000   1000     500
    # 3 P      1500   1000   1000     500
    # 4 P      1000   1700   1000     700
    # 5 P      1000   1700   1000     700
    # 1000 Wh at 2..5 P; the least surplus (500) at 2 P and 3 P: their midpoint
    # (the marginal bid and ask, bob's 5 P and alice's 2 P, would have given 3.5 P)
    price = (2 * PRICE + 3 * PRICE) // 2
    cleared = env.events("AuctionCleared", receipt)[0]
    assert (cleared["price"], cleared["volumeWh"], cleared["trades"]) == (price, 1000, 2)
    assert executed(env, receipt) == [
        (bids["bob"], asks["carol"], 600, price),
        (bids["bob"], asks["alice"], 400, price),
    ]
    closed = {(c["orderId"], c["reason"], c["remainingWh"]) for c in env.events("OrderClosed", receipt)}
    assert closed == {
        (bids["dave"], CloseReason.AUCTION_UNMATCHED, 500),  # 3 P ≥ price, but no ask left
        (asks["dave"], CloseReason.AUCTION_UNMATCHED, 700),
    }
    assert env.balance("bob") == bob + lock_units(1000, 5 * PRICE) - trade_value(1000, price)
    assert env.deposit("dave")[1] == 0


def test_an_auction_without_crossing_orders_refunds_everybody(auction):
    env = auction
    slot = env.open_slot()
    before = env.balance("bob")
    env.place("bob", slot, BUY, 1000, PRICE)
    env.place("carol", slot, SELL, 1000, 2 * PRICE)
    env.to_gate_closure(slot)
    cleared = env.events("AuctionCleared", clear(env, slot))[0]
    assert (cleared["price"], cleared["volumeWh"], cleared["trades"]) == (0, 0, 0)
    assert env.balance("bob") == before and env.escrow_held() == 0


def test_clearing_checks_no_band_and_finalizing_curtails_what_a_tightened_band_forbids(auction):
    env = auction
    slot = env.open_slot()
    stale, _ = env.place("alice", slot, SELL, 1000, PRICE)
    other, _ = env.place("carol", slot, SELL, 400, 2 * PRICE)
    buy, _ = env.place("bob", slot, BUY, 1000, 2 * PRICE)
    env.publish_band("BAT", slot, 0, 20_000)  # the battery may no longer inject
    env.to_gate_closure(slot)
    receipt = clear(env, slot)
    # 1000 Wh at P (surplus 0) or at 2 P (surplus 400): P
    assert executed(env, receipt) == [(buy, stale, 1000, PRICE)]
    closed = [(c["orderId"], c["reason"]) for c in env.events("OrderClosed", receipt)]
    assert closed == [(other, CloseReason.AUCTION_UNMATCHED)]
    trade_id = env.events("TradeExecuted", receipt)[0]["tradeId"]
    bob, alice = env.balance("bob"), env.balance("alice")
    receipt = finalize(env, slot)
    cut = [(e["tradeId"], e["curtailedWh"], e["remainingWh"]) for e in env.events("TradeCurtailed", receipt)]
    assert cut == [(trade_id, 1000, 0)]
    assert [(e["slot"], e["flexibilities"]) for e in env.events("SlotFinalized", receipt)] == [(slot, 2)]
    assert env.balance("bob") == bob + trade_value(1000, PRICE)
    assert env.balance("alice") == alice + lock_units(1000, IMPORT_PRICE)
    assert env.escrow_held() == 0


def test_finalizing_needs_the_auction_cleared_unless_the_slot_is_empty(auction):
    env = auction
    slot = env.open_slot()
    env.place("bob", slot, BUY, 1000, PRICE)
    env.to_final(slot + 1)
    members = [env["bob"].address]
    settle = env.settlement.functions.settle
    expect_revert(
        "SlotNotFinalized", lambda: env.client.transact(settle(slot, members), env["stranger"]), slot=slot
    )
    expect_revert("AuctionNotCleared", lambda: finalize(env, slot), slot=slot)
    finalize(env, slot + 1)  # nothing was ordered for slot + 1
    env.client.transact(settle(slot + 1, members), env["stranger"])
    expect_revert("AuctionAlreadyCleared", lambda: clear(env, slot + 1), slot=slot + 1)
    clear(env, slot)
    finalize(env, slot)
    env.client.transact(settle(slot, members), env["stranger"])
    assert env.client.call(env.contract.functions.position(members[0], slot))[3]  # released


def test_clear_auction_needs_the_auction_mode(env):
    expect_revert(
        "WrongClearingMode",
        lambda: clear(env, env.open_slot()),
        required=AUCTION,
        current=CONTINUOUS,
    )


def test_a_cleared_slot_takes_no_more_orders_even_if_its_gate_reopens(auction):
    env = auction
    slot = env.open_slot()
    env.to_gate_closure(slot)
    clear(env, slot)
    env.client.transact(env.contract.functions.setGateClosure(0), env["operator"])  # the gate opens again
    expect_revert("AuctionAlreadyCleared", lambda: env.place("dave", slot, BUY, 10, PRICE), slot=slot)
