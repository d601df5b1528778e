"""A feeder as the web pages draw it: buses placed as a tree from the supply point (depth
to the right, branches stacked), or where the network's geodata puts them."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from pathlib import Path

from gateway.api.context import Feeder, FeederBranch, FeederBus
from ocm.grid.model import NetworkTables
from ocm.grid.network_io import read_network_tables


def feeder_drawing(path: Path) -> Feeder:
    """The drawing of the network file at ``path`` (pandapower JSON or the native format)."""
    return drawing_of(read_network_tables(path), Path(path).stem)


def drawing_of(tables: NetworkTables, fallback_name: str = "feeder") -> Feeder:
    branches = [
        FeederBranch(
            "line", int(index), int(row.from_bus), int(row.to_bus), str(row.get("name") or f"line {index}")
        )
        for index, row in tables.line.iterrows()
        if bool(row.get("in_service", True))
    ] + [
        FeederBranch(
            "trafo", int(index), int(row.hv_bus), int(row.lv_bus), str(row.get("name") or f"trafo {index}")
        )
        for index, row in tables.trafo.iterrows()
        if bool(row.get("in_service", True))
    ]
    positions = _geodata(tables) or _tree_layout(tables, branches)
    buses = [
        FeederBus(
            int(index),
            str(row.get("name") or f"bus {index}"),
            float(row.vn_kv),
            *positions.get(int(index), (0.0, 0.0)),
        )
        for index, row in tables.bus.iterrows()
    ]
    return Feeder(tables.name or fallback_name, buses, branches)


def _geodata(tables: NetworkTables) -> dict[int, tuple[float, float]] | None:
    """Bus coordinates from pandapower's ``geo`` column (GeoJSON points), when every bus has one."""
    if "geo" not in tables.bus.columns:
        return None
    positions = {}
    for index, geo in tables.bus["geo"].items():
        try:
            x, y = json.loads(geo)["coordinates"][:2]
        except (TypeError, ValueError, KeyError):
            return None
        positions[int(index)] = (float(x), -float(y))  # north up on a screen whose y grows downwards
    return positions


def _tree_layout(tables: NetworkTables, branches: list[FeederBranch]) -> dict[int, tuple[float, float]]:
    """x = hops from the supply point, y = order of the leaves below (a tidy tree); buses
    not reached (islands) are stacked below."""
    neighbours: dict[int, list[int]] = defaultdict(list)
    for branch in branches:
        neighbours[branch.from_bus].append(branch.to_bus)
        neighbours[branch.to_bus].append(branch.from_bus)
    roots = (
        [int(bus) for bus in tables.ext_grid["bus"]] if len(tables.ext_grid) else [int(tables.bus.index[0])]
    )
    children: dict[int, list[int]] = defaultdict(list)
    depth = {root: 0 for root in roots}
    queue = deque(roots)
    while queue:
        bus = queue.popleft()
        for other in sorted(neighbours[bus]):
            if other not in depth:
                depth[other] = depth[bus] + 1
                children[bus].append(other)
                queue.append(other)
    positions: dict[int, tuple[float, float]] = {}
    next_row = [0.0]

    def place(bus: int) -> float:
        below = [place(child) for child in children[bus]]
        row = sum(below) / len(below) if below else next_row[0]
        if not below:
            next_row[0] += 1.0
        positions[bus] = (float(depth[bus]), row)
        return row

    for root in roots:
        place(root)  # recursion depth = feeder depth (a few hundred at most)
    for index in tables.bus.index:
        if int(index) not in positions:
            positions[int(index)] = (0.0, next_row[0])
            next_row[0] += 1.0
    return positions
