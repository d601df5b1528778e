"""Comparison with pandapower and conversion of pandapower nets to the native format."""

from __future__ import annotations

import math

import numpy as np
import pandapower as pp

from ocm.grid.loadflow import NetworkResult

VM_TOLERANCE_PU = 1e-6
VA_TOLERANCE_DEGREE = 1e-4
LOADING_TOLERANCE_PERCENT = 1e-3


def run_pandapower(net) -> None:
    """pandapower's reference load flow: default settings, tight tolerance."""
    pp.runpp(net, tolerance_mva=1e-10, max_iteration=50)


def assert_matches_pandapower(result: NetworkResult, net) -> None:
    """Voltages, angles and loadings agree with ``net``'s results (run_pandapower first)."""
    assert result.converged, result.message
    bus = net.res_bus.loc[result.bus.index]
    np.testing.assert_array_equal(result.bus["vm_pu"].isna(), bus["vm_pu"].isna())
    np.testing.assert_allclose(result.bus["vm_pu"], bus["vm_pu"], rtol=0, atol=VM_TOLERANCE_PU)
    angle_error = (result.bus["va_degree"] - bus["va_degree"] + 180) % 360 - 180
    assert np.nanmax(np.abs(angle_error), initial=0) <= VA_TOLERANCE_DEGREE
    for element in ("line", "trafo"):
        ours = getattr(result, element)["loading_percent"]
        theirs = net[f"res_{element}"]["loading_percent"].loc[ours.index]
        np.testing.assert_array_equal(ours.isna(), theirs.isna())
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=LOADING_TOLERANCE_PERCENT)


def native_from_pandapower(net) -> dict:
    """The net in the native ``lec-network`` format (powers in kW/kvar)."""
    tables = {
        "buses": ("bus", ["name", "vn_kv", "min_vm_pu", "max_vm_pu", "in_service"], {}),
        "lines": (
            "line",
            [
                "name", "from_bus", "to_bus", "length_km", "r_ohm_per_km", "x_ohm_per_km",
                "c_nf_per_km", "g_us_per_km", "max_i_ka", "parallel", "df",
                "max_loading_percent", "in_service",
            ],
            {},
        ),
        "trafos": (
            "trafo",
            [
                "name", "hv_bus", "lv_bus", "sn_mva", "vn_hv_kv", "vn_lv_kv", "vk_percent",
                "vkr_percent", "pfe_kw", "i0_percent", "shift_degree", "parallel", "df",
                "max_loading_percent", "in_service",
            ],
            {},
        ),
        "switches": ("switch", ["name", "bus", "element", "et", "closed", "z_ohm"], {}),
        "shunts": ("shunt", ["name", "bus", "vn_kv", "step", "in_service"], _POWERS),
        "loads": (
            "load",
            [
                "name", "bus", "scaling", "in_service", "const_z_p_percent", "const_z_q_percent",
                "const_i_p_percent", "const_i_q_percent",
            ],
            _POWERS,
        ),
        "sgens": ("sgen", ["name", "bus", "scaling", "in_service"], _POWERS),
        "storages": ("storage", ["name", "bus", "scaling", "in_service"], _POWERS),
        "ext_grids": ("ext_grid", ["name", "bus", "vm_pu", "va_degree", "in_service"], {}),
    }  # fmt: skip
    data = {"format": "lec-network", "version": 1, "name": net.name, "sn_mva": net.sn_mva}
    data["f_hz"] = net.f_hz
    for key, (table, fields, powers) in tables.items():
        rows = []
        for index, row in net[table].iterrows():
            item = {"index": int(index)}
            item.update({f: _plain(row[f]) for f in fields if f in row and _present(row[f])})
            item.update({native: row[mw] * 1e3 for mw, native in powers.items() if mw in row})
            if table == "trafo" and _present(row.get("tap_changer_type")):
                taps = ("tap_side", "tap_pos", "tap_neutral", "tap_step_percent", "tap_step_degree")
                item.update({f: _plain(row[f]) for f in taps if _present(row[f])})
                item["tap_changer_type"] = row["tap_changer_type"]
            rows.append(item)
        data[key] = rows
    return data


_POWERS = {"p_mw": "p_kw", "q_mvar": "q_kvar"}


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _plain(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
