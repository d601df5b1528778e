"""Memetic genetic algorithm (DEAP) for one OCM optimisation problem.

An individual is the vector of the free flexibilities' powers (kW, load convention). Its
fitness is ``(violation, objective)`` with weights ``(-1, +1)``; DEAP compares fitnesses
lexicographically, which is exactly Deb's feasibility rules: a feasible individual beats an
infeasible one, two infeasible ones compare by violation, two feasible ones by objective.
The whole population is evaluated in one batched HELM load flow.

The GA is memetic: a local search (``toolbox.improve``) refines the best individual of the
first generation and every new leader. It is a sequential linear programme on sensitivities:
one batched load flow at the point and at a small step along each free flexibility gives the
margins and their Jacobian; a linear programme (HiGHS) maximises the objective subject to
the linearised margins within a trust region (or, if that has no solution, minimises the
linearised violation); a second batched load flow checks the LP point and points on the
segment back to the best one so far. Linearising next at the (maybe slightly infeasible) LP
point corrects the curvature like a Newton step; the trust region halves when a step does not
improve. Every point the search keeps has been evaluated by HELM.

Seeds: the warm start (e.g. last minute's solution) and the feasible point handed over from
the previous problem, both hardware corners, points on the segment from a seed towards the
objective's corner (a batched bisection), and uniform random points.

DEAP's operators draw from Python's ``random``; ``optimise`` seeds it from its ``rng`` and
restores the caller's state afterwards, so results depend only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from deap import algorithms, base, creator, tools
from scipy.optimize import linprog

from ocm.objectives import Objective
from ocm.problem import Evaluation, GridConstraints, OperatingPoint
from ocm.seeding import seeded_python_random

if not hasattr(creator, "OcmFitness"):
    creator.create("OcmFitness", base.Fitness, weights=(-1.0, 1.0))  # (violation, objective)
    creator.create("OcmIndividual", list, fitness=creator.OcmFitness)

AIM_MARGIN = 1e-7  # the LP steers this far inside every limit (pu, or pu of a rating)
LINE_FRACTIONS = np.array([1.0, 0.999, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.6, 0.4, 0.2])
SEED_FRACTIONS = np.linspace(0.125, 1.0, 8)


@dataclass(frozen=True)
class GaSettings:
    """Genetic algorithm and local search settings (defaults: see docs/ocm.md)."""

    population: int = 32
    max_generations: int = 30
    patience: int = 4  # generations without a better leader before stopping
    crossover_probability: float = 0.9
    mutation_probability: float = 0.3
    sbx_eta: float = 15.0
    mutation_eta: float = 20.0
    tournament_size: int = 2
    local_iterations: int = 30


@dataclass
class Subproblem:
    """One problem: maximise ``objective`` over the ``free`` flexibilities within
    ``[low_kw, high_kw]``, the others fixed at their values in ``base_kw``; ``tightening`` makes
    limits stricter (see ``GridConstraints.evaluate``)."""

    constraints: GridConstraints
    point: OperatingPoint
    base_kw: np.ndarray
    free: np.ndarray
    low_kw: np.ndarray
    high_kw: np.ndarray
    objective: Objective
    tightening: np.ndarray | None = None

    def full(self, x_free) -> np.ndarray:
        """Full schedules (K, n_flex) from free parts (K, n_free)."""
        x_free = np.atleast_2d(x_free)
        full = np.repeat(self.base_kw[None, :], len(x_free), axis=0)
        full[:, self.free] = x_free
        return full

    def evaluate(self, x_free) -> tuple[Evaluation, np.ndarray]:
        full = self.full(x_free)
        return self.constraints.evaluate(full, self.point, self.tightening), self.objective.value(full)


@dataclass(frozen=True)
class Solution:
    """Best schedule found (full vector) and how it was reached."""

    x_kw: np.ndarray
    violation: float
    objective: float
    generations: int

    @property
    def feasible(self) -> bool:
        return self.violation <= 0


def optimise(
    sub: Subproblem, settings: GaSettings, seeds: list[np.ndarray], rng: np.random.Generator
) -> Solution:
    """Best schedule of ``sub`` by the memetic GA, starting from the full-vector ``seeds``."""
    if len(sub.free) == 0:
        evaluation, value = sub.evaluate(np.zeros((1, 0)))
        return Solution(sub.base_kw.copy(), float(evaluation.violation[0]), float(value[0]), 0)
    toolbox = _toolbox(sub, settings)
    with seeded_python_random(int(rng.integers(2**63))):
        population = _initial_population(sub, settings, seeds, rng)
        toolbox.evaluate_population(population)
        best = toolbox.improve(tools.selBest(population, 1)[0])
        population = tools.selBest([*population, best], settings.population)
        stall = generations = 0
        while generations < settings.max_generations and stall < settings.patience:
            generations += 1
            parents = toolbox.select(population, settings.population)
            offspring = algorithms.varAnd(
                parents, toolbox, settings.crossover_probability, settings.mutation_probability
            )
            toolbox.evaluate_population([ind for ind in offspring if not ind.fitness.valid])
            population = tools.selBest(population + offspring, settings.population)
            if _better(population[0], best):
                best = toolbox.improve(population[0])
                population = tools.selBest([*population, best], settings.population)
                stall = 0
            else:
                stall += 1
    violation, objective = best.fitness.values
    return Solution(sub.full(np.array(best))[0], violation, objective, generations)


def local_search(sub: Subproblem, x_start, settings: GaSettings) -> tuple[np.ndarray, float, float]:
    """Sequential LP from ``x_start`` (free part); returns (x, violation, objective) of the best
    point evaluated, never worse than the start by Deb's rules."""
    width = sub.high_kw - sub.low_kw
    best_x = np.clip(np.asarray(x_start, dtype=float), sub.low_kw, sub.high_kw)
    evaluation, value = sub.evaluate(best_x)
    best_v, best_f = float(evaluation.violation[0]), float(value[0])
    linearise_at, trust = best_x, width.copy()
    for _ in range(settings.local_iterations):
        step = np.maximum(5e-3 * width, 1e-3)
        step = np.where(linearise_at + step <= sub.high_kw, step, -step)
        probes = linearise_at + np.vstack([np.zeros_like(step), np.diag(step)])
        evaluation, _ = sub.evaluate(probes)
        if not evaluation.converged.all():
            if np.array_equal(linearise_at, best_x):
                break
            linearise_at, trust = best_x, trust / 2
            continue
        margins = evaluation.margins[0]
        jacobian = ((evaluation.margins[1:] - margins) / step[:, None]).T
        target = _lp_step(sub, linearise_at, margins, jacobian, trust)
        candidates = best_x + LINE_FRACTIONS[:, None] * (target - best_x)
        candidates[0] = target
        evaluation, value = sub.evaluate(candidates)
        k = int(np.lexsort((-value, evaluation.violation))[0])
        improved = _improves(evaluation.violation[k], value[k], best_v, best_f)
        if improved:
            best_x, best_v, best_f = candidates[k], float(evaluation.violation[k]), float(value[k])
        settled = evaluation.violation[0] <= 0 and np.abs(target - linearise_at).max() < 1e-4
        if settled or trust.max() < 1e-3:
            break
        if improved and evaluation.converged[0]:
            linearise_at = target  # corrects the curvature if the target overshot a limit
        else:
            linearise_at, trust = best_x, trust / 2
    return best_x, best_v, best_f


def _lp_step(sub: Subproblem, x0: np.ndarray, margins, jacobian, trust) -> np.ndarray:
    """LP point: best linearised objective with every linearised margin at least
    ``AIM_MARGIN`` (or its current value, if that is smaller but not negative); if there is
    none, the least linearised violation."""
    lower = np.maximum(sub.low_kw, x0 - trust)
    upper = np.minimum(sub.high_kw, x0 + trust)
    need = np.where(margins >= 0, np.minimum(margins, AIM_MARGIN), AIM_MARGIN)
    reach = np.abs(jacobian) @ (upper - lower)
    rows = np.flatnonzero(margins - reach < need + 1e-9)
    a = -jacobian[rows]
    b = margins[rows] - need[rows] - jacobian[rows] @ x0
    n = len(x0)
    terms = sub.objective.lp_terms(sub.free, sub.full(x0)[0])
    n_aux = len(terms.aux_bounds)
    a_ub = np.vstack([np.hstack([a, np.zeros((len(rows), n_aux))]), terms.a_ub])
    b_ub = np.concatenate([b, terms.b_ub])
    bounds = [*zip(lower, upper, strict=True), *terms.aux_bounds]
    result = linprog(terms.cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if result.status == 0:
        return np.clip(result.x[:n], sub.low_kw, sub.high_kw)
    # elastic programme: minimise the sum of linearised violations
    m = len(rows)
    cost = np.concatenate([np.zeros(n), np.ones(m)])
    a_ub = np.hstack([a, -np.eye(m)])
    bounds = [*zip(lower, upper, strict=True), *[(0, None)] * m]
    result = linprog(cost, A_ub=a_ub, b_ub=b, bounds=bounds, method="highs")
    return np.clip(result.x[:n], sub.low_kw, sub.high_kw) if result.status == 0 else x0


def _toolbox(sub: Subproblem, settings: GaSettings) -> base.Toolbox:
    low, high = sub.low_kw.tolist(), sub.high_kw.tolist()
    toolbox = base.Toolbox()
    toolbox.register("evaluate_population", _evaluate_population, sub)
    toolbox.register("select", tools.selTournament, tournsize=settings.tournament_size)
    toolbox.register("mate", tools.cxSimulatedBinaryBounded, eta=settings.sbx_eta, low=low, up=high)
    toolbox.register(
        "mutate",
        tools.mutPolynomialBounded,
        eta=settings.mutation_eta,
        low=low,
        up=high,
        indpb=1.0 / len(low),
    )
    toolbox.register("improve", _improve, sub, settings)
    return toolbox


def _evaluate_population(sub: Subproblem, individuals: list) -> None:
    """Fitness of all ``individuals`` from one batched load flow."""
    if not individuals:
        return
    evaluation, value = sub.evaluate(np.array(individuals, dtype=float))
    for individual, violation, objective in zip(individuals, evaluation.violation, value, strict=True):
        individual.fitness.values = (float(violation), float(objective))


def _improve(sub: Subproblem, settings: GaSettings, individual) -> creator.OcmIndividual:
    x, violation, objective = local_search(sub, np.array(individual, dtype=float), settings)
    improved = creator.OcmIndividual(x.tolist())
    improved.fitness.values = (violation, objective)
    return improved


def _initial_population(sub: Subproblem, settings: GaSettings, seeds, rng) -> list:
    """Seeds, both corners, segments from the seeds towards the objective's corner, random."""
    low, high = sub.low_kw, sub.high_kw
    toward = high if sub.objective.direction > 0 else low
    anchors = [np.clip(np.asarray(s, dtype=float)[sub.free], low, high) for s in seeds if s is not None]
    points = [*anchors, low, high]
    for anchor in anchors or [high if sub.objective.direction < 0 else low]:
        points.extend(anchor + SEED_FRACTIONS[:, None] * (toward - anchor))
    missing = max(settings.population - len(points), 0)
    points.extend(low + rng.random((missing, len(low))) * (high - low))
    return [creator.OcmIndividual(np.asarray(p, dtype=float).tolist()) for p in points]


def _better(a, b) -> bool:
    return _improves(*a.fitness.values, *b.fitness.values)


def _improves(violation, objective, best_violation, best_objective) -> bool:
    """Deb's rules with a tolerance: is (violation, objective) clearly better than the best?"""
    if violation <= 0 and best_violation <= 0:
        return objective > best_objective + 1e-9 * max(1.0, abs(best_objective))
    return violation < best_violation - 1e-12
