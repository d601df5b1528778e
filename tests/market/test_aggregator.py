"""The aggregator's bid model (market.pricing.aggregator): bids that its devices can deliver, at a
price that covers the re-profiling, and delivered schedules that keep every device's own
constraints."""

from __future__ import annotations

import numpy as np
import pytest

from market.pricing.aggregator import aggregator_bids, baseline_schedules, per_load_point
from market.pricing.dt import ElectricVehicle, HeatPump, outdoor_temperature, random_fleet, spot_price_shape
from market.pricing.requirements import RequirementTable
from market.pricing.tfm import Requirement, clear_central

HOURS = 24
SPOT = spot_price_shape(HOURS, seed=1)
NIGHT = frozenset(range(0, 7)) | frozenset(range(21, 24))


def table(*requirements: Requirement) -> RequirementTable:
    return RequirementTable(tuple(requirements))


def cheapest_hours(count: int) -> list[int]:
    return sorted(np.argsort(SPOT)[:count].tolist())


def test_an_ev_offers_its_planned_charging_and_pays_it_back_later_at_the_spread():
    ev = ElectricVehicle(
        "ev1", "LP1", battery_kwh=40, arrival=18, departure=7, soc_arrival=0.5, aggregator="a"
    )
    plan = baseline_schedules([ev], SPOT)["ev1"]
    hour = int(np.argmax(plan))  # it charges at the cheapest plugged hours
    allowed = NIGHT - {hour}
    book = aggregator_bids([ev], SPOT, table(Requirement(hour, "LP1", 5.0, allowed)), markup=0.25)
    (bid,) = book.bids
    assert bid.kw == pytest.approx({hour: plan[hour]})
    assert bid.payback_hour in allowed
    assert bid.payback_kw == pytest.approx(plan[hour])  # the same energy, another hour
    spread = SPOT[bid.payback_hour] - SPOT[hour]
    assert bid.price == pytest.approx(max(spread, 0.0) + 0.25, abs=1e-6)


@pytest.mark.parametrize("fraction", [1.0, 0.4])
def test_delivered_schedules_keep_every_device_constraint(fraction):
    fleet = random_fleet(24, HOURS, ("LP1", "LP2", "LP3"), seed=5, aggregators=3)
    base = baseline_schedules(fleet, SPOT)
    busy = int(np.argmax(sum(base.values())))
    need = {lp: float(v[busy]) * fraction for lp, v in per_load_point(fleet, base, HOURS).items()}
    requirement = Requirement(busy, ("LP1", "LP2", "LP3"), 0.5 * sum(need.values()), NIGHT - {busy})
    book = aggregator_bids(fleet, SPOT, table(requirement))
    assert book.bids
    clearing = clear_central([requirement], list(book.bids), None)
    assert clearing.feasible
    delivered = book.schedules(clearing)
    for device in fleet:
        block = device.block(HOURS)
        power = delivered[device.device_id]
        assert (power >= -1e-9).all() and (power <= block.p_upper + 1e-9).all()
        if isinstance(device, ElectricVehicle):
            energy = device.efficiency * power.sum() / device.battery_kwh
            assert (
                device.soc_target - device.soc_arrival - 1e-9
                <= energy
                <= device.soc_max - device.soc_arrival + 1e-9
            )
        else:
            temperatures = device.temperatures(power)
            assert temperatures.min() >= device.t_min - 0.05 and temperatures.max() <= device.t_max + 0.05
    # the load points' change is what the market counts
    total = sum(delivered.values()) - sum(base.values())
    assert total[busy] == pytest.approx(-clearing.procured_kw[requirement.name], abs=1e-6)
    assert total.sum() == pytest.approx(
        sum(clearing.payback_kw.values()) - clearing.procured_kw[requirement.name]
    )


def test_a_heat_pump_bid_stays_in_its_comfort_band_and_pays_back_the_heat():
    outdoor = tuple(outdoor_temperature(HOURS, mean=-2.0))
    pump = HeatPump("hp1", "LP1", outdoor, rated_kw=4.0, cop=2.5, t_initial=21.0, aggregator="a")
    plan = baseline_schedules([pump], SPOT)["hp1"]
    hour = int(np.argmax(plan))
    book = aggregator_bids([pump], SPOT, table(Requirement(hour, "LP1", 1.0, set(range(HOURS)) - {hour})))
    (bid,) = book.bids
    assert 0 < bid.kw[hour] <= plan[hour] + 1e-9
    temperatures = pump.temperatures(book.baseline["hp1"] + book.changes[bid.bid_id]["hp1"])
    assert temperatures.min() >= pump.t_min - 1e-6 and temperatures.max() <= pump.t_max + 1e-6


def test_no_bid_where_the_devices_cannot_move_or_no_payback_hour_is_allowed():
    ev = ElectricVehicle("ev1", "LP1", arrival=18, departure=7, aggregator="a")
    plan = baseline_schedules([ev], SPOT)["ev1"]
    idle = int(np.flatnonzero(plan < 1e-9)[0])
    assert not aggregator_bids([ev], SPOT, table(Requirement(idle, "LP1", 1.0, NIGHT - {idle}))).bids
    busy = int(np.argmax(plan))
    assert not aggregator_bids([ev], SPOT, table(Requirement(busy, "LP1", 1.0, ()))).bids
    # devices at other load points are not asked
    assert not aggregator_bids([ev], SPOT, table(Requirement(busy, "LP9", 1.0, NIGHT - {busy}))).bids
