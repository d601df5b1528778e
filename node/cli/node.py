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
over HTTP (--port, default 8545) and WebSocket (--ws-port, default 8546; --no-ws turns
it off), so web3.py, ethers and Foundry's cast work against it. Over WebSocket,
eth_subscribe follows newHeads, logs (with address/topics filters) and
newPendingTransactions (hashes, or whole transactions with `true`), as geth does.

The data directory is created if missing: a new chain gets a genesis in which this
node's sealer key (kept in DATA_DIR/keys.json, never printed) is the only signer and
the service accounts are funded. Stop the node with Ctrl-C (or kill it: every sealed
block is on disk); start it again with the same data directory and it continues.

Besides the eth_*/net_*/web3_* methods, clique_getSigners, clique_propose,
clique_discard and clique_proposals manage the set of sealers by Clique votes.

`lec node export` writes the canonical chain in geth's block-file format (RLP blocks, as
`geth export` does) and the genesis in geth's JSON, so any Clique client re-validates the
whole chain: every seal, state root, receipt root and bloom. It reads a running node's
data directory without stopping it.

examples:
  lec node start                                  127.0.0.1:8545, data in .lec/node
  lec node start --data-dir /var/lib/lec --port 8600 --ws-port 8601 --period 5
  lec node start --port 0 --ws-port 0                free ports (printed at start)
  cast block-number --rpc-url http://127.0.0.1:8545
  lec node export --out chain.rlp --genesis-out genesis.geth.json
  geth --datadir /tmp/g init genesis.geth.json && geth --datadir /tmp/g import chain.rlp
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
    start.add_argument(
        "--port", type=int, default=8545, help="JSON-RPC over HTTP port (default: 8545; 0: a free one)"
    )
    start.add_argument(
        "--ws-port",
        type=int,
        default=8546,
        help="JSON-RPC over WebSocket port, with eth_subscribe (default: 8546; 0: a free one)",
    )
    start.add_argument("--no-ws", action="store_true", help="do not serve WebSocket")
    start.add_argument(
        "--period", type=int, default=2, help="seconds between blocks, for a new chain (default: 2)"
    )
    start.add_argument("--chain-id", type=int, default=4242, help="chain id, for a new chain (default: 4242)")
    start.set_defaults(func=run_start)

    export = actions.add_parser(
        "export",
        help="write the chain as RLP blocks (geth's import format) and its genesis for geth",
        description="Write canonical blocks FROM..TO of DATA_DIR's chain as concatenated RLP blocks "
        "(the format of `geth export` / `geth import`); the genesis block is not in the file, "
        "--genesis-out writes it in geth's JSON for `geth init`.",
    )
    export.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="chain data (default: .lec/node)"
    )
    export.add_argument("--out", type=Path, required=True, help="block file to write (replaced when done)")
    export.add_argument("--genesis-out", type=Path, help="also write the genesis in geth's JSON format")
    export.add_argument("--from", dest="first", type=int, default=1, help="first block (default: 1)")
    export.add_argument("--to", dest="last", type=int, help="last block (default: the head)")
    export.set_defaults(func=run_export)


def run_start(args: argparse.Namespace) -> int:
    from node.embedded import open_embedded_chain, tune_for_serving

    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be 0..65535, got {args.port}")
    if not 0 <= args.ws_port <= 65535:
        raise CliError(f"--ws-port must be 0..65535, got {args.ws_port}")
    if args.period < 1:
        raise CliError(f"--period must be at least 1 second, got {args.period}")
    stop = shutdown_requested()
    tune_for_serving()
    try:
        chain = open_embedded_chain(args.data_dir, period=args.period, chain_id=args.chain_id)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot open the chain in {args.data_dir}: {error}") from None
    try:
        url = chain.serve(args.host, args.port)
    except OSError as error:
        chain.stop()
        raise CliError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
    ws_url = None
    if not args.no_ws:
        try:
            ws_url = chain.serve_websocket(args.host, args.ws_port)
        except OSError as error:
            chain.stop()
            raise CliError(
                f"cannot listen on {args.host}:{args.ws_port} (WebSocket): {error.strerror or error}"
            ) from None
    node = chain.node
    print(
        f"lec node: chain {node.genesis.chain_id}, block {node.head.block_number}, period {node.period} s",
        flush=True,
    )
    print(f"  data dir : {args.data_dir}", flush=True)
    print(f"  sealer   : {chain.keyring['sealer'].address}", flush=True)
    print(f"  JSON-RPC : {url}", flush=True)
    if ws_url is not None:
        print(f"  WebSocket: {ws_url}", flush=True)
    stop.wait()
    chain.stop()
    print("lec node: stopped", flush=True)
    return 0


def run_export(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from node.chain.export import export_chain, open_chain
    from node.chain.genesis import GenesisConfig

    genesis = GenesisConfig.load(args.data_dir)
    if genesis is None:
        raise CliError(f"{args.data_dir} holds no chain (no genesis.json)")
    try:
        chain, store = open_chain(args.data_dir, genesis)
    except ValueError as error:
        raise CliError(str(error)) from None
    try:
        head = chain.get_canonical_head().block_number
        last = head if args.last is None else args.last
        with tqdm(total=max(0, last - args.first + 1), unit="block", disable=None, desc="export") as bar:
            count = export_chain(chain, args.out, args.first, last, progress=lambda _: bar.update())
    except ValueError as error:
        raise CliError(str(error)) from None
    finally:
        store.close()
    log.info(
        "exported blocks %d..%d (%d) of chain %d to %s", args.first, last, count, genesis.chain_id, args.out
    )
    if args.genesis_out is not None:
        args.genesis_out.write_text(json.dumps(genesis.to_geth(), indent=2))
        log.info("wrote the genesis for geth to %s", args.genesis_out)
    print(f"{count} blocks ({args.first}..{last}) -> {args.out}", flush=True)
    return 0


def shutdown_requested() -> threading.Event:
    """An event set by SIGINT or SIGTERM; install it before announcing readiness."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop
