"""Continuous matching: every time in force, partial fills, priority, deposit locks, cancel,
expiry, gate closure, the limits that keep one member from denying others a slot (orders per
member, book size, all-or-none orders, visits, self-trades), pausing, removal of orders that
are no longer valid, and every refusal with its error."""

from __future__ import annotations

from contracts import units
from contracts.market import (
    MAX_OPEN_PER_MEMBER,
    MIN_QUANTITY_WH,
    PRICE_TICK_UNITS,
    AssetKind,
    CloseReason,
    OrderStatus,
    Side,
    TimeInForce,
    lock_units,
    trade_value,
)
from contracts.registry import Meter
from tests.community_setup import SETUP_GAS
from tests.market_setup import FUNDED_TOKENS, IMPORT_PRICE, PRICE, SLOT_MINUTES
from tests.reverts import expect_revert

BUY, SELL = Side.BUY, Side.SELL
IOC, FOK, AON = TimeInForce.IMMEDIATE_OR_CANCEL, TimeInForce.FILL_OR_KILL, TimeInForce.ALL_OR_NONE
MAX_QUANTITY_WH = 1_000_000_000
FUNDED = units.tokens_to_units(FUNDED_TOKENS)
# house meters (they measure no flexibility): orders tied to them have no band
HOUSE = {"alice": (AssetKind.METER, "MA"), "bob": (AssetKind.METER, "MB")}


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


def constant(env, name: str) -> int:
    return env.client.call(getattr(env.contract.functions, name)())


def new_members(env, count: int, tokens: int = 1) -> list[str]:
    """``count`` more members, each with a house meter ``M<name>`` and ``tokens`` deposited."""
    names = [f"x{i:02d}" for i in range(count)]
    community, admin, operator = env.community, env["admin"], env["operator"]
    for tx_hash in [env.client.send_ether(env["stranger"], env[name].address, 10**18) for name in names]:
        env.client.wait(tx_hash)
    calls = [(community.registry.add_member_call(env[name].address, name), admin) for name in names]
    env.client.transact_all(calls, gas=SETUP_GAS)
    calls = []
    for name in names:
        meter = Meter(f"M{name}", 1, env[name].address, env[name].address)
        calls += [
            (community.registry.register_meter_call(meter), admin),
            (community.token.mint_call(env[name].address, tokens), operator),
            (community.token.approve_call(community.settlement.address, tokens), env[name]),
            (community.settlement.deposit_call(tokens), env[name]),
        ]
    env.client.transact_all(calls, gas=SETUP_GAS)
    return names


def test_a_buy_locks_its_value_and_a_sell_its_collateral_in_the_deposit(env):
    slot = env.open_slot()
    assert env.client.call(env.settlement.functions.collateralPrice(slot)) == IMPORT_PRICE
    buy, receipt = env.place("bob", slot, BUY, 1000, 2 * PRICE)
    placed = env.events("OrderPlaced", receipt)[0]
    assert placed["lockPrice"] == 2 * PRICE and lock_units(1000, 2 * PRICE) == 2 * PRICE
    assert env.deposit("bob") == (FUNDED - 2 * PRICE, 2 * PRICE)
    assert env.balance("bob") == FUNDED - 2 * PRICE
    assert env.escrow_held() == 2 * PRICE
    # a sell locks its collateral at the slot's import price, whatever its limit price
    sell, receipt = env.place("carol", slot, SELL, 1000, 3 * PRICE)
    assert env.events("OrderPlaced", receipt)[0]["lockPrice"] == IMPORT_PRICE
    collateral = lock_units(1000, IMPORT_PRICE)
    assert env.deposit("carol") == (FUNDED - collateral, collateral)
    assert env.escrow_held() == 2 * PRICE + collateral
    # the tokens stay in the settlement: the market holds none
    assert env.wallet(env.contract.address) == 0 and env.wallet(env.settlement.address) == 5 * FUNDED
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
    assert env.balance("bob") == before - PRICE  # locked 2 P, P unlocked again
    collateral = lock_units(1000, IMPORT_PRICE)
    # the trade keeps bob's payment and carol's collateral locked until they are settled
    assert env.deposit("bob")[1] == PRICE and env.deposit("carol")[1] == collateral
    assert env.escrow_held() == PRICE + collateral
    assert (status(env, buy), status(env, sell)) == (OrderStatus.FILLED, OrderStatus.FILLED)
    # (bought, sold, paid, released, proceeds, collateral)
    assert env.client.call(env.contract.functions.position(env["bob"].address, slot)) == (
        1000,
        0,
        PRICE,
        False,
        0,
        0,
    )
    assert env.client.call(env.contract.functions.position(env["carol"].address, slot)) == (
        0,
        1000,
        0,
        False,
        PRICE,
        collateral,
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
    assert env.escrow_held() == (
        trade_value(2000, PRICE) + lock_units(500, PRICE) + lock_units(2000, IMPORT_PRICE)
    )


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


def test_asks_are_sorted_best_first_and_hints_only_speed_up_insertion(env):
    slot = env.open_slot()
    ids = {}
    for price, hint in ((5, 0), (3, 0), (1, 0), (4, 0), (3, 0)):
        ids.setdefault(price, []).append(env.place("dave", slot, SELL, 10, price * PRICE, hint=hint)[0])
    expected = [ids[1][0], ids[3][0], ids[3][1], ids[4][0], ids[5][0]]
    assert open_ids(env, slot, SELL) == expected
    hint = env.client.call(env.contract.functions.insertionHint(slot, int(SELL), 3 * PRICE))
    assert hint == ids[3][1]  # behind the orders at the same price (time priority)
    # good hint, a hint worse than the price (ignored), a hint of the other side, a stale hint
    # (alice's orders, tied to her house meter)
    house = HOUSE["alice"]
    cancelled = env.place("alice", slot, BUY, 10, PRICE // 10, asset=house)[0]
    env.client.transact(env.contract.functions.cancelOrder(cancelled), env["alice"])
    placed = [
        env.place("alice", slot, SELL, 10, 3 * PRICE, asset=house, hint=hint)[0],
        env.place("alice", slot, SELL, 10, 2 * PRICE, asset=house, hint=ids[5][0])[0],
        env.place("alice", slot, SELL, 10, 4 * PRICE, asset=house, hint=cancelled)[0],
    ]
    other = env.place("alice", slot, BUY, 10, PRICE // 2, asset=house)[0]
    placed.append(env.place("alice", slot, SELL, 10, 6 * PRICE, asset=house, hint=other)[0])
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
    assert closed[0]["refund"] == lock_units(600, PRICE)
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
    env.publish_band("EV", slot + 1, 0, 11_000)
    env.place("bob", slot + 1, BUY, 100, PRICE)  # the next slot is still open
    receipt = env.client.transact(env.contract.functions.expireOrders(slot), env["stranger"])
    closed = env.events("OrderClosed", receipt)
    assert [(c["orderId"], c["reason"]) for c in closed] == [
        (bids[0], CloseReason.EXPIRED),
        (bids[1], CloseReason.EXPIRED),
        (ask, CloseReason.EXPIRED),
    ]
    assert env.escrow_held() == lock_units(100, PRICE)  # the order for the next slot
    assert env.deposit("dave") == (FUNDED, 0) and env.deposit("carol") == (FUNDED, 0)


def test_an_owner_may_still_cancel_after_gate_closure(env):
    slot = env.open_slot()
    buy, _ = env.place("bob", slot, BUY, 100, PRICE)
    env.to_gate_closure(slot)
    env.client.transact(env.contract.functions.cancelOrder(buy), env["bob"])
    assert status(env, buy) == OrderStatus.CLOSED


def test_an_order_visits_a_bounded_number_of_resting_orders(env):
    slot = env.open_slot()
    limit = constant(env, "MAX_VISITS_PER_ORDER")
    assert limit == 2 * MAX_OPEN_PER_MEMBER
    # limit + 1 small asks; a member holds at most 8 open orders in a slot, so three sellers
    sellers = [("dave", None)] * MAX_OPEN_PER_MEMBER + [("alice", HOUSE["alice"])] * MAX_OPEN_PER_MEMBER
    sellers.append(("carol", None))
    calls = [(env.order_call(name, slot, SELL, 10, PRICE, asset=asset), env[name]) for name, asset in sellers]
    env.client.transact_all(calls, gas=400_000)
    assert len(open_ids(env, slot, SELL)) == limit + 1
    buy, receipt = env.place("bob", slot, BUY, 1000, PRICE)
    assert len(trades(env, receipt)) == limit
    closed = env.events("OrderClosed", receipt)
    assert [(c["orderId"], c["reason"], c["remainingWh"]) for c in closed] == [
        (buy, CloseReason.MATCH_LIMIT, 1000 - 10 * limit)
    ]
    assert len(open_ids(env, slot, SELL)) == 1


def test_a_full_book_side_takes_a_better_order_by_displacing_its_worst(env):
    slot = env.open_slot()
    limit = constant(env, "MAX_OPEN_PER_SIDE")
    assert limit == 200
    sellers = new_members(env, limit // MAX_OPEN_PER_MEMBER)
    calls = []
    for i in range(limit):  # the worst first: each ask goes to the head of the list
        seller = sellers[i // MAX_OPEN_PER_MEMBER]
        call = env.order_call(
            seller, slot, SELL, 10, (limit + 9 - i) * PRICE, asset=(AssetKind.METER, f"M{seller}")
        )
        calls.append((call, env[seller]))
    env.client.transact_all(calls, gas=400_000)
    asks = open_ids(env, slot, SELL)
    assert len(asks) == limit
    worst, worst_price = asks[-1], (limit + 9) * PRICE
    assert env.order(worst)[7] == worst_price
    for price in (worst_price, worst_price + PRICE):  # not strictly better than the worst: refused
        expect_revert(
            "BookFull",
            lambda p=price: env.place("carol", slot, SELL, 10, p),
            slot=slot,
            side=int(SELL),
            maxOrders=limit,
        )
    env.place("carol", slot, SELL, 10, PRICE, IOC)  # an order that does not rest is fine
    owner, collateral = sellers[0], lock_units(10, IMPORT_PRICE)
    free, locked = env.deposit(owner)
    better, receipt = env.place("carol", slot, SELL, 10, PRICE)
    closed = env.events("OrderClosed", receipt)
    assert [(c["orderId"], c["reason"], c["remainingWh"], c["refund"]) for c in closed] == [
        (worst, CloseReason.DISPLACED, 10, collateral)
    ]
    assert env.deposit(owner) == (free + collateral, locked - collateral)
    assert status(env, worst) == OrderStatus.CLOSED and status(env, better) == OrderStatus.OPEN
    assert open_ids(env, slot, SELL) == [better, *asks[:-1]]
    # the displaced order's owner holds one order less, so it may place again
    again, _ = env.place(owner, slot, SELL, 10, 2 * PRICE, asset=(AssetKind.METER, f"M{owner}"))
    assert status(env, again) == OrderStatus.OPEN and len(open_ids(env, slot, SELL)) == limit
    buy, _ = env.place("bob", slot, BUY, 10, PRICE // 2)  # the other side has room
    assert status(env, buy) == OrderStatus.OPEN


def test_invalid_orders_are_refused_with_their_facts(env):
    slot = env.open_slot()
    assert constant(env, "MIN_QUANTITY_WH") == MIN_QUANTITY_WH == 10
    assert constant(env, "MAX_QUANTITY_WH") == MAX_QUANTITY_WH
    assert constant(env, "PRICE_TICK") == PRICE_TICK_UNITS
    for quantity in (0, MIN_QUANTITY_WH - 1, MAX_QUANTITY_WH + 1):
        expect_revert(
            "InvalidQuantity",
            lambda q=quantity: env.place("dave", slot, BUY, q, PRICE),
            quantityWh=quantity,
            minWh=MIN_QUANTITY_WH,
            maxWh=MAX_QUANTITY_WH,
        )
    for price in (0, PRICE_TICK_UNITS - 1, PRICE + 1, PRICE + PRICE_TICK_UNITS // 2):
        expect_revert(
            "InvalidPrice",
            lambda p=price: env.place("dave", slot, BUY, 10, p),
            limitPrice=price,
            tick=PRICE_TICK_UNITS,
        )
    # the smallest order at the smallest price is fine (and locks ceil(10 · tick / 1000))
    smallest, _ = env.place("dave", slot, BUY, MIN_QUANTITY_WH, PRICE_TICK_UNITS)
    assert status(env, smallest) == OrderStatus.OPEN
    assert env.deposit("dave")[1] == lock_units(MIN_QUANTITY_WH, PRICE_TICK_UNITS) == 10**10
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


def test_orders_are_taken_only_for_slots_within_a_day(env):
    horizon = constant(env, "ORDER_HORIZON_MINUTES")
    assert horizon == 24 * 60
    ahead = horizon // SLOT_MINUTES
    far = env.bare_slot(ahead + 1)  # starts more than a day from now
    error = expect_revert(
        "SlotBeyondHorizon",
        lambda: env.place("dave", far, BUY, 10, PRICE),
        slot=far,
        startTime=far * SLOT_MINUTES * 60,
    )
    assert far * SLOT_MINUTES * 60 >= error.args_by_name["horizonEnd"] > env.now() + (horizon - 1) * 60
    near = env.bare_slot(ahead - 1)  # starts less than a day from now
    order_id, _ = env.place("dave", near, BUY, 10, PRICE)
    assert status(env, order_id) == OrderStatus.OPEN


def test_an_order_locks_from_the_free_deposit_and_needs_enough_of_it(env):
    slot = env.open_slot()
    dave = env["dave"].address
    env.client.transact(env.settlement.functions.withdraw(FUNDED - 10), env["dave"])
    assert env.deposit("dave") == (10, 0) and env.wallet("dave") == FUNDED - 10
    # tokens in the wallet do not count: only the free deposit
    expect_revert(
        "InsufficientDeposit",
        lambda: env.place("dave", slot, BUY, 1000, PRICE),
        account=dave,
        amount=PRICE,
        free=10,
    )
    collateral = lock_units(1000, IMPORT_PRICE)
    expect_revert(  # a sell locks its collateral at the import price, whatever its limit price
        "InsufficientDeposit",
        lambda: env.place("dave", slot, SELL, 1000, 10**28),
        account=dave,
        amount=collateral,
        free=10,
    )
    env.community.fund(env["dave"], "1")  # an exact approval, then the deposit
    token = env.community.token
    assert token.allowance_units(dave, env.settlement.address) == 0
    sell, receipt = env.place("dave", slot, SELL, 1000, 10**28)
    assert env.events("OrderPlaced", receipt)[0]["lockPrice"] == IMPORT_PRICE
    assert env.deposit("dave") == (10 + units.tokens_to_units(1) - collateral, collateral)
    expect_revert(  # the locked part cannot be withdrawn
        "InsufficientDeposit",
        lambda: env.client.transact(env.settlement.functions.withdraw(10**18), env["dave"]),
        account=dave,
        amount=10**18,
    )
    env.client.transact(env.contract.functions.cancelOrder(sell), env["dave"])
    env.client.transact(env.settlement.functions.withdraw(10**18 + 10), env["dave"])
    assert env.deposit("dave") == (0, 0) and env.wallet("dave") == FUNDED


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


def test_a_member_holds_at_most_eight_open_orders_in_a_slot(env):
    slot = env.open_slot()
    assert constant(env, "MAX_OPEN_PER_MEMBER") == MAX_OPEN_PER_MEMBER == 8
    # both sides count: 4 bids and 4 asks (none crossing)
    bids = [env.place("dave", slot, BUY, 10, (i + 1) * PRICE)[0] for i in range(4)]
    asks = [env.place("dave", slot, SELL, 10, (i + 6) * PRICE)[0] for i in range(4)]
    for side, price, tif in ((BUY, PRICE, TimeInForce.GOOD_TILL_CANCELLED), (SELL, 9 * PRICE, IOC)):
        expect_revert(
            "TooManyOpenOrders",
            lambda s=side, p=price, t=tif: env.place("dave", slot, s, 10, p, t),
            member=env["dave"].address,
            slot=slot,
            maxOrders=MAX_OPEN_PER_MEMBER,
        )
    # another member can still place, and dave can in another slot
    other, _ = env.place("carol", slot, SELL, 10, 8 * PRICE)
    assert status(env, other) == OrderStatus.OPEN
    env.place("dave", slot + 1, BUY, 10, PRICE)
    # an order that is filled or cancelled frees its place
    taker, receipt = env.place("bob", slot, BUY, 10, 6 * PRICE)
    assert trades(env, receipt) == [(taker, asks[0], 10, 6 * PRICE)]
    ninth, _ = env.place("dave", slot, BUY, 10, PRICE)
    env.client.transact(env.contract.functions.cancelOrder(bids[0]), env["dave"])
    tenth, _ = env.place("dave", slot, BUY, 10, PRICE)
    assert (status(env, ninth), status(env, tenth)) == (OrderStatus.OPEN, OrderStatus.OPEN)
    expect_revert("TooManyOpenOrders", lambda: env.place("dave", slot, BUY, 10, PRICE))


def test_an_order_that_would_trade_with_its_owners_own_order_is_refused(env):
    slot = env.open_slot()
    ask, _ = env.place("dave", slot, SELL, 500, 2 * PRICE)
    for price in (2 * PRICE, 3 * PRICE):  # a buy crossing the own ask
        expect_revert("SelfTrade", lambda p=price: env.place("dave", slot, BUY, 500, p), ownOrderId=ask)
    bid, _ = env.place("dave", slot, BUY, 500, PRICE)  # below the own ask: it rests
    for price in (PRICE, PRICE // 2):  # a sell crossing the own bid (before the own ask)
        expect_revert("SelfTrade", lambda p=price: env.place("dave", slot, SELL, 500, p), ownOrderId=bid)
    higher, _ = env.place("dave", slot, SELL, 500, 3 * PRICE)  # above the own bid: it rests
    assert open_ids(env, slot, BUY) == [bid] and open_ids(env, slot, SELL) == [ask, higher]
    # one member's assets are one member: alice's house meter may not buy from her battery
    battery_ask, _ = env.place("alice", slot, SELL, 500, PRICE * 3 // 2)
    expect_revert(
        "SelfTrade",
        lambda: env.place("alice", slot, BUY, 500, 2 * PRICE, asset=HOUSE["alice"]),
        ownOrderId=battery_ask,
    )
    # others trade with them as usual
    taker, receipt = env.place("carol", slot, SELL, 500, PRICE)
    assert trades(env, receipt) == [(bid, taker, 500, PRICE)]
    # once the own order is gone, the same order is taken
    env.client.transact(env.contract.functions.cancelOrder(ask), env["dave"])
    buy, receipt = env.place("dave", slot, BUY, 500, 2 * PRICE)
    assert trades(env, receipt) == [(buy, battery_ask, 500, PRICE * 3 // 2)]


def test_all_or_none_orders_are_capped_and_skipping_them_costs_no_visit(env):
    slot = env.open_slot()
    cap = constant(env, "MAX_ALL_OR_NONE_PER_SIDE")
    assert cap == 8
    # dave fills the slot's ask side with all-or-none orders too large for the taker below
    calls = [(env.order_call("dave", slot, SELL, 1000, PRICE, AON), env["dave"]) for _ in range(cap)]
    env.client.transact_all(calls, gas=400_000)
    blockers = open_ids(env, slot, SELL)
    assert len(blockers) == cap
    expect_revert(
        "TooManyAllOrNone",
        lambda: env.place("alice", slot, SELL, 1000, PRICE, AON, asset=HOUSE["alice"]),
        slot=slot,
        side=int(SELL),
        maxOrders=cap,
    )
    aon_bid, _ = env.place("bob", slot, BUY, 500, PRICE // 2, AON, asset=HOUSE["bob"])  # the other side
    assert status(env, aon_bid) == OrderStatus.OPEN
    # behind them, as many small asks as a taker may visit
    visits = constant(env, "MAX_VISITS_PER_ORDER")
    sellers = [("alice", HOUSE["alice"]), ("carol", None)] * MAX_OPEN_PER_MEMBER
    assert len(sellers) == visits
    calls = [
        (env.order_call(name, slot, SELL, 10, 2 * PRICE, asset=asset), env[name]) for name, asset in sellers
    ]
    env.client.transact_all(calls, gas=400_000)
    behind = open_ids(env, slot, SELL)[cap:]
    # the taker skips the all-or-none orders without counting them and fills from the rest
    taker, receipt = env.place("bob", slot, BUY, 10 * visits, 2 * PRICE)
    assert len(behind) == visits
    assert trades(env, receipt) == [(taker, ask, 10, 2 * PRICE) for ask in behind]
    assert status(env, taker) == OrderStatus.FILLED and not env.events("OrderClosed", receipt)
    assert open_ids(env, slot, SELL)[:cap] == blockers
    # a resting all-or-none order that leaves frees its place for another
    env.client.transact(env.contract.functions.cancelOrder(blockers[0]), env["dave"])
    again, _ = env.place("dave", slot, SELL, 1000, PRICE, AON)
    assert status(env, again) == OrderStatus.OPEN


def test_a_paused_market_takes_no_orders_but_cancelling_and_withdrawing_go_on(env):
    slot = env.open_slot()
    market = env.contract.functions
    buy, _ = env.place("bob", slot, BUY, 1000, PRICE)
    expect_revert(
        "AccessControlUnauthorizedAccount",
        lambda: env.client.transact(market.setPaused(True), env["bob"]),
        account=env["bob"].address,
    )
    receipt = env.client.transact(market.setPaused(True), env["operator"])
    assert env.events("PausedSet", receipt)[0]["paused"] is True
    assert env.client.call(market.paused())
    for name, side in (("dave", BUY), ("carol", SELL)):
        expect_revert("MarketPaused", lambda n=name, s=side: env.place(n, slot, s, 10, PRICE))
    receipt = env.client.transact(market.cancelOrder(buy), env["bob"])
    assert env.events("OrderClosed", receipt)[0]["refund"] == PRICE
    assert env.deposit("bob") == (FUNDED, 0)
    env.client.transact(env.settlement.functions.withdraw(FUNDED), env["bob"])
    assert env.deposit("bob") == (0, 0) and env.wallet("bob") == FUNDED
    env.client.transact(market.setPaused(False), env["operator"])
    order_id, _ = env.place("dave", slot, BUY, 10, PRICE)
    assert status(env, order_id) == OrderStatus.OPEN


def test_the_operator_removes_orders_of_removed_members_and_inactive_assets(env):
    slot = env.open_slot()
    registry, admin = env.community.registry, env["admin"]
    bob_bid, _ = env.place("bob", slot, BUY, 1000, PRICE)
    alice_ask, _ = env.place("alice", slot, SELL, 500, 3 * PRICE)
    dave_ask, _ = env.place("dave", slot, SELL, 400, 4 * PRICE)
    carol_ask, _ = env.place("carol", slot, SELL, 300, 2 * PRICE)

    def remove(order_id, caller="operator"):
        return env.client.transact(env.contract.functions.removeOrder(order_id), env[caller])

    for order_id in (bob_bid, alice_ask, dave_ask, carol_ask):  # all still valid
        expect_revert("OrderStillValid", lambda o=order_id: remove(o), orderId=order_id)
    registry.remove_member(admin, env["bob"].address)
    registry.deactivate_flexibility(admin, "BAT")
    registry.deregister_meter(admin, "MD")
    expect_revert("AccessControlUnauthorizedAccount", lambda: remove(bob_bid, "stranger"))
    expected = {
        "bob": (bob_bid, 1000, PRICE),
        "alice": (alice_ask, 500, lock_units(500, IMPORT_PRICE)),
        "dave": (dave_ask, 400, lock_units(400, IMPORT_PRICE)),
    }
    for name, (order_id, quantity, refund) in expected.items():
        closed = env.events("OrderClosed", remove(order_id))
        assert [(c["orderId"], c["reason"], c["remainingWh"], c["refund"]) for c in closed] == [
            (order_id, CloseReason.REMOVED, quantity, refund)
        ]
        assert env.deposit(name) == (FUNDED, 0)  # the lock is back in the owner's deposit
        assert status(env, order_id) == OrderStatus.CLOSED
    expect_revert("OrderNotOpen", lambda: remove(bob_bid), orderId=bob_bid, status=OrderStatus.CLOSED)
    expect_revert("OrderStillValid", lambda: remove(carol_ask), orderId=carol_ask)
    assert open_ids(env, slot, BUY) == [] and open_ids(env, slot, SELL) == [carol_ask]
    assert env.client.call(env.contract.functions.schedule(units.encode_id("BAT"), slot))[3] == 0
