"""The market operator's routine on the market community: agents trade the next slot whose
gate is open, the gate closes, the slot is settled once final; each exactly once."""

from __future__ import annotations

from contracts.market import Side
from market.agents import EvOwner, PvProsumer
from market.operator import MarketOperator


def test_the_operator_trades_the_next_open_slot_then_closes_and_settles_it(env):
    clock, market = env.community.clock, env.community.market
    slot = env.open_slot(2)
    now = clock.start(slot) - 60  # a minute before delivery: the slot's gate (5 min) has closed
    env.travel(now)
    agents = [
        PvProsumer("carol", env["carol"], "PV", surplus_kw=8.0),
        EvOwner("bob", env["bob"], "EV", energy_kwh=1.0, deadline_slot=slot + 1),
    ]
    operator = MarketOperator(env.community, env["operator"], agents)

    assert operator.tick(now) == {"traded": [slot + 1], "closed": [], "settled": []}
    assert market.schedule("EV", slot + 1).matched_buy_kwh == 1.0
    assert operator.tick(now)["traded"] == []  # once per slot

    gate = market.gate_closure_time(slot + 1)
    env.travel(gate)
    done = operator.tick(gate)
    assert done["closed"] == [slot + 1] and done["traded"] == [slot + 2]
    assert market.open_orders(slot + 1, Side.SELL) == []  # carol's unsold rest expired at the gate

    final = env.community.settlement.final_time(slot + 1)
    env.travel(final)
    assert slot + 1 in operator.tick(final)["settled"]
    assert env.community.settlement.is_settled(env["bob"].address, slot + 1)
    assert slot + 1 not in operator.tick(final + 60)["settled"]
