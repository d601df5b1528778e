"""The DSO's Flexibility Requirement Table (seeds/000 §5.2.3) from a load flow of the baseline.

For every hour at which a limit is broken, the load points that relieve it best (a reduction of
consumption there moves the limit by at least ``effectiveness`` of the most effective one) form
the candidates, and the minimum flexibility is the excess over the least effective candidate's
sensitivity: procuring that much anywhere among them is enough in the linear model. Limits at the
same hour whose candidates overlap become one requirement over the union with the largest need
(the market's network limits then decide where). Payback is allowed at the hours at which every
limit involved has headroom at the baseline; the payback and price caps are the DSO's choice
(seeds/000 Table 5.2.3.2: 150 % and 1.5 DKK/kW).

A limit that a reduction of consumption does not relieve (an over-voltage from PV in a sunny
hour) cannot be bought in this market; it is reported, not hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from market.pricing.network import NetworkLimits, PricingInputError
from market.pricing.tfm import Requirement

EXCESS_TOLERANCE_KW = 1e-6


@dataclass(frozen=True)
class RequirementTable:
    """The requirements, and the broken limits that reduced consumption cannot relieve."""

    requirements: tuple[Requirement, ...]
    not_relievable: tuple[str, ...] = field(default=())

    def rows(self) -> list[dict]:
        """The table as records (for CSV and JSON)."""
        return [
            {
                "hour": r.hour,
                "load_points": "+".join(r.load_points),
                "min_kw": round(r.min_kw, 6),
                "payback_hours": " ".join(str(h) for h in sorted(r.payback_hours)),
                "payback_cap": r.payback_cap,
                "price_cap": r.price_cap,
            }
            for r in self.requirements
        ]


def requirement_table(
    limits: NetworkLimits,
    *,
    effectiveness: float = 0.8,
    payback_cap: float = 1.5,
    price_cap: float = 1.5,
    margin_kw: float = 0.0,
) -> RequirementTable:
    """The requirement table of the baseline in ``limits`` (scaled limits: kW at the most
    effective load point). ``margin_kw`` is added to every need (the DSO's safety margin)."""
    if not 0 < effectiveness <= 1:
        raise PricingInputError(f"effectiveness {effectiveness} must be in (0, 1]")
    if not (margin_kw >= 0 and math.isfinite(margin_kw)):
        raise PricingInputError(f"margin {margin_kw} kW must be a finite kW ≥ 0")
    excess = limits.baseline - limits.upper[:, None]  # (C, H)
    broken = excess > EXCESS_TOLERANCE_KW
    congested_hours = {limits.hours[t] for t in np.flatnonzero(broken.any(axis=0))}
    requirements: list[Requirement] = []
    not_relievable: list[str] = []
    for t, hour in enumerate(limits.hours):
        groups: list[tuple[set[int], float, set[int]]] = []  # (load points, need, limits)
        for c in np.flatnonzero(broken[:, t]):
            relief = limits.sensitivity[c]
            best = relief.max()
            if best <= 0:
                not_relievable.append(f"{limits.names[c]} at t{hour}: {excess[c, t]:.3f} kW over")
                continue
            points = set(np.flatnonzero(relief >= effectiveness * best).tolist())
            need = excess[c, t] / relief[list(points)].min() + margin_kw
            groups.append((points, need, {int(c)}))
        for points, need, rows in _merged(groups):
            requirements.append(
                Requirement(
                    hour=hour,
                    load_points=tuple(limits.load_points[p] for p in sorted(points)),
                    min_kw=float(need),
                    payback_hours=_payback_hours(limits, rows, congested_hours),
                    payback_cap=payback_cap,
                    price_cap=price_cap,
                )
            )
    return RequirementTable(tuple(requirements), tuple(not_relievable))


def _merged(groups):
    """Groups whose load points overlap, united (need: the largest)."""
    merged: list[tuple[set[int], float, set[int]]] = []
    for points, need, rows in groups:
        points, rows = set(points), set(rows)
        keep = []
        for other_points, other_need, other_rows in merged:
            if other_points & points:
                points |= other_points
                need = max(need, other_need)
                rows |= other_rows
            else:
                keep.append((other_points, other_need, other_rows))
        merged = [*keep, (points, need, rows)]
    return merged


def _payback_hours(limits: NetworkLimits, rows: set[int], congested: set[int]) -> frozenset:
    """Hours without congestion at which every limit in ``rows`` has headroom."""
    rows_list = sorted(rows)
    headroom = limits.upper[rows_list, None] - limits.baseline[rows_list]
    return frozenset(
        hour
        for t, hour in enumerate(limits.hours)
        if hour not in congested and (headroom[:, t] > EXCESS_TOLERANCE_KW).all()
    )
