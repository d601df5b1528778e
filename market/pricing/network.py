"""Linear network limits the DSO keeps, shared by the flexibility market and the dynamic
tariffs: each limit is a quantity (a line's flow, minus a bus voltage) that must stay below its
upper value, linearised around the baseline by its sensitivity to consumption at each load point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


class PricingInputError(ValueError):
    """Inputs of a pricing problem (market or tariff) that make no sense, said in plain words."""


@dataclass(frozen=True, eq=False)
class NetworkLimits:
    """Linear network limits the DSO keeps: for limit ``c`` and hour ``t`` in ``hours``,
    ``baseline[c, t] + Σ_lp sensitivity[c, lp] · ΔP[lp, t] ≤ upper[c]`` where ΔP is the change of
    consumption (kW) at each load point. A line flow has sensitivity ≥ 0 to downstream loads; a
    lower voltage limit is written as ``-V ≤ -V_min`` with sensitivity ``-dV/dP``."""

    load_points: tuple[str, ...]
    hours: tuple[int, ...]
    sensitivity: np.ndarray
    baseline: np.ndarray
    upper: np.ndarray
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        sensitivity = np.atleast_2d(np.asarray(self.sensitivity, dtype=float))
        count = sensitivity.shape[0]
        baseline = np.asarray(self.baseline, dtype=float).reshape(count, len(self.hours))
        upper = np.broadcast_to(np.asarray(self.upper, dtype=float), (count,)).copy()
        if sensitivity.shape[1] != len(self.load_points):
            raise PricingInputError(
                f"sensitivity has {sensitivity.shape[1]} columns for {len(self.load_points)} load points"
            )
        if not (np.isfinite(sensitivity).all() and np.isfinite(baseline).all() and np.isfinite(upper).all()):
            raise PricingInputError("network limits must be finite numbers")
        names = tuple(self.names) or tuple(f"limit{c}" for c in range(count))
        if len(names) != count:
            raise PricingInputError(f"{len(names)} names for {count} network limits")
        object.__setattr__(self, "sensitivity", sensitivity)
        object.__setattr__(self, "baseline", baseline)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "load_points", tuple(self.load_points))
        object.__setattr__(self, "hours", tuple(int(t) for t in self.hours))

    def rows(self, schedule: np.ndarray, schedule_index: Mapping[tuple[str, int], int]):
        """The limits in the variables' space: ``(matrix, headroom, (name, hour) per row)`` from
        the schedule map (row per (load point, hour): kW change per unit of each variable)."""
        column = {lp: k for k, lp in enumerate(self.load_points)}
        width = schedule.shape[1]
        matrix, headroom, labels = [], [], []
        for t_index, hour in enumerate(self.hours):
            per_point = np.zeros((len(self.load_points), width))
            for (lp, t), row in schedule_index.items():
                if t == hour:
                    per_point[column[lp]] += schedule[row]
            matrix.append(self.sensitivity @ per_point)
            headroom.append(self.upper - self.baseline[:, t_index])
            labels.extend((name, hour) for name in self.names)
        return np.vstack(matrix), np.concatenate(headroom), tuple(labels)
