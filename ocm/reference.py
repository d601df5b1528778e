"""Independent checks of OCM with pandapower's Newton-Raphson load flow (``pandapower.runpp``).

Nothing here uses HELM or the GA, so tests and benchmarks can hold OCM against it:

- ``check_schedules``: runs many flexibility schedules through ``runpp`` and counts voltage
  and thermal violations. Schedules are batched by solving many electrically separate copies
  of the network in one ``runpp`` call (the copies share nothing, so each copy's result is
  that of its own load flow).
- ``pandapower_optimum``: the max or min problem with the ``sum`` objective solved by scipy's
  SLSQP, with ``runpp`` as the load flow and forward-difference gradients.

Limits follow the same rules as OCM (unset voltage limits 0.95/1.05 pu, loading 100 %); all
energised buses are constrained.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import pandapower as pp
import pandas as pd
from scipy.optimize import minimize

from ocm.flexibility import LOAD_SIGN, Flexibility
from ocm.problem import DEFAULT_MAX_LOADING_PERCENT, DEFAULT_V_MAX_PU, DEFAULT_V_MIN_PU

RUNPP_OPTIONS = {"tolerance_mva": 1e-10, "max_iteration": 30, "numba": True}
# Tables copied by ``_replicate`` and their bus columns.
BUS_COLUMNS = {
    "bus": (),
    "line": ("from_bus", "to_bus"),
    "trafo": ("hv_bus", "lv_bus"),
    "switch": ("bus",),
    "load": ("bus",),
    "sgen": ("bus",),
    "storage": ("bus",),
    "ext_grid": ("bus",),
    "shunt": ("bus",),
}


@dataclass(frozen=True)
class ScheduleCheck:
    """Worst outcome over all schedules checked (voltages in pu, loadings in %)."""

    schedules: int
    violating: int  # schedules beyond a limit by more than the tolerances
    not_converged: int
    v_min_pu: float
    v_max_pu: float
    worst_voltage_excess_pu: float  # largest distance beyond a voltage limit (≤ 0: none)
    worst_overload_percent: float  # largest loading beyond its limit (≤ 0: none)


def check_schedules(
    net,
    flexibilities: tuple[Flexibility, ...],
    schedules_kw: np.ndarray,
    *,
    copies: int = 100,
    v_tolerance_pu: float = 1e-6,
    loading_tolerance_percent: float = 1e-4,
) -> ScheduleCheck:
    """Runs every schedule (rows of ``schedules_kw``, load convention) through ``runpp``."""
    schedules_kw = np.atleast_2d(schedules_kw)
    base = _with_flexibilities_unscaled(net, flexibilities)
    v_min_limit, v_max_limit = _voltage_limits(base)
    replica = _replicate(base, copies)
    size = _index_sizes(base)
    results = []
    for start in range(0, len(schedules_kw), copies):
        block = schedules_kw[start : start + copies]
        for c in range(copies):
            x = block[c] if c < len(block) else block[-1]
            _set_powers(replica, flexibilities, x, offset=size, copy_number=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pp.runpp(replica, **RUNPP_OPTIONS)
            except pp.LoadflowNotConverged:
                results.append((len(block), None))
                continue
        results.append((len(block), _copy_outcomes(replica, base, size, v_min_limit, v_max_limit)))
    return _summarise(results, v_tolerance_pu, loading_tolerance_percent)


def pandapower_optimum(
    net,
    flexibilities: tuple[Flexibility, ...],
    *,
    direction: int = +1,
    low_kw: np.ndarray | None = None,
    high_kw: np.ndarray | None = None,
    step_kw: float = 1e-3,
) -> np.ndarray:
    """Schedule maximising (``direction`` +1) or minimising (-1) the summed flexibility power
    subject to the voltage and loading limits, by SLSQP around ``runpp``."""
    low = np.array([f.p_low_kw for f in flexibilities]) if low_kw is None else np.asarray(low_kw)
    high = np.array([f.p_high_kw for f in flexibilities]) if high_kw is None else np.asarray(high_kw)
    model = _MarginModel(_with_flexibilities_unscaled(net, flexibilities), flexibilities, step_kw)
    start = low if direction > 0 else high
    result = minimize(
        lambda x: -direction * x.sum(),
        start,
        jac=lambda x: -direction * np.ones_like(x),
        bounds=list(zip(low, high, strict=True)),
        constraints=[{"type": "ineq", "fun": model.margins, "jac": model.jacobian}],
        method="SLSQP",
        options={"ftol": 1e-10, "maxiter": 200},
    )
    return np.clip(result.x, low, high)


class _MarginModel:
    """Limit margins of a schedule from ``runpp`` (cached), and their forward differences."""

    def __init__(self, net, flexibilities, step_kw: float):
        self.net = net
        self.flexibilities = flexibilities
        self.step_kw = step_kw
        self.v_min, self.v_max = _voltage_limits(net)
        self._cache: dict[bytes, np.ndarray] = {}

    def margins(self, x: np.ndarray) -> np.ndarray:
        key = np.asarray(x, dtype=float).tobytes()
        if key not in self._cache:
            _set_powers(self.net, self.flexibilities, x, offset=None, copy_number=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp.runpp(self.net, **RUNPP_OPTIONS)
            self._cache[key] = _margins(self.net, self.v_min, self.v_max)
        return self._cache[key]

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        base = self.margins(x)
        columns = []
        for j in range(len(x)):
            shifted = np.array(x, dtype=float)
            shifted[j] += self.step_kw
            columns.append((self.margins(shifted) - base) / self.step_kw)
        return np.array(columns).T


def _margins(net, v_min, v_max) -> np.ndarray:
    vm = net.res_bus["vm_pu"].to_numpy()
    energised = ~np.isnan(vm)
    loading, limit = _loadings(net)
    return np.concatenate([(vm - v_min)[energised], (v_max - vm)[energised], (limit - loading) / 100.0])


def _loadings(net) -> tuple[np.ndarray, np.ndarray]:
    loading, limit = [], []
    for element in ("line", "trafo"):
        values = net[f"res_{element}"]["loading_percent"].to_numpy()
        limits = _column(net[element], "max_loading_percent", DEFAULT_MAX_LOADING_PERCENT)
        finite = np.isfinite(values)
        loading.append(values[finite])
        limit.append(limits[finite])
    return np.concatenate(loading), np.concatenate(limit)


def _voltage_limits(net) -> tuple[np.ndarray, np.ndarray]:
    v_min = _column(net.bus, "min_vm_pu", DEFAULT_V_MIN_PU)
    v_max = _column(net.bus, "max_vm_pu", DEFAULT_V_MAX_PU)
    v_min = np.where((v_min > 0) & (v_min < 2), v_min, DEFAULT_V_MIN_PU)
    v_max = np.where((v_max > 0) & (v_max < 2), v_max, DEFAULT_V_MAX_PU)
    return v_min, v_max


def _column(table: pd.DataFrame, column: str, default: float) -> np.ndarray:
    if column not in table:
        return np.full(len(table), default)
    return pd.to_numeric(table[column], errors="coerce").fillna(default).to_numpy(float)


def _with_flexibilities_unscaled(net, flexibilities):
    """A copy of ``net`` where flexibilities have scaling 1 (their power is set directly)."""
    net = copy.deepcopy(net)
    for f in flexibilities:
        net[f.element].loc[f.index, "scaling"] = 1.0
    return net


def _set_powers(net, flexibilities, x_kw, *, offset, copy_number: int) -> None:
    for f, x in zip(flexibilities, x_kw, strict=True):
        index = f.index + (copy_number * offset[f.element] if offset else 0)
        net[f.element].at[index, "p_mw"] = LOAD_SIGN[f.element] * x / 1e3


def _index_sizes(net) -> dict[str, int]:
    """Index offset per table between copies (greater than any index in the table)."""
    return {name: int(net[name].index.max()) + 1 if len(net[name]) else 1 for name in BUS_COLUMNS}


def _replicate(net, copies: int):
    """``copies`` separate copies of ``net`` in one net; copy c's indices are shifted by
    ``c * _index_sizes(net)[table]``."""
    size = _index_sizes(net)
    replica = copy.deepcopy(net)
    for name, columns in BUS_COLUMNS.items():
        table = net[name]
        parts = []
        for c in range(copies):
            part = table.copy()
            part.index = part.index + c * size[name]
            for column in columns:
                part[column] = part[column] + c * size["bus"]
            if name == "switch":
                element_size = part["et"].map({"b": size["bus"], "l": size["line"], "t": size["trafo"]})
                part["element"] = part["element"] + c * element_size.astype(int)
            parts.append(part)
        replica[name] = pd.concat(parts)
    return replica


def _copy_outcomes(replica, base, size, v_min_limit, v_max_limit) -> list[tuple]:
    """Per copy: (lowest voltage, highest voltage, largest voltage excess, largest overload)."""
    n_bus = size["bus"]
    vm = replica.res_bus["vm_pu"]
    limits_line = _column(base.line, "max_loading_percent", DEFAULT_MAX_LOADING_PERCENT)
    limits_trafo = _column(base.trafo, "max_loading_percent", DEFAULT_MAX_LOADING_PERCENT)
    outcomes = []
    copies = len(replica.bus) // len(base.bus)
    for c in range(copies):
        v = vm.loc[base.bus.index + c * n_bus].to_numpy()
        ok = ~np.isnan(v)
        excess = np.concatenate([(v_min_limit - v)[ok], (v - v_max_limit)[ok]])
        overloads = []
        for element, limits in (("line", limits_line), ("trafo", limits_trafo)):
            loading = (
                replica[f"res_{element}"]["loading_percent"]
                .loc[base[element].index + c * size[element]]
                .to_numpy()
            )
            finite = np.isfinite(loading)
            overloads.append((loading - limits)[finite])
        overload = np.concatenate(overloads)
        outcomes.append(
            (np.nanmin(v), np.nanmax(v), excess.max(initial=-np.inf), overload.max(initial=-np.inf))
        )
    return outcomes


def _summarise(results, v_tolerance_pu, loading_tolerance_percent) -> ScheduleCheck:
    schedules = violating = not_converged = 0
    v_min, v_max, excess, overload = np.inf, -np.inf, -np.inf, -np.inf
    for count, outcomes in results:
        schedules += count
        if outcomes is None:
            not_converged += count
            violating += count
            continue
        for low, high, vx, ov in outcomes[:count]:
            v_min, v_max = min(v_min, low), max(v_max, high)
            excess, overload = max(excess, vx), max(overload, ov)
            violating += int(vx > v_tolerance_pu or ov > loading_tolerance_percent)
    return ScheduleCheck(schedules, violating, not_converged, v_min, v_max, excess, overload)
