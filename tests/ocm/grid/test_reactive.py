"""Inverter reactive power control: the characteristics against pandapower's curves, the network
columns in both file formats, clear errors, and the fixed-point load flow."""

from __future__ import annotations

import json

import numpy as np
import pandapower as pp
import pytest
from pandapower.control.controller.DERController.DERBasics import CosphiPCurve, QVCurve

import ocm.problem
from ocm.case import case_from_tables, load_case
from ocm.grid.errors import NetworkError
from ocm.grid.helm import HelmSolver
from ocm.grid.network_io import tables_from_pandapower
from ocm.grid.reactive import InverterState, solve_with_controls
from ocm.problem import COLLAPSE_VIOLATION, GridConstraints, OperatingPoint
from tests.ocm.helpers import native_from_pandapower
from tests.ocm.networks import radial_feeder

pytestmark = pytest.mark.usefixtures("quiet_warnings")


def pv_feeder(modes=("qv", "cosphi_p", "qv"), pv_kw=(40.0, 30.0, 45.0)):
    """Three houses with PV whose inverters are controlled (rated 50 kVA), light load."""
    net = radial_feeder([0.15, 0.15, 0.15], [2.0, 2.0, 2.0], pv_kw=pv_kw, std_type="NAYY 4x50 SE")
    net.sgen["sn_mva"] = 0.05
    net.sgen["q_control"] = list(modes)
    return net


def case_of(net):
    return case_from_tables(tables_from_pandapower(net), allow_no_flexibility=True)


def test_the_characteristics_are_pandapowers_curves():
    net = pv_feeder(modes=("cosphi_p", "qv", "qv"))
    net.sgen.loc[2, ["qv_v1_pu", "qv_v2_pu", "qv_v3_pu", "qv_v4_pu", "qv_q_max_pu"]] = [
        0.9, 0.97, 1.03, 1.1, 0.33,
    ]  # fmt: skip
    controls = case_of(net).controls
    s = 50.0
    p_gen = np.linspace(0.0, 49.0, 50)
    cosphi = CosphiPCurve(p_points_pu=[0, 0.5, 1.0], cosphi_points=[1, 1, -0.9])
    cap = np.sqrt(s**2 - p_gen**2)  # the apparent power caps it (pandapower: saturate_sn_mva)
    expected = np.clip(cosphi.step(p_gen / s) * s, -cap, cap)  # generator convention
    assert expected.min() < -10.0 and (expected[:26] == 0).all()
    p = np.stack([-p_gen, -p_gen, -p_gen], axis=1)
    ours = controls.q_kvar(p, np.ones_like(p))
    np.testing.assert_allclose(-ours[:, 0], expected, atol=1e-9)
    vm = np.linspace(0.85, 1.15, 61)
    for column, curve in (
        (1, QVCurve([0.92, 0.98, 1.02, 1.08], [0.44, 0, 0, -0.44])),
        (2, QVCurve([0.9, 0.97, 1.03, 1.1], [0.33, 0, 0, -0.33])),
    ):
        ours = controls.q_kvar(np.full((61, 3), -10.0), np.repeat(vm[:, None], 3, axis=1))
        np.testing.assert_allclose(-ours[:, column], curve.step(vm) * s, atol=1e-9)


def test_the_apparent_power_caps_q_and_a_charging_battery_runs_at_cosphi_one():
    net = pv_feeder(modes=("qv", "cosphi_p", "qv"))
    pp.create_storage(net, 2, 0.0, max_e_mwh=0.1, sn_mva=0.02, q_control="cosphi_p")
    controls = case_of(net).controls
    p = np.array([[-48.0, -50.0, 30.0, 15.0], [-20.0, -50.0, -30.0, -20.0]])  # load convention
    q = controls.q_kvar(p, np.full_like(p, 1.12))
    assert q[0, 0] == pytest.approx(np.sqrt(50**2 - 48**2))  # Q(V) wants 22 kvar, S allows 14
    assert q[0, 1] == 0.0  # cos φ(P) at P = S: no room
    assert q[0, 2] == pytest.approx(22.0)  # consuming (within S): Q(V) still absorbs 0.44 S
    assert q[0, 3] == 0.0  # a charging battery under cos φ(P)
    assert q[1, 0] == pytest.approx(22.0)  # absorbs 0.44 S
    assert q[1, 3] == 0.0  # a discharging battery at P = S


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("q_control", "voltvar", "sgen 1: q_control must be one of"),
        ("sn_mva", np.nan, "sgen 1: q_control 'qv' needs sn_mva"),
        ("sn_mva", 0.0, "sgen 1: q_control 'qv' needs sn_mva"),
        ("qv_v2_pu", 1.05, "sgen 1: qv_v1_pu < qv_v2_pu ≤ qv_v3_pu < qv_v4_pu"),
        ("qv_q_max_pu", 1.5, "sgen 1: qv_q_max_pu must be in (0, 1]"),
        ("qv_v4_pu", "high", "sgen 1: qv_v4_pu must be a finite number"),
    ],
)
def test_bad_control_data_raise_naming_the_element_and_column(column, value, message):
    net = pv_feeder(modes=("cosphi_p", "qv", "qv"))
    net.sgen[column] = net.sgen[column].astype(object) if column in net.sgen else None
    net.sgen.loc[1, column] = value
    with pytest.raises(NetworkError, match=message.replace("(", r"\(").replace(")", r"\)")):
        case_of(net)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("cosphi_min", 0.0, r"sgen 0: cosphi_min must be in \(0, 1\]"),
        ("cosphi_p_start_pu", 1.2, "sgen 0: cosphi_p_start_pu"),
    ],
)
def test_bad_cosphi_parameters_raise(column, value, message):
    net = pv_feeder(modes=("cosphi_p", "qv", "qv"))
    net.sgen.loc[0, column] = value
    with pytest.raises(NetworkError, match=message):
        case_of(net)


def test_q_control_on_a_load_is_an_error():
    net = pv_feeder()
    net.load["q_control"] = ["", "qv", ""]
    with pytest.raises(NetworkError, match="load 1: q_control is for inverters only"):
        case_of(net)


def test_out_of_service_inverters_and_empty_modes_are_not_controlled():
    net = pv_feeder(modes=("qv", "", None))
    net.sgen.loc[0, "in_service"] = False
    assert case_of(net).controls is None


def test_the_columns_survive_pandapower_json_and_the_native_format(tmp_path):
    net = pv_feeder(modes=("qv", "cosphi_p", ""))
    net.sgen["cosphi_min"] = [np.nan, 0.95, np.nan]
    pp.create_storage(net, 3, -0.01, max_e_mwh=0.1, sn_mva=0.025, q_control="qv", qv_q_max_pu=0.3)
    reference = case_of(net).controls
    path = tmp_path / "net.json"
    pp.to_json(net, str(path))
    native = native_from_pandapower(net)
    for key, table in (("sgens", "sgen"), ("storages", "storage")):
        for item in native[key]:
            row = net[table].loc[item["index"]]
            item["sn_kva"] = float(row["sn_mva"]) * 1e3
            for column in ("q_control", "cosphi_min", "qv_q_max_pu"):
                if column in row and isinstance(row[column], str | float) and row[column] == row[column]:
                    item[column] = row[column]
    native_path = tmp_path / "net.lec.json"
    native_path.write_text(json.dumps(native))
    for read in (
        load_case(path, allow_no_flexibility=True),
        load_case(native_path, allow_no_flexibility=True),
    ):
        controls = read.controls
        assert controls.keys == ["sgen.0", "sgen.1", "storage.0"]
        np.testing.assert_allclose(controls.s_rated_kva, [50.0, 50.0, 25.0])
        np.testing.assert_allclose(controls.cosphi_min[1], 0.95)
        np.testing.assert_allclose(controls.qv_q_max_pu, reference.qv_q_max_pu)
        np.testing.assert_allclose(read.point.inverters.p_kw, [-40.0, -30.0, -10.0])


def test_q_of_the_fixed_point_is_the_characteristic_at_the_solved_voltage():
    case = case_of(pv_feeder())
    constraints = GridConstraints(case.grid, ())
    evaluation = constraints.evaluate(np.zeros((1, 0)), case.point)
    controls = case.controls
    vm = evaluation.bus_vm_pu[0, controls.bus_position]
    assert vm.max() > 1.03  # Q(V) acts
    expected = controls.q_kvar(case.point.inverters.p_kw, vm)
    np.testing.assert_allclose(evaluation.inverter_q_kvar[0], expected, atol=1e-3)
    assert evaluation.inverter_q_kvar[0, 0] > 1.0  # absorbing
    uncontrolled = GridConstraints(case.grid, ()).solver.solve(
        case.point.p_kw, case.grid.base_load_kvar
    )  # the table's Q (0): higher voltages
    assert uncontrolled.vm_pu[0].max() > evaluation.bus_vm_pu[0].max() + 1e-3


def test_a_control_that_does_not_settle_counts_as_collapse(monkeypatch):
    case = case_of(pv_feeder())
    solver = HelmSolver(case.grid)
    p = np.atleast_2d(case.point.p_kw)
    q = np.atleast_2d(case.point.q_kvar)
    one = solve_with_controls(solver, p, q, case.controls, case.point.inverters.p_kw, max_iterations=1)
    assert not one.settled[0] and one.result.converged[0]
    full = solve_with_controls(solver, p, q, case.controls, case.point.inverters.p_kw)
    assert full.settled[0] and full.iterations[0] <= 8
    constraints = GridConstraints(case.grid, (), solver=solver)
    original = ocm.problem.solve_with_controls
    monkeypatch.setattr(
        ocm.problem, "solve_with_controls", lambda *a, **k: original(*a, **k, max_iterations=1)
    )
    evaluation = constraints.evaluate(np.zeros((1, 0)), case.point)
    assert evaluation.violation[0] == COLLAPSE_VIOLATION
    assert "did not settle" in constraints.describe_violations(evaluation, 0)


def test_scenarios_and_flexible_inverters():
    net = pv_feeder(modes=("qv", "qv", "cosphi_p"))
    net.sgen["controllable"] = [True, False, False]
    net.sgen["min_p_mw"], net.sgen["max_p_mw"] = 0.0, 0.045
    case = case_from_tables(tables_from_pandapower(net))
    assert [f.key for f in case.flexibilities] == ["sgen.0"]
    constraints = GridConstraints(case.grid, case.flexibilities)
    x = np.array([[-40.0], [-10.0]])
    single = constraints.evaluate(x, case.point)
    # the flexibility's Q follows its scheduled P: at -40 kW it is the table's own case
    net.sgen["controllable"] = False
    fixed = case_of(net)
    reference = GridConstraints(fixed.grid, ()).evaluate(np.zeros((1, 0)), fixed.point)
    np.testing.assert_allclose(single.bus_vm_pu[0], reference.bus_vm_pu[0], atol=1e-8)
    assert single.inverter_q_kvar[1, 0] < single.inverter_q_kvar[0, 0]
    # two scenarios: the second with more PV on the fixed inverters
    point = case.point
    p2 = np.stack([point.p_kw, point.p_kw])
    bus = case.grid.bus_positions([net.sgen.loc[2, "bus"]])[0]
    p2[1, bus] -= 5.0
    inverter_p = np.stack([point.inverters.p_kw, point.inverters.p_kw + np.array([0.0, 0.0, -5.0])])
    controls = point.inverters.controls
    two = OperatingPoint(p2, np.stack([point.q_kvar] * 2), InverterState(controls, inverter_p))
    constraints.check_point(two)
    evaluation = constraints.evaluate(x, two)
    np.testing.assert_allclose(evaluation.bus_vm_pu, single.bus_vm_pu, atol=1e-10)  # scenario 0
    assert (evaluation.bus_vm_max_pu >= single.bus_vm_pu - 1e-12).all()
    assert (evaluation.bus_vm_max_pu.max(axis=1) > single.bus_vm_pu.max(axis=1)).all()
    with pytest.raises(ValueError, match=r"inverters\.p_kw"):
        constraints.check_point(
            OperatingPoint(point.p_kw, point.q_kvar, InverterState(controls, inverter_p[:, :2]))
        )
