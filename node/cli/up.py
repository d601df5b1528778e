"""``lec up``: the whole community node on embedded defaults, in one process."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from node.cli.errors import CliError
from node.cli.node import shutdown_requested

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".lec") / "community"

HELP = """\
Run the community node on embedded defaults, in one process:
  chain      the proof-of-authority chain (Clique on py-evm, 2 s blocks), kept in
             DATA_DIR and served as Ethereum JSON-RPC (default 127.0.0.1:8545);
  contracts  built and deployed on first start (DATA_DIR/deployment.json, reused after);
  community  a demo community on a real feeder (pandapower's Kerber Dorfnetz, written to
             DATA_DIR/feeder.json): 57 household meters, a community battery, two EV
             chargers, a PV system and a heat pump owned by four members;
  broker     an embedded MQTT broker (default 127.0.0.1:1883);
  gateway    validates the meters' signed readings and records them on chain;
  meters     a simulator publishing every household meter's reading each minute (load
             profiles, PV, V and angle from a load flow of the feeder);
  OCM        every minute, capacity bands from the measured grid state, published to
             CapacityLimits;
  market     the members' agents trade each 15-minute slot inside their bands; the
             operator closes gates and settles slots against the meters.
Stop with Ctrl-C; start again with the same data directory and it continues where it
stopped. Keys live in DATA_DIR/keys.json (mode 0600) and are never printed.

examples:
  lec up
  lec up --data-dir /srv/lec --port 8600 --mqtt-port 1884
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
    parser.add_argument("--port", type=int, default=8545, help="JSON-RPC port (default: 8545)")
    parser.add_argument(
        "--mqtt-port", type=int, default=1883, help="embedded MQTT broker port (default: 1883)"
    )
    parser.add_argument("--community", default="Demo energy community", help="community name (first start)")
    parser.add_argument(
        "--slot-minutes", type=int, default=15, help="market slot length, 1..64 (first start)"
    )
    parser.add_argument(
        "--replay-minutes",
        type=int,
        default=5,
        help="the simulated meters first replay this many past minutes, so there is data at once (default 5)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.embedded import open_embedded_chain
    from contracts.client import ChainError
    from contracts.build import CompileError, build_contracts

    for name, value, low, high in (
        ("--slot-minutes", args.slot_minutes, 1, 64),
        ("--port", args.port, 0, 65535),
        ("--mqtt-port", args.mqtt_port, 0, 65535),
        ("--replay-minutes", args.replay_minutes, 0, 1440),
    ):
        if not low <= value <= high:
            raise CliError(f"{name} must be {low}..{high}, got {value}")
    stop = shutdown_requested()
    try:
        build = build_contracts()
    except CompileError as error:
        raise CliError(str(error), exit_code=1) from None
    try:
        chain = open_embedded_chain(args.data_dir)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot open the chain in {args.data_dir}: {error}") from None
    stack = CommunityStack(chain, build.artifacts, args)
    try:
        stack.start()
        print("community node running; Ctrl-C stops it", flush=True)
        stop.wait()
    except ChainError as error:
        raise CliError(str(error), exit_code=1) from None
    finally:
        stack.stop()
    print("community node stopped", flush=True)
    return 0


class CommunityStack:
    """The services of ``lec up`` around one embedded chain; ``stop`` ends them all."""

    def __init__(self, chain, artifacts, args: argparse.Namespace):
        self.chain = chain
        self.artifacts = artifacts
        self.args = args
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.broker = None
        self.gateway = None

    def start(self) -> None:
        from node.broker import EmbeddedBroker
        from gateway.service import GatewayService, MqttSettings, topic_name
        from node.demo import set_up_community, write_feeder
        from contracts.community import Community
        from contracts.deploy import CommunityConfig, ensure_deployment
        from contracts.market import Market

        args, chain, keyring = self.args, self.chain, self.chain.keyring
        try:
            url = chain.serve(args.host, args.port)
        except OSError as error:
            raise CliError(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}") from None
        client = chain.client(self.artifacts)
        config = CommunityConfig(name=args.community, slot_minutes=args.slot_minutes)
        deployment, fresh = ensure_deployment(client, keyring["admin"], args.data_dir, config)
        community, market = Community(client, deployment), Market(client, deployment)
        feeder, houses = write_feeder(args.data_dir)
        if not community.meter_ids():
            set_up_community(community, market, keyring, houses)

        try:
            self.broker = EmbeddedBroker(args.host, args.mqtt_port).start()
        except OSError as error:
            raise CliError(f"cannot start the MQTT broker on {args.host}:{args.mqtt_port}: {error}") from None
        mqtt = MqttSettings(host=args.host, port=self.broker.port)
        topic = topic_name(deployment.config.name)
        self.gateway = GatewayService(
            community, keyring["gateway"], args.data_dir / "gateway" / "queue.sqlite", mqtt, topic
        ).start()
        self._thread("meters", self._simulate, community, keyring, mqtt, topic, feeder)
        self._thread("ocm", self._serve_ocm, community, keyring, feeder)
        self._thread("market", self._operate_market, community, market, keyring)
        self._report(url, deployment, fresh, community, feeder, topic)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=20)
        if self.gateway is not None:
            self.gateway.stop()
        if self.broker is not None:
            self.broker.stop()
        self.chain.stop()

    # ----------------------------------------------------------------- services

    def _thread(self, name: str, target, *arguments) -> None:
        def guarded() -> None:
            try:
                target(*arguments)
            except Exception:
                log.exception("%s service stopped by an error", name)

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _simulate(self, community, keyring, mqtt, topic, feeder: Path) -> None:
        from node.simulation.meters import SimulatorSettings, run_simulation

        settings = SimulatorSettings(
            network=feeder, start_offset_minutes=-self.args.replay_minutes, speed=30.0
        )
        run_simulation(community, keyring, mqtt, topic, settings, should_stop=self.stop_event.is_set)

    def _serve_ocm(self, community, keyring, feeder: Path) -> None:
        from ocm.grid.network_io import read_network_tables
        from ocm.oracle import OcmService

        OcmService(community, keyring["ocm"], read_network_tables(feeder)).run(self.stop_event)

    def _operate_market(self, community, market, keyring) -> None:
        from market.operator import MarketOperator

        MarketOperator(market, community, keyring["operator"], demo_agents(keyring, market)).run(
            self.stop_event
        )

    def _report(self, url, deployment, fresh, community, feeder: Path, topic: str) -> None:
        from node.demo import DEMO_FLEXIBILITIES

        node, keyring = self.chain.node, self.chain.keyring
        chain_facts = (
            f"chain id {node.genesis.chain_id}, block {node.head.block_number}, period {node.period} s"
        )
        print(f"chain: {url} ({chain_facts}), data in {self.args.data_dir}", flush=True)
        config, state = deployment.config, "deployed" if fresh else "found"
        print(f"community {config.name!r} ({state}), market slot {config.slot_minutes} min:")
        for name, address in deployment.addresses.items():
            print(f"  {name:<18} {address}")
        print(f"feeder: {feeder} ({len(community.meter_ids())} meters)")
        print("flexibilities:")
        for flex in DEMO_FLEXIBILITIES:
            registered = community.flexibility(flex.flex_id)
            bounds = f"{flex.p_low_kw:g}..{flex.p_high_kw:g} kW"
            owner = f"{flex.owner} ({keyring[flex.owner].address})"
            where = f"{flex.kind.name.lower():<10} {bounds} at bus {registered.bus}"
            print(f"  {flex.flex_id:<6} {where}, owner {owner}")
        print(f"MQTT: {self.broker.url}, meters publish to lec/{topic}/meter/<id>/reading")
        print("every minute: meters -> gateway -> MeasurementLedger, OCM -> CapacityLimits", flush=True)
        print("every slot: agents trade inside their bands, the operator closes and settles", flush=True)


def demo_agents(keyring, market):
    """The demo members' trading agents."""
    import time

    from market.agents import BatteryOwner, EvOwner, PvProsumer

    slot = market.slot_of(time.time())
    return [
        PvProsumer("dave", keyring["dave"], "PV01", surplus_kw=6.0),
        BatteryOwner("community", keyring["community"], "BAT01", capacity_kwh=100.0, soc_kwh=50.0),
        EvOwner("bob", keyring["bob"], "CS01", energy_kwh=20.0, deadline_slot=slot + 8),
        EvOwner("carol", keyring["carol"], "CS02", energy_kwh=10.0, deadline_slot=slot + 12),
    ]
