"""``lec ocm``: report, JSON document, exit codes, time series files and clean input errors
(run in process through the parser its ``register`` builds, with ``lec``'s error handling)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pandapower as pp
import pytest

from node.cli import ocm
from node.cli.errors import CliError
from ocm.examples import paper_test_feeder
from tests.ocm.test_ocm_timeseries import HIGH_UL01, STEPS, paper_profile_frame

pytestmark = pytest.mark.usefixtures("quiet_warnings")


def lec_ocm(capsys, *arguments: str) -> tuple[int, str, str]:
    """Runs ``lec ocm ...`` as ``lec`` does; returns (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser(prog="lec")
    ocm.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ocm", *arguments])
    try:
        code = args.func(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nets")
    paths = {}
    for name, net in (("paper", paper_test_feeder()), ("high", paper_test_feeder(ul01_kw=100.0))):
        paths[name] = folder / f"{name}.json"
        pp.to_json(net, str(paths[name]))
    return paths


def test_report_of_a_feasible_band(capsys, nets):
    code, out, err = lec_ocm(capsys, str(nets["paper"]))
    assert code == 0 and err == ""
    assert "load.2 (CS01)" in out and "0.00 ..    22.00" in out
    assert "feasible: yes" in out and "verification passed" in out
    assert "V_min with all at P_max: 0.9500 pu" in out


def test_json_document_is_exact_and_deterministic_per_seed(capsys, nets):
    runs = []
    for _ in range(2):
        code, out, _ = lec_ocm(capsys, str(nets["paper"]), "--json", "--objective", "maxmin", "--seed", "5")
        assert code == 0
        runs.append(json.loads(out))
    document = runs[0]
    assert set(document) == {
        "feasible",
        "flexibilities",
        "v_min_pu_at_pmax",
        "v_max_pu_at_pmin",
        "max_loading_percent",
        "seconds",
    }
    assert document["feasible"] is True
    cs01, cs02 = document["flexibilities"]
    assert (cs01["element"], cs01["index"], cs01["bus"], cs01["name"]) == ("load", 2, 3, "CS01")
    assert cs01["p_max_kw"] == pytest.approx(cs02["p_max_kw"], abs=1e-3)  # maxmin: equal shares
    del runs[0]["seconds"], runs[1]["seconds"]
    assert runs[0] == runs[1]


def test_infeasible_network_exits_1_with_the_least_violating_band(capsys, nets):
    code, out, err = lec_ocm(capsys, str(nets["high"]), "--json")
    document = json.loads(out)
    assert code == 1 and document["feasible"] is False
    assert [(f["p_min_kw"], f["p_max_kw"]) for f in document["flexibilities"]] == [(0.0, 0.0)] * 2
    assert document["v_min_pu_at_pmax"] < 0.95
    assert err.startswith("error: no schedule") and "pu < 0.950" in err
    code, out, _ = lec_ocm(capsys, str(nets["high"]))
    assert code == 1 and "feasible: NO" in out


def test_profiles_run_writes_bands_and_plots(capsys, nets, tmp_path):
    profiles = tmp_path / "profiles.csv"
    paper_profile_frame().to_csv(profiles, index=False)
    out_dir = tmp_path / "out"
    code, out, _ = lec_ocm(
        capsys,
        str(nets["paper"]),
        "--profiles",
        str(profiles),
        "--out",
        str(out_dir),
        "--samples",
        "50",
        "--json",
    )
    summary = json.loads(out)
    assert code == 1  # the high-load spell has no feasible band
    assert summary["steps"] == STEPS and summary["feasible_steps"] == STEPS - len(HIGH_UL01)
    for name in ("bands.csv", "bands.json", "bands.png", "voltages.png", "boxplots.png"):
        assert (out_dir / name).is_file()
    code, out, _ = lec_ocm(
        capsys, str(nets["paper"]), "--profiles", str(profiles), "--out", str(out_dir), "--steps", "5"
    )
    assert code == 0 and "feasible steps: 5 of 5" in out


def test_simbench_profiles_of_a_simbench_network(capsys, tmp_path):
    import simbench

    from ocm.examples import place_flexibilities

    net = simbench.get_simbench_net("1-LV-rural1--0-sw")
    net.sgen["controllable"] = False
    place_flexibilities(net, 8, seed=2)
    path = tmp_path / "simbench.json"
    pp.to_json(net, str(path))
    out_dir = tmp_path / "out"
    code, out, _ = lec_ocm(
        capsys,
        str(path),
        "--profiles",
        "simbench",
        "--day",
        "2016-06-01",
        "--steps",
        "3",
        "--out",
        str(out_dir),
    )
    assert code == 0 and "3 steps, 8 flexibilities" in out
    assert (out_dir / "profiles.csv").is_file() and (out_dir / "bands.png").is_file()


def _no_flexibilities(net):
    net.load["controllable"] = False


def _inverted_limits(net):
    net.load.loc[2, "min_p_mw"] = 0.03


def _nan_limit(net):
    net.load.loc[3, "max_p_mw"] = np.nan


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_no_flexibilities, "no flexibilities"),
        (_inverted_limits, r"load 2: min_p_mw \(0.03\) exceeds max_p_mw \(0.022\)"),
        (_nan_limit, "load 3 is controllable but max_p_mw is missing"),
    ],
)
def test_bad_flexibilities_exit_2_naming_the_element(capsys, tmp_path, change, message):
    net = paper_test_feeder()
    change(net)
    path = tmp_path / "bad.json"
    pp.to_json(net, str(path))
    code, out, err = lec_ocm(capsys, str(path))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and re.search(message, err), err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{missing}"], "no such file"),
        (["{garbage}"], "is not a JSON network file"),
        (["{paper}", "--day", "2016-06-01"], "--day only apply with --profiles"),
        (["{paper}", "--profiles", "simbench"], "--profiles simbench needs --day"),
        (["{paper}", "--profiles", "{garbage}"], "not a finite number|first column must be 'time'"),
        (["{paper}", "--profiles", "{bad_csv}"], "column load.2.p_kw: load 2 is a flexibility"),
        (["{paper}", "--profiles", "simbench", "--day", "2016-06-01"], "needs a SimBench network"),
    ],
)
def test_bad_input_exits_2_with_a_clean_message(capsys, nets, tmp_path, arguments, message):
    (tmp_path / "garbage.json").write_text("not json")
    (tmp_path / "bad.csv").write_text("time,load.2.p_kw\n0,1\n")
    files = {
        "missing": tmp_path / "absent.json",
        "garbage": tmp_path / "garbage.json",
        "bad_csv": tmp_path / "bad.csv",
        "paper": nets["paper"],
    }
    code, out, err = lec_ocm(capsys, *[a.format(**files) for a in arguments])
    assert code == 2 and out == ""
    assert re.search(message, err), err


def test_registering_the_subcommand_imports_nothing_heavy():
    """``lec --help`` builds every subcommand's parser: ``lec ocm`` must not slow it down."""
    code = (
        "import argparse, sys; from node.cli import ocm; "
        "ocm.register(argparse.ArgumentParser().add_subparsers()); "
        "print(sorted(m for m in ('numpy', 'pandas', 'pandapower', 'ocm', 'deap', 'matplotlib') "
        "if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


def test_through_lec_main_once_registered(monkeypatch, capsys, nets):
    from node.cli import main

    if "node.cli.ocm" not in main.SUBCOMMAND_MODULES:
        monkeypatch.setattr(main, "SUBCOMMAND_MODULES", [*main.SUBCOMMAND_MODULES, "node.cli.ocm"])
    assert main.main(["ocm", str(nets["paper"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["feasible"] is True
    assert main.main(["ocm", str(nets["paper"]) + ".missing"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_several_nets_are_solved_in_parallel_workers_each_reported(capsys, nets, tmp_path):
    missing = tmp_path / "absent.json"
    code, out, err = lec_ocm(
        capsys,
        str(nets["paper"]),
        str(nets["high"]),
        str(missing),
        "--workers",
        "2",
        "--json",
        "--samples",
        "50",
    )
    documents = json.loads(out)
    assert code == 1 and "no feasible band for high.json, absent.json" in err
    assert [d["name"] for d in documents] == ["paper.json", "high.json", "absent.json"]
    paper, high, absent = documents
    assert paper["feasible"] is True and paper["error"] is None and len(paper["flexibilities"]) == 2
    assert high["feasible"] is False and high["error"] is None
    assert "no such file" in absent["error"] and "feasible" not in absent
    # the same bands as the single-network command
    _, single, _ = lec_ocm(capsys, str(nets["paper"]), "--json", "--samples", "50")
    assert json.loads(single)["flexibilities"] == paper["flexibilities"]


def test_profiles_take_one_net(capsys, nets):
    code, _, err = lec_ocm(capsys, str(nets["paper"]), str(nets["high"]), "--profiles", "x.csv")
    assert code == 2 and "--profiles takes one NET" in err
