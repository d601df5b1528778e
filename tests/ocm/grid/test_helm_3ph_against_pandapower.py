"""Three-phase HELM against ``pandapower.runpp_3ph``: phase voltages, unbalance, phase and
neutral currents and per-phase loadings of lines and transformers on CIGRE LV, a Kerber feeder
and random unbalanced feeders; no solution past voltage collapse; batched scenarios."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pandapower as pp
import pytest
from pandapower.powerflow import LoadflowNotConverged

from ocm.grid.helm_3ph import Helm3phSolver
from ocm.grid.network_io import tables_from_pandapower
from ocm.grid.three_phase import build_grid_3ph
from tests.ocm.networks_3ph import (
    PHASES,
    Reference3ph,
    cigre_lv_unbalanced,
    collapsing_feeder,
    kerber_unbalanced,
    phase_voltages,
    random_unbalanced_feeder,
    run_pandapower_3ph,
)

VOLTAGE_TOLERANCE_PU = 1e-6  # |V_ours - V_pandapower| per phase
UNBALANCE_TOLERANCE_PERCENT = 1e-4
CURRENT_RTOL, CURRENT_ATOL_KA = 1e-5, 1e-8
LOADING_RTOL, LOADING_ATOL_PERCENT = 1e-5, 1e-5
RANDOM_SEEDS = range(20)
ASYMMETRIC_POWER_COLUMNS = [f"{pq}_{x}_{unit}" for x in PHASES for pq, unit in (("p", "mw"), ("q", "mvar"))]
# the nets are only read (the reference runs on a copy): build each once
feeder = functools.cache(random_unbalanced_feeder)


pytestmark = pytest.mark.usefixtures("quiet_warnings")


def solve(net, factors=(1.0,)):
    """Our three-phase load flow of ``net``, its loads scaled by each factor (one scenario each)."""
    grid3 = build_grid_3ph(tables_from_pandapower(net))
    f = np.asarray(factors, float)[:, None, None]
    result = Helm3phSolver(grid3).solve(
        grid3.base_load_kw * f, grid3.base_load_kvar * f, grid3.base_delta_kw * f, grid3.base_delta_kvar * f
    )
    return grid3, result


def assert_matches(grid3, result, reference: Reference3ph, scenario: int = 0) -> None:
    """Scenario ``scenario`` of our result agrees with pandapower's res_*_3ph tables."""
    g = grid3.balanced
    assert result.converged[scenario], result.reasons[scenario]
    bus = reference.bus.loc[g.bus_ids]
    ours = result.vm_pu[scenario] * np.exp(1j * np.deg2rad(result.va_degree[scenario]))
    error = np.abs(ours - phase_voltages(bus))
    worst = np.unravel_index(np.argmax(error), error.shape)
    assert error.max() <= VOLTAGE_TOLERANCE_PU, (
        f"bus {g.bus_ids[worst[0]]} phase {PHASES[worst[1]]}: |dV| = {error.max():.2e} pu"
    )
    for k, x in enumerate(PHASES):
        np.testing.assert_allclose(
            result.vm_pu[scenario][:, k], bus[f"vm_{x}_pu"], rtol=0, atol=VOLTAGE_TOLERANCE_PU
        )
    np.testing.assert_allclose(
        result.unbalance_percent[scenario], bus["unbalance_percent"], rtol=0, atol=UNBALANCE_TOLERANCE_PERCENT
    )

    line = reference.line.loc[g.line_ids]
    currents = {
        "": result.line_current_ka[scenario],
        "_from": result.line_current_from_ka[scenario],
        "_to": result.line_current_to_ka[scenario],
    }
    for k, x in enumerate(PHASES):
        for end, values in currents.items():
            column = f"i_{x}{end}_ka"
            np.testing.assert_allclose(
                values[:, k], line[column], rtol=CURRENT_RTOL, atol=CURRENT_ATOL_KA, err_msg=f"line {column}"
            )
        assert_loading(result.line_loading_percent[scenario][:, k], line[f"loading_{x}_percent"], f"line {x}")
    neutral = {
        "i_n_from_ka": result.line_neutral_from_ka,
        "i_n_to_ka": result.line_neutral_to_ka,
        "i_n_ka": result.line_neutral_ka,
    }
    for column, values in neutral.items():
        np.testing.assert_allclose(
            values[scenario], line[column], rtol=CURRENT_RTOL, atol=CURRENT_ATOL_KA, err_msg=column
        )
    assert_loading(result.line_loading_percent[scenario].max(axis=1), line["loading_percent"], "line")

    trafo = reference.trafo.loc[g.trafo_ids]
    for k, x in enumerate(PHASES):
        assert_loading(
            result.trafo_loading_percent[scenario][:, k], trafo[f"loading_{x}_percent"], f"trafo {x}"
        )
    assert_loading(result.trafo_loading_percent[scenario].max(axis=1), trafo["loading_percent"], "trafo")


def assert_loading(ours, theirs, what: str) -> None:
    np.testing.assert_allclose(
        ours, theirs, rtol=LOADING_RTOL, atol=LOADING_ATOL_PERCENT, err_msg=f"{what} loading"
    )


def scaled(net, factor: float):
    """A copy of ``net`` with every load and generator scaled by ``factor`` (pandapower's way)."""
    net = copy.deepcopy(net)
    for table in ("load", "sgen", "asymmetric_load", "asymmetric_sgen"):
        net[table]["scaling"] = net[table]["scaling"] * factor
    return net


@pytest.mark.parametrize(
    "make", [cigre_lv_unbalanced, kerber_unbalanced], ids=["cigre-lv", "kerber-landnetz"]
)
def test_reference_networks_match_pandapower(make):
    net = make()
    grid3, result = solve(net)
    assert_matches(grid3, result, run_pandapower_3ph(net))
    assert result.unbalance_percent[0].max() > 1.0  # the nets are markedly unbalanced


def test_chargers_on_one_phase_lower_that_phase_at_the_feeder_end():
    net = kerber_unbalanced()
    grid3, result = solve(net)
    end = net.asymmetric_load.loc[net.asymmetric_load["name"] == "charger 1", "bus"].item()
    vm = result.vm_pu[0][grid3.balanced.bus_positions([end])[0]]
    assert vm[0] < vm[1] and vm[0] < vm[2]


def remove_elements_at(net, bus: int) -> None:
    for table in ("load", "sgen", "asymmetric_load", "asymmetric_sgen"):
        net[table] = net[table][net[table]["bus"] != bus]


def open_line_switch(net):
    """An open switch at the far end of line 13: the line hangs from its near end."""
    far = net.line.at[13, "to_bus"]
    remove_elements_at(net, far)
    pp.create_switch(net, far, 13, et="l", closed=False)


def line_out_of_service(net):
    """Line 3 out of service: the load-free bus behind it is de-energised (NaN results)."""
    net.line.at[3, "in_service"] = False
    remove_elements_at(net, net.line.at[3, "to_bus"])


def fused_bus(net):
    """A bus joined to the LV busbar by a closed bus-bus switch, with a phase-b load."""
    bus = pp.create_bus(net, 0.4)
    pp.create_switch(net, net.trafo["lv_bus"].iloc[0], bus, et="b")
    pp.create_asymmetric_load(net, bus, p_b_mw=0.005, q_b_mvar=0.001)


def set_value(table: str, column: str, value, rows=None):
    def change(net):
        net[table].loc[net[table].index if rows is None else rows, column] = value

    return change


def changes(*steps):
    def change(net):
        for step in steps:
            step(net)

    return change


FEATURES = {
    "parallel-line": set_value("line", "parallel", 2, rows=[2]),
    "parallel-trafo": set_value("trafo", "parallel", 2),
    "asymmetric-out-of-service": set_value("asymmetric_load", "in_service", False, rows=[0, 2]),
    "asymmetric-scaling": set_value("asymmetric_load", "scaling", 0.7),
    "sgen-scaling": set_value("asymmetric_sgen", "scaling", 1.5),
    "open-line-switch": open_line_switch,
    "line-out-of-service": line_out_of_service,
    "fused-bus": fused_bus,
    "ext-grid-set-point": changes(
        set_value("ext_grid", "vm_pu", 1.03), set_value("ext_grid", "va_degree", 10.0)
    ),
    "lv-tap": changes(set_value("trafo", "tap_side", "lv"), set_value("trafo", "tap_pos", -2)),
    "sn-mva": lambda net: setattr(net, "sn_mva", 0.4),
}


KNOWN_DIFFERENCES: dict[str, str] = {}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(change, marks=pytest.mark.xfail(reason=KNOWN_DIFFERENCES[name], strict=False))
        if name in KNOWN_DIFFERENCES
        else change
        for name, change in FEATURES.items()
    ],
    ids=FEATURES.keys(),
)
def test_network_features_match_pandapower(change):
    net = kerber_unbalanced()
    change(net)
    grid3, result = solve(net)
    assert_matches(grid3, result, run_pandapower_3ph(net))


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_unbalanced_feeders_match_pandapower(seed):
    net = feeder(seed)
    grid3, result = solve(net)
    assert_matches(grid3, result, run_pandapower_3ph(net))


def test_random_feeders_cover_both_vector_groups_and_delta_loads():
    nets = [feeder(seed) for seed in RANDOM_SEEDS]
    groups = {net.trafo["vector_group"].item() for net in nets}
    assert groups == {"Dyn", "YNyn"}
    assert all((net.asymmetric_load["type"] == "delta").any() for net in nets[:5])
    assert all(10 <= len(net.bus) - 2 <= 60 for net in nets)


def test_past_voltage_collapse_there_is_no_solution():
    net = collapsing_feeder()
    with pytest.raises(LoadflowNotConverged):
        pp.runpp_3ph(net)
    _, result = solve(net)
    assert not result.converged[0]
    assert "no solution" in result.reasons[0]
    assert np.isnan(result.vm_pu[0]).all() and np.isnan(result.line_loading_percent[0]).all()


def test_batched_scenarios_equal_one_by_one_and_pandapower():
    net = feeder(2)
    factors = (0.5, 1.0, 1.3, 0.8, 0.0)
    grid3, batched = solve(net, factors)
    assert batched.converged.all()
    for s, factor in enumerate(factors):
        _, single = solve(net, (factor,))
        for name in ("vm_pu", "va_degree", "unbalance_percent", "line_current_ka", "line_neutral_ka"):
            np.testing.assert_allclose(
                getattr(batched, name)[s], getattr(single, name)[0], rtol=1e-9, atol=1e-10
            )
        for name in ("line_loading_percent", "trafo_loading_percent"):
            np.testing.assert_allclose(
                getattr(batched, name)[s], getattr(single, name)[0], rtol=1e-9, atol=1e-8
            )
    for s in (0, 2):
        assert_matches(grid3, batched, run_pandapower_3ph(scaled(net, factors[s])), scenario=s)


def test_a_collapsing_scenario_leaves_the_others_in_its_batch_intact():
    net = collapsing_feeder()
    grid3, result = solve(net, (0.1, 1.0, 0.05))
    assert result.converged.tolist() == [True, False, True]
    assert result.reasons[0] == "" and "no solution" in result.reasons[1]
    assert_matches(grid3, result, run_pandapower_3ph(scaled(net, 0.1)), scenario=0)
    assert_matches(grid3, result, run_pandapower_3ph(scaled(net, 0.05)), scenario=2)


def test_per_phase_loads_match_pandapowers_element_tables():
    """The model's wye and delta loads per phase are the nets' elements, summed per bus."""
    net = feeder(3)
    grid3 = build_grid_3ph(tables_from_pandapower(net))
    load = net.asymmetric_load
    delta = load[load["type"] == "delta"]
    expected = delta.groupby("bus")[ASYMMETRIC_POWER_COLUMNS].sum() * 1e3
    positions = grid3.balanced.bus_positions(expected.index)
    for k, x in enumerate(PHASES):
        np.testing.assert_allclose(grid3.base_delta_kw[positions, k], expected[f"p_{x}_mw"])
        np.testing.assert_allclose(grid3.base_delta_kvar[positions, k], expected[f"q_{x}_mvar"])
    total = (
        net.load["p_mw"].sum()
        - net.sgen["p_mw"].sum()
        + load.loc[load["type"] == "wye", ["p_a_mw", "p_b_mw", "p_c_mw"]].sum().sum()
        - net.asymmetric_sgen[["p_a_mw", "p_b_mw", "p_c_mw"]].sum().sum()
    )
    assert grid3.base_load_kw.sum() == pytest.approx(total * 1e3)
