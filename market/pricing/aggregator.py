"""An aggregator's flexibility bids for the DSO's requirement table (seeds/000 §5.3, layer 2).

The aggregator knows its EVs and heat pumps (``dt.ElectricVehicle``, ``dt.HeatPump``) and its
own plan (``dt.aggregator_response`` at spot price: the baseline it is measured against). For
each load point where the table asks for flexibility it bids once: kW of reduction per
congestion hour of that load point and one payback hour, from an LP over its devices there::

    max   Σ_h r_h                                   (reduction at the congestion hours h)
    s.t.  device constraints (energy need, SOC range, comfort band)
          B_ih − P_ih = share of r_h,  0 ≤ P_ih ≤ B_ih          at every congestion hour h
          P_ip ≥ B_ip                                            at the payback hour p
          P_it = B_it                                            at every other hour
          Σ_i (P_ip − B_ip) ≤ payback_cap · Σ_h r_h

solved first with the payback free to land at any hour the requirements allow; the hours that
take the most (and the two cheapest) are then tried alone, and the one with the largest
reduction becomes the bid's payback hour (ties: the first tried). The bid's payback kW is the
increase at p. Its price per kW is what the re-profiling costs at spot price
(``Σ_t c_t (P_t − B_t) / Σ_h r_h``, at least 0) plus the aggregator's ``markup``.

Delivery (``BidBook.schedules``): each device's change at congestion hour h is scaled by the
fraction cleared for h, its payback by the share of the offered kW that was cleared (as the
market counts the payback). With one fraction for all hours this is ``B + x·(P − B)``, feasible
because the device constraints are convex; with different fractions per hour an EV still gets
exactly its energy, a heat pump's comfort band holds up to the thermal effect of the difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from market.pricing.dt import Device, DsoTariffProblem, aggregator_response
from market.pricing.requirements import RequirementTable
from market.pricing.tfm import Bid, Clearing, Requirement

MIN_BID_KW = 0.1  # smaller offers are not worth a bid
CANDIDATE_HOURS = 4  # payback hours tried alone, besides the two cheapest
TIE_WEIGHT = 1e-6  # per unit of spot cost: prefers the cheaper re-profile among equal reductions


def baseline_schedules(devices: Sequence[Device], spot_price: Sequence[float]) -> dict[str, np.ndarray]:
    """Every device's schedule in its aggregator's own plan at spot price (the TFM baseline)."""
    return aggregator_response(devices, spot_price).schedules


def per_load_point(
    devices: Sequence[Device], schedules: Mapping[str, np.ndarray], hours: int
) -> dict[str, np.ndarray]:
    """The flexible demand per load point and hour of ``schedules``."""
    total: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(hours))
    for d in devices:
        total[d.load_point] = total[d.load_point] + schedules[d.device_id]
    return dict(total)


@dataclass(frozen=True)
class BidBook:
    """The bids, and how each bid's devices change their plan when it is fully cleared."""

    bids: tuple[Bid, ...]
    baseline: dict[str, np.ndarray]
    changes: dict[str, dict[str, np.ndarray]]  # bid id -> device id -> kW change per hour

    def schedules(self, clearing: Clearing) -> dict[str, np.ndarray]:
        """Every device's schedule once the cleared flexibility is delivered (module docstring)."""
        result = {device: plan.copy() for device, plan in self.baseline.items()}
        for bid in self.bids:
            fractions = clearing.fractions.get(bid.bid_id, {})
            cleared = sum(bid.kw[h] * fractions.get(h, 0.0) for h in bid.kw)
            share = cleared / bid.offered_kw if bid.offered_kw > 0 else 0.0
            for device, change in self.changes[bid.bid_id].items():
                scale = np.zeros(len(change))
                for hour in bid.kw:
                    scale[hour] = fractions.get(hour, 0.0)
                scale[bid.payback_hour] = share
                result[device] = result[device] + scale * change
        return result


def aggregator_bids(
    devices: Sequence[Device],
    spot_price: Sequence[float],
    table: RequirementTable,
    *,
    markup: float | Mapping[str, float] = 0.3,
    baseline: Mapping[str, np.ndarray] | None = None,
) -> BidBook:
    """Each aggregator's bids for ``table``: at most one per (aggregator, load point); no bid
    where its devices cannot move or no payback hour works. ``markup`` (price per kW, per
    aggregator or one for all) is added to the re-profiling cost."""
    price = np.asarray(spot_price, dtype=float)
    schedules = dict(baseline) if baseline is not None else baseline_schedules(devices, price)
    asked: dict[str, list[Requirement]] = defaultdict(list)
    for r in table.requirements:
        for lp in r.load_points:
            asked[lp].append(r)
    groups: dict[tuple[str, str], list[Device]] = defaultdict(list)
    for d in devices:
        if d.load_point in asked:
            groups[(d.aggregator, d.load_point)].append(d)
    bids, changes = [], {}
    for (aggregator, lp), members in sorted(groups.items()):
        requirements = asked[lp]
        margin = markup.get(aggregator, 0.0) if isinstance(markup, Mapping) else markup
        found = _best_bid(aggregator, lp, members, requirements, price, schedules, margin)
        if found is not None:
            bids.append(found[0])
            changes[found[0].bid_id] = found[1]
    return BidBook(tuple(bids), {d.device_id: schedules[d.device_id] for d in devices}, changes)


def _best_bid(aggregator, lp, members, requirements, price, schedules, markup):
    hours = len(price)
    congestion = sorted({r.hour for r in requirements})
    allowed = frozenset.intersection(*(r.payback_hours for r in requirements)) - set(congestion)
    cap = min(r.payback_cap for r in requirements)
    if not allowed:
        return None
    problem = DsoTariffProblem.build(members, hours, 1.0)
    base = np.concatenate([schedules[d.device_id] for d in members])
    # where would the devices pay back if they could anywhere allowed? those hours are the candidates
    spread = _reprofile(problem, base, price, congestion, sorted(allowed), cap)
    if spread is None:
        return None
    by_use = sorted(allowed, key=lambda h: (-round(spread[1][h], 6), price[h]))
    candidates = dict.fromkeys(by_use[:CANDIDATE_HOURS] + sorted(allowed, key=lambda h: price[h])[:2])
    best = None
    for hour in candidates:
        found = _reprofile(problem, base, price, congestion, [hour], cap)
        if found is not None and (best is None or sum(found[0].values()) > sum(best[1][0].values()) + 1e-9):
            best = (hour, found)
    if best is None or sum(best[1][0].values()) < MIN_BID_KW:
        return None
    payback, found = best
    reduction, increase, cost, planned = found[0], found[1][payback], found[2], found[3]
    offered = sum(reduction.values())
    kw = {h: v for h, v in reduction.items() if v > 1e-9}
    changes = {d.device_id: planned[i] - schedules[d.device_id] for i, d in enumerate(members)}
    bid = Bid(
        bid_id=f"{aggregator}-{lp}",
        aggregator=aggregator,
        price=round(max(cost / offered, 0.0) + markup, 6),
        load_point=lp,
        kw=kw,
        payback_hour=payback,
        payback_kw=max(increase, 0.0),
    )
    return bid, changes


def _reprofile(problem: DsoTariffProblem, base, price, congestion, paybacks, cap):
    """The largest reduction at ``congestion`` paid back at the hours ``paybacks``: (kW per
    congestion hour, kW of increase per payback hour, spot cost of the change), or None when the
    LP has no solution."""
    hours, n_dev = problem.hours, len(problem.devices)
    n_x = problem.matrix.shape[1]
    n_r = len(congestion)
    power = base.reshape(n_dev, hours)
    lower = problem.col_lower.copy()
    upper = problem.col_upper.copy()
    fixed = np.ones(hours, dtype=bool)
    fixed[congestion] = False
    fixed[paybacks] = False
    for i in range(n_dev):
        columns = slice(i * hours, (i + 1) * hours)
        lower[columns] = np.where(fixed, power[i], lower[columns])
        upper[columns] = np.where(fixed, power[i], upper[columns])
        lower[i * hours + np.asarray(congestion)] = 0.0
        upper[i * hours + np.asarray(congestion)] = power[i, congestion]
        lower[i * hours + np.asarray(paybacks)] = power[i, paybacks]
    # rows: Σ_i (B_ih − P_ih) − r_h = 0 per congestion hour h; Σ payback increase ≤ cap · Σ r
    devices = np.arange(n_dev)
    rows = [np.repeat(np.arange(n_r), n_dev), np.arange(n_r), np.full(n_dev * len(paybacks), n_r)]
    cols = [
        (devices[None, :] * hours + np.asarray(congestion)[:, None]).reshape(-1),
        n_x + np.arange(n_r),
        (devices[:, None] * hours + np.asarray(paybacks)[None, :]).reshape(-1),
    ]
    values = [np.full(n_r * n_dev, -1.0), np.full(n_r, -1.0), np.ones(n_dev * len(paybacks))]
    rows.append(np.full(n_r, n_r))
    cols.append(n_x + np.arange(n_r))
    values.append(np.full(n_r, -cap))
    extra = sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n_r + 1, n_x + n_r)
    )
    device_rows = sparse.hstack([problem.matrix, sparse.csr_matrix((problem.matrix.shape[0], n_r))]).tocsr()
    equal = problem.row_lower == problem.row_upper
    a_eq = sparse.vstack([device_rows[np.flatnonzero(equal)], extra[:n_r]])
    b_eq = np.concatenate([problem.row_lower[equal], -power[:, congestion].sum(axis=0)])
    ranged = np.flatnonzero(~equal)
    a_ub = sparse.vstack([device_rows[ranged], -device_rows[ranged], extra[n_r:]])
    payback_base = power[:, paybacks].sum()
    b_ub = np.concatenate([problem.row_upper[ranged], -problem.row_lower[ranged], [payback_base]])
    spot = np.concatenate([np.tile(price, n_dev), np.zeros(n_x - n_dev * hours)])
    objective = np.concatenate([TIE_WEIGHT * spot, -np.ones(n_r)])
    bounds = np.column_stack(
        [np.concatenate([lower, np.zeros(n_r)]), np.concatenate([upper, np.full(n_r, np.inf)])]
    )
    result = linprog(objective, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    if result.status != 0:
        return None
    planned = result.x[: n_dev * hours].reshape(n_dev, hours)
    reduction = dict(zip(congestion, map(float, result.x[n_x:]), strict=True))
    increase = {h: float(planned[:, h].sum() - power[:, h].sum()) for h in paybacks}
    cost = float(price @ (planned - power).sum(axis=0))
    return reduction, increase, cost, planned
