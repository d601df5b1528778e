"""``lec api``: the dApp HTTP API (and web pages, OpenADR 3 VTN) of a running community."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.errors import CliError

HELP = """\
Serve the community's HTTP API on its own, next to a running chain: the dApp API under
/v1 (OpenAPI at /openapi.json, interactive docs at /docs), the members' page at /member,
the DSO's page at /dso, the OpenADR 3 VTN for devices, /health and Prometheus /metrics.
Reads come from the chain; members sign in with Sign-In with Ethereum and sign their own
transactions (the server holds no member's key). Tokens are signed with the secret in
DATA_DIR/api-secret (created on first start, mode 0600). lec up serves the same API.

examples:
  lec api --rpc-url http://127.0.0.1:8545 --data-dir .lec/community
  lec api --port 8081 --network .lec/community/feeder.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "api",
        help="the dApp HTTP API, web pages and OpenADR 3 VTN",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".lec") / "community", help="deployment and secret"
    )
    parser.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="JSON-RPC endpoint of the chain")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0: a free one)")
    parser.add_argument(
        "--network", type=Path, default=None, help="the feeder's network file (default: DATA_DIR/feeder.json)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.api_service import start_api
    from node.cli.community import open_community
    from node.cli.node import shutdown_requested

    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be 0..65535, got {args.port}")
    network = args.network or args.data_dir / "feeder.json"
    if args.network is not None and not network.exists():
        raise CliError(f"--network: no such file {network}")
    community, _ = open_community(args.data_dir, args.rpc_url)
    stop = shutdown_requested()
    try:
        server = start_api(
            community, args.data_dir, args.host, args.port, network if network.exists() else None
        )
    except OSError as error:
        raise CliError(
            f"cannot serve the API on {args.host}:{args.port}: {error.strerror or error}"
        ) from None
    print(
        f"API on {server.url} (member page {server.url}/member, DSO page {server.url}/dso); Ctrl-C stops it",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        server.stop()
    return 0
