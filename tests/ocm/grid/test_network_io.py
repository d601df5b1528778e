"""Reading networks: formats, and clear errors naming the element for bad input."""

from __future__ import annotations

import json

import numpy as np
import pandapower as pp
import pytest

from ocm.grid.errors import NetworkError
from ocm.grid.loadflow import run_loadflow
from ocm.grid.network_io import grid_from_pandapower, read_network
from tests.ocm.helpers import assert_matches_pandapower, run_pandapower
from tests.ocm.networks import feature_network, radial_feeder

pytestmark = pytest.mark.usefixtures("quiet_warnings")


def small_net():
    return radial_feeder([0.1, 0.1, 0.1], [5.0, 8.0, 3.0])


def native_net() -> dict:
    return {
        "format": "lec-network",
        "version": 1,
        "name": "two-house feeder",
        "buses": [
            {"index": 10, "name": "MV", "vn_kv": 20.0},
            {"index": 11, "name": "LV busbar", "vn_kv": 0.4},
            {"index": 12, "name": "house 1", "vn_kv": 0.4, "min_vm_pu": 0.9},
            {"index": 13, "name": "house 2", "vn_kv": 0.4},
        ],
        "ext_grids": [{"bus": 10, "vm_pu": 1.02}],
        "trafos": [
            {
                "hv_bus": 10,
                "lv_bus": 11,
                "sn_mva": 0.25,
                "vn_hv_kv": 20.0,
                "vn_lv_kv": 0.4,
                "vk_percent": 6.0,
                "vkr_percent": 1.44,
                "pfe_kw": 0.8,
                "i0_percent": 0.32,
                "shift_degree": 150.0,
                "tap_side": "hv",
                "tap_pos": -1,
                "tap_neutral": 0,
                "tap_step_percent": 2.5,
            }
        ],
        "lines": [
            {
                "index": 1,
                "from_bus": 11,
                "to_bus": 12,
                "length_km": 0.15,
                "r_ohm_per_km": 0.206,
                "x_ohm_per_km": 0.08,
                "c_nf_per_km": 210.0,
                "max_i_ka": 0.27,
            },
            {
                "index": 2,
                "from_bus": 12,
                "to_bus": 13,
                "length_km": 0.1,
                "r_ohm_per_km": 0.641,
                "x_ohm_per_km": 0.083,
                "max_i_ka": 0.142,
                "max_loading_percent": 80,
            },
        ],
        "loads": [{"bus": 12, "p_kw": 8.0, "q_kvar": 2.0}, {"bus": 13, "p_kw": 11.0}],
        "sgens": [{"bus": 13, "p_kw": 4.0, "controllable": True, "max_p_kw": 6.0}],
        "storages": [{"bus": 12, "p_kw": -3.0}],
    }


def write(tmp_path, data, name="net.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_native_network_matches_the_same_pandapower_network(tmp_path):
    grid = read_network(write(tmp_path, native_net()))
    assert grid.name == "two-house feeder"
    assert grid.bus_ids.tolist() == [10, 11, 12, 13]
    np.testing.assert_allclose(grid.base_load_kw, [0, 0, 5.0, 7.0])
    np.testing.assert_allclose(grid.base_load_kvar, [0, 0, 2.0, 0])
    np.testing.assert_allclose(grid.min_vm_pu, [0.95, 0.95, 0.9, 0.95])
    np.testing.assert_allclose(grid.line_max_loading_percent, [100, 80])

    net = pp.create_empty_network()
    for index, kv in ((10, 20.0), (11, 0.4), (12, 0.4), (13, 0.4)):
        pp.create_bus(net, kv, index=index)
    pp.create_ext_grid(net, 10, vm_pu=1.02)
    pp.create_transformer_from_parameters(
        net, 10, 11, 0.25, 20, 0.4, 1.44, 6.0, 0.8, 0.32, shift_degree=150, tap_side="hv",
        tap_pos=-1, tap_neutral=0, tap_step_percent=2.5, tap_changer_type="Ratio",
    )  # fmt: skip
    pp.create_line_from_parameters(net, 11, 12, 0.15, 0.206, 0.08, 210, 0.27, index=1)
    pp.create_line_from_parameters(net, 12, 13, 0.1, 0.641, 0.083, 0, 0.142, index=2)
    pp.create_load(net, 12, 0.008, 0.002)
    pp.create_load(net, 13, 0.011)
    pp.create_sgen(net, 13, 0.004)
    pp.create_storage(net, 12, p_mw=-0.003, max_e_mwh=0.01)
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(grid), net)


def test_missing_file(tmp_path):
    with pytest.raises(NetworkError, match="no such file"):
        read_network(tmp_path / "absent.json")
    with pytest.raises(NetworkError, match="no such file"):
        read_network(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("this is a text file, not a network\n", "not a JSON network file"),
        ('{"buses": [1, 2', "not a JSON network file"),
        ('{"hello": "world"}', "neither a pandapower network"),
        ("[1, 2, 3]", "neither a pandapower network"),
        ('{"_class": "pandapowerNet", "_module": "x", "_object": "{]"}', "pandapower could not"),
    ],
    ids=["text", "truncated", "object", "list", "damaged-pandapower"],
)
def test_files_that_are_not_networks(tmp_path, content, message):
    with pytest.raises(NetworkError, match=message):
        read_network(write(tmp_path, content))


def test_binary_file_is_not_a_network(tmp_path):
    path = tmp_path / "net.json"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(NetworkError, match="not a JSON network file"):
        read_network(path)


def add_unsupported(net, table):
    bus = net.bus.index[2]
    if table == "gen":
        pp.create_gen(net, bus, 0.01, index=7)
    elif table == "trafo3w":
        hv, mv, lv = (pp.create_bus(net, kv) for kv in (20.0, 10.0, 0.4))
        pp.create_transformer3w(net, hv, mv, lv, "63/25/38 MVA 110/20/10 kV", index=7)
    elif table == "impedance":
        pp.create_impedance(net, bus, net.bus.index[3], 0.01, 0.01, 1.0, index=7)
    elif table == "ward":
        pp.create_ward(net, bus, 0.01, 0.0, 0.0, 0.0, index=7)
    elif table == "xward":
        pp.create_xward(net, bus, 0.01, 0.0, 0.0, 0.0, 0.1, 0.1, 1.0, index=7)
    elif table == "dcline":
        pp.create_dcline(net, bus, net.bus.index[3], 0.01, 1.0, 0.0, 1.0, 1.0, index=7)
    elif table == "motor":
        pp.create_motor(net, bus, 0.01, 0.9, index=7)


UNSUPPORTED = ["gen", "trafo3w", "impedance", "ward", "xward", "dcline", "motor"]


@pytest.mark.parametrize("table", UNSUPPORTED)
def test_unsupported_elements_in_service_are_refused_by_name(table, tmp_path):
    net = small_net()
    add_unsupported(net, table)
    with pytest.raises(NetworkError, match=rf"^{table} 7 in service: .*not supported"):
        grid_from_pandapower(net)
    path = tmp_path / "net.json"
    pp.to_json(net, str(path))
    with pytest.raises(NetworkError, match=rf"^{table} 7 in service"):
        read_network(path)


@pytest.mark.parametrize("table", ["gen", "impedance", "ward"])
def test_unsupported_elements_out_of_service_are_ignored(table):
    net = small_net()
    add_unsupported(net, table)
    net[table]["in_service"] = False
    run_pandapower(net)
    assert_matches_pandapower(run_loadflow(grid_from_pandapower(net)), net)


def test_island_with_load_and_no_slack_names_its_buses():
    net = small_net()
    island = [pp.create_bus(net, 0.4, name=name, index=50 + i) for i, name in enumerate("xy")]
    pp.create_line(net, island[0], island[1], 0.1, "NAYY 4x150 SE")
    pp.create_load(net, island[1], 0.01)
    with pytest.raises(NetworkError, match=r"bus 51 \(y\) carry load but are not connected"):
        grid_from_pandapower(net)


def test_open_switch_that_cuts_off_a_loaded_bus_is_an_island_with_load():
    net = small_net()
    last_line = net.line.index[-1]
    pp.create_switch(net, net.line.at[last_line, "to_bus"], last_line, et="l", closed=False)
    with pytest.raises(NetworkError, match=rf"bus {net.line.at[last_line, 'to_bus']} carry load"):
        grid_from_pandapower(net)


def test_island_without_load_is_de_energised():
    net = small_net()
    a, b = pp.create_bus(net, 0.4), pp.create_bus(net, 0.4)
    pp.create_line(net, a, b, 0.1, "NAYY 4x150 SE")
    pp.create_load(net, b, 0.0)
    grid = grid_from_pandapower(net)
    assert a not in grid.bus_ids and b not in grid.bus_ids
    result = run_loadflow(grid)
    assert np.isnan(result.bus.loc[[a, b], "vm_pu"]).all()


def set_column(table, column, values):
    def change(net):
        net[table][column] = values

    return change


def zero_line_impedance(net):
    net.line.loc[1, ["r_ohm_per_km", "x_ohm_per_km"]] = 0.0


def remove_ext_grids(net):
    net.ext_grid.drop(net.ext_grid.index, inplace=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (zero_line_impedance, r"^line 1 has zero impedance"),
        (set_column("line", "length_km", [0.1, 0.0, 0.1]), r"^line 1 has zero impedance"),
        (set_column("trafo", "vk_percent", 0.0), r"^trafo 0: vk_percent must be positive"),
        (set_column("trafo", "vkr_percent", 9.0), r"^trafo 0: vkr_percent exceeds"),
        (set_column("line", "r_ohm_per_km", [0.2, np.nan, 0.2]), r"^line 1: r_ohm_per_km must"),
        (set_column("bus", "vn_kv", -0.4), r"^bus .*: vn_kv must be positive"),
        (set_column("load", "const_i_p_percent", [0, 30, 0]), r"^load 1: constant-current"),
        (set_column("load", "bus", [2, 99, 3]), r"^load 1: bus refers to a missing bus"),
        (set_column("ext_grid", "in_service", False), "no in-service external grid"),
        (remove_ext_grids, "no in-service external grid"),
    ],
    ids=[
        "line-r-x-zero", "line-length-zero", "trafo-vk-zero", "trafo-vkr", "line-nan",
        "bus-kv", "const-current", "load-bus", "ext-grid-off", "no-ext-grid",
    ],
)  # fmt: skip
def test_invalid_parameters_name_the_element(change, message):
    net = small_net()
    change(net)
    with pytest.raises(NetworkError, match=message):
        grid_from_pandapower(net)


def test_zero_impedance_elements_out_of_service_are_harmless():
    net = small_net()
    extra = pp.create_bus(net, 0.4)
    line = pp.create_line_from_parameters(net, 3, extra, 0.0, 0.2, 0.1, 0, 0.2)
    net.line.loc[line, "in_service"] = False
    grid_from_pandapower(net)


def test_switch_must_sit_at_an_end_of_its_line():
    net = small_net()
    pp.create_switch(net, net.line.at[2, "to_bus"], 2, et="l", closed=False)
    net.switch.loc[0, "bus"] = net.bus.index[0]  # as a hand-edited file might have it
    with pytest.raises(NetworkError, match="switch 0: its bus is not an end of line 2"):
        grid_from_pandapower(net)


def test_in_memory_object_that_is_not_a_pandapower_net():
    with pytest.raises(NetworkError, match="not a pandapower network"):
        grid_from_pandapower({"bus": []})


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.__setitem__("gens", []), "unknown key.*gens"),
        (lambda d: d["loads"][0].__setitem__("p_mw", 0.01), r"loads\[0\] has unknown field.*p_mw"),
        (lambda d: d["lines"][0].pop("max_i_ka"), r"lines\[0\] lacks field.*max_i_ka"),
        (lambda d: d["buses"][1].__setitem__("index", 10), "duplicate index in buses"),
        (lambda d: d["buses"][1].__setitem__("index", "b"), "index in buses must be an integer"),
        (lambda d: d.__setitem__("version", 2), "version 2 is not supported"),
        (lambda d: d.__setitem__("buses", []), "no buses"),
        (lambda d: d.__setitem__("loads", {"bus": 12}), "loads must be a list of objects"),
        (lambda d: d["lines"][1].__setitem__("to_bus", 99), r"line 2: to_bus refers to a missing"),
        (lambda d: d.__setitem__("sn_mva", "big"), "sn_mva and f_hz must be numbers"),
    ],
    ids=[
        "table", "field", "required", "duplicate", "index-type", "version", "no-buses",
        "not-a-list", "bus-reference", "sn-mva",
    ],
)  # fmt: skip
def test_native_format_errors(tmp_path, change, message):
    data = native_net()
    change(data)
    with pytest.raises(NetworkError, match=message):
        read_network(write(tmp_path, data))


def test_feature_network_survives_the_json_round_trip_with_its_limits(tmp_path):
    net = feature_network()
    path = tmp_path / "features.json"
    pp.to_json(net, str(path))
    grid = read_network(path)
    lv_b = grid.bus_positions([119])[0]
    assert (grid.min_vm_pu[lv_b], grid.max_vm_pu[lv_b]) == (0.9, 1.1)
    assert grid.line_max_loading_percent[grid.line_ids.tolist().index(23)] == 60
    assert grid.trafo_max_loading_percent[grid.trafo_ids.tolist().index(5)] == 80
