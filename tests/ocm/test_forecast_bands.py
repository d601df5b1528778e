"""Bands that hold when the forecast is wrong, checked with pandapower (issue 16).

A SimBench rural LV feeder with its own year of 15-minute profiles, PV tripled so that
reverse flow binds, two of its four PV systems curtailable, an EV charger and a battery as
flexibilities. Eight days of history teach ``ocm.forecast`` the uncontrolled net load per bus
and its error distribution; on the ninth day, every other step from 08:00 to 18:00, OCM
publishes bands for the next 30 minutes (two steps) from

- the forecast with its envelope (joint coverage 99 %), and
- persistence (the last measurement held, no envelope: what the OCM service did before).

Reality is the central forecast plus errors drawn from the learnt distribution (seeded);
the flexibilities run at a corner of their band or uniformly inside it; ``pandapower.runpp``
judges every minute against the same limits.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest

from ocm.bands import OcmProblem
from ocm.case import case_from_pandapower
from ocm.forecast import ForecastError, ForecastModel, persistence

pp = pytest.importorskip("pandapower")
sb = pytest.importorskip("simbench")

STEPS_PER_DAY = 96
HORIZON = 2
PROBABILITY = 0.99
PV_SCALE = 3.0
HISTORY_DAYS = 8
DRAWS = 8


@pytest.fixture(scope="module")
def day():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = sb.get_simbench_net("1-LV-rural1--0-sw")
        absolute = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    net.bus["min_vm_pu"], net.bus["max_vm_pu"] = 0.95, 1.05
    curtailable = list(net.sgen.index[:2])
    net.sgen.loc[curtailable, "controllable"] = True
    net.sgen.loc[curtailable, "min_p_mw"] = 0.0
    net.sgen.loc[curtailable, "max_p_mw"] = net.sgen.loc[curtailable, "p_mw"] * PV_SCALE
    lv = net.bus.index[net.bus.vn_kv < 1]
    pp.create_load(net, lv[-1], 0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.011, name="EV")
    pp.create_storage(
        net, lv[len(lv) // 2], 0.0, max_e_mwh=0.03, controllable=True, min_p_mw=-0.015, max_p_mw=0.015
    )
    case = case_from_pandapower(net)
    stamps = pd.to_datetime(net.profiles["load"]["time"], format="%d.%m.%Y %H:%M", utc=True)
    start = pd.Timestamp("2016-06-01", tz="UTC")
    rows = np.flatnonzero((stamps >= start) & (stamps < start + pd.Timedelta(days=HISTORY_DAYS + 1)))
    position = {bus: k for k, bus in enumerate(case.grid.bus_ids)}
    p = np.zeros((len(rows), case.grid.n_bus))
    q = np.zeros_like(p)
    for (element, quantity), table in absolute.items():
        if element not in ("load", "sgen") or quantity not in ("p_mw", "q_mvar"):
            continue
        sign = 1.0 if element == "load" else -PV_SCALE
        for index in table.columns:
            if element == "sgen" and index in curtailable:
                continue
            column = position[int(net[element].bus[index])]
            (p if quantity == "p_mw" else q)[:, column] += sign * table[index].to_numpy()[rows] * 1e3
    available = (
        PV_SCALE * 1e3 * np.stack([absolute[("sgen", "p_mw")][i].to_numpy()[rows] for i in curtailable], 1)
    )
    return net, case, p, q, available, curtailable


def test_bands_hold_for_the_stated_probability_when_the_forecast_is_wrong(day):
    net, case, p, q, available, curtailable = day
    history = HISTORY_DAYS * STEPS_PER_DAY
    model = ForecastModel.fit(
        p[:history], steps_per_day=STEPS_PER_DAY, horizon=HORIZON, probability=PROBABILITY
    )
    assert model.method == "profile" and model.coverage >= PROBABILITY
    baseline = ForecastModel.fit(
        p[:history], steps_per_day=STEPS_PER_DAY, horizon=HORIZON, method="persistence"
    )
    assert model.rms_error_kw() < 0.9 * baseline.rms_error_kw()  # better than persistence
    problem = OcmProblem(case.grid, case.flexibilities, samples=100)
    keys = [f.key for f in case.flexibilities]
    rng = np.random.default_rng(7)
    failures = {"forecast": 0, "persistence": 0}
    minutes, safety_kw = 0, []
    checker = _Checker(net, case, problem)
    for origin in range(history + 32, history + 72, 2):
        step = origin % STEPS_PER_DAY
        low, high = problem.p_low_kw.copy(), problem.p_high_kw.copy()
        for k, index in enumerate(curtailable):  # the PV may curtail down to what it will have
            low[keys.index(f"sgen.{index}")] = -available[origin + 1 : origin + 1 + HORIZON, k].min()
        forecast = model.forecast(p[origin], step)
        bands = {
            "forecast": problem.solve(forecast.point(q[origin]), p_low_kw=low, p_high_kw=high),
            "persistence": problem.solve(
                persistence(p[origin], HORIZON).point(q[origin]), p_low_kw=low, p_high_kw=high
            ),
        }
        for result in bands.values():
            assert result.feasible and result.verification.passed
        safety_kw.append(_width(bands["persistence"]) - _width(bands["forecast"]))
        errors = model.draw_errors(rng, DRAWS)
        for draw in range(DRAWS):
            for lead in range(HORIZON):
                actual = forecast.central_kw[lead] + errors[draw, lead]
                pick = rng.random(len(keys))
                for name, result in bands.items():
                    schedule = _schedule(result, draw % 3, pick)
                    failures[name] += not checker.keeps_limits(actual, q[origin], schedule)
                minutes += 1
    allowed = (1 - PROBABILITY) * minutes + 2 * np.sqrt(PROBABILITY * (1 - PROBABILITY) * minutes)
    assert failures["forecast"] <= allowed, (failures, minutes)
    assert failures["persistence"] > 3 * max(failures["forecast"], 1), (failures, minutes)
    assert max(safety_kw) > 0  # the safety has a price in capacity, and it is reported


def test_forecast_learns_its_errors_and_refuses_bad_history():
    rng = np.random.default_rng(3)
    steps = np.arange(3 * 48)
    shape = 5 + 3 * np.sin(2 * np.pi * steps / 48)
    history = shape[:, None] + rng.normal(0, 0.5, (len(steps), 4))
    model = ForecastModel.fit(history, steps_per_day=48, horizon=3, probability=0.9)
    assert model.method == "profile" and 0 <= model.decay <= 1 and model.coverage >= 0.9
    forecast = model.forecast(history[-1], len(steps) % 48)
    point = forecast.point(np.zeros(4))
    assert point.scenarios == 3 and (forecast.low_kw <= forecast.central_kw.min(axis=0)).all()
    assert (forecast.high_kw >= forecast.central_kw.max(axis=0)).all()
    assert list(forecast.outside(forecast.high_kw + np.array([0, 1, 0, np.nan]))) == [1]
    short = ForecastModel.fit(history[:20], steps_per_day=48, horizon=3)
    assert short.method == "persistence"
    with pytest.raises(ForecastError, match="at least 5 needed"):
        ForecastModel.fit(history[:4], steps_per_day=48, horizon=3)
    with pytest.raises(ForecastError, match="probability"):
        ForecastModel.fit(history, steps_per_day=48, horizon=3, probability=1.0)
    with pytest.raises(ForecastError, match="shape"):
        ForecastModel.fit(np.zeros(10), steps_per_day=48, horizon=3)


def _width(result) -> float:
    return float(np.sum(result.p_max_kw - result.p_min_kw))


def _schedule(result, kind: int, pick: np.ndarray) -> np.ndarray:
    if kind == 0:
        return result.p_min_kw
    if kind == 1:
        return result.p_max_kw
    return result.p_min_kw + pick * (result.p_max_kw - result.p_min_kw)


class _Checker:
    """The feeder in pandapower: one load per bus for what OCM does not control, the
    flexibilities as their own elements; limits as OCM's (``Limits.from_grid``)."""

    def __init__(self, net, case, problem):
        self.net = copy.deepcopy(net)
        self.net.load.loc[~self.net.load.controllable.fillna(False).astype(bool), "in_service"] = False
        self.net.sgen.loc[~self.net.sgen.controllable.fillna(False).astype(bool), "in_service"] = False
        self.buses = list(case.grid.bus_ids)
        self.uncontrolled = [pp.create_load(self.net, bus, 0.0) for bus in self.buses]
        self.flexibilities = case.flexibilities
        limits = problem.limits
        self.v_min = pd.Series(limits.v_min_pu, index=self.buses)
        self.v_max = pd.Series(limits.v_max_pu, index=self.buses)
        self.slack = set(self.net.ext_grid.bus)

    def keeps_limits(self, p_kw, q_kvar, schedule) -> bool:
        net = self.net
        net.load.loc[self.uncontrolled, "p_mw"] = np.asarray(p_kw) / 1e3
        net.load.loc[self.uncontrolled, "q_mvar"] = np.asarray(q_kvar) / 1e3
        for flexibility, kw in zip(self.flexibilities, schedule, strict=True):
            sign = -1.0 if flexibility.element == "sgen" else 1.0
            net[flexibility.element].loc[flexibility.index, "p_mw"] = sign * kw / 1e3
        pp.runpp(net)
        vm = net.res_bus.vm_pu.loc[self.buses].drop(index=list(self.slack), errors="ignore")
        ok_voltage = ((vm >= self.v_min[vm.index] - 1e-6) & (vm <= self.v_max[vm.index] + 1e-6)).all()
        ok_lines = (net.res_line.loading_percent <= net.line.max_loading_percent.fillna(100) + 1e-4).all()
        ok_trafos = (net.res_trafo.loading_percent <= net.trafo.max_loading_percent.fillna(100) + 1e-4).all()
        return bool(ok_voltage and ok_lines and ok_trafos)
