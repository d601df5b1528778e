"""The feeder pool: parallel worker processes, sticky feeders, failures isolated per feeder."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ocm.bands import OcmProblem
from ocm.case import case_from_pandapower
from ocm.examples import kerber_dorfnetz_with_flexibilities, paper_test_feeder
from ocm.feeders import Feeder, FeederPool, FeederStep, solve_step
from ocm.optimizer import GaSettings
from ocm.problem import OperatingPoint

SETTINGS = GaSettings(population=16, max_generations=8)


def crash_on_feeder_b(problem, request, warm_start):
    """A solver whose worker dies (no exception, no clean-up) when it meets feeder "b"."""
    if request.seed == 666:
        os._exit(3)
    return solve_step(problem, request, warm_start)


def _feeders():
    cases = {
        "a": case_from_pandapower(paper_test_feeder()),
        "b": case_from_pandapower(paper_test_feeder(ul01_kw=12.0)),
        "c": case_from_pandapower(kerber_dorfnetz_with_flexibilities(count=4, seed=3)),
    }
    feeders = [
        Feeder(name, case.grid, case.flexibilities, settings=SETTINGS, samples=50)
        for name, case in cases.items()
    ]
    return feeders, cases


def _requests(cases, **seeds):
    return {name: FeederStep(case.point, seed=seeds.get(name, 0)) for name, case in cases.items()}


def test_pool_solves_every_feeder_in_worker_processes_like_a_local_problem():
    feeders, cases = _feeders()
    with FeederPool(feeders, workers=2) as pool:
        assert len(pool.pids) == 2 and os.getpid() not in pool.pids
        first = pool.step(_requests(cases))
        second = pool.step(_requests(cases, a=1, b=1, c=1))
    assert all(outcome.ok for outcome in [*first.values(), *second.values()])
    assert {first[name].worker for name in first} == {0, 1}
    for name in cases:
        assert second[name].result.feasible and second[name].result.verification.passed
        assert first[name].worker == second[name].worker  # sticky
    # the same bands as a problem solved here, warm start included
    feeder = feeders[2]
    local = OcmProblem(feeder.grid, feeder.flexibilities, settings=SETTINGS, samples=50)
    warm = local.solve(cases["c"].point, seed=0)
    again = local.solve(cases["c"].point, seed=1, warm_start=warm)
    np.testing.assert_array_equal(first["c"].result.p_max_kw, warm.p_max_kw)
    np.testing.assert_array_equal(second["c"].result.p_max_kw, again.p_max_kw)
    np.testing.assert_array_equal(second["c"].result.p_min_kw, again.p_min_kw)


def test_a_feeder_that_raises_fails_alone():
    feeders, cases = _feeders()
    requests = _requests(cases)
    requests["b"] = FeederStep(OperatingPoint(np.zeros(3), np.zeros(3)))  # wrong length: bad data
    with FeederPool(feeders, workers=1) as pool:
        outcomes = pool.step(requests)
        assert pool.replaced == 0
        again = pool.step(_requests(cases))
    assert not outcomes["b"].ok and "operating point" in outcomes["b"].error
    assert outcomes["a"].ok and outcomes["c"].ok  # same worker, solved before and after "b"
    assert all(outcome.ok for outcome in again.values())


def test_a_feeder_whose_set_up_fails_is_reported_at_every_step():
    feeders, cases = _feeders()
    broken = Feeder("broken", feeders[0].grid, (), samples=10)  # no flexibility: OcmProblem refuses
    with FeederPool([*feeders, broken], workers=2) as pool:
        requests = _requests(cases)
        requests["broken"] = FeederStep(cases["a"].point)
        outcomes = pool.step(requests)
    assert (
        "set-up failed" in outcomes["broken"].error and "at least one flexibility" in outcomes["broken"].error
    )
    assert all(outcomes[name].ok for name in cases)


def test_a_dying_worker_is_replaced_and_only_its_current_feeder_fails():
    feeders, cases = _feeders()
    with FeederPool(feeders, workers=1, solver=crash_on_feeder_b) as pool:
        pid = pool.pids[0]
        outcomes = pool.step(_requests(cases, b=666))
        assert pool.replaced == 1 and pool.pids[0] != pid
        again = pool.step(_requests(cases, a=1, b=1, c=1))
    assert not outcomes["b"].ok and "exit code 3" in outcomes["b"].error
    assert outcomes["a"].ok and outcomes["c"].ok  # "c" came after "b": solved by the new worker
    assert all(outcome.ok for outcome in again.values())
    assert again["a"].result.feasible


def test_a_worker_past_the_timeout_is_stopped_and_replaced():
    feeders, cases = _feeders()
    with FeederPool(feeders[:1], workers=1, timeout=0.001) as pool:
        outcomes = pool.step(_requests({"a": cases["a"]}))
        assert pool.replaced == 1
        pool.timeout = None
        again = pool.step(_requests({"a": cases["a"]}))
    assert not outcomes["a"].ok and "timed out" in outcomes["a"].error
    assert again["a"].ok


def test_unknown_feeders_are_refused():
    feeders, cases = _feeders()
    with FeederPool(feeders[:1], workers=1) as pool, pytest.raises(KeyError, match="nope"):
        pool.step({"nope": FeederStep(cases["a"].point)})
