"""Bands the devices can follow: hardware limits narrowed to what a device can sustain.

A band holds for the whole horizon it is published for, so a flexibility may be counted on
only for powers it can keep up that long:

- an **EV charger** without a car, or with a car that wants nothing, is fixed at 0 kW; with a
  car that needs ``energy_need_kwh``, at most that energy spread over the horizon (a higher
  ``P_min`` would force energy the car does not want; a higher ``P_max`` is capacity it
  cannot use);
- a **battery** charges at most what its free capacity takes over the horizon and
  discharges at most what it holds above its reserve (through its efficiency);
- other devices (PV, heat pumps, unknown) keep their hardware limits; a PV system's available
  power comes with its profile (``ocm.profiles``).

An unavailable device thus counts as fixed, and the other levers carry the limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ocm.flexibility import Flexibility


@dataclass(frozen=True)
class EvState:
    """A charger's car: plugged in or not, and the energy it still wants (kWh)."""

    plugged: bool
    energy_need_kwh: float = 0.0


@dataclass(frozen=True)
class BatteryState:
    """A battery's stored energy, capacity and reserve (kWh) and one-way efficiency."""

    capacity_kwh: float
    energy_kwh: float
    reserve_kwh: float = 0.0
    efficiency: float = 0.95


DeviceState = EvState | BatteryState


def sustainable_limits(
    low_kw: float, high_kw: float, state: DeviceState | None, horizon_h: float
) -> tuple[float, float]:
    """``[low_kw, high_kw]`` narrowed to what ``state`` can keep up for ``horizon_h`` hours.
    Raises ``ValueError`` for a state that is not physical."""
    if state is None:
        return low_kw, high_kw
    if not (math.isfinite(horizon_h) and horizon_h > 0):
        raise ValueError(f"the horizon must be a positive number of hours, got {horizon_h}")
    if isinstance(state, EvState):
        _check(state.energy_need_kwh >= 0, f"energy_need_kwh must be ≥ 0, got {state.energy_need_kwh}")
        if not state.plugged or state.energy_need_kwh == 0:
            return _fixed(low_kw, high_kw, 0.0)
        high = min(high_kw, state.energy_need_kwh / horizon_h)
        return min(low_kw, high), high
    if isinstance(state, BatteryState):
        _check(state.capacity_kwh > 0, f"capacity_kwh must be > 0, got {state.capacity_kwh}")
        _check(
            0 <= state.energy_kwh <= state.capacity_kwh,
            f"energy_kwh {state.energy_kwh} must lie in [0, capacity_kwh {state.capacity_kwh}]",
        )
        _check(0 <= state.reserve_kwh <= state.capacity_kwh, f"reserve_kwh {state.reserve_kwh} out of range")
        _check(0 < state.efficiency <= 1, f"efficiency must be in (0, 1], got {state.efficiency}")
        charge = max(0.0, state.capacity_kwh - state.energy_kwh) / (state.efficiency * horizon_h)
        discharge = max(0.0, state.energy_kwh - state.reserve_kwh) * state.efficiency / horizon_h
        low, high = max(low_kw, -discharge), min(high_kw, charge)
        return (low, high) if low <= high else _fixed(low_kw, high_kw, 0.0)
    raise ValueError(f"unknown device state {state!r}")


def availability_limits(
    flexibilities: Sequence[Flexibility], states: Mapping[str, DeviceState], horizon_h: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per flexibility (by its ``name``), the hardware limits narrowed by its reported state;
    flexibilities without a state keep theirs. ``ValueError`` names the flexibility at fault."""
    low, high = [], []
    for flexibility in flexibilities:
        try:
            a, b = sustainable_limits(
                flexibility.p_low_kw, flexibility.p_high_kw, states.get(flexibility.name), horizon_h
            )
        except ValueError as error:
            raise ValueError(f"{flexibility.label}: {error}") from None
        low.append(a)
        high.append(b)
    return np.array(low), np.array(high)


def _fixed(low_kw: float, high_kw: float, kw: float) -> tuple[float, float]:
    """Held at ``kw`` (within the hardware limits)."""
    value = min(max(kw, low_kw), high_kw)
    return value, value


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
