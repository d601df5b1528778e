"""Reading ``pandapower.to_json`` files without pandapower: the same element tables as
pandapower's own reader, on real networks; a fallback to pandapower for what it cannot read."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pandas as pd
import pytest

from ocm.examples import kerber_dorfnetz_with_flexibilities
from ocm.grid.network_io import SUPPORTED_TABLES, read_network_tables, tables_from_pandapower
from ocm.grid.pandapower_json import UnsupportedFile, read_tables
from ocm.seeding import seeded_python_random
from tests.ocm.networks import feature_network


def _simbench(code: str):
    import simbench

    return simbench.get_simbench_net(code)


def _kerber_vorstadtnetz():
    with seeded_python_random(5):
        return pn.create_kerber_vorstadtnetz_kabel_1()


NETS = {
    "features": feature_network,
    "kerber dorfnetz with flexibilities": lambda: kerber_dorfnetz_with_flexibilities(count=8, seed=2),
    "kerber vorstadtnetz": _kerber_vorstadtnetz,
    "cigre lv": pn.create_cigre_network_lv,
    "mv oberrhein (geodata)": pn.mv_oberrhein,
    "simbench 1-LV-rural1--0-sw": lambda: _simbench("1-LV-rural1--0-sw"),
    "simbench 1-LV-semiurb4--0-sw": lambda: _simbench("1-LV-semiurb4--0-sw"),
}


pytestmark = pytest.mark.usefixtures("quiet_warnings")


@pytest.mark.parametrize("make", NETS.values(), ids=NETS.keys())
def test_every_element_table_equals_pandapowers_own_reading(make):
    text = pp.to_json(make())
    reference = pp.from_json_string(text)
    file = read_tables(json.loads(text), SUPPORTED_TABLES)
    element_tables = [
        key
        for key, value in json.loads(text)["_object"].items()
        if isinstance(value, dict)
        and value.get("_class") == "DataFrame"
        and not key.startswith(("res_", "_"))
    ]
    plain = [key for key in element_tables if '"in_service"' in json.loads(text)["_object"][key]["_object"]]
    assert set(plain) <= set(file.tables) and set(SUPPORTED_TABLES) <= set(file.tables)
    for key, table in file.tables.items():
        pd.testing.assert_frame_equal(table, reference[key], check_dtype=True, obj=key)  # every column
    assert (file.name, file.sn_mva, file.f_hz) == (reference.name or "", reference.sn_mva, reference.f_hz)


def test_network_tables_of_a_file_equal_those_of_the_net(tmp_path):
    net = kerber_dorfnetz_with_flexibilities(count=6, seed=4)
    net.sgen["inverter_mode"] = "volt-var"  # extra columns are kept (inverter control reads them)
    path = tmp_path / "net.json"
    pp.to_json(net, str(path))
    from_file = read_network_tables(path)
    expected = tables_from_pandapower(pp.from_json(str(path)))
    for name in SUPPORTED_TABLES:
        pd.testing.assert_frame_equal(getattr(from_file, name), getattr(expected, name), obj=name)
    assert list(from_file.sgen["inverter_mode"].unique()) == ["volt-var"]


def test_what_the_reader_cannot_rebuild_exactly_is_refused():
    data = json.loads(pp.to_json(feature_network()))
    data["_object"]["load"]["is_multiindex"] = True
    with pytest.raises(UnsupportedFile, match="plain index"):
        read_tables(data, SUPPORTED_TABLES)
    data = json.loads(pp.to_json(feature_network()))
    del data["_object"]["shunt"]
    with pytest.raises(UnsupportedFile, match="shunt missing"):
        read_tables(data, SUPPORTED_TABLES)


def test_a_missing_element_table_is_read_through_pandapower(tmp_path):
    data = json.loads(pp.to_json(feature_network()))
    del data["_object"]["shunt"]
    path = tmp_path / "no_shunt.json"
    path.write_text(json.dumps(data))
    tables = read_network_tables(path)
    assert tables.shunt.empty and len(tables.bus) == len(feature_network().bus)


def test_lec_ocm_json_does_not_import_pandapower(tmp_path):
    path = tmp_path / "feeder.json"
    pp.to_json(kerber_dorfnetz_with_flexibilities(count=4, seed=1), str(path))
    code = (
        "import io, contextlib, json, sys\n"
        "from node.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    status = main(['-q', 'ocm', {str(path)!r}, '--json', '--samples', '50'])\n"
        "heavy = [m for m in ('pandapower', 'matplotlib', 'scipy.stats', 'simbench') if m in sys.modules]\n"
        "print(status, json.loads(out.getvalue())['feasible'], heavy)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.split() == ["0", "True", "[]"], completed.stdout + completed.stderr


def test_bus_limits_and_flexibility_columns_survive(tmp_path):
    net = feature_network()
    path = tmp_path / "f.json"
    pp.to_json(net, str(path))
    tables = read_network_tables(path)
    np.testing.assert_array_equal(tables.bus.index, net.bus.index)
    assert tables.bus.loc[net.bus.index[-2], "min_vm_pu"] == net.bus["min_vm_pu"].iloc[-2]
