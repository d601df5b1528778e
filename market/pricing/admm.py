"""The TFM clearing by ADMM between the market operator and the DSO (seeds/000 §5.2): the
operator never sees network data, the DSO never sees prices or requirements.

Splitting (consensus ADMM on the procurement fractions, scaled dual ``u``)::

    min  f(x) + g(z)   s.t.  x = z
    f(x) = Σ price·kW·x  +  [x meets every requirement, 0 ≤ x ≤ 1]        (operator)
    g(z) = [the schedule of z respects every network limit, 0 ≤ z ≤ 1]    (DSO)

    x ← argmin_x f(x) + ρ/2 ‖x − z + u‖²     operator: per requirement a continuous
                                              knapsack, exact by bisection on its price λ_r
    z ← Π_DSO(x + u)                          DSO: Euclidean projection onto its limits, by the
                                              dual (μ ≥ 0, one per limit and hour; L-BFGS-B)
    u ← u + x − z

The DSO receives only the schedule map (kW change per load point and hour per unit of each
fraction) and the fractions, never a price. ρ adapts by residual balancing (Boyd et al. 2011,
§3.4.1) during the first iterations, then stays fixed (the convergence proof needs a fixed ρ).
At convergence λ are the requirements' prices and ρ·μ the network limits' duals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from market.pricing.network import NetworkLimits
from market.pricing.tfm import Bid, Clearing, ClearingProblem, Requirement, build_problem, least_violation


@dataclass
class AdmmClearing:
    """The clearing and how ADMM got there."""

    clearing: Clearing
    iterations: int
    converged: bool
    primal_residual: float
    dual_residual: float
    rho: float


ADAPT_ITERATIONS = 1_000  # ρ adapts by residual balancing until then, and stays fixed after


class MarketOperator:
    """Sees bids and requirements (costs, coverage, needs); never the network."""

    def __init__(self, cost: np.ndarray, cover: np.ndarray, need: np.ndarray) -> None:
        self.cost = cost
        self.need = need
        self.requirement_of = np.argmax(cover != 0, axis=0)
        self.kw = cover[self.requirement_of, np.arange(cover.shape[1])]
        self.prices = np.zeros(len(need))

    def available_kw(self) -> np.ndarray:
        return np.bincount(self.requirement_of, self.kw, minlength=len(self.need))

    def step(self, target: np.ndarray, rho: float) -> np.ndarray:
        """argmin cost·x + ρ/2 ‖x − target‖² over requirements met and the box, exactly: for each
        requirement r, x(λ_r) = clip(target − (cost − λ_r kW)/ρ, 0, 1) with the least λ_r ≥ 0
        that meets it (monotone in λ_r: bisection to machine precision)."""
        kw, of = self.kw, self.requirement_of

        def fractions(prices: np.ndarray) -> np.ndarray:
            return np.clip(target - (self.cost - prices[of] * kw) / rho, 0.0, 1.0)

        def met(prices: np.ndarray) -> np.ndarray:
            return np.bincount(of, kw * fractions(prices), minlength=len(self.need)) >= self.need

        low = np.zeros(len(self.need))
        enough = np.maximum(0.0, (rho * (1.0 - target) + self.cost) / np.where(kw > 0, kw, 1.0))
        high = np.zeros(len(self.need))
        np.maximum.at(high, of, enough)
        high = high * (1 + 1e-9) + 1e-9
        unmet = ~met(low)
        for _ in range(200):
            middle = np.where(unmet, 0.5 * (low + high), 0.0)
            ok = met(middle)
            high = np.where(unmet & ok, middle, high)
            low = np.where(unmet & ~ok, middle, low)
            if np.all(high - low <= 1e-13 * np.maximum(1.0, high)):
                break
        self.prices = np.where(unmet, high, 0.0)
        return fractions(self.prices)


class Dso:
    """Sees its network limits and the schedule each fraction implies; never a price."""

    def __init__(self, matrix: np.ndarray, headroom: np.ndarray) -> None:
        self.matrix = matrix
        self.headroom = headroom
        self.multipliers = np.zeros(len(headroom))

    def project(self, point: np.ndarray) -> np.ndarray:
        """Euclidean projection of ``point`` onto {z in [0, 1]: matrix·z ≤ headroom}, through its
        dual: max over μ ≥ 0 of min_z ½‖z − point‖² + μ·(matrix·z − headroom)."""
        if len(self.headroom) == 0:
            return np.clip(point, 0.0, 1.0)
        matrix, headroom = self.matrix, self.headroom

        def z_of(mu: np.ndarray) -> np.ndarray:
            return np.clip(point - matrix.T @ mu, 0.0, 1.0)

        def negative_dual(mu: np.ndarray):
            z = z_of(mu)
            gap = matrix @ z - headroom
            value = 0.5 * float((z - point) @ (z - point)) + float(mu @ gap)
            return -value, -gap

        inside = z_of(np.zeros_like(headroom))
        if np.all(matrix @ inside <= headroom):
            self.multipliers = np.zeros_like(headroom)
            return inside
        warm = self._polish(point, self.multipliers)
        if self._solves(point, warm):
            self.multipliers = warm
            return z_of(warm)
        res = minimize(
            negative_dual,
            self.multipliers,
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, None)] * len(headroom),
            options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 2000, "maxcor": 20},
        )
        self.multipliers = self._polish(point, res.x)
        return z_of(self.multipliers)

    def _solves(self, point: np.ndarray, mu: np.ndarray) -> bool:
        """The projection's optimality conditions: limits kept, tight where μ > 0."""
        gap = self.matrix @ np.clip(point - self.matrix.T @ mu, 0.0, 1.0) - self.headroom
        scale = 1e-12 * max(1.0, float(np.abs(self.headroom).max()))
        return bool(np.all(mu >= 0) and np.all(gap <= scale) and np.all(np.abs(gap[mu > 0]) <= scale))

    def _polish(self, point: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """Newton steps on the active limits (μ > 0 or violated) and the free variables, to
        machine precision: the dual is piecewise quadratic, so a step on the right pieces is exact."""
        matrix, headroom = self.matrix, self.headroom
        for _ in range(20):
            free_point = point - matrix.T @ mu
            z = np.clip(free_point, 0.0, 1.0)
            gap = matrix @ z - headroom
            active = (mu > 0) | (gap > 0)
            precise = 1e-13 * max(1.0, float(np.abs(headroom).max()))
            if not active.any() or np.max(np.abs(gap[active])) <= precise:
                break
            free = (free_point > 0) & (free_point < 1)
            rows = matrix[np.ix_(active, free)]
            step = np.linalg.lstsq(rows @ rows.T, gap[active], rcond=None)[0]
            mu = mu.copy()
            mu[active] = np.maximum(mu[active] + step, 0.0)
        return mu


def clear_admm(
    requirements: Sequence[Requirement],
    bids: Sequence[Bid],
    network: NetworkLimits | None = None,
    *,
    rho: float | None = None,
    tolerance: float = 1e-7,
    max_iterations: int = 20_000,
) -> AdmmClearing:
    """The clearing of :func:`market.pricing.tfm.clear_central` by ADMM (module docstring).
    Stops when ‖x − z‖∞ and ρ‖z − z_prev‖∞ / max price·kW are both below ``tolerance``."""
    problem = build_problem(requirements, bids, network)
    if network is None:
        matrix, headroom, labels = np.zeros((0, len(problem.variables))), np.zeros(0), ()
    else:
        # the DSO's own computation from the schedule map; the operator never holds these
        matrix, headroom, labels = network.rows(problem.schedule, problem.schedule_index)
    operator = MarketOperator(problem.cost, problem.cover, problem.need)
    if len(problem.variables) == 0 or np.any(operator.available_kw() < problem.need - 1e-9):
        report = least_violation(problem, matrix, headroom, labels)
        return AdmmClearing(report, 0, False, float("nan"), float("nan"), float("nan"))
    dso = Dso(matrix, headroom)
    return _iterate(problem, operator, dso, labels, rho, tolerance, max_iterations)


def _iterate(
    problem: ClearingProblem,
    operator: MarketOperator,
    dso: Dso,
    labels,
    rho: float | None,
    tolerance: float,
    max_iterations: int,
) -> AdmmClearing:
    scale = max(float(np.max(np.abs(problem.cost))), 1e-12)
    rho = scale if rho is None else rho
    n = len(problem.variables)
    z, u = np.zeros(n), np.zeros(n)
    primal = dual = np.inf
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        x = operator.step(z - u, rho)
        z_previous = z
        z = dso.project(x + u)
        u = u + x - z
        primal = float(np.max(np.abs(x - z)))
        dual = float(rho * np.max(np.abs(z - z_previous))) / scale
        if primal <= tolerance and dual <= tolerance:
            break
        if iteration % 10 == 0 and iteration <= ADAPT_ITERATIONS:
            if primal > 10 * dual:
                rho, u = rho * 2.0, u / 2.0
            elif dual > 10 * primal:
                rho, u = rho / 2.0, u * 2.0
    converged = primal <= tolerance and dual <= tolerance
    clearing = problem.result(
        x,
        status="optimal" if converged else "not converged",
        requirement_prices=operator.prices,
        network_prices=dict(zip(labels, map(float, rho * dso.multipliers), strict=True)),
    )
    return AdmmClearing(clearing, iteration, converged, primal, dual, rho)
