"""Per-phase loads of a bus from its meters' latest readings, for the three-phase OCM.

A reading that carries phases gives each measured phase its P and Q (a phase it does not
measure gets nothing from it); a reading without phases is a balanced total, split evenly
over the three phases, or put whole on its meter's phase when the meter is single-phase
(``meter_phases``: meter id → "a", "b" or "c"; "abc" or absent: three-phase). Phases a, b, c
are the meters' L1, L2, L3. kW and kvar, load convention. Pure computation: any object with
``meter_id``, ``p_kw``, ``q_kvar`` and ``phases`` (None, or three items that are None or
have ``p_kw`` and ``q_kvar``) is a reading here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# The phases (0 = a = L1) a meter of each configuration is connected to.
CONNECTED_PHASES = {"a": (0,), "b": (1,), "c": (2,), "abc": (0, 1, 2)}


def bus_phase_loads(
    readings: Iterable[Any], meter_phases: Mapping[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(P kW per phase a, b, c; Q kvar per phase) of the sum of ``readings``."""
    p_kw, q_kvar = np.zeros(3), np.zeros(3)
    for reading in readings:
        if reading.phases is not None:
            for k, phase in enumerate(reading.phases):
                if phase is not None:
                    p_kw[k] += phase.p_kw
                    q_kvar[k] += phase.q_kvar
            continue
        connected = CONNECTED_PHASES[(meter_phases or {}).get(reading.meter_id, "abc")]
        for k in connected:
            p_kw[k] += reading.p_kw / len(connected)
            q_kvar[k] += reading.q_kvar / len(connected)
    return p_kw, q_kvar


def balanced_phase_loads(p_kw: np.ndarray, q_kvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Balanced per-bus loads (n_bus,) as (n_bus, 3) per-phase loads: a third on each phase."""
    thirds = [np.repeat(np.asarray(values, dtype=float)[:, None] / 3, 3, axis=1) for values in (p_kw, q_kvar)]
    return thirds[0], thirds[1]
