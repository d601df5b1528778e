"""JSON-RPC over WebSocket: eth_subscribe (newHeads, logs, newPendingTransactions) as
geth serves it, every HTTP method over WebSocket too, malformed and oversized messages,
clients that never read, a reorganisation's removed logs, and web3.py as an independent
client."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import time
from collections import defaultdict, deque
from urllib.parse import urlparse

import pytest
from eth_account import Account
from eth_keys import keys
from web3 import AsyncWeb3, WebSocketProvider
from web3.middleware import ExtraDataToPOAMiddleware
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from node.chain.genesis import GenesisConfig
from node.chain.node import PoaNode
from node.chain.rpc import JsonRpc
from node.chain.websocket import RpcWebSocketServer
from node.embedded import open_embedded_chain
from tests.node.chain.conftest import rpc
from tests.waiting import wait_for

TOPIC = "0x" + "ab" * 32
OTHER_TOPIC = "0x" + "cd" * 32
# runtime: copy the call data to memory and emit it as LOG1 with TOPIC
RUNTIME = "3660006000" + "37" + "7f" + TOPIC[2:] + "36" + "6000" + "a1" + "00"
# constructor: return RUNTIME (44 bytes, after these 12)
INIT = "602c600c60003960" + "2c6000f3" + RUNTIME
assert len(RUNTIME) // 2 == 0x2C and len(INIT) // 2 == 0x0C + 0x2C


@pytest.fixture(scope="module")
def served_ws():
    """One embedded chain (1 s blocks) served over HTTP and WebSocket on free ports."""
    chain = open_embedded_chain(None, period=1)
    http_url = chain.serve("127.0.0.1", 0)
    ws_url = chain.serve_websocket("127.0.0.1", 0)
    yield chain, http_url, ws_url
    chain.stop()


@pytest.fixture(scope="module")
def log_emitter(served_ws):
    """A contract that emits LOG1(TOPIC, calldata) when called; returns its address."""
    chain, http_url, _ = served_ws
    receipt = mined(http_url, send(http_url, chain.keyring["faucet"].account, None, "0x" + INIT))
    assert receipt["status"] == "0x1"
    return receipt["contractAddress"]


# ------------------------------------------------------------------ helpers


class Client:
    """A WebSocket JSON-RPC client that keeps notifications aside while waiting for answers."""

    def __init__(self, url: str, **options):
        self.ws = connect(url, open_timeout=10, **options)
        self.notifications: dict[str, deque] = defaultdict(deque)
        self._next_id = 0

    def request(self, payload) -> object:
        self.ws.send(payload if isinstance(payload, str) else json.dumps(payload))
        return self.answer()

    def answer(self, timeout: float = 30) -> object:
        while True:
            message = json.loads(self.ws.recv(timeout=timeout))
            if isinstance(message, dict) and message.get("method") == "eth_subscription":
                params = message["params"]
                self.notifications[params["subscription"]].append(params["result"])
            else:
                return message

    def call(self, method: str, *params) -> dict:
        self._next_id += 1
        answer = self.request(
            {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": list(params)}
        )
        assert answer["id"] == self._next_id
        return answer

    def subscribe(self, *params) -> str:
        answer = self.call("eth_subscribe", *params)
        assert "result" in answer, answer
        return answer["result"]

    def next(self, subscription: str, timeout: float = 30):
        """The next notification of ``subscription``."""
        deadline = time.monotonic() + timeout
        while not self.notifications[subscription]:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            assert message.get("method") == "eth_subscription", f"unexpected message {message}"
            params = message["params"]
            self.notifications[params["subscription"]].append(params["result"])
        return self.notifications[subscription].popleft()

    def close(self) -> None:
        self.ws.close()


def send(url: str, account, to: str | None, data: str, gas: int = 200_000) -> str:
    chain_id = int(rpc(url, "eth_chainId")["result"], 16)
    nonce = int(rpc(url, "eth_getTransactionCount", account.address, "pending")["result"], 16)
    transaction = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "to": to,
        "data": data,
        "value": 0,
        "gas": gas,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
    }
    if to is None:
        del transaction["to"]
    raw = Account.sign_transaction(transaction, account.key).raw_transaction
    answer = rpc(url, "eth_sendRawTransaction", "0x" + bytes(raw).hex())
    assert "result" in answer, answer
    return answer["result"]


def mined(url: str, tx_hash: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipt = rpc(url, "eth_getTransactionReceipt", tx_hash)["result"]
        if receipt is not None:
            return receipt
        time.sleep(0.1)
    raise AssertionError(f"{tx_hash} not mined")


def block_number(url: str) -> int:
    return int(rpc(url, "eth_blockNumber")["result"], 16)


def address_of(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname, parsed.port


def raw_client(url: str, receive_buffer: int = 4096) -> socket.socket:
    """A WebSocket client on a bare socket with a tiny receive buffer, which will never read
    anything after the opening handshake."""
    host, port = address_of(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def send_frame(sock: socket.socket, text: str) -> None:
    """One masked text frame, as a client must send it."""
    payload, mask = text.encode(), os.urandom(4)
    if len(payload) < 126:
        header = bytes([0x81, 0x80 | len(payload)])
    elif len(payload) < 65536:
        header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + len(payload).to_bytes(8, "big")
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    sock.sendall(header + mask + masked)


def subscribe_many(sock: socket.socket, count: int) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_subscribe", "params": ["newHeads"]} for i in range(count)
    ]
    send_frame(sock, json.dumps(batch))


# -------------------------------------------------------------------- tests


def test_new_heads_follow_the_chain_with_the_hashes_of_get_block_by_number(served_ws):
    _, http_url, ws_url = served_ws
    client = Client(ws_url)
    try:
        subscription = client.subscribe("newHeads")
        assert subscription.startswith("0x") and len(subscription) <= 34
        heads = [client.next(subscription) for _ in range(3)]
    finally:
        client.close()
    numbers = [int(head["number"], 16) for head in heads]
    assert numbers == list(range(numbers[0], numbers[0] + 3)), "one notification per block, in order"
    for head, previous in zip(heads[1:], heads, strict=False):
        assert head["parentHash"] == previous["hash"]
    for head in heads:
        block = rpc(http_url, "eth_getBlockByNumber", head["number"], False)["result"]
        assert "transactions" not in head and "uncles" not in head
        assert head == {k: v for k, v in block.items() if k not in ("transactions", "uncles")}


def test_logs_reach_matching_subscriptions_only(served_ws, log_emitter):
    chain, http_url, ws_url = served_ws
    client = Client(ws_url)
    try:
        wanted = {
            "every log": client.subscribe("logs"),
            "by address": client.subscribe("logs", {"address": log_emitter}),
            "by address list and topic": client.subscribe(
                "logs", {"address": [log_emitter, "0x" + "22" * 20], "topics": [[OTHER_TOPIC, TOPIC]]}
            ),
        }
        excluded = {
            "other address": client.subscribe("logs", {"address": "0x" + "33" * 20}),
            "other topic": client.subscribe("logs", {"topics": [OTHER_TOPIC]}),
            "second topic": client.subscribe("logs", {"topics": [None, TOPIC]}),
        }
        heads = client.subscribe("newHeads")
        receipt = mined(http_url, send(http_url, chain.keyring["faucet"].account, log_emitter, "0xc0ffee"))
        mined_in = int(receipt["blockNumber"], 16)
        while int(client.next(heads)["number"], 16) <= mined_in:
            pass  # the notifications of the block come before the next block's head
    finally:
        client.close()
    expected = rpc(http_url, "eth_getLogs", {"blockHash": receipt["blockHash"]})["result"]
    assert len(expected) == 1 and expected[0]["data"] == "0xc0ffee" and expected[0]["topics"] == [TOPIC]
    for name, subscription in wanted.items():
        assert list(client.notifications[subscription]) == expected, name
    for name, subscription in excluded.items():
        assert not client.notifications[subscription], name


def test_log_filters_are_checked_like_get_logs(served_ws):
    _, _, ws_url = served_ws
    client = Client(ws_url)
    try:
        for options, message in (
            ({"address": "0x1234"}, "20-byte address"),
            ({"topics": [TOPIC] * 5}, "at most 4"),
            ({"topics": ["0x12"]}, "32-byte hash"),
            ("not an object", "must be an object"),
            ({"fromBlock": "0x1"}, "fromBlock, toBlock and blockHash are not supported"),
            ({"blockHash": TOPIC}, "fromBlock, toBlock and blockHash are not supported"),
        ):
            error = client.call("eth_subscribe", "logs", options)["error"]
            assert error["code"] == -32602 and message in error["message"], (options, error)
        assert client.call("eth_subscribe", "logs", {"fromBlock": "latest"})["result"].startswith("0x")
    finally:
        client.close()


def test_a_connection_holds_at_most_a_thousand_subscriptions(served_ws):
    _, _, ws_url = served_ws
    client = Client(ws_url)
    try:
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_subscribe", "params": ["newPendingTransactions"]}
            for i in range(1_000)
        ]
        assert all("result" in answer for answer in client.request(batch))
        error = client.call("eth_subscribe", "newHeads")["error"]
        assert error["code"] == -32000 and "too many subscriptions" in error["message"]
    finally:
        client.close()


def test_new_pending_transactions_give_hashes_or_whole_transactions(served_ws):
    chain, http_url, ws_url = served_ws
    client = Client(ws_url)
    try:
        hashes = client.subscribe("newPendingTransactions")
        full = client.subscribe("newPendingTransactions", True)
        explicit_hashes = client.subscribe("newPendingTransactions", False)
        account = chain.keyring["admin"].account
        tx_hash = send(http_url, account, "0x" + "44" * 20, "0x", gas=21_000)
        assert client.next(hashes) == tx_hash
        assert client.next(explicit_hashes) == tx_hash
        transaction = client.next(full)
    finally:
        client.close()
    assert transaction["hash"] == tx_hash and transaction["from"] == account.address
    assert transaction["blockHash"] is None and transaction["to"] == "0x" + "44" * 20
    mined(http_url, tx_hash)


def test_unsubscribe_stops_the_notifications(served_ws):
    _, _, ws_url = served_ws
    client = Client(ws_url)
    try:
        stopped, kept = client.subscribe("newHeads"), client.subscribe("newHeads")
        client.next(stopped)
        assert client.call("eth_unsubscribe", stopped)["result"] is True
        client.notifications[stopped].clear()  # sent before the answer
        assert client.call("eth_unsubscribe", stopped)["result"] is False
        assert client.call("eth_unsubscribe", "0x1234")["result"] is False
        assert client.call("eth_unsubscribe")["error"]["code"] == -32602
        first = int(client.next(kept)["number"], 16)
        while int(client.next(kept)["number"], 16) < first + 1:
            pass
    finally:
        client.close()
    assert not client.notifications[stopped]


def test_every_http_method_works_over_websocket(served_ws):
    _, http_url, ws_url = served_ws
    client = Client(ws_url)
    try:
        number = int(client.call("eth_blockNumber")["result"], 16)
        assert abs(number - block_number(http_url)) <= 1
        batch = client.request(
            [
                {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId", "params": []},
                {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []},  # a notification
                {"jsonrpc": "2.0", "id": "b", "method": "eth_getBlockByNumber", "params": ["0x0", False]},
                {"jsonrpc": "2.0", "id": "c", "method": "eth_subscribe", "params": ["newHeads"]},
            ]
        )
        assert [answer["id"] for answer in batch] == ["a", "b", "c"]
        assert batch[0]["result"] == rpc(http_url, "eth_chainId")["result"]
        assert batch[1]["result"]["number"] == "0x0"
        assert client.next(batch[2]["result"])["number"].startswith("0x")
        client.ws.send(json.dumps({"jsonrpc": "2.0", "method": "eth_chainId", "params": []}))
        assert client.call("web3_clientVersion")["result"].startswith("lec-node"), (
            "no answer to a notification"
        )
        client.ws.send(b'{"jsonrpc":"2.0","id":7,"method":"net_version"}')  # a binary frame
        assert client.answer()["id"] == 7
    finally:
        client.close()


def test_subscribing_over_http_is_refused_as_geth_does(served_ws):
    _, http_url, _ = served_ws
    for method in ("eth_subscribe", "eth_unsubscribe"):
        answer = rpc(http_url, method, "newHeads")
        assert answer["error"] == {"code": -32601, "message": "notifications not supported"}


def test_malformed_messages_get_clear_errors_and_the_server_goes_on(served_ws, caplog):
    _, _, ws_url = served_ws
    caplog.set_level(logging.DEBUG, logger="node.chain.websocket")
    client = Client(ws_url)
    try:
        for payload, code, message in (
            ("not json", -32700, "parse error"),
            ("[" * 100_000, -32700, "nested deeper than 64"),
            ("[]", -32600, "empty batch"),
            ('{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["syncing"]}', -32602, "unknown"),
            ('{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["nope"]}', -32602, "newHeads, logs"),
            ('{"jsonrpc":"2.0","id":1,"method":"eth_subscribe"}', -32602, "subscription type"),
            ('{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":[7]}', -32602, "subscription type"),
            (
                '{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads",1]}',
                -32602,
                "no options",
            ),
            (
                '{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newPendingTransactions","x"]}',
                -32602,
                "optional boolean",
            ),
            ('{"jsonrpc":"2.0","id":1,"method":"eth_nope","params":[]}', -32601, "does not exist"),
        ):
            answer = client.request(payload)
            assert answer["error"]["code"] == code and message in answer["error"]["message"], (
                payload,
                answer,
            )
        assert "result" in client.call("eth_blockNumber"), "the connection still serves"
    finally:
        client.close()

    big = Client(ws_url, max_size=None, compression=None)
    with pytest.raises(ConnectionClosed) as closed:
        big.ws.send("[" + " " * 20_000_000 + "]")
        big.ws.recv(timeout=30)
    if closed.value.rcvd is not None:  # the close frame may be lost to the reset of the unread rest
        assert closed.value.rcvd.code == 1009, "message too big"
    big.close()

    sock = raw_client(ws_url)  # a frame header announcing 20 MB is refused before its payload
    sock.sendall(bytes([0x81, 0x80 | 127]) + (20 * 2**20).to_bytes(8, "big") + os.urandom(4))
    close_frame = b""
    while len(close_frame) < 4:
        close_frame += sock.recv(4 - len(close_frame))
    sock.close()
    assert close_frame[0] == 0x88 and int.from_bytes(close_frame[2:4], "big") == 1009

    with socket.create_connection(address_of(ws_url), timeout=10) as plain:  # not WebSocket
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert plain.recv(100).startswith(b"HTTP/1.1 4")
    socket.create_connection(address_of(ws_url), timeout=10).close()  # hangs up at once

    again = Client(ws_url)
    try:
        assert "result" in again.call("eth_blockNumber"), "the server still serves"
    finally:
        again.close()
    assert not [r for r in caplog.records if r.exc_info], "no stack traces for clients' mistakes"


def test_a_client_that_never_reads_does_not_hold_up_blocks_or_others(served_ws):
    _, http_url, ws_url = served_ws
    sleeper = raw_client(ws_url)
    subscribe_many(sleeper, 1_000)  # a megabyte of notifications per block, never read
    reader = Client(ws_url)
    try:
        heads = reader.subscribe("newHeads")
        first = block_number(http_url)
        numbers = [int(reader.next(heads, timeout=10)["number"], 16) for _ in range(4)]
        assert numbers == list(range(numbers[0], numbers[0] + 4))
        assert numbers[-1] >= first + 2 and block_number(http_url) >= numbers[-1], "blocks keep coming"
    finally:
        reader.close()
        sleeper.close()


def test_a_client_too_slow_for_its_notifications_is_dropped(served_ws, caplog):
    chain, http_url, _ = served_ws
    server = RpcWebSocketServer(chain.rpc, "127.0.0.1", 0, max_queued=50).start()
    try:
        sleeper = raw_client(server.url)
        wait_for(lambda: server.connection_count == 1, what="the connection")
        with caplog.at_level(logging.WARNING, logger="node.chain.websocket"):
            subscribe_many(sleeper, 1_000)
            wait_for(lambda: server.connection_count == 0, what="the slow client dropped")
        sleeper.close()
        assert any("does not read" in r.getMessage() for r in caplog.records)
        first = block_number(http_url)
        wait_for(lambda: block_number(http_url) >= first + 2, timeout=10, what="more blocks")
        client = Client(server.url)
        try:
            assert "result" in client.call("eth_blockNumber")
        finally:
            client.close()
    finally:
        server.stop()


def test_stop_ends_open_connections(served_ws):
    chain, _, _ = served_ws
    server = RpcWebSocketServer(chain.rpc, "127.0.0.1", 0).start()
    client = Client(server.url)
    client.subscribe("newHeads")
    sleeper = raw_client(server.url)
    subscribe_many(sleeper, 1_000)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            client.ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # going away
    assert server.connection_count == 0
    sleeper.close()
    with pytest.raises(OSError):
        socket.create_connection(address_of(server.url), timeout=5)


def test_web3_async_websocket_provider_follows_new_heads(served_ws):
    _, http_url, ws_url = served_ws

    async def follow() -> list[dict]:
        async with AsyncWeb3(WebSocketProvider(ws_url)) as w3:
            w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)  # Clique's 97-byte extraData
            assert await w3.eth.chain_id == 4242
            subscription = await w3.eth.subscribe("newHeads")
            heads = []
            async for message in w3.socket.process_subscriptions():
                assert message["subscription"] == subscription
                heads.append(message["result"])
                if len(heads) == 2:
                    break
            assert await w3.eth.unsubscribe(subscription) is True
            return heads

    heads = asyncio.run(asyncio.wait_for(follow(), timeout=30))
    assert heads[1]["number"] == heads[0]["number"] + 1
    for head in heads:
        block = rpc(http_url, "eth_getBlockByNumber", hex(head["number"]), False)["result"]
        assert "0x" + head["hash"].hex().removeprefix("0x") == block["hash"]


def test_a_reorganisation_sends_the_dropped_logs_as_removed():
    """Two nodes with the same sealer key build different blocks 1; the longer branch of
    the second replaces the first's block, whose log comes again with removed: true."""
    key = keys.PrivateKey(b"\x07" * 32)
    sender = Account.create()
    genesis = GenesisConfig(
        chain_id=4242,
        sealers=(key.public_key.to_checksum_address(),),
        alloc={sender.address: 10**21},
        period=1,
    )
    ours, theirs = PoaNode(genesis, None, key, name="ours"), PoaNode(genesis, None, key, name="theirs")
    server = RpcWebSocketServer(JsonRpc(ours), "127.0.0.1", 0).start()

    def seal(node: PoaNode):
        time.sleep(node.seal_delay(node.head, time.time()))
        return node.seal_next_block()

    client = Client(server.url)
    try:
        logs, heads = client.subscribe("logs", {"topics": [TOPIC]}), client.subscribe("newHeads")
        constructor_logs = "7f" + TOPIC[2:] + "6000" + "6000" + "a1" + "00"  # LOG1(TOPIC) in the constructor
        transaction = sender.sign_transaction(
            {
                "type": 2,
                "chainId": 4242,
                "nonce": 0,
                "data": "0x" + constructor_logs,
                "gas": 100_000,
                "maxFeePerGas": 10**10,
                "maxPriorityFeePerGas": 10**9,
                "value": 0,
            }
        )
        ours.submit_raw_transaction(bytes(transaction.raw_transaction))
        dropped = seal(ours)
        logged = client.next(logs)
        assert logged["blockHash"] == "0x" + dropped.hash.hex() and logged["removed"] is False
        assert client.next(heads)["hash"] == "0x" + dropped.hash.hex()

        replacements = [seal(theirs), seal(theirs)]
        assert not ours.import_block(replacements[0]).became_head  # as heavy as ours: ours stays
        assert ours.import_block(replacements[1]).became_head

        removed = client.next(logs)
        assert removed == {**logged, "removed": True}
        assert [client.next(heads)["hash"] for _ in replacements] == [
            "0x" + b.hash.hex() for b in replacements
        ]
        assert client.call("eth_blockNumber")["result"] == "0x2"
        assert not client.notifications[logs], "the new branch has no log"
    finally:
        client.close()
        server.stop()
        ours.stop()
        theirs.stop()
