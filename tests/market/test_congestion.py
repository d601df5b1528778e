"""The DSO's network for its price instruments (market.pricing.grid_limits, requirements,
congestion): hourly load flows checked against pandapower, sensitivities against the full load
flow, the requirement table from a congested baseline, and the market cleared on a real feeder
whose result pandapower finds free of congestion."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from market.pricing.aggregator import aggregator_bids, baseline_schedules, per_load_point
from market.pricing.congestion import dt_on_grid, schedule_change, tfm_on_grid
from market.pricing.dt import aggregator_response, random_fleet, spot_price_shape
from market.pricing.grid_limits import GridLimits
from market.pricing.network import PricingInputError
from market.pricing.requirements import requirement_table
from market.pricing.tfm import Bid
from ocm.grid.network_io import grid_from_pandapower

HOURS = 24
EVENING = np.exp(-0.5 * ((np.arange(HOURS) - 18) / 2.5) ** 2)
EV_HOURS = (np.arange(HOURS) >= 17) & (np.arange(HOURS) <= 20)


def day_of(net, grid, scaling: float = 1.0):
    """The net's loads over a day: 40 % at night, 100 % at 18:00 (an evening peak)."""
    shape = scaling * (0.4 + 0.6 * EVENING)
    p = np.zeros((HOURS, grid.n_bus))
    q = np.zeros((HOURS, grid.n_bus))
    columns = grid.bus_positions(net.load.bus.to_numpy())
    for column, p_mw, q_mvar in zip(columns, net.load.p_mw, net.load.q_mvar, strict=True):
        p[:, column] += 1e3 * p_mw * shape
        q[:, column] += 1e3 * q_mvar * shape
    return p, q


@pytest.fixture(scope="module")
def feeder():
    net = pn.create_kerber_dorfnetz()
    grid = grid_from_pandapower(net)
    p, q = day_of(net, grid)
    points = {f"LP{bus}": int(bus) for bus in net.load.bus.to_numpy()[::4]}
    ev = {lp: np.where(EV_HOURS, 11.0, 0.0) for lp in points}  # one 11 kW car per load point
    return net, grid, GridLimits(grid, p, q, points), ev


def pandapower_day(net, grid_limits: GridLimits, extra_kw) -> dict[str, np.ndarray]:
    """pandapower's load flow of every hour: |V| per bus and loading per line and trafo."""
    grid = grid_limits.grid
    p = grid_limits.p_kw.copy()
    for lp, values in extra_kw.items():
        column = grid.bus_positions([grid_limits_bus(grid_limits, lp)])[0]
        p[:, column] += values
    run = copy.deepcopy(net)
    run.load.drop(run.load.index, inplace=True)
    for bus in grid.bus_ids:
        pp.create_load(run, int(bus), 0.0, 0.0)
    vm, lines, trafos = [], [], []
    for hour in range(grid_limits.hours):
        run.load["p_mw"] = p[hour] / 1e3
        run.load["q_mvar"] = grid_limits.q_kvar[hour] / 1e3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(run, tolerance_mva=1e-10)
        vm.append(run.res_bus.vm_pu.loc[grid.bus_ids].to_numpy())
        lines.append(run.res_line.loading_percent.to_numpy())
        trafos.append(run.res_trafo.loading_percent.to_numpy())
    return {"vm": np.array(vm), "line": np.array(lines), "trafo": np.array(trafos)}


def grid_limits_bus(grid_limits: GridLimits, load_point: str) -> int:
    return int(
        grid_limits.grid.bus_ids[grid_limits._point_columns[grid_limits.load_points.index(load_point)]]
    )


def test_the_hourly_load_flows_agree_with_pandapower(feeder):
    net, _, grid_limits, ev = feeder
    ours = grid_limits.load_flow(ev)
    theirs = pandapower_day(net, grid_limits, ev)
    assert np.abs(ours.vm_pu - theirs["vm"]).max() < 1e-6
    assert np.abs(ours.line_loading_percent - theirs["line"]).max() < 1e-4
    assert np.abs(ours.trafo_loading_percent - theirs["trafo"]).max() < 1e-4
    broken = grid_limits.violations(ours)
    assert broken and broken[0].name == "trafo 0 loading" and broken[0].hour == 18
    assert abs(broken[0].value - theirs["trafo"][18, 0]) < 1e-4


def test_sensitivities_predict_the_full_load_flow_for_small_changes(feeder):
    _, _, grid_limits, ev = feeder
    state = grid_limits.load_flow(ev)
    limits = grid_limits.linear_limits(state, extra_kw=ev, screen_kw=1e9)  # every movable limit
    assert np.allclose(np.abs(limits.sensitivity).max(axis=1), 1.0)  # scaled: kW at the best point
    change = {lp: np.zeros(HOURS) for lp in grid_limits.load_points}
    change[grid_limits.load_points[3]][18] = -4.0
    change[grid_limits.load_points[7]][18] = 3.0
    moved = grid_limits.load_flow({lp: ev[lp] + change[lp] for lp in ev})
    predicted = limits.baseline[:, 18] + limits.sensitivity @ np.array(
        [change[lp][18] for lp in limits.load_points]
    )
    actual = grid_limits.relinearised(limits, moved, {}).baseline[:, 18]
    at_peak = [c for c, name in enumerate(limits.names) if not name.endswith("|V| max")]  # tightest at 18
    assert np.abs(predicted - actual)[at_peak].max() < 0.05  # kW-scaled: second-order error of a 7 kW move
    # physical() gives percent and pu back
    loading = grid_limits.physical(limits, limits.baseline)
    row = limits.names.index("trafo 0 loading")
    assert loading[row, 18] == pytest.approx(state.trafo_loading_percent[18, 0])
    row = limits.names.index(f"bus {grid_limits_bus(grid_limits, grid_limits.load_points[-1])} |V| min")
    assert loading[row, 18] == pytest.approx(state.vm_pu[18, grid_limits._point_columns[-1]])


def test_the_requirement_table_covers_every_congested_hour_with_payback_where_there_is_room(feeder):
    _, _, grid_limits, ev = feeder
    state = grid_limits.load_flow(ev)
    limits = grid_limits.linear_limits(state, extra_kw=ev)
    table = requirement_table(limits, payback_cap=1.2, price_cap=2.0)
    congested = sorted({v.hour for v in grid_limits.violations(state)})
    assert sorted(r.hour for r in table.requirements) == congested == [17, 18, 19, 20]
    for r in table.requirements:
        rows = [c for c, name in enumerate(limits.names) if limits.baseline[c, r.hour] > limits.upper[c]]
        worst = max(limits.baseline[c, r.hour] - limits.upper[c] for c in rows)
        assert r.min_kw >= worst - 1e-9  # at least the excess (sensitivity ≤ 1)
        assert r.payback_hours and not (r.payback_hours & set(congested))
        assert (r.payback_cap, r.price_cap) == (1.2, 2.0)
    assert table.rows()[0]["payback_hours"].startswith("0 1 2")
    with pytest.raises(PricingInputError, match="effectiveness"):
        requirement_table(limits, effectiveness=0)


def test_an_over_voltage_from_pv_is_reported_as_not_relievable_by_load_reduction():
    net = pn.create_kerber_dorfnetz()
    grid = grid_from_pandapower(net)
    p, q = day_of(net, grid, scaling=0.2)
    end = int(net.load.bus.iloc[-1])
    p[12, grid.bus_positions([end])[0]] -= 150.0  # a big PV at the feeder end at noon
    grid_limits = GridLimits(grid, p, q, {"LPend": end})
    table = requirement_table(grid_limits.linear_limits())
    assert not table.requirements
    assert any("|V| max at t12" in item for item in table.not_relievable)


def answering_bids(table, seed: int = 1) -> list[Bid]:
    """Two aggregators per load point offer 5.5 kW at each congestion hour, paid back at night."""
    rng = np.random.default_rng(seed)
    bids = []
    for r in table.requirements:
        night = sorted(h for h in r.payback_hours if h <= 6)
        for lp in r.load_points:
            for agg in ("ag1", "ag2"):
                bids.append(
                    Bid(
                        f"{agg}-{lp}-t{r.hour}",
                        agg,
                        round(float(rng.uniform(0.4, 1.0)), 3),
                        lp,
                        {r.hour: 5.5},
                        int(rng.choice(night)),
                        6.0,
                    )
                )
    return bids


@pytest.mark.parametrize("method", ["central", "admm"])
def test_the_cleared_market_removes_the_congestion_in_pandapowers_load_flow(feeder, method):
    net, _, grid_limits, ev = feeder
    outcome = tfm_on_grid(grid_limits, answering_bids, flexible_baseline_kw=ev, method=method)
    assert outcome.violations_before and outcome.clearing.feasible, outcome.report
    assert outcome.resolved and outcome.rounds >= 2, outcome.report  # the linearisation needed a correction
    final = {lp: ev[lp] + outcome.change_kw.get(lp, 0.0) for lp in ev}
    theirs = pandapower_day(net, grid_limits, final)
    assert theirs["trafo"].max() <= 100.0 + 1e-3
    assert theirs["line"].max() <= 100.0 + 1e-3
    assert theirs["vm"].min() >= 0.95 - 1e-5
    # every requirement met, paybacks inside the allowed hours
    for r in outcome.table.requirements:
        assert outcome.clearing.procured_kw[r.name] >= r.min_kw - 1e-6
    bids = answering_bids(outcome.table)
    assert schedule_change(bids, outcome.clearing, HOURS).keys() == outcome.change_kw.keys()
    assert "no limit broken" in outcome.report


def test_bad_inputs_are_refused_in_plain_words(feeder):
    _, grid, grid_limits, _ = feeder
    p, q = grid_limits.p_kw, grid_limits.q_kvar
    with pytest.raises(PricingInputError, match="one column per energised bus"):
        GridLimits(grid, p[:, :3], q[:, :3], {"A": 3})
    with pytest.raises(PricingInputError, match="no such energised bus"):
        GridLimits(grid, p, q, {"A": 99999})
    with pytest.raises(PricingInputError, match="no load points"):
        GridLimits(grid, p, q, {})
    with pytest.raises(PricingInputError, match="unknown load point 'nowhere'"):
        grid_limits.load_flow({"nowhere": np.zeros(HOURS)})
    bad = p.copy()
    bad[3, 5] = np.nan
    with pytest.raises(PricingInputError, match="finite"):
        GridLimits(grid, bad, q, {"A": int(grid.bus_ids[5])})


@pytest.fixture(scope="module")
def fleet_day():
    """Kerber Dorfnetz on a winter day (H0 shape) with one EV or heat pump per household, whose
    aggregators all charge in the cheapest night hours: the rebound congestion."""
    net = pn.create_kerber_dorfnetz()
    grid = grid_from_pandapower(net)
    p, q = day_of(net, grid, scaling=0.5)
    points = {f"bus{bus}": int(bus) for bus in sorted(set(net.load.bus.to_numpy().tolist()))}
    fleet = random_fleet(len(points), HOURS, list(points), seed=1)
    return net, GridLimits(grid, p, q, points), fleet, spot_price_shape(HOURS, seed=1)


def test_the_aggregators_delivered_bids_leave_no_congestion_in_pandapowers_load_flow(fleet_day):
    net, grid_limits, fleet, spot = fleet_day
    baseline = baseline_schedules(fleet, spot)
    books = []

    def bids_for(table):
        books.append(aggregator_bids(fleet, spot, table, baseline=baseline))
        return books[-1].bids

    flexible = per_load_point(fleet, baseline, HOURS)
    outcome = tfm_on_grid(grid_limits, bids_for, flexible_baseline_kw=flexible)
    assert outcome.violations_before and outcome.resolved, outcome.report
    delivered = books[-1].schedules(outcome.clearing)
    theirs = pandapower_day(net, grid_limits, per_load_point(fleet, delivered, HOURS))
    assert theirs["trafo"].max() <= 100.0 + 1e-3 and theirs["line"].max() <= 100.0 + 1e-3
    assert theirs["vm"].min() >= 0.95 - 1e-5


def test_dynamic_tariffs_leave_no_congestion_in_pandapowers_load_flow(fleet_day):
    net, grid_limits, fleet, spot = fleet_day
    outcome = dt_on_grid(grid_limits, fleet, spot)
    assert outcome.violations_before and outcome.plan.feasible, outcome.report
    assert not outcome.violations_after and outcome.response_gap_kw < 1e-4, outcome.report
    # the aggregators' response to spot + DT, not the DSO's plan, is what flows
    response = aggregator_response(fleet, spot, outcome.plan).schedules
    theirs = pandapower_day(net, grid_limits, per_load_point(fleet, response, HOURS))
    assert theirs["trafo"].max() <= 100.0 + 1e-3 and theirs["line"].max() <= 100.0 + 1e-3
    assert theirs["vm"].min() >= 0.95 - 1e-5
    assert outcome.plan.max_tariff > 0


def test_a_capped_tariff_reports_the_congestion_it_leaves(fleet_day):
    _, grid_limits, fleet, spot = fleet_day
    capped = dt_on_grid(grid_limits, fleet, spot, rho=0.005)
    # every limit's shadow price is at most ρ: a tariff at most ρ times the load point's sensitivities
    reach = np.clip(capped.limits.sensitivity, 0.0, None).sum(axis=0).max()
    assert capped.plan.congestion_left and 0.005 <= capped.plan.max_tariff <= 0.005 * reach + 1e-9
    assert "left for the SRP" in capped.report or not capped.violations_after
