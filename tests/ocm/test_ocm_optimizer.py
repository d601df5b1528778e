"""The objectives, Deb's rules in DEAP's fitness, the local search and the memetic GA."""

from __future__ import annotations

import numpy as np
import pytest
from deap import creator
from scipy.optimize import linprog

from ocm.case import case_from_pandapower
from ocm.examples import paper_test_feeder
from ocm.objectives import Objective
from ocm.optimizer import GaSettings, Subproblem, local_search, optimise
from ocm.problem import GridConstraints

pytestmark = pytest.mark.usefixtures("quiet_warnings")


def paper_subproblem(name="sum", direction=+1, ul01_kw=8.0) -> Subproblem:
    case = case_from_pandapower(paper_test_feeder(ul01_kw=ul01_kw))
    low, high = np.zeros(2), np.full(2, 22.0)
    members = np.arange(2)
    return Subproblem(
        constraints=GridConstraints(case.grid, case.flexibilities),
        point=case.point,
        base_kw=low.copy(),
        free=members,
        low_kw=low,
        high_kw=high,
        objective=Objective(name, direction, members, low, high),
    )


def test_objective_values_and_shares_in_both_directions():
    low, high = np.array([0.0, -10.0]), np.array([20.0, 10.0])
    x = np.array([[10.0, 5.0]])
    up = {n: Objective(n, +1, np.arange(2), low, high) for n in ("sum", "proportional", "maxmin")}
    down = Objective("maxmin", -1, np.arange(2), low, high)
    np.testing.assert_allclose(up["sum"].shares(x), [[0.5, 0.75]])
    np.testing.assert_allclose(down.shares(x), [[0.5, 0.25]])
    assert up["sum"].value(x)[0] == 15.0
    assert Objective("sum", -1, np.arange(2), low, high).value(x)[0] == -15.0
    assert up["proportional"].value(x)[0] == pytest.approx(np.log(0.501) + np.log(0.751))
    assert up["maxmin"].value(x)[0] == pytest.approx(0.5 + 1e-3 * 0.625)
    with pytest.raises(ValueError, match="unknown objective"):
        Objective("fair", +1, np.arange(2), low, high)


@pytest.mark.parametrize(("name", "expected_kw"), [("proportional", [10.0, 10.0]), ("maxmin", [5.0, 15.0])])
def test_lp_terms_share_a_budget_fairly(name, expected_kw):
    """Two flexibilities of 10 and 30 kW share a budget of 20 kW: proportional fairness
    (Σ log share) splits it equally (the log makes it scale-free), max-min gives equal shares."""
    low, high = np.zeros(2), np.array([10.0, 30.0])
    objective = Objective(name, +1, np.arange(2), low, high)
    terms = objective.lp_terms(np.arange(2), np.array([5.0, 5.0]))
    n_aux = len(terms.aux_bounds)
    budget = np.concatenate([[1.0, 1.0], np.zeros(n_aux)])[None, :]  # x1 + x2 <= 20
    result = linprog(
        terms.cost,
        A_ub=np.vstack([budget, terms.a_ub]),
        b_ub=np.concatenate([[20.0], terms.b_ub]),
        bounds=[(0, 10), (0, 30), *terms.aux_bounds],
    )
    np.testing.assert_allclose(result.x[:2], expected_kw, atol=0.2)


def test_deap_fitness_follows_debs_feasibility_rules():
    def fitness(violation, objective):
        individual = creator.OcmIndividual([0.0])
        individual.fitness.values = (violation, objective)
        return individual.fitness

    assert fitness(0.0, -100.0) > fitness(1e-9, 100.0)  # feasible beats infeasible
    assert fitness(0.1, -5.0) > fitness(0.2, 50.0)  # less violation wins
    assert fitness(0.0, 2.0) > fitness(0.0, 1.0)  # then the objective


def test_local_search_repairs_an_infeasible_start_and_reaches_the_optimum():
    sub = paper_subproblem()
    x, violation, value = local_search(sub, np.array([22.0, 22.0]), GaSettings())
    assert violation == 0.0
    assert x[0] == pytest.approx(22.0) and value == pytest.approx(22.0 + 7.904, abs=0.01)
    evaluation, _ = sub.evaluate(x)
    assert 0 <= evaluation.margins.min() <= 2e-6  # on the voltage limit, from inside


def test_local_search_without_a_feasible_point_minimises_the_violation():
    sub = paper_subproblem(ul01_kw=100.0)
    x, violation, _ = local_search(sub, np.array([11.0, 11.0]), GaSettings())
    np.testing.assert_allclose(x, 0.0, atol=1e-6)  # chargers off relieve the most
    assert violation > 0


def test_the_ga_is_deterministic_and_finds_the_optimum_from_random_seeds_alone():
    sub = paper_subproblem("maxmin")
    runs = [optimise(sub, GaSettings(), [], np.random.default_rng(3)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].x_kw, runs[1].x_kw)
    assert runs[0].feasible
    assert runs[0].x_kw[0] == pytest.approx(runs[0].x_kw[1], abs=1e-3)  # equal shares
    other = optimise(sub, GaSettings(), [], np.random.default_rng(4))
    assert other.objective == pytest.approx(runs[0].objective, rel=1e-4)
