"""``lec dt`` and ``lec tfm`` on real feeders (Kerber Dorfnetz, a SimBench LV grid with its own
profiles): files written, the congestion handled as reported, and bad input refused in plain
words (exit status 2, nothing written)."""

from __future__ import annotations

import csv
import json
import warnings
from datetime import UTC, datetime, timedelta

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from node.cli.main import main
from node.pricing_case import load_pricing_case


@pytest.fixture(scope="module")
def kerber(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("nets") / "kerber.json"
    pp.to_json(pn.create_kerber_dorfnetz(), str(path))
    return str(path)


@pytest.fixture(scope="module")
def simbench_net(tmp_path_factory) -> str:
    import simbench

    path = tmp_path_factory.mktemp("nets") / "simbench.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.to_json(simbench.get_simbench_net("1-LV-rural1--0-sw"), str(path))
    return str(path)


def run(capsys, *arguments: str) -> tuple[int, str, str]:
    code = main(list(arguments))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_lec_tfm_clears_the_market_and_delivery_removes_the_congestion(kerber, tmp_path, capsys):
    out = tmp_path / "tfm"
    code, stdout, _ = run(capsys, "tfm", kerber, "--devices", "40", "--out", str(out), "--json")
    summary = json.loads(stdout)
    assert code == 0, summary
    assert summary["status"] == "optimal" and summary["requirements"] >= 1 and summary["bids"] >= 1
    assert summary["broken_before"] > 0 and summary["broken_after"] == []
    for name in ("requirements.csv", "bids.csv", "loadings.png", "bids.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    with (out / "bids.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    accepted = [r for r in rows if float(r["fraction"]) > 0]
    assert accepted and all(0 <= float(r["fraction"]) <= 1 + 1e-9 for r in rows)
    with (out / "requirements.csv").open() as handle:
        needs = list(csv.DictReader(handle))
    for need in needs:
        procured = sum(
            float(r["kw"]) * float(r["fraction"]) for r in rows if int(r["hour"]) == int(need["hour"])
        )
        assert procured >= float(need["min_kw"]) - 1e-3  # fractions are written with 6 decimals


def test_lec_tfm_reports_what_the_market_cannot_resolve(kerber, tmp_path, capsys):
    """100 devices on 57 households all charging in the same cheap night hours: the reduced
    energy has nowhere to go back, so requirements stay short; exit 1 and the shortfall named."""
    code, stdout, _ = run(capsys, "tfm", kerber, "--devices", "100", "--out", str(tmp_path / "t"), "--json")
    summary = json.loads(stdout)
    assert code == 1 and summary["status"] == "infeasible"
    assert summary["shortfall_kw"] and summary["broken_after"]


def test_lec_dt_prices_the_congestion_away_and_the_aggregators_follow(kerber, tmp_path, capsys):
    out = tmp_path / "dt"
    code, stdout, _ = run(capsys, "dt", kerber, "--out", str(out))
    assert code == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "optimal" and summary["broken_before"] > 0
    assert summary["broken_after"] == [] and summary["max_tariff"] > 0
    assert summary["response_gap_kw"] < 1e-4
    assert "reproduce the plan" in stdout and "no limit broken" in stdout
    with (out / "tariffs.csv").open() as handle:
        tariffs = list(csv.DictReader(handle))
    assert {int(r["bus"]) for r in tariffs} <= {int(b) for b in pn.create_kerber_dorfnetz().load.bus}
    assert max(float(r["tariff"]) for r in tariffs) == pytest.approx(summary["max_tariff"], abs=1e-6)
    assert (out / "tariffs.png").stat().st_size > 0


def test_lec_dt_with_a_penalty_caps_the_tariff_and_reports_what_is_left(kerber, tmp_path, capsys):
    out = tmp_path / "dt-rho"
    code, _, _ = run(capsys, "dt", kerber, "--rho", "0.01", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and summary["rho"] == 0.01
    assert summary["max_tariff"] <= 0.01 * 1.0 + 1e-9 or summary["congestion_left_kw"]


def test_lec_dt_plans_the_devices_of_a_fleet_file(kerber, tmp_path, capsys):
    fleet = [
        {"kind": "ev", "id": "car-1", "bus": 69, "aggregator": "evco", "battery_kwh": 60, "arrival": 17},
        {"kind": "ev", "id": "car-2", "bus": 69, "aggregator": "evco", "soc_arrival": 0.2},
        {"kind": "heat_pump", "id": "hp-1", "bus": 2, "aggregator": "heatco", "rated_kw": 4},
    ]
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))
    out = tmp_path / "dt"
    code, _, stderr = run(capsys, "dt", kerber, "--fleet", str(tmp_path / "fleet.json"), "--out", str(out))
    assert code == 0, stderr
    with (out / "schedules.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["device"] for r in rows} == {"car-1", "car-2", "hp-1"}
    assert {r["load_point"] for r in rows} == {"bus69", "bus2"}  # bus 2 has no load: added as a load point
    energy = sum(float(r["kw_plan"]) for r in rows if r["device"] == "car-1")
    assert energy == pytest.approx((0.8 - 0.3) * 60 / 0.92, rel=1e-4)


@pytest.mark.parametrize(
    ("fleet", "message"),
    [
        ("[]", "non-empty JSON list"),
        ("{", "is not JSON"),
        ('[{"kind": "boat", "id": "b", "bus": 3}]', "kind 'boat' is not one of ev, heat_pump"),
        ('[{"kind": "ev", "id": "c", "bus": 9999}]', "(c): bus 9999 is not an energised bus"),
        ('[{"kind": "ev", "id": "c", "bus": 3, "wings": 2}]', "unknown field(s) wings for a ev"),
        ('[{"kind": "ev", "id": "c", "bus": 3, "arrival": 6, "departure": 7}]', "'c': needs"),
        ('[{"kind": "heat_pump", "id": "h", "bus": 3, "outdoor": [1, 2]}]', "2 outdoor temperatures"),
    ],
)
def test_a_bad_fleet_file_is_refused_naming_the_device(kerber, tmp_path, capsys, fleet, message):
    (tmp_path / "fleet.json").write_text(fleet)
    code, _, stderr = run(
        capsys, "dt", kerber, "--fleet", str(tmp_path / "fleet.json"), "--out", str(tmp_path / "o")
    )
    assert code == 2 and message in stderr, stderr


def test_the_day_of_a_simbench_grid_comes_from_its_own_profiles(simbench_net, tmp_path):
    case = load_pricing_case(simbench_net, "simbench", "2016-06-01")
    assert case.p_kw.shape == (24, case.grid.n_bus)
    assert case.p_kw[12].sum() < case.p_kw[2].sum()  # PV at noon in June
    csv_path = tmp_path / "day.csv"
    times = [f"2016-06-01T{h:02d}:00:00Z" for h in range(24)]
    csv_path.write_text("time,load.0.p_kw\n" + "".join(f"{t},{h + 1}\n" for h, t in enumerate(times)))
    from_csv = load_pricing_case(simbench_net, str(csv_path))
    column = from_csv.grid.bus_positions([int(pp.from_json(simbench_net).load.bus[0])])[0]
    assert from_csv.day == "2016-06-01 00:00"
    assert np.allclose(from_csv.p_kw[:, column] - from_csv.p_kw[0, column], np.arange(24))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--spot", "{missing}"], "--spot"),
        (["--spot", "{short}"], "3 prices, one per hour needed (24)"),
        (["--spot", "{words}"], "line 2: 'cheap' is not a number"),
        (["--day", "yesterday"], "--day 'yesterday' is not a date"),
        (["--profiles", "simbench"], "needs --day"),
        (["--profiles", "{missing}"], "no such file"),
        (["--devices", "0"], "must be at least 1"),
        (["--price-cap", "-1"], "not a finite number > 0"),
        (["--rho", "1", "--srp-elasticity", "3"], "not allowed with argument"),
    ],
)
def test_bad_input_is_refused_in_plain_words(kerber, tmp_path, capsys, arguments, message):
    (tmp_path / "short.txt").write_text("0.1\n0.2\n0.3\n")
    (tmp_path / "words.txt").write_text("price\ncheap\n")
    files = {"missing": str(tmp_path / "nope.csv"), "short": str(tmp_path / "short.txt")}
    files["words"] = str(tmp_path / "words.txt")
    arguments = [a.format(**files) for a in arguments]
    command = "dt" if "--rho" in arguments else "tfm"
    if "--price-cap" in arguments:
        command = "tfm"
    out = tmp_path / "out"
    try:
        code, _, stderr = run(capsys, command, kerber, "--out", str(out), *arguments)
    except SystemExit as exit_:  # argparse refuses bad option values itself
        code, stderr = exit_.code, capsys.readouterr().err
    assert code == 2
    assert message in stderr
    assert not out.exists()


def test_a_network_file_that_is_not_one_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, stderr = run(capsys, "tfm", str(bad), "--out", str(tmp_path / "out"))
    assert code == 2 and "error:" in stderr


COMMUNITY = """\
[community]
name = "Tariff community"
slot_minutes = 15

[[members]]
name = "alice"
tokens = "10"

[[meters]]
id = "MA"
bus = 3
member = "alice"
"""


def test_lec_dt_posts_tomorrows_tariffs_on_chain_and_refuses_a_past_day(kerber, tmp_path, capsys, artifacts):
    from dataclasses import replace

    from contracts.community import Community
    from contracts.deploy import ensure_deployment
    from contracts.tariff import hour_of
    from node.config import load_community
    from node.demo import Feeder, set_up_community
    from node.embedded import open_embedded_chain

    data_dir = tmp_path / "community"
    data_dir.mkdir()
    (data_dir / "community.toml").write_text(COMMUNITY)
    definition = load_community(data_dir / "community.toml")
    chain = open_embedded_chain(data_dir, period=1)
    url = chain.serve("127.0.0.1", 0)
    try:
        client = chain.client(artifacts)
        config = replace(definition.deployment_config())
        deployment, _ = ensure_deployment(client, chain.keyring["admin"], data_dir, config)
        community = Community(client, deployment)
        set_up_community(
            community, chain.keyring, definition, Feeder(data_dir / "none.json", [3], frozenset({3}))
        )
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
        out = tmp_path / "dt"

        def post(day: str) -> tuple[int, str, str]:
            chain_options = ("--data-dir", str(data_dir), "--rpc-url", url)
            return run(
                capsys, "dt", kerber, "--day", day, "--post", *chain_options, "--out", str(out), "--json"
            )

        code, stdout, stderr = post(tomorrow)
        summary = json.loads(stdout)
        assert code == 0, stderr
        with (out / "tariffs.csv").open() as handle:
            rows = [r for r in csv.DictReader(handle) if float(r["tariff"]) > 0]
        assert rows and summary["posted"] == len(rows)
        first = hour_of(datetime.fromisoformat(tomorrow).replace(tzinfo=UTC).timestamp())
        for row in rows[:5]:
            on_chain = community.tariff.tariff_at(int(row["bus"]), first + int(row["hour"]))
            assert float(on_chain) == pytest.approx(float(row["tariff"]), abs=1e-6)
        # the same again posts nothing; a day that has begun is refused by the contract
        code, stdout, _ = post(tomorrow)
        assert code == 0 and json.loads(stdout)["posted"] == 0
        code, _, stderr = post(datetime.now(UTC).strftime("%Y-%m-%d"))
        assert code == 1 and "posting the tariffs failed" in stderr
    finally:
        chain.stop()
