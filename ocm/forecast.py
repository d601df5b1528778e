"""Forecasts of what OCM does not control, with an error envelope learnt from measurements.

OCM publishes bands ahead (30 minutes in operation), so it needs the uncontrolled net load of
every bus over that horizon, and how wrong that guess may be. ``ForecastModel.fit`` learns both
from a history of measured net active load per bus (one row per step, a minute in operation;
NaN where a bus was not measured):

- **Forecast.** With at least ``MIN_PROFILE_DAYS`` days of history: the daily profile (mean of
  the same step of the day over the days seen) plus the latest deviation from it, decaying
  with the lead time ``h`` as ``φ**h``; ``φ`` is the deviation's lag-1 autocorrelation on the
  history (pooled over buses, in [0, 1]). With less history: persistence (the latest value).
- **Errors.** The forecaster's residuals on its own history, at every lead 1..H, from origins
  every ``stride`` steps. The profile there leaves out the day being forecast, so the
  residuals are out of sample.
- **Envelope.** Per bus and lead, residual quantiles at levels α and 1 − α, where α is
  calibrated on the residuals so that in a share ``probability`` of (origin, lead) pairs
  *every* bus lies inside its interval at once (joint, not per bus: 99 % per bus on 100
  buses would hold jointly far less often).

``Forecast.point`` turns a forecast into an ``OperatingPoint`` with three scenarios: the
central one and the envelope's two corners (every bus at its lowest, every bus at its
highest over the horizon). On a radial feeder more consumption anywhere lowers every voltage
and raises every flow towards the feeder end, so a band that is safe at both corners is safe
for every state inside the envelope: the band holds whenever reality stays inside it, which
on the history is a share ``probability`` of the minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ocm.problem import OperatingPoint

MIN_PROFILE_DAYS = 2  # the profile's residuals leave one day out, so they need two
CALIBRATION_ROUNDS = 30


class ForecastError(ValueError):
    """A history or request that cannot give a forecast; the message says why."""


@dataclass(frozen=True)
class Forecast:
    """Uncontrolled net load per bus (kW, load convention) over the horizon after an origin."""

    central_kw: np.ndarray  # (H, n_bus)
    low_kw: np.ndarray  # (n_bus,) lowest value the envelope allows over the horizon
    high_kw: np.ndarray  # (n_bus,)
    probability: float  # the envelope's joint coverage on the history (0: no envelope)
    method: str  # "profile", "persistence"

    def point(self, q_kvar) -> OperatingPoint:
        """Scenarios: the central forecast (mean over the horizon), the low and the high corner;
        reactive load ``q_kvar`` per bus in all three. Without an envelope: one scenario."""
        central = self.central_kw.mean(axis=0)
        q = np.asarray(q_kvar, dtype=float)
        if self.probability <= 0:
            return OperatingPoint(central, q.copy())
        return OperatingPoint(np.vstack([central, self.low_kw, self.high_kw]), np.vstack([q, q, q]))

    def central_point(self, q_kvar) -> OperatingPoint:
        """The central forecast alone (what a band without safety margin is computed for)."""
        return OperatingPoint(self.central_kw.mean(axis=0), np.asarray(q_kvar, dtype=float).copy())

    def outside(self, measured_kw, tolerance_kw: float = 0.0) -> np.ndarray:
        """Positions of the buses whose measured load left the envelope (NaN: not measured)."""
        measured = np.asarray(measured_kw, dtype=float)
        with np.errstate(invalid="ignore"):
            out = (measured < self.low_kw - tolerance_kw) | (measured > self.high_kw + tolerance_kw)
        return np.flatnonzero(out & np.isfinite(measured))


@dataclass(frozen=True)
class ForecastModel:
    """A forecaster fitted to a history; ``forecast`` gives the forecast from an origin."""

    steps_per_day: int
    horizon: int
    probability: float  # the joint coverage asked for
    method: str
    profile_kw: np.ndarray | None  # (steps_per_day, n_bus), None for persistence
    decay: float  # φ
    residual_low_kw: np.ndarray  # (H, n_bus) quantile α of the residuals per lead
    residual_high_kw: np.ndarray  # (H, n_bus) quantile 1 − α
    level: float  # α
    coverage: float  # joint coverage of the envelope on the history
    residuals: np.ndarray  # (N, H, n_bus) residuals of the history, for scenario draws
    origins: int  # N

    @classmethod
    def fit(
        cls,
        history_kw,
        *,
        steps_per_day: int,
        horizon: int,
        probability: float = 0.99,
        first_step_of_day: int = 0,
        stride: int = 1,
        method: str = "auto",
    ) -> ForecastModel:
        """Fit to ``history_kw`` (T, n_bus); its first row is step ``first_step_of_day`` of a day.

        ``method`` "auto" takes the profile once the history allows, else persistence; "persistence"
        forces it (a baseline). Needs at least ``horizon + 2`` rows (some residuals to learn
        from); raises ``ForecastError`` otherwise or for bad arguments.
        """
        history = np.asarray(history_kw, dtype=float)
        if history.ndim != 2 or history.shape[1] == 0:
            raise ForecastError(f"history must be a (steps, buses) table, got shape {history.shape}")
        if not (0 < probability < 1):
            raise ForecastError(f"probability must be in (0, 1), got {probability}")
        if method not in ("auto", "persistence"):
            raise ForecastError(f"method must be 'auto' or 'persistence', got {method!r}")
        if horizon < 1 or steps_per_day < 1 or stride < 1:
            raise ForecastError("horizon, steps_per_day and stride must be at least 1")
        if len(history) < horizon + 2:
            raise ForecastError(
                f"{len(history)} steps of history cannot teach a {horizon}-step forecast its errors "
                f"(at least {horizon + 2} needed)"
            )
        offset = first_step_of_day % steps_per_day
        days = len(history) / steps_per_day
        if days >= MIN_PROFILE_DAYS and method == "auto":
            residuals, profile, decay = _profile_residuals(history, steps_per_day, offset, horizon, stride)
            method = "profile"
        else:
            residuals, profile, decay = _persistence_residuals(history, horizon, stride), None, 1.0
            method = "persistence"
        level, low, high, coverage = _calibrate(residuals, probability)
        return cls(
            steps_per_day=steps_per_day,
            horizon=horizon,
            probability=probability,
            method=method,
            profile_kw=profile,
            decay=decay,
            residual_low_kw=low,
            residual_high_kw=high,
            level=level,
            coverage=coverage,
            residuals=residuals,
            origins=len(residuals),
        )

    def central(self, latest_kw, step_of_day: int) -> np.ndarray:
        """(H, n_bus) central forecast for the H steps after the origin at ``step_of_day``,
        whose measured load is ``latest_kw`` (NaN: unknown, the profile is used alone)."""
        latest = np.asarray(latest_kw, dtype=float)
        if self.profile_kw is None:
            return np.repeat(latest[None, :], self.horizon, axis=0)
        leads = np.arange(1, self.horizon + 1)
        now = self.profile_kw[step_of_day % self.steps_per_day]
        ahead = self.profile_kw[(step_of_day + leads) % self.steps_per_day]
        deviation = np.nan_to_num(latest - now)
        return ahead + (self.decay**leads)[:, None] * deviation[None, :]

    def forecast(self, latest_kw, step_of_day: int) -> Forecast:
        """Central forecast and envelope for the H steps after the origin."""
        central = self.central(latest_kw, step_of_day)
        if not np.isfinite(central).all():
            raise ForecastError("the latest measurement has NaN at a bus without a profile")
        return Forecast(
            central_kw=central,
            low_kw=(central + self.residual_low_kw).min(axis=0),
            high_kw=(central + self.residual_high_kw).max(axis=0),
            probability=self.coverage,
            method=self.method,
        )

    def rms_error_kw(self) -> float:
        """Root mean square of the residuals over origins, leads and buses (kW)."""
        return float(np.sqrt(np.nanmean(self.residuals**2)))

    def draw_errors(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """(count, H, n_bus) residual paths drawn from the history (whole origins, so buses and
        leads keep their correlation); NaN residuals count as 0."""
        return np.nan_to_num(self.residuals[rng.integers(0, self.origins, size=count)])


def persistence(latest_kw, horizon: int) -> Forecast:
    """The latest measurement held for ``horizon`` steps, without an envelope (the baseline)."""
    latest = np.asarray(latest_kw, dtype=float)
    return Forecast(
        np.repeat(latest[None, :], horizon, axis=0), latest.copy(), latest.copy(), 0.0, "persistence"
    )


# ---------------------------------------------------------------------------- fitting


def _origins(length: int, horizon: int, stride: int, first: int = 0) -> np.ndarray:
    return np.arange(first, length - horizon, stride)


def _persistence_residuals(history: np.ndarray, horizon: int, stride: int) -> np.ndarray:
    origins = _origins(len(history), horizon, stride)
    leads = np.arange(1, horizon + 1)
    return history[origins[:, None] + leads[None, :]] - history[origins][:, None, :]


def _profile_residuals(history, steps_per_day, offset, horizon, stride):
    """Residuals of profile + decaying deviation, the profile leaving out the target's own
    value (so out of sample); the full-history profile; φ."""
    steps = (np.arange(len(history)) + offset) % steps_per_day
    valid = np.isfinite(history)
    values = np.where(valid, history, 0.0)
    sums = np.zeros((steps_per_day, history.shape[1]))
    counts = np.zeros_like(sums)
    np.add.at(sums, steps, values)
    np.add.at(counts, steps, valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = sums / counts
        left_out = (sums[steps] - values) / (counts[steps] - valid)  # (T, n): profile without row t
    deviation = history - left_out
    decay = _lag_one_correlation(deviation)
    origins = _origins(len(history), horizon, stride)
    leads = np.arange(1, horizon + 1)
    targets = origins[:, None] + leads[None, :]
    forecast = (
        left_out[targets] + (decay**leads)[None, :, None] * np.nan_to_num(deviation[origins])[:, None, :]
    )
    residuals = history[targets] - forecast
    return residuals, np.where(np.isfinite(profile), profile, np.nanmean(history, axis=0)), decay


def _lag_one_correlation(deviation: np.ndarray) -> float:
    a, b = deviation[:-1], deviation[1:]
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3:
        return 0.0
    a, b = a[both], b[both]
    denominator = float(np.dot(a, a))
    return float(np.clip(np.dot(a, b) / denominator, 0.0, 1.0)) if denominator > 0 else 0.0


def _calibrate(residuals: np.ndarray, probability: float):
    """The largest α whose [α, 1 − α] residual quantiles cover every bus at once in at least
    ``probability`` of the (origin, lead) pairs; α = 0 (the extremes) if none does better."""
    ordered = np.sort(residuals, axis=0)  # NaN last
    counts = np.isfinite(residuals).sum(axis=0)  # (H, n)

    def bounds(alpha: float):
        low_index = np.floor(alpha * np.maximum(counts - 1, 0)).astype(int)
        high_index = np.maximum(counts - 1 - low_index, 0)
        low = np.take_along_axis(ordered, low_index[None], axis=0)[0]
        high = np.take_along_axis(ordered, high_index[None], axis=0)[0]
        return np.where(counts > 0, low, 0.0), np.where(counts > 0, high, 0.0)

    def coverage(low, high) -> float:
        inside = (residuals >= low[None]) & (residuals <= high[None]) | ~np.isfinite(residuals)
        return float(inside.all(axis=2).mean())

    lo, hi = 0.0, (1 - probability) / 2
    best = (0.0, *bounds(0.0))
    if coverage(*bounds(hi)) >= probability:
        lo = hi
        best = (hi, *bounds(hi))
    else:
        for _ in range(CALIBRATION_ROUNDS):
            middle = (lo + hi) / 2
            candidate = bounds(middle)
            if coverage(*candidate) >= probability:
                lo, best = middle, (middle, *candidate)
            else:
                hi = middle
    alpha, low, high = best
    return alpha, low, high, coverage(low, high)
