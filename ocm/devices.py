"""What the devices reported about themselves, kept current by their meters.

Owners report their devices' state (on chain, ``DeviceStates``; ``ocm.oracle`` feeds the
reports in): a charger whether a car is plugged in and how much energy it still wants, a
battery its capacity, stored energy and reserve. Between reports the energy moves with the
device's own metered power: a car's need shrinks by what it was charged, a battery's store
grows by its charging (times its efficiency) and shrinks by its discharging (over it).

A device that never reported keeps its hardware limits (a device without a reporting app):
the tracker only narrows what it knows about. A report older than ``max_age_s`` is dropped
and the device counts as unavailable (fixed at 0 kW): a band must not rely on a car that may
have left hours ago.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocm.availability import BatteryState, DeviceState, EvState

EV_CHARGER = "ev_charger"
BATTERY = "battery"
DEFAULT_MAX_AGE_S = 6 * 3600
EFFICIENCY = 0.95


@dataclass(frozen=True)
class Report:
    """One report in Python units (kWh); ``time`` in Unix seconds."""

    time: int
    plugged: bool
    energy_need_kwh: float = 0.0
    stored_kwh: float = 0.0
    capacity_kwh: float = 0.0
    reserve_kwh: float = 0.0


class DeviceTracker:
    """Latest report per flexibility, advanced by its metered energy since."""

    def __init__(self, max_age_s: int = DEFAULT_MAX_AGE_S, efficiency: float = EFFICIENCY):
        self.max_age_s = max_age_s
        self.efficiency = efficiency
        self._reports: dict[str, tuple[str, Report]] = {}  # flex id → (kind, report)
        self._metered: dict[str, dict[int, float]] = {}  # flex id → minute start (Unix s) → kW

    def report(self, flex_id: str, kind: str, report: Report) -> None:
        """A new report; an older one than the latest known is ignored."""
        known = self._reports.get(flex_id)
        if known is None or report.time >= known[1].time:
            self._reports[flex_id] = (kind, report)
            self._metered[flex_id] = {
                t: kw for t, kw in self._metered.get(flex_id, {}).items() if t >= report.time
            }

    def metered(self, flex_id: str, minute_start: int, p_kw: float) -> None:
        """The device's metered power in the minute starting at ``minute_start`` (load convention)."""
        if flex_id in self._reports and minute_start >= self._reports[flex_id][1].time:
            self._metered.setdefault(flex_id, {})[minute_start] = p_kw

    def states(self, now: int) -> dict[str, DeviceState]:
        """Current state of every reported device (stale reports: unavailable)."""
        states: dict[str, DeviceState] = {}
        for flex_id, (kind, report) in self._reports.items():
            stale = now - report.time > self.max_age_s
            if kind == EV_CHARGER:
                charged = sum(max(kw, 0.0) for kw in self._metered.get(flex_id, {}).values()) / 60
                need = max(0.0, report.energy_need_kwh - charged)
                states[flex_id] = EvState(plugged=report.plugged and not stale, energy_need_kwh=need)
            elif kind == BATTERY and report.capacity_kwh > 0:
                if stale:  # unknown charge: neither charging nor discharging can be counted on
                    capacity = report.capacity_kwh
                    states[flex_id] = BatteryState(capacity, capacity, reserve_kwh=capacity)
                    continue
                stored = report.stored_kwh + self._energy_moved(flex_id)
                stored = min(max(stored, 0.0), report.capacity_kwh)
                states[flex_id] = BatteryState(
                    report.capacity_kwh, stored, min(report.reserve_kwh, stored), self.efficiency
                )
        return states

    def _energy_moved(self, flex_id: str) -> float:
        """Stored energy gained since the report (kWh): charging times efficiency, discharging over it."""
        total = 0.0
        for kw in self._metered.get(flex_id, {}).values():
            total += kw / 60 * (self.efficiency if kw > 0 else 1 / self.efficiency)
        return total
