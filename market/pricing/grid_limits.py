"""The DSO's network for its price instruments, from our own grid model: hourly load flows of a
day, the congestion they show, and the linear limits (``NetworkLimits``) that the flexibility
market and the dynamic tariffs keep.

A limit is a voltage or thermal constraint of the grid: ``bus B |V| min`` (−|V| ≤ −V_min),
``bus B |V| max``, ``line L loading`` and ``trafo T loading`` (percent ≤ max_loading_percent).
Its sensitivity to consumption at each load point (a bus) comes from one batched HELM call
(finite differences of 1 kW at unity power factor, at the hour where the limit is tightest).

Every limit is *scaled* so that one kW at its most effective load point moves it by one unit:
its values, excess and relaxation are then in kW, whatever the physical quantity (percent of a
line's rating or per-unit voltage). With that scale a line flow has sensitivity ≈ 1 to every
load downstream, as in the paper's ``Σ_i D_li P_i ≤ F_l``, and a relaxed tariff is capped at
ρ per kWh. ``GridLimits.physical`` turns scaled values back into percent and pu.

The linearisation is checked afterwards with the full load flow (``check``); a schedule whose
actual load flow still violates a limit is corrected by re-linearising at that schedule
(``relinearised``): the baseline becomes the actual value minus the linear prediction, which
is the successive-linear-programming step the callers repeat until the load flow agrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from market.pricing.network import NetworkLimits, PricingInputError
from ocm.grid.helm import HelmSolver
from ocm.grid.model import Grid
from ocm.problem import Limits

PERTURBATION_KW = 1.0
# a limit is modelled when its scaled headroom at some hour is below this many kW (or violated)
DEFAULT_SCREEN_KW = 50.0
# tolerances of the load-flow check: a limit counts as violated beyond these
VOLTAGE_TOLERANCE_PU = 1e-5
LOADING_TOLERANCE_PERCENT = 1e-3


@dataclass(frozen=True)
class GridState:
    """Load flows of every hour: |V| per bus and loading per line and trafo, in ``grid`` order."""

    vm_pu: np.ndarray  # (H, n_bus)
    line_loading_percent: np.ndarray  # (H, n_line)
    trafo_loading_percent: np.ndarray  # (H, n_trafo)

    def quantities(self) -> np.ndarray:
        """Every limit's physical quantity per hour, in ``constraint_labels`` order: (H, C)."""
        return np.hstack([-self.vm_pu, self.vm_pu, self.line_loading_percent, self.trafo_loading_percent])


@dataclass(frozen=True)
class Violation:
    """A limit broken at one hour by the full load flow."""

    name: str
    hour: int
    value: float  # physical: pu or percent
    limit: float
    unit: str

    def __str__(self) -> str:
        return f"{self.name} at t{self.hour}: {self.value:.4g} {self.unit} (limit {self.limit:.4g})"


class GridLimits:
    """One grid's constraints and load flows for a day of hourly operating points.

    ``p_kw``/``q_kvar`` are the loads per hour and bus (load convention, ``grid.bus_ids``
    order) of everything the instrument does not move; ``load_points`` maps load-point names to
    pandapower bus indices.
    """

    def __init__(
        self,
        grid: Grid,
        p_kw: np.ndarray,
        q_kvar: np.ndarray,
        load_points: Mapping[str, int],
        *,
        solver: HelmSolver | None = None,
    ) -> None:
        self.grid = grid
        self.solver = solver or HelmSolver(grid)
        self.p_kw = _per_hour(p_kw, grid, "p_kw")
        self.q_kvar = _per_hour(q_kvar, grid, "q_kvar")
        if self.p_kw.shape != self.q_kvar.shape:
            raise PricingInputError(f"p_kw {self.p_kw.shape} and q_kvar {self.q_kvar.shape} differ in shape")
        if not load_points:
            raise PricingInputError("no load points: name at least one bus where flexibility sits")
        try:
            self._point_columns = grid.bus_positions(list(load_points.values()))
        except KeyError as error:
            raise PricingInputError(f"load point at bus {error.args[0]}: no such energised bus") from None
        self.load_points = tuple(load_points)
        limits = Limits.from_grid(grid)
        self.upper_physical = np.concatenate(
            [
                -limits.v_min_pu,
                limits.v_max_pu,
                limits.line_max_loading_percent,
                limits.trafo_max_loading_percent,
            ]
        )
        self.labels = _constraint_labels(grid)

    @property
    def hours(self) -> int:
        return len(self.p_kw)

    def load_flow(self, extra_kw: Mapping[str, np.ndarray] | None = None) -> GridState:
        """Full HELM load flows of every hour with ``extra_kw`` (per load point, (H,) kW of
        consumption at unity power factor) on top of the fixed loads; raises when an hour has
        no load-flow solution."""
        p = self.p_kw + self._by_bus(extra_kw)
        result = self.solver.solve(p, self.q_kvar)
        if not result.all_converged:
            bad = int(np.flatnonzero(~result.converged)[0])
            raise PricingInputError(f"hour t{bad}: the load flow has no solution ({result.reasons[bad]})")
        return GridState(result.vm_pu, result.line_loading_percent, result.trafo_loading_percent)

    def violations(self, state: GridState) -> list[Violation]:
        """Every limit broken by ``state``, worst first."""
        values = state.quantities()
        tolerance = self._tolerance()
        excess = values - self.upper_physical - tolerance
        found = []
        for hour, c in zip(*np.nonzero(excess > 0), strict=True):
            name, unit = self.labels[c]
            sign = -1.0 if name.endswith("min") else 1.0
            found.append(
                (
                    excess[hour, c] / tolerance[c],
                    Violation(name, int(hour), sign * values[hour, c], sign * self.upper_physical[c], unit),
                )
            )
        return [v for _, v in sorted(found, key=lambda item: -item[0])]

    def linear_limits(
        self,
        state: GridState | None = None,
        *,
        screen_kw: float = DEFAULT_SCREEN_KW,
        extra_kw: Mapping[str, np.ndarray] | None = None,
        include: Sequence[str] = (),
    ) -> NetworkLimits:
        """The limits whose scaled headroom comes within ``screen_kw`` at some hour of the load
        flow ``state`` (of the fixed loads plus ``extra_kw``), plus those named in ``include``,
        linearised at the hour each is tightest; scaled to kW at the most effective load point.
        Limits that no load point moves are left out (no instrument here can change them)."""
        state = state or self.load_flow(extra_kw)
        values = state.quantities()  # (H, C)
        tightest = np.argmax(values - self.upper_physical, axis=0)
        sensitivity = self._sensitivities(tightest, extra_kw)  # (C, LP) physical per kW
        strength = np.abs(sensitivity).max(axis=1)
        movable = strength > 1e-9
        scale = np.where(movable, 1.0 / np.where(movable, strength, 1.0), 0.0)
        headroom_kw = (self.upper_physical - values).min(axis=0) * scale
        names = [label for label, _ in self.labels]
        wanted = movable & ((headroom_kw < screen_kw) | np.isin(names, list(include)))
        rows = np.flatnonzero(wanted)
        return NetworkLimits(
            load_points=self.load_points,
            hours=tuple(range(self.hours)),
            sensitivity=sensitivity[rows] * scale[rows, None],
            baseline=(values[:, rows] * scale[rows]).T,
            upper=self.upper_physical[rows] * scale[rows],
            names=tuple(names[c] for c in rows),
        )

    def relinearised(
        self, limits: NetworkLimits, state: GridState, change_kw: Mapping[str, np.ndarray]
    ) -> NetworkLimits:
        """``limits`` corrected by the full load flow ``state`` of a schedule that changed
        consumption by ``change_kw`` from the limits' baseline: the new baseline is the actual
        value minus the linear prediction of that change, so the same schedule is predicted
        exactly and the next solve corrects for the linearisation error."""
        index = {name: c for c, (name, _) in enumerate(self.labels)}
        rows = [index[name] for name in limits.names]
        scale = limits.upper / np.where(self.upper_physical[rows] == 0, 1.0, self.upper_physical[rows])
        actual = (state.quantities()[:, rows] * scale).T  # (C, H)
        change = np.vstack([np.asarray(change_kw.get(lp, np.zeros(self.hours))) for lp in limits.load_points])
        predicted_change = limits.sensitivity @ change  # (C, H)
        return NetworkLimits(
            load_points=limits.load_points,
            hours=limits.hours,
            sensitivity=limits.sensitivity,
            baseline=actual - predicted_change,
            upper=limits.upper,
            names=limits.names,
        )

    def physical(self, limits: NetworkLimits, scaled: np.ndarray) -> np.ndarray:
        """Scaled values (rows of ``limits``) back in percent or pu (voltages as |V|)."""
        index = {name: c for c, (name, _) in enumerate(self.labels)}
        rows = np.array([index[name] for name in limits.names], dtype=int)
        scale = limits.upper / self.upper_physical[rows]
        values = np.asarray(scaled, dtype=float) / scale.reshape((-1,) + (1,) * (np.ndim(scaled) - 1))
        signs = np.array([-1.0 if name.endswith("min") else 1.0 for name in limits.names])
        return values * signs.reshape((-1,) + (1,) * (np.ndim(scaled) - 1))

    # ------------------------------------------------------------------------- internals

    def _by_bus(self, extra_kw: Mapping[str, np.ndarray] | None) -> np.ndarray:
        added = np.zeros_like(self.p_kw)
        for name, values in (extra_kw or {}).items():
            if name not in self.load_points:
                raise PricingInputError(f"unknown load point {name!r}")
            added[:, self._point_columns[self.load_points.index(name)]] += np.asarray(values, dtype=float)
        return added

    def _sensitivities(self, tightest: np.ndarray, extra_kw) -> np.ndarray:
        """d(quantity)/d(kW at each load point), at the hour each limit is tightest: (C, LP)."""
        base_p = self.p_kw + self._by_bus(extra_kw)
        n_points = len(self.load_points)
        sensitivity = np.zeros((len(self.labels), n_points))
        for hour in np.unique(tightest):
            p = np.repeat(base_p[hour][None, :], n_points + 1, axis=0)
            p[np.arange(1, n_points + 1), self._point_columns] += PERTURBATION_KW
            q = np.repeat(self.q_kvar[hour][None, :], n_points + 1, axis=0)
            result = self.solver.solve(p, q)
            if not result.all_converged:
                raise PricingInputError(f"hour t{hour}: no load-flow solution near the operating point")
            quantities = GridState(
                result.vm_pu, result.line_loading_percent, result.trafo_loading_percent
            ).quantities()
            rows = tightest == hour
            sensitivity[rows] = ((quantities[1:] - quantities[0]) / PERTURBATION_KW).T[rows]
        return sensitivity

    def _tolerance(self) -> np.ndarray:
        n_bus = self.grid.n_bus
        n_branch = len(self.labels) - 2 * n_bus
        return np.concatenate(
            [np.full(2 * n_bus, VOLTAGE_TOLERANCE_PU), np.full(n_branch, LOADING_TOLERANCE_PERCENT)]
        )


def _constraint_labels(grid: Grid) -> list[tuple[str, str]]:
    buses = [int(b) for b in grid.bus_ids]
    return (
        [(f"bus {b} |V| min", "pu") for b in buses]
        + [(f"bus {b} |V| max", "pu") for b in buses]
        + [(f"line {int(i)} loading", "%") for i in grid.line_ids]
        + [(f"trafo {int(i)} loading", "%") for i in grid.trafo_ids]
    )


def _per_hour(values, grid: Grid, name: str) -> np.ndarray:
    array = np.atleast_2d(np.asarray(values, dtype=float))
    if array.ndim != 2 or array.shape[1] != grid.n_bus:
        raise PricingInputError(
            f"{name} must have one column per energised bus ({grid.n_bus}), got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise PricingInputError(f"{name} must be finite numbers")
    return array
