"""Flexibilities: the controllable loads, static generators and storages that OCM gives bands.

A network marks a flexibility as pandapower does for its OPF: an in-service ``load``, ``sgen``
or ``storage`` with ``controllable`` true and finite ``min_p_mw``/``max_p_mw``. OCM works in
load convention (consumption positive), so a static generator's limits change sign: an sgen
with ``min_p_mw = 0``, ``max_p_mw = 0.01`` may use ``[-10, 0]`` kW. A storage's ``p_mw`` is
already consumption (charging positive). The limits are used as given (``scaling`` does not
apply to them), and a flexibility's own ``p_mw`` plays no part in its band.

An optional integer column ``priority_group`` (default 0) orders the flexibilities: group 0 is
served first (see ``ocm.bands``). An optional column ``phase`` says how a flexibility is
connected: ``"a"``, ``"b"`` or ``"c"`` for a single-phase device (a 7.4 kW charger, a household
PV inverter), ``"abc"`` (the default) for a three-phase one; the three-phase OCM
(``ocm.phase_constraints``) puts its power on that phase, the balanced OCM ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ocm.grid.errors import NetworkError
from ocm.grid.model import Grid, NetworkTables

ELEMENTS = ("load", "sgen", "storage")
# Load-convention sign of each element's p_mw: generators inject what they "produce".
LOAD_SIGN = {"load": 1.0, "sgen": -1.0, "storage": 1.0}


@dataclass(frozen=True)
class Flexibility:
    """One flexibility; powers in kW, load convention (consumption positive)."""

    element: str  # "load", "sgen" or "storage"
    index: int  # index in the pandapower element table
    bus: int  # pandapower index of its bus
    name: str
    p_low_kw: float  # hardware limits
    p_high_kw: float
    priority_group: int = 0
    phase: str = "abc"  # "a", "b", "c" (single-phase) or "abc" (three-phase, split evenly)

    @property
    def key(self) -> str:
        """``"<element>.<index>"``, as in profile and band column names."""
        return f"{self.element}.{self.index}"

    @property
    def label(self) -> str:
        """Its name, or its key when it has none."""
        return self.name or self.key


def flexibilities_from_tables(
    tables: NetworkTables, grid: Grid, allow_none: bool = False
) -> tuple[Flexibility, ...]:
    """The flexibilities of a network, loads then sgens then storages, in table order.

    Raises ``NetworkError`` naming the element for missing, non-finite or inverted limits, a
    bad ``priority_group``, a flexibility at a de-energised bus, or when there is none (unless
    ``allow_none``: the OCM service takes its flexibilities from the chain).
    """
    energised = set(grid.bus_ids.tolist())
    found = []
    for element in ELEMENTS:
        table = getattr(tables, element)
        for index, row in table[_controllable(table)].iterrows():
            found.append(_flexibility(element, index, row, energised))
    if not found and not allow_none:
        raise NetworkError(
            "the network has no flexibilities: mark in-service loads, sgens or storages with "
            "controllable = true and give them min_p_mw and max_p_mw (native format: min_p_kw, max_p_kw)"
        )
    return tuple(found)


def flexible_load_by_bus(tables: NetworkTables, grid: Grid, flexibilities) -> np.ndarray:
    """The flexibilities' own active power as the network gives it, kW per bus of ``grid``.

    Subtracting it from ``grid.base_load_kw`` leaves the load that OCM does not control.
    """
    p = np.zeros(grid.n_bus)
    positions = grid.bus_positions([f.bus for f in flexibilities])
    for flexibility, position in zip(flexibilities, positions, strict=True):
        row = getattr(tables, flexibility.element).loc[flexibility.index]
        scaling = _number(row.get("scaling"), 1.0)
        p[position] += LOAD_SIGN[flexibility.element] * _number(row["p_mw"], 0.0) * scaling * 1e3
    return p


def _controllable(table: pd.DataFrame) -> pd.Series:
    if "controllable" not in table or table.empty:
        return pd.Series(False, index=table.index)
    in_service = table["in_service"] if "in_service" in table else pd.Series(True, index=table.index)
    flags = table["controllable"].astype(object)
    controllable = flags.where(flags.notna(), False).astype(bool)
    return controllable & in_service.astype(object).where(in_service.notna(), True).astype(bool)


def _flexibility(element: str, index, row: pd.Series, energised: set) -> Flexibility:
    where = f"{element} {index}"
    limits = []
    for column in ("min_p_mw", "max_p_mw"):
        value = pd.to_numeric(pd.Series([row.get(column)]), errors="coerce").iloc[0]
        if not np.isfinite(value):
            raise NetworkError(
                f"{where} is controllable but {column} is missing or not a finite number; a "
                "flexibility needs both min_p_mw and max_p_mw (native format: min_p_kw, max_p_kw), "
                "otherwise set controllable to false"
            )
        limits.append(float(value) * 1e3)
    low, high = limits
    if low > high:
        raise NetworkError(f"{where}: min_p_mw ({low / 1e3:g}) exceeds max_p_mw ({high / 1e3:g})")
    if element == "sgen":
        low, high = 0.0 - high, 0.0 - low
    bus = int(row["bus"])
    if bus not in energised:
        raise NetworkError(f"{where} is controllable but its bus {bus} is out of service or not supplied")
    return Flexibility(
        element=element,
        index=int(index),
        bus=bus,
        name="" if pd.isna(row.get("name")) else str(row.get("name")),
        p_low_kw=low,
        p_high_kw=high,
        priority_group=_priority_group(where, row.get("priority_group")),
        phase=_phase(where, row.get("phase")),
    )


PHASE_NAMES = ("a", "b", "c", "abc")


def _phase(where: str, value) -> str:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return "abc"
    phase = str(value).strip().lower()
    if phase not in PHASE_NAMES:
        raise NetworkError(f"{where}: phase must be one of a, b, c or abc, got {value!r}")
    return phase


def _priority_group(where: str, value) -> int:
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = np.nan
    if not (np.isfinite(number) and number == int(number) and number >= 0):
        raise NetworkError(f"{where}: priority_group must be a whole number ≥ 0, got {value!r}")
    return int(number)


def _number(value, default: float) -> float:
    return default if value is None or pd.isna(value) else float(value)
