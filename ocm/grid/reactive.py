"""Reactive power control of PV and battery inverters, as grid codes ask for it, in the load flow.

Two characteristics, declared per ``sgen`` or ``storage`` row of the network (column
``q_control``; see docs/ocm.md, *Inverter reactive power*):

- ``cosphi_p``, cos φ(P) (EN 50549-1, VDE-AR-N 4105 standard curve): cos φ = 1 while the
  generated power is at most ``cosphi_p_start_pu`` (default 0.5) of the rating, then falling
  linearly to ``cosphi_min`` (default 0.9) underexcited at ``cosphi_p_end_pu`` (default 1.0)
  and beyond. Only generation counts: a charging battery runs at cos φ = 1.
- ``qv``, Q(V) (IEEE 1547-2018 category B defaults, EN 50549-1 alike): ``qv_q_max_pu``
  (default 0.44) of the rating overexcited (injecting, raising the voltage) up to ``qv_v1_pu``
  (0.92), linearly to 0 at ``qv_v2_pu`` (0.98), 0 in the dead band up to ``qv_v3_pu`` (1.02),
  linearly to the same amount underexcited (absorbing) at ``qv_v4_pu`` (1.08) and above.

The rating is the inverter's apparent power ``sn_mva``, the reference of both curves (as in
pandapower's ``DERController``), and it caps the reactive power: ``|Q| ≤ sqrt(S² − P²)``
(active power has priority). The curves are pandapower's ``CosphiPCurve`` and ``QVCurve``.

``solve_with_controls`` runs the batched HELM load flow with the controlled Q: cos φ(P) depends
only on each inverter's own P and is set once; Q(V) depends on the voltage at the inverter's
bus, so the load flow is repeated in a damped fixed-point iteration until no inverter's Q moves
by more than ``tolerance_kvar``. All powers here are in kW/kvar, load convention (consumption
positive: a generator's P is negative, an absorbing, underexcited inverter's Q positive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ocm.grid.errors import NetworkError
from ocm.grid.helm import HelmResult, HelmSolver
from ocm.grid.model import Grid, NetworkTables

CONTROL_ELEMENTS = ("sgen", "storage")
COSPHI_P, QV = "cosphi_p", "qv"
MODES = ("", COSPHI_P, QV)
# Parameter columns and their standard values.
COSPHI_P_DEFAULTS = {"cosphi_p_start_pu": 0.5, "cosphi_p_end_pu": 1.0, "cosphi_min": 0.9}
QV_DEFAULTS = {
    "qv_v1_pu": 0.92,
    "qv_v2_pu": 0.98,
    "qv_v3_pu": 1.02,
    "qv_v4_pu": 1.08,
    "qv_q_max_pu": 0.44,
}
LOAD_SIGN = {"sgen": -1.0, "storage": 1.0}  # load-convention sign of each element's p_mw/q_mvar
TOLERANCE_KVAR = 1e-3
MAX_ITERATIONS = 40
MIN_DAMPING = 1 / 16


@dataclass(frozen=True)
class InverterControls:
    """The controlled inverters of a network (in-service, at energised buses), in table order,
    sgens first; arrays over the inverters."""

    element: tuple[str, ...]  # "sgen" or "storage"
    index: np.ndarray  # pandapower index in its table
    bus_position: np.ndarray  # position of its bus in grid.bus_ids
    voltage_dependent: np.ndarray  # True: Q(V), False: cos φ(P)
    s_rated_kva: np.ndarray
    cosphi_p_start_pu: np.ndarray  # NaN for Q(V) inverters
    cosphi_p_end_pu: np.ndarray
    cosphi_min: np.ndarray
    qv_v_pu: np.ndarray  # (n, 4) V1..V4, NaN for cos φ(P) inverters
    qv_q_max_pu: np.ndarray
    table_p_kw: np.ndarray  # the element's p_mw × scaling, load convention
    table_q_kvar: np.ndarray  # its q_mvar × scaling, load convention: what the control replaces

    def __len__(self) -> int:
        return len(self.index)

    @property
    def keys(self) -> list[str]:
        """``"<element>.<index>"`` per inverter, as flexibility keys."""
        return [f"{e}.{i}" for e, i in zip(self.element, self.index.tolist(), strict=True)]

    @property
    def any_voltage_dependent(self) -> bool:
        return bool(self.voltage_dependent.any())

    def q_kvar(self, p_kw, vm_pu) -> np.ndarray:
        """Reactive power (load convention) at active power ``p_kw`` (load convention) and bus
        voltage ``vm_pu``, both (..., n); ``vm_pu`` is ignored for cos φ(P) inverters."""
        p = np.asarray(p_kw, dtype=float)
        s = self.s_rated_kva
        generation = np.maximum(-p, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.clip(
                (generation / s - self.cosphi_p_start_pu) / (self.cosphi_p_end_pu - self.cosphi_p_start_pu),
                0.0,
                1.0,
            )
            cosphi = 1.0 - share * (1.0 - self.cosphi_min)
            q_cosphi = -generation * np.sqrt(1.0 - cosphi**2) / cosphi
            vm = np.asarray(vm_pu, dtype=float)
            v1, v2, v3, v4 = self.qv_v_pu.T
            raise_share = np.clip((v2 - vm) / (v2 - v1), 0.0, 1.0)
            lower_share = np.clip((vm - v3) / (v4 - v3), 0.0, 1.0)
            q_qv = self.qv_q_max_pu * s * (raise_share - lower_share)
        q_generated = np.where(self.voltage_dependent, q_qv, q_cosphi)
        cap = np.sqrt(np.maximum(s**2 - p**2, 0.0))
        return -np.clip(q_generated, -cap, cap)

    def q_slope(self, p_kw, vm_pu) -> np.ndarray:
        """d Q / d V of ``q_kvar`` (kvar per pu, ≥ 0), (..., n): non-zero only on the sloped parts
        of Q(V) where the apparent power does not cap Q."""
        p = np.asarray(p_kw, dtype=float)
        vm = np.asarray(vm_pu, dtype=float)
        s = self.s_rated_kva
        v1, v2, v3, v4 = self.qv_v_pu.T
        with np.errstate(invalid="ignore", divide="ignore"):
            lower_slope = np.where((vm > v1) & (vm < v2), 1.0 / (v2 - v1), 0.0)
            upper_slope = np.where((vm > v3) & (vm < v4), 1.0 / (v4 - v3), 0.0)
            raise_share = np.clip((v2 - vm) / (v2 - v1), 0.0, 1.0)
            lower_share = np.clip((vm - v3) / (v4 - v3), 0.0, 1.0)
            q_generated = self.qv_q_max_pu * s * (raise_share - lower_share)
        free = np.abs(q_generated) < np.sqrt(np.maximum(s**2 - p**2, 0.0))
        slope = self.qv_q_max_pu * s * (lower_slope + upper_slope)
        return np.where(self.voltage_dependent & free, slope, 0.0)

    def by_bus(self, values: np.ndarray, n_bus: int) -> np.ndarray:
        """Per-inverter values (..., n) summed per bus: (..., n_bus)."""
        incidence = np.zeros((len(self), n_bus))
        incidence[np.arange(len(self)), self.bus_position] = 1.0
        return np.asarray(values, dtype=float) @ incidence


@dataclass(frozen=True)
class InverterState:
    """The controls in force and every controlled inverter's active power, kW, load convention:
    (n,) for one scenario or (S, n) per scenario. For an inverter that is a flexibility its value
    is a placeholder: OCM's schedule sets its P."""

    controls: InverterControls
    p_kw: np.ndarray

    def central(self) -> InverterState:
        return InverterState(self.controls, np.atleast_2d(self.p_kw)[0])


@dataclass(frozen=True)
class ControlledFlow:
    """Load flows with controlled inverters: the HELM results (K rows), each inverter's reactive
    power (K, n) in kvar (load convention), the load flows per row and whether the control
    settled (a row whose HELM failed has not settled either)."""

    result: HelmResult
    inverter_q_kvar: np.ndarray
    iterations: np.ndarray
    settled: np.ndarray


def inverter_controls_from_tables(tables: NetworkTables, grid: Grid) -> InverterControls | None:
    """The inverters with a ``q_control`` of a network, or None when it has none.

    Raises ``NetworkError`` naming the element and column for an unknown ``q_control``, a
    missing or non-positive ``sn_mva``, or parameters that are not numbers or out of order.
    """
    if "q_control" in tables.load and _modes(tables.load, "load").ne("").any():
        bad = tables.load.index[_modes(tables.load, "load").ne("")][0]
        raise NetworkError(f"load {bad}: q_control is for inverters only (sgen and storage rows)")
    energised = dict(zip(grid.bus_ids.tolist(), range(grid.n_bus), strict=True))
    rows: list[dict] = []
    for element in CONTROL_ELEMENTS:
        table = getattr(tables, element)
        if "q_control" not in table or table.empty:
            continue
        modes = _modes(table, element)
        in_service = table["in_service"] if "in_service" in table else pd.Series(True, index=table.index)
        for index in table.index[modes.ne("")]:
            row = table.loc[index]
            if not _flag(in_service.loc[index]) or int(row["bus"]) not in energised:
                continue
            rows.append(_control_row(element, index, row, modes.loc[index], energised))
    if not rows:
        return None
    column = {key: np.array([r[key] for r in rows]) for key in rows[0] if key != "element"}
    return InverterControls(element=tuple(r["element"] for r in rows), **column)


def solve_with_controls(
    solver: HelmSolver,
    p_kw: np.ndarray,
    q_kvar: np.ndarray,
    controls: InverterControls,
    inverter_p_kw: np.ndarray,
    *,
    tolerance_kvar: float = TOLERANCE_KVAR,
    max_iterations: int = MAX_ITERATIONS,
) -> ControlledFlow:
    """Batched load flows (K, n_bus) with the controlled inverters' Q added to ``q_kvar``.

    ``p_kw`` includes the inverters' active power ``inverter_p_kw`` (K, n); ``q_kvar`` excludes
    their reactive power. Q(V) is found by a fixed-point iteration over the whole batch: a load
    flow with the current Q, the characteristic at the resulting voltages, and a step towards
    it, accelerated by the inverters' voltage sensitivities to reactive power (a quasi-Newton
    step ``(I - diag(dQ/dV) dV/dQ)⁻¹ (Q(V) - Q)`` with ``dV/dQ`` from the load flow of the
    unloaded grid) and damped (halved for a row whose correction grew, down to 1/16). A row is
    settled once no inverter's Q would change by more than ``tolerance_kvar``; rows that do
    not settle within ``max_iterations`` load flows, or whose load flow fails, are not settled.
    """
    p = np.atleast_2d(np.asarray(p_kw, dtype=float))
    q = np.atleast_2d(np.asarray(q_kvar, dtype=float))
    p_inverter = np.broadcast_to(np.atleast_2d(inverter_p_kw), (len(p), len(controls)))
    n_bus = p.shape[1]
    q_inverter = controls.q_kvar(p_inverter, np.ones_like(p_inverter))
    result = solver.solve(p, q + controls.by_bus(q_inverter, n_bus))
    iterations = np.ones(len(p), dtype=np.int64)
    if not controls.any_voltage_dependent:
        return ControlledFlow(result, q_inverter, iterations, result.converged.copy())
    fields = {name: np.array(getattr(result, name)) for name in _ROW_FIELDS}
    reasons = list(result.reasons)
    settled = np.zeros(len(p), dtype=bool)
    damping = np.ones(len(p))
    last_change = np.full(len(p), np.inf)
    active = np.arange(len(p))
    rows = result
    sensitivity = _voltage_sensitivity(solver, controls)
    identity = np.eye(len(controls))
    for iteration in range(1, max_iterations + 1):
        ok = rows.converged
        vm = rows.vm_pu[:, controls.bus_position]
        step = np.where(ok[:, None], controls.q_kvar(p_inverter[active], vm) - q_inverter[active], 0.0)
        change = np.abs(step).max(axis=1, initial=0.0)
        settled[active] = ok & (change <= tolerance_kvar)
        grew = change > last_change[active]
        damping[active] = np.where(grew, np.maximum(damping[active] / 2, MIN_DAMPING), damping[active])
        last_change[active] = change
        keep = ok & ~settled[active]
        active = active[keep]
        if not len(active) or iteration == max_iterations:
            break
        slope = controls.q_slope(p_inverter[active], vm[keep])
        jacobian = identity - slope[:, :, None] * sensitivity[None, :, :]
        newton = np.linalg.solve(jacobian, step[keep][:, :, None])[:, :, 0]
        q_inverter[active] += damping[active, None] * newton
        rows = solver.solve(p[active], q[active] + controls.by_bus(q_inverter[active], n_bus))
        iterations[active] += 1
        for name in _ROW_FIELDS:
            fields[name][active] = getattr(rows, name)
        for position, reason in zip(active, rows.reasons, strict=True):
            reasons[position] = reason
    result = HelmResult(**fields, reasons=tuple(reasons))
    return ControlledFlow(result, q_inverter, iterations, settled & result.converged)


_SENSITIVITIES: dict[int, tuple[HelmSolver, InverterControls, np.ndarray]] = {}
SENSITIVITY_STEP_KVAR = 1.0


def _voltage_sensitivity(solver: HelmSolver, controls: InverterControls) -> np.ndarray:
    """dV_i/dQ_j (pu per kvar, load convention) between the inverters' buses, in the unloaded grid;
    cached per solver and controls."""
    cached = _SENSITIVITIES.get(id(solver))
    if cached is not None and cached[1] is controls:
        return cached[2]
    n, n_bus = len(controls), solver.grid.n_bus
    q = np.zeros((n + 1, n_bus))
    q[1:] = controls.by_bus(SENSITIVITY_STEP_KVAR * np.eye(n), n_bus)
    flows = solver.solve(np.zeros_like(q), q)
    vm = flows.vm_pu[:, controls.bus_position]
    sensitivity = (vm[1:] - vm[0]).T / SENSITIVITY_STEP_KVAR
    if not np.isfinite(sensitivity).all():
        sensitivity = np.zeros((n, n))  # plain fixed-point steps
    _SENSITIVITIES.clear()  # one grid at a time; the solver stays referenced while cached
    _SENSITIVITIES[id(solver)] = (solver, controls, sensitivity)
    return sensitivity


_ROW_FIELDS = (
    "vm_pu",
    "va_degree",
    "line_loading_percent",
    "trafo_loading_percent",
    "converged",
    "max_mismatch_pu",
    "terms",
    "newton_iterations",
)


def _modes(table: pd.DataFrame, element: str) -> pd.Series:
    """``q_control`` per row as a lower-case string, "" for none; ``NetworkError`` if unknown."""
    values = table["q_control"].astype(object)
    modes = values.where(values.notna(), "").map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    for index, mode in modes.items():
        if mode not in MODES:
            raise NetworkError(
                f"{element} {index}: q_control must be one of 'cosphi_p', 'qv' or empty, got {mode!r}"
            )
    return modes


def _control_row(element: str, index, row: pd.Series, mode: str, energised: dict) -> dict:
    where = f"{element} {index}"
    sn = _number(row.get("sn_mva"), np.nan, where, "sn_mva")
    if not (np.isfinite(sn) and sn > 0):
        raise NetworkError(
            f"{where}: q_control {mode!r} needs sn_mva, the inverter's rated apparent power (> 0), "
            f"got {row.get('sn_mva')!r}"
        )
    scaling = _number(row.get("scaling"), 1.0, where, "scaling")
    values = {"cosphi_p_start_pu": np.nan, "cosphi_p_end_pu": np.nan, "cosphi_min": np.nan}
    v_points, q_max = [np.nan] * 4, np.nan
    if mode == COSPHI_P:
        values = {c: _number(row.get(c), d, where, c) for c, d in COSPHI_P_DEFAULTS.items()}
        if not 0 <= values["cosphi_p_start_pu"] < values["cosphi_p_end_pu"]:
            raise NetworkError(
                f"{where}: cosphi_p_start_pu ({values['cosphi_p_start_pu']:g}) must be ≥ 0 and below "
                f"cosphi_p_end_pu ({values['cosphi_p_end_pu']:g})"
            )
        if not 0 < values["cosphi_min"] <= 1:
            raise NetworkError(f"{where}: cosphi_min must be in (0, 1], got {values['cosphi_min']:g}")
    else:
        qv = {c: _number(row.get(c), d, where, c) for c, d in QV_DEFAULTS.items()}
        v_points, q_max = [qv[f"qv_v{k}_pu"] for k in range(1, 5)], qv["qv_q_max_pu"]
        if not (0 < v_points[0] < v_points[1] <= v_points[2] < v_points[3] < 2):
            shown = ", ".join(f"{v:g}" for v in v_points)
            raise NetworkError(
                f"{where}: qv_v1_pu < qv_v2_pu ≤ qv_v3_pu < qv_v4_pu must hold within (0, 2), got {shown}"
            )
        if not 0 < q_max <= 1:
            raise NetworkError(f"{where}: qv_q_max_pu must be in (0, 1], got {q_max:g}")
    sign = LOAD_SIGN[element]
    return {
        "element": element,
        "index": int(index),
        "bus_position": energised[int(row["bus"])],
        "voltage_dependent": mode == QV,
        "s_rated_kva": sn * 1e3,
        **values,
        "qv_v_pu": v_points,
        "qv_q_max_pu": q_max,
        "table_p_kw": sign * _number(row.get("p_mw"), 0.0, where, "p_mw") * scaling * 1e3,
        "table_q_kvar": sign * _number(row.get("q_mvar"), 0.0, where, "q_mvar") * scaling * 1e3,
    }


def _number(value, default: float, where: str, column: str) -> float:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = np.nan
    if not np.isfinite(number) and column != "sn_mva":
        raise NetworkError(f"{where}: {column} must be a finite number, got {value!r}")
    return number


def _flag(value) -> bool:
    return True if value is None or (np.ndim(value) == 0 and pd.isna(value)) else bool(value)
