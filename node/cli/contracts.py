"""``lec contracts``: build the Solidity contracts offline and show what was built."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.errors import CliError
from node.paths import CONTRACTS_DIR
from node.solidity import CompileError, build_contracts

HELP = """\
Compile every contract in contracts/ with the npm solc compiler (WebAssembly, no
download), OpenZeppelin from node_modules, EVM version london (for the Clique chain).

Artifacts (ABI, bytecode) are cached in build/contracts/ by a hash of the sources,
compiler, OpenZeppelin version and settings: a second build with no change does not
compile. A compile error prints solc's message with file and line and exits with 1.

examples:
  lec contracts build           compile (or reuse the cached build)
  lec contracts build --force   compile even if nothing changed
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "contracts",
        help="build the Solidity contracts (offline, cached)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="compile contracts/*.sol (cached by source hash)")
    build.add_argument("--force", action="store_true", help="compile even when the cache is current")
    build.add_argument(
        "--contracts-dir",
        type=Path,
        default=CONTRACTS_DIR,
        help="folder of the *.sol sources (default: the project's contracts/)",
    )
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    try:
        result = build_contracts(args.contracts_dir, force=args.force)
    except CompileError as error:
        raise CliError(str(error), exit_code=1) from None
    state = "compiled" if result.compiled else "unchanged (cached build, nothing compiled)"
    print(f"contracts {state}: {result.cache_file}")
    for name, artifact in sorted(result.artifacts.items()):
        if artifact.is_deployable:
            functions = sum(1 for item in artifact.abi if item["type"] == "function")
            print(f"  {name:<20} {len(artifact.bytecode) // 2:>6} bytes  {functions:>3} functions")
    return 0
