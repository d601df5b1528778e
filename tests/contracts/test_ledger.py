"""MeasurementLedger: recording readings, slot energy, and every refusal."""

from __future__ import annotations

import pytest

from contracts import clock, units
from contracts.ledger import Ledger, Reading
from tests.reverts import expect_revert


def reading(meter="M01", minute=None, p=2.0, q=0.5, v=0.98, theta=-1.5, *, env):
    minute = env.now_minute() - 5 if minute is None else minute
    return Reading(meter, clock.minute_start(minute), p, q, v, theta)


def test_a_batch_is_recorded_emitted_and_accumulated(env):
    community, gateway = env.community, env["gateway"]
    slot_start = (env.now_minute() // 15 + 1) * 15
    env.travel((slot_start + 18) * 60)  # minute 3 of the next slot: slot_start's deadline is 12 minutes off
    batch = [reading("M01", slot_start + i, p=1.0 + i, q=-0.25, env=env) for i in range(3)]
    batch.append(reading("M02", slot_start, p=-3.0, env=env))
    receipt = community.ledger.record_readings(gateway, batch)

    assert community.ledger.readings_in(receipt) == batch  # one event holds the packed batch
    (event,) = env.client.events(community.ledger.contract, "ReadingsRecorded", receipt)
    decoded = env.client.call(community.ledger.contract.functions.decodeReadings(event["readings"]))
    assert [(units.decode_id(r[0]), r[1], r[2]) for r in decoded] == [
        ("M01", slot_start, 1000),
        ("M01", slot_start + 1, 2000),
        ("M01", slot_start + 2, 3000),
        ("M02", slot_start, -3000),
    ]
    assert decoded[0][4:] == (980_000, -1_500_000)

    slot = slot_start // 15
    energy = community.ledger.slot_energy("M01", slot)
    assert energy.readings == 3
    assert energy.active_kwh == pytest.approx((1 + 2 + 3) / 60)
    assert energy.reactive_kvarh == pytest.approx(-0.75 / 60)
    assert community.ledger.slot_energy("M02", slot).active_kwh == pytest.approx(-3 / 60)
    assert community.ledger.slot_energy("M03", slot).readings == 0
    assert community.ledger.has_reading("M01", clock.minute_start(slot_start + 2))
    assert not community.ledger.has_reading("M01", clock.minute_start(slot_start + 3))
    meters = [units.encode_id(m) for m in ("M01", "M01", "M03")]
    assert env.client.call(
        community.ledger.contract.functions.hasReadings(meters, [slot_start, slot_start + 3, slot_start])
    ) == [True, False, False]


def test_duplicates_are_refused_in_a_batch_and_across_batches(env):
    community, gateway = env.community, env["gateway"]
    minute = env.now_minute() - 3
    first = reading("M01", minute, env=env)
    community.ledger.record_readings(gateway, [first])
    expect_revert(
        "DuplicateReading",
        lambda: community.ledger.record_readings(gateway, [reading("M02", minute, env=env), first]),
        index=1,
        meter=units.encode_id("M01"),
        minute=minute,
    )
    twice = reading("M03", minute, env=env)
    expect_revert(
        "DuplicateReading", lambda: community.ledger.record_readings(gateway, [twice, twice]), index=1
    )
    assert not community.ledger.has_reading("M02", clock.minute_start(minute)), (
        "a refused batch stores nothing"
    )


def test_unknown_and_deregistered_meters_are_refused(env):
    community, gateway = env.community, env["gateway"]
    expect_revert(
        "UnknownMeter",
        lambda: community.ledger.record_readings(
            gateway, [reading("M01", env=env), reading("NOPE", env=env)]
        ),
        meter=units.encode_id("NOPE"),
    )
    env.client.transact(
        community.registry.contract.functions.deregisterMeter(units.encode_id("M02")), env["admin"]
    )
    expect_revert(
        "UnknownMeter",
        lambda: community.ledger.record_readings(gateway, [reading("M02", env=env)]),
        meter=units.encode_id("M02"),
    )


@pytest.mark.parametrize(
    ("field", "values", "chain_value"),
    [
        ("activePowerW", {"p": 100_000.001}, 100_000_001),
        ("activePowerW", {"p": -100_000.001}, -100_000_001),
        ("reactivePowerVar", {"q": 100_001.0}, 100_001_000),
        ("voltageMicroPu", {"v": 2.000001}, 2_000_001),
        ("angleMicroDeg", {"theta": 180.000001}, 180_000_001),
        ("angleMicroDeg", {"theta": -181.0}, -181_000_000),
    ],
)
def test_out_of_range_values_are_refused_and_named(env, field, values, chain_value):
    bad = reading("M01", env=env, **values)
    failure = expect_revert(
        "ReadingOutOfRange",
        lambda: env.community.ledger.record_readings(env["gateway"], [reading("M02", env=env), bad]),
        index=1,
        field=field,
        value=chain_value,
    )
    assert field in str(failure)


def test_readings_from_the_future_and_empty_batches_are_refused(env):
    community, gateway = env.community, env["gateway"]
    future = env.now_minute() + 10
    expect_revert(
        "ReadingFromFuture",
        lambda: community.ledger.record_readings(gateway, [reading("M01", future, env=env)]),
        index=0,
        minute=future,
    )
    expect_revert("EmptyBatch", lambda: community.ledger.record_readings(gateway, []))


def test_gas_per_reading_in_a_batch_of_100_is_below_target(env):
    """The issue's target, ≤ 10,000 gas per reading in batches of 100 (benchmarks/gas.py
    measures the slot average), and the slot word written once per run of a meter's minutes:
    the same readings sorted by meter (as the gateway sends them) cost less (a word written
    again in the same transaction is warm, so the saving is ~10 %, not more)."""
    now = (env.now_minute() // 15 + 1) * 15 + 14  # the last minute of a slot: 29 minutes back are open
    env.travel(now * 60)
    meters = ("M01", "M02", "M03", "M04")
    interleaved = [reading(meters[i % 4], now - 1 - i // 4, env=env) for i in range(100)]
    receipt = env.community.ledger.record_readings(env["gateway"], interleaved[:48])
    per_reading_interleaved = receipt["gasUsed"] / 48
    by_meter = sorted(interleaved[48:], key=lambda r: (r.meter_id, r.time))
    per_reading_sorted = env.community.ledger.record_readings(env["gateway"], by_meter)["gasUsed"] / 52
    assert per_reading_interleaved <= 10_000
    assert per_reading_sorted < 0.95 * per_reading_interleaved


def test_readings_are_accepted_until_the_data_deadline_and_refused_after(env):
    community, gateway = env.community, env["gateway"]
    slot = env.now_minute() // 15 + 1
    deadline = community.ledger.data_deadline(slot)
    assert deadline == ((slot + 1) * 15 + 15) * 60, "slot end plus the data delay (15 minutes)"
    start = slot * 15
    env.travel(deadline - 1)  # the last second readings of the slot are taken
    community.ledger.record_readings(gateway, [reading("M01", start, env=env)])
    assert community.ledger.has_reading("M01", clock.minute_start(start))

    env.travel(deadline)
    now = deadline // 60
    late = [reading("M02", now - 1, env=env), reading("M01", start + 14, env=env)]
    refusal = expect_revert(
        "ReadingPastDeadline",
        lambda: community.ledger.record_readings(gateway, late),
        index=1,
        meter=units.encode_id("M01"),
        minute=start + 14,
        deadline=deadline,
    )
    explained = Ledger.explain_refusal(refusal, late)
    assert (explained.error, explained.already_recorded, explained.never_accepted) == (
        "ReadingPastDeadline",
        [],
        [1],
    )
    assert not community.ledger.has_reading("M02", clock.minute_start(now - 1)), (
        "a refused batch stores nothing"
    )
    community.ledger.record_readings(gateway, late[:1])  # readings of the next slot still are taken
    assert community.ledger.slot_energy("M01", slot).readings == 1


@pytest.mark.parametrize("length", [51, 53, 104 + 7])
def test_a_batch_that_is_not_whole_readings_is_refused_by_length(env, length):
    """Packed batches are 52 bytes per reading; anything else is refused before any reading
    is looked at, by recordReadings and decodeReadings alike."""
    ledger = env.community.ledger.contract.functions
    raw = reading("M01", env=env).packed * 3
    expect_revert(
        "MalformedBatch",
        lambda: env.client.transact(ledger.recordReadings(raw[:length]), env["gateway"]),
        length=length,
        readingBytes=52,
    )
    expect_revert(
        "MalformedBatch", lambda: env.client.call(ledger.decodeReadings(raw[:length])), length=length
    )
