"""Dynamic network tariffs and their coordination with the SRP (market.pricing.dt): the tariff
from the network duals, the aggregators' response at spot + DT reaching the DSO's plan, the
relaxed form capping the tariff at ρ, and the budget-neutral penalty of seeds/000 Case 2."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import sparse
from scipy.optimize import brentq

from market.pricing.dt import (
    DEFAULT_BETA,
    ElectricVehicle,
    HeatPump,
    SrpSupply,
    _solve_qp,
    aggregator_response,
    coordinate_srp,
    feeder_limits,
    outdoor_temperature,
    random_fleet,
    solve_tariffs,
    spot_price_shape,
)
from market.pricing.network import NetworkLimits, PricingInputError

H = 24
SPOT = spot_price_shape(H, seed=3)
OUTDOOR = tuple(outdoor_temperature(H))


def small_fleet() -> list:
    return [
        ElectricVehicle("ev1", "LP1", 40.0, arrival=18, departure=7, soc_arrival=0.3, aggregator="a1"),
        ElectricVehicle("ev2", "LP1", 60.0, arrival=17, departure=6, soc_arrival=0.25, aggregator="a2"),
        ElectricVehicle("ev3", "LP2", 50.0, arrival=19, departure=8, soc_arrival=0.4, aggregator="a1"),
        HeatPump("hp1", "LP1", OUTDOOR, rated_kw=3.0, cop=2.3, aggregator="a2"),
        HeatPump("hp2", "LP2", OUTDOOR, rated_kw=4.0, cop=2.8, resistance=7.0, aggregator="a2"),
    ]


def lines(upper, baseline=0.0, *, hours=tuple(range(H)), sensitivity=None, names=None) -> NetworkLimits:
    """One line (kW, sensitivity 1) above each of LP1 and LP2 unless told otherwise."""
    sensitivity = np.eye(2) if sensitivity is None else np.asarray(sensitivity, dtype=float)
    count = sensitivity.shape[0]
    base = np.broadcast_to(np.asarray(baseline, dtype=float), (count, len(hours)))
    return NetworkLimits(("LP1", "LP2"), hours, sensitivity, base, upper, names or ())


def cheapest(fleet):
    return aggregator_response(fleet, SPOT).schedules


def per_point(fleet, schedules):
    out = {"LP1": np.zeros(H), "LP2": np.zeros(H)}
    for d in fleet:
        out[d.load_point] += schedules[d.device_id]
    return out


def tight_network(fleet, cut=0.4):
    """Lines cut ``cut`` of the way from the cheapest plan's peak down to its mean."""
    load = per_point(fleet, cheapest(fleet))
    upper = [load[lp].max() - cut * (load[lp].max() - load[lp].mean()) for lp in ("LP1", "LP2")]
    return lines(upper)


def assert_same(a: dict, b: dict, tol=1e-6):
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst < tol, worst


# ------------------------------------------------------------------------- solver basics


def test_dual_sign_convention_on_a_tiny_case():
    """min −x + ½·0.5·x², x ≤ 1 (binding: the free optimum is 2): row dual −0.5 in HiGHS's
    convention from both solvers, so μ = −row_dual = 0.5 ≥ 0."""
    args = (np.array([-1.0]), np.array([0.0]), np.array([10.0]), sparse.csr_matrix([[1.0]]))
    for solver in ("highs", "clarabel"):
        sol = _solve_qp(*args, np.array([-np.inf]), np.array([1.0]), np.array([0.5]), solver)
        assert sol.x[0] == pytest.approx(1.0, abs=1e-7)
        assert sol.row_dual[0] == pytest.approx(-0.5, abs=1e-7)
    # and through the tariff: one EV whose cheapest hours are capped gets a tariff ≥ 0 there
    ev = ElectricVehicle("ev", "LP1", 40.0)
    plan = solve_tariffs([ev], SPOT, lines([5.0, 5.0]))
    assert plan.feasible and plan.max_tariff > 0 and min(v.min() for v in plan.tariffs.values()) >= 0


def test_ev_plan_matches_the_water_filling_optimum():
    """Independent check: one EV alone has P_t = clip((λ − c_t)/β, 0, 11 kW) with λ such that
    the energy need is met."""
    ev = ElectricVehicle("ev", "LP1", 55.0, arrival=16, departure=8, soc_arrival=0.22)
    bound = ev.charger_kw * ev.plugged(H)

    def power(lam):
        return np.clip((lam - SPOT) / DEFAULT_BETA, 0.0, bound)

    lam = brentq(lambda lam: power(lam).sum() - ev.energy_needed_kwh, -10, 100, xtol=1e-15)
    plan = solve_tariffs([ev], SPOT, None)
    assert np.abs(plan.schedules["ev"] - power(lam)).max() < 1e-6


# --------------------------------------------------------------------------------- cases


def test_uncongested_tariffs_are_zero_and_the_plan_is_each_devices_cheapest():
    fleet = small_fleet()
    plan = solve_tariffs(fleet, SPOT, lines([1e4, 1e4]))
    assert plan.feasible and plan.binding == () and plan.congestion_left == {}
    assert all(np.all(v == 0) for v in plan.tariffs.values()) and plan.revenue == 0
    alone = {d.device_id: aggregator_response([d], SPOT).schedules[d.device_id] for d in fleet}
    assert_same(plan.schedules, alone)
    for d in fleet:  # the devices' own constraints hold
        p = plan.schedules[d.device_id]
        if isinstance(d, HeatPump):
            temps = d.temperatures(p)
            assert temps.min() >= d.t_min - 1e-6 and temps.max() <= d.t_max + 1e-6
            assert p.min() >= -1e-7 and p.max() <= d.rated_kw + 1e-7
        else:
            assert p.sum() * d.efficiency / d.battery_kwh + d.soc_arrival >= d.soc_target - 1e-7
            assert np.all(p[~d.plugged(H)] == 0) and p.max() <= d.charger_kw + 1e-7


def test_congested_tariff_is_positive_exactly_where_a_limit_binds_and_limits_hold():
    fleet = small_fleet()
    network = tight_network(fleet)
    plan = solve_tariffs(fleet, SPOT, network)
    assert plan.feasible and plan.binding
    load = per_point(fleet, plan.schedules)
    for c, lp in enumerate(("LP1", "LP2")):
        assert load[lp].max() <= network.upper[c] + 1e-6
        for t in range(H):
            binds = (network.names[c], t) in plan.binding
            if plan.tariffs[lp][t] > 1e-7:
                assert binds, (lp, t)
            if not binds:
                assert plan.tariffs[lp][t] == 0.0
    assert any(plan.tariffs[lp].max() > 1e-4 for lp in ("LP1", "LP2"))
    assert plan.revenue == pytest.approx(sum(plan.tariffs[lp] @ load[lp] for lp in load))
    assert "binding" in plan.report


def test_tariff_is_the_sensitivity_weighted_sum_of_the_limit_duals():
    """A feeder over both load points (sensitivity 1, 1) and a line above LP1 (0.9): DT = Sᵀμ."""
    fleet = small_fleet()
    load = per_point(fleet, cheapest(fleet))
    total = load["LP1"] + load["LP2"]
    sensitivity = np.array([[1.0, 1.0], [0.9, 0.0]])
    upper = [total.max() * 0.7, 0.9 * load["LP1"].max() * 0.7]
    network = lines(upper, sensitivity=sensitivity, names=("feeder", "L-LP1"))
    plan = solve_tariffs(fleet, SPOT, network)
    assert plan.feasible
    mu = np.array([[plan.shadow_prices[name, t] for t in range(H)] for name in network.names])
    assert mu.max(axis=1).min() > 1e-3 and mu.min() >= 0  # both limits have a price
    for k, lp in enumerate(("LP1", "LP2")):
        assert np.allclose(plan.tariffs[lp], sensitivity[:, k] @ mu, atol=1e-12)
    assert {name for name, _ in plan.binding} == {"feeder", "L-LP1"}


def test_aggregators_alone_at_spot_plus_tariff_reach_the_dso_plan_small_case():
    fleet = small_fleet()
    plan = solve_tariffs(fleet, SPOT, tight_network(fleet))
    assert plan.max_tariff > 1e-4
    response = aggregator_response(fleet, SPOT, plan)
    assert_same(response.schedules, plan.schedules)
    assert set(response.cost) == {"a1", "a2"}
    # the same β is needed: another β gives another plan
    other = aggregator_response(fleet, SPOT, plan, beta=10 * DEFAULT_BETA).schedules
    assert max(float(np.abs(other[k] - plan.schedules[k]).max()) for k in other) > 1e-3


def test_aggregators_alone_reach_the_dso_plan_on_a_random_fleet():
    fleet = random_fleet(60, H, ("LP1", "LP4", "LP5"), seed=7)
    network = feeder_limits(fleet, SPOT)
    plan = solve_tariffs(fleet, SPOT, network)
    assert plan.feasible and plan.max_tariff > 0
    assert_same(aggregator_response(fleet, SPOT, plan).schedules, plan.schedules)


def infeasible_case():
    """Two EVs at LP1 needing about 45 kWh in all, a line allowing 1.5 kW in each of their 13
    plugged hours (19.5 kWh); LP2 unconstrained."""
    fleet = [
        ElectricVehicle("ev1", "LP1", 40.0, arrival=18, departure=7, soc_arrival=0.3),
        ElectricVehicle("ev2", "LP1", 40.0, arrival=18, departure=7, soc_arrival=0.3, aggregator="a2"),
        ElectricVehicle("ev3", "LP2", 40.0, arrival=18, departure=7, soc_arrival=0.3),
    ]
    return fleet, lines([3.0, 1e4], baseline=[[1.5], [0.0]])


def test_infeasible_network_is_reported_with_the_least_excess():
    fleet, network = infeasible_case()
    plan = solve_tariffs(fleet, SPOT, network)
    assert plan.status == "infeasible" and not plan.feasible
    need = sum(d.energy_needed_kwh for d in fleet[:2])
    assert sum(plan.congestion_left.values()) == pytest.approx(need - 1.5 * 13, abs=1e-6)
    assert {name for name, _ in plan.congestion_left} == {"limit0"}
    assert plan.report.startswith("infeasible") and "limit0 at t" in plan.report


def test_relaxed_form_caps_the_tariff_at_rho_and_reports_the_congestion_left():
    fleet, network = infeasible_case()
    plan = solve_tariffs(fleet, SPOT, network, rho=2.0)
    assert plan.feasible and plan.congestion_left
    assert plan.max_tariff == pytest.approx(2.0, abs=1e-6)
    for (name, hour), _kw in plan.congestion_left.items():  # μ = ρ wherever congestion is left
        assert plan.shadow_prices[name, hour] == pytest.approx(2.0, abs=1e-6)
    assert "congestion left" in plan.report
    assert_same(aggregator_response(fleet, SPOT, plan).schedules, plan.schedules)


def test_more_penalty_never_leaves_more_congestion():
    fleet = small_fleet()
    network = tight_network(fleet, cut=0.6)
    left = []
    for rho in (0.0, 0.005, 0.02, 0.05, 0.1, 0.5, 2.0, 10.0):
        plan = solve_tariffs(fleet, SPOT, network, rho=rho)
        assert plan.max_tariff <= rho + 1e-6
        left.append(sum(plan.congestion_left.values()))
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(left))
    assert left[0] > 1.0 and left[-1] == 0.0


def test_srp_coordination_balances_dt_revenue_and_srp_cost():
    fleet = small_fleet()
    network = tight_network(fleet, cut=0.6)
    high = solve_tariffs(fleet, SPOT, network)
    result = coordinate_srp(fleet, SPOT, network, SrpSupply(elasticity=100.0), tolerance=1e-6)
    assert result.status == "balanced", result.report
    assert abs(result.revenue - result.srp_cost) <= 1e-6 and result.srp_cost > 0
    assert 0 < result.rho < high.max_tariff
    # the penalty found is the tariff wherever congestion is left ("DT at t18 = 0.40709 = ρ")
    plan = result.plan
    point = {"limit0": "LP1", "limit1": "LP2"}
    left_tariffs = [plan.tariffs[point[name]][t] for name, t in plan.congestion_left]
    assert max(left_tariffs) == pytest.approx(result.rho, abs=1e-7)
    assert plan.max_tariff <= result.rho + 1e-7
    # SRP: price = kW left / elasticity, cost = Σ price · kW
    assert result.srp_kw == plan.congestion_left
    assert result.srp_cost == pytest.approx(sum(kw * kw / 100.0 for kw in result.srp_kw.values()))
    assert "ρ =" in result.report


def test_srp_coordination_on_a_network_the_tariff_alone_cannot_keep():
    """Case 1 then the SRP: congestion is left at every ρ, the search still balances."""
    fleet, network = infeasible_case()
    result = coordinate_srp(fleet, SPOT, network, SrpSupply(elasticity=5.0))
    assert result.status == "balanced" and abs(result.imbalance) <= 1e-6
    assert result.plan.max_tariff == pytest.approx(result.rho, abs=1e-7) and result.srp_kw


def test_srp_coordination_without_congestion_needs_no_tariff():
    fleet = small_fleet()
    result = coordinate_srp(fleet, SPOT, lines([1e4, 1e4]), SrpSupply(10.0))
    assert result.status == "uncongested" and result.rho == 0 and result.srp_cost == 0


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("device", "words"),
    [
        (ElectricVehicle("evX", "LP1", 75.0, arrival=5, departure=7, soc_arrival=0.2), ["'evX'", "needs"]),
        (ElectricVehicle("evX", "LP1", soc_target=0.9), ["'evX'", "SOC target 0.9"]),
        (ElectricVehicle("evX", "LP1", soc_arrival=0.1), ["'evX'", "SOC at arrival"]),
        (ElectricVehicle("evX", "LP1", arrival=24), ["'evX'", "arrival hour 24"]),
        (ElectricVehicle("evX", "LP1", arrival=7), ["'evX'", "same hour"]),
        (ElectricVehicle("evX", "LP1", charger_kw=0.0), ["'evX'", "charger_kw"]),
        (HeatPump("hpX", "LP1", OUTDOOR, rated_kw=0.5), ["heat pump 'hpX'", "comfort minimum"]),
        (HeatPump("hpX", "LP1", (30.0,) * H), ["heat pump 'hpX'", "comfort maximum"]),
        (HeatPump("hpX", "LP1", OUTDOOR[:5]), ["heat pump 'hpX'", "5 outdoor temperatures"]),
        (HeatPump("hpX", "LP1", OUTDOOR, cop=-1.0), ["heat pump 'hpX'", "cop"]),
        (HeatPump("hpX", "LP1", OUTDOOR, t_min=24.0), ["heat pump 'hpX'", "comfort band"]),
    ],
)
def test_a_device_that_cannot_meet_its_own_constraints_is_named(device, words):
    with pytest.raises(PricingInputError) as error:
        solve_tariffs([device], SPOT, None)
    for word in words:
        assert word in str(error.value)


def test_other_bad_inputs_are_said_in_plain_words():
    ev = ElectricVehicle("ev1", "LP1")
    cases = [
        (lambda: solve_tariffs([ev, ev], SPOT, None), "'ev1': duplicate device id"),
        (
            lambda: solve_tariffs([ElectricVehicle("ev9", "LP7")], SPOT, lines([1, 1])),
            "'ev9': load point 'LP7'",
        ),
        (lambda: solve_tariffs([ev], SPOT, None, beta=0.0), "'ev1': beta 0.0"),
        (lambda: solve_tariffs([ev], SPOT, None, beta={"ev1": -1.0}), "'ev1': beta -1.0"),
        (lambda: solve_tariffs([ev], SPOT, None, rho=-1.0), "penalty rho -1.0"),
        (lambda: solve_tariffs([ev], [np.nan] * H, None), "spot prices must be finite"),
        (lambda: solve_tariffs([ev], SPOT, lines([1, 1], hours=(30,))), "hour 30, outside the horizon"),
        (lambda: solve_tariffs([ev], SPOT, None, solver="cplex"), "unknown solver 'cplex'"),
        (lambda: aggregator_response([ev], SPOT, {"LP1": [0.1] * 3}), "tariff of load point 'LP1'"),
        (lambda: coordinate_srp([ev], SPOT, lines([1, 1]), SrpSupply(0.0)), "SRP elasticity 0.0"),
    ]
    for run, words in cases:
        with pytest.raises(PricingInputError, match=words.replace("(", r"\(")):
            run()


def test_qp_against_the_lp_without_beta():
    """Cross-check with an independent LP (scipy's linprog, β = 0) on the same device and network
    rows: LP optimum ≤ the plan's energy cost ≤ LP optimum + ½β‖P_LP‖²."""
    from scipy.optimize import linprog

    from market.pricing.dt import DsoTariffProblem

    fleet = small_fleet()
    network = tight_network(fleet)
    plan = solve_tariffs(fleet, SPOT, network)
    problem = DsoTariffProblem.build(fleet, H, DEFAULT_BETA)
    net, headroom = problem.network_rows(network)
    cost = np.concatenate([np.tile(SPOT, len(fleet)), np.zeros(problem.matrix.shape[1] - problem.n_power)])
    equal = problem.row_lower == problem.row_upper
    ranged = ~equal
    a_ub = sparse.vstack([problem.matrix[ranged], -problem.matrix[ranged], net])
    b_ub = np.concatenate([problem.row_upper[ranged], -problem.row_lower[ranged], headroom])
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=problem.matrix[equal] if equal.any() else None,
        b_eq=problem.row_lower[equal] if equal.any() else None,
        bounds=list(zip(problem.col_lower, problem.col_upper, strict=True)),
        method="highs",
    )
    assert res.status == 0
    slack = 0.5 * DEFAULT_BETA * float(res.x[: problem.n_power] @ res.x[: problem.n_power])
    assert res.fun - 1e-6 <= plan.energy_cost <= res.fun + slack + 1e-6
