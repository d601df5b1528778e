"""Figures of the DSO's price instruments on a feeder:

- ``loadings.png``: per hour, the highest line and transformer loading and the lowest and highest
  bus voltage, before (aggregators at spot price) and after (DT plan or cleared market), against
  the limits;
- ``tariffs.png``: the dynamic tariff per load point and hour (a heat map, load points with a
  tariff only);
- ``bids.png``: per congestion hour, the offered and the accepted kW of every bid, in merit
  order, with the requirement's minimum.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from market.pricing.grid_limits import GridLimits, GridState
from market.pricing.tfm import Bid, Clearing, Requirement


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path


def natural_order(name: str) -> tuple:
    """``bus9`` before ``bus10``: digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def plot_loadings(grid: GridLimits, before: GridState, after: GridState, title: str) -> Figure:
    """Worst loading and voltages per hour before and after, against the limits."""
    hours = np.arange(grid.hours)
    figure = Figure(figsize=(10, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    for state, label, style in ((before, "before", "--"), (after, "after", "-")):
        branches = np.hstack([state.line_loading_percent, state.trafo_loading_percent])
        top.step(hours, branches.max(axis=1), where="mid", linestyle=style, label=f"highest loading, {label}")
        bottom.step(
            hours, state.vm_pu.min(axis=1), where="mid", linestyle=style, label=f"lowest |V|, {label}"
        )
        bottom.step(
            hours, state.vm_pu.max(axis=1), where="mid", linestyle=style, label=f"highest |V|, {label}"
        )
    limits = grid.upper_physical
    n_bus = grid.grid.n_bus
    top.axhline(limits[2 * n_bus :].min(initial=100.0), color="red", linewidth=0.8, label="limit")
    bottom.axhline(-limits[:n_bus].max(), color="red", linewidth=0.8, label="V_min")
    bottom.axhline(limits[n_bus : 2 * n_bus].min(), color="red", linewidth=0.8, linestyle=":", label="V_max")
    top.set_ylabel("loading (%)")
    bottom.set_ylabel("|V| (pu)")
    bottom.set_xlabel("hour of the day")
    top.set_title(title, fontsize=10, loc="left")
    for axis in (top, bottom):
        axis.legend(fontsize=7, ncols=3)
        axis.grid(alpha=0.3)
    return figure


def plot_tariffs(tariffs: Mapping[str, np.ndarray], title: str) -> Figure:
    """Heat map of the tariff (per kWh) per load point and hour."""
    points = (
        sorted((lp for lp, values in tariffs.items() if np.any(np.abs(values) > 1e-9)), key=natural_order)
        or list(tariffs)[:1]
    )
    matrix = np.array([tariffs[lp] for lp in points]) if points else np.zeros((1, 24))
    figure = Figure(figsize=(10, 1.2 + 0.22 * len(points)), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(matrix, aspect="auto", cmap="magma_r", interpolation="nearest")
    axis.set_yticks(range(len(points)), points, fontsize=7)
    axis.set_xticks(range(matrix.shape[1]))
    axis.set_xlabel("hour of the day")
    axis.set_title(title, fontsize=10, loc="left")
    figure.colorbar(image, ax=axis, label="tariff per kWh")
    return figure


def plot_bids(requirements: Sequence[Requirement], bids: Sequence[Bid], clearing: Clearing) -> Figure:
    """Offered and accepted kW per congestion hour, bids in merit order."""
    hours = sorted({r.hour for r in requirements}) or [0]
    figure = Figure(figsize=(10, 2.2 * len(hours)), layout="constrained")
    axes = figure.subplots(len(hours), 1, squeeze=False)[:, 0]
    for axis, hour in zip(axes, hours, strict=True):
        offers = sorted((b for b in bids if hour in b.kw), key=lambda b: b.price)
        names = [b.bid_id for b in offers]
        offered = [b.kw[hour] for b in offers]
        taken = [b.kw[hour] * clearing.fractions.get(b.bid_id, {}).get(hour, 0.0) for b in offers]
        axis.bar(names, offered, color="lightgray", label="offered")
        axis.bar(names, taken, color="tab:green", label="accepted")
        need = sum(r.min_kw for r in requirements if r.hour == hour)
        axis.set_title(
            f"t{hour}: {sum(taken):.1f} kW accepted of {need:.1f} kW needed", fontsize=9, loc="left"
        )
        axis.set_ylabel("kW")
        axis.tick_params(axis="x", labelrotation=90, labelsize=6)
        axis.legend(fontsize=7)
    return figure
