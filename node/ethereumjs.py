"""A local Clique (proof-of-authority) network of EthereumJS clients, for tests and demos.

``CliqueNetwork`` starts N ``ethereumjs`` processes (npm ``@ethereumjs/client`` 0.10.5)
on 127.0.0.1 that share one geth-style genesis in which all N are sealers, connects
them, and waits until they follow one chain::

    with CliqueNetwork(sealers=3, period=2, fund=[admin.address]) as network:
        client = ChainClient.connect(network.rpc_urls[0], artifacts)
        ...
        network.stop_node(2)          # the other two keep sealing, in turn

**Genesis** (``lec-clique.json``): ``GenesisConfig.to_geth()`` of ``node.chain.genesis``
(the embedded chain's genesis in geth's format) with chain id ``CHAIN_ID`` = 4243
(``lec node``'s embedded chain uses 4242), all N sealers and the ``fund`` accounts: every
fork up to London at block 0 (EIP-1559 fees; no PUSH0, the contracts are built for
evmVersion london), no merge and no Shanghai (an EthereumJS miner stops at the merge),
``clique.period`` seconds between blocks. **Files**: ``node-<i>/`` per node with its
sealer key (``sealer.key``: hex without 0x, mode 0600, what ``--unlock`` reads), its chain
database and its log (``ethereumjs.log``); ``network.json`` lists chain id, RPC URLs,
enodes and sealers. Sealer keys are generated per network and never printed or logged.

**Flags** per node: ``--gethGenesis --dataDir --port --extIP 127.0.0.1 --rpc --rpcAddr
127.0.0.1 --rpcPort --mine --unlock <key file> --discDns false --discV4 false
--no-logFile --logLevel info [--bootnodes enode://<id>@127.0.0.1:<port>,...]``, output
into ``node-<i>/ethereumjs.log``. JSON-RPC listens on 127.0.0.1 only; the RLPx/discovery
port binds 0.0.0.0 (the client has no option for that). Ports come from
``node.ports.free_ports``; one taken by another program before the client binds it (the
client then exits, or runs without its RLPx listener) means new ports and another start.
JSON-RPC calls go through web3's HTTP provider.

**Start** (``_start_all``): nodes 1..N-1 start first, each connecting to the running
ones (``--bootnodes``, and ``admin_addPeer [{"address": "127.0.0.1", "tcpPort": p,
"udpPort": p}]`` again and again until connected: a bootnode is tried only once); then
node 0, the in-turn sealer of block 1, starts, connects to all, and seals block 1. The
others must not seal a block 1 of their own (started one after another on a moving chain,
each node seals its own block 1 and the client never reconciles the branches): with the
fixes they wait for block 1 (fix 5, ``AWAIT_BLOCK_ONE``), however long the start takes.
Without them the genesis timestamp lies ahead, so that their own block 1 would be too
young and is dropped; if starting them took longer than that lead, everything starts again
with a longer one. Every wait polls, with a long overall limit, and fails naming what did
not happen with the end of each node's log. A watchdog thread re-connects nodes that lost
each other (``admin_addPeer``).

**Fixes** (``FIXES_SOURCE``, numbered there): EthereumJS 0.10.5 seals only empty Clique
blocks: every transaction is skipped ("extraData must be 97 bytes on non-epoch
transition blocks"), the EVM refuses to run code on a PoA chain ("Must include
cliqueSigner function"), and ``eth_estimateGas`` fails like the miner. Reads race the
execution of the newest block ("State trie does not contain state root"). With several
sealers, blocks reach only floor(sqrt(n)) peers, a node that lost a same-height race
never leaves its branch, a stray miner timer seals too-early blocks, the transactions of
a block that was not taken are dropped, those of blocks from peers stay pooled and hold
back their senders' later ones, and the "pending" nonce counts them. A node that fell
behind seals on a block it has not executed yet, fails outside any handler and shuts down.
``CliqueNetwork(fixes=True)``, the default, loads a small ES module into every client
(``NODE_OPTIONS=--import``) that patches these places in the client's classes (fix 5 also
holds nodes 1..N-1 back from sealing block 1); ``fixes=False`` runs the client as
published (empty blocks only; the peer pools are padded instead of fix 7, see
``_pad_peer_pools``).

Not fixed, and not needed by the project: ``eth_maxPriorityFeePerGas``, ``eth_feeHistory``
for "pending" and ``clique_getSigners`` do not exist (clients pass fee fields;
``block_signer`` recovers sealers); a node that falls several blocks behind (paused,
overloaded) catches up only through the client's slow sync.

Processes run in their own session (Ctrl-C reaches only us), die with this process
(Linux parent-death signal), and are stopped with SIGTERM, then SIGKILL; leaving the
``with`` block, also on an exception, stops every node.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from web3 import Web3

from contracts.paths import NODE_MODULES
from node.chain.genesis import GenesisConfig
from node.ports import free_ports

log = logging.getLogger(__name__)

ETHEREUMJS = NODE_MODULES / ".bin" / "ethereumjs"
CHAIN_ID = 4243
CHAIN_NAME = "lec-clique"  # EthereumJS names the chain, and its data sub-folder, after the genesis file
GENESIS_FILE = f"{CHAIN_NAME}.json"
NETWORK_FILE = "network.json"
FIXES_FILE = "ethereumjs-clique-fixes.mjs"
KEY_FILE = "sealer.key"
LOG_FILE = "ethereumjs.log"
DEFAULT_FUNDING_WEI = 1_000_000 * 10**18
AWAIT_BLOCK_ONE = "LEC_CLIQUE_AWAIT_BLOCK_ONE"  # set for nodes 1..N-1: fix 5 holds them back

# Limits, not expected durations: every wait polls and ends as soon as it can. They only
# turn a broken start into an error instead of a hang, so they allow for a busy machine.
START_TIMEOUT_S = 240.0  # one client from spawn to answering JSON-RPC and connecting
STOP_TIMEOUT_S = 20.0  # SIGTERM grace before SIGKILL (a client takes up to ~10 s)
RPC_TIMEOUT_S = 30.0  # one JSON-RPC call
PORT_ATTEMPTS = 5  # starts of one client on new ports when another program took one
PEER_RETRY_S = 5.0  # admin_addPeer again while a node is not connected yet
GENESIS_LEAD_S = 4.0  # without the fixes: genesis timestamp ahead of now, to start nodes 1..N-1 ...
GENESIS_LEAD_PER_NODE_S = 2.5  # ... each
GENESIS_ATTEMPTS = 5  # ... and starts with a doubled lead when that was too short


class CliqueNetworkError(RuntimeError):
    """The network could not be started or did not behave as expected, or a JSON-RPC call
    to one of its nodes failed (no answer, or an ``error`` answer)."""


# ----------------------------------------------------------------------------- fixes

# Loaded into every client with NODE_OPTIONS=--import; __NAME__ are file URLs of the
# client's own modules (the ones it imports, so the patches reach its classes).
FIXES_SOURCE = """\
// lec-node: fixes for @ethereumjs/client 0.10.5 on a Clique (proof-of-authority) chain,
// loaded with NODE_OPTIONS=--import before the client starts. See node/ethereumjs.py.
import { BlockHeader, cliqueSigner, createSealedCliqueBlockHeader } from '__BLOCK__'
import { EVM } from '__EVM__'
import { BlockBuilder } from '__VM__'
import { Eth } from '__ETH_RPC__'
import { Miner } from '__MINER__'
import { FullEthereumService } from '__SERVICE__'
import { FullSynchronizer } from '__FULLSYNC__'
import { TxPool } from '__TXPOOL__'
import { createAddressFromString } from '__UTIL__'

// 1. The EVM refuses to run any code on a PoA chain unless it was given a cliqueSigner
//    function (for COINBASE): "Must include cliqueSigner function if clique/poa is being
//    used for consensus type". The client never passes one.
const runInterpreter = EVM.prototype.runInterpreter
EVM.prototype.runInterpreter = function (...args) {
  if (this._optsCached.cliqueSigner === undefined && this.common.consensusType() === 'poa') {
    this._optsCached.cliqueSigner = cliqueSigner
  }
  return runInterpreter.apply(this, args)
}

// 2. The miner runs each transaction against a provisional, unsealed header. Its empty
//    extraData fails the Clique format check ("extraData must be 97 bytes on non-epoch
//    transition blocks"), so every transaction is skipped; and the fee would go to the
//    signer recovered from that header (nobody), unlike on import. Seal the provisional
//    header with the miner's key, so both go as they will for the final block.
const addTransaction = BlockBuilder.prototype.addTransaction
BlockBuilder.prototype.addTransaction = async function (tx, opts) {
  const key = this.blockOpts.cliqueSigner
  if (key === undefined) return addTransaction.call(this, tx, opts)
  const header = { ...this.headerData, gasUsed: this.gasUsed }
  const sealed = createSealedCliqueBlockHeader(header, key, { ...this.blockOpts, freeze: false })
  this.headerData.extraData = sealed.extraData
  try {
    return await addTransaction.call(this, tx, opts)
  } finally {
    delete this.headerData.extraData
  }
}

// 3. eth_estimateGas runs the call in a new, unsealed block that fails the same format
//    check. Accept an empty extraData: a block without a seal still fails Clique's
//    signer check when it is imported.
const consensusFormatValidation = BlockHeader.prototype._consensusFormatValidation
BlockHeader.prototype._consensusFormatValidation = function () {
  if (this.extraData.length === 0 && this.common.consensusAlgorithm() === 'clique') return
  return consensusFormatValidation.call(this)
}

// 4. A block becomes the head before it is executed, and its state a moment later: in
//    between, eth_call, eth_getBalance and the like at "latest" fail ("State trie does
//    not contain state root"), and so does eth_sendRawTransaction, whose pool checks the
//    sender's balance and nonce in that state before taking the transaction; and a sealing
//    node stores a block's receipts just before the block itself, so
//    eth_getTransactionReceipt fails ("value for <block hash> not found in DB") instead of
//    answering null. Retry for a while (up to 20 s: on a busy machine a node may execute
//    blocks long after taking them); for the receipt answer null after 5 s, as for one
//    not mined yet.
const notYet = (error) => /State trie does not contain|not found in DB/.test(String(error?.message ?? error))
const stateReaders = ['call', 'estimateGas', 'getBalance', 'getCode', 'getStorageAt', 'getTransactionCount']
for (const name of [...stateReaders, 'sendRawTransaction', 'getProof', 'getTransactionReceipt']) {
  const method = Eth.prototype[name]
  Eth.prototype[name] = async function (params) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await method.call(this, params)
      } catch (error) {
        if (!notYet(error)) throw error
        if (name === 'getTransactionReceipt' && attempt >= 50) return null
        if (attempt >= 200) throw error
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  }
}

// 5. Each block runs the miner's chain-updated handler twice (import, then execution);
//    both await before arming the block timer, so one timer escapes being cleared and
//    fires early. Its block is younger than parent + period, is rejected ("invalid
//    timestamp diff (lower than period)"), and its transactions are dropped from the pool
//    all the same. Do not assemble before the period is over. Nor while a peer has shown
//    a higher block: the miner does not pause while the node catches up, and each block
//    it seals on its stale head starts a branch that the others ignore. And with
//    __AWAIT__=1 (CliqueNetwork sets it for all nodes but the first) not on the genesis:
//    such a node waits for block 1 from a peer, so that there is only one block 1.
const awaitBlockOne = process.env.__AWAIT__ === '1'
const assembleBlock = Miner.prototype.assembleBlock
Miner.prototype.assembleBlock = async function () {
  const parent = this.service.chain.blocks.latest
  if (awaitBlockOne && parent.header.number === 0n) return this.queueNextAssembly(this.period)
  const wait = Number(parent.header.timestamp) * 1000 + this.period - 400 - Date.now()
  if (wait > 0) return this.queueNextAssembly(wait + 400)
  if ((this.config.syncTargetHeight ?? 0n) > parent.header.number) return this.queueNextAssembly(this.period)
  return assembleBlock.call(this)
}

// 6. When two sealers seal the same height, each node keeps the block it saw first: a
//    later block that does not extend its head is dropped, and the client syncs only from
//    a peer whose total difficulty at the handshake exceeded its own. The node on the
//    lighter branch then never leaves it. Let a NewBlock with a higher total difficulty
//    than ours count as that peer's status (less one, so that once level we stop): the
//    next sync round fetches the peer's chain and the fork choice takes it.
const handleEth = FullEthereumService.prototype.handleEth
FullEthereumService.prototype.handleEth = async function (message, peer) {
  const result = await handleEth.call(this, message, peer)
  const status = peer?.eth?.status
  if (message.name === 'NewBlock' && status !== undefined) {
    const announced = BigInt('0x' + (Buffer.from(message.data[1]).toString('hex') || '0'))
    if (announced > this.chain.blocks.td && announced - 1n > status.td) status.td = announced - 1n
  }
  return result
}

// 7. A new block goes in full to floor(sqrt(n)) of the n peers and as a hash to the
//    others, which ignore hashes unless they are syncing: with two peers, one of them
//    never gets the block. Send it in full to every peer (a handful on a community chain).
const sendNewBlock = FullSynchronizer.prototype.sendNewBlock
FullSynchronizer.prototype.sendNewBlock = function (block, _peers) {
  return sendNewBlock.call(this, block, this.pool.peers)
}

// 8. The pool drops a block's transactions when the miner has sealed it, even if the
//    block is not taken (another sealer's block for that height came first), and keeps
//    those of blocks from peers, whose senders' later transactions the miner then skips
//    (the lowest pooled nonce lags the account's). Either way transactions get lost or
//    stuck, and a reorganisation would lose them too. Never drop them because of a block;
//    when building one, drop those whose nonce the parent state has used.
TxPool.prototype.removeNewBlockTxs = function () {}
const txsByPriceAndNonce = TxPool.prototype.txsByPriceAndNonce
TxPool.prototype.txsByPriceAndNonce = async function (vm, opts) {
  for (const [address, objects] of [...this.pool]) {
    const account = await vm.stateManager.getAccount(createAddressFromString(`0x${address}`))
    const used = account?.nonce ?? 0n
    for (const object of objects) if (object.tx.nonce < used) this.removeByHash(object.hash, object.tx)
  }
  return txsByPriceAndNonce.call(this, vm, opts)
}

// 9. eth_getTransactionCount for "pending" adds all pooled transactions of the sender to
//    its nonce, mined ones included. Answer the next free nonce.
const getTransactionCount = Eth.prototype.getTransactionCount
Eth.prototype.getTransactionCount = async function (params) {
  if (params[1] !== 'pending') return getTransactionCount.call(this, params)
  let nonce = BigInt(await getTransactionCount.call(this, [params[0], 'latest']))
  const pooled = this.service.txPool.pool.get(params[0].toLowerCase().slice(2)) ?? []
  const nonces = new Set(pooled.map((object) => object.tx.nonce))
  while (nonces.has(nonce)) nonce += 1n
  return `0x${nonce.toString(16)}`
}

// 10. The miner builds on the newest block even when the node has not executed it yet (a
//     node catching up after falling behind, say on a busy machine): loading the parent's
//     state throws "State trie does not contain state root" outside any handler, and the
//     client shuts down. Wait until the node has the parent's state.
const assembleBlockOnState = Miner.prototype.assembleBlock
Miner.prototype.assembleBlock = async function () {
  const parent = this.service.chain.blocks.latest
  if (!(await this.execution.vm.stateManager.hasStateRoot(parent.header.stateRoot))) {
    return this.queueNextAssembly(500)
  }
  try {
    return await assembleBlockOnState.call(this)
  } catch (error) {
    if (!notYet(error)) throw error
    this.assembling = false
    return this.queueNextAssembly(500)
  }
}
"""


def fixes_source(node_modules: Path = NODE_MODULES) -> str:
    """``FIXES_SOURCE`` importing the client's own copies of its packages."""
    package = node_modules / "@ethereumjs"
    client = package / "client" / "dist" / "esm" / "src"
    modules = {
        "__BLOCK__": package / "block" / "dist" / "esm" / "index.js",
        "__EVM__": package / "evm" / "dist" / "esm" / "index.js",
        "__VM__": package / "vm" / "dist" / "esm" / "index.js",
        "__ETH_RPC__": client / "rpc" / "modules" / "eth.js",
        "__MINER__": client / "miner" / "miner.js",
        "__SERVICE__": client / "service" / "fullethereumservice.js",
        "__FULLSYNC__": client / "sync" / "fullsync.js",
        "__TXPOOL__": client / "service" / "txpool.js",
        "__UTIL__": package / "util" / "dist" / "esm" / "index.js",
    }
    source = FIXES_SOURCE.replace("__AWAIT__", AWAIT_BLOCK_ONE)
    for placeholder, path in modules.items():
        if not path.exists():
            raise CliqueNetworkError(f"{path} not found: the fixes are for @ethereumjs/client 0.10.5")
        source = source.replace(placeholder, path.resolve().as_uri())
    return source


# --------------------------------------------------------------------------- genesis


def clique_genesis(
    sealers: Sequence[str],
    *,
    chain_id: int = CHAIN_ID,
    period: int = 2,
    alloc: dict[str, int] | None = None,
    timestamp: int = 0,
) -> dict:
    """The network's genesis in geth's format: ``GenesisConfig.to_geth()`` (Clique, London
    at block 0, no merge). ``alloc`` maps addresses to wei; timestamp 0 means now."""
    config = GenesisConfig(chain_id, tuple(sealers), dict(alloc or {}), period, timestamp=timestamp)
    return config.to_geth()


def start_order(sealers: Sequence[str]) -> list[str]:
    """The sealers in node order: node 0 is the in-turn signer of block 1.

    Clique's in-turn signer of block n is ``sorted(signers)[n % N]``, so node i is in
    turn for the blocks n with n % N == (i + 1) % N."""
    ranked = sorted(sealers, key=lambda address: bytes.fromhex(address.removeprefix("0x")))
    return [ranked[(index + 1) % len(ranked)] for index in range(len(ranked))]


def block_signer(block: dict) -> str:
    """The address that sealed a Clique block, given as raw ``eth_getBlockByNumber`` JSON
    (EthereumJS has no ``clique_getSigners``, and ``miner`` is zero on Clique blocks):
    py-evm's Clique signer recovery, as the embedded chain uses it, on the same header."""
    from eth.consensus.clique.constants import SIGNATURE_LENGTH, VANITY_LENGTH
    from eth.vm.forks.london.blocks import LondonBlockHeader
    from eth_utils import to_checksum_address

    from node.chain.consensus import signer_of

    def raw(name: str) -> bytes:
        return bytes.fromhex(block[name][2:])

    def number(name: str) -> int:
        return int(block[name], 16)

    if len(raw("extraData")) < VANITY_LENGTH + SIGNATURE_LENGTH or number("number") == 0:
        raise ValueError(f"block {block.get('number')} carries no Clique seal")
    header = LondonBlockHeader(
        difficulty=number("difficulty"),
        block_number=number("number"),
        gas_limit=number("gasLimit"),
        timestamp=number("timestamp"),
        coinbase=raw("miner"),
        parent_hash=raw("parentHash"),
        uncles_hash=raw("sha3Uncles"),
        state_root=raw("stateRoot"),
        transaction_root=raw("transactionsRoot"),
        receipt_root=raw("receiptsRoot"),
        bloom=number("logsBloom"),
        gas_used=number("gasUsed"),
        extra_data=raw("extraData"),
        mix_hash=raw("mixHash"),
        nonce=raw("nonce"),
        base_fee_per_gas=number("baseFeePerGas"),
    )
    return to_checksum_address(signer_of(header))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the client when the process that started it dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# ----------------------------------------------------------------------------- nodes


@dataclass
class EthereumJSNode:
    """One ``ethereumjs`` process: a sealer with its own folder and ports."""

    index: int
    sealer: str  # checksum address of the key in ``key_file``
    directory: Path
    p2p_port: int
    rpc_port: int
    process: subprocess.Popen | None = field(default=None, repr=False)
    node_id: str | None = None  # enode id (hex without 0x), known once started
    log_handle: IO[bytes] | None = field(default=None, repr=False)
    log_start: int = 0  # where the current process's output begins in ``log_file``
    _w3: Web3 | None = field(default=None, repr=False)

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def log_file(self) -> Path:
        return self.directory / LOG_FILE

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def enode(self) -> str:
        return f"enode://{self.node_id}@127.0.0.1:{self.p2p_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def w3(self) -> Web3:
        """web3 on this node's JSON-RPC endpoint (no retries: callers poll)."""
        if self._w3 is None:
            provider = Web3.HTTPProvider(
                self.rpc_url, request_kwargs={"timeout": RPC_TIMEOUT_S}, exception_retry_configuration=None
            )
            self._w3 = Web3(provider)
        return self._w3

    def use_ports(self, p2p_port: int, rpc_port: int) -> None:
        self.p2p_port, self.rpc_port = p2p_port, rpc_port
        self._w3 = None

    def rpc(self, method: str, *params: Any) -> Any:
        """One raw JSON-RPC call; its ``result``, or ``CliqueNetworkError``."""
        try:
            answer = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        except Exception as error:  # refused, timed out, not JSON: requests and web3 raise many kinds
            raise CliqueNetworkError(f"{method} at {self.rpc_url}: {error}") from error
        if answer.get("error"):
            error = answer["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise CliqueNetworkError(f"{method} at {self.rpc_url}: {message}")
        return answer.get("result")

    def command(self, executable: Path, genesis: Path, bootnodes: Sequence[str]) -> list[str]:
        arguments = [
            str(executable),
            "--gethGenesis", str(genesis),
            "--dataDir", str(self.directory),
            "--port", str(self.p2p_port),
            "--extIP", "127.0.0.1",
            "--rpc",
            "--rpcAddr", "127.0.0.1",
            "--rpcPort", str(self.rpc_port),
            "--mine",
            "--unlock", str(self.key_file),
            "--discDns", "false",
            "--discV4", "false",
            "--no-logFile",  # log to stdout, into LOG_FILE ("--logFile false" writes a file named false)
            "--logLevel", "info",
        ]  # fmt: skip
        if bootnodes:
            arguments += ["--bootnodes", ",".join(bootnodes)]
        return arguments

    def log_text(self) -> str:
        """What the current process has logged so far."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(self.log_start)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --------------------------------------------------------------------------- network

_open_networks: set[CliqueNetwork] = set()


@atexit.register
def _close_open_networks() -> None:
    for network in list(_open_networks):
        network.close()


class CliqueNetwork:
    """N EthereumJS clients sealing one Clique chain on 127.0.0.1 (see the module doc).

    ``sealers``: nodes, each a sealer in the genesis. ``period``: seconds between blocks.
    ``data_dir``: folder for genesis, keys, chain data and logs; it must be empty or
    missing and is kept; None means a temporary folder, deleted on ``close``. ``fund``:
    addresses given ``fund_wei`` in the genesis. ``fixes``: load ``FIXES_SOURCE`` into the
    clients (without it no transaction is ever included). ``watch``: a thread re-connects
    nodes that lost each other (``reconnections`` lists what it did). ``start_timeout``:
    limit for one client to start and connect (it is polled, and done when it is done).
    Raises ``CliqueNetworkError``.
    """

    def __init__(
        self,
        sealers: int = 3,
        period: int = 2,
        data_dir: Path | str | None = None,
        *,
        fund: Iterable[str] = (),
        fund_wei: int = DEFAULT_FUNDING_WEI,
        chain_id: int = CHAIN_ID,
        fixes: bool = True,
        watch: bool = True,
        executable: Path | str = ETHEREUMJS,
        start_timeout: float = START_TIMEOUT_S,
    ):
        if sealers < 1:
            raise ValueError("a Clique network needs at least one sealer")
        if period < 1:
            raise ValueError("the Clique period must be at least 1 second")
        self.sealer_count = sealers
        self.period = period
        self.chain_id = chain_id
        self.fund = dict.fromkeys(fund, fund_wei)
        self.fixes = fixes
        self.watch = watch
        self.executable = Path(executable)
        self.start_timeout = start_timeout
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._temporary = data_dir is None
        self.nodes: list[EthereumJSNode] = []
        self.stopped: set[int] = set()  # stopped on purpose: the watchdog leaves them alone
        self.reconnections: list[tuple[int, int]] = []  # (from node, to node) re-added by the watchdog
        self.genesis_time = 0
        # with the fixes, nodes 1..N-1 wait for block 1 however long starting takes
        self._genesis_lead = 0.0 if fixes else GENESIS_LEAD_S + GENESIS_LEAD_PER_NODE_S * (sealers - 1)
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._started = False

    # -------------------------------------------------------------------- interface

    def __enter__(self) -> CliqueNetwork:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def rpc_urls(self) -> list[str]:
        """JSON-RPC endpoint of each node (``http://127.0.0.1:<port>``), by node index."""
        return [node.rpc_url for node in self.nodes]

    @property
    def sealers(self) -> list[str]:
        """Sealer address of each node, by node index."""
        return [node.sealer for node in self.nodes]

    @property
    def genesis_file(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / GENESIS_FILE

    def live_nodes(self) -> list[EthereumJSNode]:
        """Nodes started and not stopped on purpose."""
        return [node for node in self.nodes if node.process is not None and node.index not in self.stopped]

    def start(self) -> CliqueNetwork:
        """Write genesis and keys, start and connect the nodes, and wait until they all
        follow one chain and it grows."""
        if self._started:
            return self
        self._started = True
        _open_networks.add(self)
        try:
            self._prepare()
            self._start_all()
            if not self.fixes:
                self._pad_peer_pools()
            self.wait_until_synced()
            self.wait_for_blocks(2)
            self._write_network_file()
        except BaseException:
            self.close()
            raise
        if self.watch:
            self._watchdog = threading.Thread(target=self._watch, name="clique-watchdog", daemon=True)
            self._watchdog.start()
        return self

    def stop_node(self, index: int, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop node ``index`` for good: SIGTERM, SIGKILL after ``timeout`` s."""
        with self._lock:
            self.stopped.add(index)
            self._terminate(self.nodes[index], timeout)
        log.info("stopped node %d (sealer %s)", index, self.nodes[index].sealer)

    def close(self) -> None:
        """Stop every node (idempotent); delete the data folder if it was temporary."""
        self._closing.set()
        watchdog = self._watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=RPC_TIMEOUT_S + 5)
        with self._lock:
            for node in self.nodes:  # all at once: a client takes seconds to shut down
                if node.running:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(node.process.pid, signal.SIGTERM)
            for node in self.nodes:
                self._terminate(node, STOP_TIMEOUT_S)
            _open_networks.discard(self)
            if self._temporary and self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def rpc(self, index: int, method: str, *params: Any) -> Any:
        """A JSON-RPC call to node ``index``."""
        return self.nodes[index].rpc(method, *params)

    def block(self, index: int, number: int | str = "latest") -> dict:
        """Block ``number`` as node ``index`` has it (raw JSON-RPC fields)."""
        block = self.rpc(
            index, "eth_getBlockByNumber", hex(number) if isinstance(number, int) else number, False
        )
        if block is None:
            raise CliqueNetworkError(f"node {index} has no block {number}")
        return block

    def height(self, index: int) -> int:
        return int(self.rpc(index, "eth_blockNumber"), 16)

    def peer_ids(self, index: int) -> set[str]:
        """Enode ids of the nodes that node ``index`` is connected to. (``admin_peers``
        also lists an unconnected entry, id with 0x, for each ``admin_addPeer`` call.)"""
        return {
            peer["id"] for peer in self.rpc(index, "admin_peers") or [] if not peer["id"].startswith("0x")
        }

    def signers(self, index: int, numbers: Iterable[int]) -> dict[int, str]:
        """Sealer of each block in ``numbers`` as node ``index`` has them."""
        return {number: block_signer(self.block(index, number)) for number in numbers}

    def wait_for_blocks(self, count: int, index: int | None = None, timeout: float | None = None) -> int:
        """Wait until node ``index`` (default: the first live one) is ``count`` blocks
        further; returns its height."""
        node = self.nodes[index] if index is not None else self.live_nodes()[0]
        target = self._height(node) + count
        timeout = timeout if timeout is not None else self._blocks_timeout(count)
        self._wait(lambda: self._height(node) >= target, f"block {target} on node {node.index}", timeout)
        return self._height(node)

    def wait_until_synced(self, timeout: float | None = None) -> int:
        """Wait until every live node follows one chain (heads equal, or one block apart
        on the same chain); returns the lowest head."""
        timeout = timeout if timeout is not None else self._blocks_timeout(10)
        self._wait(self._in_sync, "all live nodes to follow one chain", timeout)
        return min(self._height(node) for node in self.live_nodes())

    def reconnect(self) -> list[tuple[int, int]]:
        """Connect every pair of live nodes that lost each other (``admin_addPeer``)."""
        done = []
        with self._lock:
            live = [node for node in self.live_nodes() if node.running]
            peers = {node.index: self.peer_ids(node.index) for node in live}
            for node in live:
                for other in live:
                    if other.index <= node.index or other.node_id in peers[node.index]:
                        continue
                    if node.node_id in peers[other.index]:
                        continue
                    self._add_peer(node, other)
                    log.warning("node %d had lost node %d; added it again", node.index, other.index)
                    self.reconnections.append((node.index, other.index))
                    done.append((node.index, other.index))
        return done

    # -------------------------------------------------------------------- internals

    def _prepare(self) -> None:
        from eth_account import Account

        if not self.executable.exists():
            raise CliqueNetworkError(
                f"{self.executable} not found: run `npm ci` (package @ethereumjs/client)"
            )
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="lec-ethereumjs-"))
        elif self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise CliqueNetworkError(f"data folder {self.data_dir} is not empty (another network's?)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.fixes:
            (self.data_dir / FIXES_FILE).write_text(fixes_source())
        accounts = {
            account.address: account for account in (Account.create() for _ in range(self.sealer_count))
        }
        ports = free_ports(2 * self.sealer_count)
        for index, address in enumerate(start_order(list(accounts))):
            node = EthereumJSNode(
                index, address, self.data_dir / f"node-{index}", ports[2 * index], ports[2 * index + 1]
            )
            node.directory.mkdir(parents=True)
            descriptor = os.open(node.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(accounts[address].key.hex().removeprefix("0x"))
            self.nodes.append(node)
        self._write_genesis()

    def _write_genesis(self) -> None:
        lead = self._genesis_lead if self.sealer_count > 1 else 0
        self.genesis_time = int(time.time() + lead)
        genesis = clique_genesis(
            self.sealers,
            chain_id=self.chain_id,
            period=self.period,
            alloc=self.fund,
            timestamp=self.genesis_time,
        )
        self.genesis_file.write_text(json.dumps(genesis, indent=2) + "\n")

    def _start_all(self) -> None:
        """Start nodes 1..N-1, then node 0, which seals block 1 (module doc)."""
        first, *joiners = self.nodes
        for attempt in range(1, GENESIS_ATTEMPTS + 1):
            for position, node in enumerate(joiners):
                self._start_node(node, joiners[:position])
            # without the fixes each joiner's first (too young, dropped) block must come
            # before genesis + period
            late = time.time() > self.genesis_time - 1 - 0.5 * self.sealer_count
            if not self.fixes and joiners and late:
                if attempt == GENESIS_ATTEMPTS:
                    raise CliqueNetworkError(
                        f"starting {len(joiners)} clients took longer than {self._genesis_lead:.0f} s "
                        f"{GENESIS_ATTEMPTS} times (is the machine very busy?)"
                    )
                log.warning("nodes started too slowly for the genesis timestamp; starting again")
                self._reset(lead=2 * self._genesis_lead)
                continue
            self._wait(
                lambda: time.time() >= self.genesis_time + 1, "the genesis time", self._genesis_lead + 10
            )
            self._start_node(first, joiners)

            def block_one_everywhere() -> bool:
                hashes = {
                    (node.rpc("eth_getBlockByNumber", "0x1", False) or {}).get("hash") for node in self.nodes
                }
                return None not in hashes and len(hashes) == 1

            self._wait(block_one_everywhere, "block 1 on every node", self._blocks_timeout(3))
            return

    def _pad_peer_pools(self) -> None:
        """Without fix 7 a client sends a new block in full to the first floor(sqrt(n)) of
        its n pooled peers only. ``admin_addPeer`` on a connected node appends a placeholder
        entry to the pool (its id spelled with 0x, the real one without): with two real
        peers first and two placeholders after, n = 4 and both real peers get every block.
        It lasts until a connection is re-made (then the real entry goes last)."""
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    self._add_peer(node, other)

    def _add_peer(self, node: EthereumJSNode, other: EthereumJSNode) -> None:
        node.rpc(
            "admin_addPeer", {"address": "127.0.0.1", "tcpPort": other.p2p_port, "udpPort": other.p2p_port}
        )

    def _reset(self, lead: float) -> None:
        """Stop every node, drop its chain data (keeping its key), write a new genesis."""
        for node in self.nodes:
            self._terminate(node, STOP_TIMEOUT_S)
            node.process = None
            node.node_id = None
            shutil.rmtree(node.directory / CHAIN_NAME, ignore_errors=True)
        self._genesis_lead = lead
        self._write_genesis()

    def _environment(self, node: EthereumJSNode) -> dict[str, str]:
        environment = dict(os.environ)
        environment.pop(AWAIT_BLOCK_ONE, None)
        if self.fixes:
            assert self.data_dir is not None
            preload = f"--import={(self.data_dir / FIXES_FILE).resolve().as_uri()}"
            environment["NODE_OPTIONS"] = f"{environment.get('NODE_OPTIONS', '')} {preload}".strip()
            if node.index != 0:
                environment[AWAIT_BLOCK_ONE] = "1"
        return environment

    def _start_node(self, node: EthereumJSNode, peers: Sequence[EthereumJSNode]) -> None:
        """Start the client and wait until it answers JSON-RPC and is connected to ``peers``.

        Another program may take one of its ports before the client binds it: the client
        then exits (JSON-RPC) or runs without its RLPx listener, or a stranger answers on
        its JSON-RPC port. Then it starts again on new ports."""
        deadline = time.monotonic() + self.start_timeout
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self._spawn(node, peers)
            if self._await_listening(node, deadline):
                break
            log.warning(
                "node %d: port %d or %d was taken by another program; starting on new ports",
                node.index, node.p2p_port, node.rpc_port,
            )  # fmt: skip
            self._terminate(node, 2.0)  # a failed start: nothing to keep
            shutil.rmtree(node.directory / CHAIN_NAME, ignore_errors=True)
            if attempt == PORT_ATTEMPTS:
                raise CliqueNetworkError(
                    f"node {node.index}: another program took one of its ports {PORT_ATTEMPTS} times"
                )
            node.use_ports(*free_ports(2))
        self._await_peers(node, peers, deadline)

    def _spawn(self, node: EthereumJSNode, peers: Sequence[EthereumJSNode]) -> None:
        with self._lock:
            if self._closing.is_set():
                raise CliqueNetworkError("the network is closing")
            node.node_id = None
            node.log_start = node.log_file.stat().st_size if node.log_file.exists() else 0
            node.log_handle = open(node.log_file, "ab")  # noqa: SIM115 - closed in _terminate
            node.process = subprocess.Popen(
                node.command(self.executable, self.genesis_file, [peer.enode for peer in peers]),
                stdin=subprocess.DEVNULL,
                stdout=node.log_handle,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._environment(node),
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        log.info(
            "node %d: pid %d, %s, p2p port %d", node.index, node.process.pid, node.rpc_url, node.p2p_port
        )

    def _await_listening(self, node: EthereumJSNode, deadline: float) -> bool:
        """Poll until the client answers JSON-RPC and its RLPx listener is up (True), or
        one of its ports turns out taken (False)."""
        assert node.process is not None
        while True:
            if self._closing.is_set():
                raise CliqueNetworkError("the network closed while a node was starting")
            output = node.log_text()
            if "EADDRINUSE" in output:
                return False
            if not node.running:
                raise CliqueNetworkError(
                    f"ethereumjs node {node.index} exited with code {node.process.returncode}; "
                    f"end of {node.log_file}:\n{node.log_tail()}"
                )
            with contextlib.suppress(CliqueNetworkError):
                info = node.rpc("admin_nodeInfo")
                if int(info["ports"]["listener"]) != node.p2p_port:
                    return False  # another program's server on our JSON-RPC port
                if "Server listener up transport=rlpx" in output:
                    node.node_id = info["id"]
                    return True
            if time.monotonic() > deadline:
                raise CliqueNetworkError(
                    f"ethereumjs node {node.index} did not answer on {node.rpc_url} with its RLPx "
                    f"listener up within {self.start_timeout:.0f} s; end of {node.log_file}:\n"
                    f"{node.log_tail()}"
                )
            time.sleep(0.25)

    def _await_peers(self, node: EthereumJSNode, peers: Sequence[EthereumJSNode], deadline: float) -> None:
        """Poll until ``node`` is connected to every one of ``peers``, asking it to connect
        to the missing ones every few seconds (a bootnode is tried only once)."""
        wanted = {peer.node_id: peer for peer in peers}
        asked = time.monotonic()
        while True:
            if self._closing.is_set():
                raise CliqueNetworkError("the network closed while a node was connecting")
            if not node.running:
                raise CliqueNetworkError(
                    f"ethereumjs node {node.index} exited with code {node.process.returncode}; "  # type: ignore[union-attr]
                    f"end of {node.log_file}:\n{node.log_tail()}"
                )
            with contextlib.suppress(CliqueNetworkError):
                connected = self.peer_ids(node.index)
                missing = [peer for peer_id, peer in wanted.items() if peer_id not in connected]
                if not missing:
                    return
                if time.monotonic() - asked >= PEER_RETRY_S:
                    asked = time.monotonic()
                    for peer in missing:
                        log.info(
                            "node %d: not connected to node %d yet; asking again", node.index, peer.index
                        )
                        self._add_peer(node, peer)
            if time.monotonic() > deadline:
                raise CliqueNetworkError(
                    f"ethereumjs node {node.index} did not connect to nodes {[peer.index for peer in peers]} "
                    f"within {self.start_timeout:.0f} s\n{self._log_tails()}"
                )
            time.sleep(0.25)

    def _terminate(self, node: EthereumJSNode, timeout: float) -> None:
        process = node.process
        if process is not None and process.poll() is None:
            for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)  # its own process group (start_new_session)
                try:
                    process.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    log.warning("node %d did not stop on %s", node.index, sig.name)
        if node.log_handle is not None:
            node.log_handle.close()
            node.log_handle = None

    def _watch(self) -> None:
        while not self._closing.wait(max(2.0, self.period)):
            try:
                self.reconnect()
            except CliqueNetworkError as error:  # a node busy or just stopped: try again next round
                log.debug("watchdog: %s", error)

    def _head(self, node: EthereumJSNode) -> tuple[int, str] | None:
        try:
            block = node.rpc("eth_getBlockByNumber", "latest", False)
        except CliqueNetworkError:
            return None
        return int(block["number"], 16), block["hash"]

    def _height(self, node: EthereumJSNode) -> int:
        head = self._head(node)
        return -1 if head is None else head[0]

    def _in_sync(self) -> bool:
        live = self.live_nodes()
        heads = [self._head(node) for node in live]
        if not heads or any(head is None for head in heads):
            return False
        numbers = [head[0] for head in heads if head is not None]
        low = min(numbers)
        hashes = {(node.rpc("eth_getBlockByNumber", hex(low), False) or {}).get("hash") for node in live}
        return max(numbers) - low <= 1 and len(hashes) == 1 and None not in hashes

    def _blocks_timeout(self, blocks: int) -> float:
        # an out-of-turn sealer waits up to N x 0.5 s beyond the period; a busy machine more
        return 120.0 + 3 * blocks * (self.period + 0.5 * self.sealer_count)

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``predicate`` (a failed JSON-RPC call counts as not yet) until it holds;
        fail at once if a node exits, and after ``timeout`` s naming ``what``."""
        deadline = time.monotonic() + timeout
        last_error: CliqueNetworkError | None = None
        while True:
            if self._closing.is_set():
                raise CliqueNetworkError(f"the network closed while waiting for {what}")
            for node in self.live_nodes():
                if not node.running:
                    raise CliqueNetworkError(
                        f"ethereumjs node {node.index} exited (code {node.process.returncode}) while "  # type: ignore[union-attr]
                        f"waiting for {what}; end of {node.log_file}:\n{node.log_tail()}"
                    )
            try:
                if predicate():
                    return
            except CliqueNetworkError as error:
                last_error = error
            if time.monotonic() > deadline:
                cause = f" (last error: {last_error})" if last_error is not None else ""
                raise CliqueNetworkError(
                    f"timed out after {timeout:.0f} s waiting for {what}{cause}\n{self._log_tails()}"
                )
            time.sleep(0.2)

    def _log_tails(self, lines: int = 6) -> str:
        return "\n".join(
            f"--- node {node.index} ({node.log_file}):\n{node.log_tail(lines)}" for node in self.nodes
        )

    def _write_network_file(self) -> None:
        assert self.data_dir is not None
        description = {
            "chain_id": self.chain_id,
            "period": self.period,
            "genesis": str(self.genesis_file),
            "fixes": str(self.data_dir / FIXES_FILE) if self.fixes else None,
            "nodes": [
                {
                    "index": node.index,
                    "sealer": node.sealer,
                    "rpc_url": node.rpc_url,
                    "enode": node.enode,
                    "log": str(node.log_file),
                }
                for node in self.nodes
            ],
        }
        (self.data_dir / NETWORK_FILE).write_text(json.dumps(description, indent=2) + "\n")
