"""``lec ocm``: capacity bands [P_min, P_max] for the flexibilities of a network, for its own
operating point or for every step of load and generation profiles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from node.cli.arguments import non_negative_int, positive_int
from node.cli.errors import CliError

OBJECTIVES = ("sum", "proportional", "maxmin")

HELP = """\
Optimal capacity management (Rao et al. 2021, with thermal limits): for every flexibility
of NET, a band [P_min, P_max] of active power such that, as long as every flexibility stays
inside its band, no bus voltage leaves its limits and no line or transformer is overloaded.
Powers are in kW, load convention: consumption positive, so a PV band is negative.

NET is a pandapower network (pandapower.to_json) or a native lec-network file. Its
flexibilities are the in-service loads, sgens and storages with controllable = true and
min_p_mw/max_p_mw (native: min_p_kw/max_p_kw); an optional integer column priority_group
(default 0) serves group 0 first. Limits: bus min_vm_pu/max_vm_pu (default 0.95/1.05),
line and trafo max_loading_percent (default 100). Everything else keeps its p/q (times
scaling); a flexibility's own p_mw does not matter.

Without --profiles: one band per flexibility for the network's own operating point.
  --json prints {"feasible", "flexibilities": [{"element", "index", "bus", "name",
  "p_min_kw", "p_max_kw"}], "v_min_pu_at_pmax", "v_max_pu_at_pmin",
  "max_loading_percent", "seconds"}.
With --profiles CSV: bands for every step of the profiles (format: docs/ocm.md; "time" then
columns like load.3.p_kw, sgen.1.max_p_kw), written to --out as bands.csv, bands.json and
plots (bands.png, voltages.png, boxplots.png). --profiles simbench uses the profiles that a
SimBench network carries, for one --day, interpolated to one minute.

With several NETs (or --workers K): every NET is one feeder, all solved in parallel worker
processes (ocm.feeders.FeederPool); one line per feeder, or with --json a list of the
documents above with "net", "name" and "error" (null, or why that feeder has no bands). A
feeder that cannot be read or solved, or whose worker dies, is reported and the others go on.

Exit status: 0 every band feasible, 1 some time step (or feeder) has no feasible band (then
the bands are the least-violating zero-width ones, and the violation is reported) or some
feeder failed, 2 bad input (of a single NET).

The OCM service of a community, which publishes bands on chain every minute, is
``lec oracle run NET``.

examples:
  lec ocm feeder.json                         bands for the network as it is
  lec ocm feeder.json --json --objective maxmin
  lec ocm feeder.json --profiles day.csv --out bands/
  lec ocm simbench_lv.json --profiles simbench --day 2016-06-01 --steps 120
  lec ocm feeder1.json feeder2.json feeder3.json --workers 2
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ocm",
        help="capacity bands [P_min, P_max] per flexibility (optimal capacity management)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "nets",
        nargs="+",
        metavar="NET",
        help="network file: pandapower JSON or native lec-network JSON; several: one feeder each",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes for several NETs (default: the CPU count; see docs/ocm.md)",
    )
    add_solver_options(parser)
    parser.add_argument(
        "--profiles", metavar="CSV", help="profiles CSV, or 'simbench' for a SimBench net's own profiles"
    )
    parser.add_argument("--day", metavar="YYYY-MM-DD", help="the day of --profiles simbench")
    parser.add_argument("--steps", type=positive_int, help="only the first STEPS steps of the profiles")
    parser.add_argument("--out", metavar="DIR", help="output folder of --profiles (default ocm-bands)")
    parser.set_defaults(func=run)


def add_solver_options(parser: argparse.ArgumentParser) -> None:
    """--objective, --seed and --samples (shared with ``lec oracle run``)."""
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="sum",
        help="how capacity is shared: sum (the paper's, most in total), proportional "
        "(proportional fairness of shares), maxmin (largest smallest share); default sum",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; equal seeds give equal bands (default 0)"
    )
    parser.add_argument(
        "--samples",
        type=non_negative_int,
        default=500,
        help="random in-band schedules that verify each band (default 500)",
    )


def run(args: argparse.Namespace) -> int:
    from ocm.grid.errors import NetworkError
    from ocm.profiles import ProfileError

    _check_options(args)
    args.net = args.nets[0]
    try:
        if args.profiles:
            return _run_timeseries(args)
        if len(args.nets) > 1 or args.workers:
            return _run_feeders(args)
        return _run_snapshot(args)
    except (NetworkError, ProfileError, OSError) as error:
        raise CliError(str(error)) from None


def _check_options(args: argparse.Namespace) -> None:
    if args.profiles and (len(args.nets) > 1 or args.workers):
        raise CliError("--profiles takes one NET (and no --workers)")
    if not args.profiles:
        given = [f"--{name}" for name in ("day", "steps", "out") if getattr(args, name) is not None]
        if given:
            raise CliError(f"{', '.join(given)} only apply with --profiles")
    elif args.profiles == "simbench" and not args.day:
        raise CliError("--profiles simbench needs --day YYYY-MM-DD")
    elif args.profiles != "simbench" and args.day:
        raise CliError("--day only applies with --profiles simbench")


def _run_snapshot(args: argparse.Namespace) -> int:
    from ocm.bands import OcmProblem
    from ocm.case import load_case

    case = load_case(args.net)
    problem = OcmProblem(case.grid, case.flexibilities, samples=args.samples)
    result = problem.solve(case.point, objective=args.objective, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_json_dict(), indent=1))
    else:
        print(format_result(case.grid.name or Path(args.net).name, result, args.seed, case.three_phase))
    if not result.feasible:
        print(f"error: {result.message}", file=sys.stderr)
        return 1
    return 0


def _run_feeders(args: argparse.Namespace) -> int:
    """Every NET as one feeder of a ``FeederPool``: one step each, in parallel; a feeder that
    cannot be read or solved is reported and does not stop the others."""
    from ocm.case import load_case
    from ocm.feeders import Feeder, FeederPool, FeederStep
    from ocm.grid.errors import NetworkError

    names = _feeder_names(args.nets)
    feeders, requests, errors = [], {}, {}
    for name, path in zip(names, args.nets, strict=True):
        try:
            case = load_case(path)
        except (NetworkError, OSError) as error:
            errors[name] = str(error)
            continue
        feeders.append(Feeder(name, case.grid, case.flexibilities, samples=args.samples))
        requests[name] = FeederStep(case.point, objective=args.objective, seed=args.seed)
    outcomes = {}
    if feeders:
        with FeederPool(feeders, workers=args.workers) as pool:
            outcomes = pool.step(requests)
    documents, lines = [], []
    for name, path in zip(names, args.nets, strict=True):
        outcome = outcomes.get(name)
        error = errors.get(name) or (outcome.error if outcome else "")
        result = outcome.result if outcome else None
        document = {"net": path, "name": name, "error": error or None}
        if result is not None:
            document.update(result.to_json_dict())
            state = "feasible" if result.feasible else f"INFEASIBLE ({result.message})"
            lines.append(
                f"{name}: {state}; {len(result.flexibilities)} flexibilities, bands "
                f"P_max {result.p_max_kw.sum():.1f} kW, P_min {result.p_min_kw.sum():.1f} kW in total; "
                f"verification {'passed' if result.verification.passed else 'FAILED'}; "
                f"{result.seconds:.2f} s (worker {outcome.worker})"
            )
        else:
            lines.append(f"{name}: FAILED ({error})")
        documents.append(document)
    print(json.dumps(documents, indent=1) if args.json else "\n".join(lines))
    failed = [d["name"] for d in documents if d["error"] or not d.get("feasible")]
    if failed:
        print(f"error: no feasible band for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _feeder_names(paths: list[str]) -> list[str]:
    """The file names, made unique (``a.json``, ``a.json#2``) when two NETs share one."""
    names, seen = [], {}
    for path in paths:
        name = Path(path).name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return names


def _run_timeseries(args: argparse.Namespace) -> int:
    from ocm.bands import OcmProblem
    from ocm.case import load_case
    from ocm.profiles import profiles_from_frame, read_profiles, simbench_file_profiles, write_profiles
    from ocm.report import write_results
    from ocm.timeseries import run_timeseries

    case = load_case(args.net)
    if case.three_phase:
        raise CliError(
            f"{args.net} is a three-phase case (asymmetric elements or single-phase flexibilities): "
            "--profiles time series are balanced only for now; run it without --profiles for one step"
        )
    out = Path(args.out or "ocm-bands")
    written = []
    if args.profiles == "simbench":
        frame = simbench_file_profiles(args.net, args.day, case)
        out.mkdir(parents=True, exist_ok=True)
        write_profiles(frame, out / "profiles.csv")
        written.append(out / "profiles.csv")
        profiles = profiles_from_frame(frame, case)
    else:
        profiles = read_profiles(args.profiles, case)
    if args.steps:
        profiles = profiles.head(args.steps)
    problem = OcmProblem(case.grid, case.flexibilities, samples=args.samples)
    result = run_timeseries(
        problem,
        profiles,
        objective=args.objective,
        seed=args.seed,
        network=case.grid.name or Path(args.net).stem,
        progress=sys.stderr.isatty(),
    )
    written += write_results(result, out)
    steps = len(result.steps)
    summary = {
        "steps": steps,
        "feasible_steps": result.feasible_steps,
        "seconds": result.seconds,
        "seconds_per_step": result.seconds / steps,
        "files": [str(path) for path in written],
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        adjusted = sum(bool(s.verification.adjustment) for s in result.steps)
        print(
            f"network {result.network}: {steps} steps, {len(case.flexibilities)} flexibilities, "
            f"objective {args.objective}, seed {args.seed}"
        )
        print(
            f"feasible steps: {result.feasible_steps} of {steps}; bands adjusted by verification: {adjusted}"
        )
        print(f"time per step: {result.seconds / steps:.3f} s (total {result.seconds:.1f} s)")
        print("wrote " + ", ".join(summary["files"]))
    return 0 if result.feasible_steps == steps else 1


def format_result(title: str, result, seed: int, three_phase: bool = False) -> str:
    """Readable table of the bands with the corner values and the verification summary."""
    count = len(result.flexibilities)
    lines = [
        f"network {title}: {count} flexibilities, objective {result.objective}, seed {seed}",
        "",
        f"{'flexibility':<28} {'bus':>6} {'phase':>5} {'group':>5} {'hardware [kW]':>20} {'band [kW]':>20}",
    ]
    if three_phase:
        lines.insert(1, "three-phase: every phase voltage, phase conductor and the voltage unbalance (≤ 2 %)")
    for f, low, high in zip(result.flexibilities, result.p_min_kw, result.p_max_kw, strict=True):
        label = f"{f.key} ({f.name})" if f.name else f.key
        hardware = f"{f.p_low_kw:8.2f} .. {f.p_high_kw:8.2f}"
        band = f"{low:8.2f} .. {high:8.2f}"
        lines.append(f"{label:<28} {f.bus:>6} {f.phase:>5} {f.priority_group:>5} {hardware:>20} {band:>20}")
    lines.append("")
    lines.append("feasible: yes" if result.feasible else f"feasible: NO ({result.message})")
    lines.append(
        f"V_min with all at P_max: {result.v_min_pu_at_pmax:.4f} pu; "
        f"V_max with all at P_min: {result.v_max_pu_at_pmin:.4f} pu; "
        f"max loading at the corners: {result.max_loading_percent:.1f} %"
    )
    lines.append(f"verification {result.verification.summary()}")
    lines.append(f"solved in {result.seconds:.2f} s ({result.load_flows} load flows)")
    return "\n".join(lines)
