"""Bands the devices can follow (issue 16): an EV without a car or a full battery cannot carry
a limit; the other levers do, and pandapower confirms the band."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pytest

from ocm.availability import BatteryState, EvState, availability_limits, sustainable_limits
from ocm.bands import OcmProblem
from ocm.case import case_from_pandapower
from tests.ocm.networks import radial_feeder


def test_limits_follow_plug_state_energy_need_and_state_of_charge():
    assert sustainable_limits(0.0, 11.0, EvState(plugged=False), 0.5) == (0.0, 0.0)
    assert sustainable_limits(0.0, 11.0, EvState(plugged=True, energy_need_kwh=0.0), 0.5) == (0.0, 0.0)
    assert sustainable_limits(0.0, 11.0, EvState(plugged=True, energy_need_kwh=2.0), 0.5) == (0.0, 4.0)
    assert sustainable_limits(0.0, 11.0, EvState(plugged=True, energy_need_kwh=30.0), 0.5) == (0.0, 11.0)
    full = BatteryState(capacity_kwh=10.0, energy_kwh=10.0)
    assert sustainable_limits(-5.0, 5.0, full, 0.5) == (-5.0, 0.0)
    low, high = sustainable_limits(-5.0, 5.0, BatteryState(10.0, 1.0, reserve_kwh=0.5, efficiency=1.0), 0.5)
    assert (low, high) == (-1.0, 5.0)
    assert sustainable_limits(-3.0, 3.0, None, 0.5) == (-3.0, 3.0)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (EvState(True, -1.0), "energy_need_kwh must be ≥ 0"),
        (BatteryState(0.0, 0.0), "capacity_kwh must be > 0"),
        (BatteryState(10.0, 12.0), "energy_kwh 12.0 must lie in \\[0, capacity_kwh"),
        (BatteryState(10.0, 5.0, efficiency=1.5), "efficiency"),
    ],
)
def test_impossible_states_are_refused_naming_the_flexibility(state, message):
    net = radial_feeder([0.2], [5.0])
    pp.create_load(net, 2, 0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.011, name="EV1")
    case = case_from_pandapower(net)
    with pytest.raises(ValueError, match=f"EV1: {message}"):
        availability_limits(case.flexibilities, {"EV1": state}, 0.5)


def test_an_unavailable_charger_counts_as_fixed_and_the_battery_carries_the_over_voltage():
    """Midday on a long feeder: the PV at its end pushes the voltage over 1.05 pu unless
    something consumes. A charger without a car is fixed at 0 kW, so the battery must charge;
    when the battery is full too, nothing can, and OCM says so instead of relying on them."""
    net = radial_feeder([0.3] * 4, [1.0] * 4, pv_kw=[0.0, 0.0, 0.0, 20.0], std_type="NAYY 4x50 SE")
    pp.runpp(net)
    assert net.res_bus.vm_pu.max() > 1.05  # the PV alone breaks the limit
    pp.create_load(net, 4, 0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.022, name="EV1")
    pp.create_storage(
        net, 3, 0.0, max_e_mwh=0.05, controllable=True, min_p_mw=-0.03, max_p_mw=0.03, name="BAT1"
    )
    case = case_from_pandapower(net)
    problem = OcmProblem(case.grid, case.flexibilities, samples=200)
    names = [f.name for f in case.flexibilities]
    ev, battery = names.index("EV1"), names.index("BAT1")
    half_full = {"EV1": EvState(plugged=False), "BAT1": BatteryState(50.0, 25.0)}
    low, high = availability_limits(case.flexibilities, half_full, 0.5)
    band = problem.solve(case.point, p_low_kw=low, p_high_kw=high)
    assert band.feasible and band.verification.passed
    assert (band.p_min_kw[ev], band.p_max_kw[ev]) == (0.0, 0.0)
    assert band.p_min_kw[battery] > 0.5, "the battery must charge to hold the voltage down"
    for corner in (band.p_min_kw, band.p_max_kw):  # pandapower at both corners of the band
        net.load.loc[net.load.name == "EV1", "p_mw"] = corner[ev] / 1e3
        net.storage.loc[net.storage.name == "BAT1", "p_mw"] = corner[battery] / 1e3
        pp.runpp(net)
        assert net.res_bus.vm_pu.max() <= 1.05 + 1e-6 and net.res_bus.vm_pu.min() >= 0.95 - 1e-6

    both_out = {"EV1": EvState(plugged=False), "BAT1": BatteryState(50.0, 50.0)}
    low, high = availability_limits(case.flexibilities, both_out, 0.5)
    stuck = problem.solve(case.point, p_low_kw=low, p_high_kw=high)
    assert not stuck.feasible and "no schedule" in stuck.message
    assert np.all(stuck.p_max_kw <= high + 1e-9)
