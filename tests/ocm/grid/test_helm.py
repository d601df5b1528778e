"""Batched HELM: batches equal separate solves, results satisfy the load-flow equations,
non-convergence is explicit, and the numerical kernels do what they claim."""

from __future__ import annotations

import copy
import random
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ocm.grid import helm_kernels
from ocm.grid.helm import HelmSolver
from ocm.grid.loadflow import network_result
from ocm.grid.network_io import grid_from_pandapower
from tests.ocm.helpers import assert_matches_pandapower, run_pandapower
from tests.ocm.networks import feature_network


@pytest.fixture(scope="module")
def dorfnetz_net():
    random.seed(1)  # the Kerber generator draws line types at random
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pn.create_kerber_dorfnetz()


@pytest.fixture(scope="module")
def dorfnetz(dorfnetz_net):
    grid = grid_from_pandapower(dorfnetz_net)
    return grid, HelmSolver(grid)


@pytest.fixture(scope="module")
def features():
    grid = grid_from_pandapower(feature_network())
    return grid, HelmSolver(grid)


def random_loads(grid, k, low, high, seed):
    rng = np.random.default_rng(seed)
    factor = rng.uniform(low, high, (k, grid.n_bus))
    return grid.base_load_kw * factor, grid.base_load_kvar * factor


def full_mismatch(grid, vm, va, p_kw, q_kvar):
    """Largest |V (Y V)* - S(V)| over non-slack nodes, computed without the solver."""
    v_bus = vm * np.exp(1j * np.deg2rad(va))
    v = np.zeros(grid.n_node, complex)
    v[grid.node_of_bus] = v_bus
    load = np.zeros(grid.n_node, complex)
    np.add.at(load, grid.node_of_bus, (p_kw + 1j * q_kvar) / 1e3 / grid.sn_mva)
    constant_power = load.real * (1 - grid.const_z_p) + 1j * load.imag * (1 - grid.const_z_q)
    impedance = load.real * grid.const_z_p - 1j * load.imag * grid.const_z_q
    y = grid.y_series + sp.diags(grid.y_shunt + impedance)
    mismatch = v * (y @ v).conj() + constant_power
    return np.abs(mismatch[grid.pq_nodes]).max()


def test_batch_equals_separate_solves(features):
    grid, solver = features
    p, q = random_loads(grid, 40, -1.0, 3.0, seed=1)
    batch = solver.solve(p, q)
    assert batch.all_converged
    for s in range(len(p)):
        single = solver.solve(p[s], q[s])
        np.testing.assert_allclose(single.vm_pu[0], batch.vm_pu[s], rtol=0, atol=1e-12)
        np.testing.assert_allclose(single.va_degree[0], batch.va_degree[s], rtol=0, atol=1e-10)
        np.testing.assert_allclose(
            single.line_loading_percent[0], batch.line_loading_percent[s], rtol=0, atol=1e-9
        )
        assert single.terms[0] == batch.terms[s]


def test_thousands_of_scenarios_in_one_call(dorfnetz, dorfnetz_net):
    grid, solver = dorfnetz
    p, q = random_loads(grid, 3000, 0.0, 3.0, seed=2)
    result = solver.solve(p, q)
    assert result.vm_pu.shape == (3000, grid.n_bus)
    assert result.line_loading_percent.shape == (3000, grid.n_line)
    assert result.trafo_loading_percent.shape == (3000, grid.n_trafo)
    assert result.all_converged
    assert (result.max_mismatch_pu <= solver.tolerance_pu).all()
    net = copy.deepcopy(dorfnetz_net)
    positions = net.load["bus"].map(dict(zip(grid.bus_ids, range(grid.n_bus), strict=True)))
    for s in (0, 1234, 2999):
        net.load["p_mw"] = p[s, positions] / 1e3
        net.load["q_mvar"] = q[s, positions] / 1e3
        run_pandapower(net)
        assert_matches_pandapower(network_result(grid, result, s), net)


def test_one_dimensional_loads_give_one_scenario(dorfnetz):
    grid, solver = dorfnetz
    result = solver.solve(grid.base_load_kw, grid.base_load_kvar)
    assert result.vm_pu.shape == (1, grid.n_bus)
    assert result.converged.tolist() == [True]
    assert result.reasons == ("",)
    assert result.newton_iterations.tolist() == [0]


def test_converged_voltages_satisfy_the_load_flow_equations():
    net = feature_network()
    net.switch["closed"] = True  # no auxiliary nodes: every node voltage is a bus voltage
    net.line.loc[31, "in_service"] = False
    grid = grid_from_pandapower(net)
    solver = HelmSolver(grid)
    p, q = random_loads(grid, 60, -2.0, 12.0, seed=3)
    result = solver.solve(p, q)
    assert result.converged.any() and not result.converged.all()
    for s in np.flatnonzero(result.converged):
        mismatch = full_mismatch(grid, result.vm_pu[s], result.va_degree[s], p[s], q[s])
        assert mismatch <= 10 * solver.tolerance_pu
    failed = ~result.converged
    assert np.isnan(result.vm_pu[failed]).all()
    assert np.isnan(result.line_loading_percent[failed]).all()
    assert all(result.reasons[s].startswith("no solution") for s in np.flatnonzero(failed))
    assert not any(result.reasons[s] for s in np.flatnonzero(result.converged))


def test_scenarios_stop_independently(dorfnetz):
    grid, solver = dorfnetz
    light = np.stack([grid.base_load_kw * 0.1, grid.base_load_kw * 4.0])
    result = solver.solve(light, light * 0.2)
    assert result.all_converged
    assert result.terms[0] < result.terms[1]


def test_newton_polish_is_reported_and_can_be_disabled(dorfnetz):
    grid, _ = dorfnetz
    heavy = grid.base_load_kw * 5.9  # about 96 % of the collapse point
    polished = HelmSolver(grid).solve(heavy, grid.base_load_kvar * 5.9)
    assert polished.converged[0] and polished.newton_iterations[0] > 0
    pure = HelmSolver(grid, polish=False, max_terms=100, stall_terms=100)
    result = pure.solve(heavy, grid.base_load_kvar * 5.9)
    assert result.newton_iterations[0] == 0
    if result.converged[0]:
        np.testing.assert_allclose(result.vm_pu, polished.vm_pu, atol=1e-8)
    else:
        assert np.isnan(result.vm_pu).all()


def test_load_at_the_slack_bus_changes_nothing(dorfnetz):
    grid, solver = dorfnetz
    p = grid.base_load_kw.copy()
    slack_bus = grid.bus_positions([0])[0]
    p[slack_bus] += 500.0
    a = solver.solve(grid.base_load_kw, grid.base_load_kvar)
    b = solver.solve(p, grid.base_load_kvar)
    np.testing.assert_array_equal(a.vm_pu, b.vm_pu)


@pytest.mark.parametrize(
    "shape", [(3,), (2, 5), (1, 117), (117, 2)], ids=["short", "wrong", "long", "transposed"]
)
def test_wrong_load_shapes_are_refused(dorfnetz, shape):
    _, solver = dorfnetz
    with pytest.raises(ValueError, match="shape"):
        solver.solve(np.zeros(shape), np.zeros(shape))


def test_non_finite_loads_are_refused(dorfnetz):
    grid, solver = dorfnetz
    p = grid.base_load_kw.copy()
    p[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        solver.solve(p, grid.base_load_kvar)


def test_grid_of_only_a_slack_bus():
    net = pp.create_empty_network()
    bus = pp.create_bus(net, 0.4)
    pp.create_ext_grid(net, bus, vm_pu=1.01, va_degree=3.0)
    pp.create_load(net, bus, 0.01)
    grid = grid_from_pandapower(net)
    result = HelmSolver(grid).solve(grid.base_load_kw, grid.base_load_kvar)
    assert result.converged.tolist() == [True]
    np.testing.assert_allclose(result.vm_pu, [[1.01]])
    np.testing.assert_allclose(result.va_degree, [[3.0]])


def wynn_limit(terms: np.ndarray) -> complex:
    """Padé value at 1 of the series with these coefficients, via the progressive kernel."""
    table = np.empty((1, 1, len(terms)), complex)
    length = np.zeros((1, 1), dtype=np.int64)
    estimate = np.empty((1, 1), complex)
    partial = np.zeros((1, 1), complex)
    for term in terms:
        partial += term
        helm_kernels.wynn_update(table, length, partial, estimate)
    return estimate[0, 0]


def test_wynn_accelerates_a_slowly_converging_series():
    n = np.arange(1, 25)
    log_two = np.concatenate([[0.0], (-1.0) ** (n + 1) / n])  # log(1 + a) at a = 1
    assert abs(wynn_limit(log_two) - np.log(2)) < 1e-12
    assert abs(log_two.sum() - np.log(2)) > 1e-2


def test_wynn_continues_a_series_beyond_its_radius_of_convergence():
    # sqrt(1 + 4a) = sum binom(1/2, n) (4a)^n converges only for |a| < 1/4
    coefficients = [1.0]
    for n in range(1, 30):
        coefficients.append(coefficients[-1] * (0.5 - (n - 1)) / n * 4)
    assert abs(sum(coefficients)) > 1e6
    assert abs(wynn_limit(np.array(coefficients)) - np.sqrt(5)) < 1e-8


def test_wynn_handles_a_series_that_terminates():
    assert wynn_limit(np.array([0.5 + 1j, 0.25, 0, 0, 0, 0])) == 0.75 + 1j


def test_sparse_lu_kernel_solves_like_scipy():
    rng = np.random.default_rng(4)
    n = 40
    a = sp.random(n, n, density=0.1, random_state=5) + 1j * sp.random(n, n, density=0.1, random_state=6)
    a = (a + sp.diags(5 + rng.uniform(0, 1, n))).tocsr()
    rhs = rng.normal(size=(n, 7)) + 1j * rng.normal(size=(n, 7))
    from ocm.grid.helm import factorise

    out = np.empty_like(rhs)
    helm_kernels.lu_solve(*factorise(a), rhs, out)
    np.testing.assert_allclose(out, spla.spsolve(a.tocsc(), rhs), rtol=0, atol=1e-12)
