"""The grid side of OCM: limits, the operating point, and constraint checks of whole batches.

``GridConstraints`` turns a batch of flexibility schedules into one batched HELM load flow and
reports, per schedule, normalised margins to every limit (positive = inside):

- bus voltage ``V - V_min`` and ``V_max - V`` in pu, at every energised bus that no external
  grid holds (the flexibilities cannot move a slack voltage);
- line and transformer loading ``(max_loading_percent - loading) / 100``, i.e. in per unit of
  the rating, for every connected branch with a finite, non-zero rating.

A schedule's violation is the sum of its negative margins (0 = feasible). Schedules without a
load flow solution (voltage collapse) get ``COLLAPSE_VIOLATION``, worse than any other.

An operating point may carry several scenarios of what OCM does not control (e.g. the
forecast and the edges of its error envelope, ``ocm.forecast``). A schedule is then judged
in every scenario: its margin to a limit is the smallest over the scenarios, and it
collapses if it collapses in any. Scenario 0 is the central one that reports show.

Inverters with a grid-code reactive power control (``ocm.grid.reactive``: cos φ(P), Q(V)) are
part of the operating point (``OperatingPoint.inverters``): their Q follows their own P (a
flexibility's from the schedule) and, for Q(V), their bus voltage, found by a fixed-point
iteration around the batched load flow. A schedule whose control does not settle counts as
collapsed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ocm.flexibility import Flexibility
from ocm.grid.helm import HelmSolver
from ocm.grid.model import COMPUTED, Grid
from ocm.grid.reactive import InverterState, solve_with_controls

DEFAULT_V_MIN_PU = 0.95
DEFAULT_V_MAX_PU = 1.05
DEFAULT_MAX_LOADING_PERCENT = 100.0
COLLAPSE_VIOLATION = 1e3


@dataclass(frozen=True)
class Limits:
    """Voltage limits per bus of ``grid.bus_ids`` and loading limits per line and trafo."""

    v_min_pu: np.ndarray
    v_max_pu: np.ndarray
    line_max_loading_percent: np.ndarray
    trafo_max_loading_percent: np.ndarray

    @classmethod
    def from_grid(cls, grid: Grid) -> Limits:
        """The network's limits; unset ones get the defaults 0.95/1.05 pu and 100 %.

        A voltage limit counts as unset when it is NaN or not in (0, 2): pandapower writes
        0.0 and 2.0 for buses created without limits once any bus of the net has them.
        """
        v_min = np.asarray(grid.min_vm_pu, dtype=float)
        v_max = np.asarray(grid.max_vm_pu, dtype=float)
        with np.errstate(invalid="ignore"):
            v_min = np.where((v_min > 0) & (v_min < 2), v_min, DEFAULT_V_MIN_PU)
            v_max = np.where((v_max > 0) & (v_max < 2), v_max, DEFAULT_V_MAX_PU)
        return cls(
            v_min_pu=v_min,
            v_max_pu=v_max,
            line_max_loading_percent=_loading_limit(grid.line_max_loading_percent),
            trafo_max_loading_percent=_loading_limit(grid.trafo_max_loading_percent),
        )


@dataclass(frozen=True)
class OperatingPoint:
    """What OCM does not control, per bus of ``grid.bus_ids`` in kW/kvar, load convention.

    ``p_kw`` is the net active load of all loads, generators and storages that are not
    flexibilities (measured or forecast); ``q_kvar`` is all reactive load at the bus,
    including the flexibilities' (OCM leaves reactive power as it is). Both are (n_bus,) for
    one scenario or (S, n_bus) for S scenarios, scenario 0 the central one.

    ``inverters`` (optional): the inverters whose reactive power a grid-code control sets
    (``ocm.grid.reactive``) and the active power of each, (n,) or (S, n) like ``p_kw``. Their
    P is also in ``p_kw`` (unless they are flexibilities); their Q is not in ``q_kvar``.
    """

    p_kw: np.ndarray
    q_kvar: np.ndarray
    inverters: InverterState | None = None

    @property
    def scenarios(self) -> int:
        return 1 if np.ndim(self.p_kw) == 1 else len(self.p_kw)

    def central(self) -> OperatingPoint:
        """Scenario 0 alone."""
        if self.scenarios == 1 and np.ndim(self.p_kw) == 1:
            return self
        inverters = None if self.inverters is None else self.inverters.central()
        return OperatingPoint(np.atleast_2d(self.p_kw)[0], np.atleast_2d(self.q_kvar)[0], inverters)


@dataclass(frozen=True)
class Evaluation:
    """Load flow outcome of K schedules ``x_kw`` (K, n_flex)."""

    x_kw: np.ndarray
    margins: np.ndarray  # (K, n_constraints), NaN without a solution
    violation: np.ndarray  # (K,)
    converged: np.ndarray
    v_min_pu: np.ndarray  # lowest and highest constrained bus voltage
    v_max_pu: np.ndarray
    max_loading_percent: np.ndarray  # highest line or trafo loading
    bus_vm_pu: np.ndarray  # (K, n_bus) all voltages in the central scenario, for reports and plots
    bus_vm_min_pu: np.ndarray | None = None  # (K, n_bus) lowest and highest over the scenarios
    bus_vm_max_pu: np.ndarray | None = None
    inverter_q_kvar: np.ndarray | None = None  # (K, n) controlled inverters' Q, central scenario
    control_failed: np.ndarray | None = None  # (K,) the inverters' Q(V) control did not settle

    @property
    def feasible(self) -> np.ndarray:
        return self.violation <= 0


class GridConstraints:
    """Batched constraint evaluation for one grid and its flexibilities (set up once)."""

    def __init__(
        self,
        grid: Grid,
        flexibilities: tuple[Flexibility, ...],
        limits: Limits | None = None,
        solver: HelmSolver | None = None,
    ):
        self.grid = grid
        self.flexibilities = tuple(flexibilities)
        self.limits = limits or Limits.from_grid(grid)
        self.solver = solver or HelmSolver(grid)
        self.load_flows = 0
        positions = grid.bus_positions([f.bus for f in self.flexibilities])
        self._incidence = np.zeros((len(self.flexibilities), grid.n_bus))
        self._incidence[np.arange(len(positions)), positions] = 1.0
        self.voltage_buses, self.branches, self._branch_limit = constrained_elements(grid, self.limits)
        self.constraint_labels = self._labels()
        self._inverter_map = None

    @property
    def n_constraints(self) -> int:
        return 2 * len(self.voltage_buses) + len(self.branches)

    def check_point(self, point: OperatingPoint) -> None:
        """Raises ``ValueError`` unless the point has one finite value per bus (and scenario)."""
        shape = np.shape(point.p_kw)
        for name in ("p_kw", "q_kvar"):
            values = np.asarray(getattr(point, name), dtype=float)
            per_bus = values.ndim in (1, 2) and values.shape[-1] == self.grid.n_bus and len(values) > 0
            if not per_bus or values.shape != shape or not np.isfinite(values).all():
                raise ValueError(
                    f"operating point {name} must have {self.grid.n_bus} finite values (per bus), "
                    "or one such row per scenario, p_kw and q_kvar alike"
                )
        if point.inverters is not None:
            p = np.asarray(point.inverters.p_kw, dtype=float)
            n = len(point.inverters.controls)
            if p.shape not in ((n,), (*shape[:-1], n)) or not np.isfinite(p).all():
                raise ValueError(
                    f"operating point inverters.p_kw must have {n} finite values (per controlled "
                    "inverter), or one such row per scenario"
                )

    def evaluate(self, x_kw, point: OperatingPoint, tightening: np.ndarray | None = None) -> Evaluation:
        """Margins and violations of the schedules ``x_kw`` (K, n_flex) at ``point``;
        ``tightening`` (n_constraints) is subtracted from the margins (stricter limits)."""
        x = np.atleast_2d(np.asarray(x_kw, dtype=float))
        base_p, base_q = np.atleast_2d(point.p_kw), np.atleast_2d(point.q_kvar)
        k, s = len(x), len(base_p)
        p = (base_p[None, :, :] + (x @ self._incidence)[:, None, :]).reshape(k * s, -1)
        q = np.broadcast_to(base_q[None, :, :], (k, s, base_q.shape[1])).reshape(k * s, -1)
        inverter_q = control_failed = None
        if point.inverters is None:
            result = self.solver.solve(p, q)
            self.load_flows += k * s
        else:
            flow = self._controlled_flows(x, p, q, point.inverters, k, s)
            result = flow.result
            self.load_flows += int(flow.iterations.sum())
            inverter_q = flow.inverter_q_kvar.reshape(k, s, -1)[:, 0, :]
            control_failed = (result.converged & ~flow.settled).reshape(k, s).any(axis=1)
            result = replace(result, converged=flow.settled)
        vm = result.vm_pu[:, self.voltage_buses]
        loading = np.concatenate([result.line_loading_percent, result.trafo_loading_percent], axis=1)
        loading = loading[:, self.branches]
        margins = np.concatenate(
            [
                vm - self.limits.v_min_pu[self.voltage_buses],
                self.limits.v_max_pu[self.voltage_buses] - vm,
                (self._branch_limit - loading) / 100.0,
            ],
            axis=1,
        )
        margins, violation, converged = judge(margins, result.converged, k, s, tightening)
        vm, loading = vm.reshape(k, s, -1), loading.reshape(k, s, -1)
        return Evaluation(
            x_kw=x,
            margins=margins,
            violation=violation,
            converged=converged,
            v_min_pu=_reduce(np.min, vm),
            v_max_pu=_reduce(np.max, vm),
            max_loading_percent=_reduce(np.max, loading),
            bus_vm_pu=result.vm_pu.reshape(k, s, -1)[:, 0, :],
            bus_vm_min_pu=result.vm_pu.reshape(k, s, -1).min(axis=1),
            bus_vm_max_pu=result.vm_pu.reshape(k, s, -1).max(axis=1),
            inverter_q_kvar=inverter_q,
            control_failed=control_failed,
        )

    def _controlled_flows(self, x, p, q, inverters: InverterState, k: int, s: int):
        """Load flows of the K × S rows with the inverters' controlled Q; a controlled inverter
        that is one of the flexibilities runs at its scheduled P."""
        controls = inverters.controls
        p_inverter = np.broadcast_to(np.atleast_2d(inverters.p_kw), (s, len(controls)))
        p_inverter = np.repeat(p_inverter[None, :, :], k, axis=0)
        flexible = self._flexible_inverters(controls)
        at = flexible >= 0
        p_inverter[:, :, at] = x[:, None, flexible[at]]
        return solve_with_controls(self.solver, p, q, controls, p_inverter.reshape(k * s, -1))

    def _flexible_inverters(self, controls) -> np.ndarray:
        """Per controlled inverter, its position among the flexibilities, or -1."""
        if self._inverter_map is None or self._inverter_map[0] is not controls:
            position = {f.key: n for n, f in enumerate(self.flexibilities)}
            self._inverter_map = (controls, np.array([position.get(key, -1) for key in controls.keys]))
        return self._inverter_map[1]

    def describe_tightening(self, tightening: np.ndarray) -> str:
        """The tightened limits, e.g. ``line 7 by 0.4 %; bus 12 by 0.0010 pu``."""
        n_voltage = 2 * len(self.voltage_buses)
        parts = []
        for c in np.flatnonzero(tightening > 0):
            kind, ident = self.constraint_labels[c]
            amount = f"{tightening[c]:.4f} pu" if c < n_voltage else f"{100 * tightening[c]:.2f} %"
            parts.append(f"{kind} {ident} by {amount}")
        return "; ".join(parts)

    def describe_violations(self, evaluation: Evaluation, k: int, limit: int = 3) -> str:
        """The worst limit violations of schedule ``k``, e.g. ``bus 7: 0.931 pu < 0.95``."""
        if evaluation.control_failed is not None and evaluation.control_failed[k]:
            return "the inverters' Q(V) control did not settle (no load flow solution)"
        if not evaluation.converged[k]:
            return "no load flow solution (voltage collapse)"
        margins = evaluation.margins[k]
        order = np.argsort(margins)
        parts = [self._describe(evaluation, k, c) for c in order[:limit] if margins[c] < 0]
        return "; ".join(parts) if parts else "all limits kept"

    def _describe(self, evaluation: Evaluation, k: int, c: int) -> str:
        n_bus = len(self.voltage_buses)
        kind, ident = self.constraint_labels[c]
        if c < 2 * n_bus:
            position = self.voltage_buses[c % n_bus]
            if c < n_bus:
                vm = _pick(evaluation.bus_vm_min_pu, evaluation.bus_vm_pu)[k, position]
                return f"bus {ident}: {vm:.4f} pu < {self.limits.v_min_pu[position]:.3f}"
            vm = _pick(evaluation.bus_vm_max_pu, evaluation.bus_vm_pu)[k, position]
            return f"bus {ident}: {vm:.4f} pu > {self.limits.v_max_pu[position]:.3f}"
        limit = self._branch_limit[c - 2 * n_bus]
        loading = limit - 100 * evaluation.margins[k, c]
        return f"{kind} {ident}: {loading:.1f} % > {limit:.0f} %"

    def _labels(self) -> list[tuple[str, int]]:
        grid = self.grid
        buses = [("bus", int(grid.bus_ids[b])) for b in self.voltage_buses]
        branch_ids = np.concatenate([grid.line_ids, grid.trafo_ids])
        kinds = ["line"] * grid.n_line + ["trafo"] * grid.n_trafo
        return buses + buses + [(kinds[b], int(branch_ids[b])) for b in self.branches]


def constrained_elements(grid: Grid, limits: Limits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The buses with voltage limits (every energised one no external grid holds), the
    branches with loading limits (connected, finite rating and limit) and those limits."""
    voltage_buses = np.flatnonzero(~np.isin(grid.node_of_bus, grid.slack_nodes))
    branch_limit = np.concatenate([limits.line_max_loading_percent, limits.trafo_max_loading_percent])
    rated = (
        (grid.branch_state == COMPUTED)
        & np.isfinite(branch_limit)
        & np.isfinite(grid.branch_factor).all(axis=1)
    )
    branches = np.flatnonzero(rated)
    return voltage_buses, branches, branch_limit[branches]


def _loading_limit(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(np.isnan(values), DEFAULT_MAX_LOADING_PERCENT, values)


def _reduce(function, values: np.ndarray) -> np.ndarray:
    """``function`` over everything but the first axis; NaN where there is nothing."""
    if values.size == 0:
        return np.full(len(values), np.nan)
    return function(values.reshape(len(values), -1), axis=1)


def judge(margins: np.ndarray, converged: np.ndarray, k: int, s: int, tightening: np.ndarray | None):
    """(K S, C) margins of K schedules in S scenarios → each schedule's worst margins (K, C),
    less ``tightening``, its violation (the sum of the negative ones; ``COLLAPSE_VIOLATION``
    without a solution in some scenario) and whether it has a solution in every scenario."""
    converged = converged.reshape(k, s).all(axis=1)
    margins = _worst(margins.reshape(k, s, -1))
    if tightening is not None:
        margins -= tightening
    violation = np.nansum(np.clip(-margins, 0, None), axis=1)
    violation[~converged] = COLLAPSE_VIOLATION
    return margins, violation, converged


def _worst(margins: np.ndarray) -> np.ndarray:
    """(K, S, C) → (K, C): the smallest margin over the scenarios; NaN if any is NaN."""
    return margins[:, 0, :] if margins.shape[1] == 1 else margins.min(axis=1)


def _pick(preferred, fallback):
    return fallback if preferred is None else preferred
