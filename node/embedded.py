"""Open (or create) the embedded chain of a data directory and serve it.

A data directory holds ``genesis.json``, ``chain.sqlite`` (the chain), ``keys.json``
(this node's sealer key and the service accounts, mode 0600) and, once the community is
deployed, ``deployment.json``. A new directory gets a genesis in which this node's
sealer is the only signer and the service accounts are funded.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from eth_keys import keys
from web3 import Web3

from contracts.accounts import Keyring
from contracts.build import ContractArtifact
from contracts.client import ChainClient
from node.chain.genesis import DEFAULT_CHAIN_ID, GenesisConfig
from node.chain.node import PoaNode
from node.chain.provider import EmbeddedProvider
from node.chain.rpc import JsonRpc
from node.chain.server import RpcHttpServer
from node.chain.websocket import RpcWebSocketServer

log = logging.getLogger(__name__)

SEALER_ACCOUNT = "sealer"
FAUCET_ACCOUNT = "faucet"
FUNDED_ETHER = 1_000_000
ETHER = 10**18


@dataclass
class EmbeddedChain:
    """A running embedded node with its JSON-RPC front and, optionally, its HTTP and
    WebSocket servers."""

    node: PoaNode
    rpc: JsonRpc
    keyring: Keyring
    data_dir: Path | None
    server: RpcHttpServer | None = None
    websocket_server: RpcWebSocketServer | None = None

    def client(self, artifacts: dict[str, ContractArtifact] | None = None) -> ChainClient:
        """A chain client talking to this node in process."""
        return ChainClient(Web3(EmbeddedProvider(self.rpc)), artifacts)

    def serve(self, host: str = "127.0.0.1", port: int = 8545) -> str:
        """Serve JSON-RPC over HTTP; returns the URL."""
        self.server = RpcHttpServer(self.rpc, host, port).start()
        return self.server.url

    def serve_websocket(self, host: str = "127.0.0.1", port: int = 8546) -> str:
        """Serve JSON-RPC and ``eth_subscribe`` over WebSocket (port 0: a free one); returns
        the ``ws://`` URL."""
        self.websocket_server = RpcWebSocketServer(self.rpc, host, port).start()
        return self.websocket_server.url

    def stop(self) -> None:
        if self.websocket_server is not None:
            self.websocket_server.stop()
        if self.server is not None:
            self.server.stop()
        self.node.stop()


SERVING_SWITCH_INTERVAL_S = 0.0005


def tune_for_serving() -> None:
    """Make this process a responsive node server: its threads (sealing, HTTP, WebSocket)
    share the GIL, and Python hands it over every 5 ms by default, so a read that waits for
    I/O a few times while a block is executed waits 5 ms each time. At 0.5 ms a read
    interleaves with the block: read latency p99 during sealing 145 -> 25 ms in
    ``benchmarks/chain.py`` (anvil: 22 ms), with the same throughput. Called by the
    commands that serve a node (``lec node start``, ``lec up``), not by library users."""
    sys.setswitchinterval(SERVING_SWITCH_INTERVAL_S)


def create_genesis(
    keyring: Keyring, chain_id: int, period: int, extra_funded: tuple[str, ...] = ()
) -> GenesisConfig:
    """A genesis with this keyring's sealer as the only signer and its accounts funded."""
    sealer = keyring[SEALER_ACCOUNT]
    keyring.signer(FAUCET_ACCOUNT)
    funded = {keyring[name].address: FUNDED_ETHER * ETHER for name in keyring.names}
    funded.update({address: FUNDED_ETHER * ETHER for address in extra_funded})
    return GenesisConfig(chain_id=chain_id, sealers=(sealer.address,), alloc=funded, period=period)


def open_embedded_chain(
    data_dir: Path | None,
    period: int = 2,
    chain_id: int = DEFAULT_CHAIN_ID,
    keyring: Keyring | None = None,
) -> EmbeddedChain:
    """Start the node of ``data_dir`` (created if missing; in memory when None)."""
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        keyring = keyring or Keyring.load_or_create(data_dir)
        genesis = GenesisConfig.load(data_dir)
        if genesis is None:
            genesis = create_genesis(keyring, chain_id, period)
            genesis.save(data_dir)
            log.info(
                "created chain %d in %s with sealer %s", chain_id, data_dir, keyring[SEALER_ACCOUNT].address
            )
        elif genesis.period != period:
            log.info("block period %d s comes from the existing genesis (asked %d s)", genesis.period, period)
    else:
        keyring = keyring or Keyring.ephemeral()
        genesis = create_genesis(keyring, chain_id, period)
    sealer_key = keys.PrivateKey(bytes(keyring[SEALER_ACCOUNT].account.key))
    if sealer_key.public_key.to_checksum_address() not in genesis.sealers:
        log.info("this node's key is not a genesis sealer; it follows and seals once voted in")
    node = PoaNode(genesis, data_dir, sealer_key, name="node").start()
    return EmbeddedChain(node, JsonRpc(node), keyring, data_dir)
