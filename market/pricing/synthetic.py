"""Seeded random flexibility markets (for tests and benchmarks): a few load-point groups with
a requirement at two congestion hours each, bids with distinct prices (one congestion hour
each, so that the optimum is unique: a bid's hours share its price and payback ratio, a tie the
LP may break either way), and one feeder limit per group that paybacks would overload."""

from __future__ import annotations

import numpy as np

from market.pricing.network import NetworkLimits
from market.pricing.tfm import Bid, Requirement

CONGESTION_HOURS = (6, 18)
PAYBACK_HOURS = (3, 4, 10, 21, 22)
HEADROOM = 0.35  # of the largest payback all bids of a group could bring in one hour


def random_market(
    bid_count: int, seed: int, *, groups: int = 2, points_per_group: int = 3
) -> tuple[list[Requirement], list[Bid], NetworkLimits]:
    """Requirements at 40 % of the flexibility offered, and limits on each group's load in the
    payback hours at 35 % of the payback all its bids could bring in one hour."""
    rng = np.random.default_rng(seed)
    points = [f"LP{g}{k}" for g in range(groups) for k in range(points_per_group)]
    group_of = {
        lp: g for g in range(groups) for lp in points[g * points_per_group : (g + 1) * points_per_group]
    }
    prices = rng.permutation(bid_count) * 0.01 / max(1, bid_count // 50) + rng.uniform(0.3, 0.4)
    bids = []
    for b in range(bid_count):
        lp = points[rng.integers(len(points))]
        kw = {int(rng.choice(CONGESTION_HOURS)): float(rng.uniform(5.0, 80.0))}
        payback = float(sum(kw.values()) * rng.uniform(0.8, 1.4))
        hour = int(rng.choice(PAYBACK_HOURS))
        bids.append(Bid(f"b{b}", f"ag{b % 4}", float(prices[b]), lp, kw, hour, payback))
    requirements = []
    for g in range(groups):
        members = tuple(lp for lp in points if group_of[lp] == g)
        for t in CONGESTION_HOURS:
            offered = sum(bid.kw.get(t, 0.0) for bid in bids if bid.load_point in members)
            requirements.append(Requirement(t, members, 0.4 * offered, PAYBACK_HOURS, 1.5, 1.5))
    sensitivity = np.array([[1.0 if group_of[lp] == g else 0.0 for lp in points] for g in range(groups)])
    pushed = np.zeros((groups, len(PAYBACK_HOURS)))
    for bid in bids:
        pushed[group_of[bid.load_point], PAYBACK_HOURS.index(bid.payback_hour)] += bid.payback_kw
    upper = np.full(groups, 100.0)
    headroom = HEADROOM * pushed.max(axis=1, keepdims=True)
    baseline = np.broadcast_to(upper[:, None] - headroom, pushed.shape)
    network = NetworkLimits(
        tuple(points), PAYBACK_HOURS, sensitivity, baseline, upper, tuple(f"feeder{g}" for g in range(groups))
    )
    return requirements, bids, network
