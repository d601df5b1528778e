"""``lec loadflow``: HELM load flow of a network file (balanced, or three-phase for unbalanced
networks), as a report or as JSON."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING

from node.cli.errors import CliError

if TYPE_CHECKING:  # the load flow is imported when it runs: every lec command builds this parser
    import pandas as pd

    from ocm.grid.loadflow import NetworkResult, NetworkResult3ph

HELP = """\
Run a HELM (holomorphic embedding) load flow of NET with its loads, static generators
and storages as given, and report bus voltages and line and transformer loadings.

NET is a JSON file, either
  - a pandapower network saved with pandapower.to_json(net, "NET.json"), or
  - a network in the native format: {"format": "lec-network", ...}
    (see docs/native-network-format.md).
Supported elements: bus, line, trafo (two-winding), switch, shunt, load, sgen, storage,
ext_grid, and asymmetric_load, asymmetric_sgen (three-phase load flow). In-service elements
of other kinds are refused with their indices.

Without --json: tables of buses, lines and trafos, the lowest and highest voltages, the
most loaded branches and the limit violations (bus min_vm_pu/max_vm_pu, default
0.95/1.05; max_loading_percent, default 100).
With --json: {"converged": bool, "bus": {"<index>": {"vm_pu", "va_degree"}},
"line": {"<index>": {"loading_percent"}}, "trafo": {"<index>": {"loading_percent"}}}
in pandapower's element indices; de-energised buses and undefined values are null.

Three-phase (unbalanced) load flow: with --3ph, and automatically when the network
has in-service single-phase or unbalanced elements (pandapower's asymmetric_load and
asymmetric_sgen tables; "asymmetric_loads"/"asymmetric_sgens" in the native format),
the phases a, b, c are solved in symmetrical components as pandapower.runpp_3ph does
(neutral and earth as one return path; load and sgen split evenly over the phases; delta
elements between phases ab, bc, ca). It needs zero-sequence data: lines r0_ohm_per_km,
x0_ohm_per_km, c0_nf_per_km; trafos vector_group (Dyn or YNyn), vk0_percent,
vkr0_percent, mag0_percent, mag0_rx, si0_hv_partial; ext_grids s_sc_max_mva, rx_max,
x0x_max, r0x0_max (pandapower.add_zero_impedance_parameters fills them from standard
types); in-service shunts are refused. The report then shows the lowest and highest
phase voltages, the largest voltage unbalance (|V2|/|V1|; EN 50160 allows 2 %) and the
loadings per phase. --json answers with pandapower's res_*_3ph names:
  "bus": {"<index>": {"vm_a_pu", "va_a_degree", "vm_b_pu", "va_b_degree", "vm_c_pu",
          "va_c_degree", "unbalance_percent"}},
  "line": {"<index>": {"i_a_from_ka", "i_a_to_ka", ... "i_c_to_ka", "i_a_ka", "i_b_ka",
           "i_c_ka", "i_n_from_ka", "i_n_to_ka", "i_n_ka", "loading_a_percent", "loading_b_percent",
           "loading_c_percent", "loading_percent"}},
  "trafo": {"<index>": {"loading_a_percent", ... "loading_percent"}}
(loading_percent: the most loaded phase; i_n_ka: the neutral/earth current, 3 |I0|).

Exit status: 0 when the load flow converged, 1 when the network has no operable
solution (voltage collapse; then --json has "converged": false, null results and a
"message"), 2 for unreadable or unsupported networks (also: missing zero-sequence data
or an unsupported vector group for the three-phase load flow).

examples:
  lec loadflow feeder.json              report with the worst voltages and loadings
  lec loadflow feeder.json --json       results as JSON, e.g. for scripts
  lec loadflow feeder.json --3ph        three-phase load flow of a balanced network
  lec loadflow feeder.json --3ph --plot phases.png
                                        ... and each phase's voltage along the feeders
"""

TOP_N = 5
PHASES = ("a", "b", "c")
UNBALANCE_LIMIT_PERCENT = 2.0  # EN 50160: 10-minute means of the voltage unbalance up to 2 %


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "loadflow",
        help="HELM load flow of a pandapower or native network file",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("net", metavar="NET", help="network file: pandapower JSON or native lec-network JSON")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--3ph",
        dest="three_phase",
        action="store_true",
        help="three-phase (unbalanced) load flow; automatic for networks with asymmetric loads or sgens",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="three-phase only: draw every phase's voltage along the feeders (cable distance from "
        "the external grid) with the limits into PNG",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ocm.grid.errors import NetworkError
    from ocm.grid.helm_3ph import Helm3phSolver
    from ocm.grid.loadflow import network_result_3ph, run_loadflow
    from ocm.grid.model import build_grid
    from ocm.grid.network_io import read_network_tables
    from ocm.grid.three_phase import build_grid_3ph

    try:
        tables = read_network_tables(args.net)
    except NetworkError as error:
        raise CliError(str(error)) from None
    asymmetric = tables.has_asymmetric_elements()
    if args.plot and not (args.three_phase or asymmetric):
        raise CliError("--plot draws the phases of a three-phase load flow: add --3ph")
    try:
        if args.three_phase or asymmetric:
            grid = build_grid_3ph(tables)
            title = grid.balanced.name or args.net
        else:
            grid = build_grid(tables)
            title = grid.name or args.net
    except NetworkError as error:
        if asymmetric and not args.three_phase:
            raise CliError(
                f"the network has in-service asymmetric loads or generators, so it needs the three-phase "
                f"load flow: {error}"
            ) from None
        raise CliError(str(error)) from None
    if args.three_phase or asymmetric:
        solved = Helm3phSolver(grid).solve(
            grid.base_load_kw, grid.base_load_kvar, grid.base_delta_kw, grid.base_delta_kvar
        )
        result = network_result_3ph(grid, solved)
        report = format_report_3ph
        if args.plot:
            from ocm.phase_plots import write_phase_voltage_plot

            try:
                written = write_phase_voltage_plot(tables, grid, solved, args.plot)
            except OSError as error:
                raise CliError(f"--plot {args.plot}: {error.strerror or error}") from None
            print(f"phase voltages drawn in {written}", file=sys.stderr)
    else:
        result = run_loadflow(grid)
        report = format_report
    if args.json:
        print(json.dumps(result.to_json_dict(), indent=1))
    else:
        print(report(title, result))
    if not result.converged:
        print(f"error: {result.message}", file=sys.stderr)
        return 1
    return 0


def format_report(title: str, result: NetworkResult) -> str:
    """Readable tables, worst voltages and loadings, and the limit violations."""
    lines = [f"network {title}: {len(result.bus)} buses, {len(result.line)} lines, "]
    lines[0] += f"{len(result.trafo)} trafos"
    if not result.converged:
        lines.append(f"NO SOLUTION: {result.message}")
        return "\n".join(lines)
    how = f"{result.terms} HELM terms"
    if result.newton_iterations:
        how += f" + {result.newton_iterations} Newton steps"
    lines.append(f"converged with {how}, max power mismatch {result.max_mismatch_pu:.1e} pu")
    bus = result.bus.dropna(subset=["vm_pu"])
    lines += ["", "buses", _table(result.bus, ["name", "vm_pu", "va_degree", "min_vm_pu", "max_vm_pu"])]
    for element in ("line", "trafo"):
        table = getattr(result, element)
        if len(table):
            lines += ["", f"{element}s", _table(table, ["name", "loading_percent", "max_loading_percent"])]
    lines += ["", "lowest voltages"] + [_bus_line(i, r) for i, r in bus.nsmallest(TOP_N, "vm_pu").iterrows()]
    lines += ["highest voltages"] + [_bus_line(i, r) for i, r in bus.nlargest(TOP_N, "vm_pu").iterrows()]
    for element in ("line", "trafo"):
        table = getattr(result, element).dropna(subset=["loading_percent"])
        if len(table):
            most = table.nlargest(TOP_N, "loading_percent")
            lines += [f"most loaded {element}s"] + [_branch_line(element, i, r) for i, r in most.iterrows()]
    lines += ["", *_violations(result)]
    return "\n".join(lines)


def _violations(result: NetworkResult) -> list[str]:
    voltage = result.voltage_violations()
    lines = result.overloads("line")
    trafos = result.overloads("trafo")
    if voltage.empty and lines.empty and trafos.empty:
        return ["limits: all voltages and loadings within limits"]
    report = [f"limits VIOLATED: {len(voltage)} bus voltages, {len(lines)} lines, {len(trafos)} trafos"]
    report += [_bus_line(i, r) for i, r in voltage.iterrows()]
    report += [_branch_line("line", i, r) for i, r in lines.iterrows()]
    report += [_branch_line("trafo", i, r) for i, r in trafos.iterrows()]
    return report


def _bus_line(index, row) -> str:
    name = f" ({row['name']})" if row["name"] else ""
    limits = f"limits {row['min_vm_pu']:.3f}-{row['max_vm_pu']:.3f}"
    return f"  bus {index}{name}: {row['vm_pu']:.4f} pu ({limits})"


def _branch_line(element: str, index, row) -> str:
    name = f" ({row['name']})" if row["name"] else ""
    return (
        f"  {element} {index}{name}: {row['loading_percent']:.1f} % (max {row['max_loading_percent']:.0f} %)"
    )


def _table(table: pd.DataFrame, columns: list[str]) -> str:
    formats = {
        "vm_pu": "{:.4f}".format,
        "va_degree": "{:.3f}".format,
        "min_vm_pu": "{:.3f}".format,
        "max_vm_pu": "{:.3f}".format,
        "loading_percent": "{:.2f}".format,
        "max_loading_percent": "{:.0f}".format,
        **{f"vm_{x}_pu": "{:.4f}".format for x in PHASES},
        **{f"va_{x}_degree": "{:.3f}".format for x in PHASES},
        **{f"loading_{x}_percent": "{:.2f}".format for x in PHASES},
        **{f"i_{x}_ka": "{:.4f}".format for x in (*PHASES, "n")},
        "unbalance_percent": "{:.2f}".format,
    }
    return table[columns].to_string(formatters=formats, na_rep="-")


def format_report_3ph(title: str, result: NetworkResult3ph) -> str:
    """Per-phase tables, the worst phase voltages, unbalance and loadings, and the violations."""
    lines = [
        f"network {title}: {len(result.bus)} buses, {len(result.line)} lines, {len(result.trafo)} trafos "
        "(three-phase load flow)"
    ]
    if not result.converged:
        lines.append(f"NO SOLUTION: {result.message}")
        return "\n".join(lines)
    lines.append(
        f"converged with {result.terms} HELM terms, "
        f"max power mismatch {result.max_mismatch_pu:.1e} pu (of sn_mva / 3) per phase"
    )
    bus_columns = ["name", "vm_a_pu", "vm_b_pu", "vm_c_pu", "va_a_degree", "va_b_degree", "va_c_degree"]
    lines += ["", "buses", _table(result.bus, [*bus_columns, "unbalance_percent", "min_vm_pu", "max_vm_pu"])]
    loading_columns = ["loading_a_percent", "loading_b_percent", "loading_c_percent", "max_loading_percent"]
    if len(result.line):
        columns = ["name", "i_a_ka", "i_b_ka", "i_c_ka", "i_n_ka", *loading_columns]
        lines += ["", "lines", _table(result.line, columns)]
    if len(result.trafo):
        lines += ["", "trafos", _table(result.trafo, ["name", *loading_columns])]
    voltages = result.phase_voltages().dropna(subset=["vm_pu"])
    lines += ["", "lowest phase voltages"]
    lines += [_phase_line(row) for _, row in voltages.nsmallest(TOP_N, "vm_pu").iterrows()]
    lines += ["highest phase voltages"]
    lines += [_phase_line(row) for _, row in voltages.nlargest(TOP_N, "vm_pu").iterrows()]
    bus = result.bus.dropna(subset=["unbalance_percent"])
    lines += ["largest voltage unbalance (|V2|/|V1|)"]
    lines += [_unbalance_line(i, r) for i, r in bus.nlargest(TOP_N, "unbalance_percent").iterrows()]
    for element in ("line", "trafo"):
        table = getattr(result, element).dropna(subset=["loading_percent"])
        if len(table):
            most = table.nlargest(TOP_N, "loading_percent")
            lines += [f"most loaded {element}s"] + [
                _phase_branch_line(element, i, r) for i, r in most.iterrows()
            ]
    lines += ["", *_violations_3ph(result)]
    return "\n".join(lines)


def _violations_3ph(result: NetworkResult3ph) -> list[str]:
    voltage = result.voltage_violations()
    lines = result.overloads("line")
    trafos = result.overloads("trafo")
    unbalanced = result.bus[result.bus["unbalance_percent"] > UNBALANCE_LIMIT_PERCENT]
    report = []
    if voltage.empty and lines.empty and trafos.empty:
        report.append("limits: all phase voltages and loadings within limits")
    else:
        report.append(
            f"limits VIOLATED: {len(voltage)} bus phase voltages, {len(lines)} lines, {len(trafos)} trafos"
        )
        report += [_phase_line(row) for _, row in voltage.iterrows()]
        report += [_phase_branch_line("line", i, r) for i, r in lines.iterrows()]
        report += [_phase_branch_line("trafo", i, r) for i, r in trafos.iterrows()]
    if len(unbalanced):
        report.append(
            f"voltage unbalance above {UNBALANCE_LIMIT_PERCENT:.0f} % (EN 50160) at {len(unbalanced)} buses"
        )
        report += [_unbalance_line(i, r) for i, r in unbalanced.iterrows()]
    return report


def _phase_line(row) -> str:
    name = f" ({row['name']})" if row["name"] else ""
    limits = f"limits {row['min_vm_pu']:.3f}-{row['max_vm_pu']:.3f}"
    return f"  bus {row['bus']}{name} phase {row['phase']}: {row['vm_pu']:.4f} pu ({limits})"


def _unbalance_line(index, row) -> str:
    name = f" ({row['name']})" if row["name"] else ""
    return f"  bus {index}{name}: {row['unbalance_percent']:.2f} %"


def _phase_branch_line(element: str, index, row) -> str:
    name = f" ({row['name']})" if row["name"] else ""
    phases = [float(row[f"loading_{x}_percent"]) for x in PHASES]
    known = [(p, x) for p, x in zip(phases, PHASES, strict=True) if not math.isnan(p)]
    worst = max(known)[1] if known else "-"
    text = (
        f"  {element} {index}{name}: {row['loading_percent']:.1f} % on phase {worst} "
        f"(a/b/c {'/'.join(f'{p:.1f}' for p in phases)} %, max {row['max_loading_percent']:.0f} %)"
    )
    if element == "line":
        text += f", neutral {row['i_n_ka'] * 1e3:.1f} A"
    return text
