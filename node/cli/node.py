"""``lec node``: run the embedded proof-of-authority node and serve JSON-RPC."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from node.cli.errors import CliError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".lec") / "node"

HELP = """\
Run the community's chain: a Clique (EIP-225) proof-of-authority node on py-evm (London
rules), kept on disk in the data directory and served as standard Ethereum JSON-RPC
over HTTP, so web3.py, ethers and Foundry's cast work against it.

The data directory is created if missing: a new chain gets a genesis in which this
node's sealer key (kept in DATA_DIR/keys.json, never printed) is the only signer and
the service accounts are funded. Stop the node with Ctrl-C (or kill it: every sealed
block is on disk); start it again with the same data directory and it continues.

Besides the eth_*/net_*/web3_* methods, clique_getSigners, clique_propose,
clique_discard and clique_proposals manage the set of sealers by Clique votes.

examples:
  lec node start                                  127.0.0.1:8545, data in .lec/node
  lec node start --data-dir /var/lib/lec --port 8600 --period 5
  cast block-number --rpc-url http://127.0.0.1:8545
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run the embedded proof-of-authority node (JSON-RPC)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start the node and serve JSON-RPC until stopped")
    start.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="chain data (default: .lec/node)"
    )
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    start.add_argument("--port", type=int, default=8545, help="JSON-RPC port (default: 8545)")
    start.add_argument(
        "--period", type=int, default=2, help="seconds between blocks, for a new chain (default: 2)"
    )
    start.add_argument("--chain-id", type=int, default=4242, help="chain id, for a new chain (default: 4242)")
    start.set_defaults(func=run_start)


def run_start(args: argparse.Namespace) -> int:
    from node.embedded import open_embedded_chain

    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be 0..65535, got {args.port}")
    if args.period < 1:
        raise CliError(f"--period must be at least 1 second, got {args.period}")
    stop = shutdown_requested()
    try:
        chain = open_embedded_chain(args.data_dir, period=args.period, chain_id=args.chain_id)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot open the chain in {args.data_dir}: {error}") from None
    try:
        url = chain.serve(args.host, args.port)
    except OSError as error:
        chain.stop()
        raise CliError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    node = chain.node
    print(
        f"lec node: chain {node.genesis.chain_id}, block {node.head.block_number}, period {node.period} s",
        flush=True,
    )
    print(f"  data dir : {args.data_dir}", flush=True)
    print(f"  sealer   : {chain.keyring['sealer'].address}", flush=True)
    print(f"  JSON-RPC : {url}", flush=True)
    stop.wait()
    chain.stop()
    print("lec node: stopped", flush=True)
    return 0


def shutdown_requested() -> threading.Event:
    """An event set by SIGINT or SIGTERM; install it before announcing readiness."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop
