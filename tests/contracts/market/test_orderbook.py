"""The off-chain order book built from events equals the market's storage."""

from __future__ import annotations

from contracts import units
from contracts.market import AssetKind, CloseReason, OrderStatus, Side, TimeInForce
from contracts.orderbook import OrderBookView, build_order_book
from tests.market_setup import PRICE

BUY, SELL = Side.BUY, Side.SELL


def busy_slot(env) -> int:
    """Orders at several prices, partial fills, a cancel, a curtailment and an open order its
    tightened band closes when it would match."""
    slot = env.open_slot()
    for member, side, quantity, price in [
        ("carol", SELL, 1500, 2 * PRICE),
        ("alice", SELL, 800, PRICE),
        ("dave", SELL, 300, 3 * PRICE),
        ("bob", BUY, 1000, PRICE),  # takes 800 from alice, rests 200
        ("dave", BUY, 500, PRICE // 2),
        ("alice", BUY, 400, PRICE // 2),
        ("bob", BUY, 600, 2 * PRICE),  # takes 600 from carol
    ]:
        env.place(member, slot, side, quantity, price)
    cancelled, _ = env.place("dave", slot, BUY, 100, PRICE // 4)
    env.client.transact(env.contract.functions.cancelOrder(cancelled), env["dave"])
    env.publish_band("EV", slot, 0, 4000)  # bob's EV: 1400 Wh matched, 1000 allowed
    env.client.transact(env.contract.functions.curtail(units.encode_id("EV"), slot), env["stranger"])
    # bob's resting 200 Wh bid no longer fits the band: it is closed when an ask reaches it
    env.place("dave", slot, SELL, 100, PRICE, TimeInForce.IMMEDIATE_OR_CANCEL)
    return slot


def test_the_book_from_events_equals_the_chain(env):
    start = env.client.w3.eth.block_number
    slot = busy_slot(env)
    view = build_order_book(env.community.market, from_block=start)
    for side in Side:
        on_chain = list(env.client.call(env.contract.functions.openOrders(slot, int(side))))
        assert [order.order_id for order in view.open_orders(slot, side)] == on_chain
        for order in view.open_orders(slot, side):
            assert order.remaining_wh == env.order(order.order_id)[9]
    for order in view.orders.values():
        assert order.status == OrderStatus(env.order(order.order_id)[5])
    for trade in view.trades.values():
        assert trade.quantity_wh == env.client.call(env.contract.functions.trade(trade.trade_id))[3]
    assert view.locked() == env.escrow_held()
    curtailed = [t for t in view.trades.values() if t.curtailed_wh]
    assert [(t.quantity_wh, t.curtailed_wh) for t in curtailed] == [(200, 400)]
    reasons = {o.order_id: o.close_reason for o in view.orders.values() if o.status == OrderStatus.CLOSED}
    assert sorted(reasons.values()) == [
        CloseReason.CANCELLED,  # dave's bid
        CloseReason.IMMEDIATE_REMAINDER,  # dave's ask
        CloseReason.BAND_TIGHTENED,  # bob's resting 200 Wh bid
    ]
    for member in ("alice", "bob", "carol", "dave"):
        address = env[member].address
        held = env.client.call(env.contract.functions.position(address, slot))
        paid, collateral = held[2], held[5]
        assert view.collateral.get((address, slot), 0) == collateral
        assert view.trade_locks.get((address, slot), 0) == paid + collateral
    assert (
        view.collateral[(env["carol"].address, slot)] > 0
        and view.collateral[(env["alice"].address, slot)] > 0
    )


def test_hints_and_depth_from_the_view(env):
    start = env.client.w3.eth.block_number
    slot = busy_slot(env)
    view = build_order_book(env.community.market, from_block=start)
    for side in Side:
        for price in (PRICE // 4, PRICE // 2, PRICE, 2 * PRICE, 3 * PRICE, 5 * PRICE):
            expected = env.client.call(env.contract.functions.insertionHint(slot, int(side), price))
            assert view.insertion_hint(slot, side, price) == expected
    assert view.depth(slot, SELL) == [(2 * PRICE, 900), (3 * PRICE, 300)]
    assert view.depth(slot, BUY) == [(PRICE // 2, 900)]
    assert view.best(slot, SELL).owner == env["carol"].address


def test_receipts_applied_one_by_one_give_the_same_book(env):
    start = env.client.w3.eth.block_number
    view = OrderBookView()
    decoder = env.community.market
    slot = env.open_slot()
    for member, side, quantity, price in [("carol", SELL, 500, PRICE), ("dave", BUY, 700, 2 * PRICE)]:
        _, receipt = env.place(member, slot, side, quantity, price, asset=None)
        view.apply_all(decoder.events_in(receipt))
    fetched = build_order_book(env.community.market, from_block=start)
    assert view.orders == fetched.orders and view.trades == fetched.trades
    assert [o.asset_kind for o in view.open_orders(slot, BUY)] == [AssetKind.METER]
