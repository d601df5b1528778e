"""Verification of a band before it is published, and the safe fallback when it fails.

A band ``[p_min, p_max]`` (a box: every flexibility anywhere in its own interval) is checked by
one batched load flow of
- the two corners the optimisation made feasible (all at ``p_max``, all at ``p_min``);
- the worst corner of every limit under linearised sensitivities at the band's centre (for a
  radial feeder these are the two corners above; in meshed grids or with reversing flows they
  catch mixed corners);
- ``samples`` schedules drawn uniformly from the box (none if the box is a single point).

If any of them violates a limit, the band is not published as it is: ``ocm.bands`` first
tightens the violated limits by the excess found and optimises again; if that does not give a
passing band, ``shrink_band`` shrinks it towards the checked schedule with the largest margin
(to 75 %, 50 %, 25 %, then to that schedule alone) until a shrunk band passes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ocm.problem import Evaluation, GridConstraints, OperatingPoint

SHRINK_FACTORS = (0.75, 0.5, 0.25, 0.0)
MAX_WORST_CORNERS = 64


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of checking one band; voltages in pu, loadings in %."""

    passed: bool
    corners: int  # corner schedules checked
    samples: int  # random schedules checked
    failures: int
    v_min_pu: float  # extremes over all checked schedules
    v_max_pu: float
    max_loading_percent: float
    message: str  # the worst failure, or "" when passed
    sample_v_min_pu: np.ndarray  # lowest and highest bus voltage of every random schedule
    sample_v_max_pu: np.ndarray  # (of the one schedule of a zero-width band)
    adjustment: str = ""  # how the published band differs from the first optimised one

    @property
    def schedules(self) -> int:
        return self.corners + self.samples

    def summary(self) -> str:
        """One line, e.g. for the command line report."""
        extremes = (
            f"V {self.v_min_pu:.4f}..{self.v_max_pu:.4f} pu, max loading {self.max_loading_percent:.1f} %"
        )
        checked = f"{self.corners} corner and {self.samples} random schedules in the band"
        if self.passed:
            text = f"passed: {checked} within limits ({extremes})"
        else:
            text = f"FAILED: {self.failures} of {self.schedules} schedules violate limits ({self.message})"
        return f"{text}; {self.adjustment}" if self.adjustment else text


def verify_band(
    constraints: GridConstraints,
    point: OperatingPoint,
    p_min: np.ndarray,
    p_max: np.ndarray,
    samples: int,
    rng: np.random.Generator,
) -> tuple[VerificationReport, Evaluation]:
    """Checks the band; returns the report and the evaluation of all checked schedules
    (corners first)."""
    corners = np.vstack([p_max, p_min, *_worst_corners(constraints, point, p_min, p_max)])
    corners = np.unique(corners, axis=0)
    if not (p_max > p_min).any():
        samples = 0  # a single schedule
    random_schedules = p_min + rng.random((samples, len(p_min))) * (p_max - p_min)
    evaluation = constraints.evaluate(np.vstack([corners, random_schedules]), point)
    failed = ~evaluation.feasible
    message = ""
    if failed.any():
        worst = int(np.argmax(evaluation.violation))
        message = constraints.describe_violations(evaluation, worst)
    report = VerificationReport(
        passed=not failed.any(),
        corners=len(corners),
        samples=samples,
        failures=int(failed.sum()),
        v_min_pu=float(np.nanmin(evaluation.v_min_pu, initial=np.inf)),
        v_max_pu=float(np.nanmax(evaluation.v_max_pu, initial=-np.inf)),
        max_loading_percent=float(np.nanmax(evaluation.max_loading_percent, initial=0.0)),
        message=message,
        sample_v_min_pu=evaluation.v_min_pu[len(corners) :] if samples else evaluation.v_min_pu,
        sample_v_max_pu=evaluation.v_max_pu[len(corners) :] if samples else evaluation.v_max_pu,
    )
    return report, evaluation


def shrink_band(
    constraints: GridConstraints,
    point: OperatingPoint,
    p_min: np.ndarray,
    p_max: np.ndarray,
    evaluation: Evaluation,
    samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, VerificationReport] | None:
    """The widest band that passes when ``[p_min, p_max]`` shrinks towards the schedule of
    ``evaluation`` (its verification) with the largest margin; None if none is feasible."""
    safe = np.flatnonzero(evaluation.feasible)
    if safe.size == 0:
        return None
    margin = np.nanmin(evaluation.margins[safe], axis=1, initial=np.inf)
    anchor = evaluation.x_kw[safe[int(np.argmax(margin))]]
    for factor in SHRINK_FACTORS:
        low = anchor + factor * (p_min - anchor)
        high = anchor + factor * (p_max - anchor)
        report, _ = verify_band(constraints, point, low, high, samples, rng)
        if report.passed:
            how = f"shrunk to {factor:.0%} around" if factor else "reduced to"
            return low, high, replace(report, adjustment=f"published band {how} a verified schedule")
    return None


def margin_sensitivities(constraints, point, low: np.ndarray, high: np.ndarray, relative_step: float):
    """Finite-difference sensitivities of every margin to the flexibilities that may move in
    ``[low, high]``, at its centre: (moving flexibilities, (constraints, moving) per kW, the
    evaluation whose row 0 is the centre), or None if nothing moves or a probe has no solution."""
    width = high - low
    moving = np.flatnonzero(width > 0)
    if moving.size == 0:
        return None
    step = np.maximum(relative_step * width[moving], relative_step)
    probes = np.repeat(((low + high) / 2)[None, :], len(moving) + 1, axis=0)
    probes[np.arange(1, len(moving) + 1), moving] += step
    evaluation = constraints.evaluate(probes, point)
    if not evaluation.converged.all():
        return None
    return moving, (evaluation.margins[1:] - evaluation.margins[0]).T / step, evaluation


def _worst_corners(constraints, point, p_min, p_max) -> np.ndarray:
    """For every limit, the corner that its linearised margin says is worst."""
    width = p_max - p_min
    found = margin_sensitivities(constraints, point, p_min, p_max, 1e-3)
    if found is None:
        return np.zeros((0, len(p_min)))
    moving, sensitivity, evaluation = found
    predicted = evaluation.margins[0] - np.abs(sensitivity) @ width[moving]
    order = np.argsort(predicted)[:MAX_WORST_CORNERS]
    corners = np.repeat(p_min[None, :], len(order), axis=0)
    corners[:, moving] = np.where(sensitivity[order] < 0, p_max[moving], p_min[moving])
    return corners
