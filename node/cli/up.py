"""``lec up``: the whole community node on embedded defaults, in one process, for the
community of a configuration file (by default the shipped demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.errors import CliError
from node.cli.node import shutdown_requested

DEFAULT_DATA_DIR = Path(".lec") / "community"
MAX_CLOCK_SPEED = 20  # the OCM's cycle (~1.5 s real) must end, and land in a block, within a minute

HELP = """\
Run the community node on embedded defaults, in one process:
  chain      the proof-of-authority chain (Clique on py-evm, 2 s blocks), kept in
             DATA_DIR and served as Ethereum JSON-RPC over HTTP (default
             127.0.0.1:8545) and WebSocket with eth_subscribe (default 8546,
             --no-ws: none);
  contracts  built and deployed on first start (DATA_DIR/deployment.json, reused after);
  community  the community of --config FILE (TOML: name, slot length, feeder, members,
             meters, flexibilities, prices, tokens; README.md "Community
             configuration"), by default the demo (node/communities/demo.toml): a real
             feeder (pandapower's Kerber Dorfnetz, written to DATA_DIR/feeder.json), 57
             household meters, a community battery, two EV chargers, a PV system and a
             heat pump owned by four members, each flexibility with its own sub-meter;
             members trade from deposits. First start: everything is registered; later
             starts register only what the file adds (nothing twice) and refuse a change
             the chain cannot take (slot length, a meter's bus, ...) naming the key;
  broker     Mosquitto as the MQTT broker (default 127.0.0.1:1883), no anonymous
             clients: a login per meter (user name = meter id) and for the gateway,
             an ACL that lets a meter publish only its own readings, persistent
             sessions; its files are in DATA_DIR/mosquitto/ (passwords are derived from
             the secret there and never printed: lec mqtt password METER_ID prints one
             for provisioning a real meter). Without Mosquitto installed (Debian:
             apt-get install mosquitto), or with --embedded-broker, an embedded broker
             (amqtt) serves instead, with a warning: no passwords, no ACL, sessions in
             memory only;
  gateway    validates the meters' signed readings and records them on chain;
  meters     a simulator publishing every household meter's reading each minute (load
             profiles, PV, V and angle from a load flow of the feeder);
  OCM        every minute, capacity bands from the measured grid state, published to
             CapacityLimits;
  market     the members' agents trade each slot inside their published bands; the
             operator closes gates, finalizes slots (trades cut to the bands in force)
             and settles them against the meters;
  API        the dApp HTTP API (default 127.0.0.1:8080, --no-api: none): /v1 with
             OpenAPI at /openapi.json, Sign-In with Ethereum for members' own data,
             transactions signed in the member's wallet; the members' page /member and
             the DSO's page /dso; the OpenADR 3 VTN for devices at /openadr3/3.0.1
             (docs/api.md, docs/openadr.md).
Stop with Ctrl-C; start again with the same data directory and it continues where it
stopped. Keys live in DATA_DIR/keys.json (mode 0600) and are never printed.
--community and --slot-minutes override the file's name and slot length; both are fixed
once deployed, so later starts with the same data directory must give the same values.
--clock-speed N (for demos and tests) runs the community clock at N simulated seconds per
real second: block timestamps, minutes, market slots, meters and bands all follow it
(blocks every 2 community seconds, at most two per real second; N at most 20, so that
the OCM's bands for the next minute still land before it starts). Community time never
runs backwards: a data directory that ran accelerated continues from its newest block's
time, also at normal speed.

examples:
  lec up
  lec up --config my-community.toml --data-dir .lec/my-community
  lec up --slot-minutes 5 --data-dir .lec/fast   the demo with 5-minute market slots
  lec up --data-dir /srv/lec --port 8600 --ws-port 8601 --mqtt-port 1884 --api-port 8602
  lec up --embedded-broker       the embedded MQTT broker even when Mosquitto is installed
  lec up --clock-speed 20 --data-dir .lec/fast   a community hour in three real minutes
  lec -q up                      only warnings in the log
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run the whole community node on embedded defaults",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default: .lec/community")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8545, help="JSON-RPC over HTTP port (default: 8545)")
    parser.add_argument(
        "--ws-port", type=int, default=8546, help="JSON-RPC over WebSocket port (default: 8546; 0: free)"
    )
    parser.add_argument("--no-ws", action="store_true", help="do not serve WebSocket")
    parser.add_argument(
        "--mqtt-port", type=int, default=1883, help="MQTT broker port (default: 1883; 0: free)"
    )
    parser.add_argument(
        "--api-port", type=int, default=8080, help="HTTP API and web pages port (default: 8080; 0: free)"
    )
    parser.add_argument("--no-api", action="store_true", help="do not serve the HTTP API")
    parser.add_argument(
        "--embedded-broker",
        action="store_true",
        help="run the embedded MQTT broker (amqtt: no passwords, no ACL) instead of Mosquitto",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="community configuration (TOML; default: the demo, node/communities/demo.toml)",
    )
    parser.add_argument("--community", metavar="NAME", help="community name (overrides the file's)")
    parser.add_argument(
        "--slot-minutes", type=int, metavar="N", help="market slot length, 1..64 (overrides the file's)"
    )
    parser.add_argument(
        "--replay-minutes",
        type=int,
        default=5,
        help="the simulated meters first replay this many past minutes, so there is data at once (default 5)",
    )
    parser.add_argument(
        "--clock-speed",
        type=float,
        default=1.0,
        metavar="N",
        help="for demos and tests: N simulated seconds per real second (default 1: real time)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contracts.build import CompileError, build_contracts
    from contracts.client import ChainError
    from node.composition import CommunityNode, NodeSettings, StartupError
    from node.config import load_community, load_demo
    from node.embedded import open_embedded_chain, tune_for_serving

    for name, value, low, high in (
        ("--slot-minutes", args.slot_minutes, 1, 64),
        ("--port", args.port, 0, 65535),
        ("--ws-port", args.ws_port, 0, 65535),
        ("--mqtt-port", args.mqtt_port, 0, 65535),
        ("--api-port", args.api_port, 0, 65535),
        ("--replay-minutes", args.replay_minutes, 0, 1440),
    ):
        if value is not None and not low <= value <= high:
            raise CliError(f"{name} must be {low}..{high}, got {value}")
    if not 0 < args.clock_speed <= MAX_CLOCK_SPEED:  # also refuses nan
        raise CliError(f"--clock-speed must be > 0 and at most {MAX_CLOCK_SPEED}, got {args.clock_speed:g}")
    definition = load_community(args.config) if args.config is not None else load_demo()
    definition = definition.with_overrides(name=args.community, slot_minutes=args.slot_minutes)
    stop = shutdown_requested()
    try:
        build = build_contracts()
    except CompileError as error:
        raise CliError(str(error), exit_code=1) from None
    tune_for_serving()
    try:
        chain = open_embedded_chain(args.data_dir)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot open the chain in {args.data_dir}: {error}") from None
    start_clock(chain, args.clock_speed)
    settings = NodeSettings(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        ws_port=None if args.no_ws else args.ws_port,
        mqtt_port=args.mqtt_port,
        community=definition,
        replay_minutes=args.replay_minutes,
        embedded_broker=args.embedded_broker,
        api_port=None if args.no_api else args.api_port,
    )
    node = CommunityNode(chain, build.artifacts, settings)
    try:
        node.start()
        print("community node running; Ctrl-C stops it", flush=True)
        stop.wait()
    except StartupError as error:
        raise CliError(str(error)) from None
    except ChainError as error:
        raise CliError(str(error), exit_code=1) from None
    finally:
        node.stop()
    print("community node stopped", flush=True)
    return 0


def start_clock(chain, speed: float) -> None:
    """Run the community clock at ``speed`` and the chain on it. Community time never runs
    backwards: a chain whose head is ahead of real time (it ran accelerated) continues from
    its head's time, also at normal speed (else it would seal nothing until real time caught up)."""
    from contracts import clock

    head = chain.node.head
    community_clock = clock.accelerate(speed, not_before=head.timestamp - chain.node.period)
    chain.node.use_clock(community_clock.now, community_clock.speed)
