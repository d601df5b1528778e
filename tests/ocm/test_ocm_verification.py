"""Verification of bands before publication: corners, random schedules, the tightening of
limits when a schedule inside the box exceeds one, and the shrinking fallback."""

from __future__ import annotations

import numpy as np
import pytest

from ocm.bands import OcmProblem
from ocm.case import case_from_pandapower
from ocm.examples import kerber_dorfnetz_with_flexibilities, paper_test_feeder
from ocm.reference import check_schedules
from ocm.verification import shrink_band, verify_band

pytestmark = pytest.mark.usefixtures("quiet_warnings")


@pytest.fixture(scope="module")
def paper():
    case = case_from_pandapower(paper_test_feeder())
    problem = OcmProblem(case.grid, case.flexibilities)
    return case, problem, problem.solve(case.point)


def test_a_published_band_passes_and_a_wider_one_fails(paper):
    case, problem, result = paper
    rng = np.random.default_rng(0)
    report, _ = verify_band(problem.constraints, case.point, result.p_min_kw, result.p_max_kw, 300, rng)
    assert report.passed and report.samples == 300 and report.corners == 2
    assert report.v_min_pu == pytest.approx(result.v_min_pu_at_pmax)
    assert len(report.sample_v_min_pu) == 300 and (report.sample_v_min_pu >= 0.95).all()
    wider = result.p_max_kw + np.array([0.0, 3.0])
    report, _ = verify_band(problem.constraints, case.point, result.p_min_kw, wider, 300, rng)
    assert not report.passed and 0 < report.failures < 301
    assert "pu < 0.950" in report.message and report.summary().startswith("FAILED")


def test_shrinking_a_failing_band_gives_a_passing_band_inside_it(paper):
    case, problem, result = paper
    rng = np.random.default_rng(1)
    wider = result.p_max_kw + np.array([0.0, 8.0])
    report, evaluation = verify_band(problem.constraints, case.point, result.p_min_kw, wider, 200, rng)
    low, high, shrunk = shrink_band(
        problem.constraints, case.point, result.p_min_kw, wider, evaluation, 200, rng
    )
    assert not report.passed and shrunk.passed
    assert (low >= result.p_min_kw - 1e-12).all() and (high <= wider + 1e-12).all() and (low <= high).all()
    assert (high - low).sum() > 0 and "shrunk" in shrunk.adjustment


def test_limits_are_tightened_when_a_mixed_schedule_overloads_a_line():
    """With reverse flows limited by lines, a schedule with PV at full output and other
    flexibilities consuming (lower voltage, so more current for the same power) loads a line
    more than either corner. Verification finds it; OCM tightens that limit and re-optimises.
    pandapower confirms the published band."""
    net = kerber_dorfnetz_with_flexibilities(count=12, seed=7, load_scaling=0.3)
    net.sgen["max_p_mw"] *= 2.5
    net.line["max_loading_percent"] = 40.0
    case = case_from_pandapower(net)
    result = OcmProblem(case.grid, case.flexibilities).solve(case.point, seed=1)
    assert result.feasible and result.verification.passed
    assert "limits tightened" in result.message and "line" in result.message
    assert result.verification.corners > 2
    rng = np.random.default_rng(2)
    schedules = result.p_min_kw + rng.random((1000, len(result.p_min_kw))) * (
        result.p_max_kw - result.p_min_kw
    )
    check = check_schedules(net, case.flexibilities, schedules)
    assert check.violating == 0, check
    assert check.worst_overload_percent > -1.0  # the line limit binds
