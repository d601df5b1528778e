"""``lec loadflow``: HELM load flow of a network file, as a report or as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from node.cli.errors import CliError

if TYPE_CHECKING:  # the load flow is imported when it runs: every lec command builds this parser
    import pandas as pd

    from ocm.grid.loadflow import NetworkResult

HELP = """\
Run a HELM (holomorphic embedding) load flow of NET with its loads, static generators
and storages as given, and report bus voltages and line and transformer loadings.

NET is a JSON file, either
  - a pandapower network saved with pandapower.to_json(net, "NET.json"), or
  - a network in the native format: {"format": "lec-network", ...}
    (see docs/native-network-format.md).
Supported elements: bus, line, trafo (two-winding), switch, shunt, load, sgen, storage,
ext_grid. In-service elements of other kinds are refused with their indices.

Without --json: tables of buses, lines and trafos, the lowest and highest voltages, the
most loaded branches and the limit violations (bus min_vm_pu/max_vm_pu, default
0.95/1.05; max_loading_percent, default 100).
With --json: {"converged": bool, "bus": {"<index>": {"vm_pu", "va_degree"}},
"line": {"<index>": {"loading_percent"}}, "trafo": {"<index>": {"loading_percent"}}}
in pandapower's element indices; de-energised buses and undefined values are null.

Exit status: 0 when the load flow converged, 1 when the network has no operable
solution (voltage collapse; then --json has "converged": false, null results and a
"message"), 2 for unreadable or unsupported networks.

examples:
  lec loadflow feeder.json              report with the worst voltages and loadings
  lec loadflow feeder.json --json       results as JSON, e.g. for scripts
"""

TOP_N = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "loadflow",
        help="HELM load flow of a pandapower or native network file",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("net", metavar="NET", help="network file: pandapower JSON or native lec-network JSON")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ocm.grid.errors import NetworkError
    from ocm.grid.loadflow import run_loadflow
    from ocm.grid.network_io import read_network

    try:
        grid = read_network(args.net)
    except NetworkError as error:
        raise CliError(str(error)) from None
    result = run_loadflow(grid)
    if args.json:
        print(json.dumps(result.to_json_dict(), indent=1))
    else:
        print(format_report(grid.name or args.net, result))
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
    }
    return table[columns].to_string(formatters=formats, na_rep="-")
