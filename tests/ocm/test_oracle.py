"""The OCM service on a real (embedded) chain: readings in, verified bands out."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pandapower as pp
import pytest

from contracts import clock
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import Reading
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


def record(community, keyring, minute, ul01_kw, ul02_kw):
    readings = [
        Reading("UL01", clock.minute_start(minute), ul01_kw, 0.0, 0.99, 0.0),
        Reading("UL02", clock.minute_start(minute), ul02_kw, 0.0, 0.98, 0.0),
    ]
    community.ledger.record_readings(keyring["gateway"], readings)


def chain_minute(community):
    return clock.minute_of(community.client.latest_timestamp())


def service_for(deployed, feeder_file, **settings):
    _, community, keyring = deployed
    return OcmService(
        community, keyring["ocm"], read_network_tables(feeder_file[0]), ServiceSettings(**settings)
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


def test_high_load_publishes_the_least_violating_zero_width_band(deployed, feeder_file):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 1, 95.0, 8.0)
    outcome = service_for(deployed, feeder_file).cycle(now)
    assert outcome.published and not outcome.result.feasible
    assert all((b.p_min_kw, b.p_max_kw) == (0.0, 0.0) for b in outcome.bands)
    assert "least-violating" in outcome.reason


def test_a_band_that_failed_verification_is_never_published(deployed, feeder_file, monkeypatch):
    _, community, keyring = deployed
    now = chain_minute(community)
    record(community, keyring, now - 1, 5.0, 5.0)
    original = OcmProblem.solve

    def failing_verification(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        return replace(result, verification=replace(result.verification, passed=False, message="forced"))

    monkeypatch.setattr(OcmProblem, "solve", failing_verification)
    before = community.client.w3.eth.get_transaction_count(keyring["ocm"].address)
    outcome = service_for(deployed, feeder_file).cycle(now)
    assert not outcome.published and "verification failed" in outcome.reason
    assert community.client.w3.eth.get_transaction_count(keyring["ocm"].address) == before


def test_oracle_command_line_errors(tmp_path, feeder_file, capsys):
    from node.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["oracle", "run"])
    assert exit_.value.code == 2
    assert "the following arguments are required: NET" in capsys.readouterr().err
    assert main(["oracle", "run", str(feeder_file[0]), "--data-dir", str(tmp_path)]) == 2
    assert "no community deployment recorded" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ocm", str(feeder_file[0]), "extra"])
    assert "unrecognized arguments: extra" in capsys.readouterr().err


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
