"""Unit conversions between Python and chain integers."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import clock, units
from contracts.clock import SlotClock


def test_power_voltage_angle_conversions():
    assert units.kw_to_w(1.5) == 1500 and units.kw_to_w(-22) == -22000
    assert units.w_to_kw(1500) == 1.5
    assert units.kvar_to_var(0.0004) == 0 and units.var_to_kvar(-250) == -0.25
    assert units.pu_to_micro_pu(0.987654) == 987_654 and units.micro_pu_to_pu(1_010_000) == 1.01
    assert units.deg_to_micro_deg(-150.000001) == -150_000_001
    assert units.micro_deg_to_deg(30_000_000) == 30.0


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_power_round_trip_is_within_half_a_watt(kw):
    assert abs(units.w_to_kw(units.kw_to_w(kw)) - kw) <= 0.0005 + 1e-9


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(bad):
    with pytest.raises(units.UnitError, match="finite"):
        units.kw_to_w(bad)


def test_time_conversions():
    assert clock.aligned_minute(1_800_000_000 - 1_800_000_000 % 60) == (1_800_000_000 // 60)
    assert clock.minute_start(30_000_000) == 1_800_000_000
    assert clock.minute_of(1_800_000_059) == 30_000_000
    assert clock.floor_to_minute(1_800_000_059) == 1_800_000_000
    assert SlotClock(15).slot_of_minute(30_000_014) == 2_000_000
    assert list(SlotClock(15).minutes(2)) == list(range(30, 45))
    assert SlotClock(15).end(2) == SlotClock(15).start(3) == 2700
    assert clock.seconds_to_next_minute(125, 5) == 0
    assert clock.seconds_to_next_minute(120, 5) == 5
    assert clock.seconds_to_next_minute(126, 5) == 59
    with pytest.raises(units.UnitError, match="aligned"):
        clock.aligned_minute(1_800_000_001)
    with pytest.raises(units.UnitError, match="aligned"):
        clock.aligned_minute(60.5)


def test_energy_and_tokens():
    assert units.watt_minutes_to_kwh(60_000) == 1.0
    assert units.tokens_to_units("0.25") == 25 * 10**16
    assert units.tokens_to_units(Decimal("123456789.123456789123456789")) == 123456789123456789123456789
    assert units.units_to_tokens(25 * 10**16) == Decimal("0.25")
    with pytest.raises(units.UnitError):
        units.tokens_to_units("abc")


def test_ids():
    raw = units.encode_id("CS01")
    assert len(raw) == 32 and raw.startswith(b"CS01\x00")
    assert units.decode_id(raw) == "CS01"
    assert units.decode_id(units.encode_id("Zähler-7")) == "Zähler-7"
    for bad in ("", "x" * 33, "a\x00b"):
        with pytest.raises(units.UnitError):
            units.encode_id(bad)


def test_the_community_clock_runs_at_its_speed_and_child_processes_agree(monkeypatch):
    import os
    import subprocess
    import sys
    import time

    monkeypatch.setattr(clock, "_clock", clock._clock)  # restored after the test
    monkeypatch.setenv(clock.CLOCK_ENV, "1 0 0")  # likewise (accelerate sets it)
    ahead = time.time() + 3600  # a chain that ran accelerated before: its head is ahead
    clock.accelerate(20, not_before=ahead)
    first = clock.now()
    assert ahead <= first < ahead + 20 and clock.speed() == 20
    time.sleep(0.5)
    assert clock.now() - first == pytest.approx(10, abs=4)  # 20 community seconds per real second
    assert clock.real_seconds(60) == 3
    assert 0 <= clock.real_seconds_to_next_minute(5) <= 3.25
    script = "from contracts import clock; print(clock.now(), clock.speed())"
    before = clock.now()
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ)
    after = clock.now()
    child_now, child_speed = (float(value) for value in child.stdout.split())
    assert child_speed == 20 and before <= child_now <= after


@pytest.mark.parametrize("bad", [0, -1.5, math.nan])
def test_a_clock_that_stands_still_or_runs_backwards_is_refused(bad, monkeypatch):
    monkeypatch.setattr(clock, "_clock", clock._clock)
    with pytest.raises(ValueError, match="speed must be > 0"):
        clock.accelerate(bad)
    with pytest.raises(ValueError, match="speed must be > 0"):
        clock.CommunityClock.decode(f"{bad} 0 0")
