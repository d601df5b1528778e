"""The three-phase model and HELM on their own: balanced loads give the balanced load flow, the
sequence networks are what the data says, and bad input is refused with a clear message.
(The comparison with pandapower's runpp_3ph is in test_helm_3ph_against_pandapower.py.)"""

from __future__ import annotations

import warnings

import numpy as np
import pandapower as pp
import pytest

from ocm.grid.errors import NetworkError
from ocm.grid.helm import HelmSolver
from ocm.grid.helm_3ph import Helm3phSolver
from ocm.grid.model import build_grid
from ocm.grid.network_io import tables_from_pandapower
from ocm.grid.three_phase import build_grid_3ph


def feeder(vector_group: str = "Dyn", shift: float = 150.0) -> pp.pandapowerNet:
    net = pp.create_empty_network(sn_mva=1.0)
    mv = pp.create_bus(net, 20.0)
    pp.create_ext_grid(net, mv, s_sc_max_mva=100.0, rx_max=0.1, x0x_max=1.0, r0x0_max=0.1)
    lv = pp.create_bus(net, 0.4)
    pp.create_transformer_from_parameters(
        net, mv, lv, sn_mva=0.4, vn_hv_kv=20.0, vn_lv_kv=0.4, vk_percent=6.0, vkr_percent=1.4,
        pfe_kw=1.35, i0_percent=0.3, shift_degree=shift, vector_group=vector_group, vk0_percent=6.0,
        vkr0_percent=1.4, mag0_percent=100.0, mag0_rx=0.0, si0_hv_partial=0.9,
    )  # fmt: skip
    previous = lv
    for _ in range(6):
        bus = pp.create_bus(net, 0.4)
        pp.create_line_from_parameters(
            net, previous, bus, length_km=0.08, r_ohm_per_km=0.206, x_ohm_per_km=0.08, c_nf_per_km=210.0,
            max_i_ka=0.27, r0_ohm_per_km=0.824, x0_ohm_per_km=0.32, c0_nf_per_km=210.0,
        )  # fmt: skip
        pp.create_load(net, bus, p_mw=0.015, q_mvar=0.004)
        previous = bus
    return net


def grid3_of(net):
    tables = tables_from_pandapower(net)
    tables.asymmetric_load = net.asymmetric_load
    tables.asymmetric_sgen = net.asymmetric_sgen
    return build_grid_3ph(tables)


@pytest.mark.parametrize("vector_group", ["Dyn", "YNyn"])
def test_balanced_loads_give_the_balanced_load_flow_on_every_phase(vector_group):
    net = feeder(vector_group)
    grid3 = grid3_of(net)
    balanced = HelmSolver(build_grid(tables_from_pandapower(net)))
    expected = balanced.solve(balanced.grid.base_load_kw, balanced.grid.base_load_kvar)
    result = Helm3phSolver(grid3).solve(grid3.base_load_kw, grid3.base_load_kvar)
    assert result.all_converged
    for phase, shift in enumerate((0.0, -120.0, 120.0)):
        assert np.allclose(result.vm_pu[0, :, phase], expected.vm_pu[0], atol=1e-9)
        angle = (result.va_degree[0, :, phase] - expected.va_degree[0] - shift + 180) % 360 - 180
        assert np.allclose(angle, 0.0, atol=1e-7)
    assert np.allclose(result.unbalance_percent, 0.0, atol=1e-7)
    assert np.allclose(result.line_neutral_ka, 0.0, atol=1e-9)
    assert np.allclose(result.line_loading_percent.max(axis=2), expected.line_loading_percent, atol=1e-6)
    assert np.allclose(result.trafo_loading_percent.max(axis=2), expected.trafo_loading_percent, atol=1e-6)


def test_a_single_phase_load_lowers_its_phase_and_drives_neutral_current():
    net = feeder()
    grid3 = grid3_of(net)
    p, q = grid3.base_load_kw.copy(), grid3.base_load_kvar.copy()
    end = grid3.n_bus - 1
    p[end, 0] += 7.4
    result = Helm3phSolver(grid3).solve(np.stack([grid3.base_load_kw, p]), np.stack([q, q]))
    assert result.all_converged
    drop = result.vm_pu[0, end] - result.vm_pu[1, end]
    assert drop[0] > 0.01 and abs(drop[1]) < drop[0] / 2 and abs(drop[2]) < drop[0] / 2
    assert result.unbalance_percent[1, end] > 0.3
    # 7.4 kW on one phase at ~230 V: about 32 A returns through the neutral (earth) path
    assert 0.025 < result.line_neutral_ka[1, -1] < 0.040


def test_the_batch_equals_one_by_one_and_delta_loads_are_between_phases():
    net = feeder()
    grid3 = grid3_of(net)
    solver = Helm3phSolver(grid3)
    rng = np.random.default_rng(2)
    p = grid3.base_load_kw * rng.uniform(0.2, 2.0, size=(5, grid3.n_bus, 3))
    q = grid3.base_load_kvar * rng.uniform(0.2, 2.0, size=(5, grid3.n_bus, 3))
    delta = np.zeros((5, grid3.n_bus, 3))
    delta[:, -1, 0] = 10.0  # 10 kW between phases a and b at the end
    batch = solver.solve(p, q, delta, np.zeros_like(delta))
    for k in range(5):
        one = solver.solve(p[k], q[k], delta[k], np.zeros_like(delta[k]))
        assert np.allclose(batch.vm_pu[k], one.vm_pu[0], atol=1e-10)
    without = solver.solve(p[0], q[0])
    drop = without.vm_pu[0, -1] - batch.vm_pu[0, -1]
    assert drop[0] > 0.002 and drop[1] > 0.002 and drop[2] < min(drop[0], drop[1]) / 2


def test_beyond_collapse_there_is_no_solution_and_it_says_so():
    net = feeder()
    grid3 = grid3_of(net)
    p = grid3.base_load_kw.copy()
    p[-1, 1] += 400.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = Helm3phSolver(grid3).solve(p, grid3.base_load_kvar)
    assert not result.converged[0]
    assert result.reasons[0].startswith("no solution")
    assert np.isnan(result.vm_pu[0]).all() and np.isnan(result.line_loading_percent[0]).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda net: net.line.drop(columns="r0_ohm_per_km", inplace=True), "lacks the column.*r0_ohm_per_km"),
        (lambda net: net.line.__setitem__("x0_ohm_per_km", np.nan), "x0_ohm_per_km must be a finite number"),
        (lambda net: net.trafo.__setitem__("vector_group", "Yy"), "vector group Yy is not supported"),
        (lambda net: net.ext_grid.drop(columns="s_sc_max_mva", inplace=True), "lacks.*s_sc_max_mva"),
        (lambda net: pp.create_shunt(net, 3, q_mvar=0.01), "shunt elements are not supported"),
        (lambda net: pp.create_asymmetric_load(net, 3, p_a_mw=np.nan), "p_a_mw must be a finite number"),
        (lambda net: pp.create_asymmetric_load(net, 3, p_a_mw=0.001, type="star"), "type must be 'wye' or"),
    ],
)  # fmt: skip
def test_bad_three_phase_data_is_refused_naming_what_is_wrong(change, message):
    net = feeder()
    change(net)
    with pytest.raises(NetworkError, match=message):
        grid3_of(net)


def test_the_balanced_model_refuses_asymmetric_elements():
    net = feeder()
    pp.create_asymmetric_load(net, 3, p_a_mw=0.005)
    tables = tables_from_pandapower(net)
    tables.asymmetric_load = net.asymmetric_load
    with pytest.raises(NetworkError, match="three-phase"):
        build_grid(tables)


def test_loads_of_the_wrong_shape_are_refused():
    grid3 = grid3_of(feeder())
    with pytest.raises(ValueError, match=r"shape \(K, 8, 3\) or \(8, 3\) \(per bus and phase\); got \(7,\)"):
        Helm3phSolver(grid3).solve(np.zeros(7), np.zeros(7))
