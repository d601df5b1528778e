"""Per-unit grid model: topology, admittances and limits, built once per network.

``build_grid`` turns element tables (pandapower's column names and units) into a ``Grid``:
calculation nodes (buses fused by closed bus-bus switches, plus auxiliary nodes at open branch
ends), the series admittance matrix and the shunt admittances kept apart (HELM needs them
separately), the branch two-port admittances for line and transformer loadings, and the voltage
and thermal limits for later use by OCM. Out-of-service elements and buses, open switches and
unsupplied (load-free) islands are honoured as pandapower does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ocm.grid.branch_models import BranchModel, impedance_switch_model, line_model, trafo_model
from ocm.grid.errors import NetworkError

# Columns that may be missing or empty, with pandapower's defaults.
DEFAULTS: dict[str, dict[str, object]] = {
    "bus": {"name": None, "in_service": True, "min_vm_pu": 0.95, "max_vm_pu": 1.05},
    "line": {
        "name": None,
        "c_nf_per_km": 0.0,
        "g_us_per_km": 0.0,
        "parallel": 1,
        "df": 1.0,
        "in_service": True,
        "max_loading_percent": 100.0,
    },
    "trafo": {
        "name": None,
        "pfe_kw": 0.0,
        "i0_percent": 0.0,
        "shift_degree": 0.0,
        "parallel": 1,
        "df": 1.0,
        "in_service": True,
        "max_loading_percent": 100.0,
    },
    "switch": {"name": None, "closed": True, "z_ohm": 0.0},
    "shunt": {"name": None, "p_mw": 0.0, "vn_kv": np.nan, "step": 1.0, "in_service": True},
    "load": {
        "name": None,
        "q_mvar": 0.0,
        "scaling": 1.0,
        "const_z_p_percent": 0.0,
        "const_z_q_percent": 0.0,
        "const_i_p_percent": 0.0,
        "const_i_q_percent": 0.0,
        "in_service": True,
    },
    "sgen": {"name": None, "q_mvar": 0.0, "scaling": 1.0, "in_service": True},
    "storage": {"name": None, "q_mvar": 0.0, "scaling": 1.0, "in_service": True},
    "ext_grid": {"name": None, "vm_pu": 1.0, "va_degree": 0.0, "in_service": True},
}

REQUIRED: dict[str, tuple[str, ...]] = {
    "bus": ("vn_kv",),
    "line": ("from_bus", "to_bus", "length_km", "r_ohm_per_km", "x_ohm_per_km", "max_i_ka"),
    "trafo": (
        "hv_bus",
        "lv_bus",
        "sn_mva",
        "vn_hv_kv",
        "vn_lv_kv",
        "vk_percent",
        "vkr_percent",
    ),
    "switch": ("bus", "element", "et"),
    "shunt": ("bus", "q_mvar"),
    "load": ("bus", "p_mw"),
    "sgen": ("bus", "p_mw"),
    "storage": ("bus", "p_mw"),
    "ext_grid": ("bus",),
}

# Branch states for the loading results.
COMPUTED, ZERO, UNDEFINED, UNRATED = 0, 1, 2, 3


@dataclass
class NetworkTables:
    """Element tables of a network with pandapower's column names and units (MW, kV, ohm/km)."""

    name: str
    sn_mva: float
    f_hz: float
    bus: pd.DataFrame
    line: pd.DataFrame
    trafo: pd.DataFrame
    switch: pd.DataFrame
    shunt: pd.DataFrame
    load: pd.DataFrame
    sgen: pd.DataFrame
    storage: pd.DataFrame
    ext_grid: pd.DataFrame
    # single-phase and unbalanced elements (pandapower's tables); only the three-phase model
    # (``ocm.grid.three_phase``) takes them, the balanced model refuses in-service ones
    asymmetric_load: pd.DataFrame = field(default_factory=pd.DataFrame)
    asymmetric_sgen: pd.DataFrame = field(default_factory=pd.DataFrame)

    def has_asymmetric_elements(self) -> bool:
        """Whether any in-service asymmetric load or generator is present."""
        return any(
            not table.empty and table.get("in_service", pd.Series(True, index=table.index)).astype(bool).any()
            for table in (self.asymmetric_load, self.asymmetric_sgen)
        )


@dataclass(eq=False)
class Grid:
    """A network ready for load flows; arrays are in internal order.

    User-facing quantities are indexed by the energised buses ``bus_ids`` (pandapower bus
    indices in table order), all lines ``line_ids`` and all transformers ``trafo_ids``.
    Loads are in load convention (consumption positive) in kW/kvar. The calculation model
    works on ``n_node`` nodes in per unit of ``sn_mva``: ``node_of_bus`` maps buses to nodes.
    Constant-impedance load shares are per node and, as in pandapower, apply to a node's
    whole net load.
    """

    name: str
    sn_mva: float
    # energised buses
    bus_ids: np.ndarray
    bus_names: np.ndarray
    bus_vn_kv: np.ndarray
    min_vm_pu: np.ndarray
    max_vm_pu: np.ndarray
    base_load_kw: np.ndarray
    base_load_kvar: np.ndarray
    # all lines and trafos, and all buses of the network (for pandapower-indexed results)
    line_ids: np.ndarray
    line_names: np.ndarray
    line_max_loading_percent: np.ndarray
    trafo_ids: np.ndarray
    trafo_names: np.ndarray
    trafo_max_loading_percent: np.ndarray
    all_bus_ids: np.ndarray
    all_bus_names: np.ndarray
    # calculation model: nodes in per unit, lines then trafos as branches
    node_of_bus: np.ndarray
    node_base_kv: np.ndarray
    slack_nodes: np.ndarray
    slack_voltage: np.ndarray
    y_series: sp.csr_matrix
    y_shunt: np.ndarray
    const_z_p: np.ndarray
    const_z_q: np.ndarray
    branch_from: np.ndarray
    branch_to: np.ndarray
    branch_admittance: np.ndarray  # (n_branch, 4): y_ff, y_ft, y_tf, y_tt incl. shunts
    branch_factor: np.ndarray  # (n_branch, 2): loading percent per pu current at each end
    branch_state: np.ndarray
    pq_nodes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.pq_nodes = np.setdiff1d(np.arange(self.n_node), self.slack_nodes)

    @property
    def n_bus(self) -> int:
        return len(self.bus_ids)

    @property
    def n_node(self) -> int:
        return len(self.node_base_kv)

    @property
    def n_line(self) -> int:
        return len(self.line_ids)

    @property
    def n_trafo(self) -> int:
        return len(self.trafo_ids)

    def bus_positions(self, ids) -> np.ndarray:
        """Internal positions of pandapower bus indices (raises KeyError for unknown buses)."""
        lookup = dict(zip(self.bus_ids.tolist(), range(self.n_bus), strict=True))
        return np.array([lookup[int(i)] for i in np.atleast_1d(ids)], dtype=np.int64)


def build_grid(tables: NetworkTables) -> Grid:
    """Per-unit model of ``tables``; raises ``NetworkError`` naming any element at fault."""
    if not (tables.sn_mva > 0 and tables.f_hz > 0):
        raise NetworkError("sn_mva and f_hz of the network must be positive")
    if tables.has_asymmetric_elements():
        raise NetworkError(
            "the network has asymmetric loads or generators (asymmetric_load, asymmetric_sgen): "
            "use the three-phase load flow (ocm.grid.three_phase, lec loadflow --3ph)"
        )
    t = _complete_tables(tables)
    _check_references(t)
    _check_values(t)
    return _GridBuilder(t).build()


def _complete_tables(tables: NetworkTables) -> NetworkTables:
    """Copies of the tables with missing columns and empty values set to their defaults."""
    completed = {}
    for name, defaults in DEFAULTS.items():
        table = getattr(tables, name).copy()
        missing = [c for c in REQUIRED[name] if c not in table]
        if missing:
            raise NetworkError(f"{name} table lacks the column(s) {', '.join(missing)}")
        for column, default in defaults.items():
            if column not in table:
                table[column] = default
            elif default is not None and not (isinstance(default, float) and np.isnan(default)):
                values = table[column].to_numpy(dtype=object)
                filled = np.where(pd.isna(values), default, values)
                table[column] = pd.Series(filled, index=table.index).infer_objects()
        if "in_service" in defaults:
            table["in_service"] = table["in_service"].astype(bool)
        completed[name] = table
    return NetworkTables(
        tables.name,
        tables.sn_mva,
        tables.f_hz,
        **completed,
        asymmetric_load=tables.asymmetric_load,
        asymmetric_sgen=tables.asymmetric_sgen,
    )


def _check_references(t: NetworkTables) -> None:
    """Every in-service element refers to existing buses (and switches to existing branches)."""
    buses = set(t.bus.index.tolist())
    for name, columns in {
        "line": ("from_bus", "to_bus"),
        "trafo": ("hv_bus", "lv_bus"),
        "shunt": ("bus",),
        "load": ("bus",),
        "sgen": ("bus",),
        "storage": ("bus",),
        "ext_grid": ("bus",),
        "switch": ("bus",),
    }.items():
        table = getattr(t, name)
        for column in columns:
            bad = ~table[column].isin(buses)
            if name != "switch":
                bad &= table["in_service"]
            if bad.any():
                raise NetworkError(f"{name} {_list(table.index[bad])}: {column} refers to a missing bus")
    et = t.switch["et"].astype(str)
    unknown = ~et.isin(["b", "l", "t"])
    if unknown.any():
        raise NetworkError(
            f"switch {_list(t.switch.index[unknown])}: element type (et) must be 'b', 'l' or 't'; "
            "switches at three-winding transformers ('t3') are not supported"
        )
    for kind, table, ends in (("b", t.bus, None), ("l", t.line, ("from_bus", "to_bus"))):
        sw = t.switch[et == kind]
        bad = ~sw["element"].isin(table.index)
        if bad.any():
            raise NetworkError(f"switch {_list(sw.index[bad])}: element does not exist")
        if ends is not None:
            _check_switch_ends(sw, table, ends, "line")
    sw = t.switch[et == "t"]
    bad = ~sw["element"].isin(t.trafo.index)
    if bad.any():
        raise NetworkError(f"switch {_list(sw.index[bad])}: element does not exist")
    _check_switch_ends(sw, t.trafo, ("hv_bus", "lv_bus"), "trafo")


def _check_switch_ends(sw: pd.DataFrame, table: pd.DataFrame, ends, kind: str) -> None:
    branch = table.loc[sw["element"].to_numpy()]
    at_end = (branch[ends[0]].to_numpy() == sw["bus"].to_numpy()) | (
        branch[ends[1]].to_numpy() == sw["bus"].to_numpy()
    )
    if not at_end.all():
        raise NetworkError(
            f"switch {_list(sw.index[~at_end])}: its bus is not an end of {kind} "
            f"{_list(sw['element'][~at_end])}"
        )


def _check_values(t: NetworkTables) -> None:
    """Physical parameters of in-service elements are finite and meaningful."""
    bus_on = t.bus["in_service"]
    _require(t.bus[bus_on], "bus", "vn_kv", lambda v: v > 0, "must be positive")
    line = t.line[t.line["in_service"]]
    for column in ("length_km", "r_ohm_per_km", "x_ohm_per_km", "c_nf_per_km", "g_us_per_km"):
        _require(line, "line", column, lambda v: v >= 0, "must be finite and not negative")
    _require(line, "line", "parallel", lambda v: v >= 1, "must be at least 1")
    _require(line, "line", "df", lambda v: v > 0, "must be positive")
    negative_rating = line["max_i_ka"].astype(float) < 0  # NaN (unknown) gives NaN loadings
    if negative_rating.any():
        raise NetworkError(f"line {_list(line.index[negative_rating])}: max_i_ka must not be negative")
    zero = (line["length_km"] == 0) | ((line["r_ohm_per_km"] == 0) & (line["x_ohm_per_km"] == 0))
    if zero.any():
        raise NetworkError(
            f"line {_list(line.index[zero])} has zero impedance (length_km = 0 or "
            "r_ohm_per_km = x_ohm_per_km = 0); model it as a closed bus-bus switch"
        )
    trafo = t.trafo[t.trafo["in_service"]]
    for column in ("sn_mva", "vn_hv_kv", "vn_lv_kv", "df"):
        _require(trafo, "trafo", column, lambda v: v > 0, "must be positive")
    _require(trafo, "trafo", "parallel", lambda v: v >= 1, "must be at least 1")
    _require(trafo, "trafo", "vk_percent", lambda v: v > 0, "must be positive (zero impedance)")
    _require(trafo, "trafo", "vkr_percent", lambda v: v >= 0, "must be finite and not negative")
    for column in ("pfe_kw", "i0_percent"):
        _require(trafo, "trafo", column, lambda v: v >= 0, "must be finite and not negative")
    _require(trafo, "trafo", "shift_degree", np.isfinite, "must be finite")
    too_resistive = trafo["vkr_percent"] > trafo["vk_percent"]
    if too_resistive.any():
        raise NetworkError(f"trafo {_list(trafo.index[too_resistive])}: vkr_percent exceeds vk_percent")
    for column in ("tap_dependency_table", "tap_dependent_impedance"):
        if column in trafo and trafo[column].fillna(False).astype(bool).any():
            marked = trafo[column].fillna(False).astype(bool)
            raise NetworkError(
                f"trafo {_list(trafo.index[marked])}: tap-dependent impedance ({column}) is not supported"
            )
    shunt = t.shunt[t.shunt["in_service"]]
    for column in ("p_mw", "q_mvar", "step"):
        _require(shunt, "shunt", column, np.isfinite, "must be finite")
    if "step_dependency_table" in shunt and shunt["step_dependency_table"].fillna(False).any():
        marked = shunt["step_dependency_table"].fillna(False).astype(bool)
        raise NetworkError(f"shunt {_list(shunt.index[marked])}: step_dependency_table is not supported")
    for name in ("load", "sgen", "storage"):
        table = getattr(t, name)
        table = table[table["in_service"]]
        for column in ("p_mw", "q_mvar", "scaling"):
            _require(table, name, column, np.isfinite, "must be finite")
    load = t.load[t.load["in_service"]]
    for column in ("const_i_p_percent", "const_i_q_percent"):
        current = load[column] != 0
        if current.any():
            raise NetworkError(
                f"load {_list(load.index[current])}: constant-current loads ({column}) are not "
                "supported; use constant power or constant impedance (const_z_*_percent)"
            )
    for column in ("const_z_p_percent", "const_z_q_percent"):
        _require(load, "load", column, lambda v: (v >= 0) & (v <= 100), "must be 0 to 100")
    ext_grid = t.ext_grid[t.ext_grid["in_service"]]
    _require(ext_grid, "ext_grid", "vm_pu", lambda v: v > 0, "must be positive")
    _require(ext_grid, "ext_grid", "va_degree", np.isfinite, "must be finite")


def _require(table: pd.DataFrame, name: str, column: str, test, message: str) -> None:
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(values) & test(values))
    if bad.any():
        raise NetworkError(f"{name} {_list(table.index[bad])}: {column} {message}")


def _list(index) -> str:
    """Element indices for messages, shortened when there are many."""
    items = [str(i) for i in list(index)]
    return ", ".join(items) if len(items) <= 10 else ", ".join(items[:10]) + f" … ({len(items)})"


class _GridBuilder:
    """Builds a Grid from completed, checked tables in a few explicit steps."""

    def __init__(self, t: NetworkTables):
        self.t = t
        self.bus_position = pd.Series(np.arange(len(t.bus)), index=t.bus.index)
        self.bus_on = t.bus["in_service"].to_numpy(bool)
        self.bus_kv = t.bus["vn_kv"].to_numpy(float)
        self.node_of_position, node_kv = self._fuse_buses()
        self.node_kv = list(node_kv)

    def build(self) -> Grid:
        t = self.t
        slack_nodes, slack_voltage = self._slacks()
        ends, models, in_service = self._branches()
        energised = self._energised(ends, slack_nodes)
        self._reject_loaded_islands(energised)

        keep = np.flatnonzero(energised)
        renumber = np.full(len(energised), -1)
        renumber[keep] = np.arange(len(keep))
        ends = np.where(ends >= 0, renumber[np.maximum(ends, 0)], -1)
        node_kv = np.array(self.node_kv)[keep]
        bus_energised = self.bus_on & energised[np.maximum(self.node_of_position, 0)]
        bus_node = renumber[self.node_of_position[bus_energised]]
        load_kw, load_kvar = self._bus_loads(bus_energised)
        n_branch = len(t.line) + len(t.trafo)
        return Grid(
            name=t.name,
            sn_mva=float(t.sn_mva),
            bus_ids=t.bus.index.to_numpy()[bus_energised],
            bus_names=_names(t.bus)[bus_energised],
            bus_vn_kv=self.bus_kv[bus_energised],
            min_vm_pu=t.bus["min_vm_pu"].to_numpy(float)[bus_energised],
            max_vm_pu=t.bus["max_vm_pu"].to_numpy(float)[bus_energised],
            base_load_kw=load_kw,
            base_load_kvar=load_kvar,
            line_ids=t.line.index.to_numpy(),
            line_names=_names(t.line),
            line_max_loading_percent=t.line["max_loading_percent"].to_numpy(float),
            trafo_ids=t.trafo.index.to_numpy(),
            trafo_names=_names(t.trafo),
            trafo_max_loading_percent=t.trafo["max_loading_percent"].to_numpy(float),
            all_bus_ids=t.bus.index.to_numpy(),
            all_bus_names=_names(t.bus),
            node_of_bus=bus_node,
            node_base_kv=node_kv,
            slack_nodes=renumber[slack_nodes],
            slack_voltage=slack_voltage,
            y_series=self._series_matrix(ends, models, len(keep)),
            y_shunt=self._shunt_vector(ends, models, len(keep), renumber),
            const_z_p=self._const_z_share("const_z_p_percent", renumber, len(keep)),
            const_z_q=self._const_z_share("const_z_q_percent", renumber, len(keep)),
            branch_from=ends[:n_branch, 0],
            branch_to=ends[:n_branch, 1],
            branch_admittance=_two_ports(_concat(models[:2])),
            branch_factor=self._loading_factors(ends[:n_branch], node_kv),
            branch_state=self._branch_states(ends[:n_branch], in_service, bus_energised),
        )

    def _fuse_buses(self) -> tuple[np.ndarray, np.ndarray]:
        """Node of every bus position (-1 if out of service) and the nodes' nominal voltages.

        Buses joined by closed bus-bus switches without impedance become one node, named
        after its lowest bus position unless one of its buses has an external grid.
        """
        t = self.t
        parent = np.arange(len(t.bus))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        sw = t.switch
        fuse = (sw["et"] == "b") & sw["closed"].astype(bool) & (sw["z_ohm"].astype(float) <= 0)
        for a, b in zip(sw.loc[fuse, "bus"], sw.loc[fuse, "element"], strict=True):
            pa, pb = self.bus_position[a], self.bus_position[b]
            if self.bus_on[pa] and self.bus_on[pb]:
                ra, rb = root(pa), root(pb)
                parent[max(ra, rb)] = min(ra, rb)
        roots = np.array([root(p) if self.bus_on[p] else -1 for p in range(len(t.bus))])
        representative = {r: r for r in np.unique(roots[roots >= 0]).tolist()}
        eg = t.ext_grid[t.ext_grid["in_service"]]
        slack_positions = set(self.bus_position[eg["bus"]].tolist())
        for position in sorted(slack_positions):
            r = roots[position]
            if r >= 0 and representative[r] not in slack_positions:
                representative[r] = position
        node_of_root = {r: n for n, r in enumerate(representative)}
        node_of_position = np.array([node_of_root.get(r, -1) for r in roots.tolist()], dtype=int)
        node_kv = np.array([self.bus_kv[p] for p in representative.values()])
        return node_of_position, node_kv

    def _slacks(self) -> tuple[np.ndarray, np.ndarray]:
        """Slack nodes and their complex voltage set points (one per node)."""
        t = self.t
        eg = t.ext_grid[t.ext_grid["in_service"]]
        eg = eg[self.bus_on[self.bus_position[eg["bus"]].to_numpy()]]
        if eg.empty:
            raise NetworkError(
                "the network has no in-service external grid (ext_grid) at an in-service bus; "
                "a slack bus is needed"
            )
        nodes = self.node_of_position[self.bus_position[eg["bus"]].to_numpy()]
        voltage = eg["vm_pu"].to_numpy(float) * np.exp(1j * np.deg2rad(eg["va_degree"].to_numpy()))
        unique_nodes = np.unique(nodes)
        unique_voltage = np.empty(len(unique_nodes), complex)
        for k, node in enumerate(unique_nodes):
            at_node = voltage[nodes == node]
            if np.abs(at_node - at_node[0]).max() > 1e-12:
                raise NetworkError(
                    f"ext_grid {_list(eg.index[nodes == node])}: different voltage set points at the same bus"
                )
            unique_voltage[k] = at_node[0]
        return unique_nodes, unique_voltage

    def _branches(self) -> tuple[np.ndarray, list[BranchModel], np.ndarray]:
        """End nodes (-1: not connected), pi models and service state of every branch.

        Order: lines, transformers, impedance bus-bus switches. As in pandapower, an open
        switch at a line or trafo end, or an out-of-service bus at a line end, leaves that end
        on an auxiliary node of its own; a trafo at an out-of-service bus is disconnected.
        """
        t = self.t
        sw = t.switch[~t.switch["closed"].astype(bool)]
        open_ends = set(zip(sw["et"], sw["element"], sw["bus"], strict=True))
        ends, in_service = [], []
        for kind, table, columns in (
            ("l", t.line, ["from_bus", "to_bus"]),
            ("t", t.trafo, ["hv_bus", "lv_bus"]),
        ):
            for index, buses, on in zip(
                table.index, table[columns].to_numpy(), table["in_service"], strict=True
            ):
                in_service.append(bool(on))
                positions = [self.bus_position.get(b, -1) for b in buses]
                buses_on = [p >= 0 and self.bus_on[p] for p in positions]
                if not on or (kind == "t" and not all(buses_on)):
                    ends.append([-1, -1])
                    continue
                ends.append(
                    [
                        self.node_of_position[p]
                        if bus_on and (kind, index, bus) not in open_ends
                        else self._aux_node(self.bus_kv[p])
                        for bus, p, bus_on in zip(buses, positions, buses_on, strict=True)
                    ]
                )
        impedance = t.switch[
            (t.switch["et"] == "b") & t.switch["closed"].astype(bool) & (t.switch["z_ohm"].astype(float) > 0)
        ]
        for a, b in zip(impedance["bus"], impedance["element"], strict=True):
            pa, pb = self.bus_position[a], self.bus_position[b]
            on = bool(self.bus_on[pa] and self.bus_on[pb])
            in_service.append(on)
            ends.append([self.node_of_position[pa], self.node_of_position[pb]] if on else [-1, -1])
        with np.errstate(all="ignore"):  # unchecked parameters of out-of-service branches
            models = [
                line_model(t.line, self._kv(t.line["from_bus"]), t.sn_mva, t.f_hz),
                trafo_model(t.trafo, self._kv(t.trafo["hv_bus"]), self._kv(t.trafo["lv_bus"]), t.sn_mva),
                impedance_switch_model(
                    impedance["z_ohm"].to_numpy(float), self._kv(impedance["bus"]), t.sn_mva
                ),
            ]
        return np.array(ends, dtype=np.int64).reshape(-1, 2), models, np.array(in_service, bool)

    def _aux_node(self, base_kv: float) -> int:
        self.node_kv.append(base_kv)
        return len(self.node_kv) - 1

    def _kv(self, buses: pd.Series) -> np.ndarray:
        """Nominal voltage of the given buses (1 kV for unknown buses of unused elements)."""
        positions = self.bus_position.reindex(buses.to_numpy()).to_numpy()
        known = ~np.isnan(positions)
        kv = np.ones(len(positions))
        kv[known] = self.bus_kv[positions[known].astype(int)]
        return kv

    def _energised(self, ends: np.ndarray, slack_nodes: np.ndarray) -> np.ndarray:
        """Nodes connected to a slack through connected branches."""
        n = len(self.node_kv)
        active = (ends >= 0).all(axis=1)
        graph = sp.coo_matrix((np.ones(active.sum()), (ends[active, 0], ends[active, 1])), shape=(n, n))
        _, label = connected_components(graph, directed=False)
        return np.isin(label, label[slack_nodes])

    def _reject_loaded_islands(self, energised: np.ndarray) -> None:
        """Buses that carry load but have no path to an external grid are an error."""
        t = self.t
        dead = self.bus_on & ~energised[np.maximum(self.node_of_position, 0)]
        dead_ids = set(t.bus.index[dead].tolist())
        loaded: set = set()
        for name in ("load", "sgen", "storage"):
            table = getattr(t, name)
            carries = table["in_service"] & ((table["p_mw"] != 0) | (table["q_mvar"] != 0))
            loaded |= set(table.loc[carries, "bus"].tolist()) & dead_ids
        if loaded:
            names = _names(t.bus)
            described = []
            for bus in sorted(loaded):
                name = names[self.bus_position[bus]]
                described.append(f"{bus} ({name})" if name else str(bus))
            raise NetworkError(
                f"bus {_list(described)} carry load but are not connected to an external grid "
                "(an island without slack); close a switch, add an ext_grid or take the loads "
                "out of service"
            )

    @staticmethod
    def _series_matrix(ends: np.ndarray, models: list[BranchModel], n: int) -> sp.csr_matrix:
        """Series admittance matrix of the energised nodes (branch series parts and taps)."""
        model = _concat(models)
        active = (ends >= 0).all(axis=1)
        f, to = ends[active, 0], ends[active, 1]
        y = 1 / model.z_series[active]
        tap = model.tap[active]
        rows = np.concatenate([f, f, to, to])
        cols = np.concatenate([f, to, f, to])
        values = np.concatenate([y / abs(tap) ** 2, -y / tap.conj(), -y / tap, y])
        return sp.csr_matrix((values, (rows, cols)), shape=(n, n))

    def _shunt_vector(
        self, ends: np.ndarray, models: list[BranchModel], n: int, renumber: np.ndarray
    ) -> np.ndarray:
        """Shunt admittance per node: branch charging and magnetising, shunt elements."""
        t = self.t
        model = _concat(models)
        active = (ends >= 0).all(axis=1)
        y_shunt = np.zeros(n, complex)
        tap = model.tap[active]
        np.add.at(y_shunt, ends[active, 0], model.y_shunt_from[active] / abs(tap) ** 2)
        np.add.at(y_shunt, ends[active, 1], model.y_shunt_to[active])

        shunt = t.shunt[t.shunt["in_service"]]
        positions = self.bus_position[shunt["bus"]].to_numpy()
        nodes = np.where(self.bus_on[positions], self.node_of_position[positions], -1)
        nodes = np.where(nodes >= 0, renumber[np.maximum(nodes, 0)], -1)
        vn = shunt["vn_kv"].astype(float).to_numpy()
        vn = np.where(np.isnan(vn), self.bus_kv[positions], vn)
        base_kv = np.array(self.node_kv)[np.maximum(self.node_of_position[positions], 0)]
        scale = shunt["step"].to_numpy(float) * (base_kv / vn) ** 2 / t.sn_mva
        y = (shunt["p_mw"].to_numpy(float) - 1j * shunt["q_mvar"].to_numpy(float)) * scale
        np.add.at(y_shunt, nodes[nodes >= 0], y[nodes >= 0])
        return y_shunt

    def _bus_loads(self, bus_energised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Net load per energised bus in kW/kvar: loads + storages - static generators."""
        t = self.t
        p = np.zeros(len(t.bus))
        q = np.zeros(len(t.bus))
        for name, sign in (("load", 1.0), ("storage", 1.0), ("sgen", -1.0)):
            table = getattr(t, name)
            table = table[table["in_service"]]
            positions = self.bus_position[table["bus"]].to_numpy()
            scaling = table["scaling"].to_numpy(float)
            np.add.at(p, positions, sign * table["p_mw"].to_numpy(float) * scaling)
            np.add.at(q, positions, sign * table["q_mvar"].to_numpy(float) * scaling)
        return p[bus_energised] * 1e3, q[bus_energised] * 1e3

    def _const_z_share(self, column: str, renumber: np.ndarray, n: int) -> np.ndarray:
        """Constant-impedance share per node: the mean over its in-service loads (pandapower)."""
        load = self.t.load[self.t.load["in_service"]]
        positions = self.bus_position[load["bus"]].to_numpy()
        nodes = np.where(self.bus_on[positions], self.node_of_position[positions], -1)
        nodes = np.where(nodes >= 0, renumber[np.maximum(nodes, 0)], -1)
        share = load[column].to_numpy(float)[nodes >= 0] / 100
        nodes = nodes[nodes >= 0]
        count = np.bincount(nodes, minlength=n)
        total = np.bincount(nodes, share, minlength=n)
        return np.divide(total, count, out=np.zeros(n), where=count > 0)

    def _branch_states(
        self, ends: np.ndarray, in_service: np.ndarray, bus_energised: np.ndarray
    ) -> np.ndarray:
        """How each line and trafo loading is obtained (pandapower's conventions).

        Computed from the voltages when connected; zero when out of service between energised
        buses; undefined (NaN) next to de-energised buses; infinite for every line rated 0 kA.
        """
        t = self.t
        state = np.where((ends < 0).any(axis=1), UNDEFINED, COMPUTED)
        energised_ids = set(t.bus.index[bus_energised].tolist())
        both_energised = np.concatenate(
            [
                t.line["from_bus"].isin(energised_ids) & t.line["to_bus"].isin(energised_ids),
                t.trafo["hv_bus"].isin(energised_ids) & t.trafo["lv_bus"].isin(energised_ids),
            ]
        )
        off = ~in_service[: len(ends)]
        state[off] = np.where(both_energised[off], ZERO, UNDEFINED)
        line_rating = (t.line["max_i_ka"] * t.line["df"] * t.line["parallel"]).to_numpy(float)
        state[: len(t.line)][line_rating == 0] = UNRATED
        return state

    def _loading_factors(self, ends: np.ndarray, node_kv: np.ndarray) -> np.ndarray:
        """Loading percent per per-unit current at the from and the to end of each branch."""
        t = self.t
        n_line = len(t.line)
        kv = np.where(ends >= 0, node_kv[np.maximum(ends, 0)], np.nan)
        i_base_ka = t.sn_mva / (np.sqrt(3) * kv)
        line_rating = (t.line["max_i_ka"] * t.line["df"] * t.line["parallel"]).to_numpy(float)
        trafo_rating = (t.trafo["sn_mva"] * t.trafo["parallel"] * t.trafo["df"]).to_numpy(float)
        trafo_kv = t.trafo[["vn_hv_kv", "vn_lv_kv"]].to_numpy(float)
        factor = np.empty((len(ends), 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            factor[:n_line] = 100 * i_base_ka[:n_line] / line_rating[:, None]
            factor[n_line:] = 100 * np.sqrt(3) * i_base_ka[n_line:] * trafo_kv / trafo_rating[:, None]
        return factor


def _two_ports(model: BranchModel) -> np.ndarray:
    """(n, 4) admittances y_ff, y_ft, y_tf, y_tt of branches (zero where undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y = 1 / model.z_series
        two_port = np.stack(
            [
                (y + model.y_shunt_from) / abs(model.tap) ** 2,
                -y / model.tap.conj(),
                -y / model.tap,
                y + model.y_shunt_to,
            ],
            axis=1,
        )
    return np.where(np.isfinite(two_port), two_port, 0)


def _concat(models: list[BranchModel]) -> BranchModel:
    return BranchModel(
        *(np.concatenate([getattr(m, f) for m in models]) for f in BranchModel.__dataclass_fields__)
    )


def _names(table: pd.DataFrame) -> np.ndarray:
    names = table["name"].astype(object)
    return names.where(names.notna(), "").astype(str).to_numpy(dtype=object)
