"""``lec market``: the market's services on a running node, each alone (``lec up`` runs
them all): the market operator (gate closure, settlement) and the curtailer."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = """\
The market's services of a community, for a node that runs them apart from lec up.

  operate   the market operator (key "operator" of the data directory, which needs the
            market operator role): closes each slot at gate closure (expires open
            orders; clears the call auction in auction mode) and settles every member once
            the slot is final
  curtail   the curtailer: follows the bands the OCM oracle publishes and the DSO's
            limitations; when one leaves a flexibility's traded schedule outside its band,
            calls EnergyMarket.curtail (cuts the latest trades and open orders back into
            the band, refunds the buyers), usually in the next block

examples:
  lec market operate --data-dir .lec/community --rpc-url http://127.0.0.1:8545
  lec market curtail --rpc-url http://127.0.0.1:8545
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    market = subparsers.add_parser(
        "market",
        help="the market operator and the curtailer, run on their own",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = market.add_subparsers(dest="action", metavar="ACTION", required=True)
    operate = actions.add_parser("operate", help="close gates and settle slots until Ctrl-C")
    curtail = actions.add_parser("curtail", help="curtail trades when bands are tightened, until Ctrl-C")
    for parser in (operate, curtail):
        parser.add_argument(
            "--data-dir", type=Path, default=Path(".lec") / "community", help="keys and deployment"
        )
        parser.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="JSON-RPC endpoint")
    operate.set_defaults(func=run_operator)
    curtail.set_defaults(func=run_curtailer)


def run_operator(args: argparse.Namespace) -> int:
    from market.operator import MarketOperator
    from node.cli.community import open_community
    from node.cli.node import shutdown_requested

    community, keyring = open_community(args.data_dir, args.rpc_url)
    stop = shutdown_requested()
    print(f"market operator of {community.deployment.config.name!r}; Ctrl-C stops it", flush=True)
    MarketOperator(community, keyring["operator"]).run(stop)
    return 0


def run_curtailer(args: argparse.Namespace) -> int:
    from market.curtailer import Curtailer
    from node.cli.community import open_community
    from node.cli.node import shutdown_requested

    community, keyring = open_community(args.data_dir, args.rpc_url)
    stop = shutdown_requested()
    print(f"curtailer of {community.deployment.config.name!r}; Ctrl-C stops it", flush=True)
    Curtailer(community, keyring["operator"]).run(stop)
    return 0
