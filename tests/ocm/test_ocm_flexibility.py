"""Flexibilities, limits and the operating point read from pandapower and native networks."""

from __future__ import annotations

import json

import numpy as np
import pandapower as pp
import pytest

from ocm.case import case_from_pandapower, load_case
from ocm.grid.errors import NetworkError
from ocm.problem import Limits
from tests.ocm.helpers import native_from_pandapower
from tests.ocm.networks import radial_feeder

pytestmark = pytest.mark.usefixtures("quiet_warnings")


def flexible_feeder():
    """Four-bus feeder; a charger (load), a PV (sgen) and a battery (storage) are flexible."""
    net = radial_feeder([0.1, 0.1, 0.1], [10.0, 5.0, 8.0])
    pp.create_load(net, 2, 0.007, name="charger", controllable=True, min_p_mw=0.0, max_p_mw=0.011)
    pp.create_sgen(net, 3, 0.004, name="pv", controllable=True, min_p_mw=0.0, max_p_mw=0.01)
    pp.create_sgen(net, 3, 0.003, name="fixed pv", scaling=0.5)
    pp.create_storage(
        net, 1, -0.002, max_e_mwh=0.05, name="battery", controllable=True, min_p_mw=-0.005, max_p_mw=0.005
    )
    return net


def _charger_at_a_switched_off_bus(net):
    off = pp.create_bus(net, 0.4, in_service=False)
    pp.create_line(net, 4, off, 0.05, "NAYY 4x150 SE")
    pp.create_load(net, off, 0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.011)


def test_flexibilities_are_in_load_convention_loads_then_sgens_then_storages():
    case = case_from_pandapower(flexible_feeder())
    described = [(f.element, f.index, f.bus, f.name, f.p_low_kw, f.p_high_kw) for f in case.flexibilities]
    assert described == [
        ("load", 3, 2, "charger", 0.0, 11.0),
        ("sgen", 0, 3, "pv", -10.0, 0.0),  # generation is negative load
        ("storage", 0, 1, "battery", -5.0, 5.0),  # charging is consumption
    ]
    assert all(f.priority_group == 0 for f in case.flexibilities)
    assert np.signbit(case.flexibilities[1].p_high_kw) == np.False_  # 0.0, not -0.0


def test_the_operating_point_leaves_out_the_flexibilities_active_power_only():
    net = flexible_feeder()
    case = case_from_pandapower(net)
    bus = {b: k for k, b in enumerate(case.grid.bus_ids)}
    # bus 3: load 5 kW and the fixed PV's 3 kW × 0.5; the flexible PV's 4 kW is not counted
    assert case.point.p_kw[bus[3]] == pytest.approx(5.0 - 1.5)
    assert case.point.p_kw[bus[2]] == pytest.approx(10.0)  # without the charger's 7 kW
    assert case.point.p_kw[bus[1]] == pytest.approx(0.0)  # without the battery's -2 kW
    np.testing.assert_allclose(case.point.q_kvar, case.grid.base_load_kvar)


def test_unset_voltage_limits_get_the_defaults():
    net = flexible_feeder()
    net.bus["min_vm_pu"] = [0.0, 0.9, np.nan, 0.93, 0.0]
    net.bus["max_vm_pu"] = [2.0, 1.1, np.nan, 1.07, 2.0]
    net.line["max_loading_percent"] = [80.0, np.nan, 100.0]
    limits = Limits.from_grid(case_from_pandapower(net).grid)
    np.testing.assert_allclose(limits.v_min_pu, [0.95, 0.9, 0.95, 0.93, 0.95])
    np.testing.assert_allclose(limits.v_max_pu, [1.05, 1.1, 1.05, 1.07, 1.05])
    np.testing.assert_allclose(limits.line_max_loading_percent, [80.0, 100.0, 100.0])


def _pv_without_limits(net):
    net.sgen["min_p_mw"] = np.nan


def _inverted_charger(net):
    net.load.loc[3, "min_p_mw"] = 0.02


def _nothing_controllable(net):
    for element in ("load", "sgen", "storage"):
        net[element]["controllable"] = False


def _fractional_group(net):
    net.storage["priority_group"] = 1.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_pv_without_limits, "sgen 0 is controllable but min_p_mw is missing"),
        (_inverted_charger, r"load 3: min_p_mw \(0.02\) exceeds max_p_mw \(0.011\)"),
        (_nothing_controllable, "no flexibilities"),
        (_fractional_group, "storage 0: priority_group must be a whole number"),
        (_charger_at_a_switched_off_bus, "load 4 is controllable but its bus 5 is out of service"),
    ],
)
def test_bad_flexibilities_are_refused_naming_the_element(change, message):
    net = flexible_feeder()
    change(net)
    with pytest.raises(NetworkError, match=message):
        case_from_pandapower(net)


def test_native_networks_carry_flexibilities_and_priority_groups(tmp_path):
    data = native_from_pandapower(flexible_feeder())
    data["loads"][-1].update(controllable=True, min_p_kw=0.0, max_p_kw=11.0, priority_group=1)
    data["sgens"][0].update(controllable=True, min_p_kw=0.0, max_p_kw=10.0)
    path = tmp_path / "native.json"
    path.write_text(json.dumps(data))
    case = load_case(path)
    assert [(f.key, f.p_low_kw, f.p_high_kw, f.priority_group) for f in case.flexibilities] == [
        ("load.3", 0.0, 11.0, 1),
        ("sgen.0", -10.0, 0.0, 0),
    ]
