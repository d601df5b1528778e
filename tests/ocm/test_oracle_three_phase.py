"""The OCM service per phase on a real (embedded) chain: per-phase readings in, bands that keep
every phase within its limits out (checked with pandapower's runpp_3ph)."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pandapower as pp
import pytest

from contracts import clock
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import PhaseReading, Reading
from contracts.registry import Flexibility, FlexKind, Meter, Role
from node.embedded import open_embedded_chain
from ocm.grid.network_io import read_network_tables
from ocm.oracle import OcmService, ServiceSettings
from tests.community_setup import populate
from tests.ocm.test_ocm_three_phase import V_MIN, unbalanced_feeder, violations

HOUSE_KW = (2.5, 0.5, 1.0)  # per phase a, b, c: phase a carries most
CHARGERS = {"EV1": "charger end", "EV2": "charger next door"}


@pytest.fixture(scope="module")
def feeder(tmp_path_factory):
    """The unbalanced test feeder; its chargers come from the chain, its houses are metered."""
    net = unbalanced_feeder(with_asymmetric_base=False)
    net.load = net.load[net.load["controllable"].fillna(False).astype(bool) == False]  # noqa: E712
    net.sgen = net.sgen.iloc[0:0]
    path = tmp_path_factory.mktemp("ocm-3ph") / "feeder.json"
    pp.to_json(net, str(path))
    return path, net


@pytest.fixture(scope="module")
def deployed(artifacts, feeder):
    _, net = feeder
    embedded = open_embedded_chain(None, period=1)
    client, keyring = embedded.client(artifacts), embedded.keyring
    community = Community(client, deploy_community(client, keyring["admin"], CommunityConfig()))
    member = keyring["member"].address
    houses = [int(bus) for bus in net.load["bus"]]
    end, next_door = houses[-1], houses[-2]
    populate(
        community,
        keyring,
        {"ocm": Role.OCM_ORACLE, "gateway": Role.GATEWAY},
        ["member"],
        [Meter(f"H{bus}", bus, member, member) for bus in houses]
        + [Meter(f"M-{flex}", bus, member, member) for flex, bus in (("EV1", end), ("EV2", next_door))],
        [
            Flexibility(flex, member, bus, FlexKind.EV_CHARGER, 0.0, 7.4, 0, f"M-{flex}")
            for flex, bus in (("EV1", end), ("EV2", next_door))
        ],
    )
    yield community, keyring, houses
    embedded.stop()


def record_phases(community, keyring, minute, houses):
    """Every house meter reports per phase (HOUSE_KW); the chargers' single-phase meters 0 kW."""
    start = clock.minute_start(minute)
    readings = [
        Reading(
            f"H{bus}",
            start,
            sum(HOUSE_KW),
            0.0,
            0.99,
            0.0,
            phases=tuple(
                PhaseReading(kw, 0.0, 0.99, angle) for kw, angle in zip(HOUSE_KW, (0, -120, 120), strict=True)
            ),
        )
        for bus in houses
    ] + [
        Reading(
            f"M-{flex}", start, 0.0, 0.0, 0.98, 0.0, phases=(PhaseReading(0.0, 0.0, 0.98, 0.0), None, None)
        )
        for flex in CHARGERS
    ]
    community.ledger.record_readings(keyring["gateway"], readings)


def service(deployed, feeder, tmp_path=None, **options):
    community, keyring, _ = deployed
    return OcmService(
        community,
        keyring["ocm"],
        read_network_tables(feeder[0]),
        ServiceSettings(horizon_minutes=5),
        status_file=None if tmp_path is None else tmp_path / "status.json",
        meter_phases={"M-EV1": "a", "M-EV2": "a"},
        **options,
    )


def test_per_phase_readings_give_per_phase_bands_that_hold_in_runpp_3ph(deployed, feeder, tmp_path):
    community, keyring, houses = deployed
    now = clock.minute_of(community.client.latest_timestamp())
    record_phases(community, keyring, now - 1, houses)
    oracle = service(deployed, feeder, tmp_path)
    assert oracle.grid3 is not None  # single-phase meters on a network with zero-sequence data
    outcome = oracle.cycle(now)
    assert outcome.published and outcome.result.feasible, outcome.reason
    assert [f.phase for f in outcome.flexibilities] == ["a", "a"]
    house = oracle.grid.bus_positions([houses[0]])[0]
    assert np.allclose(outcome.phase_point.p_kw[house], HOUSE_KW)
    bands = {b.flex_id: b for b in outcome.bands}
    assert bands["EV1"].p_max_kw + bands["EV2"].p_max_kw < 14.8 - 1.0  # phase a cannot take both

    # the balanced OCM on the same readings gives both chargers everything
    balanced_oracle = service(deployed, feeder, three_phase=False)
    assert balanced_oracle.grid3 is None
    balanced = balanced_oracle.cycle(now)
    assert min(b.p_max_kw for b in balanced.bands) == pytest.approx(7.4)

    _, net = feeder
    for p_max in ({b.flex_id: b.p_max_kw for b in outcome.bands}, {f: 7.4 for f in CHARGERS}):
        run = copy.deepcopy(net)
        run.load["in_service"] = False
        for bus in houses:
            phases = {f"p_{x}_mw": kw / 1e3 for x, kw in zip("abc", HOUSE_KW, strict=True)}
            pp.create_asymmetric_load(run, bus, **phases)
        for flex, bus in (("EV1", houses[-1]), ("EV2", houses[-2])):
            pp.create_asymmetric_load(run, bus, p_a_mw=p_max[flex] / 1e3, p_b_mw=0.0, p_c_mw=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp_3ph(run, max_iteration=100)
        found = violations(run)
        if p_max["EV1"] == 7.4 and p_max["EV2"] == 7.4:
            assert run.res_bus_3ph["vm_a_pu"].min() < V_MIN, "the balanced bands would break phase a"
        else:
            assert found == [], found

    status = json.loads((tmp_path / "status.json").read_text())
    end = next(b for b in status["buses"] if b["bus"] == houses[-1])
    assert len(end["vm_phase_pu"]) == 3 and end["unbalance_percent"] > 0


def test_oracle_command_line_phase_options(tmp_path, feeder, capsys):
    from node.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["oracle", "run", str(feeder[0]), "--meter-phase", "M-EV1=d"])
    assert exit_.value.code == 2
    assert "'M-EV1=d': give METER=PHASE with PHASE a, b, c or abc" in capsys.readouterr().err
    net = pp.from_json(str(feeder[0]))
    net.line = net.line.drop(columns=["r0_ohm_per_km"])
    balanced_only = tmp_path / "no-zero-sequence.json"
    pp.to_json(net, str(balanced_only))
    assert (
        main(["oracle", "run", str(balanced_only), "--three-phase", "yes", "--data-dir", str(tmp_path)]) == 2
    )
    assert "line table lacks the column(s) r0_ohm_per_km" in capsys.readouterr().err


def test_the_forecast_and_its_envelope_are_per_phase(deployed, feeder):
    community, _, houses = deployed
    now = clock.minute_of(community.client.latest_timestamp())
    oracle = service(deployed, feeder)
    n = oracle.grid.n_bus
    measured = np.isin(oracle.grid.bus_ids, houses)
    rng = np.random.default_rng(3)
    for minute in range(now - 40, now):  # 40 minutes: phase a's load varies far more than b's
        p = np.zeros((n, 3))
        p[measured] = np.array(HOUSE_KW) + rng.normal(0.0, [0.25, 0.02, 0.08], (measured.sum(), 3))
        oracle.history.record(minute, p.ravel(), np.repeat(measured, 3))
    outcome = oracle.cycle(now)
    assert outcome.published and outcome.result.verification.passed, outcome.reason
    assert outcome.forecast.method == "persistence" and outcome.forecast.probability >= 0.99
    width = (outcome.forecast.high_kw - outcome.forecast.low_kw).reshape(n, 3)[measured].mean(axis=0)
    assert width[0] > 3 * width[1]  # phase a's envelope is the wide one
