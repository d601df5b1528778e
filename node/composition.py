"""The ``lec up`` composition: one embedded chain and every service of a community around
it (deployment, the community of its configuration, MQTT broker, gateway, meter simulator,
OCM oracle, market operator with the members' agents, curtailer), each in its own thread."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from node.embedded import EmbeddedChain

if TYPE_CHECKING:
    from node.config import CommunityDefinition

log = logging.getLogger(__name__)

METER_LOGIN_SYNC_S = 60  # how often newly registered meters are given a Mosquitto login


class StartupError(Exception):
    """A part of the node could not start (a port taken, ...)."""


def shipped_demo() -> CommunityDefinition:
    """The demo community (``node/communities/demo.toml``)."""
    from node.config import load_demo

    return load_demo()


@dataclass(frozen=True)
class NodeSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8545
    ws_port: int | None = None  # JSON-RPC over WebSocket; None: not served
    mqtt_port: int = 1883
    community: CommunityDefinition = field(default_factory=shipped_demo)  # the loaded configuration
    replay_minutes: int = 5
    embedded_broker: bool = False  # the embedded amqtt broker even when Mosquitto is installed
    api_port: int | None = 8080  # the dApp API, web pages and OpenADR 3 VTN; None: not served


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
        self.api = None

    def start(self) -> None:
        from contracts.community import Community
        from contracts.deploy import ensure_deployment
        from gateway.service import GatewayService, MqttSettings, topic_name
        from node.demo import check_sealers, prepare_feeder, set_up_community

        settings, chain, keyring = self.settings, self.chain, self.chain.keyring
        definition = settings.community
        check_sealers(definition, keyring)
        feeder = prepare_feeder(definition, settings.data_dir)
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
        config = definition.deployment_config()
        deployment, fresh = ensure_deployment(client, keyring["admin"], settings.data_dir, config)
        community = Community(client, deployment)
        set_up_community(community, keyring, definition, feeder)
        if settings.api_port is not None:
            self.api = self._serve_api(community, feeder.path)

        self.broker, gateway_mqtt, meter_login = start_broker(settings, community.registry.meter_ids())
        topic = topic_name(deployment.config.name)
        self.gateway = GatewayService(
            community, keyring["gateway"], settings.data_dir / "gateway" / "queue.sqlite", gateway_mqtt, topic
        ).start()
        meters_mqtt = MqttSettings(host=settings.host, port=self.broker.port)
        self._thread(
            "meters", self._simulate, community, keyring, meters_mqtt, meter_login, topic, feeder.path
        )
        if meter_login is not None:
            self._thread("mqtt-logins", self._add_meter_logins, community)
        self._thread("ocm", self._serve_ocm, community, keyring, feeder.path)
        self._thread("market", self._operate_market, community, keyring)
        self._thread("curtailer", self._curtail, community, keyring)
        self._report(url, ws_url, deployment, fresh, community, feeder.path, topic)

    def stop(self) -> None:
        self.stop_event.set()
        if self.api is not None:
            self.api.stop()
        for thread in self.threads:
            thread.join(timeout=20)
        if self.gateway is not None:
            self.gateway.stop()
        if self.broker is not None:
            self.broker.stop()
        self.chain.stop()

    # ----------------------------------------------------------------- services

    def _serve_api(self, community, feeder: Path):
        from node.api_service import start_api

        settings = self.settings
        try:
            return start_api(community, settings.data_dir, settings.host, settings.api_port, feeder)
        except OSError as error:
            raise StartupError(
                f"cannot serve the API on {settings.host}:{settings.api_port}: {error.strerror or error}"
            ) from None

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

        definition = self.settings.community
        settings = SimulatorSettings(
            network=feeder,
            start_offset_minutes=-self.settings.replay_minutes,
            speed=30.0,
            meter_phases={m: definition.meter_phase(m) for m in community.registry.meter_ids()},
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

        status_file = self.settings.data_dir / "ocm" / "status.json"
        definition = self.settings.community
        meter_phases = {m: definition.meter_phase(m) for m in community.registry.meter_ids()}
        service = OcmService(
            community,
            keyring["ocm"],
            read_network_tables(feeder),
            status_file=status_file,
            meter_phases=meter_phases,
        )
        service.run(self.stop_event)

    def _operate_market(self, community, keyring) -> None:
        from market.operator import MarketOperator

        agents = trading_agents(self.settings.community, keyring, community)
        MarketOperator(community, keyring["operator"], agents).run(self.stop_event)

    def _curtail(self, community, keyring) -> None:
        from market.curtailer import Curtailer

        Curtailer(community, keyring["operator"]).run(self.stop_event)

    def _report(self, url, ws_url, deployment, fresh, community, feeder: Path, topic: str) -> None:
        definition, node, keyring = self.settings.community, self.chain.node, self.chain.keyring
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
        sub_meters = [flex.meter_id for flex in definition.flexibilities]
        households = len([meter for meter in meters if meter not in sub_meters])
        print(f"feeder: {feeder} ({households} household meters, {len(meters) - households} sub-meters)")
        print(f"flexibilities (from {definition.source}):")
        for flex in definition.flexibilities:
            registered = community.registry.flexibility(flex.flex_id)
            bounds = f"{flex.p_min_kw:g}..{flex.p_max_kw:g} kW"
            owner = f"{flex.owner} ({keyring[definition.member(flex.owner).key].address})"
            where = f"{flex.kind.name.lower():<10} {bounds} at bus {registered.bus}"
            print(f"  {flex.flex_id:<6} {where}, meter {registered.meter_id}, owner {owner}")
        print(f"MQTT: {describe_broker(self.broker)}, meters publish to lec/{topic}/meter/<id>/reading")
        if self.api is not None:
            api = self.api.url
            print(f"API: {api}/v1 (OpenAPI {api}/openapi.json), pages {api}/member and {api}/dso", flush=True)
            print(f"OpenADR 3 VTN for devices: {api}/openadr3/3.0.1 (lec openadr credentials FLEX_ID)")
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


def trading_agents(definition: CommunityDefinition, keyring, community):
    """The trading agents of the flexibilities that have an ``agent`` in the configuration, in
    the order they act: PV (asks), EV chargers (bids that cross them), then batteries (they
    take what the others left open)."""
    from contracts import clock
    from contracts.registry import FlexKind
    from market.agents import BatteryOwner, EvOwner, PvProsumer

    slot = community.clock.slot_of(clock.now())
    by_kind: dict[FlexKind, list] = {FlexKind.PV: [], FlexKind.EV_CHARGER: [], FlexKind.BATTERY: []}
    for flex in definition.flexibilities:
        if flex.agent is None:
            continue
        name, flex_id, given = f"{flex.owner}/{flex.flex_id}", flex.flex_id, flex.agent
        signer = keyring[definition.member(flex.owner).key]
        if flex.kind == FlexKind.PV:
            agent = PvProsumer(name, signer, flex_id, surplus_kw=given["surplus_kw"])
        elif flex.kind == FlexKind.BATTERY:
            agent = BatteryOwner(
                name, signer, flex_id, capacity_kwh=given["capacity_kwh"], soc_kwh=given["soc_kwh"]
            )
        else:
            deadline = slot + int(given["deadline_slots"])
            agent = EvOwner(name, signer, flex_id, energy_kwh=given["energy_kwh"], deadline_slot=deadline)
        by_kind[flex.kind].append(agent)
    return [agent for agents in by_kind.values() for agent in agents]
