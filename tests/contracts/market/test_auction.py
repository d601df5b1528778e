"""The call-auction clearing mode: orders rest until gate closure, one call clears the
slot at a uniform price (midpoint of the marginal bid and ask), pay-as-clear."""

from __future__ import annotations

import pytest

from contracts.market import CloseReason, OrderStatus, Side, TimeInForce, escrow_units, trade_value
from tests.market_setup import PRICE
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
CONTINUOUS, AUCTION = 0, 1


@pytest.fixture
def auction(env):
    env.client.transact(env.contract.functions.setClearingMode(AUCTION), env["operator"])
    return env


def clear(env, slot, caller="stranger"):
    return env.client.transact(env.contract.functions.clearAuction(slot), env[caller])


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
    price = (3 * PRICE + 2 * PRICE) // 2  # marginal pair: dave's bid, alice's ask
    cleared = env.events("AuctionCleared", receipt)[0]
    assert (cleared["slot"], cleared["price"], cleared["volumeWh"], cleared["trades"]) == (
        slot,
        price,
        1800,
        3,
    )
    executed = [
        (e["buyOrder"], e["sellOrder"], e["quantityWh"], e["price"])
        for e in env.events("TradeExecuted", receipt)
    ]
    assert executed == [
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
    # every buyer paid the clearing price; the rest of its escrow came back
    # (the balances were taken after the escrows were paid in)
    refunds = {
        "bob": escrow_units(1000, 4 * PRICE) - trade_value(800, price) - trade_value(200, price),
        "dave": escrow_units(1000, 3 * PRICE) - trade_value(800, price),
        "alice": escrow_units(500, PRICE),
        "carol": 0,
    }
    assert {name: env.balance(name) - before for name, before in balances.items()} == refunds
    assert env.escrow_held() == trade_value(800, price) + trade_value(200, price) + trade_value(800, price)
    assert env.client.call(env.contract.functions.openOrders(slot, 0)) == []
    assert env.client.call(env.contract.functions.openOrders(slot, 1)) == []
    statuses = [
        OrderStatus(env.order(i)[5]) for i in (bids["bob"], asks["carol"], asks["alice"], bids["dave"])
    ]
    assert statuses == [OrderStatus.FILLED] * 3 + [OrderStatus.CLOSED]
    expect_revert("AuctionAlreadyCleared", lambda: clear(env, slot), slot=slot)


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


def test_clearing_cancels_an_order_whose_band_tightened(auction):
    env = auction
    slot = env.open_slot()
    stale, _ = env.place("alice", slot, SELL, 1000, PRICE)
    other, _ = env.place("carol", slot, SELL, 400, 2 * PRICE)
    buy, _ = env.place("bob", slot, BUY, 1000, 2 * PRICE)
    env.publish_band("BAT", slot, 0, 20_000)
    env.to_gate_closure(slot)
    receipt = clear(env, slot)
    closed = [(c["orderId"], c["reason"]) for c in env.events("OrderClosed", receipt)]
    assert closed == [(stale, CloseReason.BAND_TIGHTENED), (buy, CloseReason.AUCTION_UNMATCHED)]
    executed = [
        (e["buyOrder"], e["sellOrder"], e["quantityWh"], e["price"])
        for e in env.events("TradeExecuted", receipt)
    ]
    assert executed == [(buy, other, 400, 2 * PRICE)]


def test_settlement_needs_the_auction_cleared_unless_the_slot_is_empty(auction):
    env = auction
    slot = env.open_slot()
    env.place("bob", slot, BUY, 1000, PRICE)
    env.to_final(slot + 1)
    members = [env["bob"].address]
    settle = env.settlement.functions.settle
    expect_revert(
        "AuctionNotCleared", lambda: env.client.transact(settle(slot, members), env["stranger"]), slot=slot
    )
    env.client.transact(settle(slot + 1, members), env["stranger"])  # nothing was ordered for slot + 1
    clear(env, slot)
    env.client.transact(settle(slot, members), env["stranger"])
    expect_revert("AuctionAlreadyCleared", lambda: clear(env, slot + 1), slot=slot + 1)


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
