"""``lec up``: run the community node on embedded defaults."""

from __future__ import annotations

import argparse
import logging
import time

from node import units
from node.accounts import Keyring
from node.cli.errors import CliError
from node.client import ChainError
from node.community import Band, Community, MeterReading
from node.demo import DEMO_MEMBERS, setup_demo_community
from node.deploy import CommunityConfig, deploy_community
from node.inprocess_chain import fund, start_eth_tester
from node.solidity import CompileError, build_contracts

log = logging.getLogger(__name__)

HELP = """\
Run the community node on embedded defaults: build the contracts, start an in-process
chain, deploy the community's contracts, register a demo community (three members,
their meters and flexibilities), record one minute of readings, publish a capacity
band, and print what was deployed.

example:
  lec up
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the whole community node on embedded defaults",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--community", default=CommunityConfig.name, help="community name")
    parser.add_argument(
        "--slot-minutes",
        type=int,
        default=CommunityConfig.slot_minutes,
        help="market slot length (1..64)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        build = build_contracts()
    except CompileError as error:
        raise CliError(str(error), exit_code=1) from None
    print(f"contracts: {'compiled' if build.compiled else 'cached build'} ({build.cache_file.name})")

    client, funder, _ = start_eth_tester(build.artifacts)
    keyring = Keyring.ephemeral()
    try:
        fund(client, funder, [keyring[name].address for name in keyring.names])
        config = CommunityConfig(name=args.community, slot_minutes=args.slot_minutes)
        deployment = deploy_community(client, keyring["admin"], config)
        community = Community(client, deployment)
        members = setup_demo_community(community, keyring)
        for member in members:
            fund(client, funder, [member.address], ether=10)
        now = int(time.time())
        minute_start = now - now % units.SECONDS_PER_MINUTE
        readings = [
            MeterReading(
                m.meter_id,
                minute_start,
                p_kw=1.5 + i,
                q_kvar=0.2,
                v_pu=0.99 - 0.01 * i,
                theta_deg=-0.5 * i,
            )
            for i, m in enumerate(DEMO_MEMBERS)
        ]
        receipt = community.record_readings(keyring["gateway"], readings)
        band = Band("CS01", minute_start + 60, minute_start + 120, 0.0, 11.0)
        community.publish_bands(keyring["ocm"], [band])
    except ChainError as error:
        raise CliError(str(error), exit_code=1) from None

    block = client.w3.eth.block_number
    print(f"chain: in-process (eth-tester, py-evm), chain id {deployment.chain_id}, block {block}")
    print(f"community: {config.name!r}, market slot {config.slot_minutes} min")
    for name, address in deployment.addresses.items():
        print(f"  {name:<18} {address}")
    print("members:")
    for member, signer in zip(DEMO_MEMBERS, members, strict=True):
        flexes = ", ".join(
            f"{fid} ({kind.name.lower()} {lo:g}..{hi:g} kW)" for fid, kind, lo, hi, _ in member.flexibilities
        )
        print(f"  {member.name:<6} {signer.address}  meter {member.meter_id} at bus {member.bus}; {flexes}")
    print(f"recorded {len(readings)} readings in one transaction (gas {receipt['gasUsed']})")
    in_force = community.band_at("CS01", band.start)
    low, high = in_force.p_min_kw, in_force.p_max_kw
    print(f"band of CS01 from {band.start}: [{low:g}, {high:g}] kW ({in_force.source.name})")
    return 0
