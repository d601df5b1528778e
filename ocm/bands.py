"""Optimal capacity management: bands ``[P_min, P_max]`` per flexibility for one time step.

A band is a box: every flexibility may run anywhere in its own interval, independently of the
others. With the monotone physics of a radial feeder (more consumption anywhere lowers every
voltage and raises every flow towards the feeder end) the box is safe iff its two corners are,
all at ``P_max`` and all at ``P_min``. So OCM solves two problems per priority group (Rao et
al. 2021, Eq. 2-5, plus the thermal limits of Eq. 8):

1. the max problem: maximise the objective with the ``P_max`` corner within all limits;
2. the min problem: minimise it, with every flexibility at most its ``P_max``, so the
   ``P_max`` corner is a feasible start and ``P_min <= P_max`` always.

Priority groups (Eq. 15-16; lower number first) are solved one after the other in each
problem. While group g is solved, groups before it sit at their solved corner and groups after
it are free within their limits (hardware limits in the max problem, ``[P_low, P_max]`` in the
min problem) but do not count in the objective: a group gets the most it can, the later ones
stand where that is possible (usually their relieving limit) and get what is left. Each solve
starts from the previous one's feasible point, so once the first is feasible all are.

If no schedule within the hardware limits keeps the grid within its limits, the result is
infeasible and every flexibility gets the zero-width band at the least-violating schedule,
with the remaining violation described. Every band is verified (``ocm.verification``) before
it is returned; if a schedule inside it breaks a limit, that limit is tightened by the excess
and the problems are solved again (up to ``TIGHTENING_ROUNDS`` times), and failing that the
band is shrunk until it passes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ocm.flexibility import Flexibility
from ocm.grid.helm import HelmSolver
from ocm.grid.helm_3ph import Helm3phSolver
from ocm.grid.model import Grid
from ocm.grid.three_phase import Grid3ph
from ocm.objectives import OBJECTIVES, Objective
from ocm.optimizer import AIM_MARGIN, GaSettings, Subproblem, optimise
from ocm.phase_constraints import CornerPatterns, CornerView, PhaseConstraints
from ocm.problem import GridConstraints, Limits, OperatingPoint
from ocm.verification import VerificationReport, shrink_band, verify_band

DEFAULT_SAMPLES = 500
TIGHTENING_ROUNDS = 3
ZERO_WIDTH_KW = 1e-9


@dataclass(frozen=True)
class BandResult:
    """Bands of one time step; powers in kW, load convention, in ``flexibilities`` order."""

    feasible: bool
    flexibilities: tuple[Flexibility, ...]
    p_min_kw: np.ndarray
    p_max_kw: np.ndarray
    objective: str
    v_min_pu_at_pmax: float  # lowest bus voltage with every flexibility at P_max
    v_max_pu_at_pmin: float  # highest bus voltage with every flexibility at P_min
    max_loading_percent: float  # highest line or trafo loading at either corner
    violation: float  # 0 if feasible; else the least-violating schedule's summed violation
    message: str  # why infeasible, or how verification changed the band; "" otherwise
    verification: VerificationReport
    seconds: float
    load_flows: int
    solutions: dict = field(default_factory=dict, repr=False)  # per (problem, group): warm starts

    def bands(self) -> list[tuple[Flexibility, float, float]]:
        """(flexibility, P_min, P_max) of every flexibility, in order."""
        return [
            (flex, float(low), float(high))
            for flex, low, high in zip(self.flexibilities, self.p_min_kw, self.p_max_kw, strict=True)
        ]

    def to_json_dict(self) -> dict:
        """The ``lec ocm --json`` document."""
        return {
            "feasible": self.feasible,
            "flexibilities": [
                {
                    "element": f.element,
                    "index": f.index,
                    "bus": f.bus,
                    "name": f.name,
                    "phase": f.phase,
                    "p_min_kw": float(low),
                    "p_max_kw": float(high),
                }
                for f, low, high in zip(self.flexibilities, self.p_min_kw, self.p_max_kw, strict=True)
            ],
            "v_min_pu_at_pmax": _finite_or_none(self.v_min_pu_at_pmax),
            "v_max_pu_at_pmin": _finite_or_none(self.v_max_pu_at_pmin),
            "max_loading_percent": _finite_or_none(self.max_loading_percent),
            "seconds": self.seconds,
        }


class OcmProblem:
    """OCM for one grid and its flexibilities: set up once, then ``solve`` every time step.

    ``limits`` default to the grid's (``Limits.from_grid``); ``samples`` is the number of random
    in-band schedules that verify each band.
    """

    def __init__(
        self,
        grid: Grid | Grid3ph,
        flexibilities: tuple[Flexibility, ...],
        limits: Limits | None = None,
        *,
        settings: GaSettings | None = None,
        samples: int = DEFAULT_SAMPLES,
        solver: HelmSolver | Helm3phSolver | None = None,
    ):
        if not flexibilities:
            raise ValueError("OCM needs at least one flexibility")
        self.grid = grid
        self.flexibilities = tuple(flexibilities)
        if isinstance(grid, Grid3ph):  # unbalanced: per-phase load flow and limits
            self.constraints = PhaseConstraints(grid, self.flexibilities, limits, solver)
        else:
            self.constraints = GridConstraints(grid, self.flexibilities, limits, solver)
        self.settings = settings or GaSettings()
        self.samples = samples
        self.p_low_kw = np.array([f.p_low_kw for f in self.flexibilities])
        self.p_high_kw = np.array([f.p_high_kw for f in self.flexibilities])
        group = np.array([f.priority_group for f in self.flexibilities])
        self._groups = [np.flatnonzero(group == g) for g in sorted(set(group.tolist()))]
        self._group_of = group

    @property
    def limits(self) -> Limits:
        return self.constraints.limits

    def solve(
        self,
        point: OperatingPoint,
        *,
        objective: str = "sum",
        seed: int = 0,
        warm_start: BandResult | None = None,
        p_low_kw=None,
        p_high_kw=None,
    ) -> BandResult:
        """Bands for the operating point ``point`` (what OCM does not control).

        ``p_low_kw``/``p_high_kw`` override the flexibilities' hardware limits for this step
        (e.g. a PV inverter's available power); ``warm_start`` is the previous step's result.
        The result depends only on the inputs (the warm start included) and ``seed``.
        """
        started, flows = time.perf_counter(), self.constraints.load_flows
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        self.constraints.check_point(point)
        low, high = self._hardware_limits(p_low_kw, p_high_kw)
        step = _Step(
            point=point,
            objective=objective,
            low=low,
            high=high,
            rng=np.random.default_rng(seed),
            tightening=np.zeros(self.constraints.n_constraints),
            warm=warm_start.solutions if self._fits(warm_start) else {},
        )
        if isinstance(self.constraints, PhaseConstraints):  # per phase, corners are not the worst
            step.corner_patterns = self.constraints.corner_patterns(point, low, high)
        attempt = None  # the last optimised band: p_min, p_max, its verification and evaluation
        first_failure = ""
        for _ in range(TIGHTENING_ROUNDS + 1):
            step.solutions = {}
            p_max, least_violating = self._max_phase(step)
            if least_violating is not None and step.corner_patterns is not None:
                # no P_max safe with every other side at its worst: the two plain corners, then
                # verification and tightening, as for balanced grids
                step.corner_patterns = None
                p_max, least_violating = self._max_phase(step)
            if least_violating is not None:
                break
            p_min = self._min_phase(step, p_max)
            report, evaluation = verify_band(self.constraints, point, p_min, p_max, self.samples, step.rng)
            attempt = (p_min, p_max, report, evaluation)
            excess = np.max(np.clip(np.nan_to_num(-evaluation.margins), 0, None), axis=0)
            if report.passed or not excess.any():
                break
            first_failure = first_failure or report.message
            step.tightening = step.tightening + np.where(excess > 0, excess + AIM_MARGIN, 0.0)
            step.warm = step.solutions
        if attempt is None:
            result = self._infeasible(step, least_violating)
        else:
            result = self._published(step, *attempt, first_failure)
        return replace(
            result,
            seconds=time.perf_counter() - started,
            load_flows=self.constraints.load_flows - flows,
            solutions=step.solutions,
        )

    def _fits(self, warm_start: BandResult | None) -> bool:
        """Whether ``warm_start`` is a result for these flexibilities."""
        return warm_start is not None and warm_start.flexibilities == self.flexibilities

    def _published(self, step, p_min, p_max, report, evaluation, first_failure) -> BandResult:
        """The verified band, tightened or shrunk if the optimised one failed verification."""
        if report.passed and step.tightening.any():
            tightened = self.constraints.describe_tightening(step.tightening)
            report = replace(
                report,
                adjustment=f"limits tightened after schedules inside the first band exceeded them "
                f"({first_failure}): {tightened}",
            )
        elif not report.passed:
            shrunk = shrink_band(
                self.constraints, step.point, p_min, p_max, evaluation, self.samples, step.rng
            )
            if shrunk is None:
                return self._infeasible(step, p_max)
            p_min, p_max, report = shrunk
            adjustment = f"the optimised band failed verification ({first_failure}); {report.adjustment}"
            report = replace(report, adjustment=adjustment)
        return self._result(step, True, p_min, p_max, 0.0, report.adjustment, report)

    def _infeasible(self, step, schedule) -> BandResult:
        """Zero-width bands at the least-violating ``schedule``, with its violation."""
        report, evaluation = verify_band(self.constraints, step.point, schedule, schedule, 0, step.rng)
        message = (
            "no schedule within the flexibilities' hardware limits keeps the grid within its "
            f"limits; least-violating schedule (published as zero-width bands): {report.message}"
        )
        return self._result(step, False, schedule, schedule, float(evaluation.violation[0]), message, report)

    def _result(self, step, feasible, p_min, p_max, violation, message, report) -> BandResult:
        corners = self.constraints.evaluate(np.vstack([p_max, p_min]), step.point)
        return BandResult(
            feasible=feasible,
            flexibilities=self.flexibilities,
            p_min_kw=p_min,
            p_max_kw=p_max,
            objective=step.objective,
            v_min_pu_at_pmax=float(corners.v_min_pu[0]),
            v_max_pu_at_pmin=float(corners.v_max_pu[1]),
            max_loading_percent=float(np.nanmax(corners.max_loading_percent)),
            violation=violation,
            message=message,
            verification=report,
            seconds=0.0,
            load_flows=0,
        )

    def _max_phase(self, step) -> tuple[np.ndarray, np.ndarray | None]:
        """P_max per flexibility, and the least-violating schedule if nothing is feasible."""
        p_max = step.low.copy()
        chain = None
        for g, members in enumerate(self._groups):
            free = self._free(members, step.high - step.low)
            if not np.isin(members, free).any():
                continue
            sub = self._subproblem(step, +1, p_max, free, step.high, members)
            solution = optimise(sub, self.settings, [step.warm.get(("max", g)), chain], step.rng)
            step.solutions[("max", g)] = solution.x_kw
            if not solution.feasible:
                return p_max, solution.x_kw
            p_max[members] = solution.x_kw[members]
            chain = solution.x_kw
        if chain is None and not self.constraints.evaluate(p_max, step.point, step.tightening).feasible[0]:
            return p_max, p_max
        return p_max, None

    def _min_phase(self, step, p_max: np.ndarray) -> np.ndarray:
        """P_min per flexibility, solving from the feasible P_max corner."""
        current = p_max.copy()
        for g, members in enumerate(self._groups):
            free = self._free(members, p_max - step.low)
            if not np.isin(members, free).any():
                continue
            sub = self._subproblem(step, -1, current, free, p_max, members)
            solution = optimise(sub, self.settings, [step.warm.get(("min", g)), current], step.rng)
            step.solutions[("min", g)] = solution.x_kw
            if solution.feasible:  # always, as ``current`` is a feasible seed
                current = solution.x_kw
        return current

    def _free(self, members: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Flexibilities of the members' group and later groups with room to move."""
        later = self._group_of >= self._group_of[members[0]]
        return np.flatnonzero(later & (width > ZERO_WIDTH_KW))

    def _subproblem(self, step, direction, base, free, high, members) -> Subproblem:
        members = members[np.isin(members, free)]
        objective = Objective(step.objective, direction, members, step.low[members], step.high[members])
        constraints = self.constraints
        if step.corner_patterns is not None:  # each limit at its own worst corner of the band
            other = step.low if direction > 0 else high
            constraints = CornerView(self.constraints, step.corner_patterns, direction, other)
        return Subproblem(
            constraints=constraints,
            point=step.point,
            base_kw=base.copy(),
            free=free,
            low_kw=step.low[free],
            high_kw=high[free],
            objective=objective,
            tightening=step.tightening,
        )

    def _hardware_limits(self, p_low_kw, p_high_kw) -> tuple[np.ndarray, np.ndarray]:
        low = self.p_low_kw if p_low_kw is None else np.asarray(p_low_kw, dtype=float)
        high = self.p_high_kw if p_high_kw is None else np.asarray(p_high_kw, dtype=float)
        n = len(self.flexibilities)
        if low.shape != (n,) or high.shape != (n,):
            raise ValueError(f"p_low_kw and p_high_kw must have one value per flexibility ({n})")
        for f, a, b in zip(self.flexibilities, low, high, strict=True):
            if not (math.isfinite(a) and math.isfinite(b) and a <= b):
                raise ValueError(f"{f.key} ({f.label}): hardware limits [{a}, {b}] kW are not an interval")
        return low.copy(), high.copy()


@dataclass
class _Step:
    """What one ``solve`` works with: its inputs, limits tightened so far, warm starts and the
    solutions of every (problem, group) for the next step's warm start."""

    point: OperatingPoint
    objective: str
    low: np.ndarray
    high: np.ndarray
    rng: np.random.Generator
    tightening: np.ndarray
    warm: dict
    solutions: dict = field(default_factory=dict)
    corner_patterns: CornerPatterns | None = None  # three-phase: limits' own worst corners


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
