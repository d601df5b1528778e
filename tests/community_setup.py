"""Test set-up shared by every suite: a community deployed on an in-process chain, with
roles granted, members added, meters and flexibilities registered (in a few blocks)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from eth_tester import EthereumTester

from contracts.accounts import Keyring
from contracts.client import ChainClient
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.devchain import fund, start_eth_tester
from contracts.registry import Flexibility, Meter, Role

SETUP_GAS = 400_000
# service accounts -> the role each holds; "stranger" holds none
SERVICE_ROLES = {
    "admin": Role.ADMIN,
    "dso": Role.DSO,
    "ocm": Role.OCM_ORACLE,
    "gateway": Role.GATEWAY,
    "operator": Role.MARKET_OPERATOR,
    "aggregator": Role.AGGREGATOR,
    "stranger": None,
}


def deploy_on_eth_tester(
    artifacts, config: CommunityConfig, accounts: Iterable[str], treasury: str | None = None
) -> tuple[ChainClient, EthereumTester, Keyring, Community]:
    """A fresh eth-tester chain with ``accounts`` (and the service accounts) funded and the
    community deployed by ``admin``; ``treasury`` names the treasury account (default: admin)."""
    client, funder, tester = start_eth_tester(artifacts)
    keyring = Keyring.ephemeral()
    for name in (*SERVICE_ROLES, *accounts):
        keyring.signer(name)
    fund(client, funder, [keyring[name].address for name in keyring.names])
    if treasury is not None:
        config = replace(config, treasury=keyring[treasury].address)
    community = Community(client, deploy_community(client, keyring["admin"], config))
    return client, tester, keyring, community


def populate(
    community: Community,
    keyring: Keyring,
    roles: dict[str, Role | None] | None = None,
    members: Iterable[str] = (),
    meters: Iterable[Meter] = (),
    flexibilities: Iterable[Flexibility] = (),
) -> None:
    """Grant ``roles`` (name -> role; admin, member and None are skipped), add ``members``
    (named accounts of ``keyring``), register ``meters`` and ``flexibilities``."""
    admin, registry = keyring["admin"], community.registry
    calls = [
        (registry.grant_role_call(role, keyring[name].address), admin)
        for name, role in (roles or SERVICE_ROLES).items()
        if role not in (None, Role.ADMIN, Role.MEMBER)
    ]
    calls += [(registry.add_member_call(keyring[name].address, name), admin) for name in members]
    community.client.transact_all(calls, gas=SETUP_GAS)
    calls = [(registry.register_meter_call(meter), admin) for meter in meters]
    community.client.transact_all(calls, gas=SETUP_GAS)
    calls = [(registry.register_flexibility_call(flex), admin) for flex in flexibilities]
    community.client.transact_all(calls, gas=SETUP_GAS)
