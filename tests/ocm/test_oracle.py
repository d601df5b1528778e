"""The OCM service on a real (embedded) chain: readings in, verified bands out."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import numpy as np
import pandapower as pp
import pytest

from contracts import clock
from contracts.client import ChainError
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import PhaseReading, Reading
from contracts.limits import BandSource
from contracts.registry import Flexibility, FlexKind, Meter, Role
from node.embedded import open_embedded_chain
from ocm.bands import OcmProblem
from ocm.examples import paper_test_feeder
from ocm.grid.network_io import read_network_tables
from ocm.oracle import OcmService, ServiceSettings
from tests.community_setup import populate


@pytest.fixture(scope="module")
def feeder_file(tmp_path_factory):
    """The paper's test feeder without its own flexibilities (those come from the chain)."""
    net = paper_test_feeder()
    net.load["controllable"] = False
    path = tmp_path_factory.mktemp("ocm-service") / "feeder.json"
    pp.to_json(net, str(path))
    return path, net


@pytest.fixture(scope="module")
def chain():
    embedded = open_embedded_chain(None, period=1)
    yield embedded
    embedded.stop()


@pytest.fixture
def deployed(artifacts, feeder_file, chain):
    """A fresh community (so readings of one test do not meet another's)."""
    _, net = feeder_file
    client, keyring = chain.client(artifacts), chain.keyring
    admin = keyring["admin"]
    community = Community(client, deploy_community(client, admin, CommunityConfig()))
    bus_of = {
        name: int(net.load.bus[net.load.name == name].iloc[0]) for name in ("UL01", "UL02", "CS01", "CS02")
    }
    member = keyring["member"].address
    populate(
        community,
        keyring,
        {"ocm": Role.OCM_ORACLE, "gateway": Role.GATEWAY},
        ["member"],
        [Meter(meter_id, bus_of[meter_id], member, member) for meter_id in ("UL01", "UL02")]
        + [Meter(f"M-{flex_id}", bus_of[flex_id], member, member) for flex_id in ("CS01", "CS02")],
        [  # each flexibility has its own meter
            Flexibility(flex_id, member, bus_of[flex_id], FlexKind.EV_CHARGER, 0.0, 22.0, 0, f"M-{flex_id}")
            for flex_id in ("CS01", "CS02")
        ],
    )
    return chain, community, keyring


def record(community, keyring, minute, ul01_kw, ul02_kw, **flexibility_kw):
    """Readings of UL01 and UL02 (Q = 0) and of the flexibilities' meters given as
    ``CS01=5.0``."""
    readings = [
        Reading("UL01", clock.minute_start(minute), ul01_kw, 0.0, 0.99, 0.0),
        Reading("UL02", clock.minute_start(minute), ul02_kw, 0.0, 0.98, 0.0),
    ] + [
        Reading(f"M-{flex_id}", clock.minute_start(minute), kw, 0.0, 0.98, 0.0)
        for flex_id, kw in flexibility_kw.items()
    ]
    community.ledger.record_readings(keyring["gateway"], readings)


def chain_minute(community):
    return clock.minute_of(community.client.latest_timestamp())


def service_for(deployed, feeder_file, status_file=None, **settings):
    _, community, keyring = deployed
    return OcmService(
        community,
        keyring["ocm"],
        read_network_tables(feeder_file[0]),
        ServiceSettings(**settings),
        status_file=status_file,
    )


def test_measured_readings_give_verified_bands_on_chain(deployed, feeder_file):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 1, 8.0, 8.0)
    service = service_for(deployed, feeder_file, horizon_minutes=5)
    outcome = service.cycle(now)
    assert outcome.published and outcome.result.feasible and outcome.measured_buses == 2
    assert outcome.stale_meters == []
    cs01, cs02 = outcome.result.p_max_kw
    assert cs01 > cs02 > 0, "the charger nearer the transformer gets more (the paper's finding)"
    for band in outcome.bands:
        for minute in (now + 1, now + 5):
            in_force = community.limits.band_at(band.flex_id, clock.minute_start(minute))
            assert (in_force.p_min_kw, in_force.p_max_kw, in_force.source) == (
                band.p_min_kw,
                band.p_max_kw,
                BandSource.OCM,
            )
        assert (
            community.limits.band_at(band.flex_id, clock.minute_start(now + 6)).source
            == BandSource.HARDWARE_BOUNDS
        )
    published = {b.flex_id: b for b in outcome.bands}
    assert published["CS02"].p_max_kw <= cs02 and cs02 - published["CS02"].p_max_kw < 0.001


def test_bands_follow_the_measured_load_not_the_network_file(deployed, feeder_file):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 2, 1.0, 1.0)
    light = service_for(deployed, feeder_file).cycle(now)
    record(community, keyring, now - 1, 20.0, 20.0)
    heavy = service_for(deployed, feeder_file).cycle(now)
    assert sum(light.result.p_max_kw) > sum(heavy.result.p_max_kw) + 1.0


def test_stale_readings_fall_back_to_the_network_forecast(deployed, feeder_file):
    service = service_for(deployed, feeder_file, stale_after_minutes=2)
    _, community, _ = deployed
    far_future = chain_minute(community) + 60  # every reading is older than 2 minutes by then
    outcome = service.cycle(far_future)
    assert sorted(outcome.stale_meters) == ["UL01", "UL02"] and outcome.measured_buses == 0
    expected = OcmProblem(service.grid, service._problem.flexibilities).solve(service.forecast)
    assert outcome.result.p_max_kw == pytest.approx(expected.p_max_kw, abs=1e-6)


def test_run_publishes_at_once_and_stops_when_told(deployed, feeder_file):
    _, community, _ = deployed
    service = service_for(deployed, feeder_file, horizon_minutes=2)
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,), daemon=True)
    first = chain_minute(community) + 1  # the cycle starts this minute or the next
    runner.start()
    try:
        minutes = [clock.minute_start(first), clock.minute_start(first + 1)]
        deadline = time.monotonic() + 60
        while all(community.limits.band_at("CS01", m).source != BandSource.OCM for m in minutes):
            assert time.monotonic() < deadline, "no band published by the first cycle"
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()


def test_high_load_publishes_the_least_violating_zero_width_band(deployed, feeder_file, tmp_path):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 1, 95.0, 8.0)
    outcome = service_for(deployed, feeder_file, tmp_path / "status.json").cycle(now)
    assert outcome.published and not outcome.result.feasible
    assert all((b.p_min_kw, b.p_max_kw) == (0.0, 0.0) for b in outcome.bands)
    assert "least-violating" in outcome.reason
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["published"] and status["feasible"] is False and "least-violating" in status["reason"]
    violated = [b for b in status["binding"] if b["value"] < b["limit"]]  # beyond the limit
    assert violated and violated[0]["kind"] == "voltage_min" and violated[0]["element"] == "bus"


def test_a_band_that_failed_verification_is_never_published(deployed, feeder_file, monkeypatch, tmp_path):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 1, 5.0, 5.0)
    original = OcmProblem.solve

    def failing_verification(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        return replace(result, verification=replace(result.verification, passed=False, message="forced"))

    monkeypatch.setattr(OcmProblem, "solve", failing_verification)
    before = community.client.w3.eth.get_transaction_count(keyring["ocm"].address)
    status_file = tmp_path / "ocm" / "status.json"
    outcome = service_for(deployed, feeder_file, status_file).cycle(now)
    assert not outcome.published and "verification failed" in outcome.reason
    assert community.client.w3.eth.get_transaction_count(keyring["ocm"].address) == before
    status = json.loads(status_file.read_text())
    assert status["published"] is False and "verification failed" in status["reason"]
    assert status["verification"]["passed"] is False and status["verification"]["message"] == "forced"
    assert [f["p_max_kw"] for f in status["flexibilities"]] == pytest.approx(outcome.result.p_max_kw)
    assert all(bus["vm_pu_at_pmax"] is not None for bus in status["buses"])


def test_oracle_command_line_errors(tmp_path, feeder_file, capsys):
    from node.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["oracle", "run"])
    assert exit_.value.code == 2
    assert "the following arguments are required: NET" in capsys.readouterr().err
    assert main(["oracle", "run", str(feeder_file[0]), "--data-dir", str(tmp_path)]) == 2
    assert "no community deployment recorded" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ocm", str(feeder_file[0]), "--extra"])
    assert "unrecognized arguments: --extra" in capsys.readouterr().err


def test_oracle_once_publishes_through_json_rpc(deployed, feeder_file, tmp_path, capsys):
    from node.cli.main import main

    chain, community, keyring = deployed
    url = chain.serve("127.0.0.1", 0) if chain.server is None else chain.server.url
    community.deployment.save(tmp_path)
    (tmp_path / "keys.json").write_text(json.dumps({"ocm": keyring["ocm"].account.key.hex()}))
    record(community, keyring, chain_minute(community) - 1, 8.0, 8.0)
    code = main(
        ["-q", "oracle", "run", str(feeder_file[0]), "--data-dir", str(tmp_path), "--rpc-url", url, "--once"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "published" in out and "CS01" in out and "CS02" in out
    status = json.loads((tmp_path / "ocm" / "status.json").read_text())  # for the DSO's view
    assert status["published"] and [f["flex_id"] for f in status["flexibilities"]] == ["CS01", "CS02"]


# ------------------------------------------------------------------ the status file (issue 14)


def test_status_file_describes_the_cycle_and_agrees_with_pandapower(deployed, feeder_file, tmp_path):
    _, community, keyring = deployed
    _, net = feeder_file
    now = chain_minute(community)
    record(community, keyring, now - 1, 8.0, 8.0, CS01=5.0)  # CS01's meter: 5 kW now
    status_file = tmp_path / "ocm" / "status.json"
    outcome = service_for(deployed, feeder_file, status_file).cycle(now)
    assert outcome.published and outcome.result.feasible
    status = json.loads(status_file.read_text())
    assert not list(status_file.parent.glob(".*.tmp")), "the temporary file is replaced"

    assert status["version"] == 1 and status["minute"] == now and status["objective"] == "sum"
    assert status["published"] and status["feasible"] and status["reason"] == "published"
    assert status["seconds"] >= status["solve_seconds"] > 0 and status["computed_at"] > 1.6e9
    assert status["measured_buses"] == 2 and status["stale_meters"] == {"count": 0, "first": []}
    assert status["verification"]["passed"] and status["verification"]["failures"] == 0
    flexibilities = {f["flex_id"]: f for f in status["flexibilities"]}
    for band in outcome.bands:
        flex = flexibilities[band.flex_id]
        assert (flex["p_min_kw"], flex["p_max_kw"]) == (band.p_min_kw, band.p_max_kw)
        assert (flex["p_low_kw"], flex["p_high_kw"]) == (0.0, 22.0)
    assert (flexibilities["CS01"]["p_kw"], flexibilities["CS01"]["metered"]) == (5.0, True)
    assert (flexibilities["CS02"]["p_kw"], flexibilities["CS02"]["metered"]) == (0.0, False)

    buses = {b["bus"]: b for b in status["buses"]}
    assert sorted(buses) == sorted(net.bus.index)
    branches = {(b["kind"], b["index"]): b for b in status["branches"]}
    assert sorted(branches) == sorted(
        [("line", i) for i in net.line.index] + [("trafo", i) for i in net.trafo.index]
    )
    for bus in buses.values():  # every flexibility consumes: P_max lowers, P_min raises voltages
        assert bus["vm_pu_at_pmax"] <= bus["vm_pu"] + 1e-9 <= bus["vm_pu_at_pmin"] + 2e-9
        assert (bus["min_vm_pu"], bus["max_vm_pu"]) == (0.95, 1.05)
    for branch in branches.values():
        assert branch["loading_percent"] <= branch["loading_percent_at_corners"] + 1e-6
        assert branch["limit_percent"] == 100.0
    lowest = min(buses.values(), key=lambda b: b["vm_pu_at_pmax"])
    assert lowest["vm_pu_at_pmax"] == pytest.approx(outcome.result.v_min_pu_at_pmax, abs=1e-6)

    # CS02's P_max (below its 22 kW) is set by the feeder end's lower voltage limit
    assert outcome.result.p_max_kw[1] < 21.0
    binding = status["binding"][0]
    assert (binding["kind"], binding["element"], binding["index"], binding["corner"]) == (
        "voltage_min",
        "bus",
        lowest["bus"],
        "pmax",
    )
    assert binding["limit"] == 0.95 and binding["value"] == pytest.approx(0.95, abs=2e-4)
    assert lowest["bus"] == int(net.bus.index[net.bus.name == "Bus05"][0])
    assert all(b["kind"] != "loading" for b in status["binding"])

    # the operating point and both corners against pandapower
    p_max = dict(zip(("CS01", "CS02"), outcome.result.p_max_kw, strict=True))
    p_min = dict(zip(("CS01", "CS02"), outcome.result.p_min_kw, strict=True))
    for column, flex_kw in (
        ("vm_pu", {"CS01": 5.0, "CS02": 0.0}),
        ("vm_pu_at_pmax", p_max),
        ("vm_pu_at_pmin", p_min),
    ):
        copy = pp.from_json_string(pp.to_json(net))
        for name, kw in {"UL01": 8.0, "UL02": 8.0, **flex_kw}.items():
            copy.load.loc[copy.load.name == name, ["p_mw", "q_mvar"]] = (kw / 1e3, 0.0)
        pp.runpp(copy, tolerance_mva=1e-10)
        ours = np.array([buses[b][column] for b in copy.res_bus.index])
        np.testing.assert_allclose(ours, copy.res_bus.vm_pu, rtol=0, atol=1e-4)
        if column == "vm_pu":
            for kind in ("line", "trafo"):
                theirs = copy[f"res_{kind}"].loading_percent
                ours = np.array([branches[(kind, i)]["loading_percent"] for i in theirs.index])
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-2)


def test_status_is_written_when_nothing_is_published(deployed, feeder_file, tmp_path, monkeypatch):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 1, 8.0, 8.0)
    status_file = tmp_path / "status.json"
    service = service_for(deployed, feeder_file, status_file)

    def refused(*args, **kwargs):
        raise ChainError("the node refused the transaction")

    with monkeypatch.context() as patch:  # publishing fails: the computed band is still shown
        patch.setattr(community.limits, "publish_bands", refused)
        outcome = service.cycle(now)
    status = json.loads(status_file.read_text())
    assert not outcome.published and status["published"] is False and status["feasible"] is True
    assert status["reason"] == "publishing failed: the node refused the transaction"
    assert [f["p_max_kw"] for f in status["flexibilities"]] == [b.p_max_kw for b in outcome.bands]
    assert status["binding"] and all(b["vm_pu_at_pmax"] is not None for b in status["buses"])

    meters, _, _ = service.registry_view()
    with monkeypatch.context() as patch:  # no flexibility: the operating point alone
        patch.setattr(service, "registry_view", lambda: (meters, {}, []))
        outcome = service.cycle(now)
    status = json.loads(status_file.read_text())
    assert outcome.result is None and status["published"] is False
    assert status["reason"] == "no active flexibility registered on this feeder"
    assert status["feasible"] is None and status["verification"] is None and status["flexibilities"] == []
    assert status["measured_buses"] == 2 and status["binding"] == []
    assert all(b["vm_pu"] is not None and b["vm_pu_at_pmax"] is None for b in status["buses"])
    assert all(b["loading_percent"] is not None for b in status["branches"])

    def chain_gone():
        raise ConnectionError("the chain is gone")

    with monkeypatch.context() as patch, pytest.raises(ConnectionError):  # a failed cycle
        patch.setattr(service, "collect_readings", chain_gone)
        service.cycle(now + 1)
    status = json.loads(status_file.read_text())
    assert status["minute"] == now + 1 and status["published"] is False
    assert status["reason"] == "cycle failed: ConnectionError: the chain is gone"
    assert status["buses"] == [] and status["flexibilities"] == []


def test_bands_hold_for_the_learnt_envelope_once_the_history_allows(deployed, feeder_file, tmp_path):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 1, 8.0, 8.0)
    status_file = tmp_path / "status.json"
    held = service_for(deployed, feeder_file, status_file, horizon_minutes=3).cycle(now)
    assert held.forecast.probability == 0 and held.safety_kw is None  # no error model yet
    assert json.loads(status_file.read_text())["forecast"]["method"] == "held"

    service = service_for(deployed, feeder_file, status_file, horizon_minutes=3)
    rng = np.random.default_rng(1)
    for minute in range(now - 40, now):  # 40 noisy minutes measured at the load buses
        measured = np.zeros(service.grid.n_bus, dtype=bool)
        measured[service.grid.bus_positions([int(b) for b in service.grid.bus_ids])] = (
            service.forecast.p_kw > 0
        )
        p = np.where(measured, 8.0 + rng.normal(0, 2.0, service.grid.n_bus), service.forecast.p_kw)
        service.history.record(minute, p, measured)
    learnt = service.cycle(now)
    assert (
        learnt.published and learnt.forecast.method == "persistence" and learnt.forecast.probability >= 0.99
    )
    assert learnt.safety_kw is not None and learnt.safety_kw > 0  # the envelope costs band
    status = json.loads(status_file.read_text())["forecast"]
    assert status["method"] == "persistence" and status["coverage"] >= 0.99 and status["safety_kw"] > 0


def test_a_charger_without_a_car_gets_no_capacity(deployed, feeder_file):
    """The owner reports on chain (DeviceStates): CS01 has no car, CS02's car wants 3 kWh."""
    _, community, keyring = deployed
    now = chain_minute(community)
    member = keyring["member"]
    community.client.wait(community.client.send_ether(keyring["admin"], member.address, 10**18))
    community.devices.report(member, "CS01", plugged=False)
    community.devices.report(member, "CS02", plugged=True, energy_need_kwh=3.0)
    record(community, keyring, now - 1, 8.0, 8.0)
    outcome = service_for(deployed, feeder_file, horizon_minutes=30).cycle(now)
    bands = {band.flex_id: band for band in outcome.bands}
    assert outcome.published and (bands["CS01"].p_min_kw, bands["CS01"].p_max_kw) == (0.0, 0.0)
    assert 0 < bands["CS02"].p_max_kw <= 6.0  # 3 kWh over half an hour


def learnt_service(deployed, feeder_file, now, status_file=None, **settings):
    """A service whose history holds 40 noisy minutes (8 ± 2 kW) at the load buses."""
    service = service_for(deployed, feeder_file, status_file, **settings)
    rng = np.random.default_rng(1)
    loads = service.forecast.p_kw > 0
    for minute in range(now - 40, now):
        p = np.where(loads, 8.0 + rng.normal(0, 2.0, service.grid.n_bus), service.forecast.p_kw)
        service.history.record(minute, p, loads)
    return service


def test_bands_are_published_again_only_when_the_envelope_or_the_horizon_requires(deployed, feeder_file):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 2, 8.0, 8.0)
    settings = {"horizon_minutes": 20, "refresh_minutes": 5, "stale_after_minutes": 30, "safety_price": False}
    service = learnt_service(deployed, feeder_file, now, **settings)
    first = service.cycle(now)
    assert first.published
    held = service.cycle(now + 1)  # the same readings: inside the envelope
    assert not held.published and "hold until minute" in held.reason and held.bands == first.bands
    assert service.cycle(now + 16).published  # 20 - 16 < 5 minutes of the horizon left
    record(community, keyring, now - 1, 30.0, 8.0)  # far outside what the history taught
    moved = service.cycle(now + 17)
    assert moved.published and moved.left_envelope
    assert sum(moved.result.p_max_kw) < sum(first.result.p_max_kw)


def test_the_operating_point_keeps_per_phase_bus_loads_next_to_the_balanced_ones(deployed, feeder_file):
    """Issue 17 part 4: phase-resolved readings give their phases, a plain reading of a meter
    configured single-phase goes whole on its phase, unmeasured buses are split evenly; the
    balanced operating point is what it was."""
    _, community, keyring = deployed
    now = chain_minute(community)
    phases = (PhaseReading(4.0, 0.4, 0.99, 0.0), None, PhaseReading(2.0, -0.1, 0.99, 120.0))
    community.ledger.record_readings(
        keyring["gateway"], [Reading("UL01", clock.minute_start(now - 1), 6.0, 0.3, 0.99, 0.0, phases)]
    )
    community.ledger.record_readings(
        keyring["gateway"], [Reading("UL02", clock.minute_start(now - 1), 9.0, 0.6, 0.98, 0.0)]
    )
    service = OcmService(
        community, keyring["ocm"], read_network_tables(feeder_file[0]), meter_phases={"UL02": "b"}
    )
    meters, flex_meters, _ = service.registry_view()
    service.collect_readings()
    point, measured, stale = service.operating_point(now, meters, flex_meters)
    assert measured == 2 and stale == []
    ul01, ul02 = service.grid.bus_positions([meters["UL01"], meters["UL02"]])
    np.testing.assert_allclose(service.p_phase_kw[ul01], [4.0, 0.0, 2.0])
    np.testing.assert_allclose(service.q_phase_kvar[ul01], [0.4, 0.0, -0.1])
    np.testing.assert_allclose(service.p_phase_kw[ul02], [0.0, 9.0, 0.0])
    assert (point.p_kw[ul01], point.p_kw[ul02]) == (6.0, 9.0), "the balanced loads: the readings' totals"
    others = np.ones(service.grid.n_bus, dtype=bool)
    others[[ul01, ul02]] = False
    np.testing.assert_allclose(service.p_phase_kw[others], np.repeat(point.p_kw[others, None] / 3, 3, axis=1))
    np.testing.assert_allclose(service.q_phase_kvar.sum(axis=1)[others], point.q_kvar[others])
