"""Inverter reactive power control (cos φ(P), Q(V)) against pandapower with the same control.

pandapower runs its own ``DERController`` (``QModelCosphiPCurve``, ``QModelQVCurve``, saturated
at the inverter's ``sn_mva`` with active power priority) for the sgens; its controller assumes
generator convention and non-negative P, so the storages (load convention, discharging negative)
get a transparent outer loop around ``run_control`` with pandapower's own curve objects. On
CIGRE LV, the Kerber Dorfnetz and a SimBench LV grid the voltages and every inverter's Q agree
with OCM's load flow; with Q(V), the bands of over-voltage-limited PV are wider, and schedules
inside them, run through pandapower with the control, keep every limit.
"""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
from pandapower.control import DERController, run_control
from pandapower.control.controller.DERController.DERBasics import CosphiPCurve, QVCurve
from pandapower.control.controller.DERController.QModels import QModelCosphiPCurve, QModelQVCurve

from ocm.bands import OcmProblem
from ocm.case import case_from_pandapower, case_from_tables
from ocm.examples import cigre_lv_with_flexibilities
from ocm.grid.network_io import tables_from_pandapower
from ocm.grid.reactive import COSPHI_P_DEFAULTS, QV_DEFAULTS
from ocm.problem import GridConstraints, Limits
from ocm.seeding import seeded_python_random

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("quiet_warnings")]
V_AGREEMENT_PU = 1e-5
Q_AGREEMENT_KVAR = 0.01
Q_ERROR_MVAR = 1e-9


def _parameters(row, defaults: dict) -> dict:
    return {c: float(row[c]) if c in row and row[c] == row[c] else d for c, d in defaults.items()}


def _curve(row):
    """pandapower's curve for a row: a function of (P_gen pu, V) giving Q_gen pu."""
    if row["q_control"] == "cosphi_p":
        c = _parameters(row, COSPHI_P_DEFAULTS)
        curve = CosphiPCurve(
            p_points_pu=[0.0, c["cosphi_p_start_pu"], c["cosphi_p_end_pu"]],
            cosphi_points=[1.0, 1.0, -c["cosphi_min"]],
        )
        return "cosphi_p", curve
    c = _parameters(row, QV_DEFAULTS)
    vm = [c[f"qv_v{k}_pu"] for k in range(1, 5)]
    return "qv", QVCurve(vm, [c["qv_q_max_pu"], 0.0, 0.0, -c["qv_q_max_pu"]])


def run_with_controls(net, q_error_mvar: float = Q_ERROR_MVAR) -> None:
    """pandapower's load flow with the network's inverter controls (results in ``net.res_*``)."""
    net.controller = net.controller.iloc[:0]
    for index, row in net.sgen[net.sgen.get("q_control", "").fillna("").ne("")].iterrows():
        mode, curve = _curve(row)
        q_model = QModelCosphiPCurve(curve) if mode == "cosphi_p" else QModelQVCurve(curve)
        DERController(
            net, [index], q_model=q_model, saturate_sn_mva=float(row["sn_mva"]), q_prio=False,
            damping_coef=1 if mode == "cosphi_p" else 2, max_q_error=q_error_mvar, max_p_error=1e-9,
        )  # fmt: skip
    storages = net.storage[net.storage.get("q_control", "").fillna("").ne("")] if len(net.storage) else []
    for _ in range(200):
        run_control(net, max_iter=300, tolerance_mva=1e-10, max_iteration=30)
        if not len(storages):
            return
        target = []
        for index, row in storages.iterrows():
            sn, p_gen = float(row["sn_mva"]), -float(net.storage.at[index, "p_mw"])
            mode, curve = _curve(row)
            vm = float(net.res_bus.at[row["bus"], "vm_pu"])
            q_gen = curve.step(max(p_gen, 0.0) / sn) * sn if mode == "cosphi_p" else curve.step(vm) * sn
            cap = np.sqrt(max(sn**2 - p_gen**2, 0.0))
            target.append(-float(np.clip(q_gen, -cap, cap)))
        now = net.storage.loc[storages.index, "q_mvar"].to_numpy(float)
        if np.abs(np.array(target) - now).max() <= q_error_mvar:
            return
        net.storage.loc[storages.index, "q_mvar"] = now + (np.array(target) - now) / 2
    raise AssertionError("the storages' control did not settle in pandapower")


def _add_inverters(net, buses, rng, storages: int = 2):
    """PV at ``buses`` (Q(V) and cos φ(P) in turn), then batteries: one discharging under Q(V),
    one discharging under cos φ(P), further ones charging under Q(V)."""
    for k, bus in enumerate(buses):
        p_mw = float(rng.choice([0.02, 0.03, 0.04]))
        pp.create_sgen(net, bus, p_mw, sn_mva=p_mw / 0.9, name=f"PV {k}", q_control=("qv", "cosphi_p")[k % 2])
    for k in range(storages):
        bus = buses[-1 - k]
        p_mw = (-0.02, -0.015, 0.01)[min(k, 2)]
        pp.create_storage(
            net, bus, p_mw, max_e_mwh=0.1, sn_mva=0.025, name=f"battery {k}",
            q_control="cosphi_p" if k == 1 else "qv",
        )  # fmt: skip
    return net


def cigre():
    net = pn.create_cigre_network_lv()
    net.load["scaling"] = 0.1
    rng = np.random.default_rng(3)
    lv = net.bus.index[(net.bus["vn_kv"] < 1) & net.bus.index.isin(net.load["bus"])]
    return _add_inverters(net, rng.choice(lv, 8, replace=False), rng, storages=3)


def kerber():
    with seeded_python_random(2):
        net = pn.create_kerber_dorfnetz()
    net.load["scaling"] = 0.2
    rng = np.random.default_rng(4)
    houses = net.load["bus"].unique()
    return _add_inverters(net, rng.choice(houses, 12, replace=False), rng, storages=3)


def simbench_rural():
    simbench = pytest.importorskip("simbench")
    net = simbench.get_simbench_net("1-LV-rural1--0-sw")
    net.sgen["controllable"] = False
    net.load["scaling"] = 0.2
    net.sgen["p_mw"] = 0.85 * net.sgen["sn_mva"]
    net.sgen["q_mvar"] = 0.0
    net.sgen["q_control"] = ["qv" if k % 3 else "cosphi_p" for k in range(len(net.sgen))]
    rng = np.random.default_rng(5)
    houses = net.load["bus"].unique()
    for k, bus in enumerate(rng.choice(houses, 2, replace=False)):
        pp.create_storage(
            net, bus, (-0.02, 0.01)[k], max_e_mwh=0.1, sn_mva=0.025, q_control=("qv", "cosphi_p")[k]
        )
    return net


GRIDS = {"cigre": cigre, "kerber": kerber, "simbench_rural1": simbench_rural}


def ocm_flow(net):
    """OCM's load flow of the net's operating point: bus voltages and each inverter's Q (kvar,
    load convention), with the controls' keys."""
    case = case_from_tables(tables_from_pandapower(net), allow_no_flexibility=True)
    evaluation = GridConstraints(case.grid, ()).evaluate(np.zeros((1, 0)), case.point)
    assert evaluation.converged[0]
    return case, evaluation


@pytest.mark.parametrize("name", list(GRIDS))
def test_voltages_and_q_per_inverter_agree_with_pandapower(name):
    net = GRIDS[name]()
    case, evaluation = ocm_flow(net)
    controls = case.controls
    assert len(controls) >= 6
    run_with_controls(net)
    vm = net.res_bus["vm_pu"].loc[case.grid.bus_ids].to_numpy()
    assert np.abs(evaluation.bus_vm_pu[0] - vm).max() <= V_AGREEMENT_PU
    q_pandapower = np.array(
        [
            -net.res_sgen.at[i, "q_mvar"] * 1e3 if e == "sgen" else net.res_storage.at[i, "q_mvar"] * 1e3
            for e, i in zip(controls.element, controls.index, strict=True)
        ]
    )
    assert np.abs(evaluation.inverter_q_kvar[0] - q_pandapower).max() <= Q_AGREEMENT_KVAR
    # the control matters: Q(V) is outside its dead band somewhere, cos φ(P) absorbs
    qv_q = evaluation.inverter_q_kvar[0][controls.voltage_dependent]
    assert np.abs(qv_q).max() > 1.0
    assert evaluation.inverter_q_kvar[0][~controls.voltage_dependent].max() > 1.0


def pv_heavy(mode: str):
    """CIGRE LV with 12 flexibilities and PV up to 120 kW (over-voltage binds P_min); the PV
    and battery inverters (rated at their power / 0.9) under ``mode``."""
    net = cigre_lv_with_flexibilities(count=12, seed=4, load_scaling=0.2)
    net.sgen["max_p_mw"] *= 4
    for table in (net.sgen, net.storage):
        table["sn_mva"] = table["max_p_mw"] / 0.9
        table["q_control"] = mode
    return net


def _set_schedule(net, flexibilities, x_kw) -> None:
    for flexibility, value in zip(flexibilities, x_kw, strict=True):
        table = net[flexibility.element]
        sign = -1.0 if flexibility.element == "sgen" else 1.0
        table.at[flexibility.index, "p_mw"] = sign * value / 1e3
        table.at[flexibility.index, "scaling"] = 1.0


def test_q_v_widens_over_voltage_limited_pv_bands_and_they_hold_in_pandapower():
    plain_net, controlled_net = pv_heavy(""), pv_heavy("qv")
    plain_case = case_from_pandapower(plain_net)
    plain = OcmProblem(plain_case.grid, plain_case.flexibilities).solve(plain_case.point, seed=11)
    case = case_from_pandapower(controlled_net)
    problem = OcmProblem(case.grid, case.flexibilities)
    controlled = problem.solve(case.point, seed=11)
    assert plain.feasible and controlled.feasible and controlled.verification.passed
    assert plain.v_max_pu_at_pmin == pytest.approx(1.05, abs=1e-5)  # over-voltage binds P_min
    widening = plain.p_min_kw.sum() - controlled.p_min_kw.sum()
    assert widening >= 10.0  # kW more generation (or less consumption) at the P_min corner
    assert controlled.p_max_kw.sum() >= plain.p_max_kw.sum() - 0.5

    limits = Limits.from_grid(case.grid)
    rng = np.random.default_rng(8)
    width = controlled.p_max_kw - controlled.p_min_kw
    schedules = controlled.p_min_kw + rng.random((14, len(width))) * width
    schedules[:2] = [controlled.p_min_kw, controlled.p_max_kw]
    constrained = GridConstraints(case.grid, ()).voltage_buses  # positions: all but the slack's
    buses = case.grid.bus_ids[constrained]
    v_min, v_max = limits.v_min_pu[constrained], limits.v_max_pu[constrained]
    for x in schedules:
        _set_schedule(controlled_net, case.flexibilities, x)
        run_with_controls(controlled_net, q_error_mvar=1e-8)
        vm = controlled_net.res_bus["vm_pu"].loc[buses].to_numpy()
        assert (vm >= v_min - 1e-6).all() and (vm <= v_max + 1e-6).all(), (x, vm.min(), vm.max())
        for element in ("line", "trafo"):
            loading = controlled_net[f"res_{element}"]["loading_percent"].to_numpy()
            limit = controlled_net[element].get("max_loading_percent", 100.0)
            assert (loading <= np.nan_to_num(np.asarray(limit, dtype=float), nan=100.0) + 1e-4).all()
