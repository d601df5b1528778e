"""The meter simulator on the Kerber Dorfnetz feeder: signed readings through the gateway,
and V, θ on chain are what a load flow of the recorded P, Q gives; a flexibility's own
meter reports what it traded, inside its band."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest

from contracts import clock
from contracts.ledger import PHASE_DISPLACEMENT_DEG, wrap_degrees
from market.agents import EvOwner, PvProsumer, trading_round
from node.simulation.meters import (
    SimulatorSettings,
    executed_kw,
    load_feeder,
    phase_values,
    place_meters,
    run_simulation,
)
from node.simulation.profiles import Household, h0_kw
from ocm.grid.helm import HelmSolver
from tests.gateway.conftest import start_gateway
from tests.gateway.helpers import wait_for
from tests.gateway.test_delivery import gateway_settings
from tests.market_setup import env, market_chain  # noqa: F401  (fixtures)


def test_household_profile_follows_h0_and_pv_injects_at_noon():
    noon, night = 1_751_371_200, 1_751_338_800  # 2025-07-01 12:00 and 03:00 UTC
    household = Household(annual_kwh=3500, pv_peak_kw=8.0, ev_kw=0.0, battery_kwh=0.0, seed=3)
    h0 = h0_kw(np.array([noon, night], dtype=float), 3500)
    assert 0.05 < h0[1] < h0[0] < 2.0
    assert household.minute(noon, h0[0], 800.0)[0] < -3.0  # PV exceeds the load
    assert household.minute(night, h0[1], 0.0)[0] > 0


@pytest.mark.parametrize("form", ["json", "obis"])
def test_simulated_readings_are_consistent(stack, artifacts, broker, tmp_path, topic_community, form):
    gateway = start_gateway(stack, artifacts, tmp_path / "q", gateway_settings(broker), topic_community)
    first_block = stack.head_block()
    offset = -8 if form == "json" else -4
    now = int(time.time())
    minutes = {(now - now % 60) // 60 + offset + k for k in range(2)}
    try:
        published = run_simulation(
            stack.community,
            stack.keyring,
            gateway_settings(broker),
            topic_community,
            SimulatorSettings(
                start_offset_minutes=offset,
                minutes=2,
                speed=1000,
                payload_form=form,
                meter_phases={"M01": "b", "M02": "c"},  # single-phase meters; the others three-phase
            ),
            clock=lambda: now,
        )
        wait_for(lambda: gateway.stats().get("delivered", 0) == published, 60, "the simulated readings")
        assert not any(key.startswith("rejected") for key in gateway.stats())
    finally:
        gateway.stop()

    recorded = stack.community.ledger.follow_readings(first_block).poll().items
    by_minute = defaultdict(dict)
    for item in recorded:
        if item.reading.minute in minutes:
            by_minute[item.reading.minute][item.reading.meter_id] = item.reading
    grid, load_buses = load_feeder(None, seed=1)
    meters = place_meters(stack.community, stack.keyring, grid, load_buses, seed=1)
    assert len(by_minute) == 2 and all(len(found) == len(meters) for found in by_minute.values())
    for found in by_minute.values():
        p, q = np.zeros(grid.n_bus), np.zeros(grid.n_bus)
        for sim in meters:
            p[sim.bus_position] += found[sim.meter.meter_id].p_kw
            q[sim.bus_position] += found[sim.meter.meter_id].q_kvar
        flow = HelmSolver(grid).solve(p, q)
        for sim in meters:
            recorded = found[sim.meter.meter_id]
            assert recorded.v_pu == pytest.approx(flow.vm_pu[0, sim.bus_position], abs=2e-4)
            assert recorded.theta_deg == pytest.approx(flow.va_degree[0, sim.bus_position], abs=2e-2)
            measured = [k for k, phase in enumerate(recorded.phases) if phase is not None]
            assert measured == {"M01": [1], "M02": [2]}.get(sim.meter.meter_id, [0, 1, 2])
            assert sum(recorded.phases[k].p_kw for k in measured) == pytest.approx(recorded.p_kw, abs=2e-3)
            for k in measured:
                shifted = recorded.phases[k].theta_deg - PHASE_DISPLACEMENT_DEG[k]
                assert wrap_degrees(shifted - recorded.theta_deg) == pytest.approx(0.0, abs=1e-5)
                assert recorded.phases[k].v_pu == recorded.v_pu  # the feeder's load flow is balanced


def test_phase_values_split_a_three_phase_meter_and_put_a_single_phase_one_on_its_phase():
    three = phase_values("abc", 3.0, 0.3, 1.01, 179.0)
    assert [ph.p_kw for ph in three] == [1.0, 1.0, 1.0] and [ph.q_kvar for ph in three] == [0.1] * 3
    assert [ph.theta_deg for ph in three] == [179.0, 59.0, -61.0]  # L3: 179° + 120° wrapped
    on_c = phase_values("c", 2.0, -0.5, 0.99, -1.0)
    assert on_c[:2] == (None, None) and (on_c[2].p_kw, on_c[2].q_kvar, on_c[2].theta_deg) == (
        2.0,
        -0.5,
        119.0,
    )


def test_a_flexibility_meter_reports_its_trades_as_average_power_inside_the_band(env):  # noqa: F811
    slot = env.open_slot()  # bands at the hardware bounds: EV 0..11 kW, PV -10..0, battery -20..20
    agents = [
        PvProsumer("carol", env["carol"], "PV", surplus_kw=8.0),
        EvOwner("bob", env["bob"], "EV", energy_kwh=1.5, deadline_slot=slot),
    ]
    trading_round(agents, env.community, slot)  # the EV buys 1.5 kWh of the PV's 2 kWh
    first, last = (clock.minute_start(m) for m in (slot * 15, slot * 15 + 14))
    assert executed_kw(env.community, "EV", first) == pytest.approx(6.0)  # 1.5 kWh in 15 minutes
    assert executed_kw(env.community, "PV", last) == pytest.approx(-6.0)
    assert executed_kw(env.community, "BAT", first) == 0.0  # nothing traded
    env.publish_band("EV", slot, 0, 4000)  # a tighter band: the charger keeps inside it
    assert executed_kw(env.community, "EV", first) == pytest.approx(4.0)
    assert executed_kw(env.community, "EV", clock.minute_start((slot + 1) * 15)) == 0.0  # no band, no power
