"""Three-phase (unbalanced) grid model in symmetrical components, as pandapower's ``runpp_3ph``.

The positive-sequence network is the balanced ``Grid``. The negative-sequence network is the
same with transformer phase shifts reversed, plus the external grids' short-circuit admittance
(``s_sc_max_mva``, ``rx_max``). The zero-sequence network is built from the lines' ``r0``, ``x0``,
``c0`` and the transformers' vector groups (``Dyn``, ``YNyn``) with ``vk0_percent``,
``vkr0_percent``, ``mag0_percent``, ``mag0_rx`` and ``si0_hv_partial``, plus the external grids'
zero-sequence admittance (``x0x_max``, ``r0x0_max``). The three networks are decoupled; only the
loads couple them, through their per-phase power.

All admittances are per unit on the network's ``sn_mva`` (three-phase) and the nodes' nominal
voltages, like the balanced model; per-phase powers are then in per unit of ``sn_mva / 3``.
Loads are constant power per phase (pandapower's ``runpp_3ph`` does the same): ``load`` and
``sgen`` are split evenly over the three phases, ``asymmetric_load`` and ``asymmetric_sgen`` give
each phase's power, wye (phase to neutral) or delta (between phases ab, bc, ca).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ocm.grid.branch_models import trafo_tap_voltages
from ocm.grid.errors import NetworkError
from ocm.grid.model import COMPUTED, Grid, NetworkTables, _complete_tables, _list, build_grid

A = np.exp(2j * np.pi / 3)
# phase (a, b, c) from sequence (0, 1, 2) components and back (pandapower's Tabc, T012)
PHASE_FROM_SEQUENCE = np.array([[1, 1, 1], [1, A**2, A], [1, A, A**2]])
SEQUENCE_FROM_PHASE = np.array([[1, 1, 1], [1, A, A**2], [1, A**2, A]]) / 3
PHASES = ("a", "b", "c")
EXT_GRID_C_FACTOR = 1.1  # pandapower's voltage factor for the external grids' impedance
VECTOR_GROUPS = ("dyn", "ynyn")
EXT_GRID_COLUMNS = ("s_sc_max_mva", "rx_max", "x0x_max", "r0x0_max")
LINE_COLUMNS = ("r0_ohm_per_km", "x0_ohm_per_km", "c0_nf_per_km")
TRAFO_COLUMNS = ("vector_group", "vk0_percent", "vkr0_percent", "mag0_percent", "mag0_rx", "si0_hv_partial")
ASYMMETRIC_COLUMNS = ("bus", "p_a_mw", "p_b_mw", "p_c_mw")


@dataclass(eq=False)
class Grid3ph:
    """A network ready for three-phase load flows.

    ``balanced`` is the positive-sequence ``Grid`` (ids, names, limits, node numbering).
    ``y0``, ``y1``, ``y2`` are the sequence admittance matrices of all nodes, shunts included;
    ``branch_admittance_0``/``_2`` are the lines' and transformers' two-ports of the zero and
    negative sequence (``balanced.branch_admittance`` is the positive one). The loads of the
    tables are per energised bus and phase in kW/kvar, consumption positive: wye loads
    ``base_load_*`` (n_bus, 3) for phases a, b, c and delta loads ``base_delta_*`` for ab, bc, ca.
    """

    balanced: Grid
    y0: sp.csr_matrix
    y1: sp.csr_matrix
    y2: sp.csr_matrix
    branch_admittance_0: np.ndarray
    branch_admittance_2: np.ndarray
    base_load_kw: np.ndarray
    base_load_kvar: np.ndarray
    base_delta_kw: np.ndarray
    base_delta_kvar: np.ndarray
    branch_end_energised: np.ndarray  # (n_line + n_trafo, 2): whether each end's bus is energised

    @property
    def name(self) -> str:
        return self.balanced.name

    @property
    def n_bus(self) -> int:
        return self.balanced.n_bus


def build_grid_3ph(tables: NetworkTables) -> Grid3ph:
    """Three-phase model of ``tables``; raises ``NetworkError`` naming what is missing or unsupported."""
    balanced_tables = NetworkTables(
        **{
            name: getattr(tables, name)
            for name in NetworkTables.__dataclass_fields__
            if "asymmetric" not in name
        }
    )
    grid = build_grid(balanced_tables)
    # the same defaults for empty values as the balanced model (the zero-sequence columns pass)
    tables = replace(
        _complete_tables(balanced_tables),
        asymmetric_load=tables.asymmetric_load,
        asymmetric_sgen=tables.asymmetric_sgen,
    )
    _check_supported(tables)
    trafo = tables.trafo
    y_ext0, y_ext2 = _ext_grid_admittances(tables, grid)
    line_zero = _line_zero_sequence(tables, grid)
    trafo_zero = _trafo_zero_sequence(tables, trafo, grid)
    branch_0 = np.concatenate([line_zero, trafo_zero])
    branch_2 = grid.branch_admittance.copy()
    trafos = slice(grid.n_line, None)
    branch_2[trafos, 1], branch_2[trafos, 2] = (
        grid.branch_admittance[trafos, 2],
        grid.branch_admittance[trafos, 1],
    )

    y1 = (grid.y_series + sp.diags(grid.y_shunt)).tocsr()
    y2 = (y1 + _stamp(grid, branch_2 - grid.branch_admittance) + sp.diags(y_ext2)).tocsr()
    y0 = (_stamp(grid, branch_0) + sp.diags(y_ext0)).tocsr()
    _check_earthing(y0, grid)
    wye, delta = _phase_loads(tables, grid)
    return Grid3ph(
        balanced=grid,
        y0=y0,
        y1=y1,
        y2=y2,
        branch_admittance_0=branch_0,
        branch_admittance_2=branch_2,
        base_load_kw=wye.real,
        base_load_kvar=wye.imag,
        base_delta_kw=delta.real,
        base_delta_kvar=delta.imag,
        branch_end_energised=_energised_ends(tables, grid),
    )


def _check_supported(t: NetworkTables) -> None:
    """Elements the three-phase model does not have refuse with a clear message."""
    shunt = t.shunt[t.shunt.get("in_service", pd.Series(True, index=t.shunt.index)).astype(bool)]
    if not shunt.empty:
        raise NetworkError(
            f"shunt {_list(shunt.index)}: shunt elements are not supported by the three-phase load flow"
        )
    if not t.switch.empty and "z_ohm" in t.switch:
        impedance = (
            (t.switch["et"] == "b")
            & t.switch.get("closed", True).astype(bool)
            & (t.switch["z_ohm"].fillna(0).astype(float) > 0)
        )
        if impedance.any():
            raise NetworkError(
                f"switch {_list(t.switch.index[impedance])}: bus-bus switches with an impedance (z_ohm > 0) "
                "are not supported by the three-phase load flow"
            )


def _in_service(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    return table[table.get("in_service", pd.Series(True, index=table.index)).fillna(True).astype(bool)]


def _numbers(table: pd.DataFrame, name: str, columns: tuple[str, ...], hint: str) -> dict[str, np.ndarray]:
    """Columns as floats; a missing column or an empty/infinite value is an error naming them."""
    missing = [c for c in columns if c not in table]
    if missing:
        raise NetworkError(f"{name} table lacks the column(s) {', '.join(missing)}, needed for {hint}")
    values = {}
    for column in columns:
        array = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(array)
        if bad.any():
            raise NetworkError(f"{name} {_list(table.index[bad])}: {column} must be a finite number ({hint})")
        values[column] = array
    return values


def _ext_grid_admittances(t: NetworkTables, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Zero- and negative-sequence shunt admittance of the external grids per node (pu)."""
    eg = _in_service(t.ext_grid)
    eg = eg[eg["bus"].isin(grid.bus_ids)]
    values = _numbers(eg, "ext_grid", EXT_GRID_COLUMNS, "its negative and zero sequence impedance")
    if (values["s_sc_max_mva"] <= 0).any():
        raise NetworkError(f"ext_grid {_list(eg.index)}: s_sc_max_mva must be positive")
    z = EXT_GRID_C_FACTOR * t.sn_mva / values["s_sc_max_mva"]
    x = z / np.sqrt(values["rx_max"] ** 2 + 1)
    r = values["rx_max"] * x
    x0 = values["x0x_max"] * x
    r0 = values["r0x0_max"] * x0
    if (np.hypot(r0, x0) == 0).any():
        raise NetworkError(f"ext_grid {_list(eg.index)}: x0x_max must not be 0 (zero impedance to earth)")
    nodes = grid.node_of_bus[grid.bus_positions(eg["bus"].to_numpy())]
    y0 = np.zeros(grid.n_node, complex)
    y2 = np.zeros(grid.n_node, complex)
    np.add.at(y0, nodes, 1 / (r0 + 1j * x0))
    np.add.at(y2, nodes, 1 / (r + 1j * x))
    return y0, y2


def _line_zero_sequence(t: NetworkTables, grid: Grid) -> np.ndarray:
    """(n_line, 4) zero-sequence two-ports of the lines from r0, x0 and c0 per km."""
    line = t.line
    connected = grid.branch_state[: grid.n_line] == COMPUTED
    out = np.zeros((len(line), 4), complex)
    if not connected.any():
        return out
    used = line[connected]
    values = _numbers(
        used, "line", LINE_COLUMNS, "the zero sequence (pandapower.add_zero_impedance_parameters)"
    )
    length = used["length_km"].to_numpy(float)
    parallel = used["parallel"].to_numpy(float) if "parallel" in used else np.ones(len(used))
    base_kv = grid.node_base_kv[grid.branch_from[: grid.n_line][connected]]
    base_r = base_kv**2 / t.sn_mva
    z0 = (values["r0_ohm_per_km"] + 1j * values["x0_ohm_per_km"]) * length / base_r / parallel
    if (z0 == 0).any():
        raise NetworkError(f"line {_list(used.index[z0 == 0])}: r0_ohm_per_km and x0_ohm_per_km are both 0")
    half_b = 1j * np.pi * t.f_hz * values["c0_nf_per_km"] * 1e-9 * base_r * length * parallel
    y = 1 / z0
    out[connected] = np.stack([y + half_b, -y, -y, y + half_b], axis=1)
    return out


def _trafo_zero_sequence(t: NetworkTables, trafo: pd.DataFrame, grid: Grid) -> np.ndarray:
    """(n_trafo, 4) zero-sequence two-ports of the transformers (pandapower's T model).

    Dyn: the delta winding lets no zero-sequence current through, the earthed star side sees
    its leakage and magnetising impedance to earth. YNyn: a T circuit between both sides.
    """
    connected = grid.branch_state[grid.n_line :] == COMPUTED
    out = np.zeros((len(trafo), 4), complex)
    if not connected.any():
        return out
    used = trafo[connected]
    hint = "the zero sequence of transformers"
    missing = [c for c in TRAFO_COLUMNS if c not in used]
    if missing:
        raise NetworkError(f"trafo table lacks the column(s) {', '.join(missing)}, needed for {hint}")
    group = used["vector_group"].astype(str).str.lower().to_numpy()
    unsupported = ~np.isin(group, VECTOR_GROUPS)
    if unsupported.any():
        groups = ", ".join(sorted(set(used["vector_group"][unsupported].astype(str))))
        raise NetworkError(
            f"trafo {_list(used.index[unsupported])}: vector group {groups} is not supported by the "
            "three-phase load flow (supported: Dyn, YNyn, as pandapower's runpp_3ph; give the phase shift "
            "in shift_degree)"
        )
    values = _numbers(used, "trafo", TRAFO_COLUMNS[1:], hint)
    vn_hv, vn_lv, shift = (a[connected] for a in trafo_tap_voltages(trafo))
    hv_kv = grid.node_base_kv[grid.branch_from[grid.n_line :][connected]]
    lv_kv = grid.node_base_kv[grid.branch_to[grid.n_line :][connected]]
    sn = used["sn_mva"].to_numpy(float)
    parallel = used["parallel"].to_numpy(float)
    vk0 = np.where(
        np.abs(values["vk0_percent"]) > 1e-8, values["vk0_percent"], used["vk_percent"].to_numpy(float)
    )
    vkr0 = np.where(
        np.abs(values["vkr0_percent"]) > 1e-8, values["vkr0_percent"], used["vkr_percent"].to_numpy(float)
    )
    tap_lv = (vn_lv / lv_kv) ** 2 * t.sn_mva
    tap_hv = (vn_hv / hv_kv) ** 2 * t.sn_mva
    z_sc = vk0 / 100 / sn * tap_lv
    r_sc = vkr0 / 100 / sn * tap_lv
    with np.errstate(invalid="ignore"):
        z_k = (r_sc + 1j * np.sign(z_sc) * np.sqrt(z_sc**2 - r_sc**2)) / parallel
    if "xn_ohm" in used and (used["xn_ohm"].fillna(0).astype(float) != 0).any():
        marked = used["xn_ohm"].fillna(0).astype(float) != 0
        raise NetworkError(
            f"trafo {_list(used.index[marked])}: neutral earthing impedance (xn_ohm) is not supported"
        )
    z_m_abs = z_sc * values["mag0_percent"] / 100
    x_m = z_m_abs / np.sqrt(values["mag0_rx"] ** 2 + 1)
    z_m = (x_m * values["mag0_rx"] + 1j * x_m) / parallel
    z1 = values["si0_hv_partial"] * z_k
    z2 = (1 - values["si0_hv_partial"]) * z_k
    z_sum = z1 * z2 + z2 * z_m + z1 * z_m
    with np.errstate(divide="ignore", invalid="ignore"):
        y_hv, y_lv, y_between = z2 / z_sum, z1 / z_sum, z_m / z_sum
    ratio = (vn_hv / vn_lv) / (hv_kv / lv_kv)
    tap = ratio * np.exp(1j * np.deg2rad(shift))
    two_port = np.zeros((len(used), 4), complex)
    dyn = group == "dyn"
    two_port[dyn, 3] = y_between[dyn] + y_lv[dyn]
    ynyn = group == "ynyn"
    two_port[ynyn, 0] = (y_between + y_hv * tap_lv / tap_hv * ratio**2)[ynyn] / ratio[ynyn] ** 2
    two_port[ynyn, 1] = -y_between[ynyn] / tap[ynyn].conj()
    two_port[ynyn, 2] = -y_between[ynyn] / tap[ynyn]
    two_port[ynyn, 3] = (y_between + y_lv)[ynyn]
    if not np.isfinite(two_port).all():
        bad = ~np.isfinite(two_port).all(axis=1)
        raise NetworkError(f"trafo {_list(used.index[bad])}: zero-sequence impedance is zero or undefined")
    out[connected] = two_port
    return out


def _energised_ends(t: NetworkTables, grid: Grid) -> np.ndarray:
    """(n_line + n_trafo, 2): whether the bus at each end of each branch is energised."""
    ends = np.concatenate(
        [t.line[["from_bus", "to_bus"]].to_numpy(), t.trafo[["hv_bus", "lv_bus"]].to_numpy()]
    )
    return np.isin(ends, grid.bus_ids)


def _stamp(grid: Grid, two_ports: np.ndarray) -> sp.csr_matrix:
    """Node admittance matrix of the connected lines' and transformers' two-ports."""
    connected = np.flatnonzero(grid.branch_state == COMPUTED)
    f, to = grid.branch_from[connected], grid.branch_to[connected]
    y = two_ports[connected]
    rows = np.concatenate([f, f, to, to])
    cols = np.concatenate([f, to, f, to])
    values = np.concatenate([y[:, 0], y[:, 1], y[:, 2], y[:, 3]])
    return sp.csr_matrix((values, (rows, cols)), shape=(grid.n_node, grid.n_node))


def _check_earthing(y0: sp.csr_matrix, grid: Grid) -> None:
    """Every node needs a zero-sequence path to earth, or the zero-sequence system is singular."""
    coupling = sp.csr_matrix(abs(y0))
    coupling.setdiag(0)
    coupling.eliminate_zeros()
    _, label = connected_components(coupling, directed=False)
    to_earth = np.abs(np.asarray(y0.sum(axis=1)).ravel())
    scale = np.abs(y0.diagonal()).max(initial=1.0)
    earthed = np.bincount(label, to_earth > 1e-9 * scale, minlength=label.max() + 1) > 0
    floating = ~earthed[label]
    if floating.any():
        buses = grid.bus_ids[floating[grid.node_of_bus]]
        raise NetworkError(
            f"bus {_list(buses)}: no zero-sequence path to earth (no earthed transformer star point or "
            "external grid reaches them); the three-phase load flow needs one"
        )


def _phase_loads(t: NetworkTables, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Wye (a, b, c) and delta (ab, bc, ca) complex loads per energised bus in kW + j kvar."""
    wye = np.zeros((grid.n_bus, 3), complex)
    delta = np.zeros((grid.n_bus, 3), complex)
    position = dict(zip(grid.bus_ids.tolist(), range(grid.n_bus), strict=True))
    for name, sign in (("load", 1.0), ("storage", 1.0), ("sgen", -1.0)):
        table = _in_service(getattr(t, name))
        if table.empty:
            continue
        power = _column(table, "p_mw", 0.0) + 1j * _column(table, "q_mvar", 0.0)
        power = sign * power * _column(table, "scaling", 1.0) * 1e3 / 3
        is_delta = _is_delta(table)
        for bus, value, connection in zip(table["bus"], power, is_delta, strict=True):
            if bus in position:
                (delta if connection else wye)[position[bus]] += value
    for name, sign in (("asymmetric_load", 1.0), ("asymmetric_sgen", -1.0)):
        table = _in_service(getattr(t, name))
        if table.empty:
            continue
        values = _numbers(table, name, ASYMMETRIC_COLUMNS, "its per-phase power")
        power = np.stack(
            [values[f"p_{p}_mw"] + 1j * _column(table, f"q_{p}_mvar", 0.0) for p in PHASES], axis=1
        )
        power = sign * power * _column(table, "scaling", 1.0)[:, None] * 1e3
        is_delta = _is_delta(table, name)
        unknown_bus = ~table["bus"].isin(grid.all_bus_ids)
        if unknown_bus.any():
            raise NetworkError(f"{name} {_list(table.index[unknown_bus])}: bus refers to a missing bus")
        dead = ~table["bus"].isin(grid.bus_ids) & (np.abs(power) > 0).any(axis=1)
        if dead.any():
            raise NetworkError(
                f"{name} {_list(table.index[dead])}: carries load at a bus not connected to an external grid"
            )
        for bus, value, connection in zip(table["bus"], power, is_delta, strict=True):
            if bus in position:
                (delta if connection else wye)[position[bus]] += value
    return wye, delta


def _column(table: pd.DataFrame, column: str, default: float) -> np.ndarray:
    """A numeric column with empty values (or the whole column missing) set to ``default``."""
    if column not in table:
        return np.full(len(table), default)
    return pd.to_numeric(table[column], errors="coerce").fillna(default).to_numpy(float)


def _is_delta(table: pd.DataFrame, strict: str | None = None) -> np.ndarray:
    """Whether each element is connected between phases (pandapower's ``type == "delta"``).

    With ``strict`` (the table's name) a type other than "wye" or "delta" is an error: in the
    asymmetric tables it says how the phases are connected. (In ``load`` and ``sgen`` it may
    name the kind of element, e.g. "PV"; those count as wye.)"""
    if "type" not in table:
        return np.zeros(len(table), bool)
    kind = table["type"].astype(object).where(table["type"].notna(), "wye").astype(str).str.lower()
    if strict is not None and not kind.isin(["wye", "delta"]).all():
        bad = ~kind.isin(["wye", "delta"])
        raise NetworkError(f"{strict} {_list(table.index[bad])}: type must be 'wye' or 'delta'")
    return (kind == "delta").to_numpy()
