"""A community on an embedded chain (1 s blocks) served over HTTP, an embedded broker and
gateways started per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contracts.accounts import Keyring
from contracts.client import ChainClient, Signer
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.registry import Meter, Role
from gateway.service import GatewayService, MqttSettings
from gateway.submitter import SubmitterSettings
from node.broker import EmbeddedBroker
from node.embedded import EmbeddedChain, open_embedded_chain
from tests.community_setup import populate

METER_IDS = tuple(f"M{i:02d}" for i in range(40))
REGISTRATION_GAS = 400_000


@dataclass
class Stack:
    chain: EmbeddedChain
    url: str
    community: Community
    keyring: Keyring
    _minutes: Iterator[int] = field(default_factory=lambda: iter(()))

    def __getitem__(self, name: str) -> Signer:
        return self.keyring[name]

    def meter_key(self, meter_id: str) -> Signer:
        return self.keyring[f"meter-{meter_id}"]

    def take_minutes(self, count: int) -> list[int]:
        """``count`` minute-aligned times no test used before, all in the past."""
        return [next(self._minutes) for _ in range(count)]

    def head_block(self) -> int:
        return self.community.client.w3.eth.block_number


def register_meters(community: Community, keyring: Keyring, meter_ids, member: str) -> None:
    admin = keyring["admin"]
    calls = [
        (community.registry.register_meter_call(Meter(m, 1, member, keyring[f"meter-{m}"].address)), admin)
        for m in meter_ids
    ]
    community.client.transact_all(calls, gas=REGISTRATION_GAS)


@pytest.fixture(scope="package")
def stack(artifacts) -> Iterator[Stack]:
    chain = open_embedded_chain(None, period=1)
    url = chain.serve("127.0.0.1", 0)
    keyring = chain.keyring
    client = ChainClient.connect(url, artifacts)
    admin = keyring["admin"]
    # readings of the last day are sent (see take_minutes): the ledger takes them for two days
    config = CommunityConfig(name="gateway test", data_delay_minutes=2 * 24 * 60)
    community = Community(client, deploy_community(client, admin, config))
    populate(community, keyring, {"gateway": Role.GATEWAY}, ["member"])
    register_meters(community, keyring, METER_IDS, keyring["member"].address)
    now = client.w3.eth.get_block("latest")["timestamp"]
    first = now - now % 60 - 20 * 3600  # 20 h ago: inside the gateway's one-day window
    stack = Stack(chain, url, community, keyring, itertools.count(first, 60))
    yield stack
    chain.stop()


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker("127.0.0.1", 0).start()
    yield embedded
    embedded.stop()


@pytest.fixture
def mosquitto(tmp_path):
    """Mosquitto as ``lec up`` configures it (node/mosquitto.py), behind a relay."""
    from tests.gateway.brokers import MosquittoBroker

    broker = MosquittoBroker(tmp_path, METER_IDS)
    yield broker
    broker.close()


@pytest.fixture
def topic_community(request) -> str:
    """A topic level of its own per test (and so a gateway client id of its own)."""
    return "t-" + request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40].lower()


def start_gateway(
    stack: Stack,
    artifacts,
    queue_path: Path,
    mqtt_settings: MqttSettings,
    topic: str,
    signer: Signer | None = None,
    name: str = "gateway",
    share_group: str | None = None,
    max_backlog: int | None = None,
    **submitter: object,
) -> GatewayService:
    """A gateway of its own chain connection; ``submitter`` are ``SubmitterSettings`` fields.
    ``max_backlog`` is set before the gateway starts taking messages (set later, a batch taken
    under the default bound could overshoot it)."""
    client = ChainClient.connect(stack.url, artifacts)
    community = Community(client, stack.community.deployment)
    service = GatewayService(
        community,
        signer or stack.keyring["gateway"],
        queue_path,
        mqtt_settings,
        topic,
        submitter_settings=SubmitterSettings(**submitter),
        name=name,
        share_group=share_group,
        **({} if max_backlog is None else {"max_backlog": max_backlog}),
    ).start()
    return service
