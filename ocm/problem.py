"""The grid side of OCM: limits, the operating point, and constraint checks of whole batches.

``GridConstraints`` turns a batch of flexibility schedules into one batched HELM load flow and
reports, per schedule, normalised margins to every limit (positive = inside):

- bus voltage ``V - V_min`` and ``V_max - V`` in pu, at every energised bus that no external
  grid holds (the flexibilities cannot move a slack voltage);
- line and transformer loading ``(max_loading_percent - loading) / 100``, i.e. in per unit of
  the rating, for every connected branch with a finite, non-zero rating.

A schedule's violation is the sum of its negative margins (0 = feasible). Schedules without a
load flow solution (voltage collapse) get ``COLLAPSE_VIOLATION``, worse than any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ocm.flexibility import Flexibility
from ocm.grid.helm import HelmSolver
from ocm.grid.model import COMPUTED, Grid

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
    including the flexibilities' (OCM leaves reactive power as it is).
    """

    p_kw: np.ndarray
    q_kvar: np.ndarray


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
    bus_vm_pu: np.ndarray  # (K, n_bus) all voltages, for reports and plots

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
        slack_bus = np.isin(grid.node_of_bus, grid.slack_nodes)
        self.voltage_buses = np.flatnonzero(~slack_bus)
        branch_limit = np.concatenate(
            [self.limits.line_max_loading_percent, self.limits.trafo_max_loading_percent]
        )
        rated = (
            (grid.branch_state == COMPUTED)
            & np.isfinite(branch_limit)
            & np.isfinite(grid.branch_factor).all(axis=1)
        )
        self.branches = np.flatnonzero(rated)
        self._branch_limit = branch_limit[self.branches]
        self.constraint_labels = self._labels()

    @property
    def n_constraints(self) -> int:
        return 2 * len(self.voltage_buses) + len(self.branches)

    def check_point(self, point: OperatingPoint) -> None:
        """Raises ``ValueError`` unless the point has one finite value per bus."""
        for name in ("p_kw", "q_kvar"):
            values = np.asarray(getattr(point, name), dtype=float)
            if values.shape != (self.grid.n_bus,) or not np.isfinite(values).all():
                raise ValueError(
                    f"operating point {name} must have {self.grid.n_bus} finite values (per bus)"
                )

    def evaluate(self, x_kw, point: OperatingPoint, tightening: np.ndarray | None = None) -> Evaluation:
        """Margins and violations of the schedules ``x_kw`` (K, n_flex) at ``point``;
        ``tightening`` (n_constraints) is subtracted from the margins (stricter limits)."""
        x = np.atleast_2d(np.asarray(x_kw, dtype=float))
        p = point.p_kw[None, :] + x @ self._incidence
        q = np.broadcast_to(point.q_kvar, p.shape)
        result = self.solver.solve(p, q)
        self.load_flows += len(x)
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
        if tightening is not None:
            margins -= tightening
        violation = np.nansum(np.clip(-margins, 0, None), axis=1)
        violation[~result.converged] = COLLAPSE_VIOLATION
        return Evaluation(
            x_kw=x,
            margins=margins,
            violation=violation,
            converged=result.converged.copy(),
            v_min_pu=_reduce(np.min, vm),
            v_max_pu=_reduce(np.max, vm),
            max_loading_percent=_reduce(np.max, loading),
            bus_vm_pu=result.vm_pu,
        )

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
            vm = evaluation.bus_vm_pu[k, position]
            if c < n_bus:
                return f"bus {ident}: {vm:.4f} pu < {self.limits.v_min_pu[position]:.3f}"
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


def _loading_limit(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(np.isnan(values), DEFAULT_MAX_LOADING_PERCENT, values)


def _reduce(function, values: np.ndarray) -> np.ndarray:
    if values.shape[1] == 0:
        return np.full(len(values), np.nan)
    return function(values, axis=1)
