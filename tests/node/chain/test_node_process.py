"""``lec node start`` as a real process: Foundry's cast against it, contracts used over
HTTP, and kill -9 with nothing lost."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contracts import clock
from contracts.accounts import Keyring
from contracts.client import ChainClient
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import Reading
from contracts.paths import NODE_MODULES, PROJECT_ROOT
from contracts.registry import Meter, Role
from node.chain.genesis import GenesisConfig
from node.cli.main import main as lec
from node.geth import geth_executable, import_chain, serving
from node.ports import free_port
from tests.node.chain.conftest import rpc
from tests.processes import interrupt, kill_hard

CAST = NODE_MODULES / ".bin" / "cast"


class NodeProcess:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = data_dir.parent / f"node-{self.port}.log"

    def start(self) -> NodeProcess:
        command = [
            sys.executable,
            "-m",
            "node.cli.main",
            "node",
            "start",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--ws-port",
            "0",
            "--period",
            "1",
        ]
        self.process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 240  # a limit for a broken node, not a speed test
        while time.monotonic() < deadline:
            try:
                if "result" in rpc(self.url, "eth_blockNumber"):
                    return self
            except OSError:
                pass
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError(f"node did not answer: {self.log.read_text()}")

    def kill(self) -> None:
        kill_hard(self.process)

    def stop(self) -> None:
        interrupt(self.process)


@pytest.fixture
def node_process(tmp_path):
    node = NodeProcess(tmp_path / "chain").start()
    yield node
    node.stop()


def cast(*arguments: str) -> str:
    completed = subprocess.run(
        [str(CAST), *arguments], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


def test_cast_block_number_send_and_call(node_process, artifacts):
    url = node_process.url
    keyring = Keyring.load_or_create(node_process.data_dir)
    client = ChainClient.connect(url, artifacts)
    community = Community(client, deploy_community(client, keyring["admin"], CommunityConfig()))
    assert int(cast("block-number", "--rpc-url", url)) >= community.deployment.block >= 1
    admin_key = keyring["admin"].account.key.hex()
    token, alice = community.token.contract.address, keyring["faucet"].address
    cast("send", token, "mint(address,uint256)", alice, "5000", "--private-key", admin_key, "--rpc-url", url)
    assert cast("call", token, "balanceOf(address)(uint256)", alice, "--rpc-url", url).split()[0] == "5000"
    assert community.token.balance_units(alice) == 5000
    # A refused call comes back from cast as an error naming the custom error's selector.
    refused = subprocess.run(
        [
            str(CAST),
            "send",
            token,
            "mint(address,uint256)",
            alice,
            "1",
            "--private-key",
            keyring["faucet"].account.key.hex(),
            "--rpc-url",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0 and "revert" in refused.stderr.lower()


def test_cast_alone_verifies_a_recorded_reading(node_process, artifacts):
    """An outsider with nothing but cast: the batch event of a recordReadings transaction,
    decoded by the ledger's own decodeReadings, shows the reading the gateway sent."""
    url = node_process.url
    keyring = Keyring.load_or_create(node_process.data_dir)
    client = ChainClient.connect(url, artifacts)
    community = Community(client, deploy_community(client, keyring["admin"], CommunityConfig()))
    admin, member = keyring["admin"], keyring["faucet"].address
    community.registry.grant_role(admin, Role.GATEWAY, keyring["gateway"].address)
    community.registry.add_member(admin, member, "member")
    community.registry.register_meter(admin, Meter("M7", 2, member, member))
    minute = clock.minute_of(client.latest_timestamp()) - 1
    sent = Reading("M7", clock.minute_start(minute), -4.25, 0.5, 1.031, -2.5)
    receipt = community.ledger.record_readings(keyring["gateway"], [sent])
    logs = json.loads(
        cast("receipt", "--json", "0x" + bytes(receipt["transactionHash"]).hex(), "--rpc-url", url)
    )
    packed = cast("abi-decode", "f()(bytes)", logs["logs"][0]["data"])
    ledger = community.ledger.contract.address
    decoded = cast("call", ledger, "decodeReadings(bytes)((bytes32,uint32,int32,int32,uint32,int32)[])",
                   packed, "--rpc-url", url)  # fmt: skip
    decoded = re.sub(r" \[[^\]]*\]", "", decoded)  # cast's "[2.993e7]" annotations
    assert f"{minute}, -4250, 500, 1031000, -2500000" in decoded, decoded
    assert "0x" + bytes(sent.chain[0]).hex() in decoded


def test_kill_9_and_restart_loses_nothing(tmp_path, artifacts):
    node = NodeProcess(tmp_path / "chain").start()
    keyring = Keyring.load_or_create(node.data_dir)
    client = ChainClient.connect(node.url, artifacts)
    deployment = deploy_community(client, keyring["admin"], CommunityConfig())
    deployment.save(node.data_dir)
    community = Community(client, deployment)
    community.registry.grant_role(keyring["admin"], Role.GATEWAY, keyring["gateway"].address)
    community.registry.add_member(keyring["admin"], keyring["faucet"].address, "member")
    community.registry.register_meter(
        keyring["admin"], Meter("M1", 1, keyring["faucet"].address, keyring["faucet"].address)
    )
    minute = clock.minute_of(client.latest_timestamp()) - 1
    receipt = community.ledger.record_readings(
        keyring["gateway"], [Reading("M1", clock.minute_start(minute), 3.0, 0.2, 1.01, 0.5)]
    )
    seen = client.w3.eth.get_block("latest")
    node.kill()

    restarted = NodeProcess(node.data_dir).start()  # on a new port: nothing waits for the old one
    try:
        client = ChainClient.connect(restarted.url, artifacts)
        again = client.w3.eth.get_block(seen["number"])
        assert (again["hash"], again["stateRoot"]) == (seen["hash"], seen["stateRoot"])
        assert client.w3.eth.get_transaction_receipt(receipt["transactionHash"])["status"] == 1
        community = Community(client, json_deployment(node.data_dir))
        assert community.ledger.has_reading("M1", clock.minute_start(minute))
        slot = community.clock.slot_of_minute(minute)
        assert community.ledger.slot_energy("M1", slot).active_kwh == pytest.approx(3.0 / 60)
        head = client.w3.eth.block_number
        deadline = time.monotonic() + 120  # ends at the first block: a limit for a broken node only
        while client.w3.eth.block_number <= head and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.w3.eth.block_number > head, "the restarted node seals on top of the old head"
        last = client.w3.eth.get_block("latest")
        exported = tmp_path / "chain.rlp"  # read while the node runs (SQLite WAL)
        export = ["node", "export", "--data-dir", str(node.data_dir), "--out", str(exported)]
        assert lec([*export, "--to", str(last["number"])]) == 0
    finally:
        restarted.stop()
    if geth_executable() is None and shutil.which("go") is None:
        return  # no geth and no Go to build it: the embedded node's own checks above must do
    genesis = GenesisConfig.load(node.data_dir)
    import_chain(exported, genesis.to_geth(), tmp_path / "geth")  # re-validated across the kill
    with serving(tmp_path / "geth", genesis.chain_id) as geth:
        assert (
            geth.rpc("eth_getBlockByNumber", hex(last["number"]), False)["hash"] == last["hash"].to_0x_hex()
        )


def json_deployment(data_dir: Path):
    from contracts.deploy import Deployment

    deployment = Deployment.load(data_dir)
    assert (
        deployment is not None and json.loads((data_dir / "deployment.json").read_text())["chain_id"] == 4242
    )
    return deployment


def test_bad_options_are_clear_errors(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli.main",
            "node",
            "start",
            "--data-dir",
            str(tmp_path),
            "--period",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2 and "--period must be at least 1 second" in completed.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "node.cli.main",
                "node",
                "start",
                "--data-dir",
                str(tmp_path / "x"),
                "--port",
                str(busy.getsockname()[1]),
            ],
            capture_output=True,
            text=True,
            cwd=PROJECT_ROOT,
            timeout=60,
            check=False,
        )
    finally:
        busy.close()
    assert completed.returncode == 2 and "cannot listen" in completed.stderr


def test_contracts_deploy_through_any_rpc_url_is_recorded_and_reused(node_process, tmp_path):
    data_dir = tmp_path / "operator"
    data_dir.mkdir()
    (data_dir / "keys.json").write_text((node_process.data_dir / "keys.json").read_text())  # funded admin
    command = [
        sys.executable,
        "-m",
        "node.cli.main",
        "-q",
        "contracts",
        "deploy",
        "--rpc-url",
        node_process.url,
        "--data-dir",
        str(data_dir),
    ]
    first = subprocess.run(
        command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, check=False
    )
    assert first.returncode == 0, first.stderr
    assert "deployed on chain 4242" in first.stdout
    recorded = json.loads((data_dir / "deployment.json").read_text())["addresses"]
    second = subprocess.run(
        command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, check=False
    )
    assert "already deployed" in second.stdout
    assert json.loads((data_dir / "deployment.json").read_text())["addresses"] == recorded


def test_pending_transactions_survive_kill_9(tmp_path):
    node = NodeProcess(tmp_path / "chain").start()
    faucet = Keyring.load_or_create(node.data_dir)["faucet"]
    nonce = int(rpc(node.url, "eth_getTransactionCount", faucet.address, "latest")["result"], 16)

    def transfer(nonce_value: int) -> str:
        transaction = {
            "to": "0x" + "22" * 20, "value": 5, "gas": 21_000, "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9, "nonce": nonce_value, "chainId": 4242, "type": 2,
        }  # fmt: skip
        return "0x" + bytes(faucet.account.sign_transaction(transaction).raw_transaction).hex()

    waiting = rpc(node.url, "eth_sendRawTransaction", transfer(nonce + 1))["result"]  # waits for `nonce`
    node.kill()

    restarted = NodeProcess(node.data_dir).start()
    try:
        queued = rpc(restarted.url, "txpool_content")["result"]["queued"]
        assert queued[faucet.address][str(nonce + 1)]["hash"] == waiting, "the pending transaction was lost"
        first = rpc(restarted.url, "eth_sendRawTransaction", transfer(nonce))["result"]
        deadline = time.monotonic() + 120  # a limit for a broken node only
        while rpc(restarted.url, "eth_getTransactionReceipt", waiting)["result"] is None:
            assert time.monotonic() < deadline, "the restored transaction was never mined"
            time.sleep(0.2)
        assert rpc(restarted.url, "eth_getTransactionReceipt", first)["result"]["status"] == "0x1"
        assert rpc(restarted.url, "txpool_content")["result"] == {"pending": {}, "queued": {}}
    finally:
        restarted.stop()
