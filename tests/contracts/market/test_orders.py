"""Continuous matching: every time in force, partial fills, priority, escrow, cancel,
expiry, gate closure and every refusal with its error."""

from __future__ import annotations

from contracts import units
from contracts.market import AssetKind, CloseReason, OrderStatus, Side, TimeInForce, escrow_units, trade_value
from tests.market_setup import PRICE, SLOT_MINUTES
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
IOC, FOK, AON = TimeInForce.IMMEDIATE_OR_CANCEL, TimeInForce.FILL_OR_KILL, TimeInForce.ALL_OR_NONE
MAX_QUANTITY_WH = 1_000_000_000


def status(env, order_id) -> OrderStatus:
    return OrderStatus(env.order(order_id)[5])


def remaining(env, order_id) -> int:
    return env.order(order_id)[9]


def open_ids(env, slot, side) -> list[int]:
    return list(env.client.call(env.contract.functions.openOrders(slot, int(side))))


def trades(env, receipt) -> list[tuple[int, int, int, int]]:
    """(buy order, sell order, Wh, price) of every trade in ``receipt``."""
    return [
        (e["buyOrder"], e["sellOrder"], e["quantityWh"], e["price"])
        for e in env.events("TradeExecuted", receipt)
    ]


def test_a_buy_rests_with_its_money_in_escrow_and_a_sell_rests_without(env):
    slot = env.open_slot()
    before = env.balance("bob")
    buy, receipt = env.place("bob", slot, BUY, 1000, 2 * PRICE)
    placed = env.events("OrderPlaced", receipt)[0]
    assert placed["escrow"] == escrow_units(1000, 2 * PRICE) == 2 * PRICE
    assert env.balance("bob") == before - 2 * PRICE
    assert env.escrow_held() == 2 * PRICE
    sell, _ = env.place("carol", slot, SELL, 1000, 3 * PRICE)
    assert env.balance("carol") == units.tokens_to_units(1000)
    assert (status(env, buy), status(env, sell)) == (OrderStatus.OPEN, OrderStatus.OPEN)
    assert open_ids(env, slot, BUY) == [buy] and open_ids(env, slot, SELL) == [sell]


def test_a_crossing_order_trades_at_the_resting_price_and_gets_the_difference_back(env):
    slot = env.open_slot()
    sell, _ = env.place("carol", slot, SELL, 1000, PRICE)
    before = env.balance("bob")
    buy, receipt = env.place("bob", slot, BUY, 1000, 2 * PRICE)
    assert trades(env, receipt) == [(buy, sell, 1000, PRICE)]
    executed = env.events("TradeExecuted", receipt)[0]
    assert executed["value"] == PRICE and executed["buyerRefund"] == PRICE
    assert env.balance("bob") == before - PRICE  # escrowed 2 P, refunded P
    assert env.escrow_held() == PRICE  # the trade, until carol is settled
    assert (status(env, buy), status(env, sell)) == (OrderStatus.FILLED, OrderStatus.FILLED)
    assert env.client.call(env.contract.functions.position(env["bob"].address, slot)) == (1000, 0, 0, False)
    assert env.client.call(env.contract.functions.position(env["carol"].address, slot)) == (
        0,
        1000,
        PRICE,
        False,
    )
    assert env.client.call(env.contract.functions.trade(executed["tradeId"])) == (
        buy,
        sell,
        slot,
        1000,
        PRICE,
    )
    assert open_ids(env, slot, BUY) == open_ids(env, slot, SELL) == []


def test_partial_fills_leave_the_rest_in_the_book(env):
    slot = env.open_slot()
    sell, _ = env.place("carol", slot, SELL, 2000, PRICE)
    small, receipt = env.place("bob", slot, BUY, 500, PRICE)
    assert trades(env, receipt) == [(small, sell, 500, PRICE)]
    assert (status(env, sell), remaining(env, sell)) == (OrderStatus.OPEN, 1500)
    big, receipt = env.place("dave", slot, BUY, 2000, PRICE)
    assert trades(env, receipt) == [(big, sell, 1500, PRICE)]
    assert status(env, sell) == OrderStatus.FILLED
    assert (status(env, big), remaining(env, big)) == (OrderStatus.OPEN, 500)
    assert env.escrow_held() == trade_value(2000, PRICE) + escrow_units(500, PRICE)


def test_price_then_time_priority_and_each_resting_price(env):
    slot = env.open_slot()
    dear, _ = env.place("carol", slot, SELL, 500, 2 * PRICE)
    first, _ = env.place("alice", slot, SELL, 500, PRICE)
    second, _ = env.place("carol", slot, SELL, 500, PRICE)
    assert open_ids(env, slot, SELL) == [first, second, dear]
    before = env.balance("dave")
    buy, receipt = env.place("dave", slot, BUY, 1200, 3 * PRICE, asset=(AssetKind.METER, "MD"))
    assert trades(env, receipt) == [
        (buy, first, 500, PRICE),
        (buy, second, 500, PRICE),
        (buy, dear, 200, 2 * PRICE),
    ]
    paid = trade_value(500, PRICE) * 2 + trade_value(200, 2 * PRICE)
    assert env.balance("dave") == before - paid
    assert remaining(env, dear) == 300


def test_bids_are_sorted_best_first_and_hints_only_speed_up_insertion(env):
    slot = env.open_slot()
    ids = {}
    for price, hint in ((5, 0), (3, 0), (1, 0), (4, 0), (3, 0)):
        ids.setdefault(price, []).append(env.place("dave", slot, SELL, 10, price * PRICE, hint=hint)[0])
    expected = [ids[1][0], ids[3][0], ids[3][1], ids[4][0], ids[5][0]]
    assert open_ids(env, slot, SELL) == expected
    hint = env.client.call(env.contract.functions.insertionHint(slot, int(SELL), 3 * PRICE))
    assert hint == ids[3][1]  # behind the orders at the same price (time priority)
    # good hint, a hint worse than the price (ignored), a hint of the other side, a stale hint
    cancelled = env.place("dave", slot, BUY, 10, PRICE // 10)[0]
    env.client.transact(env.contract.functions.cancelOrder(cancelled), env["dave"])
    placed = [
        env.place("dave", slot, SELL, 10, 3 * PRICE, hint=hint)[0],
        env.place("dave", slot, SELL, 10, 2 * PRICE, hint=ids[5][0])[0],
        env.place("dave", slot, SELL, 10, 4 * PRICE, hint=cancelled)[0],
    ]
    other = env.place("dave", slot, BUY, 10, PRICE // 2)[0]
    placed.append(env.place("dave", slot, SELL, 10, 6 * PRICE, hint=other)[0])
    assert open_ids(env, slot, SELL) == [
        ids[1][0], placed[1], ids[3][0], ids[3][1], placed[0], ids[4][0], placed[2], ids[5][0], placed[3]
    ]  # fmt: skip


def test_immediate_or_cancel_fills_what_it_can_and_drops_the_rest(env):
    slot = env.open_slot()
    sell, _ = env.place("carol", slot, SELL, 400, PRICE)
    before = env.balance("dave")
    ioc, receipt = env.place("dave", slot, BUY, 1000, PRICE, IOC)
    assert trades(env, receipt) == [(ioc, sell, 400, PRICE)]
    closed = env.events("OrderClosed", receipt)
    assert [(c["orderId"], c["reason"], c["remainingWh"]) for c in closed] == [
        (ioc, CloseReason.IMMEDIATE_REMAINDER, 600)
    ]
    assert closed[0]["refund"] == escrow_units(600, PRICE)
    assert env.balance("dave") == before - trade_value(400, PRICE)
    assert status(env, ioc) == OrderStatus.CLOSED
    nothing, receipt = env.place("dave", slot, BUY, 100, PRICE, IOC)
    assert trades(env, receipt) == [] and status(env, nothing) == OrderStatus.CLOSED
    assert open_ids(env, slot, BUY) == []


def test_fill_or_kill_fills_everything_or_reverts_with_what_was_fillable(env):
    slot = env.open_slot()
    sell, _ = env.place("carol", slot, SELL, 400, PRICE)
    before = (env.balance("dave"), env.escrow_held())
    expect_revert(
        "FillOrKillNotFilled",
        lambda: env.place("dave", slot, BUY, 1000, PRICE, FOK),
        slot=slot,
        side=int(BUY),
        quantityWh=1000,
        fillableWh=400,
    )
    assert (env.balance("dave"), env.escrow_held()) == before
    assert remaining(env, sell) == 400
    fok, receipt = env.place("dave", slot, BUY, 400, 2 * PRICE, FOK)
    assert trades(env, receipt) == [(fok, sell, 400, PRICE)]
    assert status(env, fok) == OrderStatus.FILLED


def test_all_or_none_rests_whole_is_skipped_by_smaller_orders_and_fills_at_once(env):
    slot = env.open_slot()
    small, _ = env.place("carol", slot, SELL, 400, PRICE)
    aon, receipt = env.place("dave", slot, BUY, 1000, PRICE, AON)
    assert trades(env, receipt) == []  # 400 available: it rests whole
    assert (status(env, aon), remaining(env, aon)) == (OrderStatus.OPEN, 1000)
    # a 600 Wh sell cannot fill the resting AON, so it passes it by and rests
    other, receipt = env.place("alice", slot, SELL, 600, PRICE)
    assert trades(env, receipt) == [] and remaining(env, aon) == 1000
    # a bid behind the AON is matched past it
    behind, _ = env.place("bob", slot, BUY, 100, PRICE // 2)
    taker, receipt = env.place("carol", slot, SELL, 100, PRICE // 2, IOC)
    assert trades(env, receipt) == [(behind, taker, 100, PRICE // 2)]
    # 1000 Wh at once fills it (at its price, the resting one)
    big, receipt = env.place("carol", slot, SELL, 1000, PRICE // 2, IOC)
    assert trades(env, receipt) == [(aon, big, 1000, PRICE)]
    assert status(env, aon) == OrderStatus.FILLED
    # an incoming AON that the book can fill executes at once against several orders
    aon2, receipt = env.place("dave", slot, BUY, 1000, PRICE, AON)
    assert trades(env, receipt) == [(aon2, small, 400, PRICE), (aon2, other, 600, PRICE)]


def test_cancel_refunds_and_only_the_owner_may_cancel_an_open_order(env):
    slot = env.open_slot()
    before = env.balance("bob")
    buy, _ = env.place("bob", slot, BUY, 1000, PRICE)
    expect_revert(
        "NotOrderOwner",
        lambda: env.client.transact(env.contract.functions.cancelOrder(buy), env["alice"]),
        orderId=buy,
        account=env["alice"].address,
        owner=env["bob"].address,
    )
    receipt = env.client.transact(env.contract.functions.cancelOrder(buy), env["bob"])
    closed = env.events("OrderClosed", receipt)[0]
    assert (closed["reason"], closed["remainingWh"], closed["refund"]) == (CloseReason.CANCELLED, 1000, PRICE)
    assert env.balance("bob") == before and env.escrow_held() == 0
    assert open_ids(env, slot, BUY) == []
    expect_revert(
        "OrderNotOpen",
        lambda: env.client.transact(env.contract.functions.cancelOrder(buy), env["bob"]),
        orderId=buy,
        status=OrderStatus.CLOSED,
    )
    expect_revert(
        "UnknownOrder",
        lambda: env.client.transact(env.contract.functions.cancelOrder(999), env["bob"]),
        orderId=999,
    )


def test_gate_closure_refuses_orders_and_lets_anyone_expire_the_book(env):
    slot = env.open_slot()
    gate = env.client.call(env.contract.functions.gateClosureTime(slot))
    assert gate == (slot * SLOT_MINUTES - 5) * 60
    bids = [env.place("bob", slot, BUY, 100, PRICE)[0], env.place("dave", slot, BUY, 200, PRICE)[0]]
    ask = env.place("carol", slot, SELL, 300, 2 * PRICE)[0]
    expect_revert(
        "GateNotClosed",
        lambda: env.client.transact(env.contract.functions.expireOrders(slot), env["stranger"]),
        slot=slot,
        gateClosureTime=gate,
    )
    env.travel(gate)
    expect_revert(
        "GateClosed",
        lambda: env.place("bob", slot, BUY, 100, PRICE),
        slot=slot,
        gateClosureTime=gate,
        blockTime=gate,
    )
    env.place("bob", slot + 1, BUY, 100, PRICE)  # the next slot is still open
    receipt = env.client.transact(env.contract.functions.expireOrders(slot), env["stranger"])
    closed = env.events("OrderClosed", receipt)
    assert [(c["orderId"], c["reason"]) for c in closed] == [
        (bids[0], CloseReason.EXPIRED),
        (bids[1], CloseReason.EXPIRED),
        (ask, CloseReason.EXPIRED),
    ]
    assert env.escrow_held() == escrow_units(100, PRICE)  # the order for the next slot
    assert env.balance("dave") == units.tokens_to_units(1000)


def test_an_owner_may_still_cancel_after_gate_closure(env):
    slot = env.open_slot()
    buy, _ = env.place("bob", slot, BUY, 100, PRICE)
    env.to_gate_closure(slot)
    env.client.transact(env.contract.functions.cancelOrder(buy), env["bob"])
    assert status(env, buy) == OrderStatus.CLOSED


def test_an_order_visits_a_bounded_number_of_resting_orders(env):
    slot = env.open_slot()
    limit = env.client.call(env.contract.functions.MAX_VISITS_PER_ORDER())
    calls = [(env.order_call("dave", slot, SELL, 10, PRICE), env["dave"]) for _ in range(limit + 1)]
    env.client.transact_all(calls, gas=400_000)
    buy, receipt = env.place("bob", slot, BUY, 1000, PRICE)
    assert len(trades(env, receipt)) == limit
    closed = env.events("OrderClosed", receipt)
    assert [(c["orderId"], c["reason"], c["remainingWh"]) for c in closed] == [
        (buy, CloseReason.MATCH_LIMIT, 1000 - 10 * limit)
    ]
    assert len(open_ids(env, slot, SELL)) == 1


def test_a_full_book_side_refuses_more_resting_orders(env):
    slot = env.open_slot()
    limit = env.client.call(env.contract.functions.MAX_OPEN_PER_SIDE())
    calls = [(env.order_call("dave", slot, SELL, 10, (i + 10) * PRICE), env["dave"]) for i in range(limit)]
    env.client.transact_all(calls, gas=400_000)
    expect_revert(
        "BookFull",
        lambda: env.place("carol", slot, SELL, 10, PRICE),
        slot=slot,
        side=int(SELL),
        maxOrders=limit,
    )
    env.place("carol", slot, SELL, 10, PRICE, IOC)  # an order that does not rest is fine
    buy, _ = env.place("bob", slot, BUY, 10, PRICE)  # the other side has room
    assert status(env, buy) == OrderStatus.OPEN


def test_invalid_orders_are_refused_with_their_facts(env):
    slot = env.open_slot()
    for quantity in (0, MAX_QUANTITY_WH + 1):
        expect_revert(
            "InvalidQuantity",
            lambda q=quantity: env.place("dave", slot, BUY, q, PRICE),
            quantityWh=quantity,
            maxWh=MAX_QUANTITY_WH,
        )
    expect_revert("InvalidPrice", lambda: env.place("dave", slot, BUY, 10, 0), limitPrice=0)
    for kind, asset in ((AssetKind.FLEXIBILITY, "NOPE"), (AssetKind.METER, "NOPE"), (AssetKind.METER, "BAT")):
        expect_revert(
            "UnknownAsset",
            lambda k=kind, a=asset: env.place("alice", slot, BUY, 10, PRICE, asset=(k, a)),
            kind=int(kind),
            asset=units.encode_id(asset),
        )
    expect_revert(
        "NotAssetOwner",
        lambda: env.place("alice", slot, BUY, 10, PRICE, asset=(AssetKind.METER, "MD")),
        account=env["alice"].address,
        asset=units.encode_id("MD"),
        owner=env["dave"].address,
    )
    env.client.transact(
        env.community.registry.contract.functions.deactivateFlexibility(units.encode_id("EV")), env["admin"]
    )
    expect_revert("UnknownAsset", lambda: env.place("bob", slot, BUY, 10, PRICE), asset=units.encode_id("EV"))
    env.client.transact(
        env.community.registry.contract.functions.deregisterMeter(units.encode_id("MD")), env["admin"]
    )
    expect_revert(
        "UnknownAsset", lambda: env.place("dave", slot, BUY, 10, PRICE), asset=units.encode_id("MD")
    )


def test_a_buyer_needs_allowance_and_balance_for_the_escrow(env):
    slot = env.open_slot()
    token = env.community.token.contract.functions
    env.client.transact(token.approve(env.contract.address, 10), env["dave"])
    expect_revert(
        "ERC20InsufficientAllowance",
        lambda: env.place("dave", slot, BUY, 1000, PRICE),
        spender=env.contract.address,
        allowance=10,
        needed=PRICE,
    )
    env.client.transact(token.approve(env.contract.address, 2**256 - 1), env["dave"])
    expect_revert(
        "ERC20InsufficientBalance",
        lambda: env.place("dave", slot, BUY, 1000, 10**28),
        sender=env["dave"].address,
    )
    env.place("dave", slot, SELL, 1000, 10**28)  # a seller escrows nothing


def test_configuration_rules(env):
    market = env.contract.functions
    env.client.transact(market.setGateClosure(60), env["operator"])
    slot = env.open_slot()
    assert env.client.call(market.gateClosureTime(slot)) == (slot * SLOT_MINUTES - 60) * 60
    expect_revert(
        "GateClosureTooLong",
        lambda: env.client.transact(market.setGateClosure(24 * 60 + 1), env["operator"]),
        leadMinutes=24 * 60 + 1,
        maxMinutes=24 * 60,
    )
    env.client.transact(market.setClearingMode(1), env["operator"])
    env.client.transact(market.setClearingMode(0), env["operator"])
    env.place("dave", slot, SELL, 10, PRICE)
    expect_revert(
        "MarketInUse", lambda: env.client.transact(market.setClearingMode(1), env["operator"]), orders=1
    )
    zero = "0x" + "00" * 20
    expect_revert("ZeroAddress", lambda: env.client.transact(market.bindSettlement(zero), env["admin"]))
    expect_revert(
        "SettlementAlreadyBound",
        lambda: env.client.transact(market.bindSettlement(env["stranger"].address), env["admin"]),
        settlement=env.settlement.address,
    )
