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
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from contracts import clock, units
from contracts.client import ChainError, Signer
from contracts.community import Community
from contracts.events import EventFollower
from contracts.ledger import Reading, RecordedReading
from contracts.limits import Band
from ocm.bands import BandResult, OcmProblem
from ocm.flexibility import Flexibility, flexibilities_from_tables, flexible_load_by_bus
from ocm.grid.model import NetworkTables, build_grid
from ocm.problem import OperatingPoint

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


class OcmService:
    """Computes and publishes the bands of one community on one feeder."""

    def __init__(
        self,
        community: Community,
        oracle: Signer,
        tables: NetworkTables,
        settings: ServiceSettings | None = None,
    ):
        self.community = community
        self.oracle = oracle
        self.settings = settings or ServiceSettings()
        self.grid = build_grid(tables)
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

    def registry_view(self) -> tuple[dict[str, int], set[str], list[Flexibility]]:
        """Meters (id → bus), meters that measure a flexibility, and the active flexibilities."""
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
        flexibilities, flex_meters = [], set()
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
                flex_meters.add(flex.meter_id)
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

    def operating_point(self, now_minute: int, meters: dict[str, int], flex_meters: set[str]):
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

    # ----------------------------------------------------------------- a cycle

    def cycle(self, now_minute: int | None = None) -> CycleOutcome:
        """Compute and publish the bands for the minutes after ``now_minute``."""
        if now_minute is None:
            now_minute = clock.minute_of(self.community.client.latest_timestamp())
        meters, flex_meters, flexibilities = self.registry_view()
        if not flexibilities:
            return CycleOutcome(now_minute, None, False, "no active flexibility registered on this feeder")
        self._prepare_problem(flexibilities)
        self.collect_readings()
        point, measured, stale = self.operating_point(now_minute, meters, flex_meters)
        if stale:
            log.warning(
                "minute %d: stale or missing readings of %s; their buses use the forecast",
                now_minute,
                _some_of(stale),
            )
        s = self.settings
        result = self._problem.solve(point, objective=s.objective, seed=s.seed, warm_start=self._previous)
        outcome = CycleOutcome(now_minute, result, False, "", measured, stale)
        if result.feasible and not result.verification.passed:
            outcome.reason = f"band not published: verification failed ({result.verification.summary()})"
            log.error("minute %d: %s", now_minute, outcome.reason)
            return outcome
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
            return outcome
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
        return outcome

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

    def _prepare_problem(self, flexibilities: list[Flexibility]) -> None:
        definitions = tuple(flexibilities)
        if self._problem is None or definitions != self._problem.flexibilities:
            self._problem = OcmProblem(self.grid, definitions, samples=self.settings.samples)
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
