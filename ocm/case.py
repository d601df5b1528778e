"""An OCM case: a network with its flexibilities and its own operating point.

The operating point of a network file is what its elements say: every load, sgen and storage
that is not a flexibility keeps its ``p_mw``/``q_mvar`` (times ``scaling``); flexibilities keep
their reactive power, and their active power is what OCM decides. Inverters with a reactive
power control (``q_control``, ``ocm.grid.reactive``) leave their Q to it: their ``q_mvar`` is
not in the point, their controls and active power are (``OperatingPoint.inverters``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocm.flexibility import Flexibility, flexibilities_from_tables, flexible_load_by_bus
from ocm.grid.errors import NetworkError
from ocm.grid.model import Grid, NetworkTables, build_grid
from ocm.grid.network_io import read_network_tables, tables_from_pandapower
from ocm.grid.reactive import InverterControls, InverterState, inverter_controls_from_tables
from ocm.grid.three_phase import Grid3ph, build_grid_3ph
from ocm.problem import OperatingPoint


@dataclass(frozen=True)
class OcmCase:
    tables: NetworkTables
    grid: Grid | Grid3ph  # Grid3ph: the three-phase case, its point is per bus and phase
    flexibilities: tuple[Flexibility, ...]
    point: OperatingPoint
    controls: InverterControls | None = None  # inverters with a reactive power control

    @property
    def three_phase(self) -> bool:
        return isinstance(self.grid, Grid3ph)


def load_case(path: str | Path, *, allow_no_flexibility: bool = False) -> OcmCase:
    """Case of a network file (pandapower JSON or native); ``NetworkError`` on bad input, and
    when it has no flexibility unless ``allow_no_flexibility``."""
    return case_from_tables(read_network_tables(path), allow_no_flexibility=allow_no_flexibility)


def case_from_pandapower(net) -> OcmCase:
    """Case of an in-memory ``pandapowerNet``."""
    return case_from_tables(tables_from_pandapower(net))


def case_from_tables(
    tables: NetworkTables, *, allow_no_flexibility: bool = False, three_phase: bool | None = None
) -> OcmCase:
    """The case of ``tables``: three-phase when asked, or (``three_phase=None``) when the network
    has asymmetric elements or single-phase flexibilities; balanced otherwise."""
    if three_phase is None:
        three_phase = tables.has_asymmetric_elements() or _single_phase_flexibilities(tables)
    if three_phase:
        return _three_phase_case(tables, allow_no_flexibility)
    grid = build_grid(tables)
    flexibilities = flexibilities_from_tables(tables, grid, allow_none=allow_no_flexibility)
    p_kw = grid.base_load_kw - flexible_load_by_bus(tables, grid, flexibilities)
    controls = inverter_controls_from_tables(tables, grid)
    if controls is None:
        return OcmCase(tables, grid, flexibilities, OperatingPoint(p_kw, grid.base_load_kvar.copy()))
    q_kvar = grid.base_load_kvar - controls.by_bus(controls.table_q_kvar, grid.n_bus)
    point = OperatingPoint(p_kw, q_kvar, InverterState(controls, controls.table_p_kw.copy()))
    return OcmCase(tables, grid, flexibilities, point, controls)


def _single_phase_flexibilities(tables: NetworkTables) -> bool:
    """Whether a load, sgen or storage table marks an in-service element as single-phase."""
    for name in ("load", "sgen", "storage"):
        table = getattr(tables, name)
        if "phase" in table and not table.empty:
            phases = table["phase"].dropna().astype(str).str.strip().str.lower()
            if (phases.isin(["a", "b", "c"])).any():
                return True
    return False


def _three_phase_case(tables: NetworkTables, allow_no_flexibility: bool) -> OcmCase:
    """The case on the three-phase model: the point is (n_bus, 3) per phase. A flexibility's own
    power leaves the phases the model put it on (a ``load``/``sgen``/``storage`` is spread evenly)."""
    grid = build_grid_3ph(tables)
    flexibilities = flexibilities_from_tables(tables, grid.balanced, allow_none=allow_no_flexibility)
    own = flexible_load_by_bus(tables, grid.balanced, flexibilities)
    if inverter_controls_from_tables(tables, grid.balanced) is not None:
        raise NetworkError(
            "inverter reactive power controls (q_control) are not supported by the three-phase OCM"
        )
    p_kw = grid.base_load_kw - own[:, None] / 3
    return OcmCase(tables, grid, flexibilities, OperatingPoint(p_kw, grid.base_load_kvar.copy()))
