"""Ethereum JSON-RPC for the embedded node: the methods web3.py, ethers and Foundry's
``cast`` use, plus ``clique_*``.

``JsonRpc.handle(body)`` takes the raw request (single or batch) and returns the raw
response; it never raises. Errors follow JSON-RPC 2.0 and geth's conventions: -32700
parse error, -32600 invalid request, -32601 unknown method, -32602 invalid params,
-32000 for a refused transaction (geth's message), 3 with the revert data for a call
that reverted.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import rlp
from eth.abc import BlockAPI, BlockHeaderAPI, SignedTransactionAPI
from eth.exceptions import HeaderNotFound, TransactionNotFound
from eth_hash.auto import keccak
from eth_typing import Address
from eth_utils import is_hex, to_canonical_address, to_checksum_address

from node.chain import execution, proofs
from node.chain.consensus import sorted_signers, state_at
from node.chain.execution import AccountOverride, CallRequest, ExecutionFailed, ExecutionReverted
from node.chain.node import PoaNode
from node.chain.tracing import trace_call, trace_transaction
from node.chain.txpool import TransactionRejected, max_fee, max_tip

log = logging.getLogger(__name__)

CLIENT_VERSION = "lec-node/0.1.0/py-evm-clique"
MAX_LOG_BLOCK_RANGE = 100_000
MAX_LOG_ADDRESSES = 1_000  # addresses (and topics per position) in one log query
MAX_LOG_RESULTS = 10_000  # logs one query may return
LOG_QUERY_TIMEOUT_S = 10.0  # a log query that runs longer is cut off with an error
MAX_BATCH = 1_000
FILTER_TIMEOUT_S = 300  # geth's: a filter nobody polls for five minutes is uninstalled
MAX_PROOF_SLOTS = 1_000  # storage keys per eth_getProof
MAX_PENDING_FILTER_HASHES = 100_000  # a pending-transaction filter polled too rarely misses the rest
MAX_JSON_DEPTH = 64  # no JSON-RPC request nests deeper; CPython's parser would overflow the C stack
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")
SUGGESTED_TIP = 1_000_000_000


BLOCK_CACHE_ENTRIES = 256


def _remember(cache: OrderedDict, key: bytes, value: Any) -> None:
    cache[key] = value
    if len(cache) > BLOCK_CACHE_ENTRIES:
        cache.popitem(last=False)


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: errors never echo megabytes back."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_params(message: str) -> RpcError:
    return RpcError(-32602, f"invalid argument: {message}")


# ------------------------------------------------------------------- encoding


def quantity(value: int) -> str:
    return hex(value)


def data(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def address_out(value: bytes) -> str | None:
    return to_checksum_address(value) if value else None


def _nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether the arrays and objects of ``body`` nest deeper than ``limit`` (strings
    skipped); checked before parsing, because py_ecc raises the recursion limit so far that
    ``json.loads`` of 80,000 ``[`` crashes the process instead of raising."""
    if body.count(b"[") + body.count(b"{") <= limit:  # every ordinary request
        return False
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', body)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


OVERRIDE_FIELDS = {"balance", "nonce", "code", "state", "stateDiff"}


def _state_overrides(raw: Any) -> tuple[AccountOverride, ...]:
    """geth's state override set (address → balance, nonce, code, state, stateDiff)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise invalid_params("the state override set must be an object keyed by address")
    found = []
    for address, fields in raw.items():
        if not isinstance(fields, dict) or set(fields) - OVERRIDE_FIELDS:
            unknown = sorted(set(fields) - OVERRIDE_FIELDS) if isinstance(fields, dict) else fields
            raise invalid_params(f"state override of {address}: unknown or malformed fields {unknown}")
        if fields.get("state") is not None and fields.get("stateDiff") is not None:
            raise invalid_params(f"state override of {address}: give state or stateDiff, not both")

        def slots(name: str, fields=fields, address=address) -> dict[int, int] | None:
            value = fields.get(name)
            if value is None:
                return None
            if not isinstance(value, dict):
                raise invalid_params(f"state override of {address}: {name} must map slots to values")
            return {
                int.from_bytes(parse_data(slot, f"{name} slot"), "big"): int.from_bytes(
                    parse_data(word, f"{name} value"), "big"
                )
                for slot, word in value.items()
            }

        found.append(
            AccountOverride(
                address=parse_address(address, "state override address"),
                balance=parse_quantity(fields["balance"], "balance") if "balance" in fields else None,
                nonce=parse_quantity(fields["nonce"], "nonce") if "nonce" in fields else None,
                code=parse_data(fields["code"], "code") if "code" in fields else None,
                storage=slots("state"),
                storage_diff=slots("stateDiff"),
            )
        )
    return tuple(found)


def parse_quantity(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.startswith(("0x", "0X")) and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise invalid_params(f"{name} must be a hex quantity like 0x1a, got {shown(value)}")


def parse_data(value: Any, name: str) -> bytes:
    if isinstance(value, str) and value.startswith(("0x", "0X")) and len(value) % 2 == 0 and is_hex(value):
        return bytes.fromhex(value[2:])
    if value == "0x":
        return b""
    raise invalid_params(f"{name} must be 0x-prefixed hex bytes, got {shown(value)}")


def parse_address(value: Any, name: str) -> Address:
    raw = parse_data(value, name)
    if len(raw) != 20:
        raise invalid_params(f"{name} must be a 20-byte address, got {len(raw)} bytes")
    return Address(raw)


def parse_hash(value: Any, name: str) -> bytes:
    raw = parse_data(value, name)
    if len(raw) != 32:
        raise invalid_params(f"{name} must be a 32-byte hash, got {len(raw)} bytes")
    return raw


_BLOCK_OVERRIDES = {  # geth's blockOverrides field -> py-evm header field
    "number": "block_number",
    "time": "timestamp",
    "gasLimit": "gas_limit",
    "feeRecipient": "coinbase",
    "coinbase": "coinbase",
    "prevRandao": "mix_hash",
    "random": "mix_hash",
    "baseFeePerGas": "base_fee_per_gas",
    "baseFee": "base_fee_per_gas",
    "difficulty": "difficulty",
}


def _override_header(header: BlockHeaderAPI, raw: Any) -> BlockHeaderAPI:
    """``header`` with geth's block overrides applied (the state stays the block's)."""
    if raw is None:
        return header
    if not isinstance(raw, dict):
        raise invalid_params("the block overrides must be an object")
    unknown = set(raw) - set(_BLOCK_OVERRIDES)
    if unknown:
        raise invalid_params(f"unknown block override {shown(sorted(unknown)[0])}")
    fields: dict[str, Any] = {}
    for name, value in raw.items():
        field = _BLOCK_OVERRIDES[name]
        if field == "coinbase":
            fields[field] = parse_address(value, name)
        elif field == "mix_hash":
            fields[field] = parse_hash(value, name)
        else:
            fields[field] = parse_quantity(value, name)
    return header.copy(**fields)


def _params(params: Any, minimum: int, maximum: int, method: str) -> list:
    if params is None:
        params = []
    if not isinstance(params, list):
        raise invalid_params(f"{method} takes a list of parameters")
    if not minimum <= len(params) <= maximum:
        expected = str(minimum) if minimum == maximum else f"{minimum} to {maximum}"
        raise invalid_params(f"{method} takes {expected} parameters, got {len(params)}")
    return params + [None] * (maximum - len(params))


class JsonRpc:
    """JSON-RPC front of one ``PoaNode``."""

    def __init__(self, node: PoaNode, clock: Callable[[], float] = time.monotonic):
        self.node = node
        self._clock = clock  # filters not polled for FILTER_TIMEOUT_S are dropped, as geth does
        self._filters: dict[int, dict] = {}
        self._next_filter = 1
        self._filter_lock = threading.Lock()
        self._blocks: OrderedDict[bytes, BlockAPI] = OrderedDict()  # by hash: blocks never change
        self._block_receipts: OrderedDict[bytes, list[dict]] = OrderedDict()
        node.on_transaction(self._on_pending_transaction)
        self.methods: dict[str, Callable[..., Any]] = {
            name.replace("rpc_", "", 1): getattr(self, name) for name in dir(self) if name.startswith("rpc_")
        }

    # -------------------------------------------------------------- transport

    def handle(self, body: bytes | str, methods: Mapping[str, Callable] | None = None) -> bytes | None:
        """Answer a raw request; None for a batch of notifications only. ``methods`` replaces
        ``self.methods`` for this request (the WebSocket server adds its connection's
        ``eth_subscribe``)."""
        raw = body.encode() if isinstance(body, str) else body
        if _nests_deeper_than(raw, MAX_JSON_DEPTH):
            message = f"parse error: JSON nested deeper than {MAX_JSON_DEPTH} levels"
            return self._encode(self._error(None, RpcError(-32700, message)))
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            return self._encode(self._error(None, RpcError(-32700, f"parse error: {error}")))
        if isinstance(request, list):
            if not request:
                return self._encode(self._error(None, RpcError(-32600, "empty batch")))
            if len(request) > MAX_BATCH:
                return self._encode(self._error(None, RpcError(-32600, f"batch larger than {MAX_BATCH}")))
            responses = [r for r in (self.handle_one(item, methods) for item in request) if r is not None]
            return self._encode(responses) if responses else None
        return self._encode(self.handle_one(request, methods))

    def handle_one(self, request: Any, methods: Mapping[str, Callable] | None = None) -> dict | None:
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
        ):
            request_id = request.get("id") if isinstance(request, dict) else None
            return self._error(
                request_id, RpcError(-32600, "invalid request: need jsonrpc 2.0, method and params")
            )
        request_id = request.get("id")
        method = request["method"]
        handler = (self.methods if methods is None else methods).get(method)
        try:
            if handler is None:
                name = method if len(method) <= 80 else shown(method)
                raise RpcError(-32601, f"the method {name} does not exist/is not available")
            result = handler(request.get("params"))
        except RpcError as error:
            return self._error(request_id, error)
        except Exception:
            log.exception("internal error in %s", method)
            return self._error(request_id, RpcError(-32603, f"internal error in {method}"))
        if "id" not in request:
            return None  # a notification
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    @staticmethod
    def _error(request_id: Any, error: RpcError) -> dict:
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.data is not None:
            body["data"] = error.data
        return {"jsonrpc": "2.0", "id": request_id, "error": body}

    @staticmethod
    def _encode(payload: Any) -> bytes:
        return json.dumps(payload, separators=(",", ":")).encode()

    # ------------------------------------------- subscriptions (WebSocket only)
    # node/chain/websocket.py answers these per connection (``handle(body, methods)``); over
    # HTTP they get geth's answer.

    def rpc_eth_subscribe(self, params):
        raise RpcError(-32601, "notifications not supported")

    def rpc_eth_unsubscribe(self, params):
        raise RpcError(-32601, "notifications not supported")

    # ----------------------------------------------------------------- blocks

    @property
    def chain(self):
        return self.node.chain

    def _header_at(self, block_id: Any) -> BlockHeaderAPI:
        """Header for a block tag, number, or EIP-1898 object."""
        if block_id in ("safe", "finalized"):
            return self._settled_header(block_id)
        if block_id is None or block_id in ("latest", "pending"):
            return self.chain.get_canonical_head()
        if block_id == "earliest":
            return self.chain.get_canonical_block_header_by_number(0)
        if isinstance(block_id, dict):
            if "blockHash" in block_id:
                return self._header_by_hash(parse_hash(block_id["blockHash"], "blockHash"))
            return self._header_at(block_id.get("blockNumber"))
        number = parse_quantity(block_id, "block number")
        try:
            return self.chain.get_canonical_block_header_by_number(number)
        except HeaderNotFound:
            raise RpcError(-32000, f"header not found: block {number} is beyond the head") from None

    def _settled_header(self, tag: str) -> BlockHeaderAPI:
        """Clique has no finality gadget; a block counts as settled once a majority of the
        signers has sealed on it. Any ``M = floor(N/2) + 1`` consecutive blocks have ``M``
        different signers (EIP-225), so ``safe`` is ``head - (M - 1)`` (blocks safe..head
        carry a majority's seals) and ``finalized`` is ``head - M`` (the blocks after it
        do): undoing it needs a majority of the signers to seal a competing branch."""
        head = self.chain.get_canonical_head()
        majority = len(sorted_signers(self.chain, head)) // 2 + 1
        depth = majority - 1 if tag == "safe" else majority
        return self.chain.get_canonical_block_header_by_number(max(0, head.block_number - depth))

    def _header_by_hash(self, block_hash: bytes) -> BlockHeaderAPI:
        try:
            return self.chain.get_block_header_by_hash(block_hash)
        except HeaderNotFound:
            raise RpcError(-32000, f"header not found: {data(block_hash)}") from None

    def _format_block(self, block: BlockAPI, full: bool, pending: bool = False) -> dict:
        header = block.header
        transactions = (
            [self._format_transaction(tx, block, i) for i, tx in enumerate(block.transactions)]
            if full
            else [data(tx.hash) for tx in block.transactions]
        )
        return {
            "number": quantity(header.block_number),
            "hash": data(header.hash),
            "parentHash": data(header.parent_hash),
            "nonce": data(header.nonce),
            "sha3Uncles": data(header.uncles_hash),
            "logsBloom": data(header.bloom.to_bytes(256, "big")),
            "transactionsRoot": data(header.transaction_root),
            "stateRoot": data(header.state_root),
            "receiptsRoot": data(header.receipt_root),
            "miner": to_checksum_address(header.coinbase),
            "difficulty": quantity(header.difficulty),
            "totalDifficulty": quantity(
                self.chain.get_score(header.parent_hash) + header.difficulty
                if pending
                else self.chain.get_score(header.hash)
            ),
            "extraData": data(header.extra_data),
            "size": quantity(len(rlp.encode(block))),
            "gasLimit": quantity(header.gas_limit),
            "gasUsed": quantity(header.gas_used),
            "timestamp": quantity(header.timestamp),
            "transactions": transactions,
            "uncles": [],
            "mixHash": data(header.mix_hash),
            "baseFeePerGas": quantity(header.base_fee_per_gas),
        }

    def _block(self, header: BlockHeaderAPI) -> BlockAPI:
        block = self._blocks.get(header.hash)
        if block is None:
            block = self.chain.get_block_by_header(header)
            _remember(self._blocks, header.hash, block)
        return block

    def _format_transaction(
        self, tx: SignedTransactionAPI, block: BlockAPI | None, index: int | None
    ) -> dict:
        typed = getattr(tx, "type_id", None) is not None  # py-evm's legacy ones have fee properties too
        base_fee = block.header.base_fee_per_gas if block is not None else None
        formatted = {
            "hash": data(tx.hash),
            "nonce": quantity(tx.nonce),
            "blockHash": data(block.hash) if block is not None else None,
            "blockNumber": quantity(block.number) if block is not None else None,
            "transactionIndex": quantity(index) if index is not None else None,
            "from": to_checksum_address(tx.sender),
            "to": address_out(tx.to),
            "value": quantity(tx.value),
            "gas": quantity(tx.gas),
            "gasPrice": quantity(
                execution.effective_gas_price(tx, base_fee) if base_fee is not None else max_fee(tx)
            ),
            "input": data(tx.data),
            "v": quantity(tx.y_parity if typed else tx.v),
            "r": quantity(tx.r),
            "s": quantity(tx.s),
            "type": quantity(tx.type_id or 0) if typed else "0x0",
        }
        chain_id = getattr(tx, "chain_id", None)  # None: a legacy transaction without EIP-155
        if chain_id is not None:
            formatted["chainId"] = quantity(chain_id)
        if typed:
            formatted.update(
                maxFeePerGas=quantity(max_fee(tx)),
                maxPriorityFeePerGas=quantity(max_tip(tx)),
                accessList=[
                    {
                        "address": to_checksum_address(a),
                        "storageKeys": [data(k.to_bytes(32, "big")) for k in keys],
                    }
                    for a, keys in tx.access_list
                ],
                yParity=quantity(tx.y_parity),
            )
        return formatted

    def _receipts(self, block: BlockAPI) -> list[dict]:
        """All receipts of ``block`` in JSON form (with their logs), cached by block hash."""
        cached = self._block_receipts.get(block.hash)
        if cached is None:
            cached = self._format_receipts(block)
            _remember(self._block_receipts, block.hash, cached)
        return cached

    def _format_receipts(self, block: BlockAPI) -> list[dict]:
        header = block.header
        receipts = block.get_receipts(self.chain.chaindb)
        formatted, previous_cumulative, log_index = [], 0, 0
        for index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
            logs = []
            for entry in receipt.logs:
                logs.append(
                    {
                        "address": to_checksum_address(entry.address),
                        "topics": [data(topic.to_bytes(32, "big")) for topic in entry.topics],
                        "data": data(entry.data),
                        "blockNumber": quantity(block.number),
                        "blockHash": data(block.hash),
                        "transactionHash": data(tx.hash),
                        "transactionIndex": quantity(index),
                        "logIndex": quantity(log_index),
                        "removed": False,
                    }
                )
                log_index += 1
            contract = None
            if not tx.to:
                from eth._utils.address import generate_contract_address

                contract = to_checksum_address(generate_contract_address(tx.sender, tx.nonce))
            formatted.append(
                {
                    "transactionHash": data(tx.hash),
                    "transactionIndex": quantity(index),
                    "blockHash": data(block.hash),
                    "blockNumber": quantity(block.number),
                    "from": to_checksum_address(tx.sender),
                    "to": address_out(tx.to),
                    "cumulativeGasUsed": quantity(receipt.gas_used),
                    "gasUsed": quantity(receipt.gas_used - previous_cumulative),
                    "effectiveGasPrice": quantity(execution.effective_gas_price(tx, header.base_fee_per_gas)),
                    "contractAddress": contract,
                    "logs": logs,
                    "logsBloom": data(receipt.bloom.to_bytes(256, "big")),
                    "status": quantity(0 if receipt.state_root == b"" else 1),
                    "type": quantity(getattr(tx, "type_id", None) or 0),
                }
            )
            previous_cumulative = receipt.gas_used
        return formatted

    def _locate_transaction(self, tx_hash: bytes) -> tuple[BlockAPI, int] | None:
        try:
            number, index = self.chain.chaindb.get_transaction_index(tx_hash)
        except TransactionNotFound:
            return None
        block = self._block(self.chain.get_canonical_block_header_by_number(number))
        if index >= len(block.transactions) or block.transactions[index].hash != tx_hash:
            return None
        return block, index

    # ----------------------------------------------------------------- basics

    def rpc_web3_clientVersion(self, params):
        _params(params, 0, 0, "web3_clientVersion")
        return CLIENT_VERSION

    def rpc_web3_sha3(self, params):
        (value,) = _params(params, 1, 1, "web3_sha3")
        return data(keccak(parse_data(value, "data")))

    def rpc_net_version(self, params):
        _params(params, 0, 0, "net_version")
        return str(self.node.genesis.chain_id)

    def rpc_net_listening(self, params):
        _params(params, 0, 0, "net_listening")
        return True

    def rpc_net_peerCount(self, params):
        _params(params, 0, 0, "net_peerCount")
        return quantity(len(self.node.peers))

    def rpc_eth_chainId(self, params):
        _params(params, 0, 0, "eth_chainId")
        return quantity(self.node.genesis.chain_id)

    def rpc_eth_syncing(self, params):
        _params(params, 0, 0, "eth_syncing")
        return False

    def rpc_eth_mining(self, params):
        _params(params, 0, 0, "eth_mining")
        return self.node.sealing_enabled and self.node.running

    def rpc_eth_accounts(self, params):
        _params(params, 0, 0, "eth_accounts")
        return []

    def rpc_eth_coinbase(self, params):
        _params(params, 0, 0, "eth_coinbase")
        if self.node.sealer is None:
            raise RpcError(-32000, "etherbase must be explicitly specified: this node does not seal")
        return to_checksum_address(self.node.sealer)

    def rpc_eth_blockNumber(self, params):
        _params(params, 0, 0, "eth_blockNumber")
        return quantity(self.node.head.block_number)

    def rpc_eth_gasPrice(self, params):
        _params(params, 0, 0, "eth_gasPrice")
        return quantity(self.node.next_base_fee() + SUGGESTED_TIP)

    def rpc_eth_maxPriorityFeePerGas(self, params):
        _params(params, 0, 0, "eth_maxPriorityFeePerGas")
        return quantity(SUGGESTED_TIP)

    def rpc_eth_feeHistory(self, params):
        count_raw, newest, percentiles = _params(params, 2, 3, "eth_feeHistory")
        count = min(parse_quantity(count_raw, "blockCount"), 1024)
        percentiles = percentiles or []
        if not isinstance(percentiles, list) or any(not isinstance(p, (int, float)) for p in percentiles):
            raise invalid_params("rewardPercentiles must be a list of numbers")
        with self.node.lock:
            newest_header = self._header_at(newest)
            oldest = max(0, newest_header.block_number - count + 1)
            base_fees, ratios, rewards = [], [], []
            for number in range(oldest, newest_header.block_number + 1):
                block = self.chain.get_canonical_block_by_number(number)
                header = block.header
                base_fees.append(quantity(header.base_fee_per_gas))
                ratios.append(header.gas_used / header.gas_limit)
                tips = sorted(
                    execution.effective_gas_price(tx, header.base_fee_per_gas) - header.base_fee_per_gas
                    for tx in block.transactions
                )
                rewards.append(
                    [
                        quantity(tips[min(len(tips) - 1, int(len(tips) * p / 100))] if tips else 0)
                        for p in percentiles
                    ]
                )
            vm_class = self.chain.get_vm_class_for_block_number(newest_header.block_number + 1)
            base_fees.append(quantity(vm_class.create_header_from_parent(newest_header).base_fee_per_gas))
        result = {"oldestBlock": quantity(oldest), "baseFeePerGas": base_fees, "gasUsedRatio": ratios}
        if percentiles:
            result["reward"] = rewards
        return result

    # ---------------------------------------------------------------- state

    def _state(self, block_id):
        return state_at(self.chain, self._header_at(block_id))

    def rpc_eth_getBalance(self, params):
        address, block_id = _params(params, 1, 2, "eth_getBalance")
        with self.node.lock:
            return quantity(self._state(block_id).get_balance(parse_address(address, "address")))

    def rpc_eth_getTransactionCount(self, params):
        address, block_id = _params(params, 1, 2, "eth_getTransactionCount")
        account = parse_address(address, "address")
        with self.node.lock:
            if block_id == "pending":
                return quantity(self.node.pending_nonce(account))
            return quantity(self._state(block_id).get_nonce(account))

    def rpc_eth_getCode(self, params):
        address, block_id = _params(params, 1, 2, "eth_getCode")
        with self.node.lock:
            return data(self._state(block_id).get_code(parse_address(address, "address")))

    def rpc_eth_getStorageAt(self, params):
        address, slot, block_id = _params(params, 2, 3, "eth_getStorageAt")
        with self.node.lock:
            value = self._state(block_id).get_storage(
                parse_address(address, "address"), parse_quantity(slot, "storage slot")
            )
        return data(value.to_bytes(32, "big"))

    # ------------------------------------------------------- calls and sends

    def _call_request(self, raw: Any, overrides: Any = None) -> CallRequest:
        if not isinstance(raw, dict):
            raise invalid_params("the transaction must be an object")
        payload = raw.get("input", raw.get("data"))
        return CallRequest(
            overrides=_state_overrides(overrides),
            sender=parse_address(raw["from"], "from") if raw.get("from") else Address(b"\x00" * 20),
            to=parse_address(raw["to"], "to") if raw.get("to") else None,
            data=parse_data(payload, "input") if payload is not None else b"",
            value=parse_quantity(raw["value"], "value") if raw.get("value") is not None else 0,
            gas=parse_quantity(raw["gas"], "gas") if raw.get("gas") is not None else None,
            nonce=parse_quantity(raw["nonce"], "nonce") if raw.get("nonce") is not None else None,
        )

    @staticmethod
    def _execution_error(error: Exception) -> RpcError:
        if isinstance(error, ExecutionReverted):
            message = "execution reverted"
            if error.data[:4] == bytes.fromhex("08c379a0"):
                try:
                    from eth_abi import decode

                    message += ": " + decode(["string"], error.data[4:])[0]
                except Exception:
                    pass
            return RpcError(3, message, data(error.data))
        return RpcError(-32000, str(error))

    def rpc_eth_call(self, params):
        return data(self._simulate(params, "eth_call", execution.call))

    def rpc_eth_estimateGas(self, params):
        return quantity(self._simulate(params, "eth_estimateGas", execution.estimate_gas))

    def _simulate(self, params, method: str, run):
        """Run ``run(chain, header, request)`` for a call request at the requested block,
        with geth's state overrides (third parameter) and block overrides (fourth). The
        header is read under the node's lock; the run reads only that block's immutable
        state, so it goes on without the lock and never holds up sealing."""
        raw, block_id, overrides, block_overrides = _params(params, 1, 4, method)
        request = self._call_request(raw, overrides)
        with self.node.lock:
            header = _override_header(self._header_at(block_id), block_overrides)
        try:
            return run(self.chain, header, request)
        except (ExecutionReverted, ExecutionFailed) as error:
            raise self._execution_error(error) from None

    def rpc_eth_sendRawTransaction(self, params):
        (raw,) = _params(params, 1, 1, "eth_sendRawTransaction")
        try:
            return data(self.node.submit_raw_transaction(parse_data(raw, "transaction")))
        except TransactionRejected as error:
            raise RpcError(-32000, str(error)) from None

    # ----------------------------------------------------- blocks and receipts

    def rpc_eth_getBlockByNumber(self, params):
        block_id, full = _params(params, 1, 2, "eth_getBlockByNumber")
        if block_id == "pending":  # what this node would seal now; like geth, without hash, nonce, miner
            block = self.node.pending_block()
            with self.node.lock:
                formatted = self._format_block(block, bool(full), pending=True)
            return {**formatted, "hash": None, "nonce": None, "miner": None}
        with self.node.lock:
            try:
                header = self._header_at(block_id)
            except RpcError as error:
                if error.code == -32602:
                    raise
                return None  # a block beyond the head
            return self._format_block(self._block(header), bool(full))

    def rpc_eth_getBlockByHash(self, params):
        block_hash, full = _params(params, 1, 2, "eth_getBlockByHash")
        with self.node.lock:
            try:
                header = self.chain.get_block_header_by_hash(parse_hash(block_hash, "block hash"))
            except HeaderNotFound:
                return None
            return self._format_block(self._block(header), bool(full))

    def rpc_eth_getBlockTransactionCountByNumber(self, params):
        (block_id,) = _params(params, 1, 1, "eth_getBlockTransactionCountByNumber")
        with self.node.lock:
            return quantity(len(self._block(self._header_at(block_id)).transactions))

    def rpc_eth_getBlockTransactionCountByHash(self, params):
        (block_hash,) = _params(params, 1, 1, "eth_getBlockTransactionCountByHash")
        with self.node.lock:
            header = self._header_by_hash(parse_hash(block_hash, "block hash"))
            return quantity(len(self._block(header).transactions))

    def rpc_eth_getUncleCountByBlockNumber(self, params):
        _params(params, 1, 1, "eth_getUncleCountByBlockNumber")
        return "0x0"

    def rpc_eth_getTransactionByHash(self, params):
        (tx_hash_raw,) = _params(params, 1, 1, "eth_getTransactionByHash")
        tx_hash = parse_hash(tx_hash_raw, "transaction hash")
        with self.node.lock:
            found = self._locate_transaction(tx_hash)
            if found is not None:
                block, index = found
                return self._format_transaction(block.transactions[index], block, index)
            pending = self.node.pool.get(tx_hash)
            return self._format_transaction(pending, None, None) if pending is not None else None

    def _transaction_in_block(self, header: BlockHeaderAPI, index_raw: Any):
        block = self._block(header)
        index = parse_quantity(index_raw, "index")
        if index >= len(block.transactions):
            return None
        return self._format_transaction(block.transactions[index], block, index)

    def rpc_eth_getTransactionByBlockNumberAndIndex(self, params):
        block_id, index = _params(params, 2, 2, "eth_getTransactionByBlockNumberAndIndex")
        with self.node.lock:
            return self._transaction_in_block(self._header_at(block_id), index)

    def rpc_eth_getTransactionByBlockHashAndIndex(self, params):
        block_hash, index = _params(params, 2, 2, "eth_getTransactionByBlockHashAndIndex")
        with self.node.lock:
            return self._transaction_in_block(
                self._header_by_hash(parse_hash(block_hash, "block hash")), index
            )

    def rpc_eth_getTransactionReceipt(self, params):
        (tx_hash_raw,) = _params(params, 1, 1, "eth_getTransactionReceipt")
        tx_hash = parse_hash(tx_hash_raw, "transaction hash")
        with self.node.lock:
            found = self._locate_transaction(tx_hash)
            if found is None:
                return None
            block, index = found
            return self._receipts(block)[index]

    def rpc_eth_getBlockReceipts(self, params):
        (block_id,) = _params(params, 1, 1, "eth_getBlockReceipts")
        with self.node.lock:
            try:
                header = self._header_at(block_id)
            except RpcError as error:
                if error.code == -32602:
                    raise
                return None  # a block beyond the head
            return self._receipts(self._block(header))

    # ------------------------------------------------------------------- logs

    def _log_criteria(self, raw: Any) -> dict:
        if not isinstance(raw, dict):
            raise invalid_params("the filter must be an object")
        addresses = raw.get("address")
        if addresses is None:
            address_set = None
        else:
            items = addresses if isinstance(addresses, list) else [addresses]
            if len(items) > MAX_LOG_ADDRESSES:
                raise invalid_params(f"exceed max addresses: at most {MAX_LOG_ADDRESSES} per query")
            address_set = {parse_address(a, "address") for a in items}
        topics = raw.get("topics") or []
        if not isinstance(topics, list) or len(topics) > 4:
            raise invalid_params("topics must be a list of at most 4 entries")
        topic_sets = []
        for position, topic in enumerate(topics):
            if topic is None:
                topic_sets.append(None)
            else:
                items = topic if isinstance(topic, list) else [topic]
                if len(items) > MAX_LOG_ADDRESSES:
                    raise invalid_params(f"exceed max topics: at most {MAX_LOG_ADDRESSES} per position")
                topic_sets.append(
                    {parse_hash(t, f"topic {position}") for t in items if t is not None} or None
                )
        return {
            "addresses": address_set,
            "topics": topic_sets,
            "blockHash": parse_hash(raw["blockHash"], "blockHash") if raw.get("blockHash") else None,
            "fromBlock": raw.get("fromBlock"),
            "toBlock": raw.get("toBlock"),
        }

    def _matches(self, entry: dict, criteria: dict) -> bool:
        if (
            criteria["addresses"] is not None
            and to_canonical_address(entry["address"]) not in criteria["addresses"]
        ):
            return False
        for position, wanted in enumerate(criteria["topics"]):
            if wanted is None:
                continue
            if position >= len(entry["topics"]) or bytes.fromhex(entry["topics"][position][2:]) not in wanted:
                return False
        return True

    def _bloom_may_match(self, header: BlockHeaderAPI, criteria: dict) -> bool:
        from eth_bloom import BloomFilter

        bloom = BloomFilter(header.bloom)
        if criteria["addresses"] is not None and not any(a in bloom for a in criteria["addresses"]):
            return False
        return all(wanted is None or any(t in bloom for t in wanted) for wanted in criteria["topics"])

    def _logs_in_range(self, criteria: dict, first: int, last: int) -> list[dict]:
        """Matching logs of the canonical blocks ``first..last``. The node's lock is taken
        per block, not for the whole range, so a long query never stops block production
        (call it without holding the lock). Bounded in results and time."""
        logs: list[dict] = []
        deadline = time.monotonic() + LOG_QUERY_TIMEOUT_S
        for number in range(first, last + 1):
            if time.monotonic() > deadline:
                message = f"query timeout exceeded: narrow the block range (stopped at block {number})"
                raise RpcError(-32000, message)
            with self.node.lock:
                header = self.chain.get_canonical_block_header_by_number(number)
                if not self._bloom_may_match(header, criteria):
                    continue
                receipts = self._receipts(self._block(header))
            for receipt in receipts:
                logs.extend(entry for entry in receipt["logs"] if self._matches(entry, criteria))
            if len(logs) > MAX_LOG_RESULTS:
                raise RpcError(
                    -32005, f"query returned more than {MAX_LOG_RESULTS} results: narrow the block range"
                )
        return logs

    def _range(self, criteria: dict) -> tuple[int, int]:
        head = self.chain.get_canonical_head().block_number
        first = self._header_at(criteria["fromBlock"] or "latest").block_number
        last = (
            self._header_at(criteria["toBlock"] or "latest").block_number
            if criteria["toBlock"] != "latest"
            else head
        )
        if last - first > MAX_LOG_BLOCK_RANGE:
            raise RpcError(-32000, f"block range too large: at most {MAX_LOG_BLOCK_RANGE} blocks per query")
        return first, last

    def rpc_eth_getLogs(self, params):
        (raw,) = _params(params, 1, 1, "eth_getLogs")
        criteria = self._log_criteria(raw)
        with self.node.lock:
            if criteria["blockHash"] is not None:
                header = self._header_by_hash(criteria["blockHash"])
                receipts = self._receipts(self._block(header))
                return [e for r in receipts for e in r["logs"] if self._matches(e, criteria)]
            first, last = self._range(criteria)
        return self._logs_in_range(criteria, first, last)

    def _new_filter(self, kind: str, criteria: dict | None) -> str:
        with self._filter_lock:
            self._expire_filters()
            filter_id = self._next_filter
            self._next_filter += 1
            self._filters[filter_id] = {
                "kind": kind,
                "criteria": criteria,
                "next_block": self.node.head.block_number + 1,
                "polled_at": self._clock(),
            }
        return quantity(filter_id)

    def _expire_filters(self) -> None:
        """Drop the filters nobody polled for ``FILTER_TIMEOUT_S`` (the caller holds the lock)."""
        oldest = self._clock() - FILTER_TIMEOUT_S
        for filter_id in [i for i, f in self._filters.items() if f["polled_at"] < oldest]:
            del self._filters[filter_id]

    def rpc_eth_newFilter(self, params):
        (raw,) = _params(params, 1, 1, "eth_newFilter")
        criteria = self._log_criteria(raw)
        filter_id = self._new_filter("logs", criteria)
        if criteria["fromBlock"] not in (None, "latest", "pending"):
            with self._filter_lock:
                self._filters[int(filter_id, 16)]["next_block"] = self._header_at(
                    criteria["fromBlock"]
                ).block_number
        return filter_id

    def rpc_eth_newBlockFilter(self, params):
        _params(params, 0, 0, "eth_newBlockFilter")
        return self._new_filter("blocks", None)

    def _filter(self, raw_id: Any) -> tuple[int, dict]:
        filter_id = parse_quantity(raw_id, "filter id")
        with self._filter_lock:
            self._expire_filters()
            found = self._filters.get(filter_id)
            if found is not None:
                found["polled_at"] = self._clock()
        if found is None:
            raise RpcError(-32000, "filter not found")
        return filter_id, found

    def rpc_eth_getFilterChanges(self, params):
        (raw_id,) = _params(params, 1, 1, "eth_getFilterChanges")
        _, found = self._filter(raw_id)
        with self.node.lock:
            head = self.chain.get_canonical_head().block_number
            first = found["next_block"]
            found["next_block"] = head + 1
            if found["kind"] == "blocks":
                return [data(self.chain.get_canonical_block_hash(n)) for n in range(first, head + 1)]
            if found["kind"] == "transactions":
                with self._filter_lock:
                    hashes, found["hashes"] = found["hashes"], []
                return [data(tx_hash) for tx_hash in hashes]
            criteria = found["criteria"]
            last = head
            if criteria["toBlock"] not in (None, "latest", "pending"):
                last = min(head, self._header_at(criteria["toBlock"]).block_number)
        return self._logs_in_range(criteria, first, last) if first <= last else []

    def rpc_eth_getFilterLogs(self, params):
        (raw_id,) = _params(params, 1, 1, "eth_getFilterLogs")
        _, found = self._filter(raw_id)
        if found["kind"] != "logs":
            raise RpcError(-32000, "filter not found")  # geth's answer for a block or pending filter
        with self.node.lock:
            first, last = self._range(found["criteria"])
        return self._logs_in_range(found["criteria"], first, last)

    def rpc_eth_uninstallFilter(self, params):
        (raw_id,) = _params(params, 1, 1, "eth_uninstallFilter")
        filter_id = parse_quantity(raw_id, "filter id")
        with self._filter_lock:
            return self._filters.pop(filter_id, None) is not None

    # ------------------------------------------------- debug: call traces (callTracer)
    # geth's debug_traceTransaction and debug_traceCall with its callTracer, the only tracer
    # here (node/chain/tracing.py). The block or header is read under the node's lock; the
    # re-execution runs outside it, so a long trace never holds up sealing: it reads only
    # headers and states of stored blocks, which never change (trie nodes are keyed by
    # their hash), and keeps its changes in its own VM's journal, never written.

    @staticmethod
    def _call_tracer_config(config: Any) -> bool:
        """``onlyTopCall`` of a trace config that asks for the callTracer or for no tracer."""
        if config is None:
            return False
        if not isinstance(config, dict):
            raise invalid_params("the trace config must be an object")
        if config.get("tracer") not in (None, "", "callTracer"):
            raise RpcError(-32602, "only the callTracer is supported")
        options = config.get("tracerConfig")
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise invalid_params("tracerConfig must be an object")
        if options.get("withLog"):
            raise invalid_params("the callTracer's withLog option is not supported")
        only_top_call = options.get("onlyTopCall", False)
        if not isinstance(only_top_call, bool):
            raise invalid_params("onlyTopCall must be true or false")
        return only_top_call

    def rpc_debug_traceTransaction(self, params):
        """``[txHash, {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": bool}}]``: the
        call frames of a mined transaction, as geth's callTracer gives them. The callTracer is
        the only tracer: a config without ``tracer`` (or no config) gets it too, where geth
        would run its opcode logger."""
        tx_hash_raw, config = _params(params, 1, 2, "debug_traceTransaction")
        tx_hash = parse_hash(tx_hash_raw, "transaction hash")
        only_top_call = self._call_tracer_config(config)
        with self.node.lock:
            found = self._locate_transaction(tx_hash)
        if found is None:
            raise RpcError(-32000, "transaction not found")  # also for one still in the pool, as geth
        block, index = found
        return trace_transaction(self.chain, block, index, only_top_call)

    def rpc_debug_traceCall(self, params):
        """``[callObject, blockTag, {"tracer": "callTracer", "tracerConfig": ...,
        "stateOverrides": ...}]``: the call frames of a call run as ``eth_call`` runs it at
        that block (default latest). The callTracer is the only tracer (also without
        ``tracer``); ``blockOverrides`` are refused."""
        raw, block_id, config = _params(params, 1, 3, "debug_traceCall")
        only_top_call = self._call_tracer_config(config)
        config = config or {}
        if config.get("blockOverrides") is not None:
            raise invalid_params("blockOverrides are not supported")
        request = self._call_request(raw, config.get("stateOverrides"))
        with self.node.lock:
            header = self._header_at(block_id)
        try:
            return trace_call(self.chain, header, request, only_top_call)
        except ExecutionFailed as error:
            raise RpcError(-32000, str(error)) from None

    # ------------------------------------------------------------ clique, pool

    def rpc_clique_getSigners(self, params):
        (block_id,) = _params(params, 0, 1, "clique_getSigners")
        with self.node.lock:
            return [to_checksum_address(s) for s in sorted_signers(self.chain, self._header_at(block_id))]

    def rpc_clique_propose(self, params):
        address, authorize = _params(params, 2, 2, "clique_propose")
        if not isinstance(authorize, bool):
            raise invalid_params("the second parameter must be true (authorise) or false (drop)")
        if self.node.sealer is None:
            raise RpcError(-32000, "this node does not seal, so it cannot vote")
        self.node.propose(to_checksum_address(parse_address(address, "address")), authorize)
        return None

    def rpc_clique_discard(self, params):
        (address,) = _params(params, 1, 1, "clique_discard")
        self.node.discard_proposal(to_checksum_address(parse_address(address, "address")))
        return None

    def rpc_clique_proposals(self, params):
        _params(params, 0, 0, "clique_proposals")
        with self.node.lock:
            return {to_checksum_address(a): v for a, v in self.node.votes.items()}

    def rpc_txpool_status(self, params):
        _params(params, 0, 0, "txpool_status")
        with self.node.lock:
            nonce_reader = self.node.chain_nonce_reader()
            executable = len(self.node.pool.executable(nonce_reader))
            return {"pending": quantity(executable), "queued": quantity(len(self.node.pool) - executable)}

    def _pool_by_state(self, describe: Callable[[SignedTransactionAPI], Any]) -> dict:
        """geth's txpool layout: ``pending`` (executable now) and ``queued`` (waiting for an
        earlier nonce), each ``{sender: {nonce: describe(tx)}}``."""
        with self.node.lock:
            nonce_of = self.node.chain_nonce_reader()
            contents = self.node.pool.by_sender()
            next_nonces = {sender: nonce_of(sender) for sender in contents}
        layout: dict[str, dict] = {"pending": {}, "queued": {}}
        for sender, by_nonce in contents.items():
            next_nonce = next_nonces[sender]
            for nonce, tx in by_nonce.items():
                state = "pending" if nonce == next_nonce else "queued"
                if state == "pending":
                    next_nonce += 1
                layout[state].setdefault(to_checksum_address(sender), {})[str(nonce)] = describe(tx)
        return layout

    def rpc_txpool_content(self, params):
        _params(params, 0, 0, "txpool_content")
        return self._pool_by_state(lambda tx: self._format_transaction(tx, None, None))

    def rpc_txpool_inspect(self, params):
        _params(params, 0, 0, "txpool_inspect")

        def summary(tx: SignedTransactionAPI) -> str:
            to = to_checksum_address(tx.to) if tx.to else "contract creation"
            return f"{to}: {tx.value} wei + {tx.gas} gas × {max_fee(tx)} wei"

        return self._pool_by_state(summary)

    def rpc_eth_getRawTransactionByHash(self, params):
        (tx_hash_raw,) = _params(params, 1, 1, "eth_getRawTransactionByHash")
        tx_hash = parse_hash(tx_hash_raw, "transaction hash")
        with self.node.lock:
            found = self._locate_transaction(tx_hash)
            pooled = self.node.pool.get(tx_hash)
            transaction = found[0].transactions[found[1]] if found is not None else pooled
        return data(transaction.encode()) if transaction is not None else None

    def rpc_eth_getProof(self, params):
        """EIP-1186: the account and storage slots with their Merkle proofs (``proofs.py``)."""
        raw_address, raw_slots, block_id = _params(params, 2, 3, "eth_getProof")
        address = parse_address(raw_address, "address")
        if not isinstance(raw_slots, list) or len(raw_slots) > MAX_PROOF_SLOTS:
            raise invalid_params(f"the storage keys must be a list of at most {MAX_PROOF_SLOTS}")
        slots = [parse_quantity(raw, "storage key") for raw in raw_slots]
        if any(slot >= 2**256 for slot in slots):
            raise invalid_params("a storage key is at most 32 bytes")
        with self.node.lock:
            header = self._header_at(block_id)
        account = proofs.prove(self.chain, header, address, slots)  # immutable state: no lock needed
        return {
            "address": data(address),  # lower case, as geth answers
            "accountProof": [data(node) for node in account.proof],
            "balance": quantity(account.balance),
            "codeHash": data(account.code_hash),
            "nonce": quantity(account.nonce),
            "storageHash": data(account.storage_hash),
            "storageProof": [
                {"key": raw, "value": quantity(item.value), "proof": [data(node) for node in item.proof]}
                for raw, item in zip(raw_slots, account.storage, strict=True)
            ],
        }

    def rpc_eth_newPendingTransactionFilter(self, params):
        _params(params, 0, 1, "eth_newPendingTransactionFilter")
        filter_id = self._new_filter("transactions", None)
        with self._filter_lock:
            self._filters[int(filter_id, 16)]["hashes"] = []
        return filter_id

    def _on_pending_transaction(self, transaction: SignedTransactionAPI) -> None:
        """Note a newly pooled transaction for every pending-transaction filter."""
        with self._filter_lock:
            for found in self._filters.values():
                hashes = found.get("hashes")
                if hashes is not None and len(hashes) < MAX_PENDING_FILTER_HASHES:
                    hashes.append(transaction.hash)
