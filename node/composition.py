"""The ``lec up`` composition: one embedded chain and every service of a community around
it (deployment, demo community, MQTT broker, gateway, meter simulator, OCM oracle, market
operator with the members' agents, curtailer), each in its own thread."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from node.embedded import EmbeddedChain

log = logging.getLogger(__name__)

METER_LOGIN_SYNC_S = 60  # how often newly registered meters are given a Mosquitto login


class StartupError(Exception):
    """A part of the node could not start (a port taken, ...)."""


@dataclass(frozen=True)
class NodeSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8545
    ws_port: int | None = None  # JSON-RPC over WebSocket; None: not served
    mqtt_port: int = 1883
    community: str = "Demo energy community"
    slot_minutes: int = 15
    replay_minutes: int = 5
    embedded_broker: bool = False  # the embedded amqtt broker even when Mosquitto is installed


class CommunityNode:
    """The services of ``lec up`` around one embedded chain; ``stop`` ends them all."""

    def __init__(self, chain: EmbeddedChain, artifacts: dict, settings: NodeSettings):
        self.chain = chain
        self.artifacts = artifacts
        self.settings = settings
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.broker = None
        self.gateway = None

    def start(self) -> None:
        from contracts.community import Community
        from contracts.deploy import CommunityConfig, ensure_deployment
        from gateway.service import GatewayService, MqttSettings, topic_name
        from node.demo import set_up_community, write_feeder

        settings, chain, keyring = self.settings, self.chain, self.chain.keyring
        try:
            url = chain.serve(settings.host, settings.port)
        except OSError as error:
            raise StartupError(
                f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}"
            ) from None
        ws_url = None
        if settings.ws_port is not None:
            try:
                ws_url = chain.serve_websocket(settings.host, settings.ws_port)
            except OSError as error:
                raise StartupError(
                    f"cannot listen on {settings.host}:{settings.ws_port} (WebSocket): "
                    f"{error.strerror or error}"
                ) from None
        client = chain.client(self.artifacts)
        config = CommunityConfig(name=settings.community, slot_minutes=settings.slot_minutes)
        deployment, fresh = ensure_deployment(client, keyring["admin"], settings.data_dir, config)
        community = Community(client, deployment)
        feeder, houses = write_feeder(settings.data_dir)
        if not community.registry.meter_ids():
            set_up_community(community, keyring, houses)

        self.broker, gateway_mqtt, meter_login = start_broker(settings, community.registry.meter_ids())
        topic = topic_name(deployment.config.name)
        self.gateway = GatewayService(
            community, keyring["gateway"], settings.data_dir / "gateway" / "queue.sqlite", gateway_mqtt, topic
        ).start()
        meters_mqtt = MqttSettings(host=settings.host, port=self.broker.port)
        self._thread("meters", self._simulate, community, keyring, meters_mqtt, meter_login, topic, feeder)
        if meter_login is not None:
            self._thread("mqtt-logins", self._add_meter_logins, community)
        self._thread("ocm", self._serve_ocm, community, keyring, feeder)
        self._thread("market", self._operate_market, community, keyring)
        self._thread("curtailer", self._curtail, community, keyring)
        self._report(url, ws_url, deployment, fresh, community, feeder, topic)

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

    def _simulate(self, community, keyring, mqtt, meter_login, topic, feeder: Path) -> None:
        from node.simulation.meters import SimulatorSettings, run_simulation

        settings = SimulatorSettings(
            network=feeder, start_offset_minutes=-self.settings.replay_minutes, speed=30.0
        )
        run_simulation(
            community,
            keyring,
            mqtt,
            topic,
            settings,
            should_stop=self.stop_event.is_set,
            meter_login=meter_login,
        )

    def _add_meter_logins(self, community) -> None:
        """Meters registered while the node runs get their Mosquitto login within a minute."""
        while not self.stop_event.wait(METER_LOGIN_SYNC_S):
            try:
                self.broker.add_meters(community.registry.meter_ids())
            except Exception as error:  # the chain or the broker may be busy: next minute
                log.warning("could not give new meters a Mosquitto login: %s", error)

    def _serve_ocm(self, community, keyring, feeder: Path) -> None:
        from ocm.grid.network_io import read_network_tables
        from ocm.oracle import OcmService

        OcmService(community, keyring["ocm"], read_network_tables(feeder)).run(self.stop_event)

    def _operate_market(self, community, keyring) -> None:
        from market.operator import MarketOperator

        agents = demo_agents(keyring, community)
        MarketOperator(community, keyring["operator"], agents).run(self.stop_event)

    def _curtail(self, community, keyring) -> None:
        from market.curtailer import Curtailer

        Curtailer(community, keyring["operator"]).run(self.stop_event)

    def _report(self, url, ws_url, deployment, fresh, community, feeder: Path, topic: str) -> None:
        from node.demo import DEMO_FLEXIBILITIES, flexibility_meter_id

        node, keyring = self.chain.node, self.chain.keyring
        chain_facts = (
            f"chain id {node.genesis.chain_id}, block {node.head.block_number}, period {node.period} s"
        )
        print(f"chain: {url} ({chain_facts}), data in {self.settings.data_dir}", flush=True)
        if ws_url is not None:
            print(f"chain over WebSocket (eth_subscribe): {ws_url}", flush=True)
        config, state = deployment.config, "deployed" if fresh else "found"
        print(f"community {config.name!r} ({state}), market slot {config.slot_minutes} min:")
        for name, address in deployment.addresses.items():
            print(f"  {name:<18} {address}")
        meters = community.registry.meter_ids()
        sub_meters = [flexibility_meter_id(flex.flex_id) for flex in DEMO_FLEXIBILITIES]
        households = len([meter for meter in meters if meter not in sub_meters])
        print(f"feeder: {feeder} ({households} household meters, {len(meters) - households} sub-meters)")
        print("flexibilities:")
        for flex in DEMO_FLEXIBILITIES:
            registered = community.registry.flexibility(flex.flex_id)
            bounds = f"{flex.p_low_kw:g}..{flex.p_high_kw:g} kW"
            owner = f"{flex.owner} ({keyring[flex.owner].address})"
            where = f"{flex.kind.name.lower():<10} {bounds} at bus {registered.bus}"
            print(f"  {flex.flex_id:<6} {where}, meter {registered.meter_id}, owner {owner}")
        print(f"MQTT: {describe_broker(self.broker)}, meters publish to lec/{topic}/meter/<id>/reading")
        print("every minute: meters -> gateway -> MeasurementLedger, OCM -> CapacityLimits", flush=True)
        print("every slot: agents trade inside their bands, the operator finalizes and settles", flush=True)
        print("tightened bands: the curtailer cuts trades back inside them before delivery", flush=True)


def start_broker(settings: NodeSettings, meter_ids: list[str]):
    """The community's MQTT broker: Mosquitto with a login per meter and an ACL, or the
    embedded broker when Mosquitto is not installed or ``settings.embedded_broker``.
    Returns (broker, the gateway's MQTT settings, ``meter_login`` or None)."""
    from gateway.service import MqttSettings
    from node.broker import EmbeddedBroker
    from node.mosquitto import MosquittoBroker, MosquittoError

    host, port = settings.host, settings.mqtt_port
    if settings.embedded_broker or not MosquittoBroker.available():
        why = (
            "--embedded-broker"
            if settings.embedded_broker
            else "Mosquitto is not installed (Debian: apt-get install mosquitto)"
        )
        log.warning(
            "%s: the embedded MQTT broker (amqtt) serves the meters instead. It has no passwords and "
            "no ACL: any client that reaches %s:%d may publish readings in any meter's name (the "
            "gateway still checks every signature), and it keeps sessions in memory only",
            why,
            host,
            port,
        )
        try:
            broker = EmbeddedBroker(host, port).start()
        except OSError as error:
            raise StartupError(f"cannot start the MQTT broker on {host}:{port}: {error}") from None
        return broker, MqttSettings(host=host, port=broker.port, username="gateway"), None
    broker = MosquittoBroker(settings.data_dir / "mosquitto", host, port, meter_ids)
    try:
        broker.start()
    except (OSError, MosquittoError) as error:
        raise StartupError(f"cannot start Mosquitto on {host}:{port}: {error}") from None
    user, password = broker.gateway_login()
    return (
        broker,
        MqttSettings(host=host, port=broker.port, username=user, password=password),
        broker.meter_login,
    )


def describe_broker(broker) -> str:
    """Which broker runs where, for the summary (never a password)."""
    from node.mosquitto import MosquittoBroker

    if isinstance(broker, MosquittoBroker):
        return f"mosquitto on {broker.url} (a password per meter, ACL; files in {broker.directory})"
    return f"embedded broker (amqtt) on {broker.url} (no passwords, no ACL)"


def demo_agents(keyring, community):
    """The demo members' trading agents."""
    from market.agents import BatteryOwner, EvOwner, PvProsumer

    slot = community.clock.slot_of(time.time())
    return [
        PvProsumer("dave", keyring["dave"], "PV01", surplus_kw=6.0),
        BatteryOwner("community", keyring["community"], "BAT01", capacity_kwh=100.0, soc_kwh=50.0),
        EvOwner("bob", keyring["bob"], "CS01", energy_kwh=20.0, deadline_slot=slot + 8),
        EvOwner("carol", keyring["carol"], "CS02", energy_kwh=10.0, deadline_slot=slot + 12),
    ]
