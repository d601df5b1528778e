"""MeasurementLedger's phase records (issue 17 part 4): per-phase P, Q, V, θ of L1, L2, L3
recorded, emitted, decoded the same in Solidity and Python, followed next to plain readings,
and every malformed or out-of-range phase refused and named."""

from __future__ import annotations

import pytest

from contracts import clock, units
from contracts.ledger import (
    PACKED_PHASE_READING_BYTES,
    Ledger,
    PhaseReading,
    Reading,
    pack_reading,
    split_by_kind,
)
from tests.reverts import expect_revert

L1 = PhaseReading(1.0, 0.1, 1.01, -0.5)
L2 = PhaseReading(-2.5, 0.0, 0.99, -120.5)
L3 = PhaseReading(0.75, -0.2, 1.0, 119.5)


def phase_reading(meter="M01", minute=None, phases=(L1, L2, L3), *, env) -> Reading:
    minute = env.now_minute() - 5 if minute is None else minute
    measured = [phase for phase in phases if phase is not None]
    p, q = sum(ph.p_kw for ph in measured), sum(ph.q_kvar for ph in measured)
    return Reading(meter, clock.minute_start(minute), p, q, 1.0, -0.5, tuple(phases))


def test_phase_records_are_recorded_decoded_and_added_to_the_slot_energy(env):
    community, gateway = env.community, env["gateway"]
    slot_start = (env.now_minute() // 15 + 1) * 15
    env.travel((slot_start + 18) * 60)
    batch = [
        phase_reading("M01", slot_start, env=env),
        phase_reading("M01", slot_start + 1, (None, L2, None), env=env),  # a single-phase meter on L2
        phase_reading("M02", slot_start, (L1, None, L3), env=env),
    ]
    assert len(batch[0].packed) == PACKED_PHASE_READING_BYTES == 101
    receipt = community.ledger.record_readings(gateway, batch)
    assert community.ledger.readings_in(receipt) == batch
    (event,) = env.client.events(community.ledger.contract, "PhaseReadingsRecorded", receipt)
    assert not env.client.events(community.ledger.contract, "ReadingsRecorded", receipt)
    decoded = env.client.call(community.ledger.contract.functions.decodePhaseReadings(event["readings"]))
    for reading, (totals, mask, values) in zip(batch, decoded, strict=True):
        assert tuple(totals) == reading.chain
        assert (mask, tuple(tuple(v) for v in values)) == reading.chain_phases
    assert decoded[1][1] == 0b010 and tuple(decoded[1][2][0]) == (0, 0, 0, 0)

    energy = community.ledger.slot_energy("M01", slot_start // 15)
    assert energy.readings == 2
    assert energy.active_kwh == pytest.approx((batch[0].p_kw + batch[1].p_kw) / 60)
    assert community.ledger.has_reading("M02", clock.minute_start(slot_start))


def test_the_follower_gives_plain_and_phase_readings_in_chain_order(env):
    ledger, now = env.community.ledger, env.now_minute()
    follower = ledger.follow_readings(env.client.head_block() + 1)
    plain = Reading("M03", clock.minute_start(now - 2), 1.5, 0.1, 1.0, 0.0)
    phased = phase_reading("M03", now - 1, (None, None, L3), env=env)
    for batch in split_by_kind([plain, phased]):
        ledger.record_readings(env["gateway"], batch)
    items = [item.reading for item in follower.poll().items]
    assert items == [plain, phased]
    assert items[0].phases is None and items[1].phases == (None, None, L3)
    with pytest.raises(ValueError, match="not both"):
        ledger.record_readings_call([plain, phased])


def test_a_reading_of_a_minute_is_one_record_whatever_its_kind(env):
    minute = env.now_minute() - 4
    env.community.ledger.record_readings(env["gateway"], [Reading("M01", minute * 60, 1, 0, 1, 0)])
    expect_revert(
        "DuplicateReading",
        lambda: env.community.ledger.record_readings(env["gateway"], [phase_reading("M01", minute, env=env)]),
        index=0,
    )


@pytest.mark.parametrize(
    ("phases", "field", "value"),
    [
        ((L1, PhaseReading(100_000.001, 0, 1, 0), None), "L2.activePowerW", 100_000_001),
        ((None, None, PhaseReading(0, -100_001, 1, 0)), "L3.reactivePowerVar", -100_001_000),
        ((PhaseReading(0, 0, 2.5, 0), None, None), "L1.voltageMicroPu", 2_500_000),
        ((None, PhaseReading(0, 0, 1, -180.5), None), "L2.angleMicroDeg", -180_500_000),
    ],
)
def test_an_out_of_range_phase_is_refused_and_named(env, phases, field, value):
    minute = clock.minute_start(env.now_minute() - 5)
    batch = [phase_reading("M02", env=env), Reading("M01", minute, 1.0, 0.0, 1.0, 0.0, phases)]
    refusal = expect_revert(
        "ReadingOutOfRange",
        lambda: env.community.ledger.record_readings(env["gateway"], batch),
        index=1,
        field=field,
        value=value,
    )
    assert Ledger.explain_refusal(refusal, batch).never_accepted == [1]


@pytest.mark.parametrize(
    ("mask", "values"),
    [
        (0, ((0, 0, 0, 0),) * 3),  # no phase
        (8, ((0, 0, 0, 0),) * 3),  # a fourth phase
        (0b001, ((1000, 0, 1_000_000, 0), (5, 0, 0, 0), (0, 0, 0, 0))),  # values of L2, not measured
    ],
)
def test_malformed_phase_masks_are_refused(env, mask, values):
    chain = (units.encode_id("M01"), env.now_minute() - 2, 1000, 0, 1_000_000, 0)
    raw = pack_reading(chain, (mask, values))
    ledger = env.community.ledger.contract.functions
    expect_revert(
        "MalformedPhases",
        lambda: env.client.transact(ledger.recordPhaseReadings(raw), env["gateway"]),
        index=0,
        phases=mask,
    )


def test_batches_of_the_wrong_record_length_are_refused(env):
    ledger = env.community.ledger.contract.functions
    plain = Reading("M01", (env.now_minute() - 2) * 60, 1, 0, 1, 0).packed
    expect_revert(
        "MalformedBatch",
        lambda: env.client.transact(ledger.recordPhaseReadings(plain * 2), env["gateway"]),
        length=104,
        readingBytes=101,
    )
    phased = phase_reading(env=env).packed
    expect_revert(
        "MalformedBatch",
        lambda: env.client.transact(ledger.recordReadings(phased), env["gateway"]),
        readingBytes=52,
    )
