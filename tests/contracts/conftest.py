"""A deployed community on an in-process chain, reset between tests by snapshots."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_tester import EthereumTester

from contracts.accounts import Keyring
from contracts.client import ChainClient, Signer
from contracts.community import Community
from contracts.deploy import CommunityConfig
from contracts.registry import Flexibility, FlexKind, Meter, Role
from tests.community_setup import SERVICE_ROLES, deploy_on_eth_tester, populate

SLOT_MINUTES = 15
# name -> role held; "stranger" holds none.
ROLE_HOLDERS = {**SERVICE_ROLES, "alice": Role.MEMBER}
METERS = {"M01": ("alice", 2), "M02": ("bob", 3), "M03": ("alice", 5), "M04": ("bob", 3)}
FLEXIBILITIES = {
    "BAT01": ("alice", 2, FlexKind.BATTERY, -50.0, 50.0, 0, "M01"),
    "CS01": ("bob", 3, FlexKind.EV_CHARGER, 0.0, 22.0, 1, "M02"),
    "CS02": ("alice", 5, FlexKind.EV_CHARGER, 0.0, 11.0, 1, "M03"),
    "PV01": ("bob", 3, FlexKind.PV, -10.0, 0.0, 1, "M04"),
}


@dataclass
class ChainEnv:
    client: ChainClient
    tester: EthereumTester
    keyring: Keyring
    community: Community

    def __getitem__(self, name: str) -> Signer:
        return self.keyring[name]

    def now_minute(self) -> int:
        """The Unix minute of the latest block."""
        return self.client.w3.eth.get_block("latest")["timestamp"] // 60

    def next_timestamp(self) -> int:
        """The timestamp of the next block (Unix seconds)."""
        return self.tester.get_block_by_number("pending")["timestamp"]

    def travel(self, timestamp: int) -> None:
        """Make the next block have ``timestamp`` (later than the next block's timestamp now)."""
        self.tester.time_travel(timestamp)


@pytest.fixture(scope="module")
def chain_env(artifacts) -> ChainEnv:
    config = CommunityConfig(name="test", slot_minutes=SLOT_MINUTES)
    client, tester, keyring, community = deploy_on_eth_tester(artifacts, config, ("alice", "bob"))
    populate(
        community,
        keyring,
        ROLE_HOLDERS,
        ("alice", "bob"),
        [
            Meter(meter_id, bus, keyring[owner].address, keyring.signer(f"meter-{meter_id}").address)
            for meter_id, (owner, bus) in METERS.items()
        ],
        [
            Flexibility(flex_id, keyring[owner].address, bus, kind, low, high, group, meter)
            for flex_id, (owner, bus, kind, low, high, group, meter) in FLEXIBILITIES.items()
        ],
    )
    return ChainEnv(client, tester, keyring, community)


@pytest.fixture
def env(chain_env: ChainEnv):
    """The deployed community, rolled back to its initial state after the test."""
    snapshot = chain_env.tester.take_snapshot()
    yield chain_env
    chain_env.tester.revert_to_snapshot(snapshot)
    chain_env.client.forget_nonces()
