"""Per-phase loads of a bus from its meters' readings (ocm.phase_loads, issue 17 part 4)."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.ledger import PhaseReading, Reading
from ocm.phase_loads import balanced_phase_loads, bus_phase_loads


def reading(meter_id: str, p_kw: float, q_kvar: float, phases=None) -> Reading:
    return Reading(meter_id, 0, p_kw, q_kvar, 1.0, 0.0, phases)


def test_phase_resolved_readings_give_their_phases():
    three = reading(
        "A",
        3.5,
        0.5,
        (PhaseReading(1.0, 0.1, 1, 0), PhaseReading(2.0, 0.2, 1, -120), PhaseReading(0.5, 0.2, 1, 120)),
    )
    on_l2 = reading("B", -4.0, 0.0, (None, PhaseReading(-4.0, 0.0, 1, -120), None))
    p, q = bus_phase_loads([three, on_l2])
    np.testing.assert_allclose(p, [1.0, -2.0, 0.5])
    np.testing.assert_allclose(q, [0.1, 0.2, 0.2])


@pytest.mark.parametrize(
    ("phase", "expected"), [("abc", [1.0, 1.0, 1.0]), ("a", [3.0, 0, 0]), ("c", [0, 0, 3.0])]
)
def test_a_reading_without_phases_is_split_evenly_or_put_on_its_meters_phase(phase, expected):
    p, q = bus_phase_loads([reading("M", 3.0, 0.6)], {"M": phase})
    np.testing.assert_allclose(p, expected)
    np.testing.assert_allclose(q, np.array(expected) * 0.2)


def test_a_meter_not_configured_is_three_phase_and_no_readings_is_no_load():
    np.testing.assert_allclose(bus_phase_loads([reading("X", 3.0, 0.0)], {"Y": "b"})[0], [1.0, 1.0, 1.0])
    p, q = bus_phase_loads([])
    assert p.tolist() == [0.0, 0.0, 0.0] and q.tolist() == [0.0, 0.0, 0.0]


def test_balanced_loads_become_a_third_per_phase():
    p, q = balanced_phase_loads(np.array([3.0, -6.0]), np.array([0.3, 0.0]))
    assert p.shape == (2, 3) and p.tolist() == [[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]]
    np.testing.assert_allclose(q.sum(axis=1), [0.3, 0.0])
