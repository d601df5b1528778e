"""JSON-RPC over HTTP: contracts deployed and used through the chain client, every bad
transaction refused with the error a client expects, malformed requests answered."""

from __future__ import annotations

import json
import time

import pytest
import requests
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3

from contracts import units
from contracts.client import ChainClient, ChainError
from contracts.community import Community
from contracts.deploy import CommunityConfig, deploy_community
from contracts.ledger import Reading, unpack_readings
from contracts.registry import Meter, Role
from node.chain import rpc as rpc_module
from node.chain.rpc import JsonRpc
from node.embedded import open_embedded_chain
from tests.node.chain.conftest import post, rpc
from tests.reverts import expect_revert


@pytest.fixture(scope="module")
def funded(served):
    chain, _ = served
    return chain.keyring["faucet"]


def signed_transfer(account, url, **overrides):
    chain_id = int(rpc(url, "eth_chainId")["result"], 16)
    nonce = int(rpc(url, "eth_getTransactionCount", account.address, "pending")["result"], 16)
    transaction = {
        "to": "0x" + "11" * 20,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "nonce": nonce,
        "chainId": chain_id,
        "type": 2,
        **overrides,
    }
    transaction = {key: value for key, value in transaction.items() if value is not None}
    return "0x" + bytes(account.sign_transaction(transaction).raw_transaction).hex()


def test_community_contracts_are_deployed_and_used_over_http(served, artifacts):
    chain, url = served
    client = ChainClient.connect(url, artifacts)
    keyring = chain.keyring
    community = Community(client, deploy_community(client, keyring["admin"], CommunityConfig()))
    admin = keyring["admin"]
    community.registry.grant_role(admin, Role.GATEWAY, keyring["gateway"].address)
    community.registry.add_member(admin, keyring["faucet"].address, "member")
    community.registry.register_meter(
        admin, Meter("M1", 4, keyring["faucet"].address, keyring["faucet"].address)
    )
    minute = client.w3.eth.get_block("latest")["timestamp"] // 60 - 1
    receipt = community.ledger.record_readings(
        keyring["gateway"], [Reading("M1", minute * 60, 2.5, 0.1, 0.97, -3)]
    )
    assert receipt["status"] == 1
    assert community.ledger.has_reading("M1", minute * 60)
    expect_revert(
        "DuplicateReading",
        lambda: community.ledger.record_readings(
            keyring["gateway"], [Reading("M1", minute * 60, 1, 0, 1, 0)]
        ),
    )
    logs = client.w3.eth.get_logs({"address": community.ledger.contract.address, "fromBlock": 0})
    assert len(logs) == 1
    event = community.ledger.contract.events.ReadingsRecorded().process_log(logs[0])
    assert unpack_readings(event["args"]["readings"])[0][:3] == (units.encode_id("M1"), minute, 2500)
    by_topic = client.w3.eth.get_logs({"fromBlock": 0, "topics": [logs[0]["topics"][0]]})
    assert by_topic == logs
    meter_topic = "0x" + units.encode_id("M1").hex()
    registered = client.w3.eth.get_logs({"fromBlock": 0, "topics": [None, meter_topic]})
    assert [entry["address"] for entry in registered] == [community.registry.contract.address]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nonce": 0}, "nonce too low"),
        ({"chainId": 1}, "invalid chain id"),
        ({"gas": 20_000}, "intrinsic gas too low"),
        ({"gas": 40_000_000}, "exceeds block gas limit"),
        ({"maxFeePerGas": 1, "maxPriorityFeePerGas": 1}, "less than block base fee"),
        ({"maxPriorityFeePerGas": 10**11}, "max priority fee per gas higher than max fee per gas"),
    ],
)
def test_bad_transactions_get_the_error_a_client_expects(served, funded, overrides, message):
    chain, url = served
    if "nonce" in overrides:  # make sure the funded account has used nonce 0
        rpc(url, "eth_sendRawTransaction", signed_transfer(funded.account, url))
        wait_receipt_count = 0
        while int(rpc(url, "eth_getTransactionCount", funded.address)["result"], 16) == 0:
            wait_receipt_count += 1
            chain.node.head_changed  # noqa: B018
            import time

            time.sleep(0.1)
    answer = rpc(url, "eth_sendRawTransaction", signed_transfer(funded.account, url, **overrides))
    assert answer["error"]["code"] == -32000
    assert message in answer["error"]["message"]


def test_insufficient_funds_and_bad_signatures_are_refused(served):
    _, url = served
    pauper = Account.create()
    answer = rpc(url, "eth_sendRawTransaction", signed_transfer(pauper, url))
    assert "insufficient funds for gas * price + value" in answer["error"]["message"]
    raw = bytearray(bytes.fromhex(signed_transfer(pauper, url)[2:]))
    raw[-5] ^= 0xFF  # corrupt the signature's s value
    answer = rpc(url, "eth_sendRawTransaction", "0x" + raw.hex())
    assert answer["error"]["code"] == -32000
    assert answer["error"]["message"].startswith(("invalid sender", "rlp:", "insufficient funds"))
    answer = rpc(url, "eth_sendRawTransaction", "0xdeadbeef")
    assert answer["error"]["code"] == -32000 and "rlp" in answer["error"]["message"]


def test_a_known_transaction_and_underpriced_replacement_are_refused(served, funded):
    _, url = served
    raw = signed_transfer(funded.account, url, nonce=10_000)  # a future nonce waits in the pool
    assert "result" in rpc(url, "eth_sendRawTransaction", raw)
    assert rpc(url, "eth_sendRawTransaction", raw)["error"]["message"] == "already known"
    cheaper = signed_transfer(funded.account, url, nonce=10_000, value=2)
    assert (
        rpc(url, "eth_sendRawTransaction", cheaper)["error"]["message"]
        == "replacement transaction underpriced"
    )


def test_client_raises_typed_errors_for_refused_transactions(served, artifacts):
    _, url = served
    client = ChainClient.connect(url, artifacts)
    with pytest.raises(ChainError, match="insufficient funds"):
        from contracts.client import Signer

        client.transfer_ether(Signer.generate("pauper"), "0x" + "22" * 20, 1)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", -32700),
        (b"[]", -32600),
        ({"jsonrpc": "1.0", "id": 1, "method": "eth_blockNumber"}, -32600),
        ({"jsonrpc": "2.0", "id": 1, "method": 7}, -32600),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_doesNotExist", "params": []}, -32601),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": ["0x12"]}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": "0x12"}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["0xzz", False]}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"to": "0x12"}]}, -32602),
        ({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": [1, 2]}, -32602),
        (b"[" * 80_000, -32700),  # crashed the process before (py_ecc's recursion limit)
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": ['
            + b"[" * 65
            + b"]" * 66
            + b"}",
            -32700,
        ),
    ],
)
def test_malformed_requests_get_json_rpc_errors_and_the_node_lives_on(served, payload, code):
    _, url = served
    answer = post(url, payload)
    assert answer["error"]["code"] == code, answer
    assert isinstance(rpc(url, "eth_blockNumber")["result"], str), "the node still answers"


def test_batches_and_notifications(served):
    _, url = served
    answer = post(
        url,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []},  # notification: no answer
            {"jsonrpc": "2.0", "id": 3, "method": "nope", "params": []},
        ],
    )
    assert [item["id"] for item in answer] == [1, 3]
    assert answer[0]["result"] == hex(4242) and answer[1]["error"]["code"] == -32601


def test_clique_methods(served):
    chain, url = served
    assert rpc(url, "clique_getSigners")["result"] == [chain.keyring["sealer"].address]
    newcomer = "0x" + "ab" * 20
    assert rpc(url, "clique_propose", newcomer, True)["result"] is None
    assert list(rpc(url, "clique_proposals")["result"].values()) == [True]
    assert rpc(url, "clique_discard", newcomer)["result"] is None
    assert rpc(url, "clique_propose", newcomer, "yes")["error"]["code"] == -32602


def test_call_reverts_carry_the_custom_error_data(served, artifacts):
    chain, url = served
    client = ChainClient.connect(url, artifacts)
    registry = deploy_community(client, chain.keyring["admin"], CommunityConfig(name="other"))
    contract = client.contract("CommunityRegistry", registry.addresses["CommunityRegistry"])
    call = contract.functions.meter(units.encode_id("NOPE"))
    answer = rpc(url, "eth_call", {"to": contract.address, "data": call._encode_transaction_data()}, "latest")
    assert answer["error"]["code"] == 3 and answer["error"]["message"] == "execution reverted"
    assert answer["error"]["data"].startswith("0x") and len(answer["error"]["data"]) == 2 + 2 * 36


def test_stopping_the_server_ends_kept_alive_connections():
    """A client holding an HTTP/1.1 connection open gets no answer once the server stops."""
    chain = open_embedded_chain(None, period=1)
    try:
        w3 = Web3(Web3.HTTPProvider(chain.serve("127.0.0.1", 0)))
        assert w3.eth.block_number >= 0  # opens a kept-alive connection
        chain.server.stop()
        with pytest.raises(requests.ConnectionError):
            _ = w3.eth.block_number
    finally:
        chain.stop()


def test_a_legacy_transaction_is_served_as_signed_so_a_client_can_recompute_hash_and_sender(served, funded):
    import rlp
    from eth_utils import keccak

    _, url = served
    signer = funded.account
    raw = signed_transfer(
        signer, url, gasPrice=10**10, type=None, maxFeePerGas=None, maxPriorityFeePerGas=None
    )
    tx_hash = rpc(url, "eth_sendRawTransaction", raw)["result"]
    served_tx = rpc(url, "eth_getTransactionByHash", tx_hash)["result"]
    chain_id = int(rpc(url, "eth_chainId")["result"], 16)
    assert served_tx["type"] == "0x0" and "maxFeePerGas" not in served_tx and "yParity" not in served_tx
    assert int(served_tx["v"], 16) in (2 * chain_id + 35, 2 * chain_id + 36)  # EIP-155
    assert int(served_tx["chainId"], 16) == chain_id
    fields = [int(served_tx[k], 16) for k in ("nonce", "gasPrice", "gas")]
    fields += [bytes.fromhex(served_tx["to"][2:]), int(served_tx["value"], 16)]
    fields += [bytes.fromhex(served_tx["input"][2:]), *(int(served_tx[k], 16) for k in ("v", "r", "s"))]
    assert "0x" + keccak(rlp.encode(fields)).hex() == tx_hash
    assert Account.recover_transaction(rlp.encode(fields)) == served_tx["from"] == signer.address


def test_a_filter_nobody_polls_for_five_minutes_is_uninstalled():
    from node.chain.rpc import FILTER_TIMEOUT_S, JsonRpc

    chain = open_embedded_chain(None, period=1)
    now = [1_000.0]
    try:
        api = JsonRpc(chain.node, clock=lambda: now[0])
        kept, dropped = api.rpc_eth_newBlockFilter([]), api.rpc_eth_newBlockFilter([])
        now[0] += FILTER_TIMEOUT_S - 1
        api.rpc_eth_getFilterChanges([kept])  # polling keeps a filter alive
        now[0] += 2
        api.rpc_eth_getFilterChanges([kept])
        with pytest.raises(Exception, match="filter not found"):
            api.rpc_eth_getFilterChanges([dropped])
    finally:
        chain.stop()


def test_eth_call_applies_state_overrides_like_geth(served):
    _, url = served
    target = "0x" + "ab" * 20
    returns_slot_0 = "0x60005460005260206000f3"  # SLOAD(0), return it
    returns_own_balance = "0x303160005260206000f3"  # BALANCE(ADDRESS), return it
    call = {"to": target, "data": "0x"}
    word = "0x" + "00" * 31 + "2a"
    override = {target: {"code": returns_slot_0, "state": {"0x" + "00" * 32: word}}}
    assert int(rpc(url, "eth_call", call, "latest", override)["result"], 16) == 42
    override = {target: {"code": returns_slot_0, "stateDiff": {"0x" + "00" * 32: word}}}
    assert int(rpc(url, "eth_call", call, "latest", override)["result"], 16) == 42
    override = {target: {"code": returns_own_balance, "balance": "0x1234"}}
    assert int(rpc(url, "eth_call", call, "latest", override)["result"], 16) == 0x1234
    assert rpc(url, "eth_call", call, "latest")["result"] == "0x"  # nothing stayed behind
    for bad in ({target: {"codes": "0x00"}}, {target: "0x00"}, ["0x00"]):
        answer = rpc(url, "eth_call", call, "latest", bad)
        assert answer["error"]["code"] == -32602, answer


def test_eth_get_logs_lets_go_of_the_node_between_blocks(served):
    """A long log query must not stop block production: the node's lock is taken per block."""
    chain, url = served
    head = int(rpc(url, "eth_blockNumber")["result"], 16)
    real_lock, entries = chain.node.lock, []

    class CountingLock:
        def __enter__(self):
            real_lock.acquire()
            entries.append(1)

        def __exit__(self, *exc):
            real_lock.release()

    chain.node.lock = CountingLock()
    try:
        addresses = ["0x" + f"{i:040x}" for i in range(1_000)]
        answer = rpc(url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(head), "address": addresses})
    finally:
        chain.node.lock = real_lock
    assert answer["result"] == []
    assert len(entries) >= head + 1, "one short hold per block, not one for the whole range"


def test_a_client_asking_for_confirmations_gets_receipts_of_settled_blocks_only(served, artifacts):
    chain, url = served
    client = ChainClient.connect(url, artifacts, confirmations=2)
    receipt = client.transfer_ether(chain.keyring["faucet"], "0x" + "33" * 20, 1)
    assert receipt["status"] == 1
    assert client.w3.eth.block_number >= receipt["blockNumber"] + 2
    canonical = client.w3.eth.get_block(receipt["blockNumber"])["hash"]
    assert receipt["blockHash"] == canonical


def call(chain, method, *params):
    """One JSON-RPC call through the node's handler (no HTTP); the result or the error."""
    answer = json.loads(
        chain.rpc.handle(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
    )
    return answer.get("result", answer.get("error"))


def test_pending_block_pool_contents_raw_transactions_and_pending_filters():
    chain = open_embedded_chain(None, period=1)
    try:
        chain.node.sealing_enabled = False  # everything sent stays in the pool until re-enabled
        faucet = chain.keyring["faucet"]
        pending_filter = call(chain, "eth_newPendingTransactionFilter")
        nonce = int(call(chain, "eth_getTransactionCount", faucet.address, "latest"), 16)

        def send(nonce_value):
            raw = signed_transfer_in(chain, faucet, nonce_value)
            return raw, call(chain, "eth_sendRawTransaction", raw)

        (raw_a, hash_a), (_, hash_b), (_, hash_gap) = send(nonce), send(nonce + 1), send(nonce + 3)
        assert call(chain, "eth_getFilterChanges", pending_filter) == [hash_a, hash_b, hash_gap]
        assert call(chain, "eth_getFilterChanges", pending_filter) == []

        content = call(chain, "txpool_content")
        assert list(content["pending"][faucet.address]) == [str(nonce), str(nonce + 1)]
        assert list(content["queued"][faucet.address]) == [str(nonce + 3)]
        assert content["pending"][faucet.address][str(nonce)]["hash"] == hash_a
        inspect = call(chain, "txpool_inspect")
        assert inspect["queued"][faucet.address][str(nonce + 3)].startswith(
            "0x1111111111111111111111111111111111111111: 1 wei + 21000 gas"
        )

        head = int(call(chain, "eth_blockNumber"), 16)
        pending = call(chain, "eth_getBlockByNumber", "pending", False)
        assert int(pending["number"], 16) == head + 1 and pending["transactions"] == [hash_a, hash_b]
        assert pending["hash"] is None and pending["miner"] is None and int(pending["gasUsed"], 16) == 42_000
        assert call(chain, "eth_getRawTransactionByHash", hash_a) == raw_a  # from the pool

        chain.node.sealing_enabled = True
        deadline = time.monotonic() + 60
        while call(chain, "eth_getTransactionReceipt", hash_b) is None:
            assert time.monotonic() < deadline, "the pending transactions were not mined"
            time.sleep(0.05)
        assert call(chain, "eth_getRawTransactionByHash", hash_a) == raw_a  # from its block
        assert call(chain, "eth_getRawTransactionByHash", "0x" + "00" * 32) is None
        assert list(call(chain, "txpool_content")["pending"]) == []
    finally:
        chain.stop()


def signed_transfer_in(chain, account, nonce):
    transaction = {
        "to": "0x" + "11" * 20, "value": 1, "gas": 21_000, "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9, "nonce": nonce, "chainId": chain.node.genesis.chain_id, "type": 2,
    }  # fmt: skip
    return "0x" + bytes(account.account.sign_transaction(transaction).raw_transaction).hex()


def test_safe_and_finalized_trail_the_head_by_a_majority_of_signers(served):
    chain, url = served
    while chain.node.head.block_number < 3:
        time.sleep(0.1)

    def number(tag):
        return int(rpc(url, "eth_getBlockByNumber", tag, False)["result"]["number"], 16)

    while True:  # read the three within one block period
        latest, safe, finalized = number("latest"), number("safe"), number("finalized")
        if number("latest") == latest:
            break
    assert len(chain.node.signers()) == 1  # a majority of one: safe is the head, finalized its parent
    assert (safe, finalized) == (latest, latest - 1)


def rpc_method_names() -> list[str]:
    return [name.removeprefix("rpc_") for name in dir(JsonRpc) if name.startswith("rpc_")]


_FIELD_NAMES = ["to", "from", "data", "input", "value", "gas", "address", "topics", "fromBlock", "toBlock",
                "blockHash", "balance", "state", "stateDiff", "code", "nonce", "0x" + "11" * 20]  # fmt: skip
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**300), 2**300),
    st.text(max_size=30),
    st.sampled_from(
        [
            "latest",
            "pending",
            "safe",
            "finalized",
            "earliest",
            "0x",
            "0x0",
            "0x1",
            "0xzz",
            "0xffffffffffffffffffff",
            "0x" + "11" * 20,
            "0x" + "22" * 32,
        ]
    ),
    st.binary(max_size=40).map(lambda raw: "0x" + raw.hex()),
)
_PARAMS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_FIELD_NAMES), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(sorted(rpc_method_names())), params=st.lists(_PARAMS, max_size=4))
def test_any_parameters_to_any_method_get_an_answer_never_an_internal_error(served, method, params):
    chain, _ = served
    answer = json.loads(
        chain.rpc.handle(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
    )
    assert "result" in answer or answer["error"]["code"] != -32603, (method, params, answer)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_over_http_get_an_error_and_the_node_lives_on(served, body):
    _, url = served
    answer = post(url, body)
    assert answer is None or "error" in answer or isinstance(answer, (list, dict)), answer
    assert isinstance(rpc(url, "eth_blockNumber")["result"], str)


def test_eth_get_logs_is_bounded_in_addresses_results_and_time(served, artifacts, monkeypatch):
    chain, url = served
    too_many = ["0x" + f"{i:040x}" for i in range(1_001)]
    answer = rpc(url, "eth_getLogs", {"fromBlock": "0x0", "address": too_many})
    assert answer["error"]["code"] == -32602 and "exceed max addresses" in answer["error"]["message"]

    client = ChainClient.connect(url, artifacts)  # something that logs: a role granted
    community = Community(client, deploy_community(client, chain.keyring["admin"], CommunityConfig()))
    receipt = community.registry.grant_role(chain.keyring["admin"], Role.DSO, chain.keyring["dso"].address)
    everything = {"fromBlock": "0x0", "toBlock": hex(receipt["blockNumber"])}
    found = rpc(url, "eth_getLogs", everything)["result"]
    assert len(found) >= 2
    monkeypatch.setattr(rpc_module, "MAX_LOG_RESULTS", 1)
    answer = rpc(url, "eth_getLogs", everything)
    assert answer["error"]["code"] == -32005 and "more than 1 results" in answer["error"]["message"]
    monkeypatch.setattr(rpc_module, "LOG_QUERY_TIMEOUT_S", -1.0)
    answer = rpc(url, "eth_getLogs", everything)
    assert answer["error"]["code"] == -32000 and "query timeout exceeded" in answer["error"]["message"]
    assert isinstance(rpc(url, "eth_blockNumber")["result"], str)


def test_errors_do_not_echo_megabytes_back(served):
    _, url = served
    huge = "0x" + "zz" * 2_000_000
    for method, params in (("eth_getBalance", [huge, "latest"]), ("eth_getBlockByNumber", [huge, False]),
                           ("x" * 4_000_000, [])):  # fmt: skip
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        answer = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        assert len(answer.content) < 1_000 and "error" in answer.json(), answer.content[:200]


def test_eth_call_applies_block_overrides_like_geth(served):
    _, url = served
    returns_timestamp_and_number = {"data": "0x42600052436020526040" + "6000f3"}  # TIMESTAMP, NUMBER
    plain = rpc(url, "eth_call", returns_timestamp_and_number, "latest")["result"]
    overridden = rpc(
        url, "eth_call", returns_timestamp_and_number, "latest", None, {"time": "0x3039", "number": "0x7"}
    )
    assert int(overridden["result"][2:66], 16) == 12345 and int(overridden["result"][66:], 16) == 7
    assert int(plain[2:66], 16) != 12345
    answer = rpc(url, "eth_call", returns_timestamp_and_number, "latest", None, {"blockTime": "0x1"})
    assert answer["error"]["code"] == -32602 and "unknown block override" in answer["error"]["message"]


def test_a_sender_whose_transaction_does_not_fit_keeps_its_later_ones_for_the_next_block():
    """Transfers of one sender with gas limits of 29.99 M, 29.99 M and 21 k: the second no
    longer fits the 30 M block after the first, so it and the third wait for the next block
    (before, the third was tried anyway and dropped for the nonce gap)."""
    chain = open_embedded_chain(None, period=1)
    try:
        chain.node.sealing_enabled = False
        faucet = chain.keyring["faucet"]
        nonce = int(call(chain, "eth_getTransactionCount", faucet.address, "latest"), 16)
        hashes = []
        for offset, gas in enumerate((29_990_000, 29_990_000, 21_000)):
            transaction = {
                "to": "0x" + "11" * 20, "value": 1, "gas": gas, "maxFeePerGas": 10**10,
                "maxPriorityFeePerGas": 10**9, "nonce": nonce + offset,
                "chainId": chain.node.genesis.chain_id, "type": 2,
            }  # fmt: skip
            raw = "0x" + bytes(faucet.account.sign_transaction(transaction).raw_transaction).hex()
            hashes.append(call(chain, "eth_sendRawTransaction", raw))
        chain.node.sealing_enabled = True
        deadline = time.monotonic() + 60
        while any(call(chain, "eth_getTransactionReceipt", h) is None for h in hashes):
            assert time.monotonic() < deadline, "a transaction was lost"
            time.sleep(0.05)
        blocks = [int(call(chain, "eth_getTransactionReceipt", h)["blockNumber"], 16) for h in hashes]
        assert blocks[0] < blocks[1] <= blocks[2]
    finally:
        chain.stop()
