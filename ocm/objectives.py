"""How OCM shares the grid's capacity: the objectives of the max and min problems.

Every objective is maximised. A flexibility's *share* is the part of its hardware range that a
problem grants it, measured in the problem's direction: upward for the max problem,
``(P - P_low) / (P_high - P_low)``, downward for the min problem, ``(P_high - P) / (P_high -
P_low)``; both lie in [0, 1].

- ``sum``: the paper's Eq. 2, the total power in the problem's direction (kW). It gives most to
  flexibilities where capacity is cheapest, i.e. close to the transformer.
- ``proportional``: ``Σ log(ε + share)`` (proportional fairness, ε = ``SHARE_FLOOR``), which
  trades one flexibility's loss against the others' relative gains.
- ``maxmin``: the smallest share, plus ``MAXMIN_TIE_WEIGHT`` times the mean share so that
  capacity left over once the smallest share is maximal is still handed out.

Each objective also gives its terms for the linear programs of the local search (``lp_terms``):
``proportional`` by tangent cuts of the logarithm (an outer approximation, refined at the
current point), ``maxmin`` by an epigraph variable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBJECTIVES = ("sum", "proportional", "maxmin")
SHARE_FLOOR = 1e-3
MAXMIN_TIE_WEIGHT = 1e-3
LOG_BREAKPOINTS = np.concatenate([[0.0], np.geomspace(2e-3, 1.0, 24)])


@dataclass(frozen=True)
class LpTerms:
    """Objective of a linear program over ``[x_free, aux]`` (to minimise), its extra rows
    ``a_ub @ [x_free, aux] <= b_ub`` and the bounds of the auxiliary variables."""

    cost: np.ndarray
    a_ub: np.ndarray
    b_ub: np.ndarray
    aux_bounds: list[tuple[float | None, float | None]]


@dataclass(frozen=True)
class Objective:
    """An objective over the ``members`` (flexibility positions) of one priority group.

    ``direction`` is +1 for the max problem and -1 for the min problem; ``low_kw`` and
    ``high_kw`` are the members' hardware limits, which define the shares.
    """

    name: str
    direction: int
    members: np.ndarray
    low_kw: np.ndarray
    high_kw: np.ndarray

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.name!r}; choose one of {', '.join(OBJECTIVES)}")

    def shares(self, x_kw: np.ndarray) -> np.ndarray:
        """(K, members) shares of full schedules ``x_kw`` (K, n_flex)."""
        offset, slope = self._share_coefficients()
        return offset + slope * np.atleast_2d(x_kw)[:, self.members]

    def value(self, x_kw: np.ndarray) -> np.ndarray:
        """(K,) objective values of full schedules ``x_kw`` (K, n_flex)."""
        x = np.atleast_2d(x_kw)
        if len(self.members) == 0:
            return np.zeros(len(x))
        if self.name == "sum":
            return self.direction * x[:, self.members].sum(axis=1)
        shares = self.shares(x)
        if self.name == "proportional":
            return np.log(SHARE_FLOOR + np.clip(shares, 0, None)).sum(axis=1)
        return shares.min(axis=1) + MAXMIN_TIE_WEIGHT * shares.mean(axis=1)

    def lp_terms(self, free: np.ndarray, x_kw: np.ndarray) -> LpTerms:
        """LP terms over the free flexibilities ``free`` (positions), linearised at ``x_kw``.

        Every member must be free.
        """
        n = len(free)
        column = np.searchsorted(free, self.members)
        offset, slope = self._share_coefficients()
        m = len(self.members)
        if self.name == "sum":
            cost = np.zeros(n)
            cost[column] = -self.direction
            return LpTerms(cost, np.zeros((0, n)), np.zeros(0), [])
        if self.name == "maxmin":
            cost = np.zeros(n + 1)
            cost[column] = -MAXMIN_TIE_WEIGHT * slope / max(m, 1)
            cost[n] = -1.0
            a_ub = np.zeros((m, n + 1))
            a_ub[np.arange(m), column] = -slope
            a_ub[:, n] = 1.0
            return LpTerms(cost, a_ub, offset.copy(), [(None, None)])
        current = np.clip(self.shares(x_kw)[0], 0, 1)
        rows, rhs = [], []
        for i in range(m):
            for point in np.append(LOG_BREAKPOINTS, current[i]):
                gradient = 1.0 / (SHARE_FLOOR + point)
                row = np.zeros(n + m)
                row[column[i]] = -gradient * slope[i]
                row[n + i] = 1.0
                rows.append(row)
                rhs.append(np.log(SHARE_FLOOR + point) + gradient * (offset[i] - point))
        cost = np.concatenate([np.zeros(n), -np.ones(m)])
        return LpTerms(cost, np.array(rows).reshape(-1, n + m), np.array(rhs), [(None, None)] * m)

    def _share_coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """``share = offset + slope * P`` per member."""
        span = self.high_kw - self.low_kw
        if self.direction > 0:
            return -self.low_kw / span, 1.0 / span
        return self.high_kw / span, -1.0 / span
