"""The per-unit grid model: topology, sign conventions, limits and admittances."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from ocm.grid.model import COMPUTED, UNDEFINED, ZERO
from ocm.grid.network_io import grid_from_pandapower
from tests.ocm.networks import feature_network, meshed_network

pytestmark = pytest.mark.usefixtures("quiet_warnings")


@pytest.fixture(scope="module")
def features():
    net = feature_network()
    return net, grid_from_pandapower(net)


@pytest.mark.parametrize("make", [pn.create_kerber_dorfnetz, pn.create_cigre_network_lv, meshed_network])
def test_series_plus_shunt_admittance_is_pandapowers_bus_admittance(make):
    net = make()
    pp.runpp(net)
    grid = grid_from_pandapower(net)
    ppc = net._pd2ppc_lookups["bus"][grid.bus_ids]
    ours = (grid.y_series.toarray() + np.diag(grid.y_shunt))[np.ix_(grid.node_of_bus, grid.node_of_bus)]
    theirs = net._ppc["internal"]["Ybus"].toarray()[np.ix_(ppc, ppc)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_series_part_has_no_shunts_and_shunt_part_no_couplings():
    net = meshed_network()
    for trafo in net.trafo.index:
        net.trafo.loc[trafo, "shift_degree"] = 0.0
    grid = grid_from_pandapower(net)
    # without taps and phase shifts the series matrix has zero row sums
    np.testing.assert_allclose(np.asarray(grid.y_series.sum(axis=1)).ravel(), 0, atol=1e-9)
    assert (grid.y_shunt.imag < 0).any()  # transformer magnetising
    assert grid.y_shunt.shape == (grid.n_node,)


def test_buses_in_service_and_energised_only(features):
    net, grid = features
    assert 115 not in grid.bus_ids  # out of service
    assert 116 not in grid.bus_ids and 117 not in grid.bus_ids  # load-free island
    expected = [b for b in net.bus.index if b not in (115, 116, 117)]
    assert grid.bus_ids.tolist() == expected
    assert grid.all_bus_ids.tolist() == net.bus.index.tolist()
    assert grid.bus_names[0] == "bus mv"


def test_fused_buses_share_a_node_and_auxiliary_nodes_are_hidden(features):
    _, grid = features
    h, fused, z = grid.bus_positions([110, 111, 112])
    assert grid.node_of_bus[h] == grid.node_of_bus[fused]
    assert grid.node_of_bus[z] != grid.node_of_bus[h]  # switch with impedance
    # two slacks, aux nodes at the open line switch and the line to the out-of-service bus
    assert len(grid.slack_nodes) == 2
    assert grid.n_node == len(set(grid.node_of_bus.tolist())) + 2


def test_net_load_in_load_convention(features):
    _, grid = features
    kw = dict(zip(grid.bus_ids.tolist(), grid.base_load_kw, strict=True))
    kvar = dict(zip(grid.bus_ids.tolist(), grid.base_load_kvar, strict=True))
    assert kw[104] == pytest.approx(30.0 * 0.7)  # load with scaling
    assert kw[107] == pytest.approx(-45.0)  # sgen: generation is negative load
    assert kw[106] == pytest.approx(40.0 - 10.0 * 0.5)  # load minus scaled sgen
    assert kvar[106] == pytest.approx(12.0 + 3.0 * 0.5)
    assert kw[108] == pytest.approx(20.0)  # charging storage; its out-of-service load ignored
    assert kw[109] == pytest.approx(-15.0)  # discharging storage
    assert kw[100] == 0.0


def test_constant_impedance_share_is_pandapowers_bus_mean(features):
    _, grid = features
    node = grid.node_of_bus[grid.bus_positions([105])[0]]
    assert grid.const_z_p[node] == pytest.approx((0.4 + 1.0) / 2)
    assert grid.const_z_q[node] == pytest.approx((0.2 + 1.0) / 2)


def test_limits_with_defaults(features):
    _, grid = features
    plain = grid_from_pandapower(meshed_network())
    assert (plain.min_vm_pu == 0.95).all() and (plain.max_vm_pu == 1.05).all()
    assert (plain.line_max_loading_percent == 100).all()
    assert (plain.trafo_max_loading_percent == 100).all()
    lines = grid.line_ids.tolist()
    assert grid.line_max_loading_percent[lines.index(23)] == 60
    assert grid.line_max_loading_percent[lines.index(20)] == 100
    assert grid.trafo_max_loading_percent[grid.trafo_ids.tolist().index(5)] == 80


def test_branch_order_and_states_follow_pandapower(features):
    net, grid = features
    assert grid.line_ids.tolist() == net.line.index.tolist()
    assert grid.trafo_ids.tolist() == net.trafo.index.tolist()
    state = dict(zip(grid.line_ids.tolist(), grid.branch_state[: grid.n_line], strict=True))
    assert state[29] == ZERO  # out of service between energised buses
    assert state[33] == UNDEFINED  # inside the de-energised island
    assert state[27] == COMPUTED  # open switch at one end: charging current only
    assert state[31] == COMPUTED  # line to an out-of-service bus
    trafo_state = dict(zip(grid.trafo_ids.tolist(), grid.branch_state[grid.n_line :], strict=True))
    assert trafo_state[9] == ZERO


def test_bus_positions_of_unknown_buses_raise(features):
    _, grid = features
    with pytest.raises(KeyError):
        grid.bus_positions([115])
