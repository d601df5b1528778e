"""Figures of an OCM time series in the manner of Rao et al. 2021, Fig. 7-8 and 10-11:

- ``bands.png``: the band of every flexibility over time, under the summed uncontrollable load;
- ``voltages.png``: the lowest voltage with all flexibilities at P_max and the highest with all
  at P_min, per step, against the voltage limits;
- ``boxplots.png``: per step (at most ``MAX_BOXES`` steps, evenly spread), the spread of the
  lowest and highest bus voltage over the random in-band schedules of the verification.

Steps without a feasible band are shaded red.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ocm.timeseries import TimeSeriesResult

MAX_BOXES = 48


def write_plots(result: TimeSeriesResult, out_dir: Path) -> list[Path]:
    """Writes the three figures as PNG files into ``out_dir``; returns their paths."""
    paths = []
    figures = {"bands": plot_bands, "voltages": plot_corner_voltages, "boxplots": plot_boxplots}
    for name, draw in figures.items():
        figure = draw(result)
        path = Path(out_dir) / f"{name}.png"
        figure.savefig(path, dpi=110)
        paths.append(path)
    return paths


def plot_bands(result: TimeSeriesResult) -> Figure:
    times = _times(result)
    flexibilities = result.flexibilities
    figure = Figure(figsize=(10, 1.9 * (len(flexibilities) + 1)), layout="constrained")
    axes = figure.subplots(len(flexibilities) + 1, 1, sharex=True, squeeze=False)[:, 0]
    axes[0].step(times, result.uncontrollable_kw, where="post", color="black")
    axes[0].set_ylabel("kW")
    axes[0].set_title("summed uncontrollable load (P_UL sum)", fontsize=9, loc="left")
    p_min = np.array([s.p_min_kw for s in result.steps])
    p_max = np.array([s.p_max_kw for s in result.steps])
    for k, (axis, f) in enumerate(zip(axes[1:], flexibilities, strict=True)):
        axis.fill_between(times, p_min[:, k], p_max[:, k], step="post", alpha=0.4, label="band")
        axis.step(times, p_max[:, k], where="post", label="P_max")
        axis.step(times, p_min[:, k], where="post", label="P_min")
        axis.axhline(f.p_low_kw, color="grey", lw=0.6, ls=":")
        axis.axhline(f.p_high_kw, color="grey", lw=0.6, ls=":")
        axis.set_ylabel("kW")
        axis.set_title(f"{f.label} ({f.key}, bus {f.bus}, group {f.priority_group})", fontsize=9, loc="left")
    axes[1].legend(loc="upper right", fontsize=8, ncol=3)
    for axis in axes:
        _shade_infeasible(axis, result, times)
    _format_time_axis(axes[-1])
    figure.suptitle(f"OCM bands, objective {result.objective} (load convention: consumption > 0)")
    return figure


def plot_corner_voltages(result: TimeSeriesResult) -> Figure:
    times = _times(result)
    figure = Figure(figsize=(10, 4), layout="constrained")
    axis = figure.subplots()
    axis.step(times, [s.v_min_pu_at_pmax for s in result.steps], where="post", label="V_min, all at P_max")
    axis.step(times, [s.v_max_pu_at_pmin for s in result.steps], where="post", label="V_max, all at P_min")
    axis.axhline(result.v_min_limit_pu, color="red", ls="--", lw=1, label="limits")
    axis.axhline(result.v_max_limit_pu, color="red", ls="--", lw=1)
    _shade_infeasible(axis, result, times)
    axis.set_ylabel("voltage (pu)")
    axis.legend(loc="best", fontsize=8)
    _format_time_axis(axis)
    figure.suptitle("bus voltages at the band corners")
    return figure


def plot_boxplots(result: TimeSeriesResult) -> Figure:
    shown = np.unique(np.linspace(0, len(result.steps) - 1, min(MAX_BOXES, len(result.steps))).astype(int))
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    axis = figure.subplots()
    positions = np.arange(len(shown))
    series = (("sample_v_min_pu", "tab:blue", -0.18), ("sample_v_max_pu", "tab:orange", 0.18))
    for field, colour, offset in series:
        data = [_finite(getattr(result.steps[t].verification, field)) for t in shown]
        boxes = axis.boxplot(
            data, positions=positions + offset, widths=0.3, patch_artist=True, showfliers=False,
            manage_ticks=False,
        )  # fmt: skip
        for box in boxes["boxes"]:
            box.set_facecolor(colour)
            box.set_alpha(0.6)
    axis.axhline(result.v_min_limit_pu, color="red", ls="--", lw=1)
    axis.axhline(result.v_max_limit_pu, color="red", ls="--", lw=1)
    labels = [pd.Timestamp(result.times[t], unit="s").strftime("%H:%M") for t in shown]
    axis.set_xticks(positions, labels, rotation=90, fontsize=7)
    axis.set_ylabel("voltage (pu)")
    axis.set_title(
        "lowest (blue) and highest (orange) bus voltage of random schedules inside the bands",
        fontsize=9,
        loc="left",
    )
    return figure


def _times(result: TimeSeriesResult) -> pd.DatetimeIndex:
    return pd.to_datetime(result.times, unit="s")


def _shade_infeasible(axis, result: TimeSeriesResult, times) -> None:
    """Shades every run of consecutive infeasible steps."""
    infeasible = np.array([not step.feasible for step in result.steps] + [False])
    starts = np.flatnonzero(infeasible[:-1] & ~np.concatenate([[False], infeasible[:-2]]))
    step_length = times[1] - times[0] if len(times) > 1 else pd.Timedelta(minutes=1)
    for start in starts:
        end = start + np.argmin(infeasible[start:])  # first feasible step after the run
        axis.axvspan(times[start], times[end] if end < len(times) else times[-1] + step_length,
                     color="red", alpha=0.12, lw=0)  # fmt: skip


def _format_time_axis(axis) -> None:
    axis.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    axis.set_xlabel("time (UTC)")


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return values if values.size else np.array([np.nan])
