"""CapacityLimits: OCM bands, DSO limitations, the band in force and the slot's tightest band."""

from __future__ import annotations

import pytest

from contracts import clock, units
from contracts.limits import Band, BandSource, LimitationKind
from tests.reverts import expect_revert

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def future_slot_start(env, slots_ahead=2):
    return (env.now_minute() // 15 + slots_ahead) * 15


def band(flex, start_minute, end_minute, low, high):
    return Band(flex, clock.minute_start(start_minute), clock.minute_start(end_minute), low, high)


def band_at(env, flex, minute):
    return env.community.limits.band_at(flex, clock.minute_start(minute))


def limit_flexibility(env, flex, start, end, low_w, high_w, kind=LimitationKind.FORESEEN, reason="test"):
    call = env.community.limits.contract.functions.postFlexibilityLimitation(
        units.encode_id(flex), start, end, low_w, high_w, int(kind), reason
    )
    return env.client.transact(call, env["dso"])


def limit_feeder(env, flexes, start, end, low_w, high_w, kind=LimitationKind.UNFORESEEN, reason="fault"):
    call = env.community.limits.contract.functions.postFeederLimitation(
        units.encode_id("F1"),
        [units.encode_id(f) for f in flexes],
        start,
        end,
        low_w,
        high_w,
        int(kind),
        reason,
    )
    return env.client.transact(call, env["dso"])


def test_published_bands_are_in_force_for_exactly_their_minutes(env):
    start = future_slot_start(env) + 1  # not aligned to the 4-minute storage words
    receipt = env.community.limits.publish_bands(env["ocm"], [band("CS01", start, start + 6, 2.0, 11.0)])
    (event,) = env.client.events(env.community.limits.contract, "BandPublished", receipt)
    assert (event["startMinute"], event["endMinute"], event["pMinW"], event["pMaxW"]) == (
        start,
        start + 6,
        2000,
        11000,
    )
    for minute in range(start - 2, start + 8):
        in_force = band_at(env, "CS01", minute)
        if start <= minute < start + 6:
            assert (in_force.p_min_kw, in_force.p_max_kw, in_force.source) == (
                2.0,
                11.0,
                BandSource.OCM,
            )
        else:
            assert (in_force.p_min_kw, in_force.p_max_kw, in_force.source) == (
                0,
                22,
                BandSource.HARDWARE_BOUNDS,
            )


def test_a_later_publication_replaces_the_overlapping_minutes(env):
    start = future_slot_start(env)
    env.community.limits.publish_bands(env["ocm"], [band("BAT01", start, start + 15, -20.0, 20.0)])
    env.community.limits.publish_bands(env["ocm"], [band("BAT01", start + 5, start + 7, -5.0, 0.0)])
    assert band_at(env, "BAT01", start + 4).p_max_kw == 20.0
    assert band_at(env, "BAT01", start + 5).p_max_kw == 0.0
    assert band_at(env, "BAT01", start + 6).p_min_kw == -5.0
    assert band_at(env, "BAT01", start + 7).p_min_kw == -20.0


def test_tightest_band_of_a_slot(env):
    start = future_slot_start(env)
    slot = start // 15
    assert env.community.limits.tightest_band("CS01", slot) == (0.0, 22.0, False)
    env.community.limits.publish_bands(
        env["ocm"],
        [band("CS01", start, start + 15, 0.0, 20.0), band("CS01", start + 3, start + 4, 1.5, 7.0)],
    )
    assert env.community.limits.tightest_band("CS01", slot) == (1.5, 7.0, True)
    env.community.limits.publish_bands(env["ocm"], [band("CS01", start + 14, start + 16, 8.0, 9.0)])
    low, high, published = env.community.limits.tightest_band("CS01", slot)
    assert (low, high, published) == (8.0, 7.0, True), "bands that do not overlap give an empty slot band"
    assert env.community.limits.tightest_band("CS01", slot + 1)[2] is False


def test_many_bands_in_one_transaction(env):
    start = future_slot_start(env)
    bands = [band(flex, start, start + 60, 0.0, 1.0 + i) for i, flex in enumerate(("CS01", "CS02"))]
    bands.append(band("PV01", start, start + 60, -4.0, -1.0))
    env.community.limits.publish_bands(env["ocm"], bands)
    assert band_at(env, "CS02", start + 59).p_max_kw == 2.0
    assert (
        band_at(env, "PV01", start + 30).p_min_kw,
        band_at(env, "PV01", start + 30).p_max_kw,
    ) == (-4.0, -1.0)


def test_band_refusals_name_the_item(env):
    community, ocm = env.community, env["ocm"]
    start = future_slot_start(env)
    good = band("CS01", start, start + 15, 0.0, 5.0)
    cases = [
        (
            "UnknownFlexibility",
            band("NOPE", start, start + 1, 0, 1),
            {"flexibility": units.encode_id("NOPE")},
        ),
        ("InvalidMinuteRange", band("CS01", start, start, 0, 1), {"startMinute": start}),
        ("InvalidMinuteRange", band("CS01", start, start + 7 * 1440 + 1, 0, 1), {}),
        ("InvertedBand", band("CS01", start, start + 1, 5, 4), {"pMinW": 5000, "pMaxW": 4000}),
        (
            "BandOutsideHardwareBounds",
            band("CS01", start, start + 1, -1, 4),
            {"pLowW": 0, "pHighW": 22000},
        ),
        ("BandOutsideHardwareBounds", band("CS01", start, start + 1, 0, 22.001), {"pMaxW": 22001}),
        ("MinuteInThePast", band("CS01", start - 60, start, 0, 1), {"startMinute": start - 60}),
    ]
    for error, bad, expected in cases:
        index = {} if error == "UnknownFlexibility" else {"index": 1}  # the id names that item
        expect_revert(
            error, lambda bad=bad: community.limits.publish_bands(ocm, [good, bad]), **index, **expected
        )
    expect_revert("EmptyBatch", lambda: community.limits.publish_bands(ocm, []))
    assert band_at(env, "CS01", start).source == BandSource.HARDWARE_BOUNDS, "refused batches store nothing"


def test_deactivated_flexibilities_get_no_bands(env):
    env.client.transact(
        env.community.registry.contract.functions.deactivateFlexibility(units.encode_id("CS02")),
        env["admin"],
    )
    start = future_slot_start(env)
    expect_revert(
        "UnknownFlexibility",
        lambda: env.community.limits.publish_bands(env["ocm"], [band("CS02", start, start + 1, 0, 1)]),
    )


def test_dso_limitation_intersects_the_ocm_band(env):
    start = future_slot_start(env)
    env.community.limits.publish_bands(env["ocm"], [band("BAT01", start, start + 15, -30.0, 30.0)])
    receipt = limit_flexibility(
        env, "BAT01", start + 5, start + 10, INT64_MIN, 10_000, reason="transformer work"
    )
    (posted,) = env.client.events(env.community.limits.contract, "LimitationPosted", receipt)
    assert posted["reason"] == "transformer work" and posted["limitationId"] == 0
    assert band_at(env, "BAT01", start + 4).p_max_kw == 30.0
    in_force = band_at(env, "BAT01", start + 5)
    assert (in_force.p_min_kw, in_force.p_max_kw, in_force.source) == (
        -30.0,
        10.0,
        BandSource.OCM_AND_DSO,
    )
    assert env.community.limits.tightest_band("BAT01", start // 15) == (-30.0, 10.0, True)
    record = env.client.call(env.community.limits.contract.functions.limitation(0))
    assert record[0] == 0 and record[2:4] == (start + 5, start + 10)
    assert env.client.call(env.community.limits.contract.functions.limitationCount()) == 1


def test_dso_limitation_wins_when_it_does_not_overlap_the_ocm_band(env):
    start = future_slot_start(env)
    env.community.limits.publish_bands(env["ocm"], [band("BAT01", start, start + 15, 10.0, 30.0)])
    limit_flexibility(env, "BAT01", start, start + 15, -50_000, -5_000)
    in_force = band_at(env, "BAT01", start)
    assert (in_force.p_min_kw, in_force.p_max_kw) == (-50.0, -5.0)
    limit_flexibility(env, "CS01", start, start + 15, 0, 4_000)
    assert band_at(env, "CS01", start).source == BandSource.DSO


def test_feeder_limitation_is_split_in_proportion_to_hardware_range(env):
    start = future_slot_start(env)
    # CS01 0..22 kW, CS02 0..11 kW: a feeder maximum of 15 kW is shared 10 : 5.
    receipt = limit_feeder(env, sorted(["CS01", "CS02"]), start, start + 30, INT64_MIN, 15_000)
    shares = {
        units.decode_id(e["flexibility"]): (e["pMinW"], e["pMaxW"])
        for e in env.client.events(env.community.limits.contract, "FlexibilityLimited", receipt)
    }
    assert shares == {"CS01": (0, 10_000), "CS02": (0, 5_000)}
    assert band_at(env, "CS02", start + 29).p_max_kw == 5.0
    assert band_at(env, "CS02", start + 30).p_max_kw == 11.0
    # A maximum below every flexibility's lowest power pins each at its lowest.
    receipt = limit_feeder(env, ["BAT01", "CS01"], start, start + 1, INT64_MIN, -60_000)
    pinned = [
        (e["pMinW"], e["pMaxW"])
        for e in env.client.events(env.community.limits.contract, "FlexibilityLimited", receipt)
    ]
    assert pinned == [(-50_000, -50_000), (0, 0)]


def test_limitation_refusals(env):
    start = future_slot_start(env)
    expect_revert("InvertedBand", lambda: limit_flexibility(env, "CS01", start, start + 1, 30_000, INT64_MAX))
    expect_revert("UnknownFlexibility", lambda: limit_flexibility(env, "NOPE", start, start + 1, 0, 1))
    expect_revert("MinuteInThePast", lambda: limit_flexibility(env, "CS01", start - 100, start, 0, 1))
    expect_revert(
        "UnsortedOrDuplicateFlexibility",
        lambda: limit_feeder(env, ["CS02", "CS01"], start, start + 1, 0, 1),
        index=1,
    )
    expect_revert(
        "UnsortedOrDuplicateFlexibility",
        lambda: limit_feeder(env, ["CS01", "CS01"], start, start + 1, 0, 1),
    )
    expect_revert("EmptyBatch", lambda: limit_feeder(env, [], start, start + 1, 0, 1))
    expect_revert("InvertedBand", lambda: limit_feeder(env, ["CS01"], start, start + 1, 5, 1))
    expect_revert(
        "UnknownLimitation", lambda: env.client.call(env.community.limits.contract.functions.limitation(7))
    )


@pytest.mark.parametrize("kind", list(LimitationKind))
def test_limitation_kind_is_recorded(env, kind):
    start = future_slot_start(env)
    receipt = limit_flexibility(env, "CS01", start, start + 1, 0, 1000, kind=kind)
    (posted,) = env.client.events(env.community.limits.contract, "LimitationPosted", receipt)
    assert posted["kind"] == int(kind)
