"""The meter simulator: registered meters on a real LV feeder publish signed readings.

For every minute, each household meter's household (``node.simulation.profiles``) gives P and
Q; a flexibility's own meter reports what the flexibility executes: its matched net energy
in the minute's market slot (the chain's ``EnergyMarket.schedule``) as average kW, clipped
into the band in force for that minute (0 kW without a published band), Q = 0. The bus
loads go through a HELM load flow of the feeder, which gives every bus's V and θ; each
meter signs its reading with its own key and publishes it on the gateway's topic. The
clock replays past minutes at ``speed`` times the community clock, then runs with it.

Meters report per phase (``per_phase``): a three-phase meter ("abc") its P and Q split
evenly over L1, L2, L3, a single-phase meter ("a", "b" or "c": L1, L2, L3) all of it on its
phase; each phase has its bus's V and θ shifted by the phase's nominal displacement (0°,
−120°, +120°). The load flow is balanced, so the phases' V and θ are those of the balanced
feeder.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from contracts import clock as community_clock
from contracts.accounts import Keyring
from contracts.clock import SECONDS_PER_MINUTE, floor_to_minute, minute_of, minute_start
from contracts.community import Community
from contracts.ledger import PHASE_DISPLACEMENT_DEG, PHASE_NAMES, PhaseReading, Phases, Reading, wrap_degrees
from contracts.registry import Meter, Role
from gateway.payload import OBIS_PHASES, sign_payload
from gateway.service import MqttSettings, reading_topic
from node.simulation import profiles
from ocm.phase_loads import CONNECTED_PHASES

log = logging.getLogger(__name__)

PUBLISH_DELAY_S = 2  # a minute's reading leaves the meter this long after the minute ends
REGISTRATION_GAS = 400_000
SIMULATED_MEMBER = "sim-member"


@dataclass(frozen=True)
class SimulatorSettings:
    network: Path | None = None  # None: pandapower's Kerber Dorfnetz
    start_offset_minutes: int = 0  # first minute relative to now (negative: replay the past)
    minutes: int | None = None  # stop after this many minutes
    speed: float = 1.0  # clock speed while replaying
    seed: int = 1
    payload_form: str = "json"  # or "obis"
    register_meters: int = 0  # make sure the community has this many meters
    nominal_voltage_v: float = 230.0
    per_phase: bool = True  # readings carry their phases (False: totals only, as before phases)
    meter_phases: Mapping[str, str] = field(default_factory=dict)  # meter id → "a", "b", "c"; else "abc"


@dataclass
class SimulatedMeter:
    meter: Meter
    bus_position: int
    household: profiles.Household
    key: object  # the meter's LocalAccount
    flex_id: str | None = None  # a flexibility's own meter: it reports the flexibility's schedule
    phase: str = "abc"  # the phases it measures: "a", "b", "c" or "abc"


class FeederSimulation:
    """Households on the buses of a feeder; ``readings(times)`` gives consistent P, Q, V, θ."""

    def __init__(
        self,
        grid,
        meters: list[SimulatedMeter],
        seed: int,
        device_kw: Callable[[str, int], float] | None = None,
        per_phase: bool = True,
    ):
        from ocm.grid.helm import HelmSolver

        self.grid = grid
        self.meters = meters
        self.seed = seed
        self.device_kw = device_kw  # (flex id, minute start) -> kW; None: flexibilities idle
        self.per_phase = per_phase
        self._solver = HelmSolver(grid)

    def readings(self, times: list[int]) -> list[list[Reading]]:
        """Per minute of ``times``: the reading of every meter."""
        stamps = np.array(times, dtype=float)
        irradiance = profiles.clear_sky_ghi(stamps) * profiles.cloud_factor(stamps, self.seed)
        h0 = {m.meter.meter_id: profiles.h0_kw(stamps, m.household.annual_kwh) for m in self.meters}
        p = np.zeros((len(times), self.grid.n_bus))
        q = np.zeros_like(p)
        powers = np.zeros((len(times), len(self.meters), 2))
        for k, time_s in enumerate(times):
            for j, sim in enumerate(self.meters):
                if sim.flex_id is None:
                    powers[k, j] = sim.household.minute(time_s, h0[sim.meter.meter_id][k], irradiance[k])
                elif self.device_kw is not None:
                    powers[k, j, 0] = self.device_kw(sim.flex_id, time_s)
                p[k, sim.bus_position] += powers[k, j, 0]
                q[k, sim.bus_position] += powers[k, j, 1]
        flow = self._solver.solve(p, q)
        if not flow.all_converged:
            raise ValueError(f"the load flow of the feeder did not converge: {flow.reasons[0]}")
        readings = []
        for k, time_s in enumerate(times):
            minute = []
            for j, sim in enumerate(self.meters):
                p_kw, q_kvar = float(powers[k, j, 0]), float(powers[k, j, 1])
                v_pu = round(float(flow.vm_pu[k, sim.bus_position]), 6)
                theta_deg = round(float(flow.va_degree[k, sim.bus_position]), 6)
                phases = phase_values(sim.phase, p_kw, q_kvar, v_pu, theta_deg) if self.per_phase else None
                minute.append(
                    Reading(
                        sim.meter.meter_id, time_s, round(p_kw, 3), round(q_kvar, 3), v_pu, theta_deg, phases
                    )
                )
            readings.append(minute)
        return readings


def phase_values(phase: str, p_kw: float, q_kvar: float, v_pu: float, theta_deg: float) -> Phases:
    """The phases a meter on ``phase`` ("a", "b", "c" or "abc") reports on a balanced feeder:
    P and Q split evenly over its phases, each with V and θ plus the phase's displacement."""
    connected = CONNECTED_PHASES[phase]
    share = 1.0 / len(connected)
    return tuple(  # type: ignore[return-value]
        PhaseReading(
            round(p_kw * share, 3),
            round(q_kvar * share, 3),
            v_pu,
            round(wrap_degrees(theta_deg + PHASE_DISPLACEMENT_DEG[k]), 6),
        )
        if k in connected
        else None
        for k in range(len(PHASE_NAMES))
    )


def load_feeder(network: Path | None, seed: int):
    """The grid model of ``network``, or of pandapower's Kerber Dorfnetz (seeded)."""
    from ocm.grid.network_io import grid_from_pandapower, read_network

    if network is not None:
        return read_network(network), None
    import pandapower.networks as pn

    random.seed(seed)  # Kerber generators draw line lengths from the unseeded `random`
    net = pn.create_kerber_dorfnetz()
    return grid_from_pandapower(net), sorted(set(net.load.bus.tolist()))


def place_meters(
    community: Community,
    keyring: Keyring,
    grid,
    load_buses,
    seed: int,
    meter_phases: Mapping[str, str] | None = None,
) -> list[SimulatedMeter]:
    """Active registered meters whose key is in the keyring, at their bus (or, when the
    registered bus is not a load bus of this feeder, spread over the load buses), on the
    phases ``meter_phases`` gives them (default "abc")."""
    buses = [b for b in (load_buses or grid.bus_ids.tolist()) if b in set(grid.bus_ids.tolist())]
    position = {bus: i for i, bus in enumerate(grid.bus_ids.tolist())}
    placed = []
    for n, meter_id in enumerate(community.registry.meter_ids()):
        meter = community.registry.meter(meter_id)
        key = keyring[f"meter-{meter_id}"].account
        if not meter.active or key.address != meter.signer:
            log.info("skipping meter %s (inactive, or its key is not in the keyring)", meter_id)
            continue
        bus = meter.bus if meter.bus in buses else buses[n % len(buses)]
        rng = np.random.default_rng([seed, n])
        household = profiles.Household.random(rng, seed=seed * 100_003 + n)
        flex_id = community.registry.flexibility_of_meter(meter_id)
        phase = (meter_phases or {}).get(meter_id, "abc")
        placed.append(SimulatedMeter(meter, position[bus], household, key, flex_id, phase))
    return placed


def executed_kw(community: Community, flex_id: str, minute_start_s: int) -> float:
    """What a flexibility executes in a minute (kW, load convention): its matched net energy in
    the minute's slot as average power, clipped into the minute's published band (none: 0)."""
    from contracts.limits import BandSource

    band = community.limits.band_at(flex_id, minute_start_s)
    if band.source == BandSource.HARDWARE_BOUNDS:
        return 0.0
    slot = community.clock.slot_of(minute_start_s)
    matched_kwh = community.market.schedule(flex_id, slot).matched_net_kwh
    average_kw = matched_kwh * 60.0 / community.slot_minutes
    return min(max(average_kw, band.p_min_kw), band.p_max_kw)


def ensure_meters(community: Community, keyring: Keyring, count: int, load_buses: list[int]) -> None:
    """Register meters ``S001``… (admin key) until the community has ``count`` meters."""
    existing = [
        m for m in community.registry.meter_ids() if community.registry.flexibility_of_meter(m) is None
    ]
    missing = registering = count - len(existing)
    if missing <= 0:
        return
    admin, member = keyring["admin"], keyring[SIMULATED_MEMBER]
    calls = []
    if not community.registry.has_role(Role.MEMBER, member.address):
        calls.append((community.registry.add_member_call(member.address, SIMULATED_MEMBER), admin))
    number = 1
    while missing:
        meter_id = f"S{number:03d}"
        number += 1
        if meter_id in existing:
            continue
        bus = load_buses[(number - 2) % len(load_buses)] if load_buses else 1
        signer = keyring[f"meter-{meter_id}"].address
        meter = Meter(meter_id, bus, member.address, signer)
        calls.append((community.registry.register_meter_call(meter), admin))
        missing -= 1
    community.client.transact_all(calls, gas=REGISTRATION_GAS)
    log.info("registered %d meters", registering)


def payload_for(reading: Reading, seq: int, form: str, nominal_voltage_v: float, key) -> dict:
    """The signed payload of ``reading`` in the JSON or the OBIS form."""
    fields = {"meter_id": reading.meter_id, "time": reading.time, "seq": seq}
    if form == "obis":
        obis = _obis_import_export(("1-0:1.7.0", "1-0:2.7.0", "1-0:3.7.0", "1-0:4.7.0"), reading)
        obis |= {"1-0:32.7.0": round(reading.v_pu * nominal_voltage_v, 4), "1-0:81.7.4": reading.theta_deg}
        if reading.phases is not None:
            del obis["1-0:32.7.0"]  # the total voltage is the mean of the phases' (a meter on L2: L2's)
            for codes, phase in zip(OBIS_PHASES, reading.phases, strict=True):
                if phase is not None:  # the angles 81.7.1/81.7.2 are nominal: left out
                    obis |= _obis_import_export(codes[:4], phase)
                    obis[codes[4]] = round(phase.v_pu * nominal_voltage_v, 4)
        return sign_payload({**fields, "obis": obis}, key)
    values = {
        "p_kw": reading.p_kw,
        "q_kvar": reading.q_kvar,
        "v_pu": reading.v_pu,
        "theta_deg": reading.theta_deg,
    }
    if reading.phases is not None:
        values["phases"] = {
            name: vars(phase)
            for name, phase in zip(PHASE_NAMES, reading.phases, strict=True)
            if phase is not None
        }
    return sign_payload({**fields, **values}, key)


def _obis_import_export(codes: tuple, values: Reading | PhaseReading) -> dict[str, float]:
    """+P, −P, +Q, −Q registers (kW, kvar magnitudes) of ``values`` under ``codes``."""
    p_in, p_out, q_in, q_out = codes
    return {
        p_in: round(max(values.p_kw, 0.0), 3),
        p_out: round(max(-values.p_kw, 0.0), 3),
        q_in: round(max(values.q_kvar, 0.0), 3),
        q_out: round(max(-values.q_kvar, 0.0), 3),
    }


def run_simulation(
    community: Community,
    keyring: Keyring,
    mqtt_settings: MqttSettings,
    topic_community: str,
    settings: SimulatorSettings,
    clock: Callable[[], float] = community_clock.now,
    should_stop: Callable[[], bool] = lambda: False,
    meter_login: Callable[[str], tuple[str, str]] | None = None,
) -> int:
    """Publish readings until ``settings.minutes`` are done (or ``should_stop``); returns
    how many readings were published. With ``meter_login`` (meter id → user, password)
    every meter logs in as itself over a connection of its own, as a broker with an ACL
    needs (Mosquitto in ``lec up``); without, all meters publish over one connection
    with ``mqtt_settings``' login."""
    grid, load_buses = load_feeder(settings.network, settings.seed)
    if settings.register_meters:
        ensure_meters(community, keyring, settings.register_meters, load_buses or grid.bus_ids.tolist())
    meters = place_meters(community, keyring, grid, load_buses, settings.seed, settings.meter_phases)
    if not meters:
        raise ValueError("no active meter with a key in the keyring to simulate (try --register --meters N)")
    simulation = FeederSimulation(
        grid,
        meters,
        settings.seed,
        lambda flex_id, time_s: executed_kw(community, flex_id, time_s),
        per_phase=settings.per_phase,
    )
    keys = {sim.meter.meter_id: sim.key for sim in meters}
    clients: dict[str, mqtt.Client] = {}
    try:
        shared = _connect(mqtt_settings) if meter_login is None else None  # one connection for all
        for meter_id in keys:
            if shared is not None:
                clients[meter_id] = shared
            else:
                user, password = meter_login(meter_id)
                login = replace(mqtt_settings, username=user, password=password)
                clients[meter_id] = _connect(login, f"lec-meter-{meter_id}")
        first = floor_to_minute(clock()) + minute_start(min(settings.start_offset_minutes, 0))
        started = clock()
        published, minute, infos = 0, first, []
        log.info(
            "simulating %d meters on a %d-bus feeder from %s", len(meters), grid.n_bus, time.ctime(first)
        )
        while (
            settings.minutes is None or minute < first + minute_start(settings.minutes)
        ) and not should_stop():
            replay_due = started + (minute - first) / settings.speed
            minute_end = minute + SECONDS_PER_MINUTE
            wait = max(0.0, max(replay_due, minute_end + PUBLISH_DELAY_S) - clock())
            time.sleep(community_clock.real_seconds(wait))
            (readings,) = simulation.readings([minute])
            infos = []
            for reading in readings:
                key = keys[reading.meter_id]
                seq = minute_of(minute)
                payload = payload_for(reading, seq, settings.payload_form, settings.nominal_voltage_v, key)
                topic = reading_topic(topic_community, reading.meter_id)
                infos.append(clients[reading.meter_id].publish(topic, json.dumps(payload), qos=1))
            published += len(infos)
            minute += SECONDS_PER_MINUTE
        for info in infos:
            info.wait_for_publish(timeout=30)
    finally:
        for client in {id(client): client for client in clients.values()}.values():
            client.disconnect()
            client.loop_stop()
    return published


def _connect(settings: MqttSettings, name: str = "lec-simulator") -> mqtt.Client:
    client_id = f"{name}-{time.time_ns()}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    refused = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure and not refused:  # paho retries; say it once
            refused.append(reason_code)
            log.error("the MQTT broker refused %s (user %s): %s", client_id, settings.username, reason_code)

    client.on_connect = on_connect
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set()
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect(settings.host, settings.port)
    client.loop_start()
    return client
