"""Per-minute behaviour of a simulated household: BDEW H0 load with noise, rooftop PV on a
clear-sky curve with passing clouds, EV charging sessions and a home battery that stores
PV surplus and covers the evening. Power in kW, load convention (injection negative)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from contracts.clock import minute_of

SECONDS_PER_DAY = 86_400
LOAD_POWER_FACTOR = 0.95
LATITUDE, LONGITUDE = 51.0, 10.0  # central Germany, where the Kerber feeders come from


@lru_cache(maxsize=4)
def _h0_year(year: int) -> tuple[np.ndarray, float]:
    """BDEW H0 profile of ``year`` (demandlib, quarter hours, sums to 1) and its first instant."""
    from demandlib import bdew

    profile = bdew.ElecSlp(year).get_profiles("h0")["h0"]
    return profile.to_numpy(), profile.index[0].timestamp()


def h0_kw(times: np.ndarray, annual_kwh: float) -> np.ndarray:
    """Mean household power at Unix seconds ``times`` for an annual consumption."""
    result = np.empty(len(times))
    years = np.array([_year_of(t) for t in times])
    for year in np.unique(years):
        shares, start = _h0_year(int(year))
        at = years == year
        quarter = np.clip(((times[at] - start) // 900).astype(int), 0, len(shares) - 1)
        result[at] = shares[quarter] * annual_kwh * 4  # kWh per quarter hour -> kW
    return result


def clear_sky_ghi(times: np.ndarray) -> np.ndarray:
    """Clear-sky global horizontal irradiance (W/m², Ineichen model of pvlib)."""
    import pandas as pd
    import pvlib

    index = pd.to_datetime(times, unit="s", utc=True)
    location = pvlib.location.Location(LATITUDE, LONGITUDE, tz="UTC")
    return location.get_clearsky(index, model="ineichen")["ghi"].to_numpy()


def cloud_factor(times: np.ndarray, seed: int) -> np.ndarray:
    """Share of clear-sky irradiance that passes the clouds, 0.15..1, the same for the whole
    feeder: a mean-reverting random walk per minute, reproducible from ``seed`` and time."""
    factors = np.empty(len(times))
    for i, t in enumerate(times):
        day = int(t // SECONDS_PER_DAY)
        rng = np.random.default_rng([seed, day])
        walk = np.cumsum(rng.normal(0, 0.08, 1440))
        cover = 0.5 + 0.35 * np.tanh(walk - walk.mean())
        factors[i] = 1 - 0.85 * cover[minute_of(t % SECONDS_PER_DAY)]
    return factors


@dataclass
class Household:
    """One metered connection: load, optional PV, EV and battery, with its own randomness."""

    annual_kwh: float
    pv_peak_kw: float
    ev_kw: float
    battery_kwh: float
    seed: int
    battery_kw: float = 5.0
    state_of_charge: float = field(default=0.5)  # share of battery_kwh

    @classmethod
    def random(cls, rng: np.random.Generator, seed: int) -> Household:
        return cls(
            annual_kwh=float(rng.uniform(2000, 5500)),
            pv_peak_kw=float(rng.choice([0.0, 0.0, 5.0, 8.0, 10.0])),
            ev_kw=float(rng.choice([0.0, 0.0, 0.0, 11.0])),
            battery_kwh=float(rng.choice([0.0, 0.0, 10.0])),
            seed=seed,
        )

    def minute(self, time_s: int, h0: float, irradiance: float) -> tuple[float, float]:
        """(P kW, Q kvar) of this connection in the minute starting at ``time_s``."""
        rng = np.random.default_rng([self.seed, minute_of(time_s)])
        load = h0 * float(rng.lognormal(0, 0.35))
        pv = -self.pv_peak_kw * irradiance / 1000
        ev = self.ev_kw if self._ev_charging(time_s) else 0.0
        battery = self._battery(load + pv + ev, time_s)
        q_kvar = load * math.tan(math.acos(LOAD_POWER_FACTOR))
        return load + pv + ev + battery, q_kvar

    def _ev_charging(self, time_s: int) -> bool:
        if not self.ev_kw:
            return False
        day_rng = np.random.default_rng([self.seed, time_s // SECONDS_PER_DAY, 7])
        arrival_h = day_rng.uniform(16.5, 20.5)
        hours = day_rng.uniform(0.5, 3.0) if day_rng.random() < 0.6 else 0.0
        hour = (time_s % SECONDS_PER_DAY) / 3600
        return arrival_h <= hour < arrival_h + hours

    def _battery(self, net_kw: float, time_s: int) -> float:
        """Charge from PV surplus, discharge to cover load in the evening and night."""
        if not self.battery_kwh:
            return 0.0
        hour = (time_s % SECONDS_PER_DAY) / 3600
        if net_kw < 0:
            power = min(-net_kw, self.battery_kw)  # charging: consumption
        elif hour >= 17 or hour < 7:
            power = -min(net_kw, self.battery_kw)  # discharging: injection
        else:
            return 0.0
        energy = self.state_of_charge * self.battery_kwh + power / 60
        energy = min(max(energy, 0.0), self.battery_kwh)
        power = (energy - self.state_of_charge * self.battery_kwh) * 60
        self.state_of_charge = energy / self.battery_kwh
        return power


def _year_of(time_s: float) -> int:
    import datetime

    return datetime.datetime.fromtimestamp(time_s, datetime.UTC).year
