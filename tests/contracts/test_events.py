"""The event follower: each event once, in chain order, across range boundaries, and again
after a reorganisation replaced the blocks it had read."""

from __future__ import annotations

from contracts import clock
from contracts.ledger import Reading


def readings(env, meter: str, minutes: list[int], p_kw: float = 1.0) -> None:
    batch = [Reading(meter, clock.minute_start(m), p_kw, 0.0, 1.0, 0.0) for m in minutes]
    env.community.ledger.record_readings(env["gateway"], batch)


def test_events_come_once_in_order_across_query_ranges(env):
    ledger, now = env.community.ledger, env.now_minute()
    follower = ledger.follow_readings(env.client.head_block() + 1)
    follower.max_blocks = 2  # several eth_getLogs ranges
    for k in range(5):
        readings(env, "M01", [now - 10 + k])
    update = follower.poll()
    assert [item.reading.minute for item in update.items] == [now - 10 + k for k in range(5)]
    assert update.rewound_from is None and update.head == env.client.head_block()
    assert follower.poll().items == []
    readings(env, "M02", [now - 1], p_kw=2.5)
    (item,) = follower.poll().items
    assert (item.reading.meter_id, item.reading.p_kw, item.reading.v_pu) == ("M02", 2.5, 1.0)


def test_after_a_reorganisation_the_new_blocks_are_delivered_and_the_rewind_is_said(env):
    ledger, now = env.community.ledger, env.now_minute()
    follower = ledger.follow_readings(env.client.head_block() + 1)
    fork_point = env.client.head_block()
    snapshot = env.tester.take_snapshot()
    readings(env, "M01", [now - 3])
    readings(env, "M01", [now - 2])
    assert [i.reading.minute for i in follower.poll().items] == [now - 3, now - 2]

    env.tester.revert_to_snapshot(snapshot)  # the other branch wins: other blocks, same heights
    env.client.forget_nonces()
    readings(env, "M02", [now - 3])
    env.tester.mine_blocks(2)
    update = follower.poll()
    assert update.rewound_from == fork_point + 1
    assert [(i.reading.meter_id, i.reading.minute) for i in update.items] == [("M02", now - 3)]
