"""Bands for every step of a profile, warm-starting each step from the one before; the
result as a table and a JSON document (``ocm.report`` writes them, with ``ocm.plots``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from tqdm import tqdm

from ocm.bands import BandResult, OcmProblem
from ocm.profiles import Profiles


@dataclass(frozen=True)
class TimeSeriesResult:
    """One ``BandResult`` per profile step."""

    network: str
    objective: str
    seed: int
    times: np.ndarray  # Unix seconds
    uncontrollable_kw: np.ndarray  # summed active load that OCM does not control, per step
    steps: list[BandResult]
    v_min_limit_pu: float  # the tightest voltage limits of the grid, for plots
    v_max_limit_pu: float

    @property
    def flexibilities(self):
        return self.steps[0].flexibilities

    @property
    def feasible_steps(self) -> int:
        return sum(step.feasible for step in self.steps)

    @property
    def seconds(self) -> float:
        return sum(step.seconds for step in self.steps)

    def table(self) -> pd.DataFrame:
        """One row per step: bands per flexibility (``<key>.p_min_kw``...) and corner values."""
        data = {"time": [_iso(t) for t in self.times]}
        data["feasible"] = [s.feasible for s in self.steps]
        data["verified"] = [s.verification.passed for s in self.steps]
        for k, f in enumerate(self.flexibilities):
            data[f"{f.key}.p_min_kw"] = [s.p_min_kw[k] for s in self.steps]
            data[f"{f.key}.p_max_kw"] = [s.p_max_kw[k] for s in self.steps]
        for name in ("v_min_pu_at_pmax", "v_max_pu_at_pmin", "max_loading_percent", "seconds"):
            data[name] = [getattr(s, name) for s in self.steps]
        data["uncontrollable_p_kw"] = self.uncontrollable_kw
        data["message"] = [s.message for s in self.steps]
        return pd.DataFrame(data)

    def to_json_dict(self) -> dict:
        return {
            "network": self.network,
            "objective": self.objective,
            "seed": self.seed,
            "feasible_steps": self.feasible_steps,
            "seconds": self.seconds,
            "flexibilities": [
                {
                    "element": f.element,
                    "index": f.index,
                    "bus": f.bus,
                    "name": f.name,
                    "priority_group": f.priority_group,
                }
                for f in self.flexibilities
            ],
            "steps": [
                {
                    "time": _iso(t),
                    "feasible": s.feasible,
                    "verified": s.verification.passed,
                    "p_min_kw": s.p_min_kw.tolist(),
                    "p_max_kw": s.p_max_kw.tolist(),
                    "v_min_pu_at_pmax": _finite(s.v_min_pu_at_pmax),
                    "v_max_pu_at_pmin": _finite(s.v_max_pu_at_pmin),
                    "max_loading_percent": _finite(s.max_loading_percent),
                    "uncontrollable_p_kw": float(u),
                    "seconds": s.seconds,
                    "message": s.message,
                }
                for t, s, u in zip(self.times, self.steps, self.uncontrollable_kw, strict=True)
            ],
        }


def run_timeseries(
    problem: OcmProblem,
    profiles: Profiles,
    *,
    objective: str = "sum",
    seed: int = 0,
    network: str = "",
    progress: bool = False,
) -> TimeSeriesResult:
    """Bands for every step of ``profiles``; step ``t`` is solved with seed ``seed + t`` and
    warm-started from step ``t - 1``."""
    steps: list[BandResult] = []
    previous = None
    for t in tqdm(range(len(profiles)), desc="OCM", unit="step", disable=not progress):
        previous = problem.solve(
            profiles.point(t),
            objective=objective,
            seed=seed + t,
            warm_start=previous,
            p_low_kw=profiles.p_low_kw[t],
            p_high_kw=profiles.p_high_kw[t],
        )
        steps.append(previous)
    voltage_buses = problem.constraints.voltage_buses
    return TimeSeriesResult(
        network=network,
        objective=objective,
        seed=seed,
        times=profiles.times,
        uncontrollable_kw=profiles.p_kw.sum(axis=1),
        steps=steps,
        v_min_limit_pu=float(np.max(problem.limits.v_min_pu[voltage_buses], initial=0.0)),
        v_max_limit_pu=float(np.min(problem.limits.v_max_pu[voltage_buses], initial=2.0)),
    )


def _iso(unix_seconds: float) -> str:
    return datetime.fromtimestamp(float(unix_seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
