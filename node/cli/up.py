"""``lec up``: run the community node on embedded defaults."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from node.cli.errors import CliError
from node.cli.node import shutdown_requested

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".lec") / "community"

HELP = """\
Run the community node on embedded defaults, in one process:
  - the proof-of-authority chain (Clique on py-evm, 2 s blocks), kept in DATA_DIR and
    served as Ethereum JSON-RPC on 127.0.0.1:8545;
  - the community contracts, built and deployed on first start (addresses recorded in
    DATA_DIR/deployment.json and reused afterwards);
  - a demo community (three members with meters, a battery, two chargers and a PV
    system) registered on first start; one minute of readings and a capacity band are
    recorded at every start.
Stop with Ctrl-C; start again with the same data directory and everything is still
there. Keys live in DATA_DIR/keys.json (mode 0600) and are never printed.

examples:
  lec up
  lec up --data-dir /srv/lec --port 8600
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the whole community node on embedded defaults",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: .lec/community")
    parser.add_argument("--host", default="127.0.0.1", help="JSON-RPC address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8545, help="JSON-RPC port (default: 8545)")
    parser.add_argument("--community", default="Demo energy community", help="community name (first start)")
    parser.add_argument(
        "--slot-minutes", type=int, default=15, help="market slot length, 1..64 (first start)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.chain.runtime import open_embedded_chain
    from node.client import ChainError
    from node.solidity import CompileError, build_contracts

    if not 1 <= args.slot_minutes <= 64:
        raise CliError(f"--slot-minutes must be 1..64, got {args.slot_minutes}")
    stop = shutdown_requested()
    try:
        build = build_contracts()
    except CompileError as error:
        raise CliError(str(error), exit_code=1) from None
    print(
        f"contracts: {'compiled' if build.compiled else 'cached build'} ({build.cache_file.name})", flush=True
    )
    try:
        chain = open_embedded_chain(args.data_dir)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot open the chain in {args.data_dir}: {error}") from None
    try:
        try:
            url = chain.serve(args.host, args.port)
        except OSError as error:
            raise CliError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
        try:
            _start_community(chain, build.artifacts, args, url)
        except ChainError as error:
            raise CliError(str(error), exit_code=1) from None
        print("community node running; Ctrl-C stops it", flush=True)
        stop.wait()
    finally:
        chain.stop()
    print("community node stopped", flush=True)
    return 0


def _start_community(chain, artifacts, args: argparse.Namespace, url: str) -> None:
    from node import units
    from node.community import Band, Community, MeterReading
    from node.demo import DEMO_MEMBERS, setup_demo_community
    from node.deploy import CommunityConfig, ensure_deployment

    client = chain.client(artifacts)
    keyring = chain.keyring
    config = CommunityConfig(name=args.community, slot_minutes=args.slot_minutes)
    deployment, fresh = ensure_deployment(client, keyring["admin"], args.data_dir, config)
    community = Community(client, deployment)
    if not community.meter_ids():
        setup_demo_community(community, keyring)
        for member in DEMO_MEMBERS:
            client.send_ether(keyring["faucet"], keyring[member.name].address, 10 * 10**18)

    now = client.w3.eth.get_block("latest")["timestamp"]
    minute = now - now % units.SECONDS_PER_MINUTE - units.SECONDS_PER_MINUTE
    readings = [
        MeterReading(m.meter_id, minute, p_kw=1.5 + i, q_kvar=0.2, v_pu=0.99 - 0.01 * i, theta_deg=-0.5 * i)
        for i, m in enumerate(DEMO_MEMBERS)
        if not community.has_reading(m.meter_id, minute)
    ]
    if readings:
        community.record_readings(keyring["gateway"], readings)
    band = Band("CS01", minute + 120, minute + 180, 0.0, 11.0)
    community.publish_bands(keyring["ocm"], [band])

    node = chain.node
    print(
        f"chain: {url} (chain id {node.genesis.chain_id}, block {node.head.block_number}, "
        f"period {node.period} s), data in {args.data_dir}",
        flush=True,
    )
    state = "deployed" if fresh else "found"
    print(
        f"community {deployment.config.name!r} ({state}), market slot {deployment.config.slot_minutes} min:"
    )
    for name, address in deployment.addresses.items():
        print(f"  {name:<18} {address}")
    print("members:")
    for member in DEMO_MEMBERS:
        flexes = ", ".join(
            f"{fid} ({kind.name.lower()} {lo:g}..{hi:g} kW)" for fid, kind, lo, hi, _ in member.flexibilities
        )
        account = keyring[member.name].address
        print(f"  {member.name:<6} {account}  meter {member.meter_id} at bus {member.bus}; {flexes}")
    in_force = community.band_at("CS01", band.start)
    when = time.strftime("%H:%M", time.gmtime(band.start))
    print(
        f"recorded {len(readings)} readings; band of CS01 at {when} UTC: "
        f"[{in_force.p_min_kw:g}, {in_force.p_max_kw:g}] kW ({in_force.source.name})",
        flush=True,
    )
