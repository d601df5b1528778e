"""``lec loadflow``: JSON schema, report, exit codes and clean errors (in process and as a
console script)."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import pandapower as pp
import pandapower.networks as pn
import pytest

from node.cli import loadflow
from node.cli.errors import CliError
from tests.ocm.helpers import (
    LOADING_TOLERANCE_PERCENT,
    VA_TOLERANCE_DEGREE,
    VM_TOLERANCE_PU,
    native_from_pandapower,
    run_pandapower,
)
from tests.ocm.networks import feature_network

LEC = Path(sys.executable).parent / "lec"


pytestmark = pytest.mark.usefixtures("quiet_warnings")


def lec_loadflow(*arguments: str) -> int:
    """Runs the subcommand as ``lec`` does, returning its exit code."""
    parser = argparse.ArgumentParser(prog="lec")
    loadflow.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["loadflow", *arguments])
    return args.func(args)


@pytest.fixture(scope="module")
def feature_file(tmp_path_factory):
    net = feature_network()
    path = tmp_path_factory.mktemp("nets") / "features.json"
    pp.to_json(net, str(path))
    run_pandapower(net)
    return path, net


@pytest.fixture(scope="module")
def collapse_file(tmp_path_factory):
    net = pn.create_kerber_landnetz_kabel_1()
    net.load["scaling"] = 60.0
    path = tmp_path_factory.mktemp("nets") / "collapse.json"
    pp.to_json(net, str(path))
    return path


def assert_json_matches(data: dict, net) -> None:
    assert set(data) == {"converged", "bus", "line", "trafo"}
    assert data["converged"] is True
    assert list(data["bus"]) == [str(i) for i in net.bus.index]
    for index, row in net.res_bus.iterrows():
        values = data["bus"][str(index)]
        assert set(values) == {"vm_pu", "va_degree"}
        if row.isna()["vm_pu"]:
            assert values == {"vm_pu": None, "va_degree": None}
        else:
            assert values["vm_pu"] == pytest.approx(row["vm_pu"], abs=VM_TOLERANCE_PU)
            assert values["va_degree"] == pytest.approx(row["va_degree"], abs=VA_TOLERANCE_DEGREE)
    for element in ("line", "trafo"):
        assert list(data[element]) == [str(i) for i in net[element].index]
        for index, loading in net[f"res_{element}"]["loading_percent"].items():
            ours = data[element][str(index)]["loading_percent"]
            if loading != loading:
                assert ours is None
            else:
                assert ours == pytest.approx(loading, abs=LOADING_TOLERANCE_PERCENT)


def test_json_output_matches_pandapower(feature_file, capsys):
    path, net = feature_file
    assert lec_loadflow(str(path), "--json") == 0
    assert_json_matches(json.loads(capsys.readouterr().out), net)


def test_native_network_json_output(tmp_path, capsys):
    net = feature_network()
    path = tmp_path / "native.json"
    path.write_text(json.dumps(native_from_pandapower(net)))
    run_pandapower(net)
    assert lec_loadflow(str(path), "--json") == 0
    assert_json_matches(json.loads(capsys.readouterr().out), net)


def test_report_shows_worst_values_and_violations(feature_file, capsys):
    path, net = feature_file
    assert lec_loadflow(str(path)) == 0
    report = capsys.readouterr().out
    for heading in ("buses", "lines", "trafos", "lowest voltages", "highest voltages"):
        assert f"\n{heading}\n" in report
    assert "most loaded lines" in report and "most loaded trafos" in report
    lowest = net.res_bus["vm_pu"].idxmin()
    assert f"bus {lowest} (bus " in report.split("lowest voltages")[1].splitlines()[1]
    assert "limits" in report


def test_report_flags_limit_violations(tmp_path, capsys):
    net = pn.create_cigre_network_lv()
    path = tmp_path / "cigre.json"
    pp.to_json(net, str(path))
    assert lec_loadflow(str(path)) == 0
    assert "limits VIOLATED" in capsys.readouterr().out


def test_no_solution_gives_exit_code_one_and_null_results(collapse_file, capsys):
    assert lec_loadflow(str(collapse_file), "--json") == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["converged"] is False
    assert "no solution" in data["message"]
    assert all(v == {"vm_pu": None, "va_degree": None} for v in data["bus"].values())
    assert "no solution" in captured.err
    assert lec_loadflow(str(collapse_file)) == 1
    assert "NO SOLUTION" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("just words\n", "not a JSON network file"),
        ('{"some": "json"}', "neither a pandapower network"),
    ],
    ids=["missing", "text", "random-json"],
)
def test_bad_files_are_clean_cli_errors(tmp_path, content, message):
    path = tmp_path / "net.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CliError, match=message) as caught:
        lec_loadflow(str(path))
    assert caught.value.exit_code == 2


def test_help_explains_net_and_gives_examples(capsys):
    with pytest.raises(SystemExit):
        lec_loadflow("--help")
    text = capsys.readouterr().out
    assert "pandapower.to_json" in text and "lec-network" in text
    assert "examples:" in text and "lec loadflow feeder.json --json" in text


def registered() -> bool:
    from node.cli import main

    return "node.cli.loadflow" in main.SUBCOMMAND_MODULES and LEC.exists()


needs_console_script = pytest.mark.skipif(
    not registered(), reason="node.cli.loadflow is not in node.cli.main.SUBCOMMAND_MODULES"
)


def run_lec(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LEC), "loadflow", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_console_script
def test_console_script_json(feature_file):
    path, net = feature_file
    completed = run_lec(path, "--json")
    assert completed.returncode == 0, completed.stderr
    assert_json_matches(json.loads(completed.stdout), net)


@needs_console_script
def test_console_script_errors_without_traceback(tmp_path, collapse_file):
    missing = run_lec(tmp_path / "absent.json")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "no such file" in missing.stderr
    net = copy.deepcopy(pn.create_kerber_landnetz_kabel_1())
    pp.create_gen(net, 3, 0.01, index=4)
    path = tmp_path / "gen.json"
    pp.to_json(net, str(path))
    unsupported = run_lec(path)
    assert unsupported.returncode == 2
    assert "error: gen 4 in service" in unsupported.stderr
    collapse = run_lec(collapse_file, "--json")
    assert collapse.returncode == 1
    assert json.loads(collapse.stdout)["converged"] is False
    for completed in (missing, unsupported, collapse):
        assert "Traceback" not in completed.stderr
