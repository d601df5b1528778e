"""``lec oracle run``: the OCM oracle of a community, publishing bands on chain."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.arguments import positive_int, probability
from node.cli.errors import CliError
from node.cli.ocm import add_solver_options

HELP = """\
The OCM oracle of a community (the DSO's service). Every minute it reads the latest meter
readings from the chain (MeasurementLedger events), builds the operating point (measured
buses where every meter of the bus reported within --stale-after minutes, the network
file's values elsewhere), computes bands for the flexibilities registered in
CommunityRegistry (their bus must be a bus of NET), and publishes them to CapacityLimits
with the key "ocm" of the data directory for the next --horizon minutes. A band that
fails verification is never published; with no feasible schedule, the least-violating
zero-width bands are. Runs until Ctrl-C (--once: one cycle, then exit; status 0 when a
feasible band was published, 1 otherwise).

Forecast errors: the measured bus loads teach a forecast and its error envelope (after
--horizon + 2 minutes: persistence with learnt errors; after two days: daily profile plus
the latest deviation). Bands then hold for every state in the envelope, which on the
history covers every bus at once in a share --probability of the minutes; the capacity
this costs against the central forecast is logged. Such bands are published again only
when the measured load leaves the envelope, a device's availability changes, or fewer
than --refresh minutes of them are left. Devices: the owners' reports on chain
(DeviceStates: plug state and energy need of a car, charge of a battery), advanced by the
devices' own meters; a charger without a car gets no capacity.

Three-phase: on a network with asymmetric loads or single-phase meters (--meter-phase)
and zero-sequence data, the bands keep every phase voltage, phase conductor and the
voltage unbalance (2 %) within limits, from the meters' per-phase readings; a charger
whose sub-meter is single-phase is a single-phase flexibility (docs/three-phase.md).

examples:
  lec oracle run feeder.json --data-dir .lec/community --rpc-url http://127.0.0.1:8545
  lec oracle run feeder.json --meter-phase M-CS01=a --meter-phase H7=b
  lec oracle run .lec/community/feeder.json --once
"""


def meter_phase(text: str) -> tuple[str, str]:
    """``METER=PHASE`` with PHASE one of a, b, c (abc: three-phase, the default)."""
    meter, sep, phase = text.partition("=")
    phase = phase.strip().lower()
    if not sep or not meter.strip() or phase not in ("a", "b", "c", "abc"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give METER=PHASE with PHASE a, b, c or abc, e.g. M-CS01=a"
        )
    return meter.strip(), phase


def register(subparsers: argparse._SubParsersAction) -> None:
    oracle = subparsers.add_parser(
        "oracle",
        help="the OCM oracle: measured grid state -> bands -> CapacityLimits, every minute",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = oracle.add_subparsers(dest="action", metavar="ACTION", required=True)
    parser = actions.add_parser(
        "run", help="run the oracle", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("net", metavar="NET", help="the feeder: pandapower JSON or native lec-network JSON")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".lec") / "community", help="keys and deployment"
    )
    parser.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="JSON-RPC endpoint of the chain")
    parser.add_argument(
        "--horizon", type=positive_int, default=30, help="minutes each band covers (default 30)"
    )
    parser.add_argument(
        "--stale-after",
        type=positive_int,
        default=3,
        help="minutes after which a reading is stale (default 3)",
    )
    parser.add_argument(
        "--probability",
        type=probability,
        default=0.99,
        help="share of minutes the bands must hold for under forecast errors (default 0.99)",
    )
    parser.add_argument(
        "--refresh",
        type=positive_int,
        default=15,
        help="publish again when fewer minutes of the published bands are left (default 15)",
    )
    parser.add_argument(
        "--meter-phase",
        action="append",
        default=[],
        type=meter_phase,
        metavar="METER=PHASE",
        help="a single-phase meter and its phase a, b or c (repeatable; default: three-phase)",
    )
    parser.add_argument(
        "--three-phase",
        choices=("auto", "yes", "no"),
        default="auto",
        help="per-phase OCM: auto (default: with asymmetric loads or single-phase meters, if the "
        "network has zero-sequence data), yes (required) or no (balanced)",
    )
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    add_solver_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.cli.community import open_community
    from node.cli.node import shutdown_requested
    from ocm.grid.errors import NetworkError
    from ocm.grid.network_io import read_network_tables
    from ocm.grid.three_phase import build_grid_3ph
    from ocm.oracle import OcmService, ServiceSettings

    try:
        tables = read_network_tables(args.net)
        if args.three_phase == "yes":
            build_grid_3ph(tables)  # the three-phase model's errors before anything else
    except NetworkError as error:
        raise CliError(str(error)) from None
    community, keyring = open_community(args.data_dir, args.rpc_url)
    settings = ServiceSettings(
        objective=args.objective,
        horizon_minutes=args.horizon,
        stale_after_minutes=args.stale_after,
        seed=args.seed,
        samples=args.samples,
        probability=args.probability,
        refresh_minutes=args.refresh,
    )
    try:
        service = OcmService(
            community,
            keyring["ocm"],
            tables,
            settings,
            status_file=args.data_dir / "ocm" / "status.json",
            meter_phases=dict(args.meter_phase),
            three_phase={"auto": None, "yes": True, "no": False}[args.three_phase],
        )
    except NetworkError as error:
        raise CliError(f"{args.net}: {error}") from None
    if args.once:
        outcome = service.cycle()
        print(f"minute {outcome.minute}: {outcome.reason}")
        for band in outcome.bands:
            print(f"  {band.flex_id:<10} [{band.p_min_kw:9.3f}, {band.p_max_kw:9.3f}] kW")
        return 0 if outcome.published and outcome.result is not None and outcome.result.feasible else 1
    stop = shutdown_requested()
    name = community.deployment.config.name
    print(f"OCM oracle for {name!r} on {args.net}; Ctrl-C stops it", flush=True)
    service.run(stop)
    return 0
