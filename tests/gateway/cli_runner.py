"""Runs ``node.cli.gateway``'s subcommands as ``lec`` would (until main.py lists the module):
``python -m tests.gateway.cli_runner gateway run ...``."""

from __future__ import annotations

import argparse
import logging
import sys

from node.cli import gateway
from node.cli.errors import CliError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lec")
    gateway.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("web3").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
