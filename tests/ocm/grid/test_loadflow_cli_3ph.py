"""``lec loadflow`` on unbalanced networks: the three-phase load flow (with --3ph and
automatically for asymmetric elements), its JSON in pandapower's res_*_3ph names, the report,
exit codes and clean errors for networks it cannot take."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandapower as pp
import pytest

from node.cli.errors import CliError
from tests.ocm.grid.test_loadflow_cli import lec_loadflow, needs_console_script, run_lec
from tests.ocm.networks_3ph import (
    PHASES,
    collapsing_feeder,
    kerber_unbalanced,
    random_unbalanced_feeder,
    run_pandapower_3ph,
)

BUS_KEYS = {"vm_a_pu", "va_a_degree", "vm_b_pu", "va_b_degree", "vm_c_pu", "va_c_degree", "unbalance_percent"}
LINE_KEYS = {
    *(f"i_{x}_{end}_ka" for x in (*PHASES, "n") for end in ("from", "to")),
    *(f"i_{x}_ka" for x in (*PHASES, "n")),
    *(f"loading_{x}_percent" for x in PHASES),
    "loading_percent",
}
TRAFO_KEYS = {*(f"loading_{x}_percent" for x in PHASES), "loading_percent"}
TOLERANCES = {"pu": 1e-6, "degree": 1e-4, "ka": 1e-7, "percent": 1e-4}


pytestmark = pytest.mark.usefixtures("quiet_warnings")


@pytest.fixture(scope="module")
def kerber_file(tmp_path_factory):
    net = kerber_unbalanced()
    path = tmp_path_factory.mktemp("nets") / "kerber_3ph.json"
    pp.to_json(net, str(path))
    return path, net


def write(net, tmp_path, name="net.json"):
    path = tmp_path / name
    pp.to_json(net, str(path))
    return path


def assert_json_matches_3ph(data: dict, net) -> None:
    """Every element of ``net`` with pandapower's three-phase results, within tolerances."""
    assert set(data) == {"converged", "bus", "line", "trafo"}
    assert data["converged"] is True
    reference = run_pandapower_3ph(net)
    for element, keys, table in (
        ("bus", BUS_KEYS, reference.bus),
        ("line", LINE_KEYS, reference.line),
        ("trafo", TRAFO_KEYS, reference.trafo),
    ):
        assert list(data[element]) == [str(i) for i in net[element].index]
        for index, row in table.iterrows():
            ours = data[element][str(index)]
            assert set(ours) == keys
            for key in keys:
                tolerance = TOLERANCES[key.rsplit("_", 1)[1]]
                if key.startswith("va_"):
                    error = (ours[key] - row[key] + 180) % 360 - 180
                    assert abs(error) <= tolerance, (element, index, key)
                else:
                    assert ours[key] == pytest.approx(row[key], abs=tolerance, rel=1e-5), (
                        element,
                        index,
                        key,
                    )


def test_asymmetric_network_runs_three_phase_and_matches_pandapower(kerber_file, capsys):
    path, net = kerber_file
    assert lec_loadflow(str(path), "--json") == 0
    assert_json_matches_3ph(json.loads(capsys.readouterr().out), net)


def test_3ph_option_on_a_balanced_network(tmp_path, capsys):
    net = random_unbalanced_feeder(5)
    for table in ("asymmetric_load", "asymmetric_sgen"):
        net[table]["in_service"] = False
    path = write(net, tmp_path)
    assert lec_loadflow(str(path), "--json") == 0
    balanced = json.loads(capsys.readouterr().out)
    assert set(balanced["bus"]["0"]) == {"vm_pu", "va_degree"}  # without --3ph: the balanced load flow
    assert lec_loadflow(str(path), "--3ph", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert_json_matches_3ph(data, net)
    # a balanced network gives balanced phases, equal to the balanced load flow
    for index, values in balanced["bus"].items():
        for x in PHASES:
            assert data["bus"][index][f"vm_{x}_pu"] == pytest.approx(values["vm_pu"], abs=1e-8)
        assert data["bus"][index]["unbalance_percent"] == pytest.approx(0, abs=1e-6)


def test_report_shows_worst_phases_unbalance_and_phase_loadings(kerber_file, capsys):
    path, net = kerber_file
    assert lec_loadflow(str(path)) == 0
    report = capsys.readouterr().out
    assert "(three-phase load flow)" in report.splitlines()[0]
    for heading in ("buses", "lines", "trafos"):
        assert f"\n{heading}\n" in report
    for heading in ("lowest phase voltages", "highest phase voltages", "largest voltage unbalance"):
        assert f"\n{heading}" in report
    reference = run_pandapower_3ph(net).bus
    vm = reference[[f"vm_{x}_pu" for x in PHASES]]
    bus, column = vm.stack().idxmin()
    lowest = report.split("lowest phase voltages")[1].splitlines()[1]
    assert lowest.startswith(f"  bus {bus} (") and f"phase {column[3]}: {vm.min().min():.4f} pu" in lowest
    most_unbalanced = report.split("largest voltage unbalance")[1].splitlines()[1]
    assert f"bus {reference['unbalance_percent'].idxmax()} " in most_unbalanced
    trafo = report.split("most loaded trafos")[1].splitlines()[1]
    assert "on phase a" in trafo  # the chargers and single-phase loads load phase a most
    assert "limits VIOLATED" in report and "trafo 0" in report.split("limits VIOLATED")[1]
    assert "voltage unbalance above 2 % (EN 50160)" in report


def test_no_solution_gives_exit_code_one_and_null_results(tmp_path, capsys):
    path = write(collapsing_feeder(), tmp_path)
    assert lec_loadflow(str(path), "--json") == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["converged"] is False and "no solution" in data["message"]
    assert all(set(v) == BUS_KEYS and set(v.values()) == {None} for v in data["bus"].values())
    assert all(set(v.values()) == {None} for v in data["line"].values())
    assert "no solution" in captured.err
    assert lec_loadflow(str(path)) == 1
    assert "NO SOLUTION" in capsys.readouterr().out


def without_line_zero_sequence(net):
    net.line.drop(columns=["r0_ohm_per_km", "x0_ohm_per_km", "c0_nf_per_km"], inplace=True)


def vector_group(group: str):
    def change(net):
        net.trafo["vector_group"] = group

    return change


def without_ext_grid_zero_sequence(net):
    net.ext_grid.drop(columns=["x0x_max", "r0x0_max"], inplace=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            without_line_zero_sequence,
            r"three-phase load flow: line table lacks the column\(s\) r0_ohm_per_km",
        ),
        (vector_group("Yy"), r"trafo 0: vector group Yy is not supported"),
        (vector_group("Dyn5"), r"trafo 0: vector group Dyn5 is not supported.*shift_degree"),
        (without_ext_grid_zero_sequence, r"ext_grid table lacks the column\(s\) x0x_max, r0x0_max"),
    ],
    ids=["line-r0", "yy", "clock-number", "ext-grid"],
)
def test_networks_the_three_phase_load_flow_cannot_take_are_clean_errors(tmp_path, change, message):
    net = kerber_unbalanced()
    change(net)
    path = write(net, tmp_path)
    with pytest.raises(CliError, match=message) as caught:
        lec_loadflow(str(path))
    assert caught.value.exit_code == 2


def test_balanced_network_without_zero_sequence_data_needs_it_for_3ph(tmp_path):
    net = copy.deepcopy(collapsing_feeder())
    net.asymmetric_load.drop(net.asymmetric_load.index, inplace=True)
    without_line_zero_sequence(net)
    path = write(net, tmp_path)
    assert lec_loadflow(str(path)) == 0  # balanced load flow
    with pytest.raises(CliError, match=r"r0_ohm_per_km.*add_zero_impedance_parameters") as caught:
        lec_loadflow(str(path), "--3ph")
    assert caught.value.exit_code == 2


def test_help_explains_the_three_phase_load_flow(capsys):
    with pytest.raises(SystemExit):
        lec_loadflow("--help")
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("--3ph", "asymmetric_load", "runpp_3ph", "vm_a_pu", "i_n_ka", "loading_a_percent"):
        assert phrase in text
    assert "r0_ohm_per_km" in text and "vector_group (Dyn or YNyn)" in text
    assert "lec loadflow feeder.json --3ph" in text


@needs_console_script
def test_console_script_three_phase_json_and_errors_without_traceback(kerber_file, tmp_path):
    path, net = kerber_file
    completed = run_lec(path, "--json")
    assert completed.returncode == 0, completed.stderr
    assert_json_matches_3ph(json.loads(completed.stdout), net)
    yy = copy.deepcopy(net)
    yy.trafo["vector_group"] = "Yy"
    unsupported = run_lec(write(yy, tmp_path, "yy.json"))
    assert unsupported.returncode == 2
    assert unsupported.stderr.startswith("error: ") and "vector group Yy" in unsupported.stderr
    collapse = run_lec(write(collapsing_feeder(), tmp_path, "collapse.json"), "--json")
    assert collapse.returncode == 1 and json.loads(collapse.stdout)["converged"] is False
    for completed in (unsupported, collapse):
        assert "Traceback" not in completed.stderr


def test_random_feeder_json_has_null_free_results(tmp_path, capsys):
    path = write(random_unbalanced_feeder(11), tmp_path)
    assert lec_loadflow(str(path), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    values = [
        v for element in ("bus", "line", "trafo") for row in data[element].values() for v in row.values()
    ]
    assert all(v is not None and np.isfinite(v) for v in values)


def test_plot_draws_the_phase_voltages_along_the_feeders(kerber_file, tmp_path, capsys):
    path, _ = kerber_file
    png = tmp_path / "phases.png"
    assert lec_loadflow(str(path), "--plot", str(png)) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"phase voltages drawn in {png}" in capsys.readouterr().err


def test_plot_needs_a_three_phase_load_flow_and_a_writable_place(kerber_file, tmp_path):
    net = random_unbalanced_feeder(5)
    for table in ("asymmetric_load", "asymmetric_sgen"):
        net[table]["in_service"] = False
    balanced = write(net, tmp_path)
    with pytest.raises(
        CliError, match=r"--plot draws the phases of a three-phase load flow: add --3ph"
    ) as caught:
        lec_loadflow(str(balanced), "--plot", str(tmp_path / "x.png"))
    assert caught.value.exit_code == 2
    path, _ = kerber_file
    with pytest.raises(CliError, match=r"--plot .*missing/x.png: No such file or directory"):
        lec_loadflow(str(path), "--plot", str(tmp_path / "missing" / "x.png"))
