"""A local Clique (proof-of-authority) network of EthereumJS clients, for tests and demos.

``CliqueNetwork`` starts N ``ethereumjs`` processes (npm ``@ethereumjs/client`` 0.10.5)
on 127.0.0.1 that share one geth-style genesis in which all N are sealers, connects
them, and waits until they follow one chain::

    with CliqueNetwork(sealers=3, period=2, fund=[admin.address]) as network:
        client = ChainClient.connect(network.rpc_urls[0], artifacts)
        ...
        network.stop_node(2)          # the other two keep sealing, in turn

**Genesis** (``lec-clique.json``): chain id ``CHAIN_ID`` = 4243 (``lec node``'s embedded
chain uses 4242), every fork up to London at block 0 (EIP-1559 fees; no PUSH0, the
contracts are built for evmVersion london), no merge and no Shanghai (an EthereumJS
miner stops at the merge); ``clique.period`` seconds between blocks, ``clique.epoch``
30000; ``extraData`` = 32 zero bytes, the sorted sealer addresses, 65 zero bytes;
``alloc`` funds the ``fund`` accounts. **Files**: ``node-<i>/`` per node with its sealer
key (``sealer.key``: hex without 0x, mode 0600, what ``--unlock`` reads), its chain
database and its log (``ethereumjs.log``); ``network.json`` lists chain id, RPC URLs,
enodes and sealers. Sealer keys are generated per network and never printed or logged.

**Flags** per node: ``--gethGenesis --dataDir --port --extIP 127.0.0.1 --rpc --rpcAddr
127.0.0.1 --rpcPort --mine --unlock <key file> --discDns false --discV4 false
--no-logFile --logLevel info [--bootnodes enode://<id>@127.0.0.1:<port>,...]``, output
into ``node-<i>/ethereumjs.log``. JSON-RPC listens on 127.0.0.1 only; the RLPx/discovery
port binds 0.0.0.0 (the client has no option for that).

**Start** (``_start_all``): the genesis timestamp lies a few seconds ahead; nodes 1..N-1
start first, each with the running ones as ``--bootnodes`` (a bootnode must already be
listening: it is pinged once at start-up). Their first block would be too young for
genesis + period, so the client drops it and waits. Then node 0, the in-turn sealer of
block 1, starts and seals block 1; everybody is connected by then. (Started one after
another on a moving chain, each node seals its own block 1 and the client never
reconciles the branches.) A watchdog thread re-connects nodes that lost each other, with
``admin_addPeer [{"address": "127.0.0.1", "tcpPort": p, "udpPort": p}]``.

**Fixes** (``FIXES_SOURCE``, numbered there): EthereumJS 0.10.5 seals only empty Clique
blocks: every transaction is skipped ("extraData must be 97 bytes on non-epoch
transition blocks"), the EVM refuses to run code on a PoA chain ("Must include
cliqueSigner function"), and ``eth_estimateGas`` fails like the miner. Reads race the
execution of the newest block ("State trie does not contain state root"). With several
sealers, blocks reach only floor(sqrt(n)) peers, a node that lost a same-height race
never leaves its branch, a stray miner timer seals too-early blocks, the transactions of
a block that was not taken are dropped, those of blocks from peers stay pooled and hold
back their senders' later ones, and the "pending" nonce counts them.
``CliqueNetwork(fixes=True)``, the default, loads a small ES module into every client
(``NODE_OPTIONS=--import``) that patches these places in the client's classes;
``fixes=False`` runs the client as published (empty blocks only; the peer pools are
padded instead of fix 7, see ``_pad_peer_pools``).

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
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from contracts.paths import NODE_MODULES

log = logging.getLogger(__name__)

ETHEREUMJS = NODE_MODULES / ".bin" / "ethereumjs"
CHAIN_ID = 4243
CHAIN_NAME = "lec-clique"  # EthereumJS names the chain, and its data sub-folder, after the genesis file
GENESIS_FILE = f"{CHAIN_NAME}.json"
NETWORK_FILE = "network.json"
FIXES_FILE = "ethereumjs-clique-fixes.mjs"
KEY_FILE = "sealer.key"
LOG_FILE = "ethereumjs.log"
EPOCH = 30_000
GAS_LIMIT = 30_000_000
INITIAL_BASE_FEE = 1_000_000_000  # 1 gwei, as geth
DEFAULT_FUNDING_WEI = 1_000_000 * 10**18
VANITY_BYTES = 32
SEAL_BYTES = 65

START_TIMEOUT_S = 60.0  # one client from spawn to answering JSON-RPC and connecting
STOP_TIMEOUT_S = 20.0  # SIGTERM grace before SIGKILL (a client takes up to ~10 s)
RPC_TIMEOUT_S = 10.0
GENESIS_LEAD_S = 4.0  # genesis timestamp ahead of now: time to start nodes 1..N-1 ...
GENESIS_LEAD_PER_NODE_S = 2.5  # ... each


class NetworkError(RuntimeError):
    """The network could not be started or did not behave as expected."""


class RpcError(NetworkError):
    """A JSON-RPC call failed (no answer, or an ``error`` answer)."""


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
//    not contain state root"); and a sealing node stores a block's receipts just before
//    the block itself, so eth_getTransactionReceipt fails ("value for <block hash> not
//    found in DB") instead of answering null. Retry for a while; then answer null for
//    the receipt, as for one not mined yet.
const notYet = (error) => /State trie does not contain|not found in DB/.test(String(error?.message ?? error))
const stateReaders = ['call', 'estimateGas', 'getBalance', 'getCode', 'getStorageAt', 'getTransactionCount']
for (const name of [...stateReaders, 'getProof', 'getTransactionReceipt']) {
  const method = Eth.prototype[name]
  Eth.prototype[name] = async function (params) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await method.call(this, params)
      } catch (error) {
        if (!notYet(error)) throw error
        if (attempt >= 50) {
          if (name === 'getTransactionReceipt') return null
          throw error
        }
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  }
}

// 5. Each block runs the miner's chain-updated handler twice (import, then execution);
//    both await before arming the block timer, so one timer escapes being cleared and
//    fires early. Its block is younger than parent + period, is rejected ("invalid
//    timestamp diff (lower than period)"), and its transactions are dropped from the pool
//    all the same. Do not assemble before the period is over. (On the genesis the early
//    block is left to fail: CliqueNetwork relies on that to hold the first nodes back
//    until all are connected.) Nor while a peer has shown a higher block: the miner does
//    not pause while the node catches up, and each block it seals on its stale head
//    starts a branch that the others ignore.
const assembleBlock = Miner.prototype.assembleBlock
Miner.prototype.assembleBlock = async function () {
  const parent = this.service.chain.blocks.latest
  const wait = Number(parent.header.timestamp) * 1000 + this.period - 400 - Date.now()
  if (wait > 0 && parent.header.number > 0n) return this.queueNextAssembly(wait + 400)
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
    source = FIXES_SOURCE
    for placeholder, path in modules.items():
        if not path.exists():
            raise NetworkError(f"{path} not found: the fixes are for @ethereumjs/client 0.10.5")
        source = source.replace(placeholder, path.resolve().as_uri())
    return source


# --------------------------------------------------------------------------- genesis


def clique_extra_data(sealers: Iterable[str]) -> bytes:
    """Clique genesis extraData: 32-byte vanity, the sorted sealer addresses, empty seal."""
    addresses = sorted(bytes.fromhex(address.removeprefix("0x")) for address in sealers)
    if not addresses or any(len(address) != 20 for address in addresses):
        raise ValueError("sealers must be one or more 20-byte addresses")
    return bytes(VANITY_BYTES) + b"".join(addresses) + bytes(SEAL_BYTES)


def geth_genesis(
    sealers: Sequence[str],
    *,
    chain_id: int = CHAIN_ID,
    period: int = 2,
    epoch: int = EPOCH,
    alloc: dict[str, int] | None = None,
    timestamp: int | None = None,
    gas_limit: int = GAS_LIMIT,
) -> dict:
    """A geth-format genesis for a Clique chain: London at block 0, no merge.

    ``alloc`` maps addresses to a balance in wei. Without ``terminalTotalDifficulty``,
    ``shanghaiTime`` and later forks the chain stays pre-merge."""
    if period < 1:
        raise ValueError("the clique period must be at least 1 second")
    forks = ["homestead", "eip150", "eip155", "eip158", "byzantium", "constantinople"]
    forks += ["petersburg", "istanbul", "berlin", "london"]
    return {
        "config": {
            "chainId": chain_id,
            **{f"{fork}Block": 0 for fork in forks},
            "clique": {"period": period, "epoch": epoch},
        },
        "nonce": "0x0",
        "timestamp": hex(int(time.time()) if timestamp is None else timestamp),
        "extraData": "0x" + clique_extra_data(sealers).hex(),
        "gasLimit": hex(gas_limit),
        "difficulty": "0x1",
        "mixHash": "0x" + "00" * 32,
        "coinbase": "0x" + "00" * 20,
        "baseFeePerGas": hex(INITIAL_BASE_FEE),
        "number": "0x0",
        "gasUsed": "0x0",
        "parentHash": "0x" + "00" * 32,
        "alloc": {
            address.lower().removeprefix("0x"): {"balance": hex(wei)}
            for address, wei in (alloc or {}).items()
        },
    }


def start_order(sealers: Sequence[str]) -> list[str]:
    """The sealers in node order: node 0 is the in-turn signer of block 1.

    Clique's in-turn signer of block n is ``sorted(signers)[n % N]``, so node i is in
    turn for the blocks n with n % N == (i + 1) % N."""
    ranked = sorted(sealers, key=lambda address: bytes.fromhex(address.removeprefix("0x")))
    return [ranked[(index + 1) % len(ranked)] for index in range(len(ranked))]


def block_signer(block: dict) -> str:
    """The address that sealed a Clique block, given as raw ``eth_getBlockByNumber`` JSON
    (EthereumJS has no ``clique_getSigners``, and ``miner`` is zero on Clique blocks).

    The last 65 bytes of ``extraData`` sign the keccak of the RLP header without them."""
    import rlp
    from eth_keys import keys
    from eth_utils import keccak

    extra = bytes.fromhex(block["extraData"][2:])
    if len(extra) < VANITY_BYTES + SEAL_BYTES:
        raise ValueError(f"block {block.get('number')} carries no Clique seal")

    def raw(name: str) -> bytes:
        return bytes.fromhex(block[name][2:])

    def number(name: str) -> int:
        return int(block[name], 16)

    header: list[Any] = [
        raw("parentHash"),
        raw("sha3Uncles"),
        raw("miner"),
        raw("stateRoot"),
        raw("transactionsRoot"),
        raw("receiptsRoot"),
        raw("logsBloom"),
        number("difficulty"),
        number("number"),
        number("gasLimit"),
        number("gasUsed"),
        number("timestamp"),
        extra[:-SEAL_BYTES],
        raw("mixHash"),
        raw("nonce"),
    ]
    if block.get("baseFeePerGas") is not None:
        header.append(number("baseFeePerGas"))
    seal = extra[-SEAL_BYTES:]
    vrs = (seal[64] % 27, int.from_bytes(seal[:32], "big"), int.from_bytes(seal[32:64], "big"))
    signature = keys.Signature(vrs=vrs)
    return signature.recover_public_key_from_msg_hash(keccak(rlp.encode(header))).to_checksum_address()


# -------------------------------------------------------------------------- JSON-RPC


def rpc_call(url: str, method: str, *params: Any, timeout: float = RPC_TIMEOUT_S) -> Any:
    """One JSON-RPC call over HTTP; returns ``result`` or raises ``RpcError``."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except (OSError, ValueError) as error:
        raise RpcError(f"{method} at {url}: {error}") from error
    if answer.get("error"):
        raise RpcError(f"{method} at {url}: {answer['error'].get('message', answer['error'])}")
    return answer.get("result")


# ----------------------------------------------------------------------------- ports

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_is_free(port: int) -> bool:
    """Free for a client: TCP and UDP on all interfaces (RLPx, discovery) and TCP on
    127.0.0.1 (JSON-RPC)."""
    for kind, host in (
        (socket.SOCK_STREAM, "0.0.0.0"),
        (socket.SOCK_DGRAM, "0.0.0.0"),
        (socket.SOCK_STREAM, "127.0.0.1"),
    ):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports free now, drawn at random below the kernel's ephemeral range (so no
    outgoing connection takes one before the client binds it), never handed out twice
    by this process."""
    low, high = 20_000, min(_ephemeral_low() - 1, 32_000)
    chosen: list[int] = []
    with _ports_lock:
        for _ in range(100 * count):
            if len(chosen) == count:
                break
            port = random.randint(low, high)
            if port not in _handed_out and port not in chosen and _port_is_free(port):
                chosen.append(port)
        if len(chosen) < count:
            raise NetworkError(f"found only {len(chosen)} of {count} free ports in {low}..{high}")
        _handed_out.update(chosen)
    return chosen


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

    def rpc(self, method: str, *params: Any, timeout: float = RPC_TIMEOUT_S) -> Any:
        return rpc_call(self.rpc_url, method, *params, timeout=timeout)

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
    nodes that lost each other (``reconnections`` lists what it did).
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
        self._genesis_lead = GENESIS_LEAD_S + GENESIS_LEAD_PER_NODE_S * (sealers - 1)
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
            raise NetworkError(f"node {index} has no block {number}")
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
                    address = {"address": "127.0.0.1", "tcpPort": other.p2p_port, "udpPort": other.p2p_port}
                    node.rpc("admin_addPeer", address)
                    log.warning("node %d had lost node %d; added it again", node.index, other.index)
                    self.reconnections.append((node.index, other.index))
                    done.append((node.index, other.index))
        return done

    # -------------------------------------------------------------------- internals

    def _prepare(self) -> None:
        from eth_account import Account

        if not self.executable.exists():
            raise NetworkError(f"{self.executable} not found: run `npm ci` (package @ethereumjs/client)")
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="lec-ethereumjs-"))
        elif self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise NetworkError(f"data folder {self.data_dir} is not empty (another network's?)")
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
        genesis = geth_genesis(
            self.sealers,
            chain_id=self.chain_id,
            period=self.period,
            alloc=self.fund,
            timestamp=self.genesis_time,
        )
        self.genesis_file.write_text(json.dumps(genesis, indent=2) + "\n")

    def _start_all(self) -> None:
        """Start nodes 1..N-1, then node 0 once genesis + period has passed (module doc)."""
        for _ in range(3):
            first, *joiners = self.nodes
            for position, node in enumerate(joiners):
                self._start_node(node, joiners[:position])
            # each joiner's first (too young, dropped) block must come before genesis + period
            if joiners and time.time() > self.genesis_time - 1 - 0.5 * self.sealer_count:
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
        raise NetworkError("could not start the nodes in time (is the machine very busy?)")

    def _pad_peer_pools(self) -> None:
        """Without fix 7 a client sends a new block in full to the first floor(sqrt(n)) of
        its n pooled peers only. ``admin_addPeer`` on a connected node appends a placeholder
        entry to the pool (its id spelled with 0x, the real one without): with two real
        peers first and two placeholders after, n = 4 and both real peers get every block.
        It lasts until a connection is re-made (then the real entry goes last)."""
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    address = {"address": "127.0.0.1", "tcpPort": other.p2p_port, "udpPort": other.p2p_port}
                    node.rpc("admin_addPeer", address)

    def _reset(self, lead: float) -> None:
        """Stop every node, drop its chain data (keeping its key), write a new genesis."""
        for node in self.nodes:
            self._terminate(node, STOP_TIMEOUT_S)
            node.process = None
            node.node_id = None
            shutil.rmtree(node.directory / CHAIN_NAME, ignore_errors=True)
        self._genesis_lead = lead
        self._write_genesis()

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        if self.fixes:
            assert self.data_dir is not None
            preload = f"--import={(self.data_dir / FIXES_FILE).resolve().as_uri()}"
            environment["NODE_OPTIONS"] = f"{environment.get('NODE_OPTIONS', '')} {preload}".strip()
        return environment

    def _start_node(self, node: EthereumJSNode, peers: Sequence[EthereumJSNode]) -> None:
        """Spawn the client with ``peers`` as bootnodes; wait until it answers JSON-RPC
        and is connected to them."""
        with self._lock:
            if self._closing.is_set():
                raise NetworkError("the network is closing")
            node.log_handle = open(node.log_file, "ab")  # noqa: SIM115 - closed in _terminate
            node.process = subprocess.Popen(
                node.command(self.executable, self.genesis_file, [peer.enode for peer in peers]),
                stdin=subprocess.DEVNULL,
                stdout=node.log_handle,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._environment(),
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        log.info(
            "node %d: pid %d, %s, p2p port %d", node.index, node.process.pid, node.rpc_url, node.p2p_port
        )

        def answering() -> bool:
            if not node.running:
                raise NetworkError(
                    f"ethereumjs node {node.index} exited with code {node.process.returncode}; "
                    f"end of {node.log_file}:\n{node.log_tail()}"
                )
            node.node_id = node.rpc("admin_nodeInfo", timeout=2)["id"]
            return True

        self._wait(answering, f"node {node.index} to answer on {node.rpc_url}", self.start_timeout)
        wanted = {peer.node_id for peer in peers}
        self._wait(
            lambda: wanted <= self.peer_ids(node.index),
            f"node {node.index} to connect to nodes {[peer.index for peer in peers]}",
            self.start_timeout,
        )

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
            except NetworkError as error:  # a node busy or just stopped: try again next round
                log.debug("watchdog: %s", error)

    def _head(self, node: EthereumJSNode) -> tuple[int, str] | None:
        try:
            block = node.rpc("eth_getBlockByNumber", "latest", False, timeout=5)
        except RpcError:
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
        # an out-of-turn sealer waits up to N x 0.5 s beyond the period
        return 30.0 + 2 * blocks * (self.period + 0.5 * self.sealer_count)

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._closing.is_set():
                raise NetworkError(f"the network closed while waiting for {what}")
            with contextlib.suppress(RpcError):
                if predicate():
                    return
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- node {node.index} ({node.log_file}):\n{node.log_tail(6)}" for node in self.nodes
                )
                raise NetworkError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
            time.sleep(0.2)

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
