"""``lec network geth``: a multi-node proof-of-authority network of unmodified geth sealers."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

from node.cli.errors import CliError

log = logging.getLogger(__name__)

NETWORK_SUBDIR = "geth"
MAX_SEALERS = 10

HELP = """\
Start a real multi-node proof-of-authority network on this machine: SEALERS unmodified
geth 1.13.15 clients, each its own process with its own chain database, all sealers of
one Clique chain (EIP-225) that they build in turn, one block every PERIOD seconds. This
is the path a community takes when it outgrows one machine: the same genesis form, the
same contracts, the same services (every `lec` service takes --rpc-url).

geth 1.13.15 is the last release that seals Clique; scripts/setup.sh (run by ./run.sh and
./test.sh) builds it once with Go into ~/.cache/lec-node/geth-v1.13.15/ (LEC_GETH=PATH
overrides).

What it sets up:
  - chain id 4243, London rules from block 0 (EIP-1559 fees, no merge): the contracts
    are compiled for EVM version london;
  - per node a fresh sealer key in a geth keystore with a random password
    (DATA_DIR/geth/node-<i>/keystore, password.txt; mode 0600, never printed), its
    database (archive mode) and its log (node-<i>/geth.log);
  - JSON-RPC over HTTP and WebSocket on 127.0.0.1 only (ports printed at start);
    peer-to-peer on 127.0.0.1 with static peers, no discovery;
  - the accounts in DATA_DIR/keys.json (admin, dso, ocm, gateway, operator, aggregator,
    created if missing, never printed) and every --fund ADDRESS get 1,000,000 ether
    in the genesis;
  - DATA_DIR/geth/network.json: chain id, RPC URLs, enodes, sealers.

Point other programs at any node's RPC URL: `lec contracts deploy --rpc-url URL`,
`lec gateway run --rpc-url URL`, `lec oracle run NET --rpc-url URL`, `lec market operate
--rpc-url URL`, or any Ethereum tool (cast, ethers, web3). Every node serves the same
chain, so when one stops, use another's URL. Sealers are added and removed by Clique
votes: `cast rpc clique_propose ADDRESS true --rpc-url URL` on more than half of them.

Without --demo it runs until Ctrl-C (or SIGTERM) and then stops every client. With
--demo it deploys the community contracts through node 0, registers a member, a meter
and a battery, records a minute of readings and publishes a capacity band, reads them
back through node 1, stops the last sealer, shows that blocks and a new transaction
continue on the others, prints a report and exits.

examples:
  lec network geth                               3 sealers, 2 s blocks, until Ctrl-C
  lec network geth --demo                        the whole story in about a minute
  lec network geth --sealers 5 --period 5 --data-dir /tmp/lec-net
  cast block-number --rpc-url http://127.0.0.1:<port printed at start>
"""


CONFIRMATIONS = 2  # several sealers reorganise short branches: the demo builds on settled blocks


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "network",
        help="run a multi-node proof-of-authority network (geth sealers)",
        description="Run a local multi-node proof-of-authority network. See `lec network geth --help`.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    geth = actions.add_parser(
        "geth",
        help="several geth 1.13.15 sealers of one Clique chain on 127.0.0.1",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    geth.add_argument(
        "--sealers", type=int, default=3, help="number of geth clients, each a sealer (default: 3)"
    )
    geth.add_argument("--period", type=int, default=2, help="seconds between blocks (default: 2)")
    geth.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keys, genesis, databases and logs; kept (default: a temporary folder, deleted on exit)",
    )
    geth.add_argument(
        "--fund", action="append", default=[], metavar="ADDRESS", help="also fund this address (repeatable)"
    )
    geth.add_argument("--demo", action="store_true", help="run the community demo, print a report, exit")
    geth.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eth_utils import is_address, to_checksum_address

    from contracts.accounts import Keyring
    from node.geth import GethError, GethNetwork, geth_executable

    if not 1 <= args.sealers <= MAX_SEALERS:
        raise CliError(f"--sealers must be 1..{MAX_SEALERS}, got {args.sealers}")
    if args.demo and args.sealers < 3:
        raise CliError("--demo stops one sealer: it needs --sealers 3 or more (two would halt the chain)")
    if args.period < 1:
        raise CliError(f"--period must be at least 1 second, got {args.period}")
    for address in args.fund:
        if not is_address(address):
            raise CliError(f"--fund: {address!r} is not an Ethereum address")
    if geth_executable() is None:
        from node.geth import INSTALL_COMMAND

        raise CliError(f"geth 1.13.15 is missing: run ./run.sh once (needs Go), or {INSTALL_COMMAND}")

    temporary = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="lec-network-")) if temporary else args.data_dir
    network_dir = data_dir / NETWORK_SUBDIR
    if network_dir.exists() and any(network_dir.iterdir()):
        raise CliError(f"{network_dir} already holds a network: choose another --data-dir or remove it")
    stop = _stop_on_signals()
    try:
        keyring = Keyring.load_or_create(data_dir) if not args.demo else _demo_keyring(data_dir)
        funded = [keyring[name].address for name in keyring.names] + [
            to_checksum_address(a) for a in args.fund
        ]
        network = GethNetwork(sealers=args.sealers, period=args.period, data_dir=network_dir, fund=funded)
        started = time.monotonic()
        try:
            print(f"starting {args.sealers} geth sealers ...", flush=True)
            with network:
                _print_network(network, data_dir, keyring, args.fund, temporary)
                if args.demo:
                    _demo(network, keyring, stop)
                    print(
                        f"demo done in {time.monotonic() - started:.0f} s; stopping the clients", flush=True
                    )
                else:
                    print("running; Ctrl-C stops every client", flush=True)
                    while not stop.wait(1.0):
                        if not all(node.running for node in network.live_nodes()):
                            dead = [node.index for node in network.live_nodes() if not node.running]
                            raise CliError(f"node(s) {dead} exited; see their geth.log", exit_code=1)
                    print("stopping the clients ...", flush=True)
        except GethError as error:
            raise CliError(str(error), exit_code=1) from None
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    print("stopped", flush=True)
    return 0


def _stop_on_signals() -> threading.Event:
    """Set by SIGINT (Ctrl-C) or SIGTERM; the demo checks it between steps."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():  # second Ctrl-C: give up waiting
            raise KeyboardInterrupt
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    return stop


def _demo_keyring(data_dir: Path):
    from contracts.accounts import Keyring

    keyring = Keyring.load_or_create(data_dir)
    for name in ("alice", "meter-M01"):
        keyring.signer(name)
    return keyring


def _print_network(network, data_dir: Path, keyring, extra: list[str], temporary: bool) -> None:
    print(
        f"Clique network up: chain id {network.chain_id}, {len(network.nodes)} sealers, "
        f"one block every {network.period} s",
        flush=True,
    )
    kept = "temporary, deleted on exit" if temporary else "kept"
    print(f"  data dir   {data_dir} ({kept})")
    for node in network.nodes:
        print(f"  node {node.index}     {node.rpc_url}   {node.ws_url}   sealer {node.address}")
    names = ", ".join(f"{name} {keyring[name].address}" for name in keyring.names)
    print(f"  funded     {names}" + "".join(f", {address}" for address in extra))
    print(f"  keys       {data_dir / 'keys.json'} (mode 0600)")
    print(f"  described  {network.data_dir / 'network.json'}", flush=True)


def _demo(network, keyring, stop: threading.Event) -> None:
    from contracts import clock
    from contracts.build import CompileError, build_contracts
    from contracts.client import ChainClient, ChainError
    from contracts.community import Community
    from contracts.deploy import CommunityConfig, deploy_community
    from contracts.ledger import Reading
    from contracts.limits import Band
    from contracts.registry import Flexibility, FlexKind, Meter, Role

    def step(message: str) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print(f"demo: {message}", flush=True)

    try:
        artifacts = build_contracts().artifacts
    except CompileError as error:
        raise CliError(str(error), exit_code=1) from None
    admin, gateway, ocm, alice = (keyring[name] for name in ("admin", "gateway", "ocm", "alice"))
    first_block = network.height(0)
    try:
        writer = ChainClient.connect(network.rpc_urls[0], artifacts, confirmations=CONFIRMATIONS)
        step(f"deploying the community contracts through node 0 ({network.rpc_urls[0]}) ...")
        deployment = deploy_community(writer, admin, CommunityConfig(name="geth demo community"))
        for name, address in deployment.addresses.items():
            print(f"  {name:<18} {address}")
        community = Community(writer, deployment)
        step("granting the gateway and OCM roles, registering alice, meter M01 and battery BAT01 ...")
        community.registry.grant_role(admin, Role.GATEWAY, gateway.address)
        community.registry.grant_role(admin, Role.OCM_ORACLE, ocm.address)
        community.registry.add_member(admin, alice.address, "alice")
        community.registry.register_meter(admin, Meter("M01", 2, alice.address, keyring["meter-M01"].address))
        community.registry.register_flexibility(
            admin, Flexibility("BAT01", alice.address, 2, FlexKind.BATTERY, -5.0, 5.0, 0, "M01")
        )
        minute = clock.minute_of(writer.latest_timestamp())  # block time decides past and future
        recorded_minute = minute - 1
        reading = Reading("M01", clock.minute_start(recorded_minute), 2.5, 0.3, 0.985, -1.2)
        receipt = community.ledger.record_readings(gateway, [reading])
        step(f"reading of M01 for {_clock(reading.time)} UTC recorded in block {receipt['blockNumber']}")
        band = Band("BAT01", clock.minute_start(minute + 3), clock.minute_start(minute + 5), -2.0, 3.0)
        receipt = community.limits.publish_bands(ocm, [band])
        step(
            f"band [-2, 3] kW for BAT01 from {_clock(band.start)} to {_clock(band.end)} UTC "
            f"published in block {receipt['blockNumber']}"
        )

        reader = Community(ChainClient.connect(network.rpc_urls[1], artifacts), deployment)
        _wait(lambda: reader.client.w3.eth.block_number >= receipt["blockNumber"], "node 1 to catch up")
        energy = reader.ledger.slot_energy("M01", reader.clock.slot_of_minute(recorded_minute))
        in_force = reader.limits.band_at("BAT01", band.start)
        step(
            f"read through node 1: M01 has {energy.readings} reading(s), {energy.active_kwh:.4f} kWh in its "
            f"slot; BAT01 at {_clock(band.start)}: [{in_force.p_min_kw:g}, {in_force.p_max_kw:g}] kW "
            f"({in_force.source.name})"
        )
        head = network.height(0)
        sealed = _tally(network, 0, range(first_block + 1, head + 1))
        step(f"blocks {first_block + 1}..{head} sealed by {sealed}")

        stopped = len(network.nodes) - 1
        step(f"stopping node {stopped} (sealer {network.sealers[stopped]}) ...")
        network.stop_node(stopped)
        after = network.height(0)
        head = network.wait_for_blocks(2 * len(network.nodes), index=0)
        step(f"blocks {after + 1}..{head} sealed by {_tally(network, 0, range(after + 1, head + 1))}")
        sender = Community(
            ChainClient.connect(network.rpc_urls[1], artifacts, confirmations=CONFIRMATIONS), deployment
        )
        receipt = sender.registry.grant_role(admin, Role.DSO, keyring["dso"].address)
        watcher = Community(ChainClient.connect(network.rpc_urls[0], artifacts), deployment)
        _wait(lambda: watcher.client.w3.eth.block_number >= receipt["blockNumber"], "node 0 to catch up")
        seen = watcher.registry.has_role(Role.DSO, keyring["dso"].address)
        step(
            f"a transaction sent to node 1 after the stop was mined in block {receipt['blockNumber']}; "
            f"node 0 {'sees' if seen else 'does NOT see'} its effect"
        )
        if not seen:
            raise CliError("node 0 does not see the transaction mined after the stop", exit_code=1)
    except ChainError as error:
        raise CliError(str(error), exit_code=1) from None


def _tally(network, index: int, numbers: range) -> str:
    counts: dict[str, int] = {}
    for signer in network.block_signers(index, numbers).values():
        counts[signer] = counts.get(signer, 0) + 1
    return ", ".join(f"{signer} ({count})" for signer, count in counts.items())


def _clock(unix_seconds: int) -> str:
    return time.strftime("%H:%M", time.gmtime(unix_seconds))


def _wait(predicate, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise CliError(f"timed out waiting for {what}", exit_code=1)
        time.sleep(0.2)
