"""OCM bands on the paper's test feeder: its findings, the fair objectives, priority groups,
infeasible operating points, determinism and the per-step API."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pytest

from ocm.bands import OcmProblem
from ocm.case import case_from_pandapower
from ocm.examples import PAPER_CHARGER_KW, paper_test_feeder
from ocm.problem import OperatingPoint

VOLTAGE_TOLERANCE_PU = 1e-5


pytestmark = pytest.mark.usefixtures("quiet_warnings")


def solve(net, objective="sum", seed=0, **kwargs):
    case = case_from_pandapower(net)
    return OcmProblem(case.grid, case.flexibilities, **kwargs).solve(
        case.point, objective=objective, seed=seed
    )


@pytest.fixture(scope="module")
def paper_results():
    net = paper_test_feeder()
    return {objective: solve(net, objective) for objective in ("sum", "proportional", "maxmin")}


def test_sum_puts_the_lowest_voltage_at_the_limit_and_favours_the_charger_near_the_transformer(
    paper_results,
):
    result = paper_results["sum"]
    cs01, cs02 = result.p_max_kw
    assert result.feasible and result.verification.passed
    assert result.v_min_pu_at_pmax == pytest.approx(0.95, abs=VOLTAGE_TOLERANCE_PU)
    assert result.v_min_pu_at_pmax >= 0.95
    assert cs01 == pytest.approx(PAPER_CHARGER_KW) and 0 < cs02 < cs01
    np.testing.assert_allclose(result.p_min_kw, 0.0, atol=1e-9)  # nothing limits low consumption


def test_fair_objectives_narrow_the_gap_at_some_cost_in_total(paper_results):
    gap = {name: r.p_max_kw[0] - r.p_max_kw[1] for name, r in paper_results.items()}
    total = {name: r.p_max_kw.sum() for name, r in paper_results.items()}
    assert gap["maxmin"] == pytest.approx(0.0, abs=1e-3)  # equal shares of equal chargers
    assert gap["sum"] > gap["proportional"] > gap["maxmin"]
    assert total["sum"] >= total["proportional"] >= total["maxmin"] - 1e-6
    for result in paper_results.values():
        assert result.feasible and result.verification.passed
        assert result.v_min_pu_at_pmax == pytest.approx(0.95, abs=VOLTAGE_TOLERANCE_PU)


def test_proportional_shares_balance_marginal_costs(paper_results):
    """At the proportional-fair optimum, moving capacity between the chargers along the
    voltage limit does not raise Σ log(share): shares are inversely proportional to the
    voltage sensitivities (checked by perturbing the result)."""
    result = paper_results["proportional"]
    net = paper_test_feeder()
    case = case_from_pandapower(net)
    problem = OcmProblem(case.grid, case.flexibilities)
    p = result.p_max_kw
    ev = problem.constraints.evaluate(p + np.array([[0, 0], [0.01, 0], [0, 0.01]]), case.point)
    sensitivity = (ev.v_min_pu[0] - ev.v_min_pu[1:]) / 0.01  # pu per kW, per charger
    shares = p / PAPER_CHARGER_KW
    assert sensitivity[1] / sensitivity[0] == pytest.approx(shares[0] / shares[1], rel=0.02)


def test_high_load_at_ul01_is_infeasible_with_the_least_violating_zero_band():
    result = solve(paper_test_feeder(ul01_kw=100.0))
    assert not result.feasible
    np.testing.assert_allclose(result.p_min_kw, 0.0, atol=1e-9)
    np.testing.assert_allclose(result.p_max_kw, 0.0, atol=1e-9)
    assert result.violation > 0
    assert result.v_min_pu_at_pmax < 0.95
    assert "bus" in result.message and "pu < 0.950" in result.message
    assert not result.verification.passed


def test_rising_ul01_load_drives_both_maxima_to_zero_then_the_feeder_is_infeasible():
    results = [solve(paper_test_feeder(ul01_kw=p)) for p in (10.0, 30.0, 50.0, 60.0, 70.0)]
    maxima = np.array([r.p_max_kw for r in results])
    assert (np.diff(maxima, axis=0) <= 1e-6).all()  # both chargers lose capacity
    assert [r.feasible for r in results] == [True, True, True, True, False]
    assert maxima[1, 1] == 0.0 < maxima[1, 0]  # the far charger loses it first
    assert maxima[3].sum() < 1.0
    np.testing.assert_array_equal(maxima[4], [0.0, 0.0])
    for result in results[:4]:
        assert result.v_min_pu_at_pmax == pytest.approx(0.95, abs=VOLTAGE_TOLERANCE_PU)


def test_a_battery_in_priority_group_0_is_served_before_the_chargers():
    def feeder(battery_group: int, charger_group: int, chargers_flexible: bool = True):
        net = paper_test_feeder(ul01_kw=20.0)
        net.load["priority_group"] = charger_group
        net.load.loc[:, "controllable"] = net.load["controllable"].fillna(False).astype(bool)
        if not chargers_flexible:
            net.load.loc[net.load["controllable"], "controllable"] = False
        pp.create_storage(
            net, 3, 0.0, max_e_mwh=0.1, name="CB", controllable=True, min_p_mw=-0.03, max_p_mw=0.03
        )
        net.storage["priority_group"] = battery_group
        return net

    battery_first = solve(feeder(0, 1))
    chargers_first = solve(feeder(1, 0))
    battery_alone = solve(feeder(0, 0, chargers_flexible=False))
    for result in (battery_first, chargers_first):
        assert result.feasible and result.verification.passed
        assert result.v_min_pu_at_pmax == pytest.approx(0.95, abs=VOLTAGE_TOLERANCE_PU)
    battery = 2  # loads (CS01, CS02) come first, then storages
    assert battery_first.flexibilities[battery].name == "CB"
    # first served: the battery gets what it gets with idle chargers (their relieving limit)
    assert battery_first.p_max_kw[battery] == pytest.approx(battery_alone.p_max_kw[0], abs=1e-3)
    assert battery_first.p_max_kw[battery] > chargers_first.p_max_kw[battery]
    assert chargers_first.p_max_kw[:2].sum() > battery_first.p_max_kw[:2].sum()
    # P_min: the battery may discharge fully in both orders (no over-voltage on this feeder)
    assert battery_first.p_min_kw[battery] == pytest.approx(-30.0)


def test_equal_seeds_give_equal_bands_and_the_flexibilities_own_power_does_not_matter():
    net = paper_test_feeder(ul01_kw=12.0)
    first = solve(net, "proportional", seed=7)
    again = solve(net, "proportional", seed=7)
    np.testing.assert_array_equal(first.p_min_kw, again.p_min_kw)
    np.testing.assert_array_equal(first.p_max_kw, again.p_max_kw)
    net.load.loc[net.load["name"] == "CS02", "p_mw"] = 0.02
    moved = solve(net, "proportional", seed=7)
    np.testing.assert_array_equal(first.p_max_kw, moved.p_max_kw)


def test_solve_per_step_with_warm_start_and_hardware_limits_of_the_step():
    case = case_from_pandapower(paper_test_feeder())
    problem = OcmProblem(case.grid, case.flexibilities)
    first = problem.solve(case.point)
    heavier = OperatingPoint(case.point.p_kw * 1.5, case.point.q_kvar * 1.5)
    warm = problem.solve(heavier, warm_start=first)
    cold = problem.solve(heavier)
    assert warm.feasible and cold.feasible
    assert warm.p_max_kw.sum() == pytest.approx(cold.p_max_kw.sum(), rel=1e-5)
    assert warm.p_max_kw.sum() < first.p_max_kw.sum()
    capped = problem.solve(case.point, p_low_kw=[0.0, 0.0], p_high_kw=[5.0, 22.0])
    assert capped.p_max_kw[0] == pytest.approx(5.0)
    assert capped.p_max_kw[1] > first.p_max_kw[1]  # the capacity CS01 cannot use goes to CS02


def test_the_json_document_has_exactly_the_published_fields(paper_results):
    document = paper_results["sum"].to_json_dict()
    assert set(document) == {
        "feasible",
        "flexibilities",
        "v_min_pu_at_pmax",
        "v_max_pu_at_pmin",
        "max_loading_percent",
        "seconds",
    }
    assert [set(f) for f in document["flexibilities"]] == [
        {"element", "index", "bus", "name", "phase", "p_min_kw", "p_max_kw"}
    ] * 2
    assert document["flexibilities"][0] | {"p_max_kw": 0} == {
        "element": "load",
        "index": 2,
        "bus": 3,
        "name": "CS01",
        "phase": "abc",
        "p_min_kw": 0.0,
        "p_max_kw": 0,
    }


def test_bad_per_step_inputs_are_refused_with_the_flexibility_named():
    case = case_from_pandapower(paper_test_feeder())
    problem = OcmProblem(case.grid, case.flexibilities)
    with pytest.raises(ValueError, match="objective"):
        problem.solve(case.point, objective="fairest")
    with pytest.raises(ValueError, match=r"load.3 \(CS02\): hardware limits"):
        problem.solve(case.point, p_low_kw=[0.0, 5.0], p_high_kw=[22.0, 1.0])
    with pytest.raises(ValueError, match="operating point p_kw"):
        problem.solve(OperatingPoint(case.point.p_kw[:-1], case.point.q_kvar))
