"""A deployed community on an in-process chain, reset between tests by snapshots."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_tester import EthereumTester

from contracts.accounts import Keyring
from contracts.client import ChainClient, Signer
from contracts.community import Community, Flexibility, FlexKind, Meter, Role
from contracts.deploy import CommunityConfig, deploy_community
from contracts.devchain import fund, start_eth_tester

SLOT_MINUTES = 15
# name -> role held; "stranger" holds none.
ROLE_HOLDERS = {
    "admin": Role.ADMIN,
    "dso": Role.DSO,
    "ocm": Role.OCM_ORACLE,
    "gateway": Role.GATEWAY,
    "operator": Role.MARKET_OPERATOR,
    "aggregator": Role.AGGREGATOR,
    "alice": Role.MEMBER,
    "stranger": None,
}
METERS = {"M01": ("alice", 2), "M02": ("bob", 3), "M03": ("alice", 5)}
FLEXIBILITIES = {
    "BAT01": ("alice", 2, FlexKind.BATTERY, -50.0, 50.0, 0, "M01"),
    "CS01": ("bob", 3, FlexKind.EV_CHARGER, 0.0, 22.0, 1, "M02"),
    "CS02": ("alice", 5, FlexKind.EV_CHARGER, 0.0, 11.0, 1, "M03"),
    "PV01": ("bob", 3, FlexKind.PV, -10.0, 0.0, 1, None),
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


@pytest.fixture(scope="module")
def chain_env(artifacts) -> ChainEnv:
    client, funder, tester = start_eth_tester(artifacts)
    keyring = Keyring.ephemeral()
    for name in (*ROLE_HOLDERS, "bob"):
        keyring.signer(name)
    fund(client, funder, [keyring[name].address for name in keyring.names])
    admin = keyring["admin"]
    deployment = deploy_community(client, admin, CommunityConfig(name="test", slot_minutes=SLOT_MINUTES))
    community = Community(client, deployment)
    for name, role in ROLE_HOLDERS.items():
        if role not in (None, Role.ADMIN, Role.MEMBER):
            community.grant_role(admin, role, keyring[name].address)
    for name in ("alice", "bob"):
        community.add_member(admin, keyring[name].address, name)
    for meter_id, (owner, bus) in METERS.items():
        signer = keyring.signer(f"meter-{meter_id}")
        community.register_meter(admin, Meter(meter_id, bus, keyring[owner].address, signer.address))
    for flex_id, (owner, bus, kind, low, high, group, meter) in FLEXIBILITIES.items():
        flex = Flexibility(flex_id, keyring[owner].address, bus, kind, low, high, group, meter)
        community.register_flexibility(admin, flex)
    return ChainEnv(client, tester, keyring, community)


@pytest.fixture
def env(chain_env: ChainEnv):
    """The deployed community, rolled back to its initial state after the test."""
    snapshot = chain_env.tester.take_snapshot()
    yield chain_env
    chain_env.tester.revert_to_snapshot(snapshot)
    chain_env.client.forget_nonces()
