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
3. **Forecast.** Every minute's measured bus loads go into a history (``ocm.history``, at
   most 8 days in memory) from which ``ocm.forecast`` learns a forecast and its error
   envelope (refitted every ``refit_minutes``): persistence with learnt errors at first,
   daily profile plus the latest deviation once two days are known. The band is computed
   for every state in the envelope of ``[next minute, next minute + horizon)`` (joint
   coverage ``probability`` on the history) and published for that interval; until the
   history can teach errors (``horizon + 2`` minutes) the measured point is held
   (persistence, no envelope) and the status says so. With ``safety_price`` the band of the
   central forecast alone is computed too, and the capacity the envelope costs (Σ width
   lost, kW) is logged and reported.
   **Re-publication.** Bands published from an envelope hold while the measured state
   stays inside it, so a cycle publishes again only when needed: the measured load of some
   bus left the envelope, the devices' availability changed, fewer than
   ``refresh_minutes`` of the published horizon are left, the flexibilities changed, or the
   last bands had no envelope (held point) or were infeasible (then every minute, as
   before). The minute already running never changes; the next minutes are overwritten.
4. **Bands.** ``OcmProblem.solve`` (verified inside), within the hardware limits narrowed
   by the devices' reported states (``device_states``: EVs by plug state and energy need,
   batteries by state of charge; ``ocm.availability``) so that no band relies on a device
   that cannot follow it. A feasible band that failed
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from contracts import clock, units
from contracts.client import ChainError, Signer
from contracts.community import Community
from contracts.events import EventFollower
from contracts.ledger import Reading, RecordedReading
from contracts.limits import Band
from ocm.availability import DeviceState, availability_limits
from ocm.bands import BandResult, OcmProblem
from ocm.devices import DEFAULT_MAX_AGE_S, DeviceTracker, Report
from ocm.flexibility import Flexibility, flexibilities_from_tables, flexible_load_by_bus
from ocm.forecast import Forecast, ForecastModel, persistence
from ocm.grid.errors import NetworkError
from ocm.grid.helm import HelmSolver
from ocm.grid.helm_3ph import Helm3phSolver
from ocm.grid.model import NetworkTables, build_grid
from ocm.grid.three_phase import build_grid_3ph
from ocm.history import MINUTES_PER_DAY, BusHistory
from ocm.phase_constraints import PhaseConstraints
from ocm.phase_loads import balanced_phase_loads, bus_phase_loads
from ocm.problem import GridConstraints, OperatingPoint
from ocm.status import grid_status, status_document, write_status

log = logging.getLogger(__name__)

CYCLE_OFFSET_S = 5  # run this long after each minute starts, when its readings are in
FIRST_LOOKBACK_S = 3_600  # on first start, readings of the last hour of blocks are plenty
DEVICE_LOOKBACK_S = DEFAULT_MAX_AGE_S  # older device reports are stale anyway


@dataclass(frozen=True)
class ServiceSettings:
    objective: str = "sum"
    horizon_minutes: int = 30
    stale_after_minutes: int = 3
    seed: int = 0
    samples: int = 500
    probability: float = 0.99  # joint coverage of the forecast envelope the bands must hold for
    refit_minutes: int = 60
    safety_price: bool = True  # also solve for the central forecast, to report the envelope's cost
    refresh_minutes: int = 15  # publish again when fewer minutes of the published horizon are left


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
    phase_point: OperatingPoint | None = None  # three-phase: the same per bus and phase
    flexibilities: list[Flexibility] = field(default_factory=list)
    metered_kw: list[float | None] = field(default_factory=list)  # per flexibility; None: no fresh reading
    seconds: float = 0.0
    forecast: Forecast | None = None  # what the band was computed for
    safety_kw: float | None = None  # Σ band width the envelope cost against the central forecast
    left_envelope: list[int] = field(default_factory=list)  # buses outside the last forecast's envelope


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
        device_states: Callable[[], Mapping[str, DeviceState]] | None = None,
        meter_phases: Mapping[str, str] | None = None,
        three_phase: bool | None = None,
    ):
        self.community = community
        self.oracle = oracle
        self.settings = settings or ServiceSettings()
        self.status_file = status_file  # None: no status written
        self.device_states = device_states  # flex id → state; None: the owners' reports on chain
        self.devices = DeviceTracker()
        self._device_reports = None  # EventFollower of DeviceStates reports, from the first cycle
        self._kinds: dict[str, str] = {}  # flex id → "battery", "ev_charger", ...
        self._flex_meters: dict[str, str] = {}  # meter id → flex id
        self.meter_phases = dict(meter_phases or {})
        grid3 = _three_phase_grid(tables, self.meter_phases, three_phase)
        self.grid = build_grid(tables) if grid3 is None else grid3.balanced
        own = flexible_load_by_bus(
            tables, self.grid, flexibilities_from_tables(tables, self.grid, allow_none=True)
        )
        if grid3 is None:
            self.grid3 = None
            self.forecast = OperatingPoint(self.grid.base_load_kw - own, self.grid.base_load_kvar.copy())
            self._phase_forecast = balanced_phase_loads(self.forecast.p_kw, self.forecast.q_kvar)
        else:  # the network file's loads per phase (a flexibility's own load was spread evenly)
            self.grid3, wye_kw, wye_kvar = _delta_as_wye(grid3)
            self._phase_forecast = (wye_kw - own[:, None] / 3, wye_kvar)
            self.forecast = OperatingPoint(wye_kw.sum(axis=1) - own, wye_kvar.sum(axis=1))
        # factorised once, shared by every OcmProblem
        self._solver = HelmSolver(self.grid) if self.grid3 is None else Helm3phSolver(self.grid3)
        self._bare: GridConstraints | None = None  # the status's load flows without flexibilities
        self._latest: dict[str, Reading] = {}
        # the measured loads per bus, or, three-phase, per bus and phase (bus-major columns)
        self.history = BusHistory(self.grid.n_bus * (1 if self.grid3 is None else 3))
        self._measured = np.zeros(self.grid.n_bus, dtype=bool)  # buses measured this cycle
        self._model: ForecastModel | None = None
        self._fitted_minute: int | None = None
        self._last_forecast: Forecast | None = None
        self._publication: _Publication | None = None  # the bands in force
        self._readings: EventFollower[RecordedReading] | None = None
        self._problem: OcmProblem | None = None
        self._previous: BandResult | None = None
        # Per-phase bus loads (n_bus, 3; a, b, c) of the last operating point, for the three-phase
        # OCM (ocm.phase_loads); meter_phases: meter id → "a", "b", "c" for single-phase meters.
        self.p_phase_kw, self.q_phase_kvar = (values.copy() for values in self._phase_forecast)

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
            self._kinds[flex_id] = flex.kind.name.lower()
            flexibilities.append(
                Flexibility(
                    element="registry",
                    index=len(flexibilities),
                    bus=flex.bus,
                    name=flex_id,  # the band is published under this id
                    p_low_kw=flex.p_low_kw,
                    p_high_kw=flex.p_high_kw,
                    priority_group=flex.priority_group,
                    phase=self.meter_phases.get(flex.meter_id, "abc") if flex.meter_id else "abc",
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
            flex_id = self._flex_meters.get(reading.meter_id)
            if flex_id is not None:  # a device's own meter: its energy since its last report
                self.devices.metered(flex_id, reading.time, reading.p_kw)
        return count

    def collect_device_reports(self) -> int:
        """Read the device reports recorded since the last call (``DeviceStates``); returns
        how many. A deployment without that contract has none."""
        devices = getattr(self.community, "devices", None)
        if devices is None:
            return 0
        if self._device_reports is None:
            self._device_reports = devices.follow_reports(self._first_block())
        items = self._device_reports.poll().items
        for report in items:
            kind = self._kinds.get(report.flex_id, "other")
            self.devices.report(
                report.flex_id,
                kind,
                Report(
                    report.time,
                    report.plugged,
                    report.energy_need_kwh,
                    report.stored_kwh,
                    report.capacity_kwh,
                    report.reserve_kwh,
                ),
            )
        return len(items)

    def _first_block(self) -> int:
        head = self.community.client.head_block()
        return max(0, head - DEVICE_LOOKBACK_S // max(1, self.community.client.block_interval()))

    def operating_point(self, now_minute: int, meters: dict[str, int], flex_meters: dict[str, str]):
        """The operating point for ``now_minute`` and the meters that were stale."""
        p, q = self.forecast.p_kw.copy(), self.forecast.q_kvar.copy()
        self.p_phase_kw, self.q_phase_kvar = (values.copy() for values in self._phase_forecast)
        self._measured = np.zeros(self.grid.n_bus, dtype=bool)
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
            self.p_phase_kw[position], self.q_phase_kvar[position] = bus_phase_loads(
                readings, self.meter_phases
            )
            measured += 1
            self._measured[position] = True
        return OperatingPoint(p, q), measured, sorted(stale)

    def forecast_for(self, now_minute: int, point: OperatingPoint) -> Forecast:
        """Records the measured point and forecasts the horizon after ``now_minute``: with the
        learnt envelope once the history allows, else the point held (no envelope)."""
        s = self.settings
        values, measured = self._columns(point)
        self.history.record(now_minute, values, measured)
        due = self._fitted_minute is None or now_minute - self._fitted_minute >= s.refit_minutes
        if due and len(self.history) >= s.horizon_minutes + 2:
            self._model = ForecastModel.fit(
                self.history.table(self._network_forecast()),
                steps_per_day=MINUTES_PER_DAY,
                horizon=s.horizon_minutes,
                probability=s.probability,
                first_step_of_day=self.history.first_minute % MINUTES_PER_DAY,
                stride=max(1, len(self.history) // 2000),
            )
            self._fitted_minute = now_minute
            log.info(
                "minute %d: forecast (%s) learnt from %d minutes; envelope covers %.1f %% of them",
                now_minute,
                self._model.method,
                len(self.history),
                100 * self._model.coverage,
            )
        if self._model is None:
            return persistence(values, s.horizon_minutes)
        return self._model.forecast(values, now_minute % MINUTES_PER_DAY)

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
            # the community clock, or the chain's newest block if that is ahead (the block may lag
            # by its period: bands from the minute after the block's would start in the past)
            now_minute = clock.minute_of(max(clock.now(), self.community.client.latest_timestamp()))
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
        now_minute = self._minute = outcome.minute
        meters, flex_meters, flexibilities = self.registry_view()
        self._flex_meters = flex_meters
        self.collect_device_reports()
        self.collect_readings()
        point, measured, stale = self.operating_point(now_minute, meters, flex_meters)
        outcome.point, outcome.measured_buses, outcome.stale_meters = point, measured, stale
        if self.grid3 is not None:
            outcome.phase_point = OperatingPoint(self.p_phase_kw.copy(), self.q_phase_kvar.copy())
        if self._last_forecast is not None:
            outcome.left_envelope = self._left_envelope(point)
        forecast = outcome.forecast = self.forecast_for(now_minute, point)
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
        scenarios = self._for_problem(forecast.point(self._columns(point, reactive=True)[0]))
        low, high = self._device_limits(flexibilities)
        why = self._republish_reason(now_minute, flexibilities, low, high, outcome.left_envelope)
        if why is None:
            held = self._publication
            outcome.result, outcome.bands, outcome.forecast = held.result, held.bands, held.forecast
            outcome.reason = (
                f"bands published at minute {held.minute} hold until minute {held.until_minute} "
                "(the measured load is inside their forecast envelope)"
            )
            log.info("minute %d: %s", now_minute, outcome.reason)
            return
        log.info("minute %d: computing bands: %s", now_minute, why)
        result = self._problem.solve(
            scenarios,
            objective=s.objective,
            seed=s.seed,
            warm_start=self._previous,
            p_low_kw=low,
            p_high_kw=high,
        )
        outcome.result = result
        if s.safety_price and scenarios.scenarios > 1 and result.feasible:
            central = self._problem.solve(
                self._for_problem(forecast.central_point(self._columns(point, reactive=True)[0])),
                objective=s.objective,
                seed=s.seed,
                p_low_kw=low,
                p_high_kw=high,
            )
            outcome.safety_kw = float(
                np.sum(central.p_max_kw - central.p_min_kw - result.p_max_kw + result.p_min_kw)
            )
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
        self._last_forecast = forecast
        self._publication = _Publication(
            now_minute,
            now_minute + s.horizon_minutes,
            tuple(flexibilities),
            low,
            high,
            result,
            outcome.bands,
            forecast,
        )
        outcome.reason = (
            "published" if result.feasible else f"published least-violating bands: {result.message}"
        )
        level = logging.INFO if result.feasible else logging.WARNING
        log.log(
            level,
            "minute %d: %s bands for %d flexibilities (%d measured buses, forecast %s%s, %.2f s)",
            now_minute,
            "feasible" if result.feasible else "INFEASIBLE",
            len(outcome.bands),
            measured,
            forecast.method if forecast.probability > 0 else "held, no error model yet",
            "" if outcome.safety_kw is None else f", safety costs {outcome.safety_kw:.1f} kW of band",
            result.seconds,
        )

    def _republish_reason(self, now_minute, flexibilities, low, high, left_envelope) -> str | None:
        """Why bands must be computed and published this minute; None: the published ones hold."""
        held = self._publication
        if held is None or held.flexibilities != tuple(flexibilities):
            return "first bands for these flexibilities"
        if held.forecast.probability <= 0:
            return "no error model yet: the measured point is held, so bands follow it every minute"
        if not held.result.feasible:
            return "the last bands were least-violating ones"
        if left_envelope:
            return f"the measured load of {len(left_envelope)} buses left the forecast envelope"
        if not (_same(low, held.low) and _same(high, held.high)):
            return "the devices' availability changed"
        if held.until_minute - now_minute < self.settings.refresh_minutes:
            return f"fewer than {self.settings.refresh_minutes} minutes of the published horizon are left"
        return None

    def _device_limits(self, flexibilities: list[Flexibility]):
        """Hardware limits narrowed by the reported device states (None, None without any)."""
        if self.device_states is not None:
            states = self.device_states()
        else:
            states = self.devices.states(int(clock.minute_start(self._minute)))
        if not states:
            return None, None
        horizon_h = self.settings.horizon_minutes / 60
        return availability_limits(flexibilities, states, horizon_h)

    def _left_envelope(self, point: OperatingPoint) -> list[int]:
        """Buses whose measured load left the last published forecast's envelope (logged)."""
        forecast = self._last_forecast
        if forecast.probability <= 0:
            return []
        values, measured = self._columns(point)
        columns = forecast.outside(np.where(measured, values, np.nan))
        per_column = 1 if self.grid3 is None else 3  # three-phase: a bus has three columns
        buses = [int(self.grid.bus_ids[k]) for k in np.unique(columns // per_column)]
        if buses:
            log.warning(
                "the measured load of %d buses left the forecast envelope (e.g. bus %s); the bands "
                "ahead are recomputed from it now",
                len(buses),
                buses[0],
            )
        return buses

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
            point = outcome.point if outcome.phase_point is None else outcome.phase_point
            grid = grid_status(self._constraints(outcome.flexibilities), point, now_kw, corners)
        return status_document(
            minute=outcome.minute,
            computed_at=clock.now(),
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
            forecast=_forecast_status(outcome),
        )

    def run(self, stop: threading.Event) -> None:
        """A cycle at once (bands from the first minute on), then one a few seconds into
        every minute, until ``stop`` is set."""
        self._guarded_cycle()
        while not stop.is_set():
            if stop.wait(clock.real_seconds_to_next_minute(CYCLE_OFFSET_S)):
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
            return self._new_constraints(tuple(flexibilities))
        if self._bare is None:
            self._bare = self._new_constraints(())
        return self._bare

    def _new_constraints(self, flexibilities: tuple[Flexibility, ...]) -> GridConstraints:
        if self.grid3 is None:
            return GridConstraints(self.grid, flexibilities, solver=self._solver)
        return PhaseConstraints(self.grid3, flexibilities, solver=self._solver)

    def _network_forecast(self) -> np.ndarray:
        """The network file's load in the history's columns (for minutes not measured)."""
        return self.forecast.p_kw if self.grid3 is None else self._phase_forecast[0].ravel()

    def _columns(self, point: OperatingPoint, reactive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """What the history and the forecast work on, and which of it was measured: the
        point's load per bus, or, three-phase, the measured phases per bus and phase."""
        if self.grid3 is None:
            return (point.q_kvar if reactive else point.p_kw), self._measured
        values = self.q_phase_kvar if reactive else self.p_phase_kw
        return values.ravel(), np.repeat(self._measured, 3)

    def _for_problem(self, scenarios: OperatingPoint) -> OperatingPoint:
        """The forecast scenarios as the problem takes them: per bus, or per bus and phase."""
        if self.grid3 is None:
            return scenarios
        shape = (-1, self.grid.n_bus, 3)
        return OperatingPoint(np.reshape(scenarios.p_kw, shape), np.reshape(scenarios.q_kvar, shape))

    def _prepare_problem(self, flexibilities: list[Flexibility]) -> None:
        definitions = tuple(flexibilities)
        if self._problem is None or definitions != self._problem.flexibilities:
            self._problem = OcmProblem(
                self.grid if self.grid3 is None else self.grid3,
                definitions,
                samples=self.settings.samples,
                solver=self._solver,
            )
            self._previous = None
            names = ", ".join(flex.name for flex in definitions)
            log.info("OCM set up for %d flexibilities: %s", len(definitions), names)


@dataclass(frozen=True)
class _Publication:
    """The last bands published: for minutes ``minute + 1`` up to ``until_minute``."""

    minute: int
    until_minute: int
    flexibilities: tuple[Flexibility, ...]
    low: np.ndarray | None  # the device limits they were computed within (None: hardware)
    high: np.ndarray | None
    result: BandResult
    bands: list[Band]
    forecast: Forecast


def _three_phase_grid(tables: NetworkTables, meter_phases: Mapping[str, str], wanted: bool | None):
    """The three-phase model when wanted; ``None`` (automatic): when the network has asymmetric
    loads or generators, or some meter is single-phase, and the network has the zero-sequence
    data (otherwise the balanced model, with a warning)."""
    if wanted is False:
        return None
    single_phase = sorted(m for m, phase in meter_phases.items() if phase in ("a", "b", "c"))
    if wanted is None and not (tables.has_asymmetric_elements() or single_phase):
        return None
    try:
        grid3 = build_grid_3ph(tables)
    except NetworkError as error:
        if wanted or tables.has_asymmetric_elements():
            raise
        log.warning(
            "meters %s are single-phase, but the network has no three-phase model (%s): OCM stays balanced",
            _some_of(single_phase),
            error,
        )
        return None
    log.info("three-phase OCM: limits per phase voltage, phase conductor and voltage unbalance")
    return grid3


def _delta_as_wye(grid3):
    """The grid without delta loads, and its loads per phase with each delta load split half
    and half onto its two phases: measured readings replace a bus's loads, the delta ones too."""
    p, q = grid3.base_load_kw.copy(), grid3.base_load_kvar.copy()
    for wye, delta in ((p, grid3.base_delta_kw), (q, grid3.base_delta_kvar)):
        ab, bc, ca = delta.T
        wye += np.stack([ab + ca, ab + bc, bc + ca], axis=1) / 2
    zeros = np.zeros_like(grid3.base_delta_kw)
    return replace(grid3, base_delta_kw=zeros, base_delta_kvar=zeros.copy()), p, q


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b, atol=1e-3))


def _forecast_status(outcome: CycleOutcome) -> dict | None:
    """What the band was computed for: the forecast method, its envelope's coverage on the
    history (0: no envelope yet), the capacity the envelope cost, buses that left the last one."""
    forecast = outcome.forecast
    if forecast is None:
        return None
    return {
        "method": forecast.method if forecast.probability > 0 else "held",
        "coverage": round(forecast.probability, 4),
        "safety_kw": None if outcome.safety_kw is None else round(outcome.safety_kw, 3),
        "left_envelope_buses": outcome.left_envelope[:20],
    }


def _inward_kw(p_min_kw: float, p_max_kw: float) -> tuple[float, float]:
    """The band in whole watts, rounded inwards, back in kW."""
    low_w, high_w = units.kw_band_to_w_inward(p_min_kw, p_max_kw)
    return units.w_to_kw(low_w), units.w_to_kw(high_w)


def _some_of(names: list[str], shown: int = 8) -> str:
    """``"3 meters: A, B, C"``, or the first ``shown`` names and how many more."""
    listed = ", ".join(names[:shown])
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} meter{'s' if len(names) != 1 else ''}: {listed}{more}"
