"""The DSO's price instruments on a real grid, with the full load flow as the judge.

- ``tfm_on_grid``: requirements from the baseline's load flow, the aggregators' bids, the
  clearing against the linear limits;
- ``dt_on_grid``: the dynamic tariffs of the DSO's plan for the flexible demand.

The linear limits are exact only at the point they were taken at. After each solve the
resulting schedule goes through the full HELM load flow; while it still breaks a limit, the DSO
re-linearises at that schedule (and adds limits that appeared) and solves again. In the market
the requirement table stays what was published: only the DSO's own network data change, so the
ADMM clearing keeps them private. What is still broken after ``max_rounds`` is reported as
congestion left over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from market.pricing.admm import clear_admm
from market.pricing.aggregator import per_load_point
from market.pricing.dt import (
    Coordination,
    Device,
    SrpSupply,
    TariffPlan,
    aggregator_response,
    coordinate_srp,
    solve_tariffs,
)
from market.pricing.grid_limits import GridLimits, GridState, Violation
from market.pricing.network import NetworkLimits
from market.pricing.requirements import RequirementTable, requirement_table
from market.pricing.tfm import Bid, Clearing, clear_central

DEFAULT_MAX_ROUNDS = 6


@dataclass(frozen=True)
class TfmOutcome:
    """A flexibility market run on a grid: before and after, per hour."""

    table: RequirementTable
    clearing: Clearing
    change_kw: dict[str, np.ndarray]  # per load point and hour, consumption change (+ = more)
    limits: NetworkLimits
    before: GridState
    after: GridState
    violations_before: tuple[Violation, ...]
    violations_after: tuple[Violation, ...]
    rounds: int

    @property
    def resolved(self) -> bool:
        return self.clearing.feasible and not self.violations_after

    @property
    def report(self) -> str:
        lines = [
            f"baseline: {len(self.violations_before)} broken (limit, hour) pairs; "
            f"{len(self.table.requirements)} requirements",
            f"clearing: {self.clearing.report}",
            f"after delivery ({self.rounds} round{'s' * (self.rounds != 1)} of clearing and load flow): "
            + (
                "no limit broken"
                if not self.violations_after
                else f"{len(self.violations_after)} broken, worst: {self.violations_after[0]}"
            ),
        ]
        lines += [f"not relievable by load reduction: {item}" for item in self.table.not_relievable]
        return "\n".join(lines)


def schedule_change(bids: Sequence[Bid], clearing: Clearing, hours: int) -> dict[str, np.ndarray]:
    """Consumption change per load point and hour from the cleared fractions: the procured
    reduction at each congestion hour, the payback at the bid's payback hour."""
    change: dict[str, np.ndarray] = {}
    for bid in bids:
        row = change.setdefault(bid.load_point, np.zeros(hours))
        for hour, fraction in clearing.fractions.get(bid.bid_id, {}).items():
            row[hour] -= bid.kw[hour] * fraction
        row[bid.payback_hour] += clearing.payback_kw.get(bid.bid_id, 0.0)
    return change


def tfm_on_grid(
    grid: GridLimits,
    bids_for: callable,
    *,
    flexible_baseline_kw: Mapping[str, np.ndarray] | None = None,
    method: str = "central",
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    **table_options,
) -> TfmOutcome:
    """Requirements from the load flow of the fixed loads plus ``flexible_baseline_kw`` (the
    aggregators' own plan), bids from ``bids_for(table)`` (the aggregators answer the published
    table), clearing (``"central"`` LP or ``"admm"``) repeated against re-linearised limits
    until the full load flow of the result breaks nothing or ``max_rounds`` is reached."""
    baseline = {lp: np.asarray(v, dtype=float) for lp, v in (flexible_baseline_kw or {}).items()}
    before = grid.load_flow(baseline)
    limits = grid.linear_limits(before, extra_kw=baseline)
    table = requirement_table(limits, **table_options)
    bids = list(bids_for(table))
    clear = clear_central if method == "central" else _admm
    rounds, change, after = 0, {}, before
    for rounds in range(1, max_rounds + 1):  # noqa: B007 (rounds is reported)
        clearing = clear(table.requirements, bids, limits) if table.requirements else None
        if clearing is None:
            break
        change = schedule_change(bids, clearing, grid.hours)
        after = grid.load_flow(_added(baseline, change))
        broken = grid.violations(after)
        if not broken or not clearing.feasible:
            break
        limits = _corrected(grid, limits, after, baseline, change, broken)
    if clearing is None:
        clearing = _empty_clearing()
    return TfmOutcome(
        table=table,
        clearing=clearing,
        change_kw=change,
        limits=limits,
        before=before,
        after=after,
        violations_before=tuple(grid.violations(before)),
        violations_after=tuple(grid.violations(after)),
        rounds=rounds,
    )


@dataclass(frozen=True)
class DtOutcome:
    """Dynamic tariffs on a grid: the aggregators' plans at spot price (before) and at spot + DT
    (after), checked by the full load flow."""

    plan: TariffPlan
    coordination: Coordination | None
    limits: NetworkLimits
    flexible_before_kw: dict[str, np.ndarray]
    flexible_after_kw: dict[str, np.ndarray]
    before: GridState
    after: GridState
    violations_before: tuple[Violation, ...]
    violations_after: tuple[Violation, ...]
    response_gap_kw: float  # largest |aggregator response − DSO plan| over devices and hours
    rounds: int

    @property
    def report(self) -> str:
        lines = [
            f"at spot price alone: {len(self.violations_before)} broken (limit, hour) pairs",
            f"DSO plan: {self.plan.report}",
        ]
        if self.coordination is not None:
            lines.append(f"DT–SRP coordination: {self.coordination.report}")
        lines += [
            f"aggregators at spot + DT reproduce the plan to {self.response_gap_kw:.1e} kW",
            f"after ({self.rounds} round{'s' * (self.rounds != 1)} of planning and load flow): "
            + (
                "no limit broken"
                if not self.violations_after
                else f"{len(self.violations_after)} broken, worst: {self.violations_after[0]}"
                + (" (left for the SRP)" if self.plan.congestion_left else "")
            ),
        ]
        return "\n".join(lines)


def dt_on_grid(
    grid: GridLimits,
    devices: Sequence[Device],
    spot_price: Sequence[float],
    *,
    rho: float | None = None,
    srp: SrpSupply | None = None,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> DtOutcome:
    """The DSO's plan and tariffs for ``devices`` on ``grid`` (``rho``: the relaxed form;
    ``srp``: ρ found by the DT–SRP coordination instead), re-planned against re-linearised
    limits until the full load flow of the plan breaks nothing or ``max_rounds`` is reached;
    then the aggregators' own response at spot + DT, which must be the plan."""
    hours = grid.hours
    own = aggregator_response(devices, spot_price).schedules
    before_kw = per_load_point(devices, own, hours)
    before = grid.load_flow(before_kw)
    # the DT's limits: baseline without flexible demand, sensitivities at the spot-price plan
    limits = grid.relinearised(grid.linear_limits(before, extra_kw=before_kw), before, before_kw)
    coordination, after, after_kw, rounds = None, before, before_kw, 0
    for rounds in range(1, max_rounds + 1):  # noqa: B007 (rounds is reported)
        if srp is not None:
            coordination = coordinate_srp(devices, spot_price, limits, srp)
            plan = coordination.plan
        else:
            plan = solve_tariffs(devices, spot_price, limits, rho=rho)
        after_kw = per_load_point(devices, plan.schedules, hours)
        after = grid.load_flow(after_kw)
        broken = grid.violations(after)
        if not broken or not plan.feasible or plan.congestion_left:
            break
        limits = _corrected(grid, limits, after, {}, after_kw, broken)
    response = aggregator_response(devices, spot_price, plan).schedules
    gap = max((float(np.abs(response[d] - plan.schedules[d]).max()) for d in response), default=0.0)
    return DtOutcome(
        plan=plan,
        coordination=coordination,
        limits=limits,
        flexible_before_kw=before_kw,
        flexible_after_kw=after_kw,
        before=before,
        after=after,
        violations_before=tuple(grid.violations(before)),
        violations_after=tuple(grid.violations(after)),
        response_gap_kw=gap,
        rounds=rounds,
    )


def _admm(requirements, bids, limits) -> Clearing:
    return clear_admm(requirements, bids, limits).clearing


def _added(baseline: Mapping[str, np.ndarray], change: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    total = {lp: v.copy() for lp, v in baseline.items()}
    for lp, v in change.items():
        total[lp] = total.get(lp, 0.0) + v
    return total


def _corrected(grid, limits, after, baseline, change, broken) -> NetworkLimits:
    """Re-linearised at the cleared schedule, with newly broken limits added."""
    missing = {v.name for v in broken} - set(limits.names)
    if missing:
        wider = grid.linear_limits(after, extra_kw=_added(baseline, change), include=sorted(missing))
        # the new rows are linearised at the cleared point; express them around the baseline
        return grid.relinearised(wider, after, change)
    return grid.relinearised(limits, after, change)


def _empty_clearing() -> Clearing:
    return Clearing(
        status="optimal",
        fractions={},
        cost=0.0,
        procured_kw={},
        payback_kw={},
        binding=(),
        requirement_prices={},
        network_prices={},
        excluded={},
    )
