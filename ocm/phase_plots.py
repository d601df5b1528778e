"""Per-phase voltage profile of a three-phase load flow: each phase's voltage along the feeders.

The x axis is the cable distance from the external grid (transformers count as zero length),
so every feeder is a line from the busbar outwards; each line of the network is drawn once per
phase, in the phase's colour (L1 brown, L2 black, L3 grey, as the cores of European cables),
with the voltage limits dashed. Where the phases part, single-phase load is pulling one down.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from matplotlib.figure import Figure
from scipy.sparse.csgraph import dijkstra

from ocm.grid.helm_3ph import Helm3phResult
from ocm.grid.model import COMPUTED, NetworkTables
from ocm.grid.three_phase import PHASES, Grid3ph

PHASE_COLOURS = {"a": "#8B4513", "b": "#000000", "c": "#8C8C8C"}
PHASE_NAMES = {"a": "L1 (a)", "b": "L2 (b)", "c": "L3 (c)"}


def bus_distance_km(tables: NetworkTables, grid: Grid3ph) -> np.ndarray:
    """Cable distance of every energised bus from the nearest external grid (km)."""
    g = grid.balanced
    connected = np.flatnonzero(g.branch_state == COMPUTED)
    length = np.zeros(len(g.branch_state))
    length[: g.n_line] = tables.line["length_km"].to_numpy(float)
    weight = np.maximum(length[connected], 1e-9)  # a transformer is a (near) zero-length step
    graph = sp.coo_matrix(
        (weight, (g.branch_from[connected], g.branch_to[connected])), shape=(g.n_node, g.n_node)
    ).tocsr()
    distance = dijkstra(graph, directed=False, indices=g.slack_nodes).min(axis=0)
    return distance[g.node_of_bus]


def plot_phase_voltages(
    tables: NetworkTables, grid: Grid3ph, result: Helm3phResult, scenario: int = 0
) -> Figure:
    """The voltage of every phase along the feeders for one scenario of ``result``."""
    g = grid.balanced
    distance = bus_distance_km(tables, grid)
    vm = result.vm_pu[scenario]
    figure = Figure(figsize=(9, 5), layout="constrained")
    axis = figure.subplots()
    position = {int(node): k for k, node in enumerate(g.node_of_bus)}
    connected = np.flatnonzero(g.branch_state[: g.n_line] == COMPUTED)
    for p, phase in enumerate(PHASES):
        for branch in connected:
            ends = [position.get(int(g.branch_from[branch])), position.get(int(g.branch_to[branch]))]
            if None in ends:
                continue
            axis.plot(distance[ends], vm[ends, p], color=PHASE_COLOURS[phase], linewidth=1.2, alpha=0.8)
        axis.scatter(distance, vm[:, p], s=10, color=PHASE_COLOURS[phase], label=PHASE_NAMES[phase], zorder=3)
    for limit in (np.nanmin(g.min_vm_pu), np.nanmax(g.max_vm_pu)):
        if 0 < limit < 2:
            axis.axhline(limit, color="tab:red", linestyle="--", linewidth=1)
    worst = np.unravel_index(np.nanargmin(vm), vm.shape) if np.isfinite(vm).any() else None
    title = f"{g.name or 'network'}: phase voltages"
    if worst is not None:
        bus, p = worst
        title += (
            f" (lowest {vm[bus, p]:.4f} pu at bus {g.bus_ids[bus]} phase {PHASES[p]}; "
            f"unbalance up to {np.nanmax(result.unbalance_percent[scenario]):.2f} %)"
        )
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("cable distance from the external grid [km]")
    axis.set_ylabel("voltage [pu]")
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    return figure


def write_phase_voltage_plot(
    tables: NetworkTables, grid: Grid3ph, result: Helm3phResult, path: str | Path, scenario: int = 0
) -> Path:
    """Saves the per-phase voltage profile as PNG at ``path``."""
    path = Path(path)
    plot_phase_voltages(tables, grid, result, scenario).savefig(path, dpi=120)
    return path
