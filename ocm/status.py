"""The OCM oracle's status document: what the DSO's view shows of the last cycle.

None of this is on chain. ``ocm.oracle.OcmService`` (given a ``status_file``) writes it after
every cycle, atomically (a temporary file in the same directory, then ``os.replace``), and
``GET /v1/dso/ocm`` serves it as it is. Units as everywhere: kW in load convention, pu, %;
non-finite values (no load flow solution, an unrated line) are ``null``. Schema, version 1::

    version         1
    minute          the Unix minute the bands apply after (bands cover minute + 1 ...)
    computed_at     Unix s (wall clock) when the cycle ended
    seconds         duration of the cycle (registry, readings, OCM, publishing)
    solve_seconds   of which OCM (optimisation and verification); null without a solve
    feasible        whether a schedule within all limits exists; null without a solve
    published       whether the bands went on chain
    reason          "published", or why not / what is wrong ("band not published: ...")
    objective       "sum" | "proportional" | "maxmin"
    measured_buses  buses whose measured readings replaced the forecast
    stale_meters    {"count": n, "first": [the first few meter ids, sorted]}
    forecast        {method: "held" (no error model yet) | "persistence" | "profile",
                    coverage (the envelope's joint coverage on the history; 0 when held),
                    safety_kw (Σ band width the envelope cost against the central forecast;
                    null when not computed), left_envelope_buses (buses whose measured load
                    left the last published forecast's envelope, at most 20)}; null if unknown
    flexibilities   [{flex_id, bus, p_low_kw, p_high_kw (hardware limits), p_min_kw, p_max_kw
                    (the band as published, i.e. rounded inwards to whole watts; when not
                    published, as computed; null without a solve), p_kw (its power at the
                    operating point), metered (p_kw is a fresh reading of its meter; else 0)}]
    verification    {passed, schedules, failures, v_min_pu, v_max_pu, max_loading_percent,
                    message, adjustment} of the band; null without a solve
    buses           [{bus (pandapower index), vm_pu (operating point), vm_pu_at_pmax (every
                    flexibility at P_max: the lowest voltages), vm_pu_at_pmin (every one at
                    P_min: the highest), min_vm_pu, max_vm_pu (the limits OCM applies)}],
                    every bus of the network; de-energised buses are all null, corners are
                    null without a band
    branches        [{kind: "line" | "trafo", index (pandapower row), loading_percent
                    (operating point), loading_percent_at_corners (the larger of both
                    corners; null without a band), limit_percent}]
    binding         [{kind: "voltage_min" | "voltage_max" | "loading", element: "bus" |
                    "line" | "trafo", index, value, limit, corner: "pmax" | "pmin"}], the
                    limits a corner reaches or comes within BINDING_VOLTAGE_SHARE of the
                    bus's voltage range / BINDING_LOADING_PERCENT points of loading (or
                    violates, for least-violating bands), closest first; one entry per limit
                    (at its closer corner). Buses held by an external grid and unrated
                    branches are not limits.

Three-phase grids (``ocm.phase_constraints``): ``vm_pu`` and the corner voltages are the
lowest phase's, each bus also has ``vm_phase_pu`` [a, b, c] at the operating point and
``unbalance_percent``; a voltage_max limit is judged with the highest phase; loadings are the
most loaded phase's. On balanced grids those two fields are null.

The operating point is the cycle's (measured buses, forecast elsewhere) with every flexibility
at ``p_kw``. The three load flows (operating point, P_max corner, P_min corner) are one batched
call of the problem's own HELM solver (already factorised).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ocm.bands import BandResult
from ocm.flexibility import Flexibility
from ocm.grid.helm import HelmResult
from ocm.phase_constraints import PhaseConstraints
from ocm.problem import GridConstraints, OperatingPoint

STATUS_VERSION = 1
BINDING_VOLTAGE_SHARE = 0.002  # of the bus's range max_vm_pu - min_vm_pu (0.0002 pu for 0.95..1.05)
BINDING_LOADING_PERCENT = 1.0  # percentage points below the loading limit
SHOWN_METERS = 8
CORNERS = ("pmax", "pmin")  # rows 1 and 2 of the load flows; row 0 is the operating point
BUS_VALUES = (
    "vm_pu",
    "vm_pu_at_pmax",
    "vm_pu_at_pmin",
    "min_vm_pu",
    "max_vm_pu",
    "vm_phase_pu",
    "unbalance_percent",
)


def grid_status(
    constraints: GridConstraints,
    point: OperatingPoint,
    p_kw: np.ndarray,
    band: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """``buses``, ``branches`` and ``binding`` of the status document.

    ``p_kw`` are the flexibilities' powers at the operating point and ``band`` their
    ``(p_min_kw, p_max_kw)``, in ``constraints.flexibilities`` order.
    """
    grid = constraints.grid
    n_flex = len(constraints.flexibilities)
    schedules = [p_kw] if band is None else [p_kw, band[1], band[0]]
    x = np.asarray(schedules, dtype=float).reshape(len(schedules), n_flex)
    incidence = np.zeros((n_flex, grid.n_bus))
    incidence[np.arange(n_flex), grid.bus_positions([f.bus for f in constraints.flexibilities])] = 1.0
    # three-phase: incidence per bus and phase instead (PhaseConstraints)
    if isinstance(constraints, PhaseConstraints):
        flows = _phase_flows(constraints, point, x)
    else:
        p = point.p_kw[None, :] + x @ incidence
        flows = constraints.solver.solve(p, np.broadcast_to(point.q_kvar, p.shape))
    return {
        "buses": _buses(constraints, flows),
        "branches": _branches(constraints, flows),
        "binding": _binding(constraints, flows) if band is not None else [],
    }


@dataclass(frozen=True)
class _PhaseFlows:
    """Three-phase load flows reduced to the balanced status's shapes (see the module doc)."""

    vm_pu: np.ndarray  # (K, n_bus) lowest phase
    vm_max_pu: np.ndarray  # (K, n_bus) highest phase
    vm_phase_pu: np.ndarray  # (K, n_bus, 3)
    unbalance_percent: np.ndarray  # (K, n_bus)
    line_loading_percent: np.ndarray  # (K, n_line) most loaded phase
    trafo_loading_percent: np.ndarray


def _phase_flows(constraints: PhaseConstraints, point: OperatingPoint, x: np.ndarray) -> _PhaseFlows:
    n = constraints.grid.n_bus
    p = np.asarray(point.p_kw, dtype=float).reshape(1, n, 3) + (x @ constraints.incidence).reshape(-1, n, 3)
    q = np.broadcast_to(np.asarray(point.q_kvar, dtype=float).reshape(1, n, 3), p.shape)
    flows = constraints.solver.solve(p, q)
    return _PhaseFlows(
        vm_pu=flows.vm_pu.min(axis=2),
        vm_max_pu=flows.vm_pu.max(axis=2),
        vm_phase_pu=flows.vm_pu,
        unbalance_percent=flows.unbalance_percent,
        line_loading_percent=flows.line_loading_percent.max(axis=2),
        trafo_loading_percent=flows.trafo_loading_percent.max(axis=2),
    )


def status_document(
    *,
    minute: int,
    computed_at: float,
    seconds: float,
    published: bool,
    reason: str,
    objective: str,
    measured_buses: int = 0,
    stale_meters: Sequence[str] = (),
    flexibilities: Sequence[Flexibility] = (),
    p_kw: Sequence[float | None] = (),
    band: tuple[Sequence[float], Sequence[float]] | None = None,
    result: BandResult | None = None,
    grid: dict | None = None,
    forecast: dict | None = None,
) -> dict:
    """The whole document (see the module docstring). ``p_kw`` is each flexibility's metered
    power (None: no fresh reading, counted as 0); ``band`` the published (or computed) band;
    ``grid`` what ``grid_status`` returned (None: buses, branches and binding are empty);
    ``forecast`` what the band was computed for (``ocm.oracle``; None: not known)."""
    metered = list(p_kw) if p_kw else [None] * len(flexibilities)
    low, high = band if band is not None else ([None] * len(flexibilities),) * 2
    report = result.verification if result is not None else None
    grid = grid or {"buses": [], "branches": [], "binding": []}
    return {
        "version": STATUS_VERSION,
        "minute": minute,
        "computed_at": round(computed_at, 3),
        "seconds": round(seconds, 4),
        "solve_seconds": round(result.seconds, 4) if result is not None else None,
        "feasible": result.feasible if result is not None else None,
        "published": published,
        "reason": reason,
        "objective": objective,
        "measured_buses": measured_buses,
        "forecast": forecast,
        "stale_meters": {"count": len(stale_meters), "first": list(stale_meters[:SHOWN_METERS])},
        "flexibilities": [
            {
                "flex_id": flex.name,
                "bus": int(flex.bus),
                "p_low_kw": _number(flex.p_low_kw),
                "p_high_kw": _number(flex.p_high_kw),
                "p_min_kw": _number(p_min),
                "p_max_kw": _number(p_max),
                "p_kw": _number(now) if now is not None else 0.0,
                "metered": now is not None,
            }
            for flex, p_min, p_max, now in zip(flexibilities, low, high, metered, strict=True)
        ],
        "verification": None
        if report is None
        else {
            "passed": report.passed,
            "schedules": report.schedules,
            "failures": report.failures,
            "v_min_pu": _number(report.v_min_pu, 6),
            "v_max_pu": _number(report.v_max_pu, 6),
            "max_loading_percent": _number(report.max_loading_percent, 4),
            "message": report.message,
            "adjustment": report.adjustment,
        },
        **grid,
    }


def write_status(path: Path, document: dict) -> None:
    """Writes ``document`` as JSON to ``path`` atomically: readers see the old file or the new
    one, never a part (a temporary file next to it, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        temporary.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ parts


def _buses(constraints: GridConstraints, flows: HelmResult) -> list[dict]:
    grid, limits = constraints.grid, constraints.limits
    position = dict(zip(grid.bus_ids.tolist(), range(grid.n_bus), strict=True))
    vm = flows.vm_pu
    phases = getattr(flows, "vm_phase_pu", None)
    unbalance = getattr(flows, "unbalance_percent", None)
    corners = len(vm) == 3
    buses = []
    for bus in grid.all_bus_ids.tolist():
        k = position.get(bus)
        if k is None:  # de-energised
            buses.append({"bus": int(bus), **dict.fromkeys(BUS_VALUES)})
            continue
        buses.append(
            {
                "bus": int(bus),
                "vm_pu": _number(vm[0, k], 6),
                "vm_pu_at_pmax": _number(vm[1, k], 6) if corners else None,
                "vm_pu_at_pmin": _number(vm[2, k], 6) if corners else None,
                "min_vm_pu": _number(limits.v_min_pu[k]),
                "max_vm_pu": _number(limits.v_max_pu[k]),
                "vm_phase_pu": [_number(v, 6) for v in phases[0, k]] if phases is not None else None,
                "unbalance_percent": _number(unbalance[0, k], 4) if unbalance is not None else None,
            }
        )
    return buses


def _branches(constraints: GridConstraints, flows: HelmResult) -> list[dict]:
    limits = constraints.limits
    loading = np.concatenate([flows.line_loading_percent, flows.trafo_loading_percent], axis=1)
    limit = np.concatenate([limits.line_max_loading_percent, limits.trafo_max_loading_percent])
    corners = np.max(loading[1:], axis=0) if len(loading) == 3 else None
    branches = []
    for b, (kind, index) in enumerate(_branch_names(constraints)):
        branches.append(
            {
                "kind": kind,
                "index": index,
                "loading_percent": _number(loading[0, b], 4),
                "loading_percent_at_corners": _number(corners[b], 4) if corners is not None else None,
                "limit_percent": _number(limit[b]),
            }
        )
    return branches


def _binding(constraints: GridConstraints, flows: HelmResult) -> list[dict]:
    """The limits a corner reaches or nearly reaches, closest (in the margins' scale of
    ``GridConstraints``: pu, and per unit of the rating) first."""
    grid, limits = constraints.grid, constraints.limits
    found: list[tuple[float, dict]] = []
    buses = constraints.voltage_buses
    v_min, v_max = limits.v_min_pu[buses], limits.v_max_pu[buses]
    tolerance = BINDING_VOLTAGE_SHARE * (v_max - v_min)
    vm_low = flows.vm_pu[1:, buses]
    vm_high = getattr(flows, "vm_max_pu", flows.vm_pu)[1:, buses]  # three-phase: the highest phase
    for kind, margin, limit, vm in (
        ("voltage_min", vm_low - v_min, v_min, vm_low),
        ("voltage_max", v_max - vm_high, v_max, vm_high),
    ):
        corner, closest = _closest_corner(margin)
        for j in np.flatnonzero(closest <= tolerance):
            entry = _entry(kind, "bus", int(grid.bus_ids[buses[j]]), vm[corner[j], j], limit[j], corner[j])
            found.append((float(closest[j]), entry))
    loading = np.concatenate([flows.line_loading_percent, flows.trafo_loading_percent], axis=1)
    limit = np.concatenate([limits.line_max_loading_percent, limits.trafo_max_loading_percent])
    rated = constraints.branches
    corner, closest = _closest_corner(limit[rated] - loading[1:, rated])
    names = _branch_names(constraints)
    for j in np.flatnonzero(closest <= BINDING_LOADING_PERCENT):
        b = rated[j]
        entry = _entry("loading", *names[b], loading[1 + corner[j], b], limit[b], corner[j])
        found.append((float(closest[j]) / 100.0, entry))
    return [entry for _, entry in sorted(found, key=lambda item: item[0])]


def _closest_corner(margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per limit (column), the corner (row) with the smaller margin and that margin; NaN (no
    load flow solution) never counts as close."""
    margin = np.where(np.isnan(margin), np.inf, margin)
    corner = np.argmin(margin, axis=0)
    return corner, margin[corner, np.arange(margin.shape[1])]


def _entry(kind: str, element: str, index: int, value: float, limit: float, corner: int) -> dict:
    digits = 6 if element == "bus" else 4
    return {
        "kind": kind,
        "element": element,
        "index": index,
        "value": _number(value, digits),
        "limit": _number(limit),
        "corner": CORNERS[corner],
    }


def _branch_names(constraints: GridConstraints) -> list[tuple[str, int]]:
    grid = constraints.grid
    return [("line", int(i)) for i in grid.line_ids] + [("trafo", int(i)) for i in grid.trafo_ids]


def _number(value, digits: int | None = None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, digits) if digits is not None else value
