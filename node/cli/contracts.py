"""``lec contracts``: build the Solidity contracts offline and show what was built."""

from __future__ import annotations

import argparse
from pathlib import Path

from contracts.paths import CONTRACTS_DIR
from node.cli.errors import CliError

HELP = """\
Compile every contract in contracts/ with the npm solc compiler (WebAssembly, no
download), OpenZeppelin from node_modules, EVM version london (for the Clique chain).

Artifacts (ABI, bytecode) are cached in build/contracts/ by a hash of the sources,
compiler, OpenZeppelin version and settings: a second build with no change does not
compile. A compile error prints solc's message with file and line and exits with 1.

`lec contracts deploy` deploys the community contracts through any Ethereum JSON-RPC
endpoint (the embedded node, a geth/Besu clique network (`lec network geth`), anvil) with the
admin key of the data directory, and records the addresses in DATA_DIR/deployment.json;
if that file already names contracts present on the chain, they are reused.

examples:
  lec contracts build           compile (or reuse the cached build)
  lec contracts build --force   compile even if nothing changed
  lec contracts deploy --rpc-url http://127.0.0.1:8545 --data-dir .lec/community
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
    deploy = actions.add_parser(
        "deploy", help="deploy the community contracts via JSON-RPC (recorded, reused)"
    )
    deploy.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="JSON-RPC endpoint")
    deploy.add_argument(
        "--data-dir", type=Path, default=Path(".lec") / "community", help="keys and deployment record"
    )
    deploy.add_argument("--community", default="Demo energy community", help="community name")
    deploy.add_argument("--slot-minutes", type=int, default=15, help="market slot length, 1..64")
    deploy.set_defaults(func=run_deploy)


def run_build(args: argparse.Namespace) -> int:
    from contracts.build import CompileError, build_contracts  # solcx: imported only when used

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


def run_deploy(args: argparse.Namespace) -> int:
    from contracts.accounts import Keyring
    from contracts.build import CompileError, build_contracts
    from contracts.client import ChainClient, ChainError
    from contracts.deploy import CommunityConfig, ensure_deployment

    if not 1 <= args.slot_minutes <= 64:
        raise CliError(f"--slot-minutes must be 1..64, got {args.slot_minutes}")
    admin = Keyring.load_or_create(args.data_dir)["admin"]
    config = CommunityConfig(name=args.community, slot_minutes=args.slot_minutes)
    try:
        artifacts = build_contracts().artifacts
    except CompileError as error:
        raise CliError(str(error), exit_code=1) from None
    try:
        client = ChainClient.connect(args.rpc_url, artifacts)
    except ChainError as error:
        raise CliError(str(error), exit_code=1) from None
    try:
        deployment, fresh = ensure_deployment(client, admin, args.data_dir, config)
    except ChainError as error:
        raise CliError(f"{error} (is the admin account {admin.address} funded on this chain?)", 1) from None
    print(
        f"community {deployment.config.name!r} {'deployed' if fresh else 'already deployed'} "
        f"on chain {deployment.chain_id}; recorded in {args.data_dir / 'deployment.json'}"
    )
    for name, address in deployment.addresses.items():
        print(f"  {name:<18} {address}")
    return 0
