"""Transactive flexibility market (seeds/000 §5.2): the DSO's requirements, aggregators' bids,
optional linear network limits, and the central pay-as-bid LP clearing.

Units: kW, hours as integers, prices per kW of flexibility. Sign (load convention): a bid's
flexibility is a *reduction* of consumption at its congestion hours; its payback is an
*increase* at its payback hour.

Formulation (one variable per eligible bid and congestion hour, ``x_bh`` in [0, 1]):

    min   Σ_bh price_b · kW_bh · x_bh                      (pay-as-bid)
    s.t.  Σ_{b at r's load points} kW_{b,h_r} · x_{b,h_r} ≥ need_r   for every requirement r
          baseline_ct + Σ_lp S_c,lp · ΔP_lp,t(x) ≤ upper_ct          for every limit c, hour t
          ΔP_lp,t(x) = Σ_{b at lp} ( payback_b · kW_bh / Σ_h kW_bh · x_bh  if t is b's payback hour
                                      − kW_bt · x_bt )
          0 ≤ x ≤ 1

The payback follows the procured flexibility (the bid's payback kW times the share of its
offered flexibility that is bought). Caps exclude (bid, hour) pairs before the LP: a price
above the requirement's price cap, a payback hour outside its allowed hours, a payback ratio
(payback kW / offered flexibility kW) above its payback cap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from market.pricing.network import NetworkLimits, PricingInputError

TOLERANCE = 1e-7


@dataclass(frozen=True)
class Requirement:
    """One row of the DSO's Flexibility Requirement Table, for one congestion hour."""

    hour: int
    load_points: tuple[str, ...] | str
    min_kw: float
    payback_hours: frozenset[int] | Iterable[int]
    payback_cap: float = 1.5
    price_cap: float = math.inf

    def __post_init__(self) -> None:
        points = (self.load_points,) if isinstance(self.load_points, str) else tuple(self.load_points)
        object.__setattr__(self, "load_points", points)
        object.__setattr__(self, "payback_hours", frozenset(self.payback_hours))

    @property
    def name(self) -> str:
        """``LP4+LP5@t16``; with more than three load points ``bus3…bus115 (57 load points)@t2``
        (unique: the load points of one hour's requirements are disjoint)."""
        points = self.load_points
        where = (
            "+".join(points) if len(points) <= 3 else f"{points[0]}…{points[-1]} ({len(points)} load points)"
        )
        return f"{where}@t{self.hour}"


@dataclass(frozen=True, eq=False)
class Bid:
    """An aggregator's flexibility bid: one price, one load point, kW per congestion hour, one
    payback hour and its kW."""

    bid_id: str
    aggregator: str
    price: float
    load_point: str
    kw: Mapping[int, float]
    payback_hour: int
    payback_kw: float

    @property
    def offered_kw(self) -> float:
        return float(sum(self.kw.values()))

    @property
    def payback_ratio(self) -> float:
        return self.payback_kw / self.offered_kw if self.offered_kw > 0 else 0.0


@dataclass
class Clearing:
    """The result: a fraction per bid and hour, the pay-as-bid cost, which requirements bind and
    the prices (duals) of requirements (per kW) and network limits; when infeasible, the
    shortfall per requirement and the excess per network limit of the least-violating schedule."""

    status: str
    fractions: dict[str, dict[int, float]]
    cost: float
    procured_kw: dict[str, float]
    payback_kw: dict[str, float]
    binding: tuple[str, ...]
    requirement_prices: dict[str, float]
    network_prices: dict[tuple[str, int], float]
    excluded: dict[tuple[str, int], str]
    shortfall_kw: dict[str, float] = field(default_factory=dict)
    network_excess: dict[tuple[str, int], float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.status == "optimal"

    @property
    def report(self) -> str:
        if self.feasible:
            return f"cleared at cost {self.cost:.4f}; binding: {', '.join(self.binding) or 'none'}"
        lines = _first(
            [
                f"requirement {name} cannot be met: short by {kw:.3f} kW"
                for name, kw in self.shortfall_kw.items()
            ]
        )
        worst = sorted(self.network_excess.items(), key=lambda item: -item[1])
        lines += _first(
            [
                f"network limit {name} at t{hour} exceeded by {excess:.4g} even at the best schedule"
                for (name, hour), excess in worst
            ]
        )
        return "infeasible: " + "; ".join(lines)


def _first(items: list[str], count: int = 5) -> list[str]:
    return items if len(items) <= count else [*items[:count], f"… and {len(items) - count} more"]


@dataclass(frozen=True, eq=False)
class ClearingProblem:
    """The clearing as matrices, split by who may see what: the operator's part (costs,
    coverage of requirements) and the schedule map the DSO checks against its network."""

    requirements: tuple[Requirement, ...]
    bids: tuple[Bid, ...]
    variables: tuple[tuple[str, int], ...]
    cost: np.ndarray
    cover: np.ndarray
    need: np.ndarray
    schedule: np.ndarray
    schedule_index: dict[tuple[str, int], int]
    excluded: dict[tuple[str, int], str]

    def result(
        self,
        x: np.ndarray,
        *,
        status: str = "optimal",
        requirement_prices: np.ndarray | None = None,
        network_prices: Mapping[tuple[str, int], float] | None = None,
        shortfall: np.ndarray | None = None,
        network_excess: Mapping[tuple[str, int], float] | None = None,
    ) -> Clearing:
        x = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)
        fractions = {bid.bid_id: dict.fromkeys(bid.kw, 0.0) for bid in self.bids}
        payback = dict.fromkeys(fractions, 0.0)
        by_id = {bid.bid_id: bid for bid in self.bids}
        for value, (bid_id, hour) in zip(x, self.variables, strict=True):
            bid = by_id[bid_id]
            fractions[bid_id][hour] = float(value)
            payback[bid_id] += bid.payback_kw * bid.kw[hour] / bid.offered_kw * float(value)
        procured = self.cover @ x
        names = [r.name for r in self.requirements]
        slack = procured - self.need
        binds = slack <= 10 * TOLERANCE * np.maximum(1.0, self.need)
        prices = np.zeros(len(names)) if requirement_prices is None else requirement_prices
        shortfall = np.zeros(len(names)) if shortfall is None else shortfall
        return Clearing(
            status=status,
            fractions=fractions,
            cost=float(self.cost @ x),
            procured_kw=dict(zip(names, map(float, procured), strict=True)),
            payback_kw=payback,
            binding=tuple(name for name, bound in zip(names, binds, strict=True) if bound),
            requirement_prices=dict(zip(names, map(float, prices), strict=True)),
            network_prices=dict(network_prices or {}),
            excluded=dict(self.excluded),
            shortfall_kw={n: float(s) for n, s in zip(names, shortfall, strict=True) if s > 1e-6},
            network_excess=dict(network_excess or {}),
        )


# ------------------------------------------------------------------------------ validation


def validate(requirements: Sequence[Requirement], bids: Sequence[Bid], network: NetworkLimits | None) -> None:
    """Raise :class:`PricingInputError` on inputs that cannot be cleared as given."""
    if not requirements:
        raise PricingInputError("no requirement: the DSO asked for no flexibility")
    covered: dict[tuple[str, int], str] = {}
    for r in requirements:
        if not r.load_points:
            raise PricingInputError(f"requirement at t{r.hour} names no load point")
        if not (r.min_kw >= 0 and math.isfinite(r.min_kw)):
            raise PricingInputError(f"requirement {r.name}: minimum {r.min_kw} kW must be a finite kW ≥ 0")
        if not r.payback_cap >= 0:
            raise PricingInputError(f"requirement {r.name}: payback cap {r.payback_cap} must be ≥ 0")
        if not r.price_cap >= 0:
            raise PricingInputError(f"requirement {r.name}: price cap {r.price_cap} must be ≥ 0")
        if r.hour in r.payback_hours:
            raise PricingInputError(f"requirement {r.name}: its congestion hour cannot be a payback hour")
        for lp in r.load_points:
            if (lp, r.hour) in covered:
                raise PricingInputError(
                    f"load point {lp} at t{r.hour} is in two requirements ({covered[lp, r.hour]})"
                )
            covered[lp, r.hour] = r.name
    known_points = {lp for lp, _ in covered}
    ids: set[str] = set()
    for bid in bids:
        where = f"bid {bid.bid_id!r}"
        if bid.bid_id in ids:
            raise PricingInputError(f"{where}: duplicate bid id")
        ids.add(bid.bid_id)
        if bid.load_point not in known_points:
            raise PricingInputError(f"{where}: unknown load point {bid.load_point!r}, in no requirement")
        if network is not None and bid.load_point not in network.load_points:
            raise PricingInputError(f"{where}: load point {bid.load_point!r} is not in the network limits")
        if not (bid.price >= 0 and math.isfinite(bid.price)):
            raise PricingInputError(f"{where}: price {bid.price} per kW must be a finite number ≥ 0")
        if not bid.kw:
            raise PricingInputError(f"{where}: offers no kW at any hour")
        if any(not (kw >= 0 and math.isfinite(kw)) for kw in bid.kw.values()):
            raise PricingInputError(f"{where}: negative or non-finite kW {dict(bid.kw)}")
        if not (bid.payback_kw >= 0 and math.isfinite(bid.payback_kw)):
            raise PricingInputError(f"{where}: payback {bid.payback_kw} kW must be ≥ 0")
        if bid.payback_hour in bid.kw:
            raise PricingInputError(f"{where}: payback hour t{bid.payback_hour} is also a congestion hour")


def eligibility(bid: Bid, hour: int, requirement: Requirement | None) -> str | None:
    """Why (bid, hour) cannot be bought under ``requirement``; ``None`` when it can."""
    if requirement is None:
        return f"no requirement at {bid.load_point} for t{hour}"
    if bid.price > requirement.price_cap:
        return f"price {bid.price} above the cap {requirement.price_cap}"
    if bid.payback_kw > 0 and bid.payback_hour not in requirement.payback_hours:
        return f"payback hour t{bid.payback_hour} not allowed"
    if bid.payback_ratio > requirement.payback_cap * (1 + 1e-12):
        return f"payback ratio {bid.payback_ratio:.3f} above the cap {requirement.payback_cap}"
    return None


def build_problem(
    requirements: Sequence[Requirement], bids: Sequence[Bid], network: NetworkLimits | None = None
) -> ClearingProblem:
    """Validate and turn the market into matrices (see the module docstring)."""
    requirements, bids = tuple(requirements), tuple(bids)
    validate(requirements, bids, network)
    row_of = {(lp, r.hour): k for k, r in enumerate(requirements) for lp in r.load_points}
    variables, excluded, rows = [], {}, []
    for bid in bids:
        for hour, kw in sorted(bid.kw.items()):
            if kw <= 0:
                continue
            k = row_of.get((bid.load_point, hour))
            reason = eligibility(bid, hour, None if k is None else requirements[k])
            if reason:
                excluded[bid.bid_id, hour] = reason
            else:
                variables.append((bid, hour))
                rows.append(k)
    n = len(variables)
    cost = np.array([bid.price * bid.kw[hour] for bid, hour in variables])
    cover = np.zeros((len(requirements), n))
    schedule_index: dict[tuple[str, int], int] = {}
    entries: list[tuple[int, int, float]] = []
    for i, ((bid, hour), k) in enumerate(zip(variables, rows, strict=True)):
        cover[k, i] = bid.kw[hour]
        down = schedule_index.setdefault((bid.load_point, hour), len(schedule_index))
        entries.append((down, i, -bid.kw[hour]))
        if bid.payback_kw > 0:
            up = schedule_index.setdefault((bid.load_point, bid.payback_hour), len(schedule_index))
            entries.append((up, i, bid.payback_kw * bid.kw[hour] / bid.offered_kw))
    schedule = np.zeros((len(schedule_index), n))
    for row, i, value in entries:
        schedule[row, i] += value
    return ClearingProblem(
        requirements=requirements,
        bids=bids,
        variables=tuple((bid.bid_id, hour) for bid, hour in variables),
        cost=cost,
        cover=cover,
        need=np.array([r.min_kw for r in requirements], dtype=float),
        schedule=schedule,
        schedule_index=schedule_index,
        excluded=excluded,
    )


# ------------------------------------------------------------------------- central clearing


def clear_central(
    requirements: Sequence[Requirement], bids: Sequence[Bid], network: NetworkLimits | None = None
) -> Clearing:
    """Least pay-as-bid cost meeting every requirement within the caps and network limits
    (payback hours included), by one LP (scipy HiGHS). Infeasible → a :class:`Clearing` with
    status ``"infeasible"`` and the shortfall per requirement, not an exception."""
    problem = build_problem(requirements, bids, network)
    matrix, headroom, labels = _network_rows(problem, network)
    n, nr = len(problem.variables), len(problem.requirements)
    if n == 0:
        return least_violation(problem, matrix, headroom, labels)
    res = linprog(
        problem.cost,
        A_ub=np.vstack([-problem.cover, matrix]),
        b_ub=np.concatenate([-problem.need, headroom]),
        bounds=(0.0, 1.0),
        method="highs",
    )
    if res.status == 2:
        return least_violation(problem, matrix, headroom, labels)
    if res.status != 0:
        raise RuntimeError(f"the TFM clearing LP failed: {res.message}")
    duals = -np.asarray(res.ineqlin.marginals)
    return problem.result(
        res.x,
        requirement_prices=duals[:nr],
        network_prices=dict(zip(labels, map(float, duals[nr:]), strict=True)),
    )


def _network_rows(problem: ClearingProblem, network: NetworkLimits | None):
    if network is None:
        return np.zeros((0, len(problem.variables))), np.zeros(0), ()
    return network.rows(problem.schedule, problem.schedule_index)


def least_violation(problem: ClearingProblem, matrix: np.ndarray, headroom: np.ndarray, labels) -> Clearing:
    """The infeasibility report: the schedule that minimises the kW missing from requirements
    plus the excess over network limits (an LP with slacks), and what is still missing."""
    n, nr, nc = len(problem.variables), len(problem.requirements), len(labels)
    objective = np.concatenate([np.zeros(n), np.ones(nr + nc)])
    a_ub = np.block(
        [
            [-problem.cover, -np.eye(nr), np.zeros((nr, nc))],
            [matrix, np.zeros((nc, nr)), -np.eye(nc)],
        ]
    )
    b_ub = np.concatenate([-problem.need, headroom])
    bounds = [(0.0, 1.0)] * n + [(0.0, None)] * (nr + nc)
    res = linprog(objective, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"the TFM relaxation LP failed: {res.message}")
    x, shortfall, excess = res.x[:n], res.x[n : n + nr], res.x[n + nr :]
    return problem.result(
        x,
        status="infeasible",
        shortfall=shortfall,
        network_excess={label: float(e) for label, e in zip(labels, excess, strict=True) if e > 1e-6},
    )
