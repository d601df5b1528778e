"""HELM results agree with pandapower.runpp on standard LV feeders and constructed networks."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocm.grid.loadflow import run_loadflow
from ocm.grid.network_io import grid_from_pandapower, read_network
from tests.ocm.helpers import assert_matches_pandapower, native_from_pandapower, run_pandapower
from tests.ocm.networks import feature_network, meshed_network, radial_feeder

NETWORKS = {
    "cigre_lv": pn.create_cigre_network_lv,
    "kerber_dorfnetz": pn.create_kerber_dorfnetz,
    "kerber_landnetz_freileitung_1": pn.create_kerber_landnetz_freileitung_1,
    "kerber_landnetz_freileitung_2": pn.create_kerber_landnetz_freileitung_2,
    "kerber_landnetz_kabel_1": pn.create_kerber_landnetz_kabel_1,
    "kerber_landnetz_kabel_2": pn.create_kerber_landnetz_kabel_2,
    "kerber_vorstadtnetz_kabel_1": pn.create_kerber_vorstadtnetz_kabel_1,
    "kerber_vorstadtnetz_kabel_2": pn.create_kerber_vorstadtnetz_kabel_2,
    "kb_extrem_landnetz_freileitung_trafo": pn.kb_extrem_landnetz_freileitung_trafo,
    "features": feature_network,
    "meshed": meshed_network,
}


pytestmark = pytest.mark.usefixtures("quiet_warnings")


@pytest.mark.parametrize("name", NETWORKS)
def test_in_memory_net_matches_pandapower(name):
    net = NETWORKS[name]()
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(grid_from_pandapower(net)), net)


@pytest.mark.parametrize("name", ["cigre_lv", "kerber_dorfnetz", "features"])
def test_pandapower_json_file_matches_pandapower(name, tmp_path):
    net = NETWORKS[name]()
    path = tmp_path / "net.json"
    pp.to_json(net, str(path))
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(read_network(path)), net)


@pytest.mark.parametrize("name", ["cigre_lv", "kerber_landnetz_kabel_1", "features", "meshed"])
def test_native_file_matches_pandapower(name, tmp_path):
    net = NETWORKS[name]()
    path = tmp_path / "net.json"
    path.write_text(json.dumps(native_from_pandapower(net)))
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(read_network(path)), net)


def test_simbench_rural_feeder_matches_pandapower_with_low_and_high_feed_in():
    simbench = pytest.importorskip("simbench")
    net = simbench.get_simbench_net("1-LV-rural1--0-sw")
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(grid_from_pandapower(net)), net)
    net.sgen["scaling"] = 8.0  # midday: reverse flow, over-voltage
    net.load["scaling"] = 0.2
    run_pandapower(net)
    result = run_loadflow(grid_from_pandapower(net))
    assert_matches_pandapower(result, net)
    assert result.bus["vm_pu"].max() > 1.05


def test_reverse_power_flow_with_constant_impedance_loads_matches_pandapower():
    net = feature_network()
    net.sgen["scaling"] = 6.0
    net.load["const_z_p_percent"] = 50.0
    net.load["const_z_q_percent"] = 30.0
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(grid_from_pandapower(net)), net)


def test_lines_without_rating_load_like_pandapower():
    net = feature_network()
    net.line.loc[22, "max_i_ka"] = np.nan  # unknown: NaN loading
    net.line.loc[24, "max_i_ka"] = 0.0  # zero: infinite loading
    run_pandapower(net)
    result = run_loadflow(grid_from_pandapower(net))
    assert_matches_pandapower(result, net)
    assert np.isnan(result.line.at[22, "loading_percent"])
    assert np.isinf(result.line.at[24, "loading_percent"])


def test_second_tap_changer_matches_pandapower():
    net = feature_network()
    second = {"tap2_side": ("hv", "lv"), "tap2_pos": (2.0, 1.0), "tap2_neutral": (0.0, 0.0)}
    second |= {"tap2_step_percent": (1.5, np.nan), "tap2_step_degree": (0.0, 5.0)}
    second |= {"tap2_changer_type": ("Ratio", "Ideal")}
    for column, values in second.items():
        net.trafo[column] = None if isinstance(values[0], str) else np.nan
        net.trafo.loc[[3, 6], column] = values
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(grid_from_pandapower(net)), net)


@pytest.fixture(scope="module")
def dorfnetz_nose():
    """Kerber Dorfnetz and the load scaling at its voltage-collapse point (pandapower)."""
    net = pn.create_kerber_dorfnetz()
    low, high = 1.0, 12.0
    while high - low > 1e-3:
        middle = (low + high) / 2
        trial = copy.deepcopy(net)
        trial.load["scaling"] = middle
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_pandapower(trial)
            low = middle
        except pp.LoadflowNotConverged:
            high = middle
    return net, low


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_heavy_loading_up_to_the_nose_matches_pandapower(dorfnetz_nose, fraction):
    base, nose = dorfnetz_nose
    net = copy.deepcopy(base)
    net.load["scaling"] = nose * fraction
    run_pandapower(net)
    result = run_loadflow(grid_from_pandapower(net))
    assert_matches_pandapower(result, net)
    assert result.bus["vm_pu"].min() < 0.85


@pytest.mark.parametrize("fraction", [1.01, 1.5, 5.0])
def test_beyond_the_nose_there_is_no_solution(dorfnetz_nose, fraction):
    base, nose = dorfnetz_nose
    net = copy.deepcopy(base)
    net.load["scaling"] = nose * fraction
    with pytest.raises(pp.LoadflowNotConverged):
        run_pandapower(net)
    result = run_loadflow(grid_from_pandapower(net))
    assert not result.converged
    assert "no solution" in result.message
    assert result.bus["vm_pu"].isna().all()
    assert result.line["loading_percent"].isna().all()
    assert result.trafo["loading_percent"].isna().all()


def test_long_overhead_feeder_with_pv_matches_pandapower():
    rng = np.random.default_rng(7)
    lengths = rng.uniform(0.05, 0.3, 12)
    net = radial_feeder(lengths, rng.uniform(2, 25, 12), pv_kw=rng.uniform(0, 30, 12))
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(grid_from_pandapower(net)), net)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.floats(0.01, 0.15), st.floats(0.0, 15.0), st.floats(0.0, 40.0)),
        min_size=1,
        max_size=10,
    )
)
def test_random_radial_feeders_match_pandapower(sections):
    lengths, loads_kw, pv_kw = zip(*sections, strict=True)
    net = radial_feeder(lengths, loads_kw, pv_kw=pv_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_pandapower(net)
    assert_matches_pandapower(run_loadflow(grid_from_pandapower(net)), net)
