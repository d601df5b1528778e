"""geth v1.13.15, unmodified: a multi-node Clique network on 127.0.0.1, and re-validation
of the embedded node's chain (``geth init`` + ``geth import``).

geth 1.13.15 is the last release that seals and validates Clique (1.14 removed it). The
project's set-up builds it with the Go toolchain from the Go module proxy
(``INSTALL_COMMAND``) into ``GETH_HOME`` (``~/.cache/lec-node/geth-v1.13.15/geth``, kept
across clones); ``LEC_GETH=/path/to/geth`` overrides it.

``GethNetwork(sealers=3, period=2, data_dir=..., fund=[...])`` starts N geth processes,
each a sealer of one Clique chain::

    with GethNetwork(sealers=3, period=2, data_dir=path, fund=[admin.address]) as network:
        client = ChainClient.connect(network.rpc_urls[0], artifacts)
        network.stop_node(2)            # the other two keep sealing
        late = network.add_node()       # a follower that syncs the chain from its peers
        network.vote(late, True)        # the sealers vote it in; it starts sealing

**Genesis**: ``GenesisConfig.to_geth()``, the embedded chain's genesis in geth's format
(London from block 0, no merge), chain id ``CHAIN_ID`` = 4243, all N sealers, the
``fund`` accounts. **Per node** (``node-<i>/``): the sealer key as a geth keystore
(``keystore/``, scrypt-free PBKDF2, with ``password.txt``, mode 0600: what ``--unlock``
reads; never printed or logged), the node key (``nodekey``, fixes the enode), the chain
database, ``config.toml`` listing every other node as a static and trusted peer, and the
log (``geth.log``); ``network.json`` lists chain id, RPC URLs, enodes and sealers.

**Flags**: ``--networkid --port --nat none --nodiscover --syncmode full --gcmode archive
--http --http.addr 127.0.0.1 --http.api eth,net,web3,clique,txpool,admin,debug --ws
--ws.addr 127.0.0.1 --authrpc.port --ipcdisable --mine --miner.etherbase --unlock
--password --allow-insecure-unlock --miner.gasprice 1 --cache 64``. Peer-to-peer listens
on 127.0.0.1 and peers are static: no discovery traffic leaves the machine. Archive mode
keeps every block's state, so reads at old blocks (the event follower's) work.

Processes run in their own session (Ctrl-C reaches only us), die with this process
(Linux parent-death signal), and are stopped with SIGTERM (geth flushes its database),
then SIGKILL; leaving the ``with`` block, also on an exception, stops every node.
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
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_keys import keys
from eth_utils import to_checksum_address

from node.chain.genesis import GenesisConfig
from node.ports import free_ports

log = logging.getLogger(__name__)

GETH_VERSION = "1.13.15"
GETH_HOME = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lec-node" / f"geth-v{GETH_VERSION}"
)
INSTALL_COMMAND = (
    f"GOBIN={GETH_HOME} go install -ldflags=-checklinkname=0 "
    f"github.com/ethereum/go-ethereum/cmd/geth@v{GETH_VERSION}"
)
CHAIN_ID = 4243
FUNDED_WEI = 1_000_000 * 10**18
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
START_ATTEMPTS = 3  # new ports after a port was taken between pick and bind
KEYSTORE_ITERATIONS = 1024  # PBKDF2 rounds of the sealer keystores (geth unlocks them at start)


class GethError(RuntimeError):
    """geth is missing, refused its input, or a node did not do what was expected."""


class PortTaken(GethError):
    """A node could not bind a port picked for it (another program took it meanwhile)."""


def geth_executable() -> Path | None:
    """The geth 1.13.15 binary: ``$LEC_GETH``, the set-up's build, or ``geth`` on PATH
    when it is that version; None when there is none."""
    candidates = [os.environ.get("LEC_GETH"), str(GETH_HOME / "geth"), shutil.which("geth")]
    for candidate in candidates:
        usable = candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK)
        if usable and geth_version(Path(candidate)) == GETH_VERSION:
            return Path(candidate)
    return None


def geth_version(executable: Path) -> str | None:
    try:
        output = subprocess.run(
            [str(executable), "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    for line in output.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip().removesuffix("-stable")
    return None


def require_geth() -> Path:
    executable = geth_executable()
    if executable is None:
        raise GethError(f"geth {GETH_VERSION} not found; build it with: {INSTALL_COMMAND}")
    return executable


def _run_geth(executable: Path, arguments: Sequence[str], what: str, timeout: float = 600.0) -> str:
    result = subprocess.run(
        [str(executable), *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise GethError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return output


def geth_init(executable: Path, data_dir: Path, genesis: dict) -> None:
    """``geth init``: a new database for ``genesis`` (geth's JSON) in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    genesis_file = data_dir / "genesis.json"
    genesis_file.write_text(json.dumps(genesis, indent=2))
    _run_geth(executable, ["--datadir", str(data_dir), "init", str(genesis_file)], "geth init")


def import_chain(blocks_file: Path, genesis: dict, data_dir: Path, executable: Path | None = None) -> str:
    """Re-validate an exported chain with geth: ``geth init`` with ``genesis`` and ``geth
    import`` of ``blocks_file`` into a new ``data_dir``. geth checks every Clique seal,
    state root, receipt root and bloom, and stops at the first block it refuses; that block
    raises ``GethError`` with geth's reason. Returns geth's output."""
    executable = executable or require_geth()
    geth_init(executable, data_dir, genesis)
    output = _run_geth(
        executable,
        ["--datadir", str(data_dir), "--syncmode", "full", "--gcmode", "archive", "import", str(blocks_file)],
        "geth import",
    )
    for marker in ("Import error", "invalid", "mismatch", "BAD BLOCK"):
        if marker in output:
            tail = "\n".join(line for line in output.splitlines() if marker in line)
            raise GethError(f"geth import refused the chain: {tail[-2000:]}")
    return output


@contextlib.contextmanager
def serving(data_dir: Path, chain_id: int, executable: Path | None = None):
    """Serve the geth database in ``data_dir`` over JSON-RPC (no peers, no sealing) while
    the ``with`` block runs; yields the node (``rpc``, ``rpc_url``)."""
    executable = executable or require_geth()
    p2p, rpc, ws, auth = free_ports(4)
    node = GethNode(-1, data_dir, None, None, p2p, rpc, ws, auth)
    node.process = _spawn(
        [*node.command(executable, chain_id, sealing=False), "--maxpeers", "0"], node.log_file
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if not node.running:
                raise GethError(f"geth exited:\n{node.log_tail(15)}")
            try:
                node.rpc("eth_blockNumber", timeout=2)
                break
            except GethError:
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise GethError(f"geth did not answer JSON-RPC:\n{node.log_tail(15)}") from None
                time.sleep(0.2)
        yield node
    finally:
        if node.running:
            node.process.terminate()
            try:
                node.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()


def _spawn(command: list[str], log_file: Path) -> subprocess.Popen:
    """Start geth in its own session (Ctrl-C reaches only us), output appended to
    ``log_file``; it dies with this process."""
    with log_file.open("ab") as output:
        return subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class GethNode:
    """One geth process of the network; the keys stay in its directory."""

    index: int
    data_dir: Path
    account: Any = field(repr=False)  # the sealer key (eth_account LocalAccount)
    node_key: keys.PrivateKey = field(repr=False)
    p2p_port: int = 0
    rpc_port: int = 0
    ws_port: int = 0
    auth_port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_start: int = 0  # where the current process's output begins in the log

    @property
    def address(self) -> str:
        """The node's sealer account (a signer once the genesis or a vote makes it one)."""
        return self.account.address

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def enode(self) -> str:
        return f"enode://{self.node_key.public_key.to_bytes().hex()}@127.0.0.1:{self.p2p_port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "geth.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rpc(self, method: str, *params: Any, timeout: float = 30.0) -> Any:
        """A JSON-RPC call (no retries); raises ``GethError`` with the node's message on an
        error, ``OSError`` when the node does not answer within ``timeout``."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        request = urllib.request.Request(
            self.rpc_url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            response = json.loads(answer.read())
        if "error" in response:
            raise GethError(f"node {self.index}: {method}: {response['error'].get('message')}")
        return response["result"]

    def log_tail(self, lines: int = 10) -> str:
        """The last ``lines`` lines the current process wrote."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self.log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def command(self, executable: Path, chain_id: int, sealing: bool) -> list[str]:
        """geth's command line; ``sealing`` unlocks the sealer key and mines (a node that is
        not a signer waits until a vote makes it one)."""
        command = [
            str(executable),
            "--datadir", str(self.data_dir),
            "--networkid", str(chain_id),
            "--nat", "none",
            "--nodiscover",
            "--syncmode", "full",
            "--gcmode", "archive",
            "--cache", "64",
            "--http", "--http.addr", "127.0.0.1", "--http.port", str(self.rpc_port),
            "--http.api", "eth,net,web3,clique,txpool,admin,debug",
            "--ws", "--ws.addr", "127.0.0.1", "--ws.port", str(self.ws_port),
            "--ws.api", "eth,net,web3,clique,txpool",
            "--authrpc.addr", "127.0.0.1", "--authrpc.port", str(self.auth_port),
            "--ipcdisable",
            "--miner.gasprice", "1",
            "--verbosity", "3",
        ]  # fmt: skip
        config = self.data_dir / "config.toml"  # static peers, and P2P on 127.0.0.1 only
        command += ["--config", str(config)] if config.exists() else ["--port", str(self.p2p_port)]
        if (self.data_dir / "nodekey").exists():
            command += ["--nodekey", str(self.data_dir / "nodekey")]
        if sealing:
            command += [
                "--mine", "--miner.etherbase", self.address,
                "--unlock", self.address, "--password", str(self.data_dir / "password.txt"),
                "--allow-insecure-unlock",
            ]  # fmt: skip
        return command


_open_networks: list[GethNetwork] = []


@atexit.register
def _close_open_networks() -> None:
    for network in list(_open_networks):
        network.close()


class GethNetwork:
    """N unmodified geth 1.13.15 Clique sealers on 127.0.0.1 (see the module doc)."""

    def __init__(
        self,
        sealers: int = 3,
        period: int = 2,
        data_dir: Path | None = None,
        fund: Iterable[str] = (),
        chain_id: int = CHAIN_ID,
        executable: Path | None = None,
    ):
        if sealers < 1:
            raise ValueError("a Clique network needs at least one sealer")
        if data_dir is None:
            raise ValueError("GethNetwork needs a data directory")
        self.executable = executable or require_geth()
        self.period = period
        self.chain_id = chain_id
        self.data_dir = Path(data_dir)
        self.fund = [to_checksum_address(address) for address in fund]
        self.nodes: list[GethNode] = [self._new_node(i) for i in range(sealers)]
        self._genesis_sealers = [node.address for node in self.nodes]
        self.genesis = GenesisConfig(
            chain_id=chain_id,
            sealers=tuple(self._genesis_sealers),
            alloc={address: FUNDED_WEI for address in self.fund},
            period=period,
        ).to_geth()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> GethNetwork:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> GethNetwork:
        """Initialise and start every node; return once they peer and blocks are sealed."""
        _open_networks.append(self)
        try:
            for node in self.nodes:
                self._prepare(node)
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    for node in self.nodes:
                        self._spawn(node, sealing=True)
                    for node in self.nodes:
                        self._await_rpc(node)
                    break
                except PortTaken as error:  # another program took a port between pick and bind
                    if attempt == START_ATTEMPTS:
                        raise
                    log.info("%s; starting again on new ports", error)
                    self._new_ports()
            if len(self.nodes) > 1:
                self._wait(
                    lambda: all(self.peer_count(n.index) >= 1 for n in self.nodes),
                    "the nodes to peer",
                    START_TIMEOUT_S,
                )
            self.wait_for_blocks(1)
            self._write_network_file()
        except BaseException:
            self.close()
            raise
        log.info("geth network up: %d sealers, chain %d", len(self.nodes), self.chain_id)
        return self

    def add_node(self) -> int:
        """Start one more node (a follower with its own key, not a signer until voted in)
        that syncs the chain from the running nodes; returns its index."""
        node = self._new_node(len(self.nodes))
        self.nodes.append(node)
        self._prepare(node)
        for other in self.live_nodes():
            if other is not node:
                self._write_config(other)  # knows the newcomer on its next start
        self._spawn(node, sealing=True)  # sealing starts only once a vote makes it a signer
        self._await_rpc(node)
        for other in self.live_nodes():
            if other is not node:
                other.rpc("admin_addPeer", node.enode)
        self._write_network_file()
        return node.index

    def stop_node(self, index: int, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop node ``index`` (SIGTERM: geth writes its state; SIGKILL after ``timeout``)."""
        self._terminate(self.nodes[index], timeout)

    def kill_node(self, index: int) -> None:
        """``kill -9`` node ``index``."""
        node = self.nodes[index]
        if node.running:
            node.process.kill()
            node.process.wait(timeout=STOP_TIMEOUT_S)

    def restart_node(self, index: int) -> None:
        node = self.nodes[index]
        self._terminate(node, STOP_TIMEOUT_S)
        self._spawn(node, sealing=True)
        self._await_rpc(node)

    def close(self) -> None:
        for node in self.nodes:
            self._terminate(node, STOP_TIMEOUT_S)
        if self in _open_networks:
            _open_networks.remove(self)

    # ------------------------------------------------------------------- reading

    @property
    def rpc_urls(self) -> list[str]:
        return [node.rpc_url for node in self.nodes]

    @property
    def sealers(self) -> list[str]:
        """The genesis sealers (votes change the live set: ``signers``)."""
        return list(self._genesis_sealers)

    def live_nodes(self) -> list[GethNode]:
        return [node for node in self.nodes if node.running]

    def rpc(self, index: int, method: str, *params: Any) -> Any:
        return self.nodes[index].rpc(method, *params)

    def height(self, index: int) -> int:
        return int(self.rpc(index, "eth_blockNumber"), 16)

    def block(self, index: int, number: int | str = "latest") -> dict:
        tag = hex(number) if isinstance(number, int) else number
        return self.rpc(index, "eth_getBlockByNumber", tag, False)

    def peer_count(self, index: int) -> int:
        return int(self.rpc(index, "net_peerCount"), 16)

    def signers(self, index: int = 0) -> list[str]:
        """The live signer set as node ``index`` sees it (``clique_getSigners``)."""
        return [to_checksum_address(address) for address in self.rpc(index, "clique_getSigners")]

    def block_signers(self, index: int, numbers: Iterable[int]) -> dict[int, str]:
        """Who sealed each block (``clique_getSigner``)."""
        return {n: to_checksum_address(self.rpc(index, "clique_getSigner", hex(n))) for n in numbers}

    def vote(self, subject: int | str, authorize: bool) -> None:
        """Every running node proposes to add (True) or drop (False) ``subject`` (a node
        index or an address); Clique applies it once more than half of the signers have
        sealed a block with that vote."""
        address = self.nodes[subject].address if isinstance(subject, int) else to_checksum_address(subject)
        for node in self.live_nodes():  # a non-signer's proposal is never sealed; a signer may drop itself
            node.rpc("clique_propose", address, authorize)

    def wait_for_signers(
        self, predicate: Callable[[set[str]], bool], what: str, timeout: float | None = None
    ) -> set[str]:
        index = self.live_nodes()[0].index
        self._wait(lambda: predicate(set(self.signers(index))), what, timeout or self._blocks_timeout(12))
        return set(self.signers(index))

    def wait_for_blocks(self, count: int, index: int | None = None, timeout: float | None = None) -> int:
        """Wait until node ``index`` (default: the first running) has ``count`` more blocks."""
        index = self.live_nodes()[0].index if index is None else index
        target = self.height(index) + count
        self._wait(lambda: self.height(index) >= target, f"node {index} to reach block {target}",
                   timeout or self._blocks_timeout(count))  # fmt: skip
        return self.height(index)

    def wait_until_synced(self, timeout: float | None = None) -> int:
        """Wait until every running node has the same head; returns its number."""

        def same_head() -> bool:
            heads = {
                (int(b["number"], 16), b["hash"]) for b in (self.block(n.index) for n in self.live_nodes())
            }
            return len(heads) == 1

        self._wait(same_head, "the running nodes to agree on the head", timeout or self._blocks_timeout(15))
        return self.height(self.live_nodes()[0].index)

    # ---------------------------------------------------------------- internals

    def _new_node(self, index: int) -> GethNode:
        p2p, rpc, ws, auth = free_ports(4)
        return GethNode(
            index=index,
            data_dir=self.data_dir / f"node-{index}",
            account=Account.create(),
            node_key=keys.PrivateKey(os.urandom(32)),
            p2p_port=p2p,
            rpc_port=rpc,
            ws_port=ws,
            auth_port=auth,
        )

    def _new_ports(self) -> None:
        for node in self.nodes:
            self._terminate(node, STOP_TIMEOUT_S)
        for node in self.nodes:
            node.p2p_port, node.rpc_port, node.ws_port, node.auth_port = free_ports(4)
        for node in self.nodes:
            self._write_config(node)

    def _prepare(self, node: GethNode) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        _write_private(node.data_dir / "nodekey", node.node_key.to_bytes().hex())
        password = os.urandom(16).hex()
        _write_private(node.data_dir / "password.txt", password)
        keystore = Account.encrypt(node.account.key, password, kdf="pbkdf2", iterations=KEYSTORE_ITERATIONS)
        (node.data_dir / "keystore").mkdir(exist_ok=True)
        _write_private(
            node.data_dir / "keystore" / f"sealer-{node.address[2:].lower()}.json", json.dumps(keystore)
        )
        self._write_config(node)
        geth_init(self.executable, node.data_dir, self.genesis)

    def _write_config(self, node: GethNode) -> None:
        peers = ", ".join(json.dumps(other.enode) for other in self.nodes if other is not node)
        (node.data_dir / "config.toml").write_text(
            "[Node.P2P]\n"
            f"StaticNodes = [{peers}]\n"
            f"TrustedNodes = [{peers}]\n"
            f'ListenAddr = "127.0.0.1:{node.p2p_port}"\n'
        )

    def _spawn(self, node: GethNode, sealing: bool) -> None:
        node.log_start = node.log_file.stat().st_size if node.log_file.exists() else 0
        node.process = _spawn(node.command(self.executable, self.chain_id, sealing), node.log_file)
        log.debug("geth node %d started (pid %d, RPC %s)", node.index, node.process.pid, node.rpc_url)

    def _await_rpc(self, node: GethNode) -> None:
        def answers() -> bool:
            tail = node.log_tail(15)
            if not node.running or "Fatal:" in tail:  # geth may linger after a fatal start error
                self._terminate(node, STOP_TIMEOUT_S)
                kind = PortTaken if "address already in use" in tail else GethError
                raise kind(f"geth node {node.index} did not start:\n{tail}")
            try:
                node.rpc("eth_blockNumber", timeout=2)
            except Exception:
                return False
            return True

        self._wait(answers, f"node {node.index} to answer JSON-RPC", START_TIMEOUT_S)

    def _terminate(self, node: GethNode, timeout: float) -> None:
        if not node.running:
            return
        node.process.terminate()
        try:
            node.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=timeout)

    def _blocks_timeout(self, blocks: int) -> float:
        return 30.0 + 3.0 * self.period * blocks

    def _wait(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except GethError:
                raise
            except Exception:
                pass
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- node {n.index}:\n{n.log_tail(6)}" for n in self.nodes)
                raise GethError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
            time.sleep(0.2)

    def _write_network_file(self) -> None:
        description = {
            "client": f"geth {GETH_VERSION}",
            "chain_id": self.chain_id,
            "period": self.period,
            "nodes": [
                {
                    "index": n.index,
                    "rpc_url": n.rpc_url,
                    "ws_url": n.ws_url,
                    "enode": n.enode,
                    "sealer": n.address,
                }
                for n in self.nodes
            ],
        }
        (self.data_dir / "network.json").write_text(json.dumps(description, indent=2))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (keys, passwords)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
