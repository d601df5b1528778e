"""An unmodified geth 1.13.15 re-validates the embedded node's chain.

The embedded node runs a workload with every transaction type, a reverted and an
out-of-gas transaction, a zero-value transfer to a fresh account (EIP-161), empty blocks,
the community contracts, and Clique votes that add and remove a second sealer.
``lec node export`` writes the chain; ``geth init`` + ``geth import`` re-execute it, which
checks every seal, state root, receipt root and bloom; geth then serves it, and every
block hash and the state agree with the embedded node. A block geth refuses fails the
import with geth's reason.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import rlp
from eth.consensus.clique._utils import sign_block_header
from eth_account import Account
from eth_keys import keys
from web3 import Web3

from contracts.client import ChainClient
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.registry import Role
from node.chain.consensus import state_at
from node.chain.node import PoaNode, link
from node.chain.rpc import JsonRpc
from node.cli.main import main as lec
from node.embedded import open_embedded_chain
from node.geth import GethError, geth_executable, import_chain, serving
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        geth_executable() is None and shutil.which("go") is None,
        reason="geth 1.13.15 is missing and there is no Go toolchain to build it",
    ),
]

REVERTING_CONTRACT = bytes.fromhex("6005600c60003960056000f3" + "60006000fd")  # runtime: revert(0, 0)


def send(w3: Web3, account, **fields) -> dict:
    """Sign ``fields`` (type chosen by the fields given) and wait for the receipt."""
    fields.setdefault("nonce", w3.eth.get_transaction_count(account.address, "pending"))
    fields.setdefault("chainId", w3.eth.chain_id)
    fields.setdefault("value", 0)
    signed = account.sign_transaction(fields)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120, poll_latency=0.05)


def run_workload(chain, artifacts) -> dict:
    """Every transaction type, failures, EIP-161 touches and the community contracts."""
    client = chain.client(artifacts)
    w3 = client.w3
    faucet = chain.keyring["faucet"].account
    fresh = Account.create().address
    fee = {"maxFeePerGas": 10 * 10**9, "maxPriorityFeePerGas": 10**9}
    receipts = {
        "legacy": send(w3, faucet, to=fresh, value=10**18, gas=21_000, gasPrice=2 * 10**9),
        "access list": send(
            w3,
            faucet,
            to=fresh,
            value=1,
            gas=30_000,
            gasPrice=2 * 10**9,
            accessList=[{"address": fresh, "storageKeys": ["0x" + "00" * 32]}],
        ),
        "eip-1559": send(w3, faucet, to=fresh, value=2, gas=21_000, **fee),
        "zero-value to a new account": send(w3, faucet, to=Account.create().address, gas=21_000, **fee),
        "legacy creation": send(w3, faucet, data=REVERTING_CONTRACT, gas=100_000, gasPrice=2 * 10**9),
    }
    reverting = receipts["legacy creation"]["contractAddress"]
    receipts["reverted"] = send(w3, faucet, to=reverting, gas=50_000, **fee)
    receipts["out of gas"] = send(w3, faucet, data=REVERTING_CONTRACT, gas=53_300, **fee)
    assert receipts["reverted"]["status"] == 0 and receipts["out of gas"]["status"] == 0
    assert all(r["status"] == 1 for name, r in receipts.items() if name not in ("reverted", "out of gas"))
    admin = chain.keyring["admin"]
    deployment = deploy_community(client, admin, CommunityConfig(name="geth import"))
    community = Community(client, deployment)
    community.registry.grant_role(admin, Role.DSO, chain.keyring["dso"].address)
    return {"fresh": fresh, "reverting": reverting, "deployment": deployment, "receipts": receipts}


def test_geth_imports_the_embedded_chain_with_every_transaction_type_and_votes(tmp_path, artifacts):
    chain = open_embedded_chain(tmp_path / "node", period=1)
    second = PoaNode(chain.node.genesis, None, keys.PrivateKey(os.urandom(32)), name="second")
    link(chain.node, second)
    second.start()
    try:
        workload = run_workload(chain, artifacts)
        # Clique votes: the second node is voted in, seals, and is voted out again.
        newcomer = second.sealer
        chain.node.propose(Web3.to_checksum_address(newcomer), True)
        wait_for(lambda: newcomer in chain.node.signers(), "the vote that adds the second sealer")
        start = chain.node.head.block_number
        wait_for(lambda: chain.node.head.block_number >= start + 3, "blocks by two sealers")
        for node in (chain.node, second):
            node.propose(Web3.to_checksum_address(newcomer), False)
        wait_for(lambda: newcomer not in chain.node.signers(), "the vote that drops it")
        wait_for(lambda: chain.node.head.block_number >= start + 6, "blocks after the drop")
    finally:
        second.stop()
        chain.stop()
    sealers = {
        chain.node.chain.get_canonical_block_header_by_number(n).coinbase
        for n in range(1, chain.node.head.block_number + 1)
    }
    assert newcomer in sealers, "no vote was cast in a block"

    blocks, genesis = tmp_path / "chain.rlp", tmp_path / "genesis.geth.json"
    node_dir = str(tmp_path / "node")
    assert (
        lec(["node", "export", "--data-dir", node_dir, "--out", str(blocks), "--genesis-out", str(genesis)])
        == 0
    )
    import_chain(blocks, json.loads(genesis.read_text()), tmp_path / "geth")

    reopened = PoaNode(chain.node.genesis, tmp_path / "node", name="reopened")
    try:
        with serving(tmp_path / "geth", chain.node.genesis.chain_id) as geth:
            w3 = ChainClient.connect(geth.rpc_url, artifacts).w3
            head = reopened.head.block_number
            assert w3.eth.block_number == head
            for number in range(head + 1):
                ours = reopened.chain.get_canonical_block_header_by_number(number)
                theirs = w3.eth.get_block(number)
                assert bytes(theirs["hash"]) == ours.hash, f"block {number} differs"
            keyring = chain.keyring
            for address in (workload["fresh"], keyring["faucet"].address, keyring["admin"].address):
                assert w3.eth.get_balance(address) == state_at(reopened.chain, reopened.head).get_balance(
                    bytes.fromhex(address[2:])
                )
            registry = w3.eth.contract(
                address=workload["deployment"].addresses["CommunityRegistry"],
                abi=artifacts["CommunityRegistry"].abi,
            )
            dso_role = registry.functions.DSO_ROLE().call()
            assert registry.functions.hasRole(dso_role, keyring["dso"].address).call()
            proofs = JsonRpc(reopened)  # EIP-1186 proofs: the embedded node's and geth's agree
            registry_address = workload["deployment"].addresses["CommunityRegistry"]
            for address, slots in (
                (keyring["faucet"].address, []),
                (registry_address, ["0x0", "0x1", "0x2", "0x" + "ab" * 32]),
                (Account.create().address, ["0x0"]),  # an account that does not exist
            ):
                request = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "eth_getProof",
                    "params": [address, slots, hex(head)],
                }
                ours = json.loads(proofs.handle(json.dumps(request)))["result"]
                theirs = geth.rpc("eth_getProof", address, slots, hex(head))
                assert ours == theirs, f"eth_getProof of {address} differs from geth's"
            for name, receipt in workload["receipts"].items():
                assert (
                    w3.eth.get_transaction_receipt(receipt["transactionHash"])["status"] == receipt["status"]
                ), name
    finally:
        reopened.stop()


def test_geth_refuses_a_block_whose_state_root_is_wrong_even_when_sealed(tmp_path):
    chain = open_embedded_chain(tmp_path / "node", period=1)
    try:
        wait_for(lambda: chain.node.head.block_number >= 2, "two blocks")
        with chain.node.lock:
            first, second = (chain.node.chain.get_canonical_block_by_number(n) for n in (1, 2))
    finally:
        chain.stop()
    sealer = keys.PrivateKey(bytes(chain.keyring["sealer"].account.key))
    forged_header = sign_block_header(second.header.copy(state_root=b"\x42" * 32), sealer)
    blocks = tmp_path / "chain.rlp"
    blocks.write_bytes(rlp.encode(first) + rlp.encode(second.copy(header=forged_header)))
    with pytest.raises(GethError, match="invalid merkle root"):
        import_chain(blocks, chain.node.genesis.to_geth(), tmp_path / "geth")


def test_export_refuses_bad_input_with_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "chain.rlp")
    assert lec(["node", "export", "--data-dir", str(tmp_path / "missing"), "--out", out]) == 2
    assert "holds no chain" in capsys.readouterr().err
    chain = open_embedded_chain(tmp_path / "node", period=1)
    try:
        wait_for(lambda: chain.node.head.block_number >= 1, "a block")
        assert (
            lec(["node", "export", "--data-dir", str(tmp_path / "node"), "--out", out, "--to", "999999"]) == 2
        )
        assert "cannot export blocks 1..999999" in capsys.readouterr().err
    finally:
        chain.stop()
    assert not (tmp_path / "chain.rlp").exists(), "nothing is written on an error"
