"""Device states from reports, advanced by the devices' own meters (issue 16)."""

from __future__ import annotations

import pytest

from ocm.availability import BatteryState, EvState, sustainable_limits
from ocm.devices import BATTERY, EV_CHARGER, DeviceTracker, Report

T0 = 1_800_000_000


def test_a_cars_need_shrinks_with_what_its_meter_saw_charged():
    tracker = DeviceTracker()
    tracker.report("CS01", EV_CHARGER, Report(T0, plugged=True, energy_need_kwh=5.0))
    for minute in range(30):
        tracker.metered("CS01", T0 + 60 * minute, 6.0)  # 3 kWh in half an hour
    state = tracker.states(T0 + 1800)["CS01"]
    assert state == EvState(plugged=True, energy_need_kwh=pytest.approx(2.0))
    assert sustainable_limits(0.0, 11.0, state, 0.5) == pytest.approx((0.0, 4.0))
    tracker.report("CS01", EV_CHARGER, Report(T0 + 1900, plugged=False))
    assert tracker.states(T0 + 2000)["CS01"].plugged is False
    tracker.report("CS01", EV_CHARGER, Report(T0 + 100, plugged=True, energy_need_kwh=9.0))  # older: ignored
    assert tracker.states(T0 + 2000)["CS01"].plugged is False


def test_a_batterys_charge_follows_its_meter_through_its_efficiency():
    tracker = DeviceTracker(efficiency=0.9)
    tracker.report("BAT", BATTERY, Report(T0, plugged=False, stored_kwh=5.0, capacity_kwh=10.0))
    tracker.metered("BAT", T0 - 60, 50.0)  # before the report: already in it
    for minute in range(60):
        tracker.metered("BAT", T0 + 60 * minute, 2.0)  # 2 kWh charged, 1.8 kWh stored
    state = tracker.states(T0 + 3600)["BAT"]
    assert isinstance(state, BatteryState) and state.energy_kwh == pytest.approx(6.8)


def test_a_stale_report_makes_the_device_unavailable_and_unreported_devices_are_absent():
    tracker = DeviceTracker(max_age_s=3600)
    tracker.report("CS01", EV_CHARGER, Report(T0, plugged=True, energy_need_kwh=20.0))
    tracker.report("BAT", BATTERY, Report(T0, plugged=False, stored_kwh=5.0, capacity_kwh=10.0))
    states = tracker.states(T0 + 7200)
    assert sustainable_limits(0.0, 11.0, states["CS01"], 0.5) == (0.0, 0.0)
    assert sustainable_limits(-5.0, 5.0, states["BAT"], 0.5) == (0.0, 0.0)
    assert "HP01" not in states
