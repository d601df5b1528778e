"""The OCM service: every minute, the measured grid state from the chain → bands → chain.

Each cycle (one at start, then a few seconds into every minute):

1. **Registry.** Meters (id → bus) and active flexibilities (bus, hardware bounds,
   priority group) come from ``CommunityRegistry``; a bus must be in the network file.
2. **Operating point.** The network file's loads and generators that are not
   flexibilities are the forecast of every bus. A bus whose meters (those not measuring a
   registered flexibility) all reported within ``stale_after_minutes`` takes the sum of
   their latest readings (P and Q) instead: the meters of a bus are its customers. A bus
   with a missing or stale meter keeps the forecast (documented fallback; the cycle reports
   which meters were stale). Readings come from the ledger's events
   (``Ledger.follow_readings``).
3. **Forecast.** Persistence: the operating point holds for the coming minutes, so one band
   per flexibility is published for ``[next minute, next minute + horizon)``; the next
   cycle overwrites the minutes still ahead with a band from fresher readings.
4. **Bands.** ``OcmProblem.solve`` (verified inside). A feasible band that failed
   verification is never published. When no schedule keeps the grid within limits, the
   zero-width least-violating bands are published (the safest instruction there is) and
   the cycle reports the violation. Bands are rounded to whole watts inwards (P_max down,
   P_min up), so the published band lies inside the verified one.
5. **Status.** With a ``status_file``, the cycle's status for the DSO's view (feasibility,
   publication and why not, bus voltages and branch loadings at the operating point and at
   the band's corners, binding limits; schema in ``ocm.status``) is written after every
   cycle, also one that published nothing or failed. The operating point there has every
   flexibility at its metered power (0 kW without a fresh reading of its meter).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contracts import clock, units
from contracts.client import ChainError, Signer
from contracts.community import Community
from contracts.events import EventFollower
from contracts.ledger import Reading, RecordedReading
from contracts.limits import Band
from ocm.bands import BandResult, OcmProblem
from ocm.flexibility import Flexibility, flexibilities_from_tables, flexible_load_by_bus
from ocm.grid.helm import HelmSolver
from ocm.grid.model import NetworkTables, build_grid
from ocm.problem import GridConstraints, OperatingPoint
from ocm.status import grid_status, status_document, write_status

log = logging.getLogger(__name__)

CYCLE_OFFSET_S = 5  # run this long after each minute starts, when its readings are in
FIRST_LOOKBACK_S = 3_600  # on first start, readings of the last hour of blocks are plenty


@dataclass(frozen=True)
class ServiceSettings:
    objective: str = "sum"
    horizon_minutes: int = 30
    stale_after_minutes: int = 3
    seed: int = 0
    samples: int = 500


@dataclass
class CycleOutcome:
    """What one cycle did."""

    minute: int
    result: BandResult | None
    published: bool
    reason: str
    measured_buses: int = 0
    stale_meters: list[str] = field(default_factory=list)
    bands: list[Band] = field(default_factory=list)
    point: OperatingPoint | None = None  # what OCM does not control
    flexibilities: list[Flexibility] = field(default_factory=list)
    metered_kw: list[float | None] = field(default_factory=list)  # per flexibility; None: no fresh reading
    seconds: float = 0.0


class OcmService:
    """Computes and publishes the bands of one community on one feeder."""

    def __init__(
        self,
        community: Community,
        oracle: Signer,
        tables: NetworkTables,
        settings: ServiceSettings | None = None,
        *,
        status_file: Path | None = None,
    ):
        self.community = community
        self.oracle = oracle
        self.settings = settings or ServiceSettings()
        self.status_file = status_file  # None: no status written
        self.grid = build_grid(tables)
        self._solver = HelmSolver(self.grid)  # factorised once, shared by every OcmProblem
        self._bare: GridConstraints | None = None  # the status's load flows without flexibilities
        own = flexibilities_from_tables(tables, self.grid, allow_none=True)
        self.forecast = OperatingPoint(
            self.grid.base_load_kw - flexible_load_by_bus(tables, self.grid, own),
            self.grid.base_load_kvar.copy(),
        )
        self._latest: dict[str, Reading] = {}
        self._readings: EventFollower[RecordedReading] | None = None
        self._problem: OcmProblem | None = None
        self._previous: BandResult | None = None

    # ----------------------------------------------------------------- inputs

    def registry_view(self) -> tuple[dict[str, int], dict[str, str], list[Flexibility]]:
        """Meters (id → bus), meters that measure a flexibility (id → flexibility id), and the
        active flexibilities."""
        community, energised = self.community, set(self.grid.bus_ids.tolist())
        meters = {}
        for meter_id in community.registry.meter_ids():
            meter = community.registry.meter(meter_id)
            if not meter.active:
                continue
            if meter.bus not in energised:
                log.warning(
                    "meter %s is at bus %d, which the network does not supply; ignored", meter_id, meter.bus
                )
                continue
            meters[meter_id] = meter.bus
        flexibilities, flex_meters = [], {}
        for flex_id in community.registry.flexibility_ids():
            flex = community.registry.flexibility(flex_id)
            if not flex.active:
                continue
            if flex.bus not in energised:
                log.warning(
                    "flexibility %s is at bus %d, which the network does not supply; ignored",
                    flex_id,
                    flex.bus,
                )
                continue
            if flex.meter_id:
                flex_meters[flex.meter_id] = flex_id
            flexibilities.append(
                Flexibility(
                    element="registry",
                    index=len(flexibilities),
                    bus=flex.bus,
                    name=flex_id,  # the band is published under this id
                    p_low_kw=flex.p_low_kw,
                    p_high_kw=flex.p_high_kw,
                    priority_group=flex.priority_group,
                )
            )
        return meters, flex_meters, flexibilities

    def collect_readings(self) -> int:
        """Read the readings recorded since the last call; returns how many were newer
        than what the service knew of their meter."""
        if self._readings is None:
            head = self.community.client.head_block()
            first = max(0, head - FIRST_LOOKBACK_S // max(1, self.community.client.block_interval()))
            self._readings = self.community.ledger.follow_readings(first)
        count = 0
        for recorded in self._readings.poll().items:
            reading = recorded.reading
            known = self._latest.get(reading.meter_id)
            if known is None or reading.time >= known.time:
                self._latest[reading.meter_id] = reading
                count += 1
        return count

    def operating_point(self, now_minute: int, meters: dict[str, int], flex_meters: dict[str, str]):
        """The operating point for ``now_minute`` and the meters that were stale."""
        p, q = self.forecast.p_kw.copy(), self.forecast.q_kvar.copy()
        by_bus: dict[int, list[str]] = {}
        for meter_id, bus in meters.items():
            if meter_id not in flex_meters:
                by_bus.setdefault(bus, []).append(meter_id)
        stale, measured = [], 0
        oldest = clock.minute_start(now_minute - self.settings.stale_after_minutes)
        for bus, bus_meters in by_bus.items():
            readings = [self._latest.get(m) for m in bus_meters]
            late = [m for m, r in zip(bus_meters, readings, strict=True) if r is None or r.time < oldest]
            if late:
                stale.extend(late)
                continue
            position = self.grid.bus_positions([bus])[0]
            p[position] = sum(r.p_kw for r in readings)
            q[position] = sum(r.q_kvar for r in readings)
            measured += 1
        return OperatingPoint(p, q), measured, sorted(stale)

    def metered_flexibility_kw(
        self, now_minute: int, meters: dict[str, int], flex_meters: dict[str, str], flexibilities
    ) -> list[float | None]:
        """Each flexibility's latest reading (P) if its meter reported within
        ``stale_after_minutes``, else None; for the status's operating point only."""
        oldest = clock.minute_start(now_minute - self.settings.stale_after_minutes)
        latest = {}
        for meter_id, flex_id in flex_meters.items():
            reading = self._latest.get(meter_id)
            if meter_id in meters and reading is not None and reading.time >= oldest:
                latest[flex_id] = reading.p_kw
        return [latest.get(flex.name) for flex in flexibilities]

    # ----------------------------------------------------------------- a cycle

    def cycle(self, now_minute: int | None = None) -> CycleOutcome:
        """Compute and publish the bands for the minutes after ``now_minute``; then write the
        status file (if any), whatever the cycle's outcome."""
        started = time.perf_counter()
        if now_minute is None:
            now_minute = clock.minute_of(self.community.client.latest_timestamp())
        outcome = CycleOutcome(now_minute, None, False, "")
        try:
            self._cycle(outcome)
        except Exception as error:
            outcome.reason = f"cycle failed: {type(error).__name__}: {error}"
            raise
        finally:
            outcome.seconds = time.perf_counter() - started
            self._write_status(outcome)
        return outcome

    def _cycle(self, outcome: CycleOutcome) -> None:
        now_minute = outcome.minute
        meters, flex_meters, flexibilities = self.registry_view()
        self.collect_readings()
        point, measured, stale = self.operating_point(now_minute, meters, flex_meters)
        outcome.point, outcome.measured_buses, outcome.stale_meters = point, measured, stale
        outcome.flexibilities = flexibilities
        outcome.metered_kw = self.metered_flexibility_kw(now_minute, meters, flex_meters, flexibilities)
        if not flexibilities:
            outcome.reason = "no active flexibility registered on this feeder"
            return
        self._prepare_problem(flexibilities)
        if stale:
            log.warning(
                "minute %d: stale or missing readings of %s; their buses use the forecast",
                now_minute,
                _some_of(stale),
            )
        s = self.settings
        result = self._problem.solve(point, objective=s.objective, seed=s.seed, warm_start=self._previous)
        outcome.result = result
        if result.feasible and not result.verification.passed:
            outcome.reason = f"band not published: verification failed ({result.verification.summary()})"
            log.error("minute %d: %s", now_minute, outcome.reason)
            return
        self._previous = result
        start = clock.minute_start(now_minute + 1)
        end = clock.minute_start(now_minute + 1 + s.horizon_minutes)
        outcome.bands = [
            Band(flex.name, start, end, *_inward_kw(low, high)) for flex, low, high in result.bands()
        ]
        try:
            self.community.limits.publish_bands(self.oracle, outcome.bands)
        except ChainError as error:
            outcome.reason = f"publishing failed: {error}"
            log.error("minute %d: %s", now_minute, outcome.reason)
            return
        outcome.published = True
        outcome.reason = (
            "published" if result.feasible else f"published least-violating bands: {result.message}"
        )
        level = logging.INFO if result.feasible else logging.WARNING
        log.log(
            level,
            "minute %d: %s bands for %d flexibilities (%d measured buses, %.2f s)",
            now_minute,
            "feasible" if result.feasible else "INFEASIBLE",
            len(outcome.bands),
            measured,
            result.seconds,
        )

    def status(self, outcome: CycleOutcome) -> dict:
        """The status document of ``outcome`` (``ocm.status``): three load flows in one batched
        HELM call (the operating point and both corners of the band), or one without a band."""
        result, band, grid = outcome.result, None, None
        if outcome.bands:  # as published, or as it would have been (in flexibility order)
            band = ([b.p_min_kw for b in outcome.bands], [b.p_max_kw for b in outcome.bands])
        elif result is not None:
            band = (result.p_min_kw.tolist(), result.p_max_kw.tolist())
        if outcome.point is not None:  # corners: the verified band (published: inside it by < 1 W)
            now_kw = np.array([0.0 if kw is None else kw for kw in outcome.metered_kw])
            corners = None if result is None else (result.p_min_kw, result.p_max_kw)
            grid = grid_status(self._constraints(outcome.flexibilities), outcome.point, now_kw, corners)
        return status_document(
            minute=outcome.minute,
            computed_at=time.time(),
            seconds=outcome.seconds,
            published=outcome.published,
            reason=outcome.reason,
            objective=self.settings.objective,
            measured_buses=outcome.measured_buses,
            stale_meters=outcome.stale_meters,
            flexibilities=outcome.flexibilities,
            p_kw=outcome.metered_kw,
            band=band,
            result=result,
            grid=grid,
        )

    def run(self, stop: threading.Event) -> None:
        """A cycle at once (bands from the first minute on), then one a few seconds into
        every minute, until ``stop`` is set."""
        self._guarded_cycle()
        while not stop.is_set():
            if stop.wait(clock.seconds_to_next_minute(time.time(), CYCLE_OFFSET_S)):
                return
            self._guarded_cycle()

    def _guarded_cycle(self) -> None:
        try:
            self.cycle()
        except Exception:  # one bad minute must not end the service
            log.exception("OCM cycle failed")

    # ---------------------------------------------------------------- internals

    def _write_status(self, outcome: CycleOutcome) -> None:
        """Writes the status file; a failure is logged and never ends the cycle."""
        if self.status_file is None:
            return
        started = time.perf_counter()
        try:
            write_status(self.status_file, self.status(outcome))
        except Exception:
            log.exception("minute %d: could not write the OCM status to %s", outcome.minute, self.status_file)
            return
        seconds = time.perf_counter() - started
        log.debug(
            "minute %d: status written in %.4f s (cycle %.3f s)", outcome.minute, seconds, outcome.seconds
        )

    def _constraints(self, flexibilities: list[Flexibility]) -> GridConstraints:
        """The current problem's constraints (limits, solver) if they are for ``flexibilities``."""
        if self._problem is not None and self._problem.flexibilities == tuple(flexibilities):
            return self._problem.constraints
        if flexibilities:  # not reached by ``cycle``, which prepares the problem first
            return GridConstraints(self.grid, tuple(flexibilities), solver=self._solver)
        if self._bare is None:
            self._bare = GridConstraints(self.grid, (), solver=self._solver)
        return self._bare

    def _prepare_problem(self, flexibilities: list[Flexibility]) -> None:
        definitions = tuple(flexibilities)
        if self._problem is None or definitions != self._problem.flexibilities:
            self._problem = OcmProblem(
                self.grid, definitions, samples=self.settings.samples, solver=self._solver
            )
            self._previous = None
            names = ", ".join(flex.name for flex in definitions)
            log.info("OCM set up for %d flexibilities: %s", len(definitions), names)


def _inward_kw(p_min_kw: float, p_max_kw: float) -> tuple[float, float]:
    """The band in whole watts, rounded inwards, back in kW."""
    low_w, high_w = units.kw_band_to_w_inward(p_min_kw, p_max_kw)
    return units.w_to_kw(low_w), units.w_to_kw(high_w)


def _some_of(names: list[str], shown: int = 8) -> str:
    """``"3 meters: A, B, C"``, or the first ``shown`` names and how many more."""
    listed = ", ".join(names[:shown])
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} meter{'s' if len(names) != 1 else ''}: {listed}{more}"
