"""Entry point of the ``lec`` command: builds the parser from the subcommand modules."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from node.cli.errors import CliError

# Each module defines ``register(subparsers)`` which adds its parser and sets ``func``.
SUBCOMMAND_MODULES = [
    "node.cli.up",
    "node.cli.status",
    "node.cli.node",
    "node.cli.contracts",
    "node.cli.loadflow",
    "node.cli.ocm",
    "node.cli.pricing",
    "node.cli.oracle",
    "node.cli.gateway",
    "node.cli.market",
    "node.cli.network",
    "node.cli.mqtt",
    "node.cli.api",
    "node.cli.openadr",
]

QUIET_LIBRARIES = ("web3", "urllib3", "eth", "asyncio", "numba", "matplotlib", "PIL", "pandapower")

DESCRIPTION = """\
lec: the node of a local energy community.

Members trade energy peer to peer on a proof-of-authority chain; the grid operator
publishes, for every flexibility, a band [P_min, P_max] that keeps the feeder's
voltages and lines within their limits; meters report P, Q, V and angle every minute.

Start here:
  lec up                       run the whole community node on embedded defaults
  lec status                   what a running node is doing (head, readings, bands, orders)
  lec node start               run only the proof-of-authority chain (JSON-RPC)
  lec contracts build          compile the Solidity contracts (offline, cached)
  lec loadflow NET.json        HELM load flow of a pandapower network
  lec ocm NET.json             capacity bands [P_min, P_max] per flexibility (OCM)
  lec dt NET.json              dynamic network tariffs per load point and hour (DSO)
  lec tfm NET.json             flexibility market: requirements, bids, network-aware clearing
  lec oracle run NET.json      the OCM oracle: bands on chain every minute
  lec gateway run              the MQTT meter gateway (readings -> chain)
  lec market operate|curtail   the market operator, the curtailer
  lec mqtt password METER_ID   a meter's MQTT password for lec up's Mosquitto
  lec api                      the dApp HTTP API, web pages and OpenADR 3 VTN of a community
  lec openadr credentials ID   a device's OpenADR 3 client id and secret

Every subcommand has its own --help with examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lec", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    try:
        return int(args.func(args) or 0)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
