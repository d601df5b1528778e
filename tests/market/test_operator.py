"""The market operator's routine on the market community: agents trade the next slot whose
gate is open; at gate closure the slot is closed (open orders expired, or the auction
cleared) and finalized (trades curtailed to the bands in force); it is settled once final;
each exactly once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from contracts.market import Side
from market.agents import EvOwner, PvProsumer
from market.operator import MarketOperator
from tests.market_setup import deploy_market_community


def agents_for(env, slot: int) -> list:
    return [
        PvProsumer("carol", env["carol"], "PV", surplus_kw=8.0),
        EvOwner("bob", env["bob"], "EV", energy_kwh=1.0, deadline_slot=slot + 1),
    ]


def test_the_operator_trades_the_next_open_slot_then_closes_finalizes_and_settles_it(env):
    clock, market = env.community.clock, env.community.market
    slot = env.open_slot(2)
    for later in (slot + 1, slot + 2):  # the slots the agents trade (a flexibility needs its band published)
        env.publish_hardware_bands(later)  # from ``slot``: the chain clock may pass a slot boundary
    now = clock.start(slot) - 60  # a minute before delivery: the slot's gate (5 min) has closed
    env.travel(now)
    operator = MarketOperator(env.community, env["operator"], agents_for(env, slot))

    assert operator.tick(now) == {"traded": [slot + 1], "closed": [], "settled": []}
    assert market.schedule("EV", slot + 1).matched_buy_kwh == 1.0
    assert operator.tick(now)["traded"] == []  # once per slot
    # the OCM tightens the charger's band after the match (2 kW: 0.5 kWh); nobody curtails yet
    env.publish_band("EV", slot + 1, 0, 2000)
    assert market.schedule("EV", slot + 1).matched_buy_kwh == 1.0

    gate = market.gate_closure_time(slot + 1)
    env.travel(gate)
    done = operator.tick(gate)
    assert done["closed"] == [slot + 1] and done["traded"] == [slot + 2]
    assert market.open_orders(slot + 1, Side.SELL) == []  # carol's unsold rest expired at the gate
    assert market.finalized(slot + 1) and not market.finalized(slot + 2)
    assert market.schedule("EV", slot + 1).matched_buy_kwh == 0.5  # finalizing cut it to its band
    assert market.position(env["bob"].address, slot + 1).bought_kwh == 0.5

    final = env.community.settlement.final_time(slot + 1)
    env.travel(final)
    assert slot + 1 in operator.tick(final)["settled"]
    assert env.community.settlement.is_settled(env["bob"].address, slot + 1)
    assert market.position(env["bob"].address, slot + 1).released
    assert slot + 1 not in operator.tick(final + 60)["settled"]


def test_a_flexibility_agent_trades_a_slot_once_its_band_is_published(env):
    clock, market = env.community.clock, env.community.market
    slot = env.bare_slot(2)
    now = clock.start(slot) - 60
    env.travel(now)
    env.publish_band("PV", slot + 1, -10_000, 0)  # the OCM has covered only the PV's slot so far
    operator = MarketOperator(env.community, env["operator"], agents_for(env, slot))

    assert operator.tick(now)["traded"] == [slot + 1]  # carol offers, bob waits for his band
    assert market.schedule("PV", slot + 1).open_sell_kwh == 2.0
    assert market.schedule("EV", slot + 1).matched_buy_kwh == 0
    assert operator.tick(now)["traded"] == []  # still no band for the charger: nothing sent

    env.publish_band("EV", slot + 1, 0, 11_000)
    assert operator.tick(now)["traded"] == [slot + 1]  # now bob trades, carol does not again
    assert market.schedule("EV", slot + 1).matched_buy_kwh == 1.0
    assert market.schedule("PV", slot + 1).matched_sell_kwh == 1.0
    assert market.schedule("PV", slot + 1).open_sell_kwh == 1.0
    assert operator.tick(now)["traded"] == []


@pytest.fixture(scope="module")
def auction_chain(artifacts):
    return deploy_market_community(artifacts, clearing_mode="auction")


@pytest.mark.parametrize("cleared_by_someone_else", [False, True])
def test_in_auction_mode_the_operator_clears_then_finalizes_at_gate_closure(
    auction_chain, cleared_by_someone_else
):
    env = auction_chain
    snapshot = env.tester.take_snapshot()
    try:
        clock, market = env.community.clock, env.community.market
        slot = env.open_slot(2)
        env.open_slot(3)
        now = clock.start(slot) - 60
        env.travel(now)
        operator = MarketOperator(env.community, env["operator"], agents_for(env, slot))
        assert operator.tick(now)["traded"] == [slot + 1]
        assert market.schedule("EV", slot + 1).open_buy_kwh == 1.0  # nothing matches before the call

        gate = market.gate_closure_time(slot + 1)
        env.travel(gate)
        if cleared_by_someone_else:  # anyone may clear the auction: the operator goes on to finalize
            market.clear_auction(env["stranger"], slot + 1)
        assert operator.tick(gate)["closed"] == [slot + 1]
        assert market.finalized(slot + 1)
        # both limit prices match 1 kWh with 1 kWh left over: the midpoint of 0.125 and 0.30
        position = market.position(env["bob"].address, slot + 1)
        assert (position.bought_kwh, position.paid) == (1.0, Decimal("0.2125"))
        assert market.open_orders(slot + 1, Side.SELL) == []
    finally:
        env.tester.revert_to_snapshot(snapshot)
        env.client.forget_nonces()
