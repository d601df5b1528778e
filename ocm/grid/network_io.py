"""Reading networks: pandapower nets (in memory or ``pandapower.to_json`` files) and the native
``lec-network`` JSON format (documented in docs/native-network-format.md).

pandapower files are read by ``ocm.grid.pandapower_json`` without importing pandapower (its
import takes seconds); only files that reader cannot rebuild exactly go through pandapower."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ocm.grid.errors import NetworkError
from ocm.grid.model import Grid, NetworkTables, build_grid
from ocm.grid.pandapower_json import PandapowerFile, UnsupportedFile, read_tables
from ocm.grid.three_phase import Grid3ph, build_grid_3ph

NATIVE_FORMAT = "lec-network"
NATIVE_VERSION = 1
SUPPORTED_TABLES = ("bus", "line", "trafo", "switch", "shunt", "load", "sgen", "storage", "ext_grid")
# single-phase and unbalanced elements: read whenever present (older files may lack them); only the
# three-phase load flow (ocm.grid.three_phase) takes in-service ones
ASYMMETRIC_TABLES = ("asymmetric_load", "asymmetric_sgen")
# pandapower tables that describe no equipment in the load flow (runpp ignores them by default)
IGNORED_TABLES = ("controller", "measurement", "group", "pwl_cost", "poly_cost")
UNSUPPORTED_HINTS = {
    "gen": "voltage-controlled generators (PV buses) are not supported, use sgen",
    "trafo3w": "three-winding transformers are not supported",
    "impedance": "impedance elements are not supported",
    "ward": "ward equivalents are not supported",
    "xward": "extended ward equivalents are not supported",
    "dcline": "DC lines are not supported",
    "motor": "motors are not supported, use load",
}

# Native format: element lists, their fields (required ones first, marked by REQUIRED_FIELDS)
# and the conversions to pandapower's units.
NATIVE_TABLES = {
    "buses": "bus",
    "lines": "line",
    "trafos": "trafo",
    "switches": "switch",
    "shunts": "shunt",
    "loads": "load",
    "sgens": "sgen",
    "storages": "storage",
    "ext_grids": "ext_grid",
    "asymmetric_loads": "asymmetric_load",
    "asymmetric_sgens": "asymmetric_sgen",
}
_PHASE_POWER_FIELDS = ("p_a_kw", "q_a_kvar", "p_b_kw", "q_b_kvar", "p_c_kw", "q_c_kvar")
_POWER_FIELDS = ("p_kw", "q_kvar", "min_p_kw", "max_p_kw", "min_q_kvar", "max_q_kvar", *_PHASE_POWER_FIELDS)
_INJECTION_FIELDS = (
    "bus",
    "scaling",
    "in_service",
    "controllable",
    "priority_group",
    "phase",
    *_POWER_FIELDS,
)
# inverters' reactive power control (ocm.grid.reactive); sn_kva becomes pandapower's sn_mva
_INVERTER_FIELDS = (
    "sn_kva",
    "q_control",
    "cosphi_p_start_pu",
    "cosphi_p_end_pu",
    "cosphi_min",
    "qv_v1_pu",
    "qv_v2_pu",
    "qv_v3_pu",
    "qv_v4_pu",
    "qv_q_max_pu",
)
NATIVE_FIELDS = {
    "buses": ("vn_kv", "min_vm_pu", "max_vm_pu", "in_service"),
    "lines": (
        "from_bus",
        "to_bus",
        "length_km",
        "r_ohm_per_km",
        "x_ohm_per_km",
        "c_nf_per_km",
        "g_us_per_km",
        "max_i_ka",
        "parallel",
        "df",
        "max_loading_percent",
        "in_service",
        # zero sequence (three-phase load flow)
        "r0_ohm_per_km",
        "x0_ohm_per_km",
        "c0_nf_per_km",
        "g0_us_per_km",
    ),
    "trafos": (
        "hv_bus",
        "lv_bus",
        "sn_mva",
        "vn_hv_kv",
        "vn_lv_kv",
        "vk_percent",
        "vkr_percent",
        "pfe_kw",
        "i0_percent",
        "shift_degree",
        "tap_side",
        "tap_pos",
        "tap_neutral",
        "tap_step_percent",
        "tap_step_degree",
        "tap_changer_type",
        "parallel",
        "df",
        "max_loading_percent",
        "in_service",
        # zero sequence (three-phase load flow)
        "vector_group",
        "vk0_percent",
        "vkr0_percent",
        "mag0_percent",
        "mag0_rx",
        "si0_hv_partial",
    ),
    "switches": ("bus", "element", "et", "closed", "z_ohm"),
    "shunts": ("bus", "p_kw", "q_kvar", "vn_kv", "step", "in_service"),
    "loads": (
        *_INJECTION_FIELDS,
        "const_z_p_percent",
        "const_z_q_percent",
        "const_i_p_percent",
        "const_i_q_percent",
    ),
    "sgens": (*_INJECTION_FIELDS, *_INVERTER_FIELDS),
    "storages": (*_INJECTION_FIELDS, *_INVERTER_FIELDS),
    "ext_grids": (
        "bus",
        "vm_pu",
        "va_degree",
        "in_service",
        # short-circuit power and impedance ratios (three-phase load flow)
        "s_sc_max_mva",
        "rx_max",
        "x0x_max",
        "r0x0_max",
    ),
    "asymmetric_loads": ("bus", *_PHASE_POWER_FIELDS, "type", "scaling", "in_service"),
    "asymmetric_sgens": ("bus", *_PHASE_POWER_FIELDS, "scaling", "in_service"),
}
# per-phase powers that an asymmetric element leaves out are zero; its connection defaults to wye
NATIVE_DEFAULTS = {
    "asymmetric_loads": {**dict.fromkeys(_PHASE_POWER_FIELDS, 0.0), "type": "wye"},
    "asymmetric_sgens": dict.fromkeys(_PHASE_POWER_FIELDS, 0.0),
}
REQUIRED_FIELDS = {
    "buses": ("vn_kv",),
    "lines": ("from_bus", "to_bus", "length_km", "r_ohm_per_km", "x_ohm_per_km", "max_i_ka"),
    "trafos": ("hv_bus", "lv_bus", "sn_mva", "vn_hv_kv", "vn_lv_kv", "vk_percent", "vkr_percent"),
    "switches": ("bus", "element", "et"),
    "shunts": ("bus", "q_kvar"),
    "loads": ("bus", "p_kw"),
    "sgens": ("bus", "p_kw"),
    "storages": ("bus", "p_kw"),
    "ext_grids": ("bus",),
    "asymmetric_loads": ("bus",),
    "asymmetric_sgens": ("bus",),
}


def read_network(path: str | Path) -> Grid:
    """Grid of a pandapower JSON file (``pandapower.to_json``) or a native ``lec-network`` file."""
    return build_grid(read_network_tables(path))


def read_network_3ph(path: str | Path) -> Grid3ph:
    """Three-phase grid of a network file (it needs the zero-sequence data, see
    docs/native-network-format.md, *Unbalanced networks*)."""
    return build_grid_3ph(read_network_tables(path))


def read_network_tables(path: str | Path) -> NetworkTables:
    """Element tables of a network file as ``read_network`` reads it, before modelling (OCM
    needs the flexibility columns that the grid model leaves out)."""
    path = Path(path)
    if not path.is_file():
        raise NetworkError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NetworkError(f"{path} is not a JSON network file ({error})") from None
    if isinstance(data, dict) and data.get("_class") == "pandapowerNet":
        try:
            return tables_from_pandapower_file(read_tables(data, SUPPORTED_TABLES))
        except UnsupportedFile:
            return tables_from_pandapower(_pandapower_from_json(text, path))
    if isinstance(data, dict) and data.get("format") == NATIVE_FORMAT:
        return tables_from_native(data, default_name=path.stem)
    raise NetworkError(
        f"{path} is neither a pandapower network (saved with pandapower.to_json) nor a native "
        f'network (a JSON object with "format": "{NATIVE_FORMAT}")'
    )


def grid_from_pandapower(net) -> Grid:
    """Grid of an in-memory ``pandapowerNet``."""
    return build_grid(tables_from_pandapower(net))


def grid_3ph_from_pandapower(net) -> Grid3ph:
    """Three-phase grid of an in-memory ``pandapowerNet`` (as pandapower's ``runpp_3ph`` sees it)."""
    return build_grid_3ph(tables_from_pandapower(net))


def tables_from_pandapower(net) -> NetworkTables:
    """Element tables of a pandapower net, after rejecting unsupported in-service elements."""
    if not all(isinstance(net.get(name), pd.DataFrame) for name in SUPPORTED_TABLES):
        raise NetworkError("not a pandapower network: element tables are missing")
    _reject_unsupported(net)
    return NetworkTables(
        name=str(net.get("name") or ""),
        sn_mva=float(net.sn_mva),
        f_hz=float(net.f_hz),
        **{name: net[name] for name in SUPPORTED_TABLES},
        **_asymmetric_tables(net),
    )


def tables_from_pandapower_file(file: PandapowerFile) -> NetworkTables:
    """Element tables of a pandapower JSON file read without pandapower (``read_tables``),
    checked like ``tables_from_pandapower``."""
    _reject_unsupported(file.tables)
    return NetworkTables(
        name=str(file.name or ""),
        sn_mva=float(file.sn_mva),
        f_hz=float(file.f_hz),
        **{name: file.tables[name] for name in SUPPORTED_TABLES},
        **_asymmetric_tables(file.tables),
    )


def _asymmetric_tables(net) -> dict[str, pd.DataFrame]:
    """The asymmetric element tables of a net or file that has them (as they are, every column)."""
    return {name: net[name] for name in ASYMMETRIC_TABLES if isinstance(net.get(name), pd.DataFrame)}


def _reject_unsupported(net) -> None:
    """``NetworkError`` if an element table that the model does not support has rows in service."""
    for name, table in net.items():
        if (
            isinstance(table, pd.DataFrame)
            and not name.startswith(("res_", "_"))
            and name not in SUPPORTED_TABLES + ASYMMETRIC_TABLES + IGNORED_TABLES
            and "in_service" in table
            and table["in_service"].fillna(False).astype(bool).any()
        ):
            rows = table.index[table["in_service"].fillna(False).astype(bool)].tolist()
            shown = ", ".join(map(str, rows[:10])) + (f" … ({len(rows)})" if len(rows) > 10 else "")
            hint = UNSUPPORTED_HINTS.get(name, f"element table '{name}' is not supported")
            raise NetworkError(
                f"{name} {shown} in service: {hint}. Set them out of service to run without them"
            )


def tables_from_native(data: dict, default_name: str = "") -> NetworkTables:
    """Element tables of a native network (a parsed ``lec-network`` JSON object)."""
    version = data.get("version", NATIVE_VERSION)
    if version != NATIVE_VERSION:
        raise NetworkError(f"native network version {version!r} is not supported (only 1)")
    allowed = {"format", "version", "name", "description", "sn_mva", "f_hz", *NATIVE_TABLES}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise NetworkError(
            f"native network: unknown key(s) {', '.join(unknown)}; element lists are "
            f"{', '.join(NATIVE_TABLES)}"
        )
    if not data.get("buses"):
        raise NetworkError("native network: no buses")
    tables = {NATIVE_TABLES[key]: _native_table(key, data.get(key, [])) for key in NATIVE_TABLES}
    trafo = tables["trafo"]
    if "tap_pos" in trafo:
        kind = trafo.get("tap_changer_type", pd.Series(None, index=trafo.index, dtype=object))
        trafo["tap_changer_type"] = kind.where(kind.notna() | trafo["tap_pos"].isna(), "Ratio")
    try:
        sn_mva, f_hz = float(data.get("sn_mva", 1.0)), float(data.get("f_hz", 50.0))
    except (TypeError, ValueError):
        raise NetworkError("native network: sn_mva and f_hz must be numbers") from None
    return NetworkTables(name=str(data.get("name", default_name)), sn_mva=sn_mva, f_hz=f_hz, **tables)


def _native_table(key: str, rows) -> pd.DataFrame:
    """One element list as a DataFrame indexed by ``index`` (default: position in the list)."""
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise NetworkError(f"native network: {key} must be a list of objects")
    fields = NATIVE_FIELDS[key]
    allowed = {"index", "name", *fields}
    for position, row in enumerate(rows):
        where = f"{key}[{position}]"
        unknown = sorted(set(row) - allowed)
        if unknown:
            raise NetworkError(
                f"native network: {where} has unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        missing = [f for f in REQUIRED_FIELDS[key] if f not in row]
        if missing:
            raise NetworkError(f"native network: {where} lacks field(s) {', '.join(missing)}")
    index = [row.get("index", position) for position, row in enumerate(rows)]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
        raise NetworkError(f"native network: every index in {key} must be an integer")
    if len(set(index)) != len(index):
        raise NetworkError(f"native network: duplicate index in {key}")
    columns = ["name", *fields]
    defaults = NATIVE_DEFAULTS.get(key, {})
    table = pd.DataFrame(
        [[row.get(c, defaults.get(c, np.nan)) for c in columns] for row in rows],
        columns=columns,
        index=pd.Index(index, dtype=np.int64),
    )
    for field in _POWER_FIELDS:
        if field in table:
            unit = field.replace("_kw", "_mw").replace("_kvar", "_mvar")
            table[unit] = pd.to_numeric(table.pop(field), errors="coerce") / 1e3
    if "sn_kva" in table:
        table["sn_mva"] = pd.to_numeric(table.pop("sn_kva"), errors="coerce") / 1e3
    return table


def _pandapower_from_json(text: str, path: Path):
    import pandapower

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pandapower.from_json_string(text)
    except Exception as error:  # pandapower raises many kinds on damaged files
        raise NetworkError(f"{path}: pandapower could not read the network ({error})") from None
