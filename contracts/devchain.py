"""An in-process development chain (eth-tester on py-evm) behind the usual chain client."""

from __future__ import annotations

from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

from contracts.build import ContractArtifact
from contracts.client import ChainClient, Signer

ETHER = 10**18


def start_eth_tester(
    artifacts: dict[str, ContractArtifact],
) -> tuple[ChainClient, Signer, EthereumTester]:
    """A fresh chain; returns the client, a richly funded signer and the tester itself
    (for snapshots and time travel in tests)."""
    backend = PyEVMBackend()
    tester = EthereumTester(backend, auto_mine_transactions=True)
    client = ChainClient(Web3(EthereumTesterProvider(tester)), artifacts)
    funder = Signer.from_key("funder", backend.account_keys[0].to_bytes())
    return client, funder, tester


def fund(client: ChainClient, funder: Signer, addresses: list[str], ether: int = 100) -> None:
    """Give each address ``ether`` ether for gas."""
    for address in addresses:
        client.transfer_ether(funder, address, ether * ETHER)
