"""OCM per phase on an unbalanced feeder, judged by pandapower's ``runpp_3ph``.

A small feeder has single-phase chargers (two 7.4 kW on phase a at its end), a single-phase PV
inverter and unbalanced base load. Random schedules inside the three-phase bands keep every
phase voltage, every conductor and the unbalance limit in ``runpp_3ph``; the balanced model's
bands for the same devices let phase a fall below its limit. The same holds on a Kerber
feeder and on random unbalanced feeders with random single- and three-phase flexibilities.
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pandapower as pp
import pytest

from ocm.bands import OcmProblem
from ocm.case import case_from_tables
from ocm.grid.network_io import tables_from_pandapower
from ocm.optimizer import GaSettings
from ocm.phase_constraints import DEFAULT_MAX_UNBALANCE_PERCENT, CornerView, PhaseConstraints, phase_incidence
from ocm.problem import OperatingPoint
from ocm.status import grid_status
from tests.ocm.networks_3ph import kerber_unbalanced, random_unbalanced_feeder

V_MIN, V_MAX = 0.95, 1.05
SETTINGS = GaSettings(population=16, max_generations=12, patience=3)


pytestmark = pytest.mark.usefixtures("quiet_warnings")


def unbalanced_feeder(*, with_asymmetric_base: bool = True) -> pp.pandapowerNet:
    """A 20/0.4 kV Dyn5 transformer and a 9-bus cable feeder with single-phase devices."""
    net = pp.create_empty_network(sn_mva=1.0)
    mv = pp.create_bus(net, 20.0, name="MV")
    pp.create_ext_grid(net, mv, s_sc_max_mva=100.0, rx_max=0.1, x0x_max=1.0, r0x0_max=0.1)
    lv = pp.create_bus(net, 0.4, name="LV busbar", min_vm_pu=V_MIN, max_vm_pu=V_MAX)
    pp.create_transformer_from_parameters(
        net, mv, lv, sn_mva=0.25, vn_hv_kv=20.0, vn_lv_kv=0.4, vk_percent=4.0, vkr_percent=1.2,
        pfe_kw=0.6, i0_percent=0.24, shift_degree=150.0, vector_group="Dyn", vk0_percent=4.0,
        vkr0_percent=1.2, mag0_percent=100.0, mag0_rx=0.0, si0_hv_partial=0.9,
    )  # fmt: skip
    previous, buses = lv, []
    for k in range(9):
        bus = pp.create_bus(net, 0.4, name=f"house {k + 1}", min_vm_pu=V_MIN, max_vm_pu=V_MAX)
        pp.create_line_from_parameters(
            net, previous, bus, length_km=0.035, r_ohm_per_km=0.206, x_ohm_per_km=0.080, c_nf_per_km=210.0,
            max_i_ka=0.27, r0_ohm_per_km=0.824, x0_ohm_per_km=0.320, c0_nf_per_km=210.0,
        )  # fmt: skip
        previous = bus
        buses.append(bus)
        pp.create_load(net, bus, p_mw=0.004, q_mvar=0.001)
    if with_asymmetric_base:
        pp.create_asymmetric_load(net, buses[3], p_a_mw=0.0, p_b_mw=0.003, p_c_mw=0.0)
        pp.create_asymmetric_load(net, buses[6], p_a_mw=0.002, p_b_mw=0.0, p_c_mw=0.0, q_a_mvar=0.0005)
    for bus, phase, name in ((buses[-1], "a", "charger end"), (buses[-2], "a", "charger next door")):
        pp.create_load(
            net, bus, p_mw=0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.0074, name=name, phase=phase
        )
    pp.create_load(net, buses[4], p_mw=0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.011, name="heat pump")
    pp.create_sgen(
        net, buses[5], p_mw=0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.0046, name="PV", phase="c"
    )
    return net


def tables_of(net):
    tables = tables_from_pandapower(net)
    tables.asymmetric_load = net.asymmetric_load
    tables.asymmetric_sgen = net.asymmetric_sgen
    return tables


def runpp_3ph_schedule(net, case, schedule_kw) -> pp.pandapowerNet:
    """``net`` with the flexibilities at ``schedule_kw`` on their phases, solved by runpp_3ph."""
    run = copy.deepcopy(net)
    for flex, p_kw in zip(case.flexibilities, schedule_kw, strict=True):
        table = run[flex.element]
        table.loc[flex.index, "in_service"] = False
        sign = 1.0 if flex.element == "load" else -1.0
        power = [0.0, 0.0, 0.0]
        for phase in range(3):
            if flex.phase == "abc" or "abc".index(flex.phase) == phase:
                power[phase] = sign * p_kw / 1e3 / (3 if flex.phase == "abc" else 1)
        create = pp.create_asymmetric_load if flex.element == "load" else pp.create_asymmetric_sgen
        create(run, flex.bus, p_a_mw=power[0], p_b_mw=power[1], p_c_mw=power[2])
    pp.runpp_3ph(run, max_iteration=100)
    return run


def violations(run, tolerance=1e-6) -> list[str]:
    bus = run.res_bus_3ph.drop(index=run.ext_grid.bus)
    found = []
    for phase in "abc":
        vm = bus[f"vm_{phase}_pu"]
        if (vm < V_MIN - tolerance).any() or (vm > V_MAX + tolerance).any():
            found.append(f"phase {phase}: {vm.min():.4f}..{vm.max():.4f} pu")
    if (run.res_line_3ph["loading_percent"] > 100 + 1e-4).any():
        found.append(f"line loading {run.res_line_3ph['loading_percent'].max():.1f} %")
    if (bus["unbalance_percent"] > DEFAULT_MAX_UNBALANCE_PERCENT + 1e-4).any():
        found.append(f"unbalance {bus['unbalance_percent'].max():.2f} %")
    return found


@pytest.fixture(scope="module")
def solved():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = unbalanced_feeder()
        case = case_from_tables(tables_of(net))
        result = OcmProblem(case.grid, case.flexibilities, settings=SETTINGS, samples=200).solve(
            case.point, seed=3
        )
    return net, case, result


def test_the_case_is_three_phase_with_devices_on_their_phases(solved):
    _, case, _ = solved
    assert case.three_phase
    assert [f.phase for f in case.flexibilities] == ["a", "a", "abc", "c"]
    incidence = phase_incidence(case.flexibilities, case.grid)
    bus = case.grid.balanced.bus_positions([case.flexibilities[0].bus])[0]
    assert incidence[0, bus].tolist() == [1.0, 0.0, 0.0]
    assert np.allclose(incidence[2].sum(axis=0), 1 / 3)
    assert isinstance(OcmProblem(case.grid, case.flexibilities).constraints, PhaseConstraints)


def test_random_schedules_inside_the_three_phase_bands_keep_every_phase_in_runpp_3ph(solved):
    net, case, result = solved
    assert result.feasible and result.verification.passed, result.message
    width = result.p_max_kw - result.p_min_kw
    assert width.sum() > 5.0  # the bands leave real room
    rng = np.random.default_rng(8)
    schedules = result.p_min_kw + rng.random((25, len(width))) * width
    schedules[:2] = [result.p_max_kw, result.p_min_kw]
    for schedule in schedules:
        run = runpp_3ph_schedule(net, case, schedule)
        assert violations(run) == [], (schedule, violations(run))


def test_the_balanced_bands_would_break_phase_a_and_the_three_phase_bands_do_not():
    balanced_net = unbalanced_feeder(with_asymmetric_base=False)
    three_phase = case_from_tables(tables_of(balanced_net))
    balanced = case_from_tables(tables_of(balanced_net), three_phase=False)
    assert three_phase.three_phase and not balanced.three_phase
    balanced_bands = OcmProblem(balanced.grid, balanced.flexibilities, settings=SETTINGS).solve(
        balanced.point, seed=3
    )
    assert balanced_bands.feasible
    chargers = [0, 1]
    assert np.allclose(balanced_bands.p_max_kw[chargers], 7.4)  # the balanced model sees no problem
    run = runpp_3ph_schedule(balanced_net, balanced, balanced_bands.p_max_kw)
    broken = violations(run)
    assert any(text.startswith("phase a") or text.startswith("unbalance") for text in broken), broken
    assert run.res_bus_3ph["vm_a_pu"].min() < V_MIN

    phase_bands = OcmProblem(three_phase.grid, three_phase.flexibilities, settings=SETTINGS).solve(
        three_phase.point, seed=3
    )
    assert phase_bands.feasible and phase_bands.verification.passed
    assert phase_bands.p_max_kw[chargers].sum() < balanced_bands.p_max_kw[chargers].sum() - 1.0
    assert violations(runpp_3ph_schedule(balanced_net, three_phase, phase_bands.p_max_kw)) == []


def test_limits_are_reported_per_phase(solved):
    _, case, _ = solved
    constraints = PhaseConstraints(case.grid, case.flexibilities)
    both_chargers = np.array([7.4, 7.4, 0.0, 0.0])
    evaluation = constraints.evaluate(both_chargers, case.point)
    assert not evaluation.feasible[0]
    text = constraints.describe_violations(evaluation, 0)
    assert text.startswith(f"bus {case.flexibilities[0].bus} phase a: 0.94"), text
    assert evaluation.margins.shape == (1, constraints.n_constraints)


def test_a_bad_operating_point_is_refused_with_its_shape(solved):
    _, case, _ = solved
    constraints = PhaseConstraints(case.grid, case.flexibilities)

    with pytest.raises(ValueError, match="per bus and phase"):
        constraints.check_point(OperatingPoint(case.point.p_kw[:, 0], case.point.q_kvar[:, 0]))


def with_flexibilities(net, seed: int, count: int = 6) -> pp.pandapowerNet:
    """``net`` with its base load and generation scaled to a normal day (30 %), the slack at
    1 pu and ``count`` flexibilities at random LV buses: single-phase EV chargers and PV on
    random phases, three-phase heat pumps and batteries."""
    rng = np.random.default_rng(seed)
    for table in ("load", "sgen", "asymmetric_load", "asymmetric_sgen"):
        powers = [c for c in net[table].columns if c.startswith(("p_", "q_"))]
        net[table][powers] *= 0.3
    net.ext_grid[["vm_pu", "va_degree"]] = [1.0, 0.0]
    if "tap_pos" in net.trafo:
        net.trafo["tap_pos"] = net.trafo["tap_neutral"]
    lv = net.bus.index[net.bus["vn_kv"] < 1].to_numpy()[1:]
    for k in range(count):
        bus, kind, phase = (
            int(rng.choice(lv)),
            rng.choice(["ev", "hp", "pv", "battery"]),
            str(rng.choice(list("abc"))),
        )
        if kind == "ev":
            high = float(rng.choice([0.0037, 0.0074]))
            pp.create_load(
                net, bus, 0.0, controllable=True, min_p_mw=0.0, max_p_mw=high, phase=phase, name=f"EV {k}"
            )
        elif kind == "hp":
            pp.create_load(
                net, bus, 0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.009, name=f"heat pump {k}"
            )
        elif kind == "pv":
            pp.create_sgen(
                net, bus, 0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.0046, phase=phase, name=f"PV {k}",
                type="wye",
            )  # fmt: skip
        else:
            pp.create_storage(
                net, bus, 0.0, 0.01, controllable=True, min_p_mw=-0.005, max_p_mw=0.005, name=f"battery {k}"
            )
    return net


OTHER_FEEDERS = {
    "kerber_landnetz": lambda: with_flexibilities(kerber_unbalanced("landnetz"), seed=1),
    **{
        f"random_{seed}": (lambda seed=seed: with_flexibilities(random_unbalanced_feeder(seed), seed=seed))
        for seed in (0, 2, 5, 8, 11)
    },
}


@pytest.mark.parametrize("name", list(OTHER_FEEDERS))
def test_three_phase_bands_hold_in_runpp_3ph_on_other_feeders(name):
    net = OTHER_FEEDERS[name]()
    case = case_from_tables(tables_of(net))
    assert case.three_phase and {f.phase for f in case.flexibilities} - {"abc"}
    result = OcmProblem(case.grid, case.flexibilities, settings=SETTINGS, samples=200).solve(
        case.point, seed=3
    )
    assert result.feasible and result.verification.passed, result.message
    width = result.p_max_kw - result.p_min_kw
    assert width.sum() > 10.0, result.message  # real room, not a shrunk band
    rng = np.random.default_rng(8)
    schedules = result.p_min_kw + rng.random((8, len(width))) * width
    schedules[:2] = [result.p_max_kw, result.p_min_kw]
    for schedule in schedules:
        run = runpp_3ph_schedule(net, case, schedule)
        assert violations(run) == [], (schedule, violations(run))


def test_each_limit_is_judged_at_its_own_worst_corner(solved):
    _, case, _ = solved
    constraints = PhaseConstraints(case.grid, case.flexibilities)
    low = np.array([f.p_low_kw for f in case.flexibilities])
    high = np.array([f.p_high_kw for f in case.flexibilities])
    patterns = constraints.corner_patterns(case.point, low, high)
    assert patterns is not None and patterns.hurts_up[0].all() and len(patterns.hurts_up) >= 2
    view = CornerView(constraints, patterns, +1, low)
    candidate = (low + high) / 2
    judged = view.evaluate(candidate, case.point)
    for pattern, hurts_up in enumerate(patterns.hurts_up):
        corner = np.where(hurts_up, candidate, low)
        direct = constraints.evaluate(corner, case.point).margins[0]
        own = patterns.pattern_of == pattern
        assert np.allclose(judged.margins[0, own], direct[own])
    # the PV on phase c helps phase c but, at full output, pulls phase a down: phase a's limits
    # see it at its hardware minimum (full generation) while P_max is solved
    pv = [f.key for f in case.flexibilities].index("sgen.0")
    label = f"bus {case.flexibilities[0].bus} phase a"
    phase_a_low = next(
        c for c, (kind, ident) in enumerate(constraints.constraint_labels) if f"{kind} {ident}" == label
    )
    assert not patterns.hurts_up[patterns.pattern_of[phase_a_low], pv]


def test_the_status_shows_every_phase_and_the_binding_phase(solved):
    _, case, result = solved
    constraints = PhaseConstraints(case.grid, case.flexibilities)
    at_zero = np.zeros(len(case.flexibilities))
    status = grid_status(constraints, case.point, at_zero, (result.p_min_kw, result.p_max_kw))
    end = next(b for b in status["buses"] if b["bus"] == case.flexibilities[0].bus)
    assert len(end["vm_phase_pu"]) == 3 and end["vm_pu"] == min(end["vm_phase_pu"])
    assert 0 < end["unbalance_percent"] < DEFAULT_MAX_UNBALANCE_PERCENT
    assert V_MIN <= end["vm_pu_at_pmax"] < end["vm_pu"]  # the lowest phase, inside the limit
    # per phase the binding schedule may be a mixed corner, which the status does not list
    assert all(
        entry["value"] >= V_MIN - 1e-9 for entry in status["binding"] if entry["kind"] == "voltage_min"
    )
    json.dumps(status, allow_nan=False)
