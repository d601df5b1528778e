"""The grid side of OCM per phase: constraint checks of schedule batches by three-phase load flow.

``PhaseConstraints`` is ``GridConstraints`` for an unbalanced grid (``ocm.grid.three_phase``).
A single-phase flexibility's schedule is load on its phase; a three-phase one's is split evenly.
The operating point gives per-phase loads (``OperatingPoint.p_kw`` of shape (n_bus, 3) or
(S, n_bus, 3)). The margins (positive = inside) are

- phase voltages ``V_p - V_min`` and ``V_max - V_p`` in pu, for phases a, b, c of every bus
  that no external grid holds;
- line and transformer loading per phase conductor: ``(max_loading_percent - loading) / 100``
  with the most loaded phase (pandapower's ``loading_percent`` of ``res_line_3ph``);
- voltage unbalance ``(max_unbalance - |V2|/|V1|) / 100`` at the same buses (a grid code's
  negative-sequence limit, 2 % by default as in EN 50160).

Everything else (violation, collapse, scenarios, tightening) is as in ``GridConstraints``, so
the optimiser, the verification and the band logic work unchanged.

**Mixed corners.** Per phase the physics is not monotone: a load on phase a lowers phase a but
raises phase b or c (the neutral point shifts), a generator on phase b can lower phase c. A
band's two corners (all at P_max, all at P_min) are then not its worst schedules. So the band
problems judge each limit at its own worst corner (``CornerView``): the sign of every
flexibility's effect on every limit is learnt once per step (finite differences at the middle
of the hardware limits), limits with the same signs share a corner, and a candidate P_max is
judged with the flexibilities that hurt a limit by decreasing at the other side of the band
(their hardware minimum while P_max is solved, P_max while P_min is solved).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ocm.flexibility import Flexibility
from ocm.grid.helm_3ph import Helm3phSolver
from ocm.grid.three_phase import PHASES, Grid3ph
from ocm.problem import (
    COLLAPSE_VIOLATION,
    Evaluation,
    GridConstraints,
    Limits,
    OperatingPoint,
    _reduce,
    constrained_elements,
    judge,
)
from ocm.verification import margin_sensitivities

DEFAULT_MAX_UNBALANCE_PERCENT = 2.0
NEGLIGIBLE_EFFECT = 1e-4  # pu of voltage (or of rating) over a flexibility's whole range
CORNER_MARGIN = 0.01  # limits predicted to keep this much margin everywhere need no own corner


@dataclass(frozen=True)
class CornerPatterns:
    """Which flexibilities hurt each limit by increasing (``hurts_up[pattern_of[c]]``)."""

    hurts_up: np.ndarray  # (P, n_flex) bool, one row per distinct pattern
    pattern_of: np.ndarray  # (n_constraints,) pattern of every limit


class CornerView:
    """The constraints as one band problem sees them: a candidate side of the band (P_max for
    ``direction`` +1, P_min for -1) is judged, limit by limit, at that limit's worst corner with
    ``other`` as the band's other side."""

    def __init__(self, constraints: PhaseConstraints, patterns: CornerPatterns, direction: int, other):
        self.constraints = constraints
        self.patterns = patterns
        self.direction = direction
        self.other = np.asarray(other, dtype=float)

    def evaluate(self, x_kw, point: OperatingPoint, tightening: np.ndarray | None = None) -> Evaluation:
        x = np.atleast_2d(np.asarray(x_kw, dtype=float))
        k = len(x)
        other = np.broadcast_to(self.other, x.shape)
        take_x = self.patterns.hurts_up if self.direction > 0 else ~self.patterns.hurts_up
        corners = np.where(take_x[:, None, :], x[None], other[None])  # (P, K, n_flex)
        evaluation = self.constraints.evaluate(corners.reshape(-1, x.shape[1]), point, tightening)
        p = len(take_x)
        margins = evaluation.margins.reshape(p, k, -1)
        columns = np.arange(margins.shape[2])
        margins = margins[self.patterns.pattern_of, :, columns].T  # (K, C): each limit at its corner
        converged = evaluation.converged.reshape(p, k).all(axis=0)
        violation = np.nansum(np.clip(-margins, 0, None), axis=1)
        violation[~converged] = COLLAPSE_VIOLATION
        first = slice(0, k)  # pattern 0 is the plain corner (x everywhere) when it occurs
        return replace(
            evaluation,
            x_kw=x,
            margins=margins,
            violation=violation,
            converged=converged,
            v_min_pu=evaluation.v_min_pu[first],
            v_max_pu=evaluation.v_max_pu[first],
            max_loading_percent=evaluation.max_loading_percent[first],
            bus_vm_pu=evaluation.bus_vm_pu[first],
            bus_vm_min_pu=evaluation.bus_vm_min_pu[first],
            bus_vm_max_pu=evaluation.bus_vm_max_pu[first],
        )


def phase_incidence(flexibilities: tuple[Flexibility, ...], grid: Grid3ph) -> np.ndarray:
    """(n_flex, n_bus, 3): how 1 kW of each flexibility's schedule loads each bus and phase."""
    incidence = np.zeros((len(flexibilities), grid.n_bus, 3))
    positions = grid.balanced.bus_positions([f.bus for f in flexibilities])
    for k, (flexibility, position) in enumerate(zip(flexibilities, positions, strict=True)):
        if flexibility.phase == "abc":
            incidence[k, position, :] = 1 / 3
        else:
            incidence[k, position, PHASES.index(flexibility.phase)] = 1.0
    return incidence


class PhaseConstraints(GridConstraints):
    """Batched per-phase constraint evaluation for one unbalanced grid and its flexibilities."""

    def __init__(
        self,
        grid: Grid3ph,
        flexibilities: tuple[Flexibility, ...],
        limits: Limits | None = None,
        solver: Helm3phSolver | None = None,
        max_unbalance_percent: float = DEFAULT_MAX_UNBALANCE_PERCENT,
    ):
        balanced = grid.balanced
        self.grid = balanced
        self.grid3 = grid
        self.flexibilities = tuple(flexibilities)
        self.limits = limits or Limits.from_grid(balanced)
        self.solver = solver or Helm3phSolver(grid)
        self.max_unbalance_percent = float(max_unbalance_percent)
        self.load_flows = 0
        self._incidence = phase_incidence(self.flexibilities, grid).reshape(len(self.flexibilities), -1)
        self.voltage_buses, self.branches, self._branch_limit = constrained_elements(balanced, self.limits)
        self.constraint_labels = self._labels()
        self._inverter_map = None

    @property
    def incidence(self) -> np.ndarray:
        """(n_flex, n_bus * 3): 1 kW of each flexibility per bus and phase (bus-major)."""
        return self._incidence

    @property
    def n_voltage(self) -> int:
        """Voltage constraints: V_min then V_max, each for every (voltage bus, phase)."""
        return 6 * len(self.voltage_buses)

    @property
    def n_constraints(self) -> int:
        return self.n_voltage + len(self.branches) + len(self.voltage_buses)

    def check_point(self, point: OperatingPoint) -> None:
        """Raises ``ValueError`` unless the point has finite per-bus, per-phase values."""
        n = self.grid.n_bus
        shape = np.shape(point.p_kw)
        for name in ("p_kw", "q_kvar"):
            values = np.asarray(getattr(point, name), dtype=float)
            ok = values.ndim in (2, 3) and values.shape[-2:] == (n, 3) and values.shape == shape
            if not ok or not np.isfinite(values).all():
                raise ValueError(
                    f"operating point {name} must have finite values per bus and phase, shape ({n}, 3), "
                    "or one such block per scenario, p_kw and q_kvar alike"
                )
        if point.inverters is not None:
            raise ValueError("inverter reactive power controls are not supported by the three-phase OCM")

    def evaluate(self, x_kw, point: OperatingPoint, tightening: np.ndarray | None = None) -> Evaluation:
        """Margins and violations of the schedules ``x_kw`` (K, n_flex) at ``point``."""
        x = np.atleast_2d(np.asarray(x_kw, dtype=float))
        n = self.grid.n_bus
        base_p = np.asarray(point.p_kw, dtype=float).reshape(-1, n * 3)
        base_q = np.asarray(point.q_kvar, dtype=float).reshape(-1, n * 3)
        k, s = len(x), len(base_p)
        p = (base_p[None, :, :] + (x @ self._incidence)[:, None, :]).reshape(k * s, n, 3)
        q = np.broadcast_to(base_q[None, :, :], (k, s, n * 3)).reshape(k * s, n, 3)
        result = self.solver.solve(p, q)
        self.load_flows += k * s
        vm = result.vm_pu[:, self.voltage_buses, :]  # (K S, n_v, 3)
        v_min = self.limits.v_min_pu[self.voltage_buses, None]
        v_max = self.limits.v_max_pu[self.voltage_buses, None]
        loading = np.concatenate([result.line_loading_percent, result.trafo_loading_percent], axis=1)
        loading = loading[:, self.branches].max(axis=2)
        unbalance = result.unbalance_percent[:, self.voltage_buses]
        margins = np.concatenate(
            [
                (vm - v_min).reshape(k * s, -1),
                (v_max - vm).reshape(k * s, -1),
                (self._branch_limit - loading) / 100.0,
                (self.max_unbalance_percent - unbalance) / 100.0,
            ],
            axis=1,
        )
        margins, violation, converged = judge(margins, result.converged, k, s, tightening)
        bus_low = result.vm_pu.min(axis=2).reshape(k, s, -1)
        bus_high = result.vm_pu.max(axis=2).reshape(k, s, -1)
        return Evaluation(
            x_kw=x,
            margins=margins,
            violation=violation,
            converged=converged,
            v_min_pu=_reduce(np.min, vm.reshape(k, s, -1)),
            v_max_pu=_reduce(np.max, vm.reshape(k, s, -1)),
            max_loading_percent=_reduce(np.max, loading.reshape(k, s, -1)),
            bus_vm_pu=bus_low[:, 0, :],
            bus_vm_min_pu=bus_low.min(axis=1),
            bus_vm_max_pu=bus_high.max(axis=1),
        )

    def corner_patterns(self, point: OperatingPoint, low_kw, high_kw) -> CornerPatterns | None:
        """The sign patterns of the flexibilities' effects on the limits (finite differences at
        the middle of ``[low_kw, high_kw]``); None when every limit is monotone alike (the two
        band corners are then the worst schedules) or the probes have no solution."""
        low, high = np.asarray(low_kw, dtype=float), np.asarray(high_kw, dtype=float)
        width = high - low
        found = margin_sensitivities(self, point, low, high, 1e-2)
        if found is None:
            return None
        moving, moving_sensitivity, evaluation = found
        sensitivity = np.zeros((self.n_constraints, len(low)))
        sensitivity[:, moving] = np.nan_to_num(moving_sensitivity)
        # a limit that a flexibility barely moves (less than NEGLIGIBLE_EFFECT over its whole
        # range) takes the plain corner for it: fewer patterns, as many load flows fewer
        hurts_up = (sensitivity <= 0) | (np.abs(sensitivity) * width < NEGLIGIBLE_EFFECT)
        # only limits that some schedule within the hardware limits may break need their own
        # corner (linear prediction); the others keep the plain one
        reach = evaluation.margins[0] - np.abs(sensitivity) @ width / 2
        hurts_up[reach > CORNER_MARGIN] = True
        patterns, pattern_of = np.unique(hurts_up, axis=0, return_inverse=True)
        if len(patterns) == 1 and patterns[0].all():
            return None
        plain = np.flatnonzero(patterns.all(axis=1))
        order = np.concatenate([plain, np.setdiff1d(np.arange(len(patterns)), plain)])
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        return CornerPatterns(patterns[order], position[np.ravel(pattern_of)])

    def describe_tightening(self, tightening: np.ndarray) -> str:
        """The tightened limits, e.g. ``line 7 by 0.4 %; bus 12 phase a by 0.0010 pu``."""
        parts = []
        for c in np.flatnonzero(tightening > 0):
            kind, ident = self.constraint_labels[c]
            amount = f"{tightening[c]:.4f} pu" if c < self.n_voltage else f"{100 * tightening[c]:.2f} %"
            parts.append(f"{kind} {ident} by {amount}")
        return "; ".join(parts)

    def _describe(self, evaluation: Evaluation, k: int, c: int) -> str:
        kind, ident = self.constraint_labels[c]
        margin = evaluation.margins[k, c]
        n_v = len(self.voltage_buses)
        if c < self.n_voltage:
            position = self.voltage_buses[(c % (3 * n_v)) // 3]
            if c < 3 * n_v:
                limit = self.limits.v_min_pu[position]
                return f"{kind} {ident}: {limit + margin:.4f} pu < {limit:.3f}"
            limit = self.limits.v_max_pu[position]
            return f"{kind} {ident}: {limit - margin:.4f} pu > {limit:.3f}"
        if c < self.n_voltage + len(self.branches):
            limit = self._branch_limit[c - self.n_voltage]
            return f"{kind} {ident}: {limit - 100 * margin:.1f} % > {limit:.0f} % (most loaded phase)"
        limit = self.max_unbalance_percent
        return f"{kind} {ident}: voltage unbalance {limit - 100 * margin:.2f} % > {limit:.1f} %"

    def _labels(self) -> list[tuple[str, str]]:
        grid = self.grid
        voltage = [("bus", f"{int(grid.bus_ids[b])} phase {p}") for b in self.voltage_buses for p in PHASES]
        branch_ids = np.concatenate([grid.line_ids, grid.trafo_ids])
        kinds = ["line"] * grid.n_line + ["trafo"] * grid.n_trafo
        branches = [(kinds[b], str(int(branch_ids[b]))) for b in self.branches]
        unbalance = [("bus", str(int(grid.bus_ids[b]))) for b in self.voltage_buses]
        return voltage + voltage + branches + unbalance
