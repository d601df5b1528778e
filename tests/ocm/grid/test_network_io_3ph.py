"""Reading unbalanced networks: asymmetric loads and generators and the zero-sequence data of
lines, transformers and external grids survive every reader (pandapower in memory, pandapower
JSON files with and without pandapower, the native format)."""

from __future__ import annotations

import json

import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from ocm.grid.errors import NetworkError
from ocm.grid.network_io import (
    ASYMMETRIC_TABLES,
    read_network,
    read_network_tables,
    tables_from_native,
    tables_from_pandapower,
)
from ocm.grid.three_phase import build_grid_3ph
from tests.ocm.networks_3ph import cigre_lv_unbalanced, kerber_unbalanced

ZERO_SEQUENCE_COLUMNS = {
    "line": ["r0_ohm_per_km", "x0_ohm_per_km", "c0_nf_per_km"],
    "trafo": ["vector_group", "vk0_percent", "vkr0_percent", "mag0_percent", "mag0_rx", "si0_hv_partial"],
    "ext_grid": ["s_sc_max_mva", "rx_max", "x0x_max", "r0x0_max"],
}


pytestmark = pytest.mark.usefixtures("quiet_warnings")


@pytest.fixture(scope="module")
def cigre():
    return cigre_lv_unbalanced()


def assert_tables_carry_the_net(tables, net) -> None:
    """Asymmetric tables whole (every row and column) and the zero-sequence columns as in ``net``."""
    for name in ASYMMETRIC_TABLES:
        ours = getattr(tables, name)
        assert not ours.empty
        pd.testing.assert_frame_equal(ours, net[name], check_dtype=False, check_index_type=False)
    for table, columns in ZERO_SEQUENCE_COLUMNS.items():
        ours = getattr(tables, table)[columns]
        pd.testing.assert_frame_equal(ours, net[table][columns], check_dtype=False, check_index_type=False)
    assert tables.has_asymmetric_elements()


def test_pandapower_net_in_memory_keeps_asymmetric_elements_and_zero_sequence_data(cigre):
    tables = tables_from_pandapower(cigre)
    assert_tables_carry_the_net(tables, cigre)
    assert set(tables.asymmetric_load["type"]) == {"wye", "delta"}


def test_pandapower_json_file_keeps_them_with_and_without_pandapower(cigre, tmp_path):
    path = tmp_path / "cigre_3ph.json"
    pp.to_json(cigre, str(path))
    assert_tables_carry_the_net(read_network_tables(path), cigre)  # our reader
    reread = pp.from_json(str(path))  # pandapower's reader
    assert_tables_carry_the_net(tables_from_pandapower(reread), cigre)


def test_three_phase_model_of_a_file_equals_that_of_the_net(tmp_path):
    net = kerber_unbalanced()
    path = tmp_path / "kerber_3ph.json"
    pp.to_json(net, str(path))
    from_file = build_grid_3ph(read_network_tables(path))
    in_memory = build_grid_3ph(tables_from_pandapower(net))
    for name in ("base_load_kw", "base_load_kvar", "base_delta_kw", "base_delta_kvar"):
        np.testing.assert_array_equal(getattr(from_file, name), getattr(in_memory, name))
    assert abs(from_file.y0 - in_memory.y0).max() == 0
    assert from_file.base_load_kw.sum() == pytest.approx(
        (net.load["p_mw"].sum() + net.asymmetric_load[["p_a_mw", "p_b_mw", "p_c_mw"]].sum().sum()) * 1e3
        - net.asymmetric_sgen[["p_a_mw", "p_b_mw", "p_c_mw"]].sum().sum() * 1e3
    )


def test_balanced_load_flow_refuses_in_service_asymmetric_elements(cigre, tmp_path):
    path = tmp_path / "cigre_3ph.json"
    pp.to_json(cigre, str(path))
    with pytest.raises(NetworkError, match=r"asymmetric.*three-phase load flow"):
        read_network(path)


def test_out_of_service_asymmetric_elements_leave_a_balanced_network(tmp_path):
    net = kerber_unbalanced()
    for name in ASYMMETRIC_TABLES:
        net[name]["in_service"] = False
    path = tmp_path / "kerber.json"
    pp.to_json(net, str(path))
    grid = read_network(path)
    assert grid.base_load_kw.sum() == pytest.approx(net.load["p_mw"].sum() * 1e3)


def test_file_without_asymmetric_tables_reads_as_empty_ones(tmp_path):
    net = kerber_unbalanced()
    data = json.loads(pp.to_json(net))
    for name in ASYMMETRIC_TABLES:
        del data["_object"][name]  # as in files of old pandapower versions
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    tables = read_network_tables(path)
    assert tables.asymmetric_load.empty and tables.asymmetric_sgen.empty
    assert not tables.has_asymmetric_elements()


def native_unbalanced() -> dict:
    """The documented example of docs/native-network-format.md, three-phase section."""
    return {
        "format": "lec-network",
        "name": "unbalanced two-house feeder",
        "buses": [{"index": 10, "vn_kv": 20.0}, {"index": 11, "vn_kv": 0.4}, {"index": 12, "vn_kv": 0.4}],
        "ext_grids": [{"bus": 10, "s_sc_max_mva": 100.0, "rx_max": 0.1, "x0x_max": 1.0, "r0x0_max": 0.1}],
        "trafos": [
            {
                "hv_bus": 10, "lv_bus": 11, "sn_mva": 0.4, "vn_hv_kv": 20.0, "vn_lv_kv": 0.4,
                "vk_percent": 6.0, "vkr_percent": 1.425, "shift_degree": 150.0, "vector_group": "Dyn",
                "vk0_percent": 6.0, "vkr0_percent": 1.425, "mag0_percent": 100.0, "mag0_rx": 0.0,
                "si0_hv_partial": 0.9,
            }
        ],
        "lines": [
            {
                "from_bus": 11, "to_bus": 12, "length_km": 0.2, "r_ohm_per_km": 0.208,
                "x_ohm_per_km": 0.08, "c_nf_per_km": 261.0, "max_i_ka": 0.27,
                "r0_ohm_per_km": 0.832, "x0_ohm_per_km": 0.32, "c0_nf_per_km": 261.0,
            }
        ],
        "loads": [{"bus": 12, "p_kw": 6.0, "q_kvar": 1.5}],
        "asymmetric_loads": [
            {"bus": 12, "p_a_kw": 7.4, "name": "charger"},
            {"bus": 12, "p_b_kw": 3.0, "q_b_kvar": 1.0, "p_c_kw": 1.0, "type": "delta"},
        ],
        "asymmetric_sgens": [{"bus": 12, "p_c_kw": 4.6, "name": "PV"}],
    }  # fmt: skip


def pandapower_twin(data: dict):
    """The native example built with pandapower."""
    net = pp.create_empty_network()
    for bus in data["buses"]:
        pp.create_bus(net, bus["vn_kv"], index=bus["index"])
    pp.create_ext_grid(net, 10, s_sc_max_mva=100.0, rx_max=0.1, x0x_max=1.0, r0x0_max=0.1)
    pp.create_transformer_from_parameters(
        net, 10, 11, 0.4, 20.0, 0.4, 1.425, 6.0, 0.0, 0.0, shift_degree=150.0, vector_group="Dyn",
        vk0_percent=6.0, vkr0_percent=1.425, mag0_percent=100.0, mag0_rx=0.0, si0_hv_partial=0.9,
    )  # fmt: skip
    pp.create_line_from_parameters(
        net,
        11,
        12,
        0.2,
        0.208,
        0.08,
        261.0,
        0.27,
        r0_ohm_per_km=0.832,
        x0_ohm_per_km=0.32,
        c0_nf_per_km=261.0,
    )
    pp.create_load(net, 12, 0.006, 0.0015)
    pp.create_asymmetric_load(net, 12, p_a_mw=0.0074)
    pp.create_asymmetric_load(net, 12, p_b_mw=0.003, q_b_mvar=0.001, p_c_mw=0.001, type="delta")
    pp.create_asymmetric_sgen(net, 12, p_c_mw=0.0046)
    return net


def test_native_format_reads_asymmetric_elements_in_kw_and_zero_sequence_data():
    data = native_unbalanced()
    tables = tables_from_native(data)
    load = tables.asymmetric_load
    np.testing.assert_allclose(
        load[["p_a_mw", "p_b_mw", "q_b_mvar", "p_c_mw"]], [[0.0074, 0, 0, 0], [0, 0.003, 0.001, 0.001]]
    )
    assert load["type"].tolist() == ["wye", "delta"]  # wye unless stated
    assert tables.asymmetric_sgen.loc[0, ["p_a_mw", "p_b_mw", "p_c_mw"]].tolist() == [0.0, 0.0, 0.0046]
    assert tables.trafo.loc[0, "vector_group"] == "Dyn"
    assert tables.line.loc[0, "r0_ohm_per_km"] == 0.832
    assert tables.ext_grid.loc[0, "x0x_max"] == 1.0


def test_native_three_phase_model_equals_the_pandapower_twin():
    data = native_unbalanced()
    ours = build_grid_3ph(tables_from_native(data))
    twin = build_grid_3ph(tables_from_pandapower(pandapower_twin(data)))
    for name in ("base_load_kw", "base_load_kvar", "base_delta_kw", "base_delta_kvar"):
        np.testing.assert_allclose(getattr(ours, name), getattr(twin, name), atol=1e-12)
    for name in ("y0", "y1", "y2"):
        assert abs(getattr(ours, name) - getattr(twin, name)).max() < 1e-9


def set_field(key: str, field: str, value):
    def change(data: dict) -> None:
        data[key][0][field] = value

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (set_field("asymmetric_loads", "p_a_mw", 0.01), r"asymmetric_loads\[0\] has unknown field.*p_a_mw"),
        (lambda d: d["asymmetric_sgens"][0].pop("bus"), r"asymmetric_sgens\[0\] lacks field.*bus"),
        (set_field("asymmetric_sgens", "type", "delta"), r"asymmetric_sgens\[0\] has unknown field.*type"),
    ],
    ids=["unit", "bus", "sgen-type"],
)
def test_native_asymmetric_errors(change, message):
    data = native_unbalanced()
    change(data)
    with pytest.raises(NetworkError, match=message):
        tables_from_native(data)


def test_native_network_without_zero_sequence_data_is_refused_by_the_three_phase_model():
    data = native_unbalanced()
    del data["lines"][0]["r0_ohm_per_km"]
    with pytest.raises(NetworkError, match="r0_ohm_per_km"):
        build_grid_3ph(tables_from_native(data))
