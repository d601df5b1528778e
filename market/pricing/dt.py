"""Dynamic network tariffs (DT) and their coordination with the scheduled re-profiling product
(SRP), seeds/000 §5.1. The formulation is reconstructed (Huang/Wu/Oren DLMP line): the report
has no equations.

Units: kW, kWh, hours as integer indices ``0..H-1`` of the day-ahead horizon (each one hour
long), prices per kWh. ``P[i, t]`` is flexible device i's consumption (kW) in hour t.

**DSO problem** (one sparse QP)::

    min   Σ_i Σ_t c_t P_it + ½ β_i P_it²  (+ ρ Σ_ct s_ct  in the relaxed form)
    s.t.  device constraints of every i (see ElectricVehicle, HeatPump)
          baseline_ct + Σ_lp S_c,lp Σ_{i at lp} P_it ≤ upper_c (+ s_ct),   s_ct ≥ 0
                                                 for every network limit c and hour t in its hours

``NetworkLimits`` gives S, baseline (the constrained quantity under the conventional,
uncontrolled load) and upper; here ΔP at a load point is the flexible demand's consumption.
The β_i term (β per kW² h, small, the same for every hour) makes the plan unique; it is part of
each customer's cost model, so the aggregators must use the same β for their response to match.

**Tariff**: with μ_ct ≥ 0 the dual (shadow price) of limit c in hour t,
``DT[lp, t] = Σ_c S_c,lp μ_ct``. Row duals are kept in HiGHS's convention whichever solver runs:
≤ 0 for a binding upper row of a minimisation (the objective falls when the row's upper bound
rises), so μ = −row_dual ≥ 0 (Clarabel's multiplier z ≥ 0 of ``a·x ≤ b`` is −row_dual). A limit
that does not bind gets μ = 0 (complementary slackness; the interior point leaves ~1e-15).

**Why the aggregators reach the same plan**: the KKT conditions of the DSO problem for device i
are those of the device problem alone at price ``c_t + DT[lp(i), t]`` (the network rows enter
stationarity only through ``Σ_c S_c,lp μ_ct``); the objective is strictly convex in P, so both
have the one same solution (numerically: within 1e-6 kW up to a hundred devices, a few 1e-5 kW
at 1,000, the interior point's accuracy; an error δ in a tariff moves a schedule by ≤ δ/β).

**Relaxed form (penalty ρ)**: the slack's stationarity gives ``ρ − μ_ct = z_ct ≥ 0``, so each
limit's shadow price is capped, ``0 ≤ μ_ct ≤ ρ``, and ``μ_ct = ρ`` wherever congestion is left
(s_ct > 0). The tariff is capped at ``DT[lp, t] ≤ ρ Σ_c S_c,lp`` (sum over the limits in force at
hour t); with one line of sensitivity 1 above a load point, DT ≤ ρ. The relaxed form is always
feasible once the devices are; the unrelaxed form, when infeasible, returns status
``"infeasible"`` with the least total excess over the limits (an LP) per limit and hour.

**SRP coordination** (seeds/000 Case 2): the congestion left s_ct (the excess over the limit
that the plan at ρ leaves) is bought as re-profiling from
incentive-responsive customers (the other half of the customers in the report). Their response
to a flexibility price π is linear, ``relief = E_c · π`` (E_c: kW of relief of limit c per unit
of price, summed over the aggregators behind c), so the DSO sets ``π_ct = s_ct / E_c`` and pays
``π_ct · s_ct = s_ct² / E_c`` (uniform price per limit and hour, as the report's "flexibility
prices 2.55 and 16.15 DKK at t17 and t18"). The coordination searches ρ ≥ 0 (bracketing, then
Brent) so that the DT revenue ``Σ_lp,t DT[lp, t] · Σ_{i at lp} P_it`` equals the SRP cost: at
ρ = 0 the revenue is 0 and the SRP buys all congestion; for ρ large the DT resolves it and the
SRP costs nothing.

**Solvers**: the QPs go to Clarabel (interior point, sparse; 1,000 devices × 24 h in seconds) at
tight tolerances (a tariff error δ moves a schedule by δ/β); LPs (the infeasibility report) to
HiGHS. HiGHS's QP solver (active set) is kept as ``solver="highs"`` for cross-checks on small
cases only: on this problem it took minutes for 1,000 devices, stopped 3·10⁻⁴ kW away from the
exact optimum of a single EV and cycled on a single heat pump (HiGHS 1.16).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import clarabel
import highspy
import numpy as np
from scipy import sparse
from scipy.optimize import brentq

from market.pricing.network import NetworkLimits, PricingInputError

DEFAULT_BETA = 1e-3  # per kW² h: ½·β·(11 kW)² ≈ 0.06 per hour, small next to spot costs
TOLERANCE = 1e-7  # kW: a limit within this of its upper value binds; an excess above it is left
_INF = highspy.kHighsInf


# ------------------------------------------------------------------------------ devices


@dataclass(frozen=True)
class _Block:
    """A device's constraints on its local columns ``[P_0 .. P_{H-1}, extra_0 ..]``."""

    p_upper: np.ndarray
    extra_lower: np.ndarray
    extra_upper: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray


@dataclass(frozen=True)
class ElectricVehicle:
    """An EV plugged in from ``arrival`` (inclusive) to ``departure`` (exclusive). When
    ``arrival > departure`` it stays over the end of the horizon: plugged at hours ≥ arrival and
    < departure (the horizon read as a periodic day: its morning stands for the next morning).
    Charging (kW, ≤ charger) only while plugged; the SOC rises from ``soc_arrival`` by
    ``efficiency · Σ P / battery`` and must reach ``soc_target`` by departure without passing
    ``soc_max`` (charging only raises it, so the range [soc_min, soc_max] holds throughout)."""

    device_id: str
    load_point: str
    battery_kwh: float = 40.0
    charger_kw: float = 11.0
    arrival: int = 18
    departure: int = 7
    soc_arrival: float = 0.3
    soc_target: float = 0.8
    soc_min: float = 0.2
    soc_max: float = 0.85
    efficiency: float = 0.92
    aggregator: str = "agg1"

    @property
    def kind(self) -> str:
        return "electric vehicle"

    def plugged(self, hours: int) -> np.ndarray:
        t = np.arange(hours)
        if self.arrival < self.departure:
            return (t >= self.arrival) & (t < self.departure)
        return (t >= self.arrival) | (t < self.departure)

    @property
    def energy_needed_kwh(self) -> float:
        """Energy drawn from the grid to reach the SOC target."""
        return (self.soc_target - self.soc_arrival) * self.battery_kwh / self.efficiency

    def check(self, hours: int) -> None:
        where = f"{self.kind} {self.device_id!r}"
        for name in ("battery_kwh", "charger_kw", "efficiency"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise PricingInputError(f"{where}: {name} {value} must be a finite number > 0")
        if self.efficiency > 1:
            raise PricingInputError(f"{where}: efficiency {self.efficiency} above 1")
        for name in ("arrival", "departure"):
            value = getattr(self, name)
            if not 0 <= value < hours:
                raise PricingInputError(f"{where}: {name} hour {value} outside the horizon 0..{hours - 1}")
        if self.arrival == self.departure:
            raise PricingInputError(f"{where}: arrival and departure at the same hour {self.arrival}")
        if not 0 <= self.soc_min <= self.soc_max <= 1:
            raise PricingInputError(f"{where}: SOC range {self.soc_min}..{self.soc_max} is not within 0..1")
        if not self.soc_min <= self.soc_arrival <= self.soc_max:
            raise PricingInputError(
                f"{where}: SOC at arrival {self.soc_arrival} outside its range {self.soc_min}..{self.soc_max}"
            )
        if self.soc_target > self.soc_max:
            raise PricingInputError(
                f"{where}: SOC target {self.soc_target} above its maximum SOC {self.soc_max}"
            )
        plugged = int(self.plugged(hours).sum())
        most = self.charger_kw * plugged
        if self.energy_needed_kwh > most * (1 + 1e-12):
            raise PricingInputError(
                f"{where}: needs {self.energy_needed_kwh:.2f} kWh but can draw at most {most:.2f} kWh "
                f"in its {plugged} plugged hours at {self.charger_kw} kW"
            )

    def block(self, hours: int) -> _Block:
        none = np.zeros(0)
        return _Block(
            p_upper=self.charger_kw * self.plugged(hours),
            extra_lower=none,
            extra_upper=none,
            rows=np.zeros(hours, dtype=np.int64),
            cols=np.arange(hours),
            values=np.full(hours, self.efficiency / self.battery_kwh),
            row_lower=np.array([self.soc_target - self.soc_arrival]),
            row_upper=np.array([self.soc_max - self.soc_arrival]),
        )


@dataclass(frozen=True)
class HeatPump:
    """A heat pump in a house with a first-order thermal model (R in °C per kW of heat, C in
    kWh per °C; a = exp(−1 h / RC))::

        T_{t+1} = a·T_t + (1 − a)·(T_out,t + R·COP·P_t)

    The indoor temperature after every hour stays in the comfort band [t_min, t_max]; it starts
    at ``t_initial``. ``outdoor`` gives T_out per hour of the horizon."""

    device_id: str
    load_point: str
    outdoor: tuple[float, ...]
    rated_kw: float = 3.0
    cop: float = 2.3
    resistance: float = 6.0
    capacitance: float = 4.0
    t_initial: float = 21.0
    t_min: float = 20.0
    t_max: float = 24.0
    aggregator: str = "agg1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "outdoor", tuple(float(x) for x in self.outdoor))

    @property
    def kind(self) -> str:
        return "heat pump"

    @property
    def decay(self) -> float:
        return math.exp(-1.0 / (self.resistance * self.capacitance))

    def check(self, hours: int) -> None:
        where = f"{self.kind} {self.device_id!r}"
        for name in ("rated_kw", "cop", "resistance", "capacitance"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise PricingInputError(f"{where}: {name} {value} must be a finite number > 0")
        if len(self.outdoor) != hours:
            raise PricingInputError(f"{where}: {len(self.outdoor)} outdoor temperatures for {hours} hours")
        if not all(math.isfinite(x) for x in (*self.outdoor, self.t_initial, self.t_min, self.t_max)):
            raise PricingInputError(f"{where}: temperatures must be finite numbers")
        if not self.t_min < self.t_max:
            raise PricingInputError(f"{where}: comfort band {self.t_min}..{self.t_max} °C is empty")
        # Exact feasibility: the temperatures reachable at hour t within the band form an interval.
        a, gain = self.decay, self.resistance * self.cop * self.rated_kw
        low = high = self.t_initial
        for t, outside in enumerate(self.outdoor):
            coldest = a * low + (1 - a) * outside
            warmest = a * high + (1 - a) * (outside + gain)
            if warmest < self.t_min - 1e-9:
                raise PricingInputError(
                    f"{where}: after hour {t} the indoor temperature reaches at most {warmest:.2f} °C "
                    f"even at full power {self.rated_kw} kW, below the comfort minimum {self.t_min} °C"
                )
            if coldest > self.t_max + 1e-9:
                raise PricingInputError(
                    f"{where}: after hour {t} the indoor temperature stays at least {coldest:.2f} °C even "
                    f"with the heat pump off, above the comfort maximum {self.t_max} °C"
                )
            low, high = max(coldest, self.t_min), min(warmest, self.t_max)

    def block(self, hours: int) -> _Block:
        # T_{t+1} = a^{t+1}·T_0 + Σ_{k≤t} a^{t−k}·(1−a)·(T_out,k + R·COP·P_k): one row per hour,
        # t_min ≤ T_{t+1} ≤ t_max, on the P columns only (lower triangular).
        a = self.decay
        t = np.arange(hours)
        rows, cols = np.tril_indices(hours)
        weights = (1 - a) * a ** (rows - cols)
        free = a ** (t + 1) * self.t_initial + np.tril(a ** (t[:, None] - t[None, :])) @ (
            (1 - a) * np.asarray(self.outdoor)
        )
        none = np.zeros(0)
        return _Block(
            p_upper=np.full(hours, self.rated_kw),
            extra_lower=none,
            extra_upper=none,
            rows=rows,
            cols=cols,
            values=weights * self.resistance * self.cop,
            row_lower=self.t_min - free,
            row_upper=self.t_max - free,
        )

    def temperatures(self, power: Sequence[float]) -> np.ndarray:
        """Indoor temperature after each hour under ``power`` (kW per hour)."""
        a, out, temp = self.decay, [], self.t_initial
        for outside, p in zip(self.outdoor, power, strict=True):
            temp = a * temp + (1 - a) * (outside + self.resistance * self.cop * p)
            out.append(temp)
        return np.array(out)


Device = ElectricVehicle | HeatPump


# ----------------------------------------------------------------------------- results


@dataclass
class TariffPlan:
    """The DSO's day-ahead plan: status (``"optimal"`` or ``"infeasible"``), schedule per
    device (kW per hour), tariff per load point (per kWh per hour), the shadow price μ of every
    limit and hour, which bind, the congestion left (relaxed form, or the least excess when
    infeasible), the loading of every limit, the DT revenue and the objective."""

    status: str
    rho: float | None
    schedules: dict[str, np.ndarray]
    tariffs: dict[str, np.ndarray]
    shadow_prices: dict[tuple[str, int], float]
    binding: tuple[tuple[str, int], ...]
    congestion_left: dict[tuple[str, int], float]
    loading: dict[tuple[str, int], float]
    revenue: float
    energy_cost: float
    objective: float

    @property
    def feasible(self) -> bool:
        return self.status == "optimal"

    @property
    def max_tariff(self) -> float:
        return max((float(v.max()) for v in self.tariffs.values()), default=0.0)

    @property
    def report(self) -> str:
        left = "; ".join(
            f"{name} at t{hour} by {kw:.4g}" for (name, hour), kw in self.congestion_left.items()
        )
        if not self.feasible:
            return f"infeasible: network limits exceeded even at the best schedule: {left}"
        binding = ", ".join(f"{name}@t{hour}" for name, hour in self.binding) or "none"
        text = (
            f"planned at energy cost {self.energy_cost:.4f}, DT revenue {self.revenue:.4f}, "
            f"max DT {self.max_tariff:.5g}; binding: {binding}"
        )
        return text + (f"; congestion left (ρ = {self.rho:g}): {left}" if left else "")


@dataclass
class AggregatorPlans:
    """Each aggregator's own optimum at spot price + DT: schedules per device and the energy +
    tariff cost per aggregator."""

    schedules: dict[str, np.ndarray]
    cost: dict[str, float]


@dataclass(frozen=True)
class SrpSupply:
    """Incentive-responsive flexibility behind each network limit: ``elasticity[c]`` kW of
    relief of limit c per unit of flexibility price (per kWh), summed over the aggregators
    behind it (a float: the same for every limit)."""

    elasticity: float | Sequence[float]

    def prices(self, network: NetworkLimits, congestion: Mapping[tuple[str, int], float]) -> dict:
        elasticity = np.broadcast_to(np.asarray(self.elasticity, dtype=float), (len(network.names),))
        if not ((elasticity > 0) & np.isfinite(elasticity)).all():
            raise PricingInputError(f"SRP elasticity {self.elasticity} must be finite numbers > 0 per limit")
        index = {name: c for c, name in enumerate(network.names)}
        return {key: float(kw / elasticity[index[key[0]]]) for key, kw in congestion.items()}


@dataclass
class Coordination:
    """The DT–SRP coordination: the penalty ρ found, the plan at ρ, the SRP's flexibility price
    and kW per limit and hour, the DSO's DT revenue and SRP cost, and how they differ."""

    status: str
    rho: float
    plan: TariffPlan
    srp_prices: dict[tuple[str, int], float]
    srp_kw: dict[tuple[str, int], float]
    revenue: float
    srp_cost: float
    evaluations: int

    @property
    def imbalance(self) -> float:
        return self.revenue - self.srp_cost

    @property
    def report(self) -> str:
        return (
            f"{self.status}: ρ = {self.rho:.6g}, DT revenue {self.revenue:.6f}, SRP cost {self.srp_cost:.6f} "
            f"(net {self.imbalance:+.2e}) after {self.evaluations} solves"
        )


# ----------------------------------------------------------------------------- building


@dataclass(frozen=True, eq=False)
class DsoTariffProblem:
    """The device part of the problem as sparse matrices: P columns device-major
    (``i·H + t``) first, then any extra columns a device's block asks for (none at present: a
    heat pump's temperatures are affine in its P, see HeatPump.block)."""

    devices: tuple[Device, ...]
    hours: int
    matrix: sparse.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    beta: np.ndarray

    @property
    def n_power(self) -> int:
        return len(self.devices) * self.hours

    @classmethod
    def build(
        cls, devices: Sequence[Device], hours: int, beta: float | Mapping[str, float]
    ) -> DsoTariffProblem:
        devices = tuple(devices)
        validate_devices(devices, hours)
        betas = np.array([_beta_of(beta, d) for d in devices], dtype=float)
        blocks = [d.block(hours) for d in devices]
        n_power = len(devices) * hours
        rows, cols, values, lower, upper = [], [], [], [], []
        row0, extra0 = 0, n_power
        p_upper = np.zeros(n_power)
        extra_lower, extra_upper = [], []
        for i, b in enumerate(blocks):
            p_upper[i * hours : (i + 1) * hours] = b.p_upper
            is_p = b.cols < hours
            rows.append(b.rows + row0)
            cols.append(np.where(is_p, b.cols + i * hours, b.cols - hours + extra0))
            values.append(b.values)
            lower.append(b.row_lower)
            upper.append(b.row_upper)
            extra_lower.append(b.extra_lower)
            extra_upper.append(b.extra_upper)
            row0 += len(b.row_lower)
            extra0 += len(b.extra_lower)
        matrix = sparse.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(row0, extra0)
        )
        return cls(
            devices=devices,
            hours=hours,
            matrix=matrix,
            row_lower=np.concatenate(lower),
            row_upper=np.concatenate(upper),
            col_lower=np.zeros(extra0)
            if not extra_lower
            else np.concatenate([np.zeros(n_power), *extra_lower]),
            col_upper=np.concatenate([p_upper, *extra_upper]),
            beta=betas,
        )

    def power(self, x: np.ndarray) -> np.ndarray:
        """(devices × hours) kW from a solution vector."""
        lower, upper = self.col_lower[: self.n_power], self.col_upper[: self.n_power]
        power = np.clip(x[: self.n_power], lower, upper)  # an interior point leaves ~1e-20 outside
        return power.reshape(len(self.devices), self.hours)

    def network_rows(self, network: NetworkLimits) -> tuple[sparse.csr_matrix, np.ndarray]:
        """Rows ``k·C + c`` (hour k of ``network.hours``, limit c) on the P columns, and their
        headroom ``upper_c − baseline_ck``."""
        column = {lp: k for k, lp in enumerate(network.load_points)}
        for d in self.devices:
            if d.load_point not in column:
                raise PricingInputError(
                    f"{d.kind} {d.device_id!r}: load point {d.load_point!r} is not in the network limits"
                )
        for hour in network.hours:
            if not 0 <= hour < self.hours:
                raise PricingInputError(
                    f"network limits at hour {hour}, outside the horizon 0..{self.hours - 1}"
                )
        count, width = len(network.names), len(network.hours)
        per_device = network.sensitivity[:, [column[d.load_point] for d in self.devices]]  # C × n
        c_index, i_index = np.nonzero(per_device)
        k = np.repeat(np.arange(width), len(c_index))
        rows = k * count + np.tile(c_index, width)
        cols = np.tile(i_index, width) * self.hours + np.asarray(network.hours)[k]
        values = np.tile(per_device[c_index, i_index], width)
        matrix = sparse.csr_matrix((values, (rows, cols)), shape=(count * width, self.matrix.shape[1]))
        headroom = (network.upper[:, None] - network.baseline).T.reshape(-1)
        return matrix, headroom


def _beta_of(beta: float | Mapping[str, float], device: Device) -> float:
    value = beta.get(device.device_id, DEFAULT_BETA) if isinstance(beta, Mapping) else beta
    if not (value > 0 and math.isfinite(value)):
        raise PricingInputError(
            f"{device.kind} {device.device_id!r}: beta {value} must be a finite number > 0"
        )
    return float(value)


def validate_devices(devices: Sequence[Device], hours: int) -> None:
    """Raise :class:`PricingInputError` naming the device that cannot meet its own constraints."""
    if hours < 1:
        raise PricingInputError(f"horizon of {hours} hours")
    seen: set[str] = set()
    for d in devices:
        if d.device_id in seen:
            raise PricingInputError(f"{d.kind} {d.device_id!r}: duplicate device id")
        seen.add(d.device_id)
        d.check(hours)


def _prices(spot_price: Sequence[float]) -> np.ndarray:
    price = np.asarray(spot_price, dtype=float).reshape(-1)
    if not np.isfinite(price).all():
        raise PricingInputError("spot prices must be finite numbers")
    return price


# ------------------------------------------------------------------------------ solving


@dataclass
class _Solution:
    status: str
    x: np.ndarray
    row_dual: np.ndarray
    objective: float


def _solver(name: str) -> str:
    if name not in ("highs", "clarabel"):
        raise PricingInputError(f"unknown solver {name!r}: 'clarabel' or 'highs'")
    return name


def _solve_qp(
    cost: np.ndarray,
    col_lower: np.ndarray,
    col_upper: np.ndarray,
    matrix: sparse.spmatrix,
    row_lower: np.ndarray,
    row_upper: np.ndarray,
    hessian_diagonal: np.ndarray | None,
    solver: str = "highs",
) -> _Solution:
    """``min cost·x + ½ xᵀ diag(h) x`` over the rows and bounds. Row duals in HiGHS's sign
    convention whichever solver runs (≤ 0 on a binding upper row of a minimisation). LPs
    (no Hessian) always go to HiGHS."""
    quadratic = hessian_diagonal is not None and bool(np.any(hessian_diagonal))
    if quadratic and solver == "clarabel":
        return _solve_clarabel(cost, col_lower, col_upper, matrix, row_lower, row_upper, hessian_diagonal)
    return _solve_highs(cost, col_lower, col_upper, matrix, row_lower, row_upper, hessian_diagonal)


def _solve_highs(cost, col_lower, col_upper, matrix, row_lower, row_upper, hessian_diagonal) -> _Solution:
    a = sparse.csc_matrix(matrix)
    a.sort_indices()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
    lp.col_cost_ = np.asarray(cost, dtype=float)
    lp.col_lower_ = np.asarray(col_lower, dtype=float)
    lp.col_upper_ = np.asarray(col_upper, dtype=float)
    lp.row_lower_ = np.asarray(row_lower, dtype=float)
    lp.row_upper_ = np.asarray(row_upper, dtype=float)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr.astype(np.int32)
    lp.a_matrix_.index_ = a.indices.astype(np.int32)
    lp.a_matrix_.value_ = a.data.astype(float)
    model = highspy.HighsModel()
    model.lp_ = lp
    if hessian_diagonal is not None and np.any(hessian_diagonal):
        hessian = sparse.csc_matrix(sparse.diags(np.asarray(hessian_diagonal, dtype=float)))
        hessian.eliminate_zeros()
        model.hessian_.dim_ = a.shape[1]
        model.hessian_.format_ = highspy.HessianFormat.kTriangular
        model.hessian_.start_ = hessian.indptr.astype(np.int32)
        model.hessian_.index_ = hessian.indices.astype(np.int32)
        model.hessian_.value_ = hessian.data.astype(float)
    h = _quiet_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("primal_feasibility_tolerance", 1e-9)
    h.setOptionValue("dual_feasibility_tolerance", 1e-9)
    h.passModel(model)
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return _Solution("infeasible", np.zeros(a.shape[1]), np.zeros(a.shape[0]), math.nan)
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"the DT problem could not be solved: HiGHS says {h.modelStatusToString(status)}")
    solution = h.getSolution()
    return _Solution(
        "optimal",
        np.asarray(solution.col_value),
        np.asarray(solution.row_dual),
        float(h.getInfo().objective_function_value),
    )


def _quiet_highs() -> highspy.Highs:
    """A HiGHS instance. HiGHS prints its banner to the process's stdout once, on the first
    construction; it goes to stderr instead, so that ``lec dt --json`` prints JSON only."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _solve_clarabel(cost, col_lower, col_upper, matrix, row_lower, row_upper, hessian_diagonal) -> _Solution:
    """Clarabel's form ``A x + s = b``, s in the zero cone (equalities) or ≥ 0: one row per
    equality, per finite upper bound, per finite lower bound (negated), the same for columns."""
    a = sparse.csr_matrix(matrix)
    n = a.shape[1]
    lower, upper = np.asarray(row_lower, dtype=float), np.asarray(row_upper, dtype=float)
    col_lower, col_upper = np.asarray(col_lower, dtype=float), np.asarray(col_upper, dtype=float)
    equal = lower == upper
    has_upper = ~equal & (upper < _INF)
    has_lower = ~equal & (lower > -_INF)
    eye = sparse.identity(n, format="csr")
    col_up, col_low = col_upper < _INF, col_lower > -_INF
    stacked = sparse.vstack([a[equal], a[has_upper], -a[has_lower], eye[col_up], -eye[col_low]], format="csc")
    rhs = np.concatenate(
        [upper[equal], upper[has_upper], -lower[has_lower], col_upper[col_up], -col_lower[col_low]]
    )
    cones = [clarabel.ZeroConeT(int(equal.sum())), clarabel.NonnegativeConeT(len(rhs) - int(equal.sum()))]
    hessian = sparse.csc_matrix(sparse.diags(np.asarray(hessian_diagonal, dtype=float)))
    # Tight first: a tariff error δ moves a schedule by δ/β, and the aggregators must match to
    # 1e-6; should the solver stall there, Clarabel's default accuracy rather than no answer.
    for tolerance in (1e-13, 1e-8):
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = tolerance
        settings.max_iter = 400
        cost_vector = np.asarray(cost, dtype=float)
        result = clarabel.DefaultSolver(hessian, cost_vector, stacked, rhs, cones, settings).solve()
        status = str(result.status)
        if "Infeasible" in status:
            return _Solution("infeasible", np.zeros(n), np.zeros(a.shape[0]), math.nan)
        if "Solved" in status:  # Solved or AlmostSolved
            break
    else:
        raise RuntimeError(f"the DT problem could not be solved: Clarabel says {status}")
    z = np.asarray(result.z)
    k_eq, k_up = int(equal.sum()), int(has_upper.sum())
    row_dual = np.zeros(a.shape[0])
    row_dual[equal] = -z[:k_eq]
    row_dual[has_upper] -= z[k_eq : k_eq + k_up]
    row_dual[has_lower] += z[k_eq + k_up : k_eq + k_up + int(has_lower.sum())]
    return _Solution("optimal", np.asarray(result.x), row_dual, float(result.obj_val))


def solve_tariffs(
    devices: Sequence[Device],
    spot_price: Sequence[float],
    network: NetworkLimits | None,
    *,
    beta: float | Mapping[str, float] = DEFAULT_BETA,
    rho: float | None = None,
    solver: str = "clarabel",
) -> TariffPlan:
    """The DSO's day-ahead plan and tariffs (see the module docstring). ``rho``: the relaxed
    form with penalty ρ per unit of excess per hour (always feasible). Without it, a network
    that cannot be kept gives status ``"infeasible"`` and the least excess per limit and hour.
    ``solver``: ``"clarabel"`` (interior point, the default) or ``"highs"`` (active set, for
    cross-checks on small cases only: see the module docstring)."""
    price = _prices(spot_price)
    problem = DsoTariffProblem.build(devices, len(price), beta)
    if rho is not None and not (rho >= 0 and math.isfinite(rho)):
        raise PricingInputError(f"penalty rho {rho} must be a finite number ≥ 0")
    return _plan(problem, price, network, rho, _solver(solver))


def _plan(problem: DsoTariffProblem, price: np.ndarray, network: NetworkLimits | None, rho, solver: str):
    hours, n = problem.hours, len(problem.devices)
    energy = np.tile(price, n)
    cost = np.concatenate([energy, np.zeros(problem.matrix.shape[1] - problem.n_power)])
    hessian = np.concatenate([np.repeat(problem.beta, hours), np.zeros(len(cost) - problem.n_power)])
    if network is None:
        net, headroom = sparse.csr_matrix((0, problem.matrix.shape[1])), np.zeros(0)
    else:
        net, headroom = problem.network_rows(network)
    m, k = problem.matrix.shape[0], net.shape[0]
    rows_lower = np.concatenate([problem.row_lower, np.full(k, -_INF)])
    if rho is None:
        sol = _solve_qp(
            cost,
            problem.col_lower,
            problem.col_upper,
            sparse.vstack([problem.matrix, net]),
            rows_lower,
            np.concatenate([problem.row_upper, headroom]),
            hessian,
            solver,
        )
        if sol.status == "infeasible":
            return _least_excess(problem, price, network, net, headroom)
    else:
        sol = _solve_relaxed(problem, net, headroom, cost, hessian, rho, solver)
    mu = np.maximum(-sol.row_dual[m:], 0.0)
    return _result(problem, price, network, sol.x, mu, net, headroom, rho, sol.objective)


def _solve_relaxed(problem, net, headroom, cost, hessian, rho: float, solver: str = "clarabel") -> _Solution:
    k = net.shape[0]
    matrix = (
        sparse.bmat([[problem.matrix, None], [net, -sparse.identity(k)]], format="csr")
        if k
        else problem.matrix
    )
    return _solve_qp(
        np.concatenate([cost, np.full(k, rho)]),
        np.concatenate([problem.col_lower, np.zeros(k)]),
        np.concatenate([problem.col_upper, np.full(k, _INF)]),
        matrix,
        np.concatenate([problem.row_lower, np.full(k, -_INF)]),
        np.concatenate([problem.row_upper, headroom]),
        None if hessian is None else np.concatenate([hessian, np.zeros(k)]),
        solver,
    )


def _least_excess(problem, price, network, net, headroom) -> TariffPlan:
    """The infeasibility report: the device schedules with the least total excess (an LP)."""
    zero = np.zeros(problem.matrix.shape[1])
    sol = _solve_relaxed(problem, net, headroom, zero, None, 1.0)
    if sol.status != "optimal":  # the devices are checked one by one, so this should not happen
        raise RuntimeError("the devices' own constraints cannot hold together")
    k = net.shape[0]
    plan = _result(problem, price, network, sol.x, np.zeros(k), net, headroom, None, math.nan)
    plan.status = "infeasible"
    return plan


def _result(problem, price, network, x, mu, net, headroom, rho, objective) -> TariffPlan:
    power = problem.power(x)
    hours = problem.hours
    ids = [d.device_id for d in problem.devices]
    points = sorted({d.load_point for d in problem.devices})
    per_point = {lp: np.zeros(hours) for lp in points}
    for d, p in zip(problem.devices, power, strict=True):
        per_point[d.load_point] += p
    tariffs = {lp: np.zeros(hours) for lp in points}
    shadow, binding, left, loading = {}, [], {}, {}
    if network is not None and len(mu):
        count = len(network.names)
        flow = net @ x[: net.shape[1]] - headroom  # ≤ 0 where kept; the excess where not
        binds = flow >= -TOLERANCE * np.maximum(1.0, np.abs(headroom))
        mu = np.where(binds, mu, 0.0)  # complementary slackness (an interior point leaves ~1e-15)
        mu_grid = mu.reshape(len(network.hours), count)  # hour index × limit
        column = {lp: c for c, lp in enumerate(network.load_points)}
        for lp in points:
            tariffs[lp][list(network.hours)] = mu_grid @ network.sensitivity[:, column[lp]]
        for r, (hour, name) in enumerate((h, c) for h in network.hours for c in network.names):
            shadow[name, hour] = float(mu[r])
            loading[name, hour] = float(flow[r] + network.upper[r % count])
            if binds[r]:
                binding.append((name, hour))
            if flow[r] > TOLERANCE:  # the excess (= the slack at ρ > 0; at ρ = 0 the slack is free)
                left[name, hour] = float(flow[r])
    revenue = float(sum(tariffs[lp] @ per_point[lp] for lp in points))
    return TariffPlan(
        status="optimal",
        rho=rho,
        schedules=dict(zip(ids, power.copy(), strict=True)),
        tariffs=tariffs,
        shadow_prices=shadow,
        binding=tuple(binding),
        congestion_left=left,
        loading=loading,
        revenue=revenue,
        energy_cost=float(np.sum(power @ price)),
        objective=objective,
    )


# ------------------------------------------------------------------------ aggregators


def aggregator_response(
    devices: Sequence[Device],
    spot_price: Sequence[float],
    tariffs: Mapping[str, Sequence[float]] | TariffPlan | None = None,
    *,
    beta: float | Mapping[str, float] = DEFAULT_BETA,
    solver: str = "clarabel",
) -> AggregatorPlans:
    """Each aggregator (devices grouped by their ``aggregator``) alone: the same device problem
    without network limits at price ``spot + DT[load point]`` per device, with the same β as the
    DSO's (a different β gives a different plan). A load point without a tariff pays spot."""
    price = _prices(spot_price)
    hours = len(price)
    if isinstance(tariffs, TariffPlan):
        tariffs = tariffs.tariffs
    tariffs = {lp: np.asarray(v, dtype=float).reshape(-1) for lp, v in (tariffs or {}).items()}
    for lp, dt in tariffs.items():
        if len(dt) != hours or not np.isfinite(dt).all():
            raise PricingInputError(
                f"tariff of load point {lp!r}: {len(dt)} finite values needed, {hours} hours"
            )
    validate_devices(devices, hours)
    groups: dict[str, list[Device]] = defaultdict(list)
    for d in devices:
        groups[d.aggregator].append(d)
    solver = _solver(solver)
    schedules, cost = {}, {}
    for name, members in groups.items():
        # The aggregator's problem is block diagonal: HiGHS's active set is faster device by device.
        chunks = [[d] for d in members] if solver == "highs" else [members]
        cost[name] = 0.0
        for chunk in chunks:
            own, power = _device_optimum(chunk, price, tariffs, hours, beta, solver)
            schedules.update(zip((d.device_id for d in chunk), power.copy(), strict=True))
            cost[name] += float(own @ power.reshape(-1))
    return AggregatorPlans(schedules={d.device_id: schedules[d.device_id] for d in devices}, cost=cost)


def _device_optimum(devices, price, tariffs, hours, beta, solver):
    problem = DsoTariffProblem.build(devices, hours, beta)
    own = np.concatenate([price + tariffs.get(d.load_point, 0.0) for d in devices])
    full = np.concatenate([own, np.zeros(problem.matrix.shape[1] - problem.n_power)])
    hessian = np.concatenate([np.repeat(problem.beta, hours), np.zeros(len(full) - problem.n_power)])
    sol = _solve_qp(
        full,
        problem.col_lower,
        problem.col_upper,
        problem.matrix,
        problem.row_lower,
        problem.row_upper,
        hessian,
        solver,
    )
    if sol.status != "optimal":  # the devices are checked one by one, so this should not happen
        raise RuntimeError(f"devices {[d.device_id for d in devices]}: their constraints cannot hold")
    return own, problem.power(sol.x)


# ---------------------------------------------------------------------------- DT + SRP


def coordinate_srp(
    devices: Sequence[Device],
    spot_price: Sequence[float],
    network: NetworkLimits,
    supply: SrpSupply,
    *,
    beta: float | Mapping[str, float] = DEFAULT_BETA,
    tolerance: float = 1e-6,
    rho_start: float = 1.0,
    solver: str = "clarabel",
) -> Coordination:
    """The penalty ρ at which the DSO's DT revenue pays for the SRP bought for the congestion
    left (module docstring). ``tolerance``: absolute, on |revenue − SRP cost| (money per day).
    Status ``"balanced"`` when met, ``"uncongested"`` when the DT is not needed (ρ = 0, nothing
    to buy), ``"not balanced"`` when the search ends outside the tolerance (a jump in the
    revenue; the closest ρ is returned)."""
    price = _prices(spot_price)
    problem = DsoTariffProblem.build(devices, len(price), beta)
    cache: dict[float, tuple[TariffPlan, dict, float]] = {}

    def evaluate(rho: float) -> tuple[TariffPlan, dict, float]:
        if rho not in cache:
            plan = _plan(problem, price, network, rho, solver)
            prices = supply.prices(network, plan.congestion_left)
            cost = float(sum(prices[key] * kw for key, kw in plan.congestion_left.items()))
            cache[rho] = (plan, prices, cost)
        return cache[rho]

    def gap(rho: float) -> float:
        plan, _, cost = evaluate(rho)
        return plan.revenue - cost

    def finish(rho: float, status: str) -> Coordination:
        plan, prices, cost = evaluate(rho)
        return Coordination(
            status, rho, plan, prices, dict(plan.congestion_left), plan.revenue, cost, len(cache)
        )

    if abs(gap(0.0)) <= tolerance:
        return finish(0.0, "uncongested")
    high = rho_start
    while gap(high) < 0:
        high *= 2.0
        if high > 1e9:
            raise RuntimeError("no penalty up to 1e9 makes the DT revenue cover the SRP cost")
    with contextlib.suppress(RuntimeError):  # no convergence: take the best point evaluated
        brentq(gap, 0.0, high, xtol=1e-14, rtol=1e-14, maxiter=200)
    best = min(cache, key=lambda r: abs(gap(r)))
    return finish(best, "balanced" if abs(gap(best)) <= tolerance else "not balanced")


# --------------------------------------------------------------------------- synthetic


def spot_price_shape(hours: int = 24, *, level: float = 0.6, seed: int | None = None) -> np.ndarray:
    """A day-ahead spot price (per kWh): low at night, morning and evening peaks (17–19 h)."""
    t = np.arange(hours) % 24
    shape = 0.55 + 0.25 * np.exp(-0.5 * ((t - 8) / 1.5) ** 2) + 0.7 * np.exp(-0.5 * ((t - 18) / 1.5) ** 2)
    shape += 0.15 * ((t >= 7) & (t <= 21))
    if seed is not None:
        shape = shape * np.random.default_rng(seed).uniform(0.97, 1.03, hours)
    return level * shape


def outdoor_temperature(hours: int = 24, *, mean: float = 2.0, swing: float = 4.0) -> np.ndarray:
    """A winter day (°C): coldest around 5 h, warmest around 15 h."""
    t = np.arange(hours) % 24
    return mean - swing * np.cos(2 * np.pi * (t - 3) / 24)


def random_fleet(
    n_devices: int,
    hours: int = 24,
    load_points: Sequence[str] = ("LP1", "LP4", "LP5"),
    seed: int = 0,
    *,
    aggregators: int = 4,
) -> list[Device]:
    """Half EVs, half heat pumps, spread over load points and aggregators. EV: 40–75 kWh, 11 kW,
    arrival 16–20 h, departure 6–8 h, SOC 20–50 % at arrival, 80–85 % target. HP: 2–5 kW el,
    COP 2.3–3.0, R 5–8 °C/kW, C 3–6 kWh/°C, comfort 20–24 °C, starting at 20.5–22 °C."""
    rng = np.random.default_rng(seed)
    outdoor = outdoor_temperature(hours)
    fleet: list[Device] = []
    for k in range(n_devices):
        lp = load_points[k % len(load_points)]
        agg = f"agg{1 + rng.integers(aggregators)}"
        if k % 2 == 0:
            fleet.append(
                ElectricVehicle(
                    f"ev{k}",
                    lp,
                    battery_kwh=float(rng.uniform(40, 75)),
                    charger_kw=11.0,
                    arrival=int(rng.integers(16, 21)) % hours,
                    departure=int(rng.integers(6, 9)) % hours,
                    soc_arrival=float(rng.uniform(0.2, 0.5)),
                    soc_target=float(rng.uniform(0.8, 0.85)),
                    aggregator=agg,
                )
            )
        else:
            fleet.append(
                HeatPump(
                    f"hp{k}",
                    lp,
                    tuple(outdoor + rng.normal(0, 0.3)),
                    rated_kw=float(rng.uniform(2, 5)),
                    cop=float(rng.uniform(2.3, 3.0)),
                    resistance=float(rng.uniform(5, 8)),
                    capacitance=float(rng.uniform(3, 6)),
                    t_initial=float(rng.uniform(20.5, 22)),
                    aggregator=agg,
                )
            )
    return fleet


def feeder_limits(
    devices: Sequence[Device],
    spot_price: Sequence[float],
    *,
    cut: float = 0.3,
    conventional_kw: float = 1.2,
    beta: float = DEFAULT_BETA,
) -> NetworkLimits:
    """One line (sensitivity 1, kW) above each load point, limit at every hour: baseline the
    conventional load (``conventional_kw`` per device, evening peak), upper ``cut`` of the way
    down from the peak of baseline + the cheapest flexible plan towards the baseline peak."""
    price = _prices(spot_price)
    hours = len(price)
    points = tuple(sorted({d.load_point for d in devices}))
    count = {lp: sum(d.load_point == lp for d in devices) for lp in points}
    t = np.arange(hours) % 24
    profile = 0.5 + 0.5 * np.exp(-0.5 * ((t - 18) / 2.5) ** 2) + 0.2 * np.exp(-0.5 * ((t - 8) / 1.5) ** 2)
    baseline = np.array([conventional_kw * count[lp] * profile for lp in points])
    cheapest = aggregator_response(devices, price, None, beta=beta).schedules
    flexible = np.zeros_like(baseline)
    for d in devices:
        flexible[points.index(d.load_point)] += cheapest[d.device_id]
    peak = (baseline + flexible).max(axis=1)
    upper = peak - cut * (peak - baseline.max(axis=1))
    return NetworkLimits(
        points, tuple(range(hours)), np.eye(len(points)), baseline, upper, tuple(f"L-{lp}" for lp in points)
    )
